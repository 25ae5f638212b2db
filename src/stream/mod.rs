//! The streaming pipeline for files larger than memory: QC → `normalize_total` → `log1p` → HVG
//! (`seurat_v3` on the log data, the paper's, or `seurat`/`cell_ranger`; per batch with a batch
//! key) → sentences, reading an `.h5ad` in row chunks ([`crate::data::backed`]) in passes, as
//! scanpy orders the steps: cell-level `min_genes` and the gene counts (pass 1), the
//! `max_genes`/`pct_mt` filters and the cells' totals (pass 2), the flavor's per-gene sums
//! (pass 3), `seurat_v3`'s clipped sums (pass 4, only when a value lies above its gene's clip:
//! otherwise pass 3's unclipped sums are those sums exactly), sentences (last pass, normalizing
//! and logging the sentence genes only). Each pass adds in row order, so the result equals the
//! in-memory path (`pipeline::prepare` → `select_hvg` → `sentences`) byte for byte; memory holds
//! one chunk and per-gene and per-cell vectors.
mod hvg;
mod spill;

use std::path::{Path, PathBuf};

use hvg::select_hvg;
use spill::{Spill, SpillWriter};

use crate::csr::Csr;
use crate::data::backed::Backed;
use crate::error::{Error, Result};
use crate::hvg::{HvgParams, HvgResult};
use crate::preprocess::{self, PreprocessParams, QcReport};
use crate::progress::Progress;
use crate::sentence::{SentenceParams, SentenceStream};

/// What the streamed run kept and selected.
#[derive(Debug, Clone)]
pub struct Streamed {
    /// What QC kept (indices into the file's cells and genes).
    pub report: QcReport,
    /// The `normalize_total` target (`None`: the data came log-normalized).
    pub target_sum: Option<f32>,
    /// The HVG selection over the kept genes (HVG sentences only).
    pub hvg: Option<HvgResult>,
    /// Number of row chunks of each pass.
    pub n_chunks: usize,
}

/// A row-chunked reader that refuses a file changed between passes (size or modification time).
/// The first pass decompresses the `.h5ad` in a reader thread (overlapping the work on the
/// previous chunk) and spills each chunk, uncompressed and compact, to an unnamed temporary file
/// (removed by the system even after a kill); later passes read the spill into reused buffers.
struct Passes<'a> {
    b: &'a Backed,
    path: PathBuf,
    chunk: usize,
    stamp: (u64, Option<std::time::SystemTime>),
    progress: bool,
    raw: std::cell::RefCell<Option<Spill>>,
}

fn stamp(path: &Path) -> Result<(u64, Option<std::time::SystemTime>)> {
    let m = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    Ok((m.len(), m.modified().ok()))
}

impl<'a> Passes<'a> {
    /// The passes over `b` in chunks of `params.chunk_cells`.
    fn new(b: &'a Backed, params: &StreamParams) -> Result<Self> {
        Ok(Passes {
            b,
            path: b.path().to_path_buf(),
            chunk: params.chunk_cells.max(1),
            stamp: stamp(b.path())?,
            progress: params.progress,
            raw: std::cell::RefCell::new(None),
        })
    }

    /// Runs `f(first row, chunk)` on every chunk of the file, in order (`f` may change the chunk).
    fn run(&self, what: &str, mut f: impl FnMut(usize, &mut Csr) -> Result<()>) -> Result<()> {
        self.unchanged(&format!("before the pass `{what}`"))?;
        let pb = Progress::bar(self.progress, self.b.n_rows() as u64, what);
        let mut counted = |s: usize, x: &mut Csr| {
            let rows = x.n_rows as u64;
            f(s, x)?;
            pb.inc(rows);
            Ok(())
        };
        let mut raw = self.raw.borrow_mut();
        match raw.as_mut() {
            None => *raw = Some(self.first(&mut counted)?),
            Some(sp) => sp.for_each(self.b.meta.x.n_cols, &mut counted)?,
        }
        pb.finish();
        Ok(())
    }

