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
    /// Features, cells × dimensions: .npy (float32/float64; rows are the file's cells in order, or
    /// the cells listed in <embeddings>.cells.txt, written by `embed`), or an .h5ad from `embed`
    /// or `merge` (obsm["X_cell_sentence"], rows named by its obs index).
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
    #[arg(long, default_value_t = 5, value_parser = super::domain::folds())]
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
    #[arg(long, default_value_t = 0.1, value_parser = super::domain::fraction())]
    pub val_fraction: f64,
    /// Leave out cells whose label (or batch) is missing, with a warning; without it they are an error.
    #[arg(long)]
    pub drop_missing: bool,
    /// Train the MLP on the first CUDA device.
    #[arg(long)]
    pub cuda: bool,
    /// Output folder: predictions.csv, metrics.csv, per_class.csv, summary.json.
    #[arg(long)]
    pub out: PathBuf,
}

/// Cell names, labels and batches of the feature rows.
pub(super) struct Rows {
    /// Rows the embedding must have.
    pub total: usize,
    /// Embedding rows kept (cells with a label and, where asked, a batch).
    pub rows: Vec<usize>,
    pub cells: Vec<String>,
    pub labels: Vec<String>,
    pub batches: Option<Vec<String>>,
}

/// Where the rows of an embedding get their labels: `annotate`'s and `metrics`' options.
pub(super) struct RowSource<'a> {
    pub embeddings: &'a Path,
    pub input: &'a str,
    pub dirs: &'a DataDirArgs,
    pub label_key: &'a str,
    pub batch_key: Option<&'a str>,
    pub drop_missing: bool,
}

impl AnnotateArgs {
    fn row_source(&self) -> RowSource<'_> {
        RowSource {
            embeddings: &self.embeddings,
            input: &self.input,
            dirs: &self.dirs,
            label_key: &self.label_key,
            batch_key: self.batch_key.as_deref(),
            drop_missing: self.drop_missing,
        }
    }
}

