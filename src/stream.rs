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

/// Where and how one chunk lies in a [`Spill`].
#[derive(Debug, Clone, Copy)]
struct SpillChunk {
    /// First file row and rows of the chunk.
    start: usize,
    rows: usize,
    nnz: usize,
    /// Column indices stored as u32 (else u16: every column < 65,536).
    wide_indices: bool,
    /// Values stored as f32 (else u16: every value a whole count < 65,536, bit for bit).
    float_data: bool,
}

/// Chunks written as `indptr` (u64), `indices` (u16 or u32) and `data` (u16 or f32) slices.
struct Spill {
    file: std::fs::File,
    chunks: Vec<SpillChunk>,
}

/// A [`Spill`] being written (with scratch buffers reused across chunks).
struct SpillWriter {
    w: std::io::BufWriter<std::fs::File>,
    chunks: Vec<SpillChunk>,
    narrow: Vec<u16>,
}

fn stamp(path: &Path) -> Result<(u64, Option<std::time::SystemTime>)> {
    let m = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    Ok((m.len(), m.modified().ok()))
}

fn spill_io(e: std::io::Error) -> Error {
    Error::io(std::env::temp_dir(), e)
}

/// `v` as a whole count that u16 holds exactly (same bits back as f32).
fn as_u16(v: f32) -> Option<u16> {
    let n = v as u16;
    ((n as f32).to_bits() == v.to_bits()).then_some(n)
}

