//! `cellsentence reproduce`: the sentence-length and compute tables, every experiment file in
//! dependency order (shared stages computed once through the cache), and `REPORT.md` with the
//! paper's tables and figures beside ours.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::{Cache, Outcome};
use crate::data;
use crate::error::{Error, Result};
use crate::experiment::{self, Experiment, RunOptions, RunSummary, Task};
use crate::hvg::HvgParams;
use crate::lm::{self, EmbedOptions, GptNeox, PromptStyle};
use crate::paper::{self, Reported};
use crate::pipeline::{self, HvgInput};
use crate::preprocess::PreprocessParams;
use crate::report::{self, f4, Table};
use crate::sentence::{GeneSet, SentenceParams};

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

/// Sentence statistics and timings of one dataset (a cached stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetCompute {
    pub dataset: String,
    pub cells_in: usize,
    pub cells_kept: usize,
    pub genes_kept: usize,
    pub hvg: usize,
    /// Per mode (`full`, `hvg`).
    pub modes: Vec<ModeCompute>,
}

/// Sentence length, tokens and embedding speed of one sentence mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeCompute {
    pub mode: String,
    /// Mean genes per sentence, untruncated and at the 200-gene budget.
    pub genes: f64,
    pub genes_200: f64,
    /// Mean prompt tokens per cell (None without a tokenizer).
    pub tokens: Option<f64>,
    pub tokens_200: Option<f64>,
    /// Embedding speed on the timed sample (cells/s), untruncated and at the budget.
    pub cells_per_s: Option<f64>,
    pub cells_per_s_200: Option<f64>,
    /// The first cell's first 12 genes.
    pub example: String,
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

/// A random-weight GPT-NeoX of the small LM's shape with the tokenizer's vocabulary: the timing
/// model of the compute table when no checkpoint is given (weights do not change the time).
fn timing_model(vocab: i64, lm: &lm::TrainConfig) -> (GptNeox, tch::nn::VarStore) {
    let cfg = lm.neox_config(vocab, 16384);
    crate::torch_seeded(0, || {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let m = GptNeox::new(&vs.root(), &cfg);
        (m, vs)
    })
}

fn time_embedding(model: &GptNeox, ids: &[Vec<i64>]) -> Result<f64> {
    if ids.is_empty() {
        return Ok(f64::NAN);
    }
    let opts = EmbedOptions {
        progress: false,
        ..EmbedOptions::default()
    };
    lm::embed_ids(model, &ids[..1], &opts)?; // warm-up
    let t0 = std::time::Instant::now();
    lm::embed_ids(model, ids, &opts)?;
    Ok(ids.len() as f64 / t0.elapsed().as_secs_f64())
}

fn mean(v: impl Iterator<Item = usize>) -> f64 {
    let (s, n) = v.fold((0usize, 0usize), |(s, n), x| (s + x, n + 1));
    s as f64 / n.max(1) as f64
}

