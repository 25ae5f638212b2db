//! The streaming pipeline for files larger than memory: QC → `normalize_total` → `log1p` → HVG
//! (`seurat_v3` on the log data, the paper's) → sentences, reading an `.h5ad` in row chunks
//! ([`crate::data::backed`]) in passes, as scanpy orders the steps: cell-level `min_genes` and
//! the gene counts (pass 1), the `max_genes`/`pct_mt` filters and the cells' totals (pass 2),
//! per-gene sums and sums of squares (pass 3), `seurat_v3`'s clipped sums (pass 4), sentences
//! (last pass). Each pass adds in row order, so the result equals the in-memory path
//! (`pipeline::prepare` → `select_hvg` → `sentences`) byte for byte; memory holds one chunk and
//! per-gene and per-cell vectors.
use std::path::{Path, PathBuf};

use crate::csr::Csr;
use crate::data::backed::Backed;
use crate::error::{Error, Result};
use crate::hvg::{self, Flavor, HvgParams, HvgResult};
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
/// The first pass decompresses the `.h5ad` and spills each chunk, uncompressed, to an unnamed
/// temporary file (removed by the system even after a kill); later passes read the spill. The
/// first pass over preprocessed chunks spills those too, for the passes after it.
struct Passes<'a> {
    b: &'a Backed,
    path: PathBuf,
    chunk: usize,
    stamp: (u64, Option<std::time::SystemTime>),
    progress: bool,
    raw: std::cell::RefCell<Option<Spill>>,
    prepped: std::cell::RefCell<Option<Spill>>,
}

/// Chunks written as `indptr` (u64), `indices` (u32) and `data` (f32) slices; per chunk the
/// first file row of its span, the span's rows, and the chunk's rows and entries.
struct Spill {
    file: std::fs::File,
    chunks: Vec<(usize, usize, usize, usize)>,
}

/// A [`Spill`] being written.
struct SpillWriter {
    w: std::io::BufWriter<std::fs::File>,
    chunks: Vec<(usize, usize, usize, usize)>,
}

fn stamp(path: &Path) -> Result<(u64, Option<std::time::SystemTime>)> {
    let m = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    Ok((m.len(), m.modified().ok()))
}

fn spill_io(e: std::io::Error) -> Error {
    Error::io(std::env::temp_dir(), e)
}

impl SpillWriter {
    fn new() -> Result<Self> {
        let file = tempfile::tempfile().map_err(spill_io)?;
        Ok(SpillWriter {
            w: std::io::BufWriter::with_capacity(1 << 22, file),
            chunks: Vec::new(),
        })
    }

    /// Appends `x`, the chunk of the file rows `start..start + span`.
    fn push(&mut self, start: usize, span: usize, x: &Csr) -> Result<()> {
        use std::io::Write;
        let ptr: Vec<u64> = x.indptr.iter().map(|&p| p as u64).collect();
        self.w
            .write_all(bytemuck::cast_slice(&ptr))
            .map_err(spill_io)?;
        self.w
            .write_all(bytemuck::cast_slice(&x.indices))
            .map_err(spill_io)?;
        self.w
            .write_all(bytemuck::cast_slice(&x.data))
            .map_err(spill_io)?;
        self.chunks.push((start, span, x.n_rows, x.nnz()));
        Ok(())
    }

    fn finish(self) -> Result<Spill> {
        let file = self.w.into_inner().map_err(|e| spill_io(e.into_error()))?;
        Ok(Spill {
            file,
            chunks: self.chunks,
        })
    }
}

impl Spill {
    /// Runs `f(start, span, chunk)` on every chunk, in order.
    fn for_each(
        &mut self,
        n_cols: usize,
        mut f: impl FnMut(usize, usize, Csr) -> Result<()>,
    ) -> Result<()> {
        use std::io::{Read, Seek};
        self.file.rewind().map_err(spill_io)?;
        let mut r = std::io::BufReader::with_capacity(1 << 22, &self.file);
        for &(start, span, rows, nnz) in &self.chunks {
            let mut ptr = vec![0u64; rows + 1];
            let mut indices = vec![0u32; nnz];
            let mut data = vec![0f32; nnz];
            r.read_exact(bytemuck::cast_slice_mut(&mut ptr))
                .map_err(spill_io)?;
            r.read_exact(bytemuck::cast_slice_mut(&mut indices))
                .map_err(spill_io)?;
            r.read_exact(bytemuck::cast_slice_mut(&mut data))
                .map_err(spill_io)?;
            let x = Csr {
                n_rows: rows,
                n_cols,
                indptr: ptr.into_iter().map(|p| p as usize).collect(),
                indices,
                data,
            };
            f(start, span, x)?;
        }
        Ok(())
    }
}

