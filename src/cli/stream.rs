//! `sentences --chunk-cells`: the streaming pipeline ([`crate::stream`]) from the command line.
use std::io::Write;

use super::{DataDirArgs, HvgArgs, SentenceArgs};
use crate::data::{self, MatrixSource};
use crate::deviation::Order;
use crate::error::{Error, Result};
use crate::pipeline::HvgInput;
use crate::preprocess::PreprocessParams;
use crate::sentence::{GeneSet, SentenceParams};

/// Cells a chunk holds when a file over `--max-memory` streams without `--chunk-cells`.
pub const AUTO_CHUNK: usize = 5_000;

/// The chunk size `sentences` streams with: `--chunk-cells`, or [`AUTO_CHUNK`] for an `.h5ad`
/// larger than `--max-memory` whose options streaming supports; `None`: in memory.
pub(super) fn chunk_for(a: &SentenceArgs) -> Result<Option<usize>> {
    let why_not = unsupported(a.order, a.genes, &a.prep);
    let s = &a.stream;
    decide(
        s.chunk_cells,
        s.max_memory,
        &a.input.input,
        &a.input.dirs,
        why_not,
    )
}

/// The chunk size `hvg` streams with, as [`chunk_for`].
pub(super) fn hvg_chunk_for(a: &HvgArgs) -> Result<Option<usize>> {
    let why_not = unsupported(Order::Expression, GeneSet::Hvg, &a.prep);
    let s = &a.stream;
    decide(
        s.chunk_cells,
        s.max_memory,
        &a.input.input,
        &a.input.dirs,
        why_not,
    )
}

/// `--chunk-cells` if given (an error when `why_not`), else [`AUTO_CHUNK`] for an `.h5ad` over
/// `max_memory` bytes that streaming supports (a warning when it does not).
pub(super) fn decide(
    chunk_cells: Option<usize>,
    max_memory: u64,
    input: &str,
    dirs: &DataDirArgs,
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
    let path = resolve(input, dirs)?.0;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
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

/// Why these options need the whole matrix in memory, if they do.
pub(super) fn unsupported(order: Order, genes: GeneSet, p: &super::PrepArgs) -> Option<String> {
    let why = if order == Order::Deviation {
        "deviation sentences need the mean profile of all cells first"
    } else if genes == GeneSet::Hvg && p.hvg_list.is_none() && p.flavor.models_counts() {
        "streaming selects HVG with the flavors of log data (seurat_v3, seurat, cell_ranger)"
    } else if genes == GeneSet::Hvg && p.hvg_list.is_none() && p.hvg_on() != HvgInput::Log {
        "streaming selects HVG on the log data only (--on log)"
    } else {
        return None;
    };
    Some(why.to_string())
}

/// The `.h5ad` to stream (refusing a 10x directory) opened for chunked reading.
pub(super) fn open_backed(input: &super::InputArgs) -> Result<data::backed::Backed> {
    let (path, mut matrix) = resolve(&input.input, &input.dirs)?;
    if let Some(l) = &input.layer {
        matrix = MatrixSource::Layer(l.clone());
    }
    if input.raw {
        matrix = MatrixSource::Raw;
    }
    if path.is_dir() {
        return Err(Error::bad_value(
            &path,
            "--chunk-cells",
            "is a 10x directory; streaming reads .h5ad files",
            "convert it to .h5ad (scanpy.read_10x_mtx(d).write_h5ad(f)), or leave out --chunk-cells",
        ));
    }
    data::backed::Backed::open(&path, matrix)
}

fn resolve(input: &str, dirs: &DataDirArgs) -> Result<(std::path::PathBuf, MatrixSource)> {
    let e = data::resolve(input, &data::default_data_dirs(dirs.data_dir.as_deref()))?;
    Ok((e.path, e.matrix))
}

/// `sentences` streamed in chunks of `chunk` cells: to `--out` (Parquet, a row group at a time)
/// or stdout, one sentence a line as they are made.
pub(super) fn stream_sentences(a: &SentenceArgs, chunk: usize) -> Result<()> {
    let b = open_backed(&a.input)?;
    let sentence = SentenceParams {
        seed: a.seed,
        max_genes: a.max_genes,
    };
    let params = params(&a.prep, chunk, a.genes == GeneSet::Hvg, sentence);
    let r = match &a.out {
        Some(out) => {
            let mut w = crate::report::SentenceParquet::create(out)?;
            let r = crate::stream::sentences(&b, &params, |c, s| w.push(c, s))?;
            w.finish()?;
            r
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            let io = |e: std::io::Error| Error::io("<stdout>", e);
            let r = crate::stream::sentences(&b, &params, |_, s| {
                w.write_all(s.as_bytes()).map_err(io)?;
                w.write_all(b"\n").map_err(io)
            })?;
            w.flush().map_err(io)?;
            r
        }
    };
    eprintln!(
        "[sentences] {} of {} cells streamed in {} chunks of {chunk}{}",
        r.report.kept_cells.len(),
        r.report.cells_in,
        r.n_chunks,
        a.out
            .as_deref()
            .map(|o| format!(" → {}", o.display()))
            .unwrap_or_default()
    );
    Ok(())
}

/// The streaming parameters of the preprocessing options `prep` (`hvg`: HVG sentences).
pub(super) fn params(
    prep: &super::PrepArgs,
    chunk: usize,
    hvg: bool,
    sentence: SentenceParams,
) -> crate::stream::StreamParams {
    crate::stream::StreamParams {
        chunk_cells: chunk,
        preprocess: (!prep.no_preprocess).then(PreprocessParams::default),
        hvg: hvg.then(|| super::hvg_params(prep)),
        batch_key: prep.batch_key.clone(),
        hvg_list: prep.hvg_list.clone(),
        sentence,
        progress: true, // silenced by --quiet
    }
}

/// `hvg` streamed in chunks of `chunk` cells: the selected genes, one a line, as in memory.
pub(super) fn stream_hvg(a: &HvgArgs, chunk: usize) -> Result<()> {
    let b = open_backed(&a.input)?;
    let p = params(&a.prep, chunk, true, SentenceParams::default());
    let r = crate::stream::hvg(&b, &p)?;
    let mut out = String::new();
    for j in r
        .hvg
        .as_ref()
        .map(crate::hvg::HvgResult::indices)
        .unwrap_or_default()
    {
        out.push_str(&b.meta.genes[r.report.kept_genes[j]]);
        out.push('\n');
    }
    super::print_out(&out)
}
