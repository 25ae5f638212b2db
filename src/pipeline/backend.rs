//! Which backend makes a dataset's sentences: the whole matrix in memory ([`Pipeline`]) or row
//! chunks of an `.h5ad` ([`crate::stream`]), by option or by the file's size; and
//! [`each_sentence`], the one entry point that makes a file's sentences with either, so that the
//! command line and notebooks share it. What cannot stream is refused here, with the reason.
use std::path::Path;

use super::{Counts, HvgInput, HvgSource, Pipeline};
use crate::data::{DatasetEntry, ReadOptions};
use crate::deviation::Order;
use crate::error::{Error, Result};
use crate::hvg::HvgParams;
use crate::preprocess::PreprocessParams;
use crate::sentence::{GeneSet, SentenceParams};
use crate::stream::StreamParams;

/// How a file is read to make its sentences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The whole matrix in memory.
    InMemory,
    /// Row chunks of this many cells (an `.h5ad`; refused, with the reason, for sentences that
    /// need the whole matrix).
    Streamed { chunk_cells: usize },
    /// Streamed in chunks of [`AUTO_CHUNK`] cells when the file is larger than `max_memory`
    /// bytes and its sentences can stream, else in memory (the command line's default, 2 GB).
    Auto { max_memory: u64 },
}

impl Backend {
    /// The chunk size for the file at `path` (`None`: in memory); `why_not`: why its sentences
    /// cannot stream, if they cannot ([`why_not_streamed`]).
    pub fn chunk_for(self, path: &Path, why_not: Option<String>) -> Result<Option<usize>> {
        match self {
            Backend::InMemory => Ok(None),
            Backend::Streamed { chunk_cells } => {
                streamed_chunk(path, Some(chunk_cells), u64::MAX, why_not)
            }
            Backend::Auto { max_memory } => streamed_chunk(path, None, max_memory, why_not),
        }
    }
}

/// What sentences to make of a file: its preprocessing (`None`: X is log-normalized already),
/// where the HVG come from, the genes and order of the sentences, and their tie seed and budget.
#[derive(Debug, Clone)]
pub struct SentenceRecipe {
    pub preprocess: Option<PreprocessParams>,
    pub hvg: HvgSource,
    pub genes: GeneSet,
    pub order: Order,
    pub sentence: SentenceParams,
}

impl SentenceRecipe {
    /// Why these sentences need the whole matrix in memory, if they do.
    pub fn why_not_streamed(&self) -> Option<String> {
        why_not_streamed(self.order, self.genes, &self.hvg)
    }

    /// The streaming backend's parameters, in chunks of `chunk` cells (`hvg`: select the HVG
    /// even when the sentences hold every gene, as `hvg` reports them).
    pub fn stream_params(&self, chunk: usize, hvg: bool) -> StreamParams {
        let (params, batch_key, list) = match &self.hvg {
            HvgSource::Select {
                params, batch_key, ..
            } => (params.clone(), batch_key.clone(), None),
            HvgSource::List(path) => (HvgParams::default(), None, Some(path.clone())),
        };
        StreamParams {
            chunk_cells: chunk,
            preprocess: self.preprocess.clone(),
            hvg: (hvg || self.genes == GeneSet::Hvg).then_some(params),
            batch_key,
            hvg_list: list,
            sentence: self.sentence.clone(),
            progress: true, // silenced by --quiet
        }
    }
}

/// What [`each_sentence`] did: the cells of the file and those QC kept, and the row chunks of
/// each pass (`None`: read whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentenceRun {
    pub cells_in: usize,
    pub cells_kept: usize,
    pub chunks: Option<usize>,
}

/// Makes the sentences of `entry` as `recipe` says, reading it as `backend` says, and hands each
/// kept cell's name and words (most expressed first) to `out`, in order; `on_kept` hears the
/// number of kept cells first. Both backends hand over the same sentences.
pub fn each_sentence(
    entry: &DatasetEntry,
    recipe: &SentenceRecipe,
    backend: Backend,
    on_kept: impl FnOnce(usize) -> Result<()>,
    mut out: impl FnMut(&str, &[&str]) -> Result<()>,
) -> Result<SentenceRun> {
    if let Some(chunk) = backend.chunk_for(&entry.path, recipe.why_not_streamed())? {
        let b = open_backed(entry)?;
        let params = recipe.stream_params(chunk, false);
        let r = crate::stream::sentences_with(&b, &params, on_kept, out)?;
        return Ok(SentenceRun {
            cells_in: r.report.cells_in,
            cells_kept: r.report.kept_cells.len(),
            chunks: Some(r.n_chunks),
        });
    }
    let ds = read(entry)?;
    let cells_in = ds.n_cells();
    let (pre, hvg) = (recipe.preprocess.as_ref(), recipe.hvg.clone());
    let mut pl = Pipeline::new(ds, pre, hvg, Counts::Drop)?;
    let s = pl.sentences(recipe.genes, recipe.order, &recipe.sentence)?;
    on_kept(s.len())?;
    let cells = &pl.prepared().data.cells;
    for (i, cell) in cells.iter().enumerate().take(s.len()) {
        out(cell, &s.words(i))?;
    }
    Ok(SentenceRun {
        cells_in,
        cells_kept: s.len(),
        chunks: None,
    })
}

/// Reads `entry`'s matrix whole (its reader's warnings printed).
pub fn read(entry: &DatasetEntry) -> Result<crate::data::Dataset> {
    let options = ReadOptions {
        matrix: entry.matrix.clone(),
        progress: true,
    };
    let ds = crate::data::read(&entry.path, &options)?;
    for w in &ds.warnings {
        eprintln!("warning: {w}");
    }
    Ok(ds)
}

