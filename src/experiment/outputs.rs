//! What a runner writes into its results folder ([`Outputs`]), returned to the caller as values
//! (the tables as written, the figure specs), and the one place that knows each output's name
//! ([`names`]): the runners write by these names and the report links and reads by them.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use polars::prelude::DataFrame;

use super::RunSummary;
use crate::error::Result;
use crate::figure;
use crate::report::{self, Table};

/// File names of the runners' outputs: a table `<stem>` is `<stem>.csv` + `<stem>.md`, a figure
/// `<stem>` is `figures/<stem>.html` (and `.svg` where one is drawn).
pub mod names {
    use crate::sentence::GeneSet;

    /// The folder's table of contents.
    pub const INDEX: &str = "index.md";
    /// Reconstruction: QC and HVG per dataset.
    pub const DATASETS: &str = "datasets";
    /// Reconstruction per dataset, mode and model (Figures II–VII).
    pub const RECONSTRUCTION: &str = "reconstruction";
    /// Table I.
    pub const TABLE_I: &str = "table_I";
    /// Annotation rows beside the paper's (Figures IX–XI).
    pub const ANNOTATION: &str = "annotation";
    /// The paper's quoted annotation rows.
    pub const REPORTED: &str = "reported";
    /// HVG sweep points.
    pub const SWEEP: &str = "sweep";
    /// LM scaling sweep.
    pub const SCALING: &str = "scaling";
    /// Embedding-quality panels of an annotation run.
    pub const QUALITY: &str = "quality";
    /// LM layer sweep.
    pub const LAYERS: &str = "layers";
    /// The held-out default's selection on a corpus dataset (`annotation.pretrain.select_on`).
    pub const DEFAULT_SELECTION: &str = "default_selection";

    /// Markdown file of a table.
    pub fn md(stem: &str) -> String {
        format!("{stem}.md")
    }
    /// Interactive figure file.
    pub fn html(stem: &str) -> String {
        format!("figures/{stem}.html")
    }
    /// Static figure file.
    pub fn svg(stem: &str) -> String {
        format!("figures/{stem}.svg")
    }
    /// Reconstruction scatter of one dataset and sentence mode.
    pub fn reconstruction_figure(dataset: &str, mode: GeneSet) -> String {
        format!(
            "reconstruction_{dataset}_{}",
            crate::experiment::mode_label(mode)
        )
    }
    /// An LM embedding the annotation runner writes as `.h5ad` (`annotation.embeddings_dir`):
    /// `<dataset>/<model source>_<mode>[_deviation].h5ad`.
    pub fn embedding_h5ad(
        dataset: &str,
        source: crate::experiment::lm_protocol::LmSource,
        mode: GeneSet,
        order: crate::deviation::Order,
    ) -> String {
        let deviation = match order {
            crate::deviation::Order::Deviation => "_deviation",
            crate::deviation::Order::Expression => "",
        };
        format!(
            "{dataset}/{}_{}{deviation}.h5ad",
            source.prefix().replace([' ', '-'], "_"),
            crate::experiment::mode_label(mode)
        )
    }
    /// Per-class F1 table of one dataset.
    pub fn per_class(dataset: &str) -> String {
        format!("per_class_{dataset}")
    }
    /// Annotation bar chart of one dataset.
    pub fn annotation_figure(dataset: &str) -> String {
        format!("annotation_{dataset}")
    }
    /// Confusion matrix of one dataset.
    pub fn confusion_figure(dataset: &str) -> String {
        format!("confusion_{dataset}")
    }
    /// HVG sweep figure of one dataset.
    pub fn sweep_figure(dataset: &str) -> String {
        format!("sweep_{dataset}")
    }
    /// Static UMAP map of one dataset's embedding, coloured `by` (cell type, batch).
    pub fn umap_figure(dataset: &str, embedding: &str, by: &str) -> String {
        let slug = |s: &str| {
            let t: String = s
                .to_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            t.split('_')
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join("_")
        };
        format!("umap_{dataset}_{}_by_{}", slug(embedding), slug(by))
    }
    /// LM scaling figure of one dataset.
    pub fn scaling_figure(dataset: &str) -> String {
        format!("scaling_{dataset}")
    }
}

/// Collects what a runner writes into `dir`: file names, tables as written, figure specs.
#[derive(Debug)]
pub struct Outputs {
    dir: PathBuf,
    files: Vec<String>,
    tables: BTreeMap<String, Table>,
    specs: BTreeMap<String, serde_json::Value>,
}

impl Outputs {
    /// Outputs written into `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            files: Vec::new(),
            tables: BTreeMap::new(),
            specs: BTreeMap::new(),
        }
    }

    /// Writes `df` as table `stem` (CSV, and Markdown under `heading`) and keeps it.
    pub fn table(&mut self, df: &DataFrame, stem: &str, heading: &str) -> Result<()> {
        let t = report::write_frame(df, &self.dir, stem, heading)?;
        self.files.extend([format!("{stem}.csv"), names::md(stem)]);
        self.tables.insert(stem.to_string(), t);
        Ok(())
    }

    /// Writes `plot` as figure `stem` and keeps its spec.
    pub fn figure(&mut self, plot: &plotly::Plot, stem: &str, title: &str) -> Result<()> {
        let spec = figure::write_in_results(plot, &self.dir, stem, title)?;
        self.files.push(names::html(stem));
        self.specs.insert(stem.to_string(), spec);
        Ok(())
    }

    /// Writes a text file at `rel` (relative to the folder).
    pub fn text(&mut self, rel: &str, text: &str) -> Result<()> {
        report::write_atomic(self.dir.join(rel), text.as_bytes())?;
        self.files.push(rel.to_string());
        Ok(())
    }

    /// Files written so far, relative to the folder.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// The run's summary (cache counts are filled in by [`super::run`]).
    pub fn finish(self, skipped: Vec<String>) -> RunSummary {
        RunSummary {
            out: self.dir,
            files: self.files,
            hits: 0,
            computed: 0,
            skipped,
            tables: self.tables,
            specs: self.specs,
        }
    }
}
