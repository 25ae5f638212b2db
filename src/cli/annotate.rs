//! `cellsentence annotate`: cell-type classification from an embedding matrix.
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::{print_out, DataDirArgs, InputArgs};
use crate::classify::{self, Classifier, MlpConfig, SvmConfig};
use crate::data::DatasetEntry;
use crate::embedding::rows::{labelled_rows, RowSource, Rows};
use crate::error::Result;

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

impl AnnotateArgs {
    fn input_args(&self) -> InputArgs {
        InputArgs {
            input: self.input.clone(),
            layer: None,
            raw: false,
            dirs: self.dirs.clone(),
        }
    }

    fn row_source<'a>(&'a self, entry: &'a DatasetEntry) -> RowSource<'a> {
        RowSource {
            embeddings: &self.embeddings,
            input: &self.input,
            entry,
            label_key: &self.label_key,
            batch_key: self.batch_key.as_deref(),
            drop_missing: self.drop_missing,
        }
    }
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
    ) = labelled_rows(&a.row_source(&super::stream::entry_of(&a.input_args())?))?;
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
    classify::files::write_evaluation(staged.path(), &cells, &ev)?;
    let summary = std::fs::read_to_string(staged.path().join("summary.json")).unwrap_or_default();
    staged.commit("annotate")?;
    print_out(&format!("{}\n", summary.trim()))
}