    /// The first pass: chunks decoded from the file in a reader thread, spilled, then handed to
    /// `f`.
    fn first(&self, mut f: impl FnMut(usize, &mut Csr) -> Result<()>) -> Result<Spill> {
        let mut w = SpillWriter::new()?;
        let (b, size) = (self.b, self.chunk);
        std::thread::scope(|sc| {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            sc.spawn(move || {
                for c in b.chunks(size) {
                    let failed = c.is_err();
                    if tx.send(c).is_err() || failed {
                        break;
                    }
                }
            });
            // an early return drops `rx`, which ends the reader at its next chunk
            for c in rx {
                let (s, mut x) = c?;
                w.push(s, &x)?;
                f(s, &mut x)?;
            }
            Ok(())
        })?;
        w.finish()
    }

    /// Runs `f(chunk, its cells as a range of the kept cells)` on every chunk preprocessed by
    /// `prep`, keeping the file columns `cols` (default: every kept gene), in order.
    fn run_prepped(
        &self,
        what: &str,
        prep: &Prep<'_>,
        cols: Option<&[usize]>,
        mut f: impl FnMut(&Csr, std::ops::Range<usize>) -> Result<()>,
    ) -> Result<()> {
        let cols = cols.unwrap_or(&prep.report.kept_genes);
        self.run(what, |s, x| {
            let kept = prep.chunk(s, x, cols);
            f(x, kept)
        })
    }

    /// Errors if the file's size or modification time differ from the first pass's.
    fn unchanged(&self, when: &str) -> Result<()> {
        if stamp(&self.path)? != self.stamp {
            return Err(Error::format(
                &self.path,
                format!("changed while it was being read ({when}): the passes would mix two files"),
                "do not write the file during a run; run again on the finished file",
            ));
        }
        Ok(())
    }
}

/// How [`sentences`] streams.
#[derive(Debug, Clone)]
pub struct StreamParams {
    /// Cells a chunk holds.
    pub chunk_cells: usize,
    /// QC, `normalize_total` and `log1p` (`None`: X is already log-normalized).
    pub preprocess: Option<PreprocessParams>,
    /// HVG sentences with this selection (on the log data); `None`: all genes.
    pub hvg: Option<HvgParams>,
    /// The `obs` column of the cells' batches for the HVG selection (scanpy's `batch_key`).
    pub batch_key: Option<String>,
    /// A file naming the HVG (one gene a line, as `cellsentence hvg` writes it) instead of a
    /// selection (no HVG passes).
    pub hvg_list: Option<PathBuf>,
    /// The sentences' tie seed and gene budget.
    pub sentence: SentenceParams,
    /// Show progress bars.
    pub progress: bool,
}

/// Streams `b` in chunks and hands each kept cell's name and sentence (its words, most expressed
/// first) to `out`, in order.
/// Supports the paper's preprocessing and the HVG flavors of log data (`seurat_v3`, `seurat`,
/// `cell_ranger`, with or without a batch key); the count-model flavors are refused (use the
/// in-memory path).
pub fn sentences(
    b: &Backed,
    params: &StreamParams,
    out: impl FnMut(&str, &[&str]) -> Result<()>,
) -> Result<Streamed> {
    sentences_with(b, params, |_| Ok(()), out)
}

/// [`sentences`], calling `on_kept(n)` with the number of QC-kept cells as soon as QC has
/// counted them (before the HVG passes and the sentences; an error there stops the run).
pub fn sentences_with(
    b: &Backed,
    params: &StreamParams,
    on_kept: impl FnOnce(usize) -> Result<()>,
    mut out: impl FnMut(&str, &[&str]) -> Result<()>,
) -> Result<Streamed> {
    let passes = Passes::new(b, params)?;
    let sel = select(&passes, params, on_kept)?;
    let prep = sel.prep();
    let cols = sel.hvg.as_ref().map(HvgResult::indices);
    let words: Vec<String> = match &cols {
        Some(c) => c.iter().map(|&j| sel.names[j].clone()).collect(),
        None => sel.names.clone(),
    };
    // the sentence genes' file columns: only they are normalized and logged in the last pass
    let file_cols: Option<Vec<usize>> = cols
        .as_ref()
        .map(|c| c.iter().map(|&j| sel.report.kept_genes[j]).collect());
    let mut stream = SentenceStream::new(&words, &params.sentence)?;
    let mut failed = None;
    passes.run_prepped(
        "sentences (streamed)",
        &prep,
        file_cols.as_deref(),
        |x, range| {
            let kept = &sel.report.kept_cells[range];
            stream.feed(x, |r, sentence| {
                if failed.is_none() {
                    if let Err(e) = out(&b.meta.cells[kept[r]], sentence) {
                        failed = Some(e);
                    }
                }
            })?;
            failed.take().map_or(Ok(()), Err)
        },
    )?;
    passes.unchanged("during the last pass")?;
    Ok(sel.finish(&passes))
}

