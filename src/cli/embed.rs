//! `embed`: cell sentences or prompts through a language model, mean-pooled (or last-token) hidden
//! states written as `.npy` + `.cells.txt` or `.h5ad`, cached by model, prompts and precision.
//! With `--chunk-cells`, cells are embedded chunk by chunk as the streaming pipeline
//! ([`crate::stream`]) makes their sentences; `.npy` rows go to disk as they are computed, an
//! `.h5ad`'s are kept for its one write. Prompts, tie shuffle and template draws run on from
//! chunk to chunk through every cell (`--cells`/`--shard` embed only theirs), and an embedding
//! does not depend on its batch, so the output equals the in-memory `embed` byte for byte.
use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use super::domain;
use super::lm::{read_prompts, sentence_words, RunDevice, SentenceSource};
use super::stream::open_backed;
use super::InputArgs;
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::lm::{self, EmbedOptions, PromptStyle};
use crate::npy::Matrix;
use crate::output::{check_out, OutKind};
use crate::sentence::{GeneSet, SentenceParams};

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
    /// Embedding cache folder.
    #[arg(long, default_value = ".cache/stages")]
    pub cache: PathBuf,
    /// Recompute even when cached.
    #[arg(long)]
    pub force: bool,
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

/// Above this share of unknown genes, `embed` refuses unless `--allow-unknown-genes`.
const MAX_UNKNOWN_SHARE: f64 = 0.5;

/// Says how many of the sentences' genes a gene-level model does not know (read as `<unk>`), and
/// refuses when they are most of them unless `allow`.
pub(super) fn check_vocabulary(model: &Path, texts: &[String], allow: bool) -> Result<()> {
    let tok = lm::tokenizer::Tok::load(&model.join("tokenizer.json"))?;
    let Some((unknown, total)) = tok.unknown_tokens(texts)? else {
        return Ok(());
    };
    if unknown == 0 {
        return Ok(());
    }
    let share = unknown as f64 / total.max(1) as f64;
    let what = format!(
        "{unknown} of the sentences' {total} gene tokens ({:.1} %) are not in {}'s vocabulary and are read as `{}`",
        100.0 * share,
        model.display(),
        lm::tokenizer::UNK
    );
    if share > MAX_UNKNOWN_SHARE && !allow {
        return Err(Error::param(
            "--model",
            format!(
                "{what}: the embedding would describe the unknown token more than the cells; use a model trained on this dataset's genes (same gene names and case), or pass --allow-unknown-genes"
            ),
        ));
    }
    eprintln!("warning: {what}");
    Ok(())
}

/// The gene budget a model directory was trained with (`cellsentence.json`), if any.
fn model_budget(dir: &Path) -> Option<usize> {
    lm::ModelMeta::read(dir).ok().flatten().map(|m| m.max_genes)
}

/// The digest of a list of prompts: their count, then each one (no two lists share it, not even
/// no prompt and one empty prompt).
fn texts_digest(texts: &[String]) -> String {
    let mut h = format!("{}", texts.len());
    for t in texts {
        h.push('\u{1e}');
        h.push_str(t);
    }
    crate::cache::sha256_hex(h.as_bytes())
}

/// Embeds texts with caching by (model digest, texts digest, precision).
pub fn embed_cached(
    cache: &Cache,
    model: &Path,
    texts: &[String],
    run: &RunDevice,
    (layer, pool): (i64, lm::Pool),
    label: &str,
) -> Result<Matrix> {
    let (device, kind) = lm::device_and_kind(run.cuda, run.dtype)?;
    let model_digest = cache.file_digest(model)?;
    let texts_digest = texts_digest(texts);
    let inputs = (
        &model_digest,
        &texts_digest,
        &run.dtype,
        run.cuda,
        layer,
        pool,
    );
    let (m, _) = cache.npy("embeddings", label, &inputs, || {
        let ck = lm::load(model, device, kind)?;
        let opts = EmbedOptions {
            layer,
            pool,
            batch_tokens: run.batch_tokens,
            ..EmbedOptions::default()
        };
        lm::embed_texts(&ck, texts, &opts)
    })?;
    Ok(m)
}

