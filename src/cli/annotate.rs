//! `cellsentence annotate`: cell-type classification from an embedding matrix.
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::{load, print_out, DataDirArgs, InputArgs};
use crate::classify::{self, Classifier, Evaluation, MlpConfig, SvmConfig};
use crate::error::{Error, Result};
use crate::report::{write_atomic, Table};

/// Classifier choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClassifierArg {
    /// The paper's MLP head (tch).
    Mlp,
    /// Linear SVM, one-vs-rest, C = 1 (scikit-learn LinearSVC's problem).
    Svm,
}

/// `annotate` options.
#[derive(Debug, Args)]
pub struct AnnotateArgs {
    /// Features, cells × dimensions (.npy, float32/float64). Rows are the file's cells in order, or
    /// the cells listed in <embeddings>.cells.txt (written by `embed`).
    #[arg(long)]
    pub embeddings: PathBuf,
    /// The dataset the rows belong to (labels and batches are read from its obs).
    #[arg(long, short)]
    pub input: String,
    #[command(flatten)]
    pub dirs: DataDirArgs,
    /// obs column with the cell types.
    #[arg(long)]
    pub label_key: String,
    /// obs column with batches: leave-one-batch-out (inter-dataset).
    #[arg(long, conflicts_with = "folds")]
    pub batch_key: Option<String>,
    /// Stratified k-fold (intra-dataset) when no batch key is given.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    #[arg(long, value_enum, default_value = "mlp")]
    pub classifier: ClassifierArg,
    /// Seed of the splits (and of the SVM's coordinate order).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Seed of the MLP's initialisation, dropout and batches (the paper's code: 1234).
    #[arg(long, default_value_t = 1234)]
    pub mlp_seed: u64,
    /// Fraction of each training part held out (stratified) for early stopping.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Train the MLP on the first CUDA device.
    #[arg(long)]
    pub cuda: bool,
    /// Output folder: predictions.csv, metrics.csv, per_class.csv, summary.json.
    #[arg(long)]
    pub out: PathBuf,
}

/// Cell names, labels and batches of the feature rows.
struct Rows {
    cells: Vec<String>,
    labels: Vec<String>,
    batches: Option<Vec<String>>,
}

/// Reads the labels (and batches) of the rows of `embeddings`.
fn row_annotations(a: &AnnotateArgs) -> Result<Rows> {
    let (entry, ds) = load(&InputArgs {
        input: a.input.clone(),
        layer: None,
        raw: false,
        dirs: a.dirs.clone(),
    })?;
    let labels = ds.obs_column(&a.label_key)?;
    let batches = a
        .batch_key
        .as_deref()
        .map(|k| ds.obs_column(k))
        .transpose()?;
    let listed = a.embeddings.with_extension("cells.txt");
    let rows: Vec<usize> = if listed.is_file() {
        let text = std::fs::read_to_string(&listed).map_err(|e| Error::io(&listed, e))?;
        let pos: std::collections::HashMap<&str, usize> = ds
            .cells
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect();
        text.lines()
            .map(|c| {
                pos.get(c).copied().ok_or_else(|| {
                    Error::bad_value(
                        &listed,
                        "cell",
                        format!("`{c}` is not a cell of {}", entry.path.display()),
                        "embed and annotate the same file",
                    )
                })
            })
            .collect::<Result<_>>()?
    } else {
        (0..ds.n_cells()).collect()
    };
    if let Some(b) = &batches {
        if let Some(i) = rows
            .iter()
            .find(|&&i| b[i].trim().is_empty() || b[i] == "nan")
        {
            return Err(Error::bad_value(
                &entry.path,
                format!("obs/{}", a.batch_key.as_deref().unwrap_or("")),
                format!("cell `{}` has no batch", ds.cells[*i]),
                "give every cell a batch, or use --folds",
            ));
        }
    }
    let pick = |v: &[String]| rows.iter().map(|&i| v[i].clone()).collect::<Vec<_>>();
    Ok(Rows {
        cells: pick(&ds.cells),
        labels: pick(&labels),
        batches: batches.as_ref().map(|b| pick(b)),
    })
}

/// Writes predictions.csv, metrics.csv, per_class.csv and summary.json.
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

/// `cellsentence annotate`.
pub fn cmd_annotate(a: &AnnotateArgs) -> Result<()> {
    let x = crate::npy::read(&a.embeddings)?;
    let Rows {
        cells,
        labels,
        batches,
    } = row_annotations(a)?;
    if x.rows != labels.len() {
        return Err(Error::bad_value(
            &a.embeddings,
            "rows",
            format!(
                "{} rows but {} has {} cells",
                x.rows,
                a.input,
                labels.len()
            ),
            "embed the same file (rows = its cells in order), or keep the .cells.txt list `embed` writes",
        ));
    }
    classify::check_features(&x, &labels, &a.embeddings.display().to_string())?;
    let folds = match &batches {
        Some(b) => classify::leave_one_batch_out(&labels, b, a.val_fraction, a.seed)?,
        None => classify::stratified_kfold(&labels, a.folds, a.val_fraction, a.seed)?,
    };
    let classifier = match a.classifier {
        ClassifierArg::Mlp => Classifier::Mlp(MlpConfig {
            seed: a.mlp_seed,
            ..MlpConfig::default()
        }),
        ClassifierArg::Svm => Classifier::Svm(SvmConfig {
            seed: a.seed,
            ..SvmConfig::default()
        }),
    };
    let (device, _) = crate::lm::device_and_kind(a.cuda, "f32")?;
    let ev = classify::evaluate(&x, &labels, &folds, &classifier, device)?;
    write_evaluation(&a.out, &cells, &ev)?;
    print_out(&format!(
        "{}\n",
        std::fs::read_to_string(a.out.join("summary.json"))
            .unwrap_or_default()
            .trim()
    ))
}
