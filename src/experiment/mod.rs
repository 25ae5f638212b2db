//! Experiment files (`experiments/*.yaml`) and the runner that wires the stages for them.
//!
//! An experiment file names its task, datasets, preprocessing/HVG/sentence parameters, seed and
//! task settings. Unknown keys and wrong types are errors with the key and line. The runner
//! resolves the datasets, runs every stage through the content-hash [`Cache`], and writes the
//! tables and figures to `results/<name>/` atomically.
pub mod annotation;
pub mod context;
pub mod data_key;
pub mod default_select;
pub mod lm_protocol;
pub mod lm_scaling;
pub mod outputs;
pub mod pretrain;
pub mod reconstruction;
pub mod sweep;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::cache::Cache;
use crate::data::{self, DatasetEntry};
use crate::error::{Error, Result};
use crate::hvg::{Flavor, HvgParams};
use crate::paper;
use crate::pipeline::HvgInput;
use crate::preprocess::PreprocessParams;
use crate::reconstruct::RecModel;
use crate::report;
use crate::sentence::GeneSet;
pub use data_key::DataKey;

/// What an experiment computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Expression reconstruction from log-rank (Table I, Figures II–VII).
    Reconstruction,
    /// Cell-type annotation (Figure IX intra-dataset, Figures X–XI inter-dataset).
    Annotation,
    /// HVG count × flavor sweep: reconstruction and annotation against sentence length.
    HvgSweep,
    /// Pretrained-LM training budgets: validation loss and annotation by budget, layer sweep.
    LmScaling,
}

/// HVG selection settings (scanpy `highly_variable_genes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HvgSection {
    /// Method: seurat, cell_ranger or seurat_v3.
    pub flavor: Flavor,
    /// Number of genes.
    pub n_top_genes: usize,
    /// Mean bins (seurat).
    pub n_bins: usize,
    /// LOESS span (seurat_v3).
    pub span: f64,
    /// Matrix the method reads: `log` (the paper) or `counts`.
    pub on: HvgInput,
}

impl Default for HvgSection {
    fn default() -> Self {
        let p = HvgParams::default();
        Self {
            flavor: p.flavor,
            n_top_genes: p.n_top_genes,
            n_bins: p.n_bins,
            span: p.span,
            on: HvgInput::Log,
        }
    }
}

impl HvgSection {
    /// The stage parameters.
    pub fn params(&self) -> HvgParams {
        HvgParams {
            flavor: self.flavor,
            n_top_genes: self.n_top_genes,
            n_bins: self.n_bins,
            span: self.span,
        }
    }
}

/// Sentence settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentenceSection {
    /// Seed of Cell2Sentence's tie shuffle (42 in Cell2Sentence).
    pub tie_seed: u32,
}

impl Default for SentenceSection {
    fn default() -> Self {
        Self {
            tie_seed: crate::sentence::C2S_TIE_SEED,
        }
    }
}

/// A number of cells, or every cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CellCount {
    /// At most this many cells (sampled).
    N(usize),
    /// Every cell.
    All,
}

impl CellCount {
    /// The number of cells to take out of `n`.
    pub fn of(self, n: usize) -> usize {
        match self {
            CellCount::N(k) => k.min(n),
            CellCount::All => n,
        }
    }
}

impl std::str::FromStr for CellCount {
    type Err = String;
    /// A positive whole number, or `all` (the one parser of the CLI and experiment files).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "all" => Ok(CellCount::All),
            t => match t.parse::<usize>() {
                Ok(k) if k > 0 => Ok(CellCount::N(k)),
                _ => Err(format!(
                    "`{s}` is not a positive number of cells or `all`; write e.g. 1024"
                )),
            },
        }
    }
}

