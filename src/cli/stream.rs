//! The backend options (`--chunk-cells`, `--max-memory`) and the commands that make sentences or
//! HVG with either backend: `sentences` through [`pipeline::each_sentence`], `hvg` through the
//! pipeline or the streaming passes, as [`pipeline::Backend`] decides.
use std::io::Write;

use super::{HvgArgs, InputArgs, PrepArgs, SentenceArgs};
use crate::data::{self, DatasetEntry, MatrixSource};
use crate::deviation::Order;
use crate::error::{Error, Result};
use crate::pipeline::{self, Backend, SentenceRecipe};
use crate::preprocess::PreprocessParams;
use crate::sentence::{GeneSet, SentenceParams};

/// The backend `--chunk-cells` and `--max-memory` ask for.
pub(super) fn backend(chunk_cells: Option<usize>, max_memory: u64) -> Backend {
    match chunk_cells {
        Some(chunk_cells) => Backend::Streamed { chunk_cells },
        None => Backend::Auto { max_memory },
    }
}

/// The input a command names, resolved (`--layer`, `--raw`: the matrix it reads).
pub(super) fn entry_of(input: &InputArgs) -> Result<DatasetEntry> {
    let dirs = data::default_data_dirs(input.dirs.data_dir.as_deref());
    let mut entry = data::resolve(&input.input, &dirs)?;
    if let Some(l) = &input.layer {
        entry.matrix = MatrixSource::Layer(l.clone());
    }
    if input.raw {
        entry.matrix = MatrixSource::Raw;
    }
    Ok(entry)
}

/// The sentences `prep`, `genes`, `order` and `sentence` describe.
pub(super) fn recipe(
    prep: &PrepArgs,
    genes: GeneSet,
    order: Order,
    sentence: SentenceParams,
) -> SentenceRecipe {
    SentenceRecipe {
        preprocess: (!prep.no_preprocess).then(PreprocessParams::default),
        hvg: super::hvg_source(prep),
        genes,
        order,
        sentence,
    }
}

/// `sentences`, with either backend: to `--out` (Parquet, a row group at a time) or stdout, one
/// sentence a line as they are made.
pub(super) fn write_sentences(a: &SentenceArgs) -> Result<()> {
    let entry = entry_of(&a.input)?;
    let sentence = SentenceParams {
        tie_seed: a.tie_seed,
        max_genes: a.max_genes,
    };
    let recipe = recipe(&a.prep, a.genes, a.order, sentence);
    let be = backend(a.stream.chunk_cells, a.stream.max_memory);
    let r = match &a.out {
        Some(out) => {
            let mut w = crate::report::SentenceParquet::create(out)?;
            let r = pipeline::each_sentence(&entry, &recipe, be, |_| Ok(()), |c, s| w.push(c, s))?;
            w.finish()?;
            r
        }
        None => {
            let mut w = Stdout::new();
            let r = pipeline::each_sentence(&entry, &recipe, be, |_| Ok(()), |_, s| w.line(s))?;
            w.flush()?;
            r
        }
    };
    let how = match r.chunks {
        Some(n) => format!(
            " streamed in {n} chunks of {}",
            a.stream.chunk_cells.unwrap_or(pipeline::AUTO_CHUNK)
        ),
        None => String::new(),
    };
    let to = a.out.as_deref().map(|o| format!(" → {}", o.display()));
    eprintln!(
        "[sentences] {} of {} cells{how}{}",
        r.cells_kept,
        r.cells_in,
        to.unwrap_or_default()
    );
    Ok(())
}

/// Standard output a line at a time; a closed pipe (`| head`) ends the output quietly.
struct Stdout {
    w: std::io::BufWriter<std::io::StdoutLock<'static>>,
    closed: bool,
}

impl Stdout {
    fn new() -> Self {
        Stdout {
            w: std::io::BufWriter::new(std::io::stdout().lock()),
            closed: false,
        }
    }

    /// One sentence, its words joined by spaces.
    fn line(&mut self, words: &[&str]) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let r = self
            .w
            .write_all(words.join(" ").as_bytes())
            .and_then(|_| self.w.write_all(b"\n"));
        self.check(r)
    }

    fn flush(&mut self) -> Result<()> {
        let r = self.w.flush();
        self.check(r)
    }

    fn check(&mut self, r: std::io::Result<()>) -> Result<()> {
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            r => r.map_err(|e| Error::io("<stdout>", e)),
        }
    }
}

/// `hvg` streamed, when the backend options and the input's size say so: the selected genes, one
/// a line, as in memory. `false`: the input is to be read whole.
pub(super) fn stream_hvg(a: &HvgArgs) -> Result<bool> {
    let recipe = recipe(
        &a.prep,
        GeneSet::Hvg,
        Order::Expression,
        SentenceParams::default(),
    );
    let entry = entry_of(&a.input)?;
    let be = backend(a.stream.chunk_cells, a.stream.max_memory);
    let Some(chunk) = be.chunk_for(&entry.path, recipe.why_not_streamed())? else {
        return Ok(false);
    };
    let b = pipeline::open_backed(&entry)?;
    let r = crate::stream::hvg(&b, &recipe.stream_params(chunk, true))?;
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
    super::print_out(&out)?;
    Ok(true)
}