/// Computes (or reads from the cache) the compute record of one dataset.
fn dataset_compute(
    id: &str,
    opts: &ReproduceOptions,
    lm_cfg: &lm::TrainConfig,
    cache: &Cache,
) -> Result<(DatasetCompute, Outcome)> {
    let dirs = data::default_data_dirs(opts.data_dir.as_deref());
    let entry = data::resolve(id, &dirs)?;
    let digest = cache.file_digest(&entry.path)?;
    let tok_path = match &opts.model {
        Some(m) => Some(m.join("tokenizer.json")),
        None => opts.tokenizer.is_file().then(|| opts.tokenizer.clone()),
    };
    let tok_digest = tok_path
        .as_ref()
        .map(|p| cache.file_digest(p))
        .transpose()?;
    let model_digest = opts
        .model
        .as_ref()
        .map(|m| cache.file_digest(m))
        .transpose()?;
    let inputs = (
        &digest,
        &tok_digest,
        &model_digest,
        lm_cfg,
        opts.timed_cells,
        tch::get_num_threads(),
    );
    cache.json("compute", id, &inputs, || {
        let ds = entry.load(!opts.quiet)?;
        let cells_in = ds.n_cells();
        let pp = PreprocessParams::default();
        let p = pipeline::prepare(ds, entry.counts.then_some(&pp), false)?;
        let h = pipeline::select_hvg(&p, &HvgParams::default(), HvgInput::Log, None)?;
        let tok = tok_path
            .as_ref()
            .map(|t| lm::tokenizer::Tok::load(t))
            .transpose()?;
        let checkpoint = match &opts.model {
            Some(m) => Some(lm::load(m, tch::Device::Cpu, tch::Kind::Float)?),
            None => None,
        };
        let random = match (&checkpoint, &tok) {
            (None, Some(t)) => Some(timing_model(t.vocab_size() as i64, lm_cfg)),
            _ => None,
        };
        let model = checkpoint
            .as_ref()
            .map(|c| &c.model)
            .or(random.as_ref().map(|r| &r.0));
        let style = PromptStyle::c2s_default();
        let sample = crate::reconstruct::sample_cells(p.data.n_cells(), opts.timed_cells, 0);
        let mut modes = Vec::new();
        for g in [GeneSet::All, GeneSet::Hvg] {
            let s = pipeline::sentences(
                &p,
                g,
                Some(&h),
                &SentenceParams {
                    seed: crate::sentence::C2S_TIE_SEED,
                    max_genes: None,
                },
            )?;
            let words: Vec<Vec<&str>> = s
                .iter()
                .map(|x| x.split(' ').filter(|w| !w.is_empty()).collect())
                .collect();
            let longest = words.iter().map(Vec::len).max().unwrap_or(0);
            let top: Vec<Vec<&str>> = words
                .iter()
                .map(|w| w[..w.len().min(200)].to_vec())
                .collect();
            let full = style.render(&words, longest);
            let short = style.render(&top, 200);
            let (mut tokens, mut tokens_200, mut cps, mut cps_200) = (None, None, None, None);
            if let Some(t) = &tok {
                let ids = t.encode_batch(&full)?;
                let ids_200 = t.encode_batch(&short)?;
                tokens = Some(mean(ids.iter().map(Vec::len)));
                tokens_200 = Some(mean(ids_200.iter().map(Vec::len)));
                if let Some(m) = model {
                    let pick = |v: &[Vec<i64>]| -> Vec<Vec<i64>> {
                        sample.iter().map(|&i| v[i].clone()).collect()
                    };
                    cps = Some(time_embedding(m, &pick(&ids))?);
                    cps_200 = Some(time_embedding(m, &pick(&ids_200))?);
                }
            }
            modes.push(ModeCompute {
                mode: experiment::mode_label(g).to_string(),
                genes: mean(words.iter().map(Vec::len)),
                genes_200: mean(words.iter().map(|w| w.len().min(200))),
                tokens,
                tokens_200,
                cells_per_s: cps,
                cells_per_s_200: cps_200,
                example: words
                    .first()
                    .map(|w| w.iter().take(12).copied().collect::<Vec<_>>().join(" "))
                    .unwrap_or_default(),
            });
        }
        Ok(DatasetCompute {
            dataset: id.to_string(),
            cells_in,
            cells_kept: p.data.n_cells(),
            genes_kept: p.data.n_genes(),
            hvg: h.indices().len(),
            modes,
        })
    })
}

fn opt4(v: Option<f64>) -> String {
    v.map_or_else(String::new, f4)
}