impl<'de> Deserialize<'de> for CellCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = CellCount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a positive number of cells or `all`")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<CellCount, E> {
                v.to_string().parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<CellCount, E> {
                v.to_string().parse().map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<CellCount, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Reconstruction settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconstructionSection {
    /// Cells sampled per dataset (the paper: 1,024).
    pub cells: CellCount,
    /// Models to fit: `c2s` (Cell2Sentence's global line, the paper's numbers) and/or `per-gene`.
    pub models: Vec<RecModel>,
    /// Points drawn in each scatter figure (a seeded sample of the entries).
    pub figure_points: usize,
}

impl Default for ReconstructionSection {
    fn default() -> Self {
        Self {
            cells: CellCount::N(1024),
            models: vec![RecModel::C2s, RecModel::PerGene],
            figure_points: 1000,
        }
    }
}

fn default_modes() -> Vec<GeneSet> {
    vec![GeneSet::All, GeneSet::Hvg]
}

/// One experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Name; results go to `results/<name>/`.
    pub name: String,
    /// What it computes.
    pub task: Task,
    /// One line on what it reproduces.
    #[serde(default)]
    pub description: String,
    /// Dataset ids (searched in the data directories) or paths; `available` = every dataset found.
    pub datasets: Vec<String>,
    /// Our dataset id → the paper's dataset it stands in for (Pancreas, Liver, Heart, Skin).
    #[serde(default)]
    pub paper_datasets: BTreeMap<String, String>,
    /// Datasets (ids of `datasets`) whose X is already log-normalized, as `--no-preprocess`
    /// declares on the command line: QC, normalize_total and log1p are skipped for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_normalized: Vec<String>,
    /// Preprocessing (QC thresholds, normalize_total target, log base); paper defaults.
    #[serde(default)]
    pub preprocess: PreprocessParams,
    /// HVG selection.
    #[serde(default)]
    pub hvg: HvgSection,
    /// Sentence modes compared: `all` and/or `hvg`.
    #[serde(default = "default_modes")]
    pub modes: Vec<GeneSet>,
    /// Sentence settings.
    #[serde(default)]
    pub sentences: SentenceSection,
    /// Seed of every sampled or shuffled quantity of the task.
    #[serde(default)]
    pub seed: u64,
    /// Reconstruction settings (task `reconstruction`).
    #[serde(default)]
    pub reconstruction: ReconstructionSection,
    /// Annotation settings (task `annotation`).
    #[serde(default)]
    pub annotation: annotation::AnnotationSection,
    /// Sweep settings (task `hvg_sweep`).
    #[serde(default)]
    pub sweep: sweep::SweepSection,
    /// Task `lm_scaling` settings.
    #[serde(default)]
    pub lm_scaling: lm_scaling::LmScalingSection,
    /// Source file (not part of the YAML).
    #[serde(skip)]
    pub file: PathBuf,
    /// Source text, for locating keys in errors.
    #[serde(skip)]
    pub text: String,
}

/// The 1-based line of the first line of `text` that mentions `needle` as a key or list item.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ").trim_start();
            t.starts_with(&format!("{needle}:"))
                || t == needle
                || t.contains(&format!(" {needle},"))
                || t.contains(&format!("[{needle}"))
                || t.contains(&format!(" {needle}]"))
        })
        .map(|i| i + 1)
}