/// The QC and HVG passes of [`sentences`] alone (`params.hvg` must be set): what QC keeps and
/// the HVG selection, as the in-memory `cellsentence hvg` reports them.
pub fn hvg(b: &Backed, params: &StreamParams) -> Result<Streamed> {
    if params.hvg.is_none() {
        return Err(Error::param("hvg", "give the HVG selection to stream"));
    }
    let passes = Passes::new(b, params)?;
    let sel = select(&passes, params, |_| Ok(()))?;
    passes.unchanged("after the last pass")?;
    Ok(sel.finish(&passes))
}

/// What QC kept (with the normalization: target, log base, the kept cells' totals), the kept
/// genes' names and the HVG selection.
struct Selected {
    report: QcReport,
    norm: Option<(f32, Option<f64>, Vec<f32>)>,
    names: Vec<String>,
    hvg: Option<HvgResult>,
}

impl Selected {
    fn prep(&self) -> Prep<'_> {
        Prep {
            report: &self.report,
            normalize: self
                .norm
                .as_ref()
                .map(|(t, b, totals)| (*t, *b, &totals[..])),
        }
    }

    fn finish(self, passes: &Passes<'_>) -> Streamed {
        Streamed {
            report: self.report,
            target_sum: self.norm.map(|t| t.0),
            hvg: self.hvg,
            n_chunks: passes.b.n_rows().div_ceil(passes.chunk),
        }
    }
}

/// The passes before the sentences: QC (1–2) and, for HVG sentences, the selection (3–4) or
/// the `hvg_list`; `on_kept` hears the number of kept cells after QC.
fn select(
    passes: &Passes<'_>,
    params: &StreamParams,
    on_kept: impl FnOnce(usize) -> Result<()>,
) -> Result<Selected> {
    let list = match &params.hvg_list {
        Some(p) => Some((p, std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?)),
        None => None,
    };
    let (pre, hvg) = (params.preprocess.as_ref(), params.hvg.as_ref());
    if let Some(pre) = pre {
        crate::validate::Validate::validate(pre)?;
    }
    if let Some(h) = hvg {
        crate::validate::Validate::validate(h)?;
        if h.flavor.models_counts() && list.is_none() {
            return Err(Error::param(
                "chunk_cells",
                format!("streaming selects HVG on log data; flavor {} models counts and needs the whole matrix in memory (leave out --chunk-cells)", h.flavor),
            ));
        }
    }
    let meta = &passes.b.meta;
    let (report, norm) = match pre {
        Some(pre) => {
            let (report, totals) = qc(passes, pre)?;
            let target = pre
                .target_sum
                .unwrap_or_else(|| preprocess::median_f32(&totals));
            (report, Some((target, pre.log_base, totals)))
        }
        None => (as_is(passes)?, None),
    };
    let names: Vec<String> = report
        .kept_genes
        .iter()
        .map(|&j| meta.genes[j].clone())
        .collect();
    on_kept(report.kept_cells.len())?;
    let mut sel = Selected {
        report,
        norm,
        names,
        hvg: None,
    };
    sel.hvg = match (hvg, list) {
        (None, _) => None,
        (Some(_), Some((path, text))) => Some(HvgResult::from_list(&sel.names, path, &text)?),
        (Some(h), None) => {
            let batches = params
                .batch_key
                .as_deref()
                .map(|k| {
                    meta.subset(&sel.report.kept_cells, None)?
                        .obs_labels(k, "give every cell a batch, or leave batch_key unset")
                })
                .transpose()?;
            let base = match &sel.norm {
                Some((_, base, _)) => *base,
                None => crate::pipeline::log_base(meta),
            };
            let prep = sel.prep();
            Some(select_hvg(
                passes,
                &prep,
                h,
                &sel.names,
                base,
                batches.as_deref(),
            )?)
        }
    };
    Ok(sel)
}