/// Writes `sentences/sentence_lengths.*` and `compute/compute.*`.
fn write_compute_tables(out: &Path, recs: &[DatasetCompute], timing: &str) -> Result<()> {
    let mut t = Table::new([
        "dataset",
        "cells_in",
        "cells_kept",
        "genes_kept",
        "hvg",
        "mean_genes_all",
        "mean_genes_hvg",
        "hvg_to_all_ratio",
        "mean_genes_all_top200",
        "mean_genes_hvg_top200",
    ]);
    for r in recs {
        let (a, h) = (&r.modes[0], &r.modes[1]);
        t.push([
            r.dataset.clone(),
            r.cells_in.to_string(),
            r.cells_kept.to_string(),
            r.genes_kept.to_string(),
            r.hvg.to_string(),
            f4(a.genes),
            f4(h.genes),
            f4(h.genes / a.genes),
            f4(a.genes_200),
            f4(h.genes_200),
        ]);
    }
    let dir = out.join("sentences");
    report::write_atomic(dir.join("sentence_lengths.csv"), t.to_csv().as_bytes())?;
    let md = format!(
        "# Sentence length, all genes vs HVG (seurat_v3 on log10 data, n_top 2000)\n\nMean number of genes per cell sentence; the paper reports HVG sentences at about a third of the full length.\n\n{}",
        t.to_markdown()
    );
    report::write_atomic(dir.join("sentence_lengths.md"), md.as_bytes())?;

    let mut c = Table::new([
        "dataset",
        "mode",
        "cells",
        "genes_per_cell",
        "tokens_per_cell",
        "tokens_per_cell_top200",
        "cells_per_s",
        "cells_per_s_top200",
        "seconds_dataset",
        "seconds_dataset_top200",
    ]);
    for r in recs {
        for m in &r.modes {
            let secs = |cps: Option<f64>| cps.map(|v| r.cells_kept as f64 / v);
            c.push([
                r.dataset.clone(),
                m.mode.clone(),
                r.cells_kept.to_string(),
                f4(m.genes),
                opt4(m.tokens),
                opt4(m.tokens_200),
                m.cells_per_s
                    .map_or_else(String::new, |v| format!("{v:.2}")),
                m.cells_per_s_200
                    .map_or_else(String::new, |v| format!("{v:.2}")),
                secs(m.cells_per_s).map_or_else(String::new, |v| format!("{v:.0}")),
                secs(m.cells_per_s_200).map_or_else(String::new, |v| format!("{v:.0}")),
            ]);
        }
    }
    let dir = out.join("compute");
    report::write_atomic(dir.join("compute.csv"), c.to_csv().as_bytes())?;
    let md = format!(
        "# Compute: full vs HVG cell sentences (not measured in the paper)\n\nTokens per cell: the Cell2Sentence cell-type prompt (template 0) with the whole sentence and with the 200-gene budget the model reads. Speed: {timing}; `seconds_dataset` extrapolates it to every kept cell. The timings were measured once and are cached with the stage, so reruns reproduce them byte for byte.\n\n{}",
        c.to_markdown()
    );
    report::write_atomic(dir.join("compute.md"), md.as_bytes())?;
    Ok(())
}

/// Runs everything and writes `REPORT.md`.
pub fn reproduce(opts: &ReproduceOptions) -> Result<ReproduceSummary> {
    let files = match &opts.experiments {
        Some(f) => f.clone(),
        None => default_experiments(Path::new("experiments"))?,
    };
    let ordered = ordered_experiments(&files)?;
    // debris of an interrupted run (temporary files of atomic writes) is never a result
    crate::output::clean_leftovers(&opts.out)?;
    for d in [opts.out.join("sentences"), opts.out.join("compute")] {
        report::sweep_temporaries(&d);
    }
    let cache = Cache::new(&opts.cache, opts.force).quiet(opts.quiet);
    let lm_cfg = ordered
        .iter()
        .find(|(_, e)| e.task == Task::Annotation)
        .map(|(_, e)| e.annotation.lm.clone())
        .unwrap_or_default();
    let (mut hits, mut computed) = (0, 0);
    let mut recs = Vec::new();
    for id in &opts.datasets {
        let (r, o) = dataset_compute(id, opts, &lm_cfg, &cache)?;
        match o {
            Outcome::Hit => hits += 1,
            Outcome::Computed => computed += 1,
        }
        recs.push(r);
    }
    let timing = match &opts.model {
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
    };
    write_compute_tables(&opts.out, &recs, &timing)?;
    if !opts.quiet {
        eprintln!("[reproduce] wrote sentence-length and compute tables");
    }
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
    let reported = paper::load_or_builtin(opts.reported.as_deref())?;
    let report = write_report(opts, &runs, &recs, &reported)?;
    Ok(ReproduceSummary {
        runs,
        hits,
        computed,
        report,
    })
}

/// Splits one CSV line (fields may be quoted).
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// A generated CSV as (header, rows).
fn read_csv(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text.lines();
    let header = lines.next().map(csv_fields).unwrap_or_default();
    Ok((header, lines.map(csv_fields).collect()))
}