impl Experiment {
    /// Parses and checks an experiment file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                path: path.into(),
                hint: "; pass an experiment file such as experiments/reconstruction.yaml".into(),
            },
            _ => Error::io(path, e),
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks experiment text (`path` only names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        if text.trim().is_empty() {
            return Err(Error::format(
                path,
                "the experiment file is empty",
                "write at least `name`, `task` and `datasets` (see experiments/README.md)",
            ));
        }
        let mut e: Experiment = serde_norway::from_str(text).map_err(|err| {
            let what = err.to_string();
            let fix = if what.contains("unknown field") {
                "remove or rename the key; the accepted keys are listed in the message and in experiments/README.md"
            } else if what.contains("missing field") {
                "add the key (see experiments/README.md)"
            } else {
                "give the key a value of the type named in the message (see experiments/README.md)"
            };
            Error::format(path, what, fix)
        })?;
        e.file = path.to_path_buf();
        e.text = text.to_string();
        e.check()?;
        Ok(e)
    }

    /// An error about `field` of this file, with the line where it appears.
    pub fn err(
        &self,
        field: &str,
        needle: &str,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) -> Error {
        let at = line_of(&self.text, needle).map_or(String::new(), |l| format!(" (line {l})"));
        Error::bad_value(&self.file, format!("{field}{at}"), what, fix)
    }

    /// At least one sentence mode, each listed once.
    fn check_modes(&self) -> Result<()> {
        if self.modes.is_empty() {
            return Err(self.err(
                "modes",
                "modes",
                "no sentence modes",
                "write modes: [all, hvg]",
            ));
        }
        for (i, m) in self.modes.iter().enumerate() {
            if self.modes[..i].contains(m) {
                return Err(self.err(
                    "modes",
                    "modes",
                    format!("{m:?} is listed twice"),
                    "list each mode once",
                ));
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<()> {
        let ok_name = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok_name {
            return Err(self.err(
                "name",
                "name",
                format!("`{}` is not a usable folder name", self.name),
                "use letters, digits, `_` or `-`",
            ));
        }
        if self.datasets.is_empty() {
            return Err(self.err(
                "datasets",
                "datasets",
                "no datasets",
                "list dataset ids (see `cellsentence datasets`) or write [available]",
            ));
        }
        self.check_modes()?;
        use crate::validate::Validate;
        for (section, r) in [
            ("preprocess", self.preprocess.validate()),
            ("hvg", self.hvg.params().validate()),
            ("annotation", self.annotation.validate()),
        ] {
            match r {
                Err(Error::Param { name, what }) => {
                    return Err(self.err(
                        &format!("{section}.{name}"),
                        name.rsplit('.').next().unwrap_or(&name),
                        what,
                        "set a value in the range above",
                    ))
                }
                Err(other) => return Err(other),
                Ok(()) => {}
            }
        }
        if self.task == Task::Reconstruction {
            let r = &self.reconstruction;
            if r.models.is_empty() {
                return Err(self.err(
                    "reconstruction.models",
                    "models",
                    "no models",
                    "write models: [c2s, per-gene]",
                ));
            }
            if r.figure_points == 0 {
                return Err(self.err(
                    "reconstruction.figure_points",
                    "figure_points",
                    "must be positive",
                    "1000 keeps figures small",
                ));
            }
        }
        Ok(())
    }
}

/// Where a run reads and writes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Results root (`results/`); the experiment writes into `<out>/<name>/`.
    pub out: PathBuf,
    /// Cache root (`.cache/stages`).
    pub cache: PathBuf,
    /// Recompute every stage once.
    pub force: bool,
    /// Extra data directory (`--data-dir`).
    pub data_dir: Option<PathBuf>,
    /// Replace the file's dataset list.
    pub datasets: Option<Vec<String>>,
    /// The paper's numbers (`None`: the transcription built into the binary).
    pub reported: Option<PathBuf>,
    /// No progress bars or cache log.
    pub quiet: bool,
    /// Retrain committed pretrained checkpoints (`annotation.pretrain.checkpoint`).
    pub retrain_lm: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            out: PathBuf::from("results"),
            cache: PathBuf::from(".cache/stages"),
            force: false,
            data_dir: None,
            datasets: None,
            reported: None,
            quiet: false,
            retrain_lm: false,
        }
    }
}

/// A dataset of a run, resolved.
#[derive(Debug, Clone)]
pub struct RunDataset {
    /// Catalog entry (id, path, obs keys).
    pub entry: DatasetEntry,
    /// The paper's dataset it stands in for.
    pub paper: Option<String>,
    /// Declared log-normalized by the experiment file (`log_normalized`) against the catalog.
    pub declared_log_normalized: bool,
}