impl Passes<'_> {
    /// Runs `f` on every chunk `(first row, rows)` of the file, in order.
    fn run(&self, what: &str, mut f: impl FnMut(usize, Csr) -> Result<()>) -> Result<()> {
        self.unchanged(&format!("before the pass `{what}`"))?;
        let pb = Progress::bar(self.progress, self.b.n_rows() as u64, what);
        let mut raw = self.raw.borrow_mut();
        match raw.as_mut() {
            None => {
                let mut w = SpillWriter::new()?;
                for c in self.b.chunks(self.chunk) {
                    let (s, x) = c?;
                    w.push(s, x.n_rows, &x)?;
                    let rows = x.n_rows as u64;
                    f(s, x)?;
                    pb.inc(rows);
                }
                *raw = Some(w.finish()?);
            }
            Some(sp) => sp.for_each(self.b.meta.x.n_cols, |s, span, x| {
                f(s, x)?;
                pb.inc(span as u64);
                Ok(())
            })?,
        }
        pb.finish();
        Ok(())
    }

    /// Runs `f(chunk, its cells)` on every chunk preprocessed by `prep`, in order; `keep`: spill
    /// the preprocessed chunks for the passes after this one.
    fn run_prepped(
        &self,
        what: &str,
        prep: &Prep<'_>,
        keep: bool,
        mut f: impl FnMut(Csr, &[usize]) -> Result<()>,
    ) -> Result<()> {
        let kept = |s: usize, span: usize| {
            let kc = &prep.report.kept_cells;
            &kc[kc.partition_point(|&r| r < s)..kc.partition_point(|&r| r < s + span)]
        };
        let mut prepped = self.prepped.borrow_mut();
        if let Some(sp) = prepped.as_mut() {
            self.unchanged(&format!("before the pass `{what}`"))?;
            let pb = Progress::bar(self.progress, self.b.n_rows() as u64, what);
            let nc = prep.report.kept_genes.len();
            sp.for_each(nc, |s, span, x| {
                f(x, kept(s, span))?;
                pb.inc(span as u64);
                Ok(())
            })?;
            pb.finish();
            return Ok(());
        }
        let mut w = if keep {
            Some(SpillWriter::new()?)
        } else {
            None
        };
        self.run(what, |s, x| {
            let span = x.n_rows;
            let x = prep.chunk(s, x);
            if let Some(w) = w.as_mut() {
                w.push(s, span, &x)?;
            }
            f(x, kept(s, span))
        })?;
        *prepped = w.map(SpillWriter::finish).transpose()?;
        if prepped.is_some() {
            // later passes read the preprocessed spill: the raw one is done
            *self.raw.borrow_mut() = None;
        }
        Ok(())
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
    /// HVG sentences with this selection (`seurat_v3`, one batch); `None`: all genes.
    pub hvg: Option<HvgParams>,
    /// The sentences' tie seed and gene budget.
    pub sentence: SentenceParams,
    /// Show progress bars.
    pub progress: bool,
}

