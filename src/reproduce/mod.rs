//! `cellsentence reproduce`: the sentence-length and compute tables, every experiment file in
//! dependency order (shared stages computed once through the cache), and `REPORT.md` with the
//! paper's tables and figures beside ours.
use std::path::{Path, PathBuf};

use crate::cache::{Cache, Outcome};
use crate::error::{Error, Result};
use crate::experiment::{self, Experiment, RunOptions, RunSummary, Task};
use crate::paper;

mod compute;
mod report_answer;
mod report_md;
mod report_quality;

pub use compute::{DatasetCompute, ModeCompute};

/// Settings of [`reproduce`].
#[derive(Debug, Clone)]
pub struct ReproduceOptions {
    /// Results root.
    pub out: PathBuf,
    /// Stage cache.
    pub cache: PathBuf,
    /// Recompute every stage.
    pub force: bool,
    /// Extra data directory.
    pub data_dir: Option<PathBuf>,
    /// Datasets of the sentence-length and compute tables.
    pub datasets: Vec<String>,
    /// Experiment files (default: `experiments/*.yaml`).
    pub experiments: Option<Vec<PathBuf>>,
    /// A GPT-NeoX checkpoint (C2S-Pythia-410M) for the annotation experiments and the compute
    /// table, instead of the small LM.
    pub model: Option<PathBuf>,
    /// The Pythia tokenizer that counts tokens per cell when no model is given.
    pub tokenizer: PathBuf,
    /// The paper's numbers (`None`: the transcription built into the binary).
    pub reported: Option<PathBuf>,
    /// Cells timed per dataset and sentence mode in the compute table.
    pub timed_cells: usize,
    /// No progress bars.
    pub quiet: bool,
    /// Retrain the committed pretrained LM checkpoint from its command and seed.
    pub retrain_lm: bool,
}

impl Default for ReproduceOptions {
    fn default() -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        Self {
            out: "results".into(),
            cache: ".cache/stages".into(),
            force: false,
            data_dir: None,
            datasets: vec!["baron_human".into(), "pbmc68k_reduced".into()],
            experiments: None,
            model: None,
            tokenizer: root.join("../shared/tokenizers/gpt-neox-20b/tokenizer.json"),
            reported: None,
            timed_cells: 8,
            quiet: false,
            retrain_lm: false,
        }
    }
}

/// One experiment's run.
#[derive(Debug, Clone)]
pub struct ExperimentRun {
    pub file: PathBuf,
    pub experiment: Experiment,
    pub summary: RunSummary,
}

/// What [`reproduce`] did.
#[derive(Debug, Clone)]
pub struct ReproduceSummary {
    pub runs: Vec<ExperimentRun>,
    /// Stages read from the cache / computed, over everything.
    pub hits: usize,
    pub computed: usize,
    /// `REPORT.md`.
    pub report: PathBuf,
}

/// Experiment files in dependency order: reconstruction, annotation (intra before inter, so the
/// shared LM stages are trained once), then the rest; by name within a task.
pub fn ordered_experiments(files: &[PathBuf]) -> Result<Vec<(PathBuf, Experiment)>> {
    let mut v: Vec<(PathBuf, Experiment)> = files
        .iter()
        .map(|f| Experiment::load(f).map(|e| (f.clone(), e)))
        .collect::<Result<_>>()?;
    let rank = |e: &Experiment| match e.task {
        Task::Reconstruction => 0,
        Task::Annotation if e.annotation.split == experiment::annotation::SplitKind::Kfold => 1,
        Task::Annotation => 2,
        Task::HvgSweep => 3,
        Task::LmScaling => 4,
    };
    v.sort_by(|a, b| (rank(&a.1), &a.1.name).cmp(&(rank(&b.1), &b.1.name)));
    Ok(v)
}

/// `experiments/*.yaml`, sorted.
pub fn default_experiments(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::format(
            dir,
            format!(
                "reproduce reads the paper's experiment files from {} in the current folder ({}), and there is none",
                dir.display(),
                std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default()
            ),
            "run it from the cellsentence repository root, or pass --experiments FILE (one per experiment; `cellsentence run FILE` runs one from anywhere)",
        ));
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    Ok(v)
}