impl RunDataset {
    /// The input's digest as stage keys start from: the file's SHA-256, marked when the experiment
    /// declared its X log-normalized (it is then read another way, so its stages differ).
    pub fn digest(&self, cache: &crate::cache::Cache) -> Result<String> {
        let d = cache.file_digest(&self.entry.path)?;
        Ok(if self.declared_log_normalized {
            format!("{d}+log_normalized")
        } else {
            d
        })
    }
}

/// What a run wrote.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Output folder.
    pub out: PathBuf,
    /// Files written, relative to `out`.
    pub files: Vec<String>,
    /// Stages read from the cache.
    pub hits: usize,
    /// Stages computed.
    pub computed: usize,
    /// Datasets skipped, with the reason.
    pub skipped: Vec<String>,
    /// Every table as written (CSV cells), by file stem ([`outputs::names`]).
    pub tables: BTreeMap<String, report::Table>,
    /// Every figure's JSON spec, by file stem.
    pub specs: BTreeMap<String, serde_json::Value>,
}

impl RunSummary {
    /// The table the run wrote as `stem`.
    pub fn table(&self, stem: &str) -> Result<&report::Table> {
        self.tables.get(stem).ok_or_else(|| {
            Error::param(
                "results",
                format!("the run of {} wrote no `{stem}` table", self.out.display()),
            )
        })
    }
}

/// Resolves the experiment's datasets (`available` expands to every dataset found).
pub fn resolve_datasets(e: &Experiment, opts: &RunOptions) -> Result<Vec<RunDataset>> {
    let dirs = data::default_data_dirs(opts.data_dir.as_deref());
    let ids = opts.datasets.clone().unwrap_or_else(|| e.datasets.clone());
    let mut out: Vec<RunDataset> = Vec::new();
    for id in &ids {
        let entries = if id == "available" {
            data::catalog(&dirs)
        } else {
            let base = e.file.parent().unwrap_or(Path::new("."));
            let rel = base.join(id);
            let key = if !Path::new(id).exists() && rel.exists() {
                rel.display().to_string()
            } else {
                id.clone()
            };
            vec![data::resolve(&key, &dirs).map_err(|err| {
                e.err("datasets", id, format!("dataset `{id}` was not found: {err}"), "run scripts/fetch-data.sh, fix the id (see `cellsentence datasets`), or pass --data-dir")
            })?]
        };
        for entry in entries {
            if out.iter().any(|d| d.entry.id == entry.id) {
                continue;
            }
            out.push(RunDataset {
                paper: e.paper_datasets.get(&entry.id).cloned(),
                entry,
                declared_log_normalized: false,
            });
        }
    }
    if out.is_empty() {
        return Err(e.err(
            "datasets",
            "datasets",
            "no dataset was found",
            "run scripts/fetch-data.sh or pass --data-dir",
        ));
    }
    for id in &e.log_normalized {
        let Some(d) = out
            .iter_mut()
            .find(|d| &d.entry.id == id || d.entry.path == Path::new(id))
        else {
            let ids: Vec<&str> = out.iter().map(|d| d.entry.id.as_str()).collect();
            return Err(e.err(
                "log_normalized",
                id,
                format!(
                    "`{id}` is not one of the run's datasets ({})",
                    ids.join(", ")
                ),
                "list ids of `datasets` only",
            ));
        };
        d.declared_log_normalized = d.entry.counts;
        d.entry.counts = false;
    }
    Ok(out)
}

/// Runs one experiment file. A run that fails leaves no results folder it created.
pub fn run(e: &Experiment, opts: &RunOptions) -> Result<RunSummary> {
    let existed = opts.out.exists();
    let r = run_staged(e, opts);
    if r.is_err() && !existed {
        // only an empty folder goes: whatever else is there stays
        let _ = std::fs::remove_dir(&opts.out);
    }
    r
}