/// Streams `b` in chunks and hands each kept cell's name and sentence to `out`, in order.
/// Supports the paper's preprocessing and `seurat_v3` on the log data without a batch key; other
/// HVG settings are refused (use the in-memory path).
pub fn sentences(
    b: &Backed,
    params: &StreamParams,
    mut out: impl FnMut(&str, &str) -> Result<()>,
) -> Result<Streamed> {
    let (pre, hvg, sp) = (
        params.preprocess.as_ref(),
        params.hvg.as_ref(),
        &params.sentence,
    );
    if let Some(pre) = pre {
        crate::validate::Validate::validate(pre)?;
    }
    if let Some(h) = hvg {
        crate::validate::Validate::validate(h)?;
        if h.flavor != Flavor::SeuratV3 {
            return Err(Error::param(
                "chunk_cells",
                format!("streaming selects HVG with seurat_v3 on log data; flavor {} needs the whole matrix in memory (leave out --chunk-cells)", h.flavor),
            ));
        }
    }
    let passes = Passes {
        b,
        path: b.path().to_path_buf(),
        chunk: params.chunk_cells.max(1),
        stamp: stamp(b.path())?,
        progress: params.progress,
        raw: std::cell::RefCell::new(None),
        prepped: std::cell::RefCell::new(None),
    };
    let (report, target) = match pre {
        Some(pre) => {
            let (report, totals) = qc(&passes, pre)?;
            let target = pre
                .target_sum
                .unwrap_or_else(|| preprocess::median_f32(&totals));
            (report, Some((target, pre.log_base)))
        }
        None => (as_is(&passes)?, None),
    };
    let prep = Prep {
        report: &report,
        normalize: target,
    };
    let names: Vec<String> = report
        .kept_genes
        .iter()
        .map(|&j| b.meta.genes[j].clone())
        .collect();
    let h = hvg
        .map(|h| select_hvg(&passes, &prep, h, names.len()))
        .transpose()?;
    let cols = h.as_ref().map(HvgResult::indices);
    let words: Vec<String> = match &cols {
        Some(c) => c.iter().map(|&j| names[j].clone()).collect(),
        None => names,
    };
    let mut stream = SentenceStream::new(&words, sp)?;
    let mut failed = None;
    passes.run_prepped("sentences (streamed)", &prep, false, |x, kept| {
        let x = match &cols {
            Some(c) => x.select_cols(c),
            None => x,
        };
        stream.feed(&x, |r, sentence| {
            if failed.is_none() {
                if let Err(e) = out(&b.meta.cells[kept[r]], sentence) {
                    failed = Some(e);
                }
            }
        })?;
        failed.take().map_or(Ok(()), Err)
    })?;
    passes.unchanged("during the last pass")?;
    Ok(Streamed {
        report,
        target_sum: target.map(|t| t.0),
        hvg: h,
        n_chunks: b.n_rows().div_ceil(passes.chunk),
    })
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
            &x,
            s,
            &meta.cells,
            &meta.genes,
            &meta.source,
            Some("quality control"),
        )?;
        preprocess::min_genes_pass(&x, s, p.min_genes, &mut step1, &mut cells_per_gene);
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
        let m = preprocess::qc_metrics(&x, &local, &gene_ok, &is_mt);
        let (kept, a, b) = preprocess::cell_filter(&m, &local, p);
        removed_max_genes += a;
        removed_mt += b;
        let t = x.select(&kept, Some(&kept_genes)).row_sums();
        totals.extend(t.into_iter().map(|t| t as f32));
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
        crate::data::check_matrix(&x, s, &meta.cells, &meta.genes, &meta.source, None)
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

/// A chunk's kept cells and genes, normalized (to the target) and logged (in the base) as
/// `preprocess_owned` does; `normalize: None` keeps the values.
struct Prep<'a> {
    report: &'a QcReport,
    normalize: Option<(f32, Option<f64>)>,
}

impl Prep<'_> {
    /// The chunk starting at file row `s`, preprocessed (its kept cells and genes).
    fn chunk(&self, s: usize, mut x: Csr) -> Csr {
        let kc = &self.report.kept_cells;
        let lo = kc.partition_point(|&r| r < s);
        let hi = kc.partition_point(|&r| r < s + x.n_rows);
        let local: Vec<usize> = kc[lo..hi].iter().map(|&r| r - s).collect();
        x.retain(&local, Some(&self.report.kept_genes));
        if let Some((target, base)) = self.normalize {
            preprocess::normalize_rows(&mut x, Some(target));
            preprocess::log1p_values(&mut x, base);
        }
        x.eliminate_zeros();
        x
    }
}

/// Passes 3 and 4: `seurat_v3` (one batch) from streamed sums, as `hvg::highly_variable_genes`.
fn select_hvg(passes: &Passes<'_>, prep: &Prep<'_>, h: &HvgParams, ng: usize) -> Result<HvgResult> {
    let n = prep.report.kept_cells.len();
    if n < 2 {
        return Err(Error::param(
            "cells",
            format!("HVG needs at least 2 cells, got {n}"),
        ));
    }
    let (mut s, mut sq) = (vec![0f64; ng], vec![0f64; ng]);
    passes.run_prepped("HVG: gene sums (streamed)", prep, true, |x, _| {
        hvg::add_sums(&x, 0..x.n_rows, &mut s, &mut sq, None);
        Ok(())
    })?;
    let (mean, var) = hvg::finish_mean_var(&s, &sq, n);
    let (reg_std, clip) = hvg::seurat_v3_trend(&mean, &var, n, h.span)?;
    let (mut cs, mut csq) = (vec![0f64; ng], vec![0f64; ng]);
    passes.run_prepped("HVG: clipped sums (streamed)", prep, true, |x, _| {
        hvg::add_sums(&x, 0..x.n_rows, &mut cs, &mut csq, Some(&clip));
        Ok(())
    })?;
    let nv = hvg::seurat_v3_norm_var(&mean, &reg_std, &cs, &csq, n);
    Ok(hvg::seurat_v3_select(&[nv], h.n_top_genes, mean))
}