/// The cells (names) and the texts to embed: the prompts as given, or the input's sentences
/// rendered in the model's prompt style; and whether those texts are bare gene sentences (then
/// checked against a gene-level vocabulary).
fn cells_and_texts(a: &EmbedArgs) -> Result<(Vec<String>, Vec<String>, bool)> {
    let mut sentences_only = false;
    let (cells, texts) = match (&a.input, &a.prompts) {
        (_, Some(p)) => {
            let t = read_prompts(p)?;
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

/// A cell name that cannot stand on its own line of a .cells.txt (empty, or with a newline, tab or
/// other control character).
fn unlistable(cell: &str) -> bool {
    cell.is_empty() || cell.chars().any(char::is_control)
}

/// One name per line: a cell name that is empty or holds a control character would shift every
/// later row of `names` (the .cells.txt beside the .npy).
fn check_cell_names(a: &EmbedArgs, cells: &[String], names: &Path) -> Result<()> {
    if let Some((i, c)) = cells.iter().enumerate().find(|(_, c)| unlistable(c)) {
        return Err(Error::bad_value(
            a.input.as_deref().unwrap_or("prompts"),
            "obs_names",
            format!(
                "cell name {c:?} (cell {} of {}) is empty or contains a control character (newline, tab, …); {} lists one cell per line",
                i + 1,
                cells.len(),
                names.display()
            ),
            "rename the cells in obs (e.g. obs_names_make_unique after replacing the characters)",
        ));
    }
    Ok(())
}

/// `cellsentence embed`.
pub fn cmd_embed(a: &EmbedArgs) -> Result<()> {
    let start = std::time::Instant::now();
    let input = a.input.as_deref().map(Path::new);
    let inputs: Vec<&Path> = [input, a.prompts.as_deref(), Some(a.model.as_path())]
        .into_iter()
        .flatten()
        .collect();
    let to_h5ad = a.out.extension().is_some_and(|e| e == "h5ad");
    let names_file = (!to_h5ad).then(|| a.out.with_extension("cells.txt"));
    for out in std::iter::once(&a.out).chain(&names_file) {
        check_out("--out", out, &inputs, OutKind::File)?;
    }
    // the input's digest before it is read: shards of one run must read the same bytes (`merge`)
    let input_digest = match (&a.input, to_h5ad) {
        (Some(input), true) => {
            let dirs = crate::data::default_data_dirs(a.source.dirs.data_dir.as_deref());
            let entry = crate::data::resolve(input, &dirs)?;
            Some(Cache::open(&a.cache, false)?.file_digest(&entry.path)?)
        }
        _ => None,
    };
    if let (Some(input), None) = (&a.input, &a.prompts) {
        let why_not = crate::pipeline::why_not_streamed(
            crate::deviation::Order::Expression,
            a.source.genes,
            &super::hvg_source(&a.source.prep),
        );
        let dirs = &a.source.dirs;
        if let Some(chunk) =
            super::stream::decide(a.chunk_cells, a.max_memory, input, dirs, why_not)?
        {
            let budget = a
                .max_genes
                .or_else(|| model_budget(&a.model))
                .unwrap_or(200);
            return stream_embed(a, chunk, budget, input_digest);
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
    let names = a.out.with_extension("cells.txt");
    check_cell_names(a, &cells, &names)?;
    if sentences_only {
        check_vocabulary(&a.model, &texts, a.allow_unknown_genes)?;
    }
    let cache = Cache::open(&a.cache, a.force)?;
    let m = embed_cached(
        &cache,
        &a.model,
        &texts,
        &a.run,
        (a.layer, a.pool),
        &a.out.display().to_string(),
    )?;
    if to_h5ad {
        let about = embedding_about(a, range, n_cells, input_digest)?;
        crate::data::h5ad_out::write_embeddings(&a.out, &cells, &m, &about)?;
    } else {
        write_embedding_pair(&a.out, &names, &m, &cells)?;
    }
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
            "hvg_list_sha256": hvg_list.map(|p| Cache::open(&a.cache, false)?.file_digest(p)).transpose()?,
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

/// Writes the embeddings and their cell names as one unit (a kill leaves the old pair or the new
/// one, never new embeddings beside old names).
fn write_embedding_pair(
    out: &Path,
    names: &Path,
    m: &crate::npy::Matrix,
    cells: &[String],
) -> Result<()> {
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::output::clean_leftovers(dir)?;
    let t_npy = crate::output::write_temp(dir, &crate::npy::to_bytes(m))?;
    let t_names = crate::output::write_temp(dir, (cells.join("\n") + "\n").as_bytes())?;
    crate::output::commit_files(
        dir,
        "embed",
        &[(t_npy, out.to_path_buf()), (t_names, names.to_path_buf())],
    )
}

/// Streams `a.input` in chunks of `chunk` cells into `a.out`: an .npy and `<out>.cells.txt`, or
/// an .h5ad (`input_sha256`: the input's digest, recorded in its `uns`).
pub(super) fn stream_embed(
    a: &EmbedArgs,
    chunk: usize,
    budget: usize,
    input_sha256: Option<String>,
) -> Result<()> {
    let start = std::time::Instant::now();
    let s = &a.source;
    let b = open_backed(&InputArgs {
        input: a.input.clone().unwrap_or_default(),
        layer: s.adata_layer.clone(),
        raw: s.raw,
        dirs: s.dirs.clone(),
    })?;
    let style = style_for(a)?;
    let mut renderer = style.renderer(budget);
    let (device, kind) = lm::device_and_kind(a.run.cuda, a.run.dtype)?;
    let ck = lm::load(&a.model, device, kind)?;
    let sentence = SentenceParams {
        tie_seed: s.tie_seed,
        max_genes: Some(budget),
    };
    let params = super::stream::params(&s.prep, chunk, s.genes == GeneSet::Hvg, sentence);
    let dir = out_dir(&a.out);
    crate::output::clean_leftovers(dir)?;
    // the first chunk's gene sentences are checked against a gene-level vocabulary, as in memory
    let check = matches!(style, lm::PromptStyle::Sentence);
    let mut sink = EmbedSink::create(a, dir, &ck, chunk, check)?;
    // the QC-kept cells and the range of them to embed, known once QC has counted them
    let (n_cells, range) = (Cell::new(0), Cell::new((0, usize::MAX)));
    let on_kept = |n: usize| {
        n_cells.set(n);
        range.set(shard_range(a, n)?.unwrap_or((0, n)));
        Ok(())
    };
    let mut k = 0usize;
    let streamed = crate::stream::sentences_with(&b, &params, on_kept, |cell, words| {
        // every cell draws its template; only the selected ones are embedded
        let text = renderer.render(words);
        k += 1;
        let (lo, hi) = range.get();
        if !(lo < k && k <= hi) {
            return Ok(());
        }
        if unlistable(cell) {
            return Err(Error::bad_value(
                b.path(),
                "obs_names",
                format!("cell name {cell:?} is empty or contains a control character; the .cells.txt lists one cell per line"),
                "rename the cells in obs",
            ));
        }
        sink.push(cell, text)
    });
    let shard = (a.cells.is_some() || a.shard.is_some()).then(|| range.get());
    let (n, cols) = sink.finish(streamed, || {
        embedding_about(a, shard, n_cells.get(), input_sha256)
    })?;
    eprintln!(
        "[embed] {n} cells × {cols} dims streamed in chunks of {chunk} → {} in {:.1} s",
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The folder an output file is written in (`.` for a bare file name).
fn out_dir(out: &Path) -> &Path {
    out.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Where [`stream_embed`]'s embeddings go while the cells stream: texts gathered a chunk at a
/// time, embedded, and the rows spilled to a temporary file (.npy output) or kept (.h5ad).
struct EmbedSink<'a> {
    a: &'a EmbedArgs,
    ck: &'a lm::Checkpoint,
    opts: EmbedOptions,
    dir: &'a Path,
    chunk: usize,
    to_h5ad: bool,
    rows_tmp: PathBuf,
    rows: std::io::BufWriter<std::fs::File>,
    names: Vec<String>,
    texts: Vec<String>,
    kept: Vec<f32>,
    cols: usize,
    /// Whether the texts still need the gene-vocabulary check (bare gene sentences only).
    check_vocabulary: bool,
}

impl<'a> EmbedSink<'a> {
    fn create(
        a: &'a EmbedArgs,
        dir: &'a Path,
        ck: &'a lm::Checkpoint,
        chunk: usize,
        check_vocabulary: bool,
    ) -> Result<Self> {
        let rows_tmp = crate::output::write_temp(dir, &[])?;
        let f = std::fs::File::create(&rows_tmp).map_err(|e| Error::io(&rows_tmp, e))?;
        Ok(EmbedSink {
            a,
            ck,
            opts: EmbedOptions {
                layer: a.layer,
                pool: a.pool,
                batch_tokens: a.run.batch_tokens,
                ..EmbedOptions::default()
            },
            dir,
            chunk,
            to_h5ad: a.out.extension().is_some_and(|e| e == "h5ad"),
            rows_tmp,
            rows: std::io::BufWriter::new(f),
            names: Vec::new(),
            texts: Vec::new(),
            kept: Vec::new(),
            cols: 0,
            check_vocabulary,
        })
    }

    /// One selected cell's prompt; a full chunk is embedded.
    fn push(&mut self, cell: &str, text: String) -> Result<()> {
        self.names.push(cell.to_string());
        self.texts.push(text);
        if self.texts.len() >= self.chunk {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.texts.is_empty() {
            return Ok(());
        }
        if std::mem::take(&mut self.check_vocabulary) {
            check_vocabulary(&self.a.model, &self.texts, self.a.allow_unknown_genes)?;
        }
        let m = lm::embed_texts(self.ck, &self.texts, &self.opts)?;
        self.cols = m.cols;
        if self.to_h5ad {
            self.kept.extend_from_slice(&m.data);
        } else {
            self.rows
                .write_all(bytemuck::cast_slice(&m.data))
                .map_err(|e| Error::io(&self.rows_tmp, e))?;
        }
        self.texts.clear();
        Ok(())
    }

    /// After the stream (`streamed`): embeds the last chunk and commits the output (`about`: the
    /// .h5ad's `uns` record), or leaves nothing when anything failed. Returns cells × dims.
    fn finish(
        mut self,
        streamed: Result<crate::stream::Streamed>,
        about: impl FnOnce() -> Result<serde_json::Value>,
    ) -> Result<(usize, usize)> {
        let done = streamed.and_then(|_| self.flush());
        let rows_tmp = self.rows_tmp.clone();
        let file = self
            .rows
            .into_inner()
            .map_err(|e| Error::io(&rows_tmp, e.into_error()));
        let (names, cols) = (self.names, self.cols);
        let committed = done.and(file).and_then(|file| {
            drop(file);
            if self.to_h5ad {
                let m = crate::npy::Matrix {
                    rows: names.len(),
                    cols,
                    data: self.kept,
                };
                return crate::data::h5ad_out::write_embeddings(&self.a.out, &names, &m, &about()?);
            }
            crate::output::kill_point("embed-rows-spilled");
            commit_npy(self.dir, &rows_tmp, &self.a.out, &names, cols)
        });
        let _ = std::fs::remove_file(&rows_tmp);
        committed.map(|_| (names.len(), cols))
    }
}

/// Commits `<out>` (.npy: the header, then the rows spilled to `rows_tmp`) and `<out>.cells.txt`
/// as one unit.
fn commit_npy(
    dir: &Path,
    rows_tmp: &Path,
    out: &Path,
    names: &[String],
    cols: usize,
) -> Result<()> {
    let npy_tmp = crate::output::write_temp(dir, &crate::npy::header(names.len(), cols))?;
    let mut npy = std::fs::OpenOptions::new()
        .append(true)
        .open(&npy_tmp)
        .map_err(|e| Error::io(&npy_tmp, e))?;
    let mut src = std::fs::File::open(rows_tmp).map_err(|e| Error::io(rows_tmp, e))?;
    std::io::copy(&mut src, &mut npy).map_err(|e| Error::io(&npy_tmp, e))?;
    let names_tmp = crate::output::write_temp(dir, (names.join("\n") + "\n").as_bytes())?;
    crate::output::commit_files(
        dir,
        "embed",
        &[
            (npy_tmp, out.to_path_buf()),
            (names_tmp, out.with_extension("cells.txt")),
        ],
    )
}

#[cfg(test)]
mod tests {
    /// No prompt and one empty prompt never share an embedding cache entry (issue 32 family 6).
    #[test]
    fn prompt_lists_have_distinct_digests() {
        let d =
            |v: &[&str]| super::texts_digest(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_ne!(d(&[]), d(&[""]));
        assert_ne!(d(&[""]), d(&["", ""]));
        assert_ne!(d(&["a b"]), d(&["a", "b"]));
        assert_eq!(d(&["x"]), d(&["x"]));
    }
}