fn run_staged(e: &Experiment, opts: &RunOptions) -> Result<RunSummary> {
    let mut e = e.clone();
    e.annotation.pretrain.retrain = opts.retrain_lm;
    let e = &e;
    let reported = paper::load_or_builtin(opts.reported.as_deref())?;
    for (ours, theirs) in &e.paper_datasets {
        if !reported.has_dataset(theirs) {
            return Err(e.err(
                "paper_datasets",
                ours,
                format!(
                    "`{theirs}` is not one of the paper's datasets ({})",
                    reported
                        .datasets
                        .iter()
                        .map(|(k, _)| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "use one of those names",
            ));
        }
    }
    let final_out = opts.out.join(&e.name);
    let swept = crate::output::clean(&opts.out, std::slice::from_ref(&final_out))?;
    if swept > 0 && !opts.quiet {
        eprintln!(
            "[run] removed {swept} temporary file(s) or folder(s) an interrupted run left in {}",
            opts.out.display()
        );
    }
    // never replace a folder that is not an earlier result of an experiment
    crate::output::check_out(
        "--out",
        &final_out,
        &[],
        crate::output::OutKind::Folder { marker: "index.md" },
    )?;
    let datasets = resolve_datasets(e, opts)?;
    let cache = Cache::open(&opts.cache, opts.force)?.quiet(opts.quiet);
    // the results folder is written aside and swapped in whole: a kill leaves the old one or the new
    let staged = crate::output::StagedDir::new(&final_out)?;
    let out = staged.path().to_path_buf();
    let mut summary = match e.task {
        Task::Reconstruction => {
            reconstruction::run(e, &datasets, &reported, &cache, &out, opts.quiet)?
        }
        Task::Annotation => annotation::run(
            e,
            &datasets,
            &reported,
            &cache,
            &out,
            opts.quiet,
            opts.data_dir.as_deref(),
        )?,
        Task::HvgSweep => sweep::run(e, &datasets, &cache, &out, opts.quiet)?,
        Task::LmScaling => lm_scaling::run(
            e,
            &datasets,
            &cache,
            &out,
            opts.quiet,
            opts.data_dir.as_deref(),
        )?,
    };
    staged.keep_from_old(KEPT_NOTES)?;
    staged.commit(&format!("results:{}", e.name))?;
    (summary.hits, summary.computed) = cache.counts();
    summary.out = final_out;
    Ok(summary)
}

/// Hand-written files kept when a results folder is replaced.
pub const KEPT_NOTES: &[&str] = &["README.md"];

/// Runs an experiment file from its path.
pub fn run_file(path: &Path, opts: &RunOptions) -> Result<RunSummary> {
    let e = Experiment::load(path)?;
    run(&e, opts)
}

/// The paper's label for a sentence mode.
pub fn mode_label(m: GeneSet) -> &'static str {
    match m {
        GeneSet::All => "full",
        GeneSet::Hvg => "hvg",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_file_gets_paper_defaults() {
        let e = Experiment::parse(
            Path::new("x.yaml"),
            "name: r\ntask: reconstruction\ndatasets: [baron_human]\n",
        )
        .unwrap();
        assert_eq!(e.reconstruction.cells, CellCount::N(1024));
        assert_eq!(e.hvg.flavor, Flavor::SeuratV3);
        assert_eq!(e.preprocess.log_base, Some(10.0));
        assert_eq!(e.modes, vec![GeneSet::All, GeneSet::Hvg]);
    }

    #[test]
    fn errors_name_key_and_line() {
        let err = Experiment::parse(
            Path::new("x.yaml"),
            "name: r\ntask: reconstruction\ndatasets: [a]\nreconstruction:\n  cells: -5\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("x.yaml") && err.contains("line 5") && err.contains("positive"),
            "{err}"
        );
        let err = Experiment::parse(
            Path::new("x.yaml"),
            "name: r\ntask: reconstruction\ndatasets: [a]\nsed: 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("unknown field `sed`") && err.contains("line 4"),
            "{err}"
        );
    }
}
