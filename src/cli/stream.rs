//! `sentences --chunk-cells`: the streaming pipeline ([`crate::stream`]) from the command line.
use std::io::Write;

use super::{DataDirArgs, HvgArgs, SentenceArgs};
use crate::data::{self, MatrixSource};
use crate::deviation::Order;
use crate::error::{Error, Result};
use crate::pipeline;
use crate::preprocess::PreprocessParams;
use crate::sentence::{GeneSet, SentenceParams};

/// The chunk size `sentences` streams with ([`pipeline::streamed_chunk`]); `None`: in memory.
pub(super) fn chunk_for(a: &SentenceArgs) -> Result<Option<usize>> {
    let why_not = pipeline::why_not_streamed(a.order, a.genes, &super::hvg_source(&a.prep));
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
    let why_not =
        pipeline::why_not_streamed(Order::Expression, GeneSet::Hvg, &super::hvg_source(&a.prep));
    let s = &a.stream;
    decide(
        s.chunk_cells,
        s.max_memory,
        &a.input.input,
        &a.input.dirs,
        why_not,
    )
}

/// [`pipeline::streamed_chunk`] of the input a command names.
pub(super) fn decide(
    chunk_cells: Option<usize>,
    max_memory: u64,
    input: &str,
    dirs: &DataDirArgs,
    why_not: Option<String>,
) -> Result<Option<usize>> {
    let path = match chunk_cells {
        // the path is only sized when no chunk is given
        Some(_) => std::path::PathBuf::new(),
        None => resolve(input, dirs)?.0,
    };
    pipeline::streamed_chunk(&path, chunk_cells, max_memory, why_not)
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
        tie_seed: a.tie_seed,
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
                w.write_all(s.join(" ").as_bytes()).map_err(io)?;
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
