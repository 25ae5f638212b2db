//! An evaluation written as the files `annotate` leaves in its folder: every prediction, each
//! fold's metrics, the per-class scores and a summary (what a user reads back with pandas).
use std::path::Path;

use super::Evaluation;
use crate::error::Result;
use crate::report::{write_atomic, Table};

/// Writes `ev` into `dir`: predictions.csv (each test cell of `cells` with its fold, truth and
/// prediction), metrics.csv (per fold), per_class.csv and summary.json.
pub fn write_evaluation(dir: &Path, cells: &[String], ev: &Evaluation) -> Result<()> {
    let mut p = Table::new(["cell", "fold", "truth", "pred"]);
    for r in &ev.predictions {
        p.push([
            cells[r.cell].clone(),
            r.fold.clone(),
            r.truth.clone(),
            r.pred.clone(),
        ]);
    }
    write_atomic(dir.join("predictions.csv"), p.to_csv().as_bytes())?;
    let mut m = Table::new([
        "fold",
        "n_train",
        "n_val",
        "n_test",
        "accuracy",
        "macro_f1",
        "epochs",
        "unseen_labels",
    ]);
    for f in &ev.folds {
        m.push([
            f.fold.clone(),
            f.n_train.to_string(),
            f.n_val.to_string(),
            f.n_test.to_string(),
            format!("{:.6}", f.accuracy),
            format!("{:.6}", f.macro_f1),
            f.epochs.to_string(),
            f.unseen_labels.join(";"),
        ]);
    }
    write_atomic(dir.join("metrics.csv"), m.to_csv().as_bytes())?;
    let mut c = Table::new(["label", "support", "precision", "recall", "f1"]);
    for s in &ev.per_class {
        c.push([
            s.label.clone(),
            s.support.to_string(),
            format!("{:.6}", s.precision),
            format!("{:.6}", s.recall),
            format!("{:.6}", s.f1),
        ]);
    }
    write_atomic(dir.join("per_class.csv"), c.to_csv().as_bytes())?;
    let summary = serde_json::json!({
        "accuracy_mean": ev.accuracy_mean, "accuracy_sd": ev.accuracy_sd,
        "macro_f1_mean": ev.macro_f1_mean, "macro_f1_sd": ev.macro_f1_sd,
        "n_folds": ev.folds.len(), "classifier": ev.classifier,
    });
    write_atomic(
        dir.join("summary.json"),
        (serde_json::to_string_pretty(&summary).unwrap_or_default() + "\n").as_bytes(),
    )
}