impl SpillWriter {
    fn new() -> Result<Self> {
        let file = tempfile::tempfile().map_err(spill_io)?;
        Ok(SpillWriter {
            w: std::io::BufWriter::with_capacity(1 << 22, file),
            chunks: Vec::new(),
            narrow: Vec::new(),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        std::io::Write::write_all(&mut self.w, bytes).map_err(spill_io)
    }

    /// Appends `x`, the chunk of the file rows from `start`.
    fn push(&mut self, start: usize, x: &Csr) -> Result<()> {
        let ptr: Vec<u64> = x.indptr.iter().map(|&p| p as u64).collect();
        self.write(bytemuck::cast_slice(&ptr))?;
        let wide_indices = x.n_cols > 1 << 16;
        if wide_indices {
            self.write(bytemuck::cast_slice(&x.indices))?;
        } else {
            let mut n = std::mem::take(&mut self.narrow);
            n.clear();
            n.extend(x.indices.iter().map(|&i| i as u16));
            self.write(bytemuck::cast_slice(&n))?;
            self.narrow = n;
        }
        let mut n = std::mem::take(&mut self.narrow);
        n.clear();
        let float_data = x
            .data
            .iter()
            .any(|&v| as_u16(v).map(|c| n.push(c)).is_none());
        if float_data {
            self.write(bytemuck::cast_slice(&x.data))?;
        } else {
            self.write(bytemuck::cast_slice(&n))?;
        }
        self.narrow = n;
        self.chunks.push(SpillChunk {
            start,
            rows: x.n_rows,
            nnz: x.nnz(),
            wide_indices,
            float_data,
        });
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
    /// Runs `f(start, chunk)` on every chunk, in order, reading into buffers reused across
    /// chunks (`f` may change the chunk in place).
    fn for_each(
        &mut self,
        n_cols: usize,
        mut f: impl FnMut(usize, &mut Csr) -> Result<()>,
    ) -> Result<()> {
        use std::io::{Read, Seek};
        self.file.rewind().map_err(spill_io)?;
        let mut r = std::io::BufReader::with_capacity(1 << 22, &self.file);
        let mut read = |buf: &mut [u8]| r.read_exact(buf).map_err(spill_io);
        let (mut ptr, mut narrow) = (Vec::<u64>::new(), Vec::<u16>::new());
        let mut x = Csr {
            n_rows: 0,
            n_cols,
            indptr: vec![0],
            indices: Vec::new(),
            data: Vec::new(),
        };
        for c in &self.chunks {
            ptr.resize(c.rows + 1, 0);
            read(bytemuck::cast_slice_mut(&mut ptr))?;
            x.indptr.clear();
            x.indptr.extend(ptr.iter().map(|&p| p as usize));
            if c.wide_indices {
                x.indices.resize(c.nnz, 0);
                read(bytemuck::cast_slice_mut(&mut x.indices))?;
            } else {
                narrow.resize(c.nnz, 0);
                read(bytemuck::cast_slice_mut(&mut narrow))?;
                x.indices.clear();
                x.indices.extend(narrow.iter().map(|&i| i as u32));
            }
            if c.float_data {
                x.data.resize(c.nnz, 0.0);
                read(bytemuck::cast_slice_mut(&mut x.data))?;
            } else {
                narrow.resize(c.nnz, 0);
                read(bytemuck::cast_slice_mut(&mut narrow))?;
                x.data.clear();
                x.data.extend(narrow.iter().map(|&v| v as f32));
            }
            (x.n_rows, x.n_cols) = (c.rows, n_cols);
            f(c.start, &mut x)?;
        }
        Ok(())
    }
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
        let mut raw = self.raw.borrow_mut();
        match raw.as_mut() {
            None => {
                *raw = Some(self.first(|s, x| {
                    let rows = x.n_rows as u64;
                    f(s, x)?;
                    pb.inc(rows);
                    Ok(())
                })?)
            }
            Some(sp) => sp.for_each(self.b.meta.x.n_cols, |s, x| {
                let rows = x.n_rows as u64;
                f(s, x)?;
                pb.inc(rows);
                Ok(())
            })?,
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
            let (lo, hi) = prep.span(s, x.n_rows);
            prep.chunk(s, x, cols);
            f(x, lo..hi)
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

/// Streams `b` in chunks and hands each kept cell's name and sentence to `out`, in order.
/// Supports the paper's preprocessing and the HVG flavors of log data (`seurat_v3`, `seurat`,
/// `cell_ranger`, with or without a batch key); the count-model flavors are refused (use the
/// in-memory path).
pub fn sentences(
    b: &Backed,
    params: &StreamParams,
    out: impl FnMut(&str, &str) -> Result<()>,
) -> Result<Streamed> {
    sentences_with(b, params, |_| Ok(()), out)
}

/// [`sentences`], calling `on_kept(n)` with the number of QC-kept cells as soon as QC has
/// counted them (before the HVG passes and the sentences; an error there stops the run).
pub fn sentences_with(
    b: &Backed,
    params: &StreamParams,
    on_kept: impl FnOnce(usize) -> Result<()>,
    mut out: impl FnMut(&str, &str) -> Result<()>,
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
    /// the file columns `cols` (kept genes, increasing).
    fn chunk(&self, s: usize, x: &mut Csr, cols: &[usize]) {
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
    }
}

/// Pass 3 (and for `seurat_v3`, only when a value lies above its gene's clip, 4): the HVG
/// selection of the kept genes `names` from streamed per-batch sums, as
/// `hvg::highly_variable_genes` (`base`: the log base `seurat` undoes).
fn select_hvg(
    passes: &Passes<'_>,
    prep: &Prep<'_>,
    h: &HvgParams,
    names: &[String],
    base: Option<f64>,
    batches: Option<&[String]>,
) -> Result<HvgResult> {
    let n = prep.report.kept_cells.len();
    if n < 2 {
        return Err(Error::param(
            "cells",
            format!("HVG needs at least 2 cells, got {n}"),
        ));
    }
    let (cats, of) = match batches {
        Some(b) => hvg::batch_index(b),
        None => (Vec::new(), vec![0; n]),
    };
    let groups = Groups {
        of,
        n: cats.len().max(1),
    };
    match h.flavor {
        Flavor::SeuratV3 => seurat_v3(passes, prep, h, names.len(), &groups, &cats),
        Flavor::Seurat | Flavor::CellRanger => {
            let mut sums = vec![hvg::DispSums::new(names.len()); groups.n];
            passes.run_prepped("HVG: dispersions (streamed)", prep, None, |x, range| {
                for (g, rows) in groups.rows(range).into_iter().enumerate() {
                    sums[g].add(x, rows.into_iter(), h.flavor, base);
                }
                Ok(())
            })?;
            hvg::dispersion_select(&sums, names, h, batches.is_some())
        }
        f => Err(Error::param(
            "chunk_cells",
            format!("flavor {f} models counts; streaming selects HVG on log data"),
        )),
    }
}

/// Each kept cell's batch (an index into the sorted batch names; all 0 without batches).
struct Groups {
    of: Vec<usize>,
    n: usize,
}

impl Groups {
    /// The rows of a chunk holding the kept cells `range`, by batch, in row order.
    fn rows(&self, range: std::ops::Range<usize>) -> Vec<Vec<usize>> {
        let mut rows = vec![Vec::new(); self.n];
        for (r, &g) in self.of[range].iter().enumerate() {
            rows[g].push(r);
        }
        rows
    }

    fn sizes(&self) -> Vec<usize> {
        let mut n = vec![0; self.n];
        self.of.iter().for_each(|&g| n[g] += 1);
        n
    }
}

/// `seurat_v3` from streamed sums, per batch: pass 3 adds each batch's sums and, as they are
/// when nothing is clipped, its clipped sums and each gene's largest value; pass 4 adds the
/// clipped sums again only when a value lies above its gene's clip.
fn seurat_v3(
    passes: &Passes<'_>,
    prep: &Prep<'_>,
    h: &HvgParams,
    ng: usize,
    groups: &Groups,
    cats: &[&String],
) -> Result<HvgResult> {
    let sizes = groups.sizes();
    if !cats.is_empty() {
        hvg::seurat_v3_check_batches(cats, &sizes)?;
    }
    let zeros = || vec![vec![0f64; ng]; groups.n];
    let (mut s, mut sq, mut cs, mut csq) = (zeros(), zeros(), zeros(), zeros());
    let mut max = vec![vec![f32::NEG_INFINITY; ng]; groups.n];
    // every cell's sums give the means reported (the one batch's without a batch key)
    let (mut s_all, mut sq_all) = (vec![0f64; ng], vec![0f64; ng]);
    let unclipped = vec![f64::INFINITY; ng];
    passes.run_prepped("HVG: gene sums (streamed)", prep, None, |x, range| {
        if groups.n > 1 {
            hvg::add_sums(x, 0..x.n_rows, &mut s_all, &mut sq_all, None);
        }
        for (g, rows) in groups.rows(range).iter().enumerate() {
            let rows = || rows.iter().copied();
            hvg::add_sums(x, rows(), &mut s[g], &mut sq[g], None);
            hvg::add_sums(x, rows(), &mut cs[g], &mut csq[g], Some(&unclipped));
            for r in rows() {
                let (c, v) = x.row(r);
                for (&j, &v) in c.iter().zip(v) {
                    max[g][j as usize] = max[g][j as usize].max(v);
                }
            }
        }
        Ok(())
    })?;
    let mut trends = Vec::with_capacity(groups.n);
    for g in 0..groups.n {
        let (mean, var) = hvg::finish_mean_var(&s[g], &sq[g], sizes[g]);
        let (reg_std, clip) = hvg::seurat_v3_trend(&mean, &var, sizes[g], h.span)?;
        trends.push((mean, reg_std, clip));
    }
    let clipped = |g: usize| (0..ng).any(|j| max[g][j] as f64 > trends[g].2[j]);
    if (0..groups.n).any(clipped) {
        (cs, csq) = (zeros(), zeros());
        passes.run_prepped("HVG: clipped sums (streamed)", prep, None, |x, range| {
            for (g, rows) in groups.rows(range).iter().enumerate() {
                let clip = Some(&trends[g].2[..]);
                hvg::add_sums(x, rows.iter().copied(), &mut cs[g], &mut csq[g], clip);
            }
            Ok(())
        })?;
    }
    let norm_vars: Vec<Vec<f64>> = (0..groups.n)
        .map(|g| {
            let (mean, reg_std, _) = &trends[g];
            hvg::seurat_v3_norm_var(mean, reg_std, &cs[g], &csq[g], sizes[g])
        })
        .collect();
    let means_all = if groups.n > 1 {
        hvg::finish_mean_var(&s_all, &sq_all, prep.report.kept_cells.len()).0
    } else {
        trends.swap_remove(0).0
    };
    Ok(hvg::seurat_v3_select(&norm_vars, h.n_top_genes, means_all))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(n_cols: usize, indices: Vec<u32>, data: Vec<f32>) -> Csr {
        let n = data.len();
        Csr::from_parts(2, n_cols, vec![0, 1, n], indices, data).unwrap()
    }

    #[test]
    fn spill_gives_back_every_layout_bit_for_bit() {
        let chunks = [
            // u16 columns, whole counts (u16 values; -0.0 must stay -0.0, so that chunk is f32)
            csr(100, vec![3, 0, 99], vec![1.0, 65535.0, 7.0]),
            csr(100, vec![3, 0, 99], vec![1.0, -0.0, 7.0]),
            // a count u16 cannot hold, a fraction: f32 values
            csr(100, vec![5, 1, 2], vec![65536.0, 0.5, 3.0]),
            // more columns than u16 indexes: u32 columns
            csr(70_000, vec![69_999, 0, 65_536], vec![2.0, 1.0, 1e-3]),
        ];
        let mut w = SpillWriter::new().unwrap();
        for (k, x) in chunks.iter().enumerate() {
            w.push(10 * k, x).unwrap();
        }
        let mut sp = w.finish().unwrap();
        let layouts: Vec<(bool, bool)> = sp
            .chunks
            .iter()
            .map(|c| (c.wide_indices, c.float_data))
            .collect();
        assert_eq!(
            layouts,
            [(false, false), (false, true), (false, true), (true, true)]
        );
        let mut back = Vec::new();
        sp.for_each(70_000, |s, x| {
            back.push((s, x.clone()));
            Ok(())
        })
        .unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for (k, (s, x)) in back.into_iter().enumerate() {
            let want = &chunks[k];
            assert_eq!(s, 10 * k);
            assert_eq!((&x.indptr, &x.indices), (&want.indptr, &want.indices));
            assert_eq!(bits(&x.data), bits(&want.data), "chunk {k}");
        }
    }
}
