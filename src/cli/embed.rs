//! `embed`: cell sentences or prompts through a language model, mean-pooled (or last-token) hidden
//! states written as `.npy` + `.cells.txt` or `.h5ad`, cached by model, prompts and precision.
//! With `--chunk-cells`, cells are embedded chunk by chunk as the streaming pipeline
//! ([`crate::stream`]) makes their sentences; `.npy` rows go to disk as they are computed, an
//! `.h5ad`'s are kept for its one write. Prompts, tie shuffle and template draws run on from
//! chunk to chunk through every cell (`--cells`/`--shard` embed only theirs), and an embedding
//! does not depend on its batch, so the output equals the in-memory `embed` byte for byte.
use std::cell::Cell;
use std::path::{Path, PathBuf};

use clap::Args;

use super::domain;
use super::lm::{sentence_words, RunDevice, SentenceSource};
use super::{CacheArgs, InputArgs};
use crate::cache::Cache;
use crate::data::DatasetEntry;
use crate::deviation::Order;
use crate::embedding;
use crate::error::{Error, Result};
use crate::lm::{self, EmbedOptions, PromptStyle};
use crate::output::{check_out, OutKind};
use crate::pipeline::{self, Backend, SentenceRecipe};
use crate::sentence::SentenceParams;

/// `embed` options.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Cells to embed: an .h5ad, 10x directory or dataset id (preprocessed as `sentences` does).
    #[arg(
        long,
        short,
        required_unless_present = "prompts",
        conflicts_with = "prompts"
    )]
    pub input: Option<String>,
    /// Prompts to embed as given: JSON lines with a "text" field.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    #[command(flatten)]
    pub source: SentenceSource,
    /// Genes per prompt (Cell2Sentence: 200). Default: the model's own budget, else 200.
    #[arg(long, value_parser = super::domain::count())]
    pub max_genes: Option<usize>,
    /// Organism written into Cell2Sentence prompts.
    #[arg(long, default_value = "Homo sapiens")]
    pub organism: String,
    /// JSON list of prompt templates (e.g. Cell2Sentence's prompt file); one is drawn per cell.
    #[arg(long)]
    pub templates: Option<PathBuf>,
    /// Seed of the per-cell template draw (Python `random`, Cell2Sentence: 42).
    #[arg(long, default_value_t = crate::lm::prompt::C2S_TEMPLATE_SEED)]
    pub template_seed: u32,
    /// Write the sentence's real gene count as {num_genes} (Cell2Sentence always writes the budget).
    #[arg(long)]
    pub num_genes_actual: bool,
    /// Output .npy (cells × hidden, float32; cell names go to <out>.cells.txt), or .h5ad (the
    /// cells as the obs index, the embeddings in obsm["X_cell_sentence"], how they were made in
    /// uns["cellsentence"]).
    #[arg(long)]
    pub out: PathBuf,
    /// Hidden state to pool, as transformers' `hidden_states[L]`: 0 the token embeddings, i the
    /// output of block i; negative counts from the end (-1, the default: the final output, the paper's).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub layer: i64,
    /// Pooling over the prompt's tokens (mean: the paper's).
    #[arg(long, value_parser = domain::choice::<lm::Pool>(), default_value_t = lm::Pool::Mean)]
    pub pool: lm::Pool,
    #[command(flatten)]
    pub run: RunDevice,
    #[command(flatten)]
    pub stages: CacheArgs,
    /// Embed even when most of the sentences' genes are unknown to a gene-level model's vocabulary
    /// (they are read as `<unk>`).
    #[arg(long)]
    pub allow_unknown_genes: bool,
    /// Embed only the cells START..END (0-based, END excluded) of the QC-kept cells: one shard
    /// of a sharded run. Sentences are made for every cell first (the tie shuffle runs through
    /// all cells), so the shards' rows, stacked, equal one unsharded run byte for byte.
    #[arg(long, value_parser = domain::range, conflicts_with = "shard")]
    pub cells: Option<(usize, usize)>,
    /// Embed only shard K of N (1 ≤ K ≤ N): the cells (K−1)·n/N .. K·n/N of the n QC-kept cells,
    /// as `--cells` would (the form a workflow engine's job index gives; `merge` stacks them).
    #[arg(long, value_parser = domain::shard)]
    pub shard: Option<(usize, usize)>,
    /// Stream the .h5ad in chunks of N cells: sentences and embeddings chunk by chunk (no stage
    /// cache); .npy rows are written as they come, an .h5ad holds its cells' embeddings in memory
    /// (use --shard for atlases); the same bytes as in memory.
    #[arg(long, value_parser = domain::count())]
    pub chunk_cells: Option<usize>,
    /// Files larger than this stream in chunks of 5,000 cells when the options allow (e.g. 2G).
    #[arg(long, value_parser = domain::bytes, default_value = "2G")]
    pub max_memory: u64,
}
pub(super) fn style_for(a: &EmbedArgs) -> Result<PromptStyle> {
    let own = lm::prompt_style(&a.model)?;
    // templates given are used whatever the model (a gene-level model reads their words as its
    // vocabulary has them), never dropped
    Ok(match (own, &a.templates) {
        (PromptStyle::Sentence, None) => PromptStyle::Sentence,
        _ => PromptStyle::C2s {
            templates: match &a.templates {
                Some(p) => PromptStyle::templates_from_file(p)?,
                None => vec![lm::prompt::C2S_CELL_TYPE.to_string()],
            },
            organism: a.organism.clone(),
            actual_count: a.num_genes_actual,
            template_seed: a.template_seed,
        },
    })
}