/// Runs everything and writes `REPORT.md`.
pub fn reproduce(opts: &ReproduceOptions) -> Result<ReproduceSummary> {
    let files = match &opts.experiments {
        Some(f) => f.clone(),
        None => default_experiments(Path::new("experiments"))?,
    };
    let ordered = ordered_experiments(&files)?;
    // debris of an interrupted run (temporary files of atomic writes) is never a result
    let tables = [opts.out.join("sentences"), opts.out.join("compute")];
    crate::output::clean(&opts.out, &tables)?;
    let cache = Cache::open(&opts.cache, opts.force)?.quiet(opts.quiet);
    let lm_cfg = ordered
        .iter()
        .find(|(_, e)| e.task == Task::Annotation)
        .map(|(_, e)| e.annotation.lm.clone())
        .unwrap_or_default();
    let settings = ordered
        .iter()
        .find(|(_, e)| e.task == Task::Reconstruction)
        .map_or_else(compute::DataSettings::default, |(_, e)| {
            compute::DataSettings::of(e)
        });
    let (mut hits, mut computed) = (0, 0);
    let mut recs = Vec::new();
    for id in &opts.datasets {
        let (r, o) = compute::dataset_compute(id, opts, &settings, &lm_cfg, &cache)?;
        match o {
            Outcome::Hit => hits += 1,
            Outcome::Computed => computed += 1,
        }
        recs.push(r);
    }
    let timing = timing_text(opts, &lm_cfg);
    let tables = compute::write_compute_tables(&opts.out, &settings, &recs, &timing)?;
    if !opts.quiet {
        eprintln!("[reproduce] wrote sentence-length and compute tables");
    }
    let (runs, h, c) = run_experiments(opts, ordered)?;
    let reported = paper::load_or_builtin(opts.reported.as_deref())?;
    let report = report_md::write_report(opts, &runs, &recs, &tables, &reported)?;
    Ok(ReproduceSummary {
        runs,
        hits: hits + h,
        computed: computed + c,
        report,
    })
}

/// How the compute table's speed was measured.
fn timing_text(opts: &ReproduceOptions, lm_cfg: &crate::lm::TrainConfig) -> String {
    match &opts.model {
        Some(m) => format!(
            "embedding with {} on CPU, {} libtorch threads, {} sampled cells per dataset and mode",
            m.display(),
            tch::get_num_threads(),
            opts.timed_cells
        ),
        None => format!(
            "embedding with a random-weight GPT-NeoX of the small LM's shape ({} layers, hidden {}) and the Pythia vocabulary on CPU, {} libtorch threads, {} sampled cells per dataset and mode (C2S-Pythia-410M is ~50× the compute per token)",
            lm_cfg.layers,
            lm_cfg.hidden,
            tch::get_num_threads(),
            opts.timed_cells
        ),
    }
}

/// Runs the experiments in order; returns them with the stages read from the cache and computed.
fn run_experiments(
    opts: &ReproduceOptions,
    ordered: Vec<(PathBuf, Experiment)>,
) -> Result<(Vec<ExperimentRun>, usize, usize)> {
    let (mut hits, mut computed) = (0, 0);
    let mut runs = Vec::new();
    for (file, mut e) in ordered {
        let t0 = std::time::Instant::now();
        if let (Some(m), Task::Annotation) = (&opts.model, e.task) {
            e.annotation.model = Some(m.clone());
        }
        let ro = RunOptions {
            out: opts.out.clone(),
            cache: opts.cache.clone(),
            force: opts.force,
            data_dir: opts.data_dir.clone(),
            datasets: None,
            reported: opts.reported.clone(),
            quiet: opts.quiet,
            retrain_lm: opts.retrain_lm,
        };
        let s = experiment::run(&e, &ro)?;
        eprintln!(
            "[reproduce] {}: {} stage(s) from cache, {} computed, {:.1} s → {}",
            file.display(),
            s.hits,
            s.computed,
            t0.elapsed().as_secs_f64(),
            s.out.display()
        );
        hits += s.hits;
        computed += s.computed;
        runs.push(ExperimentRun {
            file,
            experiment: e,
            summary: s,
        });
    }
    Ok((runs, hits, computed))
}