/// `entry` opened for chunked reading (a 10x directory is refused: streaming reads `.h5ad`).
pub fn open_backed(entry: &DatasetEntry) -> Result<crate::data::backed::Backed> {
    if entry.path.is_dir() {
        return Err(Error::bad_value(
            &entry.path,
            "--chunk-cells",
            "is a 10x directory; streaming reads .h5ad files",
            "convert it to .h5ad (scanpy.read_10x_mtx(d).write_h5ad(f)), or leave out --chunk-cells",
        ));
    }
    crate::data::backed::Backed::open(&entry.path, entry.matrix.clone())
}

/// Cells a chunk holds when a file over the memory budget streams without a chunk size given.
pub const AUTO_CHUNK: usize = 5_000;

/// Why sentences of `genes` in `order`, with HVG from `hvg`, need the whole matrix in memory
/// (the streaming backend, [`crate::stream`], cannot build them), if they do.
pub fn why_not_streamed(
    order: crate::deviation::Order,
    genes: GeneSet,
    hvg: &HvgSource,
) -> Option<String> {
    let selected = match (genes, hvg) {
        (GeneSet::Hvg, HvgSource::Select { params, on, .. }) => Some((params.flavor, *on)),
        _ => None,
    };
    let why = if order == crate::deviation::Order::Deviation {
        "deviation sentences need the mean profile of all cells first"
    } else if selected.is_some_and(|(f, _)| f.models_counts()) {
        "streaming selects HVG with the flavors of log data (seurat_v3, seurat, cell_ranger)"
    } else if selected.is_some_and(|(_, on)| on != HvgInput::Log) {
        "streaming selects HVG on the log data only (--on log)"
    } else {
        return None;
    };
    Some(why.to_string())
}

/// The backend for `path`: streamed in chunks of `chunk_cells` when given (refused, with the
/// reason, when `why_not` says the sentences cannot stream), else in chunks of [`AUTO_CHUNK`]
/// for an `.h5ad` larger than `max_memory` bytes that can stream (over the budget but unable to
/// stream: a warning naming the reason); `None`: in memory.
pub fn streamed_chunk(
    path: &std::path::Path,
    chunk_cells: Option<usize>,
    max_memory: u64,
    why_not: Option<String>,
) -> Result<Option<usize>> {
    if let Some(n) = chunk_cells {
        if let Some(why) = why_not {
            return Err(Error::param(
                "--chunk-cells",
                format!("{why}; leave out --chunk-cells"),
            ));
        }
        return Ok(Some(n));
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size <= max_memory || path.is_dir() {
        return Ok(None);
    }
    match why_not {
        None => {
            eprintln!(
                "[stream] {} is {:.1} GB, over --max-memory: streaming in chunks of {AUTO_CHUNK} cells",
                path.display(),
                size as f64 / 1e9
            );
            Ok(Some(AUTO_CHUNK))
        }
        Some(why) => {
            eprintln!(
                "warning: {} is over --max-memory but {why}: reading it whole",
                path.display()
            );
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hvg::Flavor;

    fn synthetic() -> DatasetEntry {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/synthetic.h5ad");
        crate::data::resolve(path, &[]).unwrap()
    }

    fn recipe(flavor: Flavor, on: HvgInput) -> SentenceRecipe {
        SentenceRecipe {
            preprocess: Some(PreprocessParams::default()),
            hvg: HvgSource::Select {
                params: HvgParams {
                    flavor,
                    n_top_genes: 100,
                    ..Default::default()
                },
                on,
                batch_key: None,
            },
            genes: GeneSet::Hvg,
            order: Order::Expression,
            sentence: SentenceParams {
                max_genes: Some(30),
                ..Default::default()
            },
        }
    }

    /// Every cell's (name, words), as `each_sentence` hands them over with `backend`.
    fn collect(r: &SentenceRecipe, backend: Backend) -> Result<(SentenceRun, Vec<String>)> {
        let mut got = Vec::new();
        let mut kept = 0;
        let run = each_sentence(
            &synthetic(),
            r,
            backend,
            |n| {
                kept = n;
                Ok(())
            },
            |cell, words| {
                got.push(format!("{cell}: {}", words.join(" ")));
                Ok(())
            },
        )?;
        assert_eq!(kept, got.len());
        Ok((run, got))
    }

    /// Both backends hand over the same sentences in the same order; a small file on `Auto`
    /// is read whole; a flavor that models counts is refused for the streamed backend, with the
    /// reason, and made in memory.
    #[test]
    fn both_backends_make_the_same_sentences() {
        let seurat = recipe(Flavor::Seurat, HvgInput::Log);
        let (whole, a) = collect(&seurat, Backend::InMemory).unwrap();
        let streamed = Backend::Streamed { chunk_cells: 7 };
        let (chunked, b) = collect(&seurat, streamed).unwrap();
        assert_eq!(a, b);
        assert!(!a.is_empty());
        assert_eq!((whole.chunks, whole.cells_kept), (None, chunked.cells_kept));
        assert_eq!(chunked.chunks, Some(whole.cells_in.div_ceil(7)));
        let auto = Backend::Auto {
            max_memory: u64::MAX,
        };
        assert_eq!(collect(&seurat, auto).unwrap().0.chunks, None);
        let deviance = recipe(Flavor::Deviance, HvgInput::Counts);
        let e = collect(&deviance, streamed).unwrap_err().to_string();
        assert!(e.contains("--chunk-cells") && e.contains("log data"), "{e}");
        assert!(collect(&deviance, Backend::InMemory).is_ok());
    }
}