/// The gene budget a model directory was trained with (`cellsentence.json`), if any.
fn model_budget(dir: &Path) -> Option<usize> {
    lm::ModelMeta::read(dir).ok().flatten().map(|m| m.max_genes)
}

/// The cells (names) and the texts to embed: the prompts as given, or the input's sentences
/// rendered in the model's prompt style; and whether those texts are bare gene sentences (then
/// checked against a gene-level vocabulary).
fn cells_and_texts(a: &EmbedArgs) -> Result<(Vec<String>, Vec<String>, bool)> {
    let mut sentences_only = false;
    let (cells, texts) = match (&a.input, &a.prompts) {
        (_, Some(p)) => {
            let t = lm::prompt::read_prompts(p)?;
            ((0..t.len()).map(|i| i.to_string()).collect::<Vec<_>>(), t)
        }
        (Some(input), None) => {
            let budget = a
                .max_genes
                .or_else(|| model_budget(&a.model))
                .unwrap_or(200);
            // sentence words are upper-cased gene names, as an upper-casing model expects
            let (cells, words) = sentence_words(input, &a.source, Some(budget))?;
            let style = style_for(a)?;
            sentences_only = matches!(style, PromptStyle::Sentence);
            let refs: Vec<Vec<&str>> = words
                .iter()
                .map(|w| w.iter().map(String::as_str).collect())
                .collect();
            (cells, style.render(&refs, budget))
        }
        (None, None) => return Err(Error::param("input", "give --input or --prompts")),
    };
    Ok((cells, texts, sentences_only))
}