/// Reads the labels (and batches) of the rows of `embeddings`; `listed`: the rows' cell names
/// (from `<embeddings>.cells.txt` or the `.h5ad`'s obs index) and where they come from.
fn row_annotations(a: &RowSource<'_>, listed: Option<(&Path, &[String])>) -> Result<Rows> {
    let (entry, ds) = load(&InputArgs {
        input: a.input.to_string(),
        layer: None,
        raw: false,
        dirs: a.dirs.clone(),
    })?;
    let labels = ds.obs_optional(a.label_key)?;
    let batches = a.batch_key.map(|k| ds.obs_optional(k)).transpose()?;
    let rows: Vec<usize> = if let Some((listed, names)) = listed {
        let pos: std::collections::HashMap<&str, usize> = ds
            .cells
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect();
        names
            .iter()
            .map(|c| {
                pos.get(c.as_str()).copied().ok_or_else(|| {
                    Error::bad_value(
                        listed,
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
    // rows (embedding row, dataset cell) with a label and, where asked, a batch
    let unusable = |&(_, i): &(usize, usize)| {
        labels[i].is_none() || batches.as_ref().is_some_and(|b| b[i].is_none())
    };
    let pairs: Vec<(usize, usize)> = rows.into_iter().enumerate().collect();
    let total = pairs.len();
    let dropped = pairs.iter().filter(|p| unusable(p)).count();
    if dropped > 0 {
        let first = &ds.cells[pairs.iter().find(|p| unusable(p)).map_or(0, |p| p.1)];
        let what =
            format!(
            "{dropped} of {} cells have no value in obs/{}{} (missing/NaN), the first is `{first}`",
            pairs.len(),
            a.label_key,
            a.batch_key.map(|b| format!(" or obs/{b}")).unwrap_or_default()
        );
        if !a.drop_missing {
            return Err(Error::bad_value(
                &entry.path,
                format!("obs/{}", a.label_key),
                format!("{what}; a missing label is not a class"),
                "pass --drop-missing to leave those cells out (with a warning), or label them",
            ));
        }
        eprintln!("warning: {what}; --drop-missing leaves them out");
    }
    let kept: Vec<(usize, usize)> = pairs.into_iter().filter(|p| !unusable(p)).collect();
    let known = |v: &[Option<String>]| {
        kept.iter()
            .map(|&(_, i)| v[i].clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    Ok(Rows {
        total,
        rows: kept.iter().map(|&(r, _)| r).collect(),
        cells: kept.iter().map(|&(_, i)| ds.cells[i].clone()).collect(),
        labels: known(&labels),
        batches: batches.as_ref().map(|b| known(b)),
    })
}

/// The embedding's rows that have a label (and a batch), with their annotations.
pub(super) fn labelled_rows(a: &RowSource<'_>) -> Result<(crate::npy::Matrix, Rows)> {
    let (x, names) = if a.embeddings.extension().is_some_and(|e| e == "h5ad") {
        let e = crate::data::h5ad_out::read_embeddings(a.embeddings)?;
        (e.m, Some((a.embeddings.to_path_buf(), e.cells)))
    } else {
        let listed = a.embeddings.with_extension("cells.txt");
        let names = if listed.is_file() {
            let text = std::fs::read_to_string(&listed).map_err(|e| Error::io(&listed, e))?;
            Some((listed, text.lines().map(String::from).collect()))
        } else {
            None
        };
        (crate::npy::read(a.embeddings)?, names)
    };
    let r = row_annotations(a, names.as_ref().map(|(p, n)| (p.as_path(), n.as_slice())))?;
    if x.rows != r.total {
        let (what, fix) = match &names {
            Some((listed, _)) => (
                format!("{} rows but {} lists {} cells", x.rows, listed.display(), r.total),
                "the embeddings and their cell list must come from one `embed` run; embed again (it writes both)",
            ),
            None => (
                format!("{} rows but {} has {} cells", x.rows, a.input, r.total),
                "embed the same file (rows = its cells in order), or keep the .cells.txt list `embed` writes",
            ),
        };
        return Err(Error::bad_value(a.embeddings, "rows", what, fix));
    }
    if r.rows.len() == r.total {
        return Ok((x, r));
    }
    let data = r
        .rows
        .iter()
        .flat_map(|&i| x.row(i).iter().copied())
        .collect();
    let x = crate::npy::Matrix {
        rows: r.rows.len(),
        cols: x.cols,
        data,
    };
    Ok((x, r))
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
    // an `embed` killed mid-commit is finished first, so the rows and the names belong together
    let dir = a.embeddings.parent().filter(|d| !d.as_os_str().is_empty());
    crate::output::recover(dir.unwrap_or(Path::new(".")))?;
    crate::output::check_out(
        "--out",
        &a.out,
        &[a.embeddings.as_path(), Path::new(&a.input)],
        crate::output::OutKind::Folder {
            marker: "summary.json",
        },
    )?;
    let (
        x,
        Rows {
            cells,
            labels,
            batches,
            ..
        },
    ) = labelled_rows(&a.row_source())?;
    classify::check_features(&x, &labels, &a.embeddings.display().to_string())?;
    let folds = match &batches {
        Some(b) => classify::leave_one_batch_out(&labels, b, a.val_fraction, a.seed)?,
        None => classify::stratified_kfold(&labels, a.folds, a.val_fraction, a.seed)?,
    };
    let k = batches.is_none().then_some(a.folds);
    for w in classify::split_warnings(&labels, &folds, k) {
        eprintln!("warning: {w}");
    }
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
    let (device, _) = crate::lm::device_and_kind(a.cuda, crate::lm::Precision::F32)?;
    let ev = classify::evaluate(&x, &labels, &folds, &classifier, device)?;
    let staged = crate::output::StagedDir::new(&a.out)?;
    write_evaluation(staged.path(), &cells, &ev)?;
    let summary = std::fs::read_to_string(staged.path().join("summary.json")).unwrap_or_default();
    staged.commit("annotate")?;
    print_out(&format!("{}\n", summary.trim()))
}