/// Passes 1 and 2: what QC keeps (as `preprocess::qc_report`) and the kept cells' totals over
/// the kept genes.
fn qc(passes: &Passes<'_>, pre: &PreprocessParams) -> Result<(QcReport, Vec<f32>)> {
    let p = &pre.qc;
    let meta = &passes.b.meta;
    let ng = meta.x.n_cols;
    let mut step1 = Vec::new();
    let mut cells_per_gene = vec![0usize; ng];
    passes.run("QC: cells (streamed)", |s, x| {
        crate::data::check_matrix(
            x,
            s,
            &meta.cells,
            &meta.genes,
            &meta.source,
            Some("quality control"),
        )?;
        preprocess::min_genes_pass(x, s, p.min_genes, &mut step1, &mut cells_per_gene);
        Ok(())
    })?;
    let gene_ok: Vec<bool> = cells_per_gene.iter().map(|&n| n >= p.min_cells).collect();
    let kept_genes: Vec<usize> = (0..ng).filter(|&j| gene_ok[j]).collect();
    let is_mt: Vec<bool> = meta
        .genes
        .iter()
        .map(|g| g.starts_with(&p.mt_prefix))
        .collect();
    let (mut kept_cells, mut totals) = (Vec::new(), Vec::new());
    let (mut removed_max_genes, mut removed_mt) = (0, 0);
    let mut next = 0;
    passes.run("QC: filters (streamed)", |s, x| {
        let end = next + step1[next..].partition_point(|&r| r < s + x.n_rows);
        let local: Vec<usize> = step1[next..end].iter().map(|&r| r - s).collect();
        next = end;
        let m = preprocess::qc_metrics(x, &local, &gene_ok, &is_mt);
        let (kept, a, b) = preprocess::cell_filter(&m, &local, p);
        removed_max_genes += a;
        removed_mt += b;
        totals.extend(preprocess::row_totals(&x.select(&kept, Some(&kept_genes))));
        kept_cells.extend(kept.into_iter().map(|r| s + r));
        Ok(())
    })?;
    let report = QcReport {
        cells_in: meta.x.n_rows,
        genes_in: ng,
        removed_genes: ng - kept_genes.len(),
        removed_min_genes: meta.x.n_rows - step1.len(),
        kept_cells,
        kept_genes,
        removed_max_genes,
        removed_mt,
    };
    preprocess::check_report(&report, step1.len(), p, &meta.source)?;
    Ok((report, totals))
}

/// Data taken as already log-normalized (`--no-preprocess`): every cell and gene, the values
/// checked finite (one pass), as `pipeline::prepare` without preprocessing.
fn as_is(passes: &Passes<'_>) -> Result<QcReport> {
    let meta = &passes.b.meta;
    passes.run("checking values (streamed)", |s, x| {
        crate::data::check_matrix(x, s, &meta.cells, &meta.genes, &meta.source, None)
    })?;
    let (n, ng) = (meta.x.n_rows, meta.x.n_cols);
    Ok(QcReport {
        cells_in: n,
        genes_in: ng,
        kept_cells: (0..n).collect(),
        kept_genes: (0..ng).collect(),
        removed_min_genes: 0,
        removed_max_genes: 0,
        removed_mt: 0,
        removed_genes: 0,
    })
}

/// A chunk's kept cells and genes, normalized (to the target, by the cells' totals over every
/// kept gene) and logged (in the base) as `preprocess_owned` does; `normalize: None` keeps the
/// values.
struct Prep<'a> {
    report: &'a QcReport,
    normalize: Option<(f32, Option<f64>, &'a [f32])>,
}

impl Prep<'_> {
    /// The range of `kept_cells` in the file rows `s..s + rows`.
    fn span(&self, s: usize, rows: usize) -> (usize, usize) {
        let kc = &self.report.kept_cells;
        (
            kc.partition_point(|&r| r < s),
            kc.partition_point(|&r| r < s + rows),
        )
    }

    /// Preprocesses the chunk `x` starting at file row `s` in place, keeping its kept cells and
    /// the file columns `cols` (kept genes, increasing); returns its cells' range of the kept
    /// cells.
    fn chunk(&self, s: usize, x: &mut Csr, cols: &[usize]) -> std::ops::Range<usize> {
        let (lo, hi) = self.span(s, x.n_rows);
        let local: Vec<usize> = self.report.kept_cells[lo..hi]
            .iter()
            .map(|&r| r - s)
            .collect();
        x.retain(&local, Some(cols));
        if let Some((target, base, totals)) = self.normalize {
            preprocess::normalize_log1p_rows_by(x, &totals[lo..hi], target, base);
        }
        x.eliminate_zeros();
        lo..hi
    }
}