/// Markdown table of the named columns of a generated CSV (rows filtered by `keep`).
fn md_columns(
    path: &Path,
    cols: &[(&str, &str)],
    keep: impl Fn(&dyn Fn(&str) -> String) -> bool,
) -> Result<String> {
    let (header, rows) = read_csv(path)?;
    let idx: Vec<Option<usize>> = cols
        .iter()
        .map(|(c, _)| header.iter().position(|h| h == c))
        .collect();
    let mut t = Table::new(cols.iter().map(|(_, title)| title.to_string()));
    for r in &rows {
        let get = |c: &str| -> String {
            header
                .iter()
                .position(|h| h == c)
                .and_then(|i| r.get(i).cloned())
                .unwrap_or_default()
        };
        if !keep(&get) {
            continue;
        }
        t.push(
            idx.iter()
                .map(|i| i.and_then(|i| r.get(i).cloned()).unwrap_or_default()),
        );
    }
    Ok(t.to_markdown())
}

fn rel(out: &Path, p: &Path) -> String {
    p.strip_prefix(out).unwrap_or(p).display().to_string()
}

fn write_report(
    opts: &ReproduceOptions,
    runs: &[ExperimentRun],
    recs: &[DatasetCompute],
    reported: &Reported,
) -> Result<PathBuf> {
    let out = &opts.out;
    let find = |task: Task, split: Option<experiment::annotation::SplitKind>| {
        runs.iter().find(|r| {
            r.experiment.task == task && split.is_none_or(|s| r.experiment.annotation.split == s)
        })
    };
    use experiment::annotation::SplitKind;
    let mut md = String::new();
    md.push_str("# Reproduction report\n\n");
    md.push_str(&format!(
        "Paper: *{}*. Every number below is read from the tables next to this file, which `cellsentence reproduce` regenerated (stage cache: `{}`). Each section shows ours beside the paper's, with `diff` = ours − paper.\n\n",
        reported.paper,
        opts.cache.display()
    ));
    md.push_str("## What is the paper's and what is a substitute\n\n");
    md.push_str("| paper | here | role |\n|---|---|---|\n");
    md.push_str("| Pancreas (CellFM curation, 12,906 cells, 4 batches) | `baron_human` (Baron et al. 2016, 2,142 cells, 4 donors; bundled via the `came` wheel) | substitute: same tissue, raw counts, 4 batches |\n");
    md.push_str("| Liver, Skin, Heart (CellFM curation) | — | not downloadable here; their rows stay the paper's |\n");
    md.push_str("| — | `pbmc68k_reduced` (scanpy wheel, 700 cells, log-normalized, 765 genes) and every `../shared/data` dataset found | extra datasets, no counterpart |\n");
    match &opts.model {
        Some(m) => md.push_str(&format!(
            "| C2S-Pythia-410M | `{}` | the model given with `--model` |\n",
            m.display()
        )),
        None => md.push_str(&lm_substitute(runs)),
    }
    md.push('\n');

    // Figure I
    md.push_str("## Figure I — cell sentences and HVG cell sentences\n\n");
    md.push_str("Genes of a cell ranked by decreasing expression (Cell2Sentence's tie rules); the HVG sentence keeps only the 2,000 highly variable genes. The first cell's first 12 genes:\n\n");
    for r in recs {
        for m in &r.modes {
            md.push_str(&format!("- `{}` {}: {}\n", r.dataset, m.mode, m.example));
        }
    }
    md.push_str(&format!(
        "\n{}\n[sentence lengths](sentences/sentence_lengths.md)\n\n",
        md_columns(
            &out.join("sentences/sentence_lengths.csv"),
            &[
                ("dataset", "dataset"),
                ("cells_kept", "cells"),
                ("mean_genes_all", "genes / full sentence"),
                ("mean_genes_hvg", "genes / HVG sentence"),
                ("hvg_to_all_ratio", "HVG / full"),
            ],
            |_| true,
        )?
    ));

    // Table I and Figures II–VII
    if let Some(r) = find(Task::Reconstruction, None) {
        let dir = &r.summary.out;
        let link = rel(out, dir);
        md.push_str("## Table I — mean reconstruction quality, full vs HVG sentences\n\n");
        md.push_str(&md_columns(
            &dir.join("table_I.csv"),
            &[
                ("mode", "mode"),
                ("model", "model"),
                ("datasets", "datasets"),
                ("r2", "R²"),
                ("pearson", "Pearson"),
                ("spearman", "Spearman"),
                ("paper_r2", "paper R²"),
                ("paper_pearson", "paper Pearson"),
                ("paper_spearman", "paper Spearman"),
                ("diff_r2", "diff R²"),
            ],
            |_| true,
        )?);
        md.push_str(&format!("\nOurs: mean over our datasets; the paper: mean over Liver, Skin, Pancreas. Details: [{link}/table_I.md]({link}/table_I.md), [per dataset]({link}/reconstruction.md), [figure]({link}/figures/table_I.html).\n\n"));
        md.push_str("## Figures II–VII — reconstruction per dataset\n\n");
        md.push_str("| figure | paper dataset, sentences | paper R² / Pearson / Spearman | ours | our R² / Pearson / Spearman | figure |\n|---|---|---|---|---|---|\n");
        let (header, rows) = read_csv(&dir.join("reconstruction.csv"))?;
        let col = |r: &Vec<String>, c: &str| {
            header
                .iter()
                .position(|h| h == c)
                .and_then(|i| r.get(i).cloned())
                .unwrap_or_default()
        };
        let figs = [
            ("II", "Liver", "full"),
            ("III", "Liver", "hvg"),
            ("IV", "Skin", "full"),
            ("V", "Skin", "hvg"),
            ("VI", "Pancreas", "full"),
            ("VII", "Pancreas", "hvg"),
        ];
        for (fig, pd, mode) in figs {
            let pv = reported
                .reconstruction
                .iter()
                .find(|(d, _)| d == pd)
                .map(|(_, p)| if mode == "full" { &p.full } else { &p.hvg });
            let pv_s = pv.map_or(String::new(), |m| {
                format!("{:.2} / {:.2} / {:.2}", m.r2, m.pearson, m.spearman)
            });
            // the first of our datasets standing in for the paper's (in the file's order)
            let ours = rows.iter().find(|r| {
                col(r, "paper_dataset") == pd && col(r, "mode") == mode && col(r, "model") == "c2s"
            });
            let (ds, vals, fig_link) = match ours {
                Some(r) => {
                    let ds = col(r, "dataset");
                    (
                        format!("`{ds}`"),
                        format!(
                            "{} / {} / {}",
                            col(r, "r2"),
                            col(r, "pearson"),
                            col(r, "spearman")
                        ),
                        format!("[scatter]({link}/figures/reconstruction_{ds}_{mode}.html)"),
                    )
                }
                None => (
                    "— (no substitute here)".into(),
                    String::new(),
                    String::new(),
                ),
            };
            md.push_str(&format!(
                "| {fig} | {pd}, {mode} | {pv_s} | {ds} | {vals} | {fig_link} |\n"
            ));
        }
        md.push_str(&format!(
            "\nEvery dataset's scatter (full and HVG): [{link}/index.md]({link}/index.md).\n\n"
        ));
    }

    // Figure VIII
    if let Some(r) = find(Task::Annotation, None) {
        let a = &r.experiment.annotation;
        md.push_str("## Figure VIII — the annotation model\n\n");
        md.push_str(&format!(
            "Cell embedding = mean of the LM's last hidden states over the prompt (top-{} genes) → MLP: Linear {} → BatchNorm → GELU → Dropout {} → Linear {} → BatchNorm → GELU → Dropout {} → Linear n_classes; cross-entropy, Adam lr {}, batches of {}, ≤ {} epochs, early stopping after {} epochs without validation improvement (best weights restored), inputs standardised with training statistics.\n\n",
            a.max_genes,
            a.mlp.hidden.first().copied().unwrap_or(512),
            a.mlp.dropout,
            a.mlp.hidden.get(1).copied().unwrap_or(256),
            a.mlp.dropout,
            a.mlp.lr,
            a.mlp.batch_size,
            a.mlp.max_epochs,
            a.mlp.patience
        ));
    }
    let ann_cols: [(&str, &str); 10] = [
        ("dataset", "dataset"),
        ("method", "ours"),
        ("paper_row", "paper row"),
        ("accuracy", "accuracy"),
        ("macro_f1", "macro-F1"),
        ("paper_accuracy", "paper accuracy"),
        ("paper_macro_f1", "paper macro-F1"),
        ("diff_accuracy", "diff acc."),
        ("diff_macro_f1", "diff F1"),
        ("role", "role"),
    ];
    for (split, title) in [
        (
            SplitKind::Kfold,
            "## Figure IX — intra-dataset annotation (stratified 5-fold)\n\n",
        ),
        (
            SplitKind::Batch,
            "## Figures X and XI — inter-dataset annotation (leave one batch out)\n\n",
        ),
    ] {
        let Some(r) = find(Task::Annotation, Some(split)) else {
            continue;
        };
        let dir = &r.summary.out;
        let link = rel(out, dir);
        md.push_str(title);
        md.push_str(&md_columns(&dir.join("annotation.csv"), &ann_cols, |_| {
            true
        })?);
        md.push_str(&format!(
            "\nMean over folds (sd in [{link}/annotation.md]({link}/annotation.md)); the paper's other models: [{link}/reported.md]({link}/reported.md).\n\n"
        ));
        let mut ids: Vec<String> = read_csv(&dir.join("annotation.csv"))?
            .1
            .iter()
            .filter_map(|r| r.first().cloned())
            .collect();
        ids.dedup();
        for id in ids {
            md.push_str(&format!(
                "- `{id}`: [bar chart]({link}/figures/annotation_{id}.html), [per-class F1]({link}/per_class_{id}.md), [confusion matrix]({link}/figures/confusion_{id}.html)\n"
            ));
        }
        md.push('\n');
    }

    if let Some(r) = find(Task::Annotation, None) {
        md.push_str(&lm_section(&r.experiment)?);
    }

    // beyond the paper
    if let Some(r) = find(Task::HvgSweep, None) {
        let dir = &r.summary.out;
        let link = rel(out, dir);
        md.push_str("## Beyond the paper — HVG count and flavor sweep\n\n");
        md.push_str(&md_columns(
            &dir.join("sweep.csv"),
            &[
                ("dataset", "dataset"),
                ("flavor", "flavor"),
                ("n_top", "n_top"),
                ("mean_length", "genes / sentence"),
                ("r2", "reconstruction R²"),
                ("macro_f1", "macro-F1 (SVM on sentence)"),
            ],
            |_| true,
        )?);
        md.push_str(&format!(
            "\nFigure: {}; method: [{link}/sweep.md]({link}/sweep.md).\n\n",
            {
                let mut v: Vec<String> = r
                    .summary
                    .specs
                    .keys()
                    .map(|s| format!("[{s}]({link}/figures/{s}.html)"))
                    .collect();
                v.sort();
                v.join(", ")
            }
        ));
        for s in r.summary.specs.keys() {
            md.push_str(&format!("![{s}]({link}/figures/{s}.svg)\n\n"));
        }
    }
    md.push_str("## Beyond the paper — compute of full vs HVG sentences\n\n");
    md.push_str(&md_columns(
        &out.join("compute/compute.csv"),
        &[
            ("dataset", "dataset"),
            ("mode", "sentences"),
            ("genes_per_cell", "genes / cell"),
            ("tokens_per_cell", "tokens / cell"),
            ("tokens_per_cell_top200", "tokens / cell (200-gene budget)"),
            ("cells_per_s", "cells/s"),
            ("cells_per_s_top200", "cells/s (budget)"),
            ("seconds_dataset", "s / dataset"),
            ("seconds_dataset_top200", "s / dataset (budget)"),
        ],
        |_| true,
    )?);
    md.push('\n');
    for r in recs {
        let (a, h) = (&r.modes[0], &r.modes[1]);
        if let (Some(ta), Some(th), Some(ta2), Some(th2)) =
            (a.tokens, h.tokens, a.tokens_200, h.tokens_200)
        {
            md.push_str(&format!(
                "- `{}`: HVG / full tokens per cell = {} untruncated, {} at the 200-gene budget.\n",
                r.dataset,
                f4(th / ta),
                f4(th2 / ta2)
            ));
        }
    }
    md.push_str("\nHow it was timed: [compute/compute.md](compute/compute.md).\n\n");
    let benches: Vec<&str> = ["preprocess", "embed_cpu", "embed_cuda", "annotation"]
        .into_iter()
        .filter(|b| out.join(format!("benchmarks/{b}.md")).is_file())
        .collect();
    if !benches.is_empty() {
        md.push_str("## Benchmarks against the reference tools\n\n");
        for b in benches {
            md.push_str(&format!("- [benchmarks/{b}.md](benchmarks/{b}.md)\n"));
        }
        md.push('\n');
    }
    md.push_str("## Experiments run\n\n");
    for r in runs {
        md.push_str(&format!(
            "- `{}` → [{}/index.md]({}/index.md)\n",
            r.file.display(),
            rel(out, &r.summary.out),
            rel(out, &r.summary.out)
        ));
    }
    let path = out.join("REPORT.md");
    report::write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

/// The report's line on what stands in for C2S-Pythia-410M, from the annotation experiments' settings.
fn lm_substitute(runs: &[ExperimentRun]) -> String {
    use experiment::lm_protocol::LmProtocol;
    let Some(a) = runs
        .iter()
        .find(|r| r.experiment.task == Task::Annotation)
        .map(|r| &r.experiment.annotation)
    else {
        return String::new();
    };
    match a.lm_protocol {
        LmProtocol::Pretrained => {
            let (p, c) = (&a.pretrain, &a.pretrain.lm);
            format!(
                "| C2S-Pythia-410M (cell-type prediction checkpoint) | one GPT-NeoX cell-sentence LM pretrained here ({} layers, hidden {}, {} steps of {} sentences) on every reachable dataset except the evaluated ones{} | substitute: ~30× smaller and trained on ~16k cells; its rows are held out from pretraining; pass `--model DIR` with the real checkpoint |\n",
                c.layers,
                c.hidden,
                c.steps,
                c.batch_size,
                p.checkpoint
                    .as_ref()
                    .map_or(String::new(), |d| format!(" (`{}`, with its `corpus.json`)", d.display()))
            )
        }
        LmProtocol::PerMode => format!(
            "| C2S-Pythia-410M (cell-type prediction checkpoint) | a small GPT-NeoX cell-sentence LM trained here per dataset and sentence mode ({} layers, hidden {}, {} steps) | substitute: far weaker embeddings; pass `--model DIR` with the real checkpoint |\n",
            a.lm.layers, a.lm.hidden, a.lm.steps
        ),
    }
}

/// The report's paragraph on the pretrained model: its corpus and held-out sets from its
/// `corpus.json`, and where the scaling sweep, layer sweep and attribution live.
fn lm_section(e: &Experiment) -> Result<String> {
    use experiment::lm_protocol::LmProtocol;
    let a = &e.annotation;
    let Some(dir) = a
        .pretrain
        .checkpoint
        .as_ref()
        .filter(|_| a.lm_protocol == LmProtocol::Pretrained && a.model.is_none())
    else {
        return Ok(String::new());
    };
    let Some(c) = lm::Corpus::read(dir)? else {
        return Ok(String::new());
    };
    let mut md = String::from("## The language model — pretrained, held out, fine-tuned\n\n");
    md.push_str(&format!(
        "The LM rows above come from `{}`: one GPT-NeoX cell-sentence model ({} layers, hidden {}, vocabulary {} upper-case gene symbols) pretrained for {} steps ({} tokens, {:.0} s) on {} cells of {} datasets: {}. Held out: {}. `pretrained` and `untrained` rows never saw the evaluated cells; `fine-tuned` rows did (their unlabelled sentences, {} steps per mode).\n\n",
        dir.display(),
        a.pretrain.lm.layers,
        a.pretrain.lm.hidden,
        c.vocab_size,
        c.steps,
        c.tokens_seen,
        c.wall_seconds,
        c.datasets.iter().map(|d| d.cells).sum::<usize>(),
        c.datasets.len(),
        c.datasets
            .iter()
            .map(|d| format!("`{}` ({})", d.id, d.cells))
            .collect::<Vec<_>>()
            .join(", "),
        c.held_out
            .iter()
            .map(|(k, v)| format!("`{k}` ({v})"))
            .collect::<Vec<_>>()
            .join(", "),
        a.pretrain.finetune.as_ref().map_or(0, |f| f.steps)
    ));
    md.push_str("Beyond the default run (committed, regenerated by their own commands): the scaling sweep over checkpoints of this run and the layer sweep in `results/lm_scaling/` (`cellsentence run experiments/extra/lm_scaling.yaml`), gene-token attribution in `results/attribution/` (`scripts/lm-attribution.sh`), and why a briefly trained model reads cells worse than its initialisation in `results/lm_diagnosis/`.\n\n");
    Ok(md)
}
