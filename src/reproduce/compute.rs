//! The sentence-length and compute tables of `reproduce`: per dataset, sentence lengths of full
//! and HVG sentences, prompt tokens and embedding speed (a cached stage; timings are measured once).
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ReproduceOptions;
use crate::cache::{Cache, Outcome};
use crate::data;
use crate::error::Result;
use crate::experiment;
use crate::experiment::{Experiment, HvgSection};
use crate::lm::{self, EmbedOptions, GptNeox, PromptStyle};
use crate::pipeline::{self, HvgInput};
use crate::preprocess::PreprocessParams;
use crate::report::{self, f4, Table};
use crate::sentence::{GeneSet, SentenceParams};

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

/// The data settings of the sentence-length and compute tables: the reconstruction experiment's,
/// so these tables describe the sentences the experiments made (the defaults when none is run).
#[derive(Debug, Clone, Serialize)]
pub(super) struct DataSettings {
    /// QC, normalize_total, log.
    pub preprocess: PreprocessParams,
    /// HVG selection.
    pub hvg: HvgSection,
    /// Seed of the sentences' tie shuffle.
    pub tie_seed: u32,
}

impl Default for DataSettings {
    fn default() -> Self {
        Self {
            preprocess: PreprocessParams::default(),
            hvg: HvgSection::default(),
            tie_seed: crate::sentence::C2S_TIE_SEED,
        }
    }
}

impl DataSettings {
    /// The settings of `e`.
    pub fn of(e: &Experiment) -> Self {
        Self {
            preprocess: e.preprocess.clone(),
            hvg: e.hvg.clone(),
            tie_seed: e.sentences.tie_seed,
        }
    }

    /// The HVG selection in words, e.g. `seurat_v3 on log10 data, n_top 2000`.
    pub fn hvg_text(&self) -> String {
        let on = match (self.hvg.on, self.preprocess.log_base) {
            (HvgInput::Log, Some(b)) => format!("log{b}"),
            (HvgInput::Log, None) => "ln".to_string(),
            (HvgInput::Counts, _) => "count".to_string(),
        };
        format!(
            "{} on {on} data, n_top {}",
            self.hvg.flavor, self.hvg.n_top_genes
        )
    }
}

/// Computes (or reads from the cache) the compute record of one dataset.
pub(super) fn dataset_compute(
    id: &str,
    opts: &ReproduceOptions,
    settings: &DataSettings,
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
        settings,
        lm_cfg,
        opts.timed_cells,
        tch::get_num_threads(),
    );
    cache.json("compute", id, &inputs, || {
        let ds = entry.load(!opts.quiet)?;
        let cells_in = ds.n_cells();
        let hvg = pipeline::HvgSource::Select {
            params: settings.hvg.params(),
            on: settings.hvg.on,
            batch_key: None,
        };
        let pp = &settings.preprocess;
        let mut pl =
            pipeline::Pipeline::new(ds, entry.counts.then_some(pp), hvg, pipeline::Counts::Drop)?;
        let (p, h) = pl.with_hvg()?;
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
        let timing = (tok.as_ref(), model, sample.as_slice());
        let modes = [GeneSet::All, GeneSet::Hvg]
            .into_iter()
            .map(|g| mode_compute(p, h, g, settings.tie_seed, &style, timing))
            .collect::<Result<Vec<_>>>()?;
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

/// Sentence length, prompt tokens and embedding speed of one sentence mode (`timing`: the
/// tokenizer, the timing model and the sampled cells).
fn mode_compute(
    p: &pipeline::Prepared,
    h: &crate::hvg::HvgResult,
    g: GeneSet,
    tie_seed: u32,
    style: &PromptStyle,
    (tok, model, sample): (Option<&lm::tokenizer::Tok>, Option<&GptNeox>, &[usize]),
) -> Result<ModeCompute> {
    let s = pipeline::sentences(
        p,
        g,
        Some(h),
        &SentenceParams {
            tie_seed,
            max_genes: None,
        },
    )?;
    let words = s.word_lists();
    let longest = words.iter().map(Vec::len).max().unwrap_or(0);
    let top: Vec<Vec<&str>> = words
        .iter()
        .map(|w| w[..w.len().min(200)].to_vec())
        .collect();
    let full = style.render(&words, longest);
    let short = style.render(&top, 200);
    let (mut tokens, mut tokens_200, mut cps, mut cps_200) = (None, None, None, None);
    if let Some(t) = tok {
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
    Ok(ModeCompute {
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
    })
}

fn opt4(v: Option<f64>) -> String {
    v.map_or_else(String::new, f4)
}

/// The tables written to `sentences/sentence_lengths.*` and `compute/compute.*`.
pub(super) struct ComputeTables {
    /// Sentence lengths per dataset.
    pub lengths: Table,
    /// Tokens and speed per dataset and mode.
    pub compute: Table,
}

/// Writes `sentences/sentence_lengths.*` and `compute/compute.*`.
pub(super) fn write_compute_tables(
    out: &Path,
    settings: &DataSettings,
    recs: &[DatasetCompute],
    timing: &str,
) -> Result<ComputeTables> {
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
        "# Sentence length, all genes vs HVG ({})\n\nMean number of genes per cell sentence; the paper reports HVG sentences at about a third of the full length.\n\n{}",
        settings.hvg_text(),
        t.to_markdown()
    );
    report::write_atomic(dir.join("sentence_lengths.md"), md.as_bytes())?;
    let c = compute_table(recs);
    let dir = out.join("compute");
    report::write_atomic(dir.join("compute.csv"), c.to_csv().as_bytes())?;
    let md = format!(
        "# Compute: full vs HVG cell sentences (not measured in the paper)\n\nTokens per cell: the Cell2Sentence cell-type prompt (template 0) with the whole sentence and with the 200-gene budget the model reads. Speed: {timing}; `seconds_dataset` extrapolates it to every kept cell. The timings were measured once and are cached with the stage, so reruns reproduce them byte for byte.\n\n{}",
        c.to_markdown()
    );
    report::write_atomic(dir.join("compute.md"), md.as_bytes())?;
    Ok(ComputeTables {
        lengths: t,
        compute: c,
    })
}

/// `compute/compute.*`: tokens and speed per dataset and mode.
fn compute_table(recs: &[DatasetCompute]) -> Table {
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
    c
}
