//! The input, data-directory and preprocessing options the data commands share.
use std::path::PathBuf;

use clap::Args;

use super::domain;
use crate::data::DatasetEntry;
use crate::hvg::Flavor;
use crate::pipeline::HvgInput;

/// Input file options.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// An .h5ad file, a 10x directory (matrix.mtx + features.tsv + barcodes.tsv), or a dataset id.
    #[arg(long, short)]
    pub input: String,
    /// Read `layers/NAME` instead of X.
    #[arg(long, conflicts_with = "raw")]
    pub layer: Option<String>,
    /// Read `raw/X` (with `raw/var` gene names) instead of X.
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub dirs: DataDirArgs,
}

/// Data directory option.
#[derive(Debug, Args, Clone)]
pub struct DataDirArgs {
    /// Folder with <id>.h5ad datasets (also CELLSENTENCE_DATA); data/ and ../shared/data are searched too.
    #[arg(long, env = "CELLSENTENCE_DATA")]
    pub data_dir: Option<PathBuf>,
}

/// Preprocessing and HVG options shared by `hvg` and `sentences`.
#[derive(Debug, Args)]
pub struct PrepArgs {
    /// X is already log-normalized: skip QC, normalize_total and log1p.
    #[arg(long)]
    pub no_preprocess: bool,
    /// HVG flavor (default: seurat_v3 on log10 data, as the paper ran it).
    #[arg(long, value_parser = domain::choice::<Flavor>(), default_value = "seurat_v3")]
    pub flavor: Flavor,
    /// Number of highly variable genes.
    #[arg(long, default_value_t = 2000)]
    pub n_top: usize,
    /// Matrix the HVG method reads: log (paper) or counts (textbook seurat_v3). Default: counts
    /// for deviance and pearson_residuals (they model counts, as in scanpy), log otherwise.
    #[arg(long, value_parser = domain::choice::<HvgInput>())]
    pub on: Option<HvgInput>,
    /// obs column with batches (scanpy's batch_key).
    #[arg(long)]
    pub batch_key: Option<String>,
    /// Take the HVG set from this file (one gene a line, as `cellsentence hvg` prints it) instead
    /// of selecting it: the jobs of a sharded run select once and share the list.
    #[arg(long)]
    pub hvg_list: Option<PathBuf>,
}

impl PrepArgs {
    /// The matrix HVG selection reads: `--on` when given, else what the flavor models.
    pub fn hvg_on(&self) -> HvgInput {
        self.on.unwrap_or(if self.flavor.models_counts() {
            HvgInput::Counts
        } else {
            HvgInput::Log
        })
    }
}

/// The cell-type column of a labelled input.
#[derive(Debug, Args)]
pub struct LabelArgs {
    /// obs column with the cell types (default: the dataset's known one, else `cell_type`).
    #[arg(long)]
    pub label_key: Option<String>,
}

impl LabelArgs {
    /// The column: the one given, else the known one of `entry` (when resolved), else
    /// `cell_type`.
    pub fn key_for(&self, entry: Option<&DatasetEntry>) -> String {
        self.label_key
            .clone()
            .or_else(|| entry.and_then(|e| e.label_key.clone()))
            .unwrap_or_else(|| "cell_type".into())
    }
}

/// The stage cache.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Stage cache folder.
    #[arg(long, default_value = ".cache/stages")]
    pub cache: PathBuf,
    /// Recompute every stage, even when cached (the cache is refreshed).
    #[arg(long)]
    pub force: bool,
}