/// `cellsentence embed`.
pub fn cmd_embed(a: &EmbedArgs) -> Result<()> {
    let start = std::time::Instant::now();
    let input = a.input.as_deref().map(Path::new);
    let inputs: Vec<&Path> = [input, a.prompts.as_deref(), Some(a.model.as_path())]
        .into_iter()
        .flatten()
        .collect();
    let to_h5ad = embedding::is_h5ad(&a.out);
    let names_file = (!to_h5ad).then(|| embedding::names_file(&a.out));
    for out in std::iter::once(&a.out).chain(&names_file) {
        check_out("--out", out, &inputs, OutKind::File)?;
    }
    // the input's digest before it is read: shards of one run must read the same bytes (`merge`)
    let input_digest = match (&a.input, to_h5ad) {
        (Some(input), true) => {
            let dirs = crate::data::default_data_dirs(a.source.dirs.data_dir.as_deref());
            let entry = crate::data::resolve(input, &dirs)?;
            Some(Cache::open(&a.stages.cache, false)?.file_digest(&entry.path)?)
        }
        _ => None,
    };
    if let (Some(input), None) = (&a.input, &a.prompts) {
        let entry = super::stream::entry_of(&input_args(a, input))?;
        let budget = a
            .max_genes
            .or_else(|| model_budget(&a.model))
            .unwrap_or(200);
        let sentence = SentenceParams {
            tie_seed: a.source.tie_seed,
            max_genes: Some(budget),
        };
        let s = &a.source;
        let recipe = super::stream::recipe(&s.prep, s.genes, Order::Expression, sentence);
        let be = super::stream::backend(a.chunk_cells, a.max_memory);
        if let Some(chunk) = be.chunk_for(&entry.path, recipe.why_not_streamed())? {
            let how = (&entry, &recipe, budget);
            return stream_embed(a, how, chunk, input_digest);
        }
    }
    // gene sentences (not prompts or templates) are checked against a gene-level vocabulary
    let (cells, texts, sentences_only) = cells_and_texts(a)?;
    let n_cells = cells.len();
    let range = shard_range(a, n_cells)?;
    let (cells, texts) = match range {
        None => (cells, texts),
        Some((start, end)) => (cells[start..end].to_vec(), texts[start..end].to_vec()),
    };
    let names = embedding::names_file(&a.out);
    let source = a.input.as_deref().unwrap_or("prompts");
    embedding::check_cell_names(source, &cells, &names)?;
    if sentences_only {
        embedding::check_vocabulary(&a.model, &texts, a.allow_unknown_genes)?;
    }
    let cache = Cache::open(&a.stages.cache, a.stages.force)?;
    let m = embedding::embed_cached(
        &cache,
        &a.model,
        &texts,
        a.run.run_on(),
        (a.layer, a.pool),
        &a.out.display().to_string(),
    )?;
    embedding::write(&a.out, &cells, &m, || {
        embedding_about(a, range, n_cells, input_digest)
    })?;
    eprintln!(
        "[embed] {} cells × {} dims → {}{} in {:.1} s",
        m.rows,
        m.cols,
        a.out.display(),
        if to_h5ad {
            format!(" (obsm[\"{}\"])", crate::data::h5ad_out::OBSM_KEY)
        } else {
            format!(" (+ {})", names.display())
        },
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The cells `--cells` or `--shard` select of the `n_cells` QC-kept cells (`None`: all of them);
/// an empty shard or a range past the last cell is an error.
pub(super) fn shard_range(a: &EmbedArgs, n_cells: usize) -> Result<Option<(usize, usize)>> {
    match a
        .cells
        .or_else(|| a.shard.map(|s| domain::shard_cells(s, n_cells)))
    {
        Some((start, end)) if start == end => Err(Error::param(
            "--shard",
            format!("shard {start}:{end} of {n_cells} cells is empty; use fewer shards"),
        )),
        Some((start, end)) if end > n_cells => Err(Error::bad_value(
            a.input
                .as_deref()
                .or(a.prompts.as_deref().and_then(Path::to_str))
                .unwrap_or("input"),
            "--cells",
            format!(
                "the shard {start}:{end} reaches past the {n_cells} cells (QC-kept) of the input"
            ),
            format!("give 0 ≤ START < END ≤ {n_cells}"),
        )),
        range => Ok(range),
    }
}

/// What `uns["cellsentence"]` says about an embedding: the input (and its digest), how its
/// sentences were built, the model and its manifests (`cellsentence.json`, `corpus.json` where
/// the model has them), the layer and pooling, and the shard (`cells`) of the `n_cells` cells.
pub(super) fn embedding_about(
    a: &EmbedArgs,
    range: Option<(usize, usize)>,
    n_cells: usize,
    input_sha256: Option<String>,
) -> Result<serde_json::Value> {
    let s = &a.source;
    let hvg_list = s.prep.hvg_list.as_deref();
    Ok(serde_json::json!({
        "input": a.input,
        "input_sha256": input_sha256,
        "prompts": a.prompts,
        "sentences": {
            "genes": s.genes.to_string(),
            "tie_seed": s.tie_seed,
            "max_genes": a.max_genes,
            "adata_layer": s.adata_layer,
            "raw": s.raw,
            "no_preprocess": s.prep.no_preprocess,
            "flavor": s.prep.flavor.to_string(),
            "n_top": s.prep.n_top,
            "on": s.prep.hvg_on().to_string(),
            "batch_key": s.prep.batch_key,
            "hvg_list": hvg_list,
            "hvg_list_sha256": hvg_list.map(|p| Cache::open(&a.stages.cache, false)?.file_digest(p)).transpose()?,
            "organism": a.organism,
            "templates": a.templates,
            "template_seed": a.template_seed,
            "num_genes_actual": a.num_genes_actual,
        },
        "model": a.model,
        "layer": a.layer,
        "pool": a.pool.to_string(),
        "cells": range.map(|(s, e)| format!("{s}:{e}")),
        "n_cells": n_cells,
        "model_meta": lm::ModelMeta::read(&a.model)?,
        "corpus": lm::Corpus::read(&a.model)?,
        "made_by": format!("cellsentence {}", env!("CARGO_PKG_VERSION")),
    }))
}

/// The input options of `embed`'s `input`.
fn input_args(a: &EmbedArgs, input: &str) -> InputArgs {
    InputArgs {
        input: input.to_string(),
        layer: a.source.adata_layer.clone(),
        raw: a.source.raw,
        dirs: a.source.dirs.clone(),
    }
}

/// Streams `entry` (its sentences as `recipe` says, cut at `budget` genes) in chunks of `chunk`
/// cells into `a.out`: an .npy and `<out>.cells.txt`, or an .h5ad (`input_sha256`: the input's
/// digest, recorded in its `uns`).
pub(super) fn stream_embed(
    a: &EmbedArgs,
    (entry, recipe, budget): (&DatasetEntry, &SentenceRecipe, usize),
    chunk: usize,
    input_sha256: Option<String>,
) -> Result<()> {
    let start = std::time::Instant::now();
    let style = style_for(a)?;
    let mut renderer = style.renderer(budget);
    let (device, kind) = lm::device_and_kind(a.run.cuda, a.run.dtype)?;
    let ck = lm::load(&a.model, device, kind)?;
    // the first chunk's gene sentences are checked against a gene-level vocabulary, as in memory
    let check = matches!(style, lm::PromptStyle::Sentence);
    let opts = EmbedOptions {
        layer: a.layer,
        pool: a.pool,
        batch_tokens: a.run.batch_tokens,
        ..EmbedOptions::default()
    };
    let vocabulary = check.then_some((a.model.as_path(), a.allow_unknown_genes));
    let mut sink = embedding::Sink::create(&ck, opts, &a.out, chunk, vocabulary)?;
    // the QC-kept cells and the range of them to embed, known once QC has counted them
    let (n_cells, range) = (Cell::new(0), Cell::new((0, usize::MAX)));
    let on_kept = |n: usize| {
        n_cells.set(n);
        range.set(shard_range(a, n)?.unwrap_or((0, n)));
        Ok(())
    };
    let mut k = 0usize;
    let backend = Backend::Streamed { chunk_cells: chunk };
    let streamed = pipeline::each_sentence(entry, recipe, backend, on_kept, |cell, words| {
        // every cell draws its template; only the selected ones are embedded
        let text = renderer.render(words);
        k += 1;
        let (lo, hi) = range.get();
        if !(lo < k && k <= hi) {
            return Ok(());
        }
        if embedding::unlistable(cell) {
            return Err(Error::bad_value(
                &entry.path,
                "obs_names",
                format!("cell name {cell:?} is empty or contains a control character; the .cells.txt lists one cell per line"),
                "rename the cells in obs",
            ));
        }
        sink.push(cell, text)
    });
    let shard = (a.cells.is_some() || a.shard.is_some()).then(|| range.get());
    let (n, cols) = sink.finish(streamed.map(|_| ()), || {
        embedding_about(a, shard, n_cells.get(), input_sha256)
    })?;
    eprintln!(
        "[embed] {n} cells × {cols} dims streamed in chunks of {chunk} → {} in {:.1} s",
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
