//! Preprocessing with scanpy's semantics, as the paper's code runs it:
//! `filter_cells(min_genes=200)`, `filter_genes(min_cells=3)`, `MT-` percentage from
//! `calculate_qc_metrics`, keep cells with `n_genes_by_counts < 6000` and `pct_counts_mt < 50`
//! (both strict), `normalize_total()` (target = median of the cells' totals), `log1p(base=10)`.
//!
//! Arithmetic follows scanpy on a float32 CSR matrix: per-cell totals summed in f64 and stored as
//! f32, factors `total / target` in f32, values divided in f32; `log1p` in f32 then divided by
//! `ln(base)` in f64 and stored as f32.
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::csr::Csr;
use crate::data::{Dataset, XState};
use crate::error::{Error, Result};

/// Quality-control thresholds (defaults = the paper's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QcParams {
    /// Keep cells with at least this many detected genes (`filter_cells(min_genes)`).
    pub min_genes: usize,
    /// Keep genes detected in at least this many cells (`filter_genes(min_cells)`).
    pub min_cells: usize,
    /// Keep cells with strictly fewer detected genes than this (`None` = no limit).
    pub max_genes: Option<usize>,
    /// Keep cells with a strictly lower percentage of mitochondrial counts (`None` = no limit).
    pub max_pct_mt: Option<f64>,
    /// Prefix of mitochondrial gene symbols (case-sensitive, as the paper's code).
    pub mt_prefix: String,
}

impl Default for QcParams {
    fn default() -> Self {
        Self {
            min_genes: 200,
            min_cells: 3,
            max_genes: Some(6000),
            max_pct_mt: Some(50.0),
            mt_prefix: "MT-".into(),
        }
    }
}

/// What QC kept and removed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QcReport {
    /// Cells before QC.
    pub cells_in: usize,
    /// Genes before QC.
    pub genes_in: usize,
    /// Indices (into the input) of the kept cells.
    pub kept_cells: Vec<usize>,
    /// Indices (into the input) of the kept genes.
    pub kept_genes: Vec<usize>,
    /// Cells removed by `min_genes`.
    pub removed_min_genes: usize,
    /// Cells removed by `max_genes`.
    pub removed_max_genes: usize,
    /// Cells removed by `max_pct_mt`.
    pub removed_mt: usize,
    /// Genes removed by `min_cells`.
    pub removed_genes: usize,
}

/// Per-cell QC metrics over a set of genes (scanpy `calculate_qc_metrics`).
#[derive(Debug, Clone)]
pub struct QcMetrics {
    /// Number of genes with a non-zero count.
    pub n_genes_by_counts: Vec<usize>,
    /// Sum of counts.
    pub total_counts: Vec<f64>,
    /// Percentage of counts in mitochondrial genes (NaN for empty cells).
    pub pct_counts_mt: Vec<f64>,
}

/// Computes QC metrics for `rows` of `x`, counting only columns where `gene_ok` is true.
pub fn qc_metrics(x: &Csr, rows: &[usize], gene_ok: &[bool], is_mt: &[bool]) -> QcMetrics {
    let per: Vec<(usize, f64, f64)> = rows
        .par_iter()
        .map(|&r| {
            let (c, v) = x.row(r);
            let (mut n, mut tot, mut mt) = (0usize, 0f64, 0f64);
            for (&cc, &vv) in c.iter().zip(v) {
                let j = cc as usize;
                if !gene_ok[j] {
                    continue;
                }
                if vv != 0.0 {
                    n += 1;
                }
                tot += vv as f64;
                if is_mt[j] {
                    mt += vv as f64;
                }
            }
            (n, tot, mt)
        })
        .collect();
    QcMetrics {
        n_genes_by_counts: per.iter().map(|p| p.0).collect(),
        total_counts: per.iter().map(|p| p.1).collect(),
        pct_counts_mt: per.iter().map(|p| p.2 / p.1 * 100.0).collect(),
    }
}

/// Runs the QC filters and returns the filtered dataset (a copy) with a report.
///
/// Order as in the paper: `filter_cells(min_genes)` on all genes, `filter_genes(min_cells)` on the
/// remaining cells, then the `max_genes` / `max_pct_mt` cell filters on the remaining genes.
pub fn qc(ds: &Dataset, p: &QcParams) -> Result<(Dataset, QcReport)> {
    let report = qc_report(ds, p)?;
    let out = ds.subset(&report.kept_cells, Some(&report.kept_genes))?;
    Ok((out, report))
}

/// [`qc`] on an owned dataset, filtered in place (peak memory: one matrix).
pub fn qc_owned(mut ds: Dataset, p: &QcParams) -> Result<(Dataset, QcReport)> {
    let report = qc_report(&ds, p)?;
    let idx = polars::prelude::IdxCa::from_vec(
        "idx".into(),
        report.kept_cells.iter().map(|&i| i as _).collect(),
    );
    ds.obs = ds.obs.take(&idx).map_err(|e| {
        Error::format(
            &ds.source,
            format!("obs subset failed: {e}"),
            "report this as a bug",
        )
    })?;
    ds.x.retain(&report.kept_cells, Some(&report.kept_genes));
    ds.cells = report
        .kept_cells
        .iter()
        .map(|&i| std::mem::take(&mut ds.cells[i]))
        .collect();
    ds.genes = report
        .kept_genes
        .iter()
        .map(|&j| std::mem::take(&mut ds.genes[j]))
        .collect();
    Ok((ds, report))
}

/// Computes what QC keeps without touching the data.
pub fn qc_report(ds: &Dataset, p: &QcParams) -> Result<QcReport> {
    crate::validate::Validate::validate(p)?;
    ds.check_counts("quality control")?;
    let x = &ds.x;
    let mut step1 = Vec::new();
    let mut cells_per_gene = vec![0usize; x.n_cols];
    min_genes_pass(x, 0, p.min_genes, &mut step1, &mut cells_per_gene);
    let removed_min_genes = x.n_rows - step1.len();
    let gene_ok: Vec<bool> = cells_per_gene.iter().map(|&n| n >= p.min_cells).collect();
    let kept_genes: Vec<usize> = (0..x.n_cols).filter(|&j| gene_ok[j]).collect();
    let is_mt: Vec<bool> = ds
        .genes
        .iter()
        .map(|g| g.starts_with(&p.mt_prefix))
        .collect();
    let m = qc_metrics(x, &step1, &gene_ok, &is_mt);
    let (kept_cells, removed_max_genes, removed_mt) = cell_filter(&m, &step1, p);
    let report = QcReport {
        cells_in: x.n_rows,
        genes_in: x.n_cols,
        removed_genes: x.n_cols - kept_genes.len(),
        kept_cells,
        kept_genes,
        removed_min_genes,
        removed_max_genes,
        removed_mt,
    };
    check_report(&report, step1.len(), p, &ds.source)?;
    Ok(report)
}

/// `filter_cells(min_genes)` on the rows of `x` (file rows `row0..`, all genes): appends the
/// passing rows to `step1` and counts, per gene, the passing cells that detect it
/// (`filter_genes`' count). Chunks fed in row order give the whole matrix's result.
pub fn min_genes_pass(
    x: &Csr,
    row0: usize,
    min_genes: usize,
    step1: &mut Vec<usize>,
    cells_per_gene: &mut [usize],
) {
    for r in 0..x.n_rows {
        let (c, v) = x.row(r);
        if v.iter().filter(|&&v| v != 0.0).count() >= min_genes {
            step1.push(row0 + r);
            for (&cc, &vv) in c.iter().zip(v) {
                if vv > 0.0 {
                    cells_per_gene[cc as usize] += 1;
                }
            }
        }
    }
}

/// The `max_genes` / `max_pct_mt` filters on the cells `rows` (metrics `m`, in that order): the
/// kept cells and how many each filter removed.
pub fn cell_filter(m: &QcMetrics, rows: &[usize], p: &QcParams) -> (Vec<usize>, usize, usize) {
    let (mut removed_max_genes, mut removed_mt) = (0, 0);
    let mut kept_cells = Vec::with_capacity(rows.len());
    for (k, &r) in rows.iter().enumerate() {
        let ok_genes = p.max_genes.is_none_or(|mx| m.n_genes_by_counts[k] < mx);
        // NaN (empty cell) compares false, so such a cell is removed, as in scanpy/pandas.
        let ok_mt = p.max_pct_mt.is_none_or(|mx| m.pct_counts_mt[k] < mx);
        if !ok_genes {
            removed_max_genes += 1;
        }
        if ok_genes && !ok_mt {
            removed_mt += 1;
        }
        if ok_genes && ok_mt {
            kept_cells.push(r);
        }
    }
    (kept_cells, removed_max_genes, removed_mt)
}

/// Refuses a QC result without cells or genes, saying which filter emptied it (`step1`: the
/// cells that passed `min_genes`).
pub fn check_report(
    report: &QcReport,
    step1: usize,
    p: &QcParams,
    source: &std::path::Path,
) -> Result<()> {
    if report.kept_genes.is_empty() && step1 > 0 {
        // the gene filter empties every cell, so the cell filters after it are not the cause
        return Err(Error::Empty {
            path: source.to_path_buf(),
            what: format!(
                "0 genes left after QC: no gene is detected in min_cells = {} of the {} cells that pass min_genes = {} ({} cells in)",
                p.min_cells,
                step1,
                p.min_genes,
                report.cells_in
            ),
            fix: format!(
                "give a file with at least {} cells with >= {} genes, or lower qc.min_cells / qc.min_genes in the experiment file",
                p.min_cells, p.min_genes
            ),
        });
    }
    if report.kept_cells.is_empty() || report.kept_genes.is_empty() {
        let limit = |v: Option<String>| v.unwrap_or_else(|| "no limit".into());
        return Err(Error::Empty {
            path: source.to_path_buf(),
            what: format!(
                "0 cells left after QC ({} cells in; removed: {} with < {} genes, {} with >= {} genes, {} with >= {} % `{}` counts; {} genes in < {} cells)",
                report.cells_in,
                report.removed_min_genes,
                p.min_genes,
                report.removed_max_genes,
                limit(p.max_genes.map(|v| v.to_string())),
                report.removed_mt,
                limit(p.max_pct_mt.map(|v| v.to_string())),
                p.mt_prefix,
                report.removed_genes,
                p.min_cells
            ),
            fix: "check that X holds raw counts of whole transcriptomes, or relax `qc` thresholds in the experiment file (e.g. min_genes)".into(),
        });
    }
    Ok(())
}

/// scanpy's `normalize_total(target_sum)`: scales every cell to `target_sum` total counts
/// (default: the median of the cells' totals). Returns the target used.
pub fn normalize_total(ds: &mut Dataset, target_sum: Option<f32>) -> f32 {
    normalize_rows(&mut ds.x, target_sum)
}

/// [`normalize_total`] of a matrix (a whole dataset, or a row chunk with the whole dataset's
/// target).
pub fn normalize_rows(x: &mut Csr, target_sum: Option<f32>) -> f32 {
    let totals = row_totals(x);
    let target = target_sum.unwrap_or_else(|| median_f32(&totals));
    normalize_rows_by(x, &totals, target);
    target
}

/// Each row's total as `normalize_total` takes it (f64 sum, stored as f32).
pub fn row_totals(x: &Csr) -> Vec<f32> {
    x.row_sums().into_iter().map(|t| t as f32).collect()
}

/// `normalize_total`'s divisor of each row: `total / target` (1 for an empty row).
fn norm_factors(totals: &[f32], target: f32) -> Vec<f32> {
    totals
        .iter()
        .map(|&t| {
            let f = t / target;
            if f == 0.0 {
                1.0
            } else {
                f
            }
        })
        .collect()
}

/// `x`'s rows as mutable value slices, with `totals`' divisors, for a parallel pass over rows.
fn rows_mut<'a>(
    x: &'a mut Csr,
    factors: &'a [f32],
) -> impl IndexedParallelIterator<Item = (&'a mut [f32], &'a f32)> {
    let indptr = &x.indptr;
    let mut rows: Vec<&mut [f32]> = Vec::with_capacity(indptr.len() - 1);
    let mut rest: &mut [f32] = &mut x.data;
    for w in indptr.windows(2) {
        let (a, b) = rest.split_at_mut(w[1] - w[0]);
        rows.push(a);
        rest = b;
    }
    rows.into_par_iter().zip(factors.par_iter())
}

/// Scales row `r` of `x` by `target / totals[r]` (a zero total leaves the row), as
/// [`normalize_rows`]; `totals` may come from a wider matrix (all kept genes when `x` holds some
/// of their columns).
pub fn normalize_rows_by(x: &mut Csr, totals: &[f32], target: f32) {
    let factors = norm_factors(totals, target);
    rows_mut(x, &factors).for_each(|(row, &f)| {
        for v in row.iter_mut() {
            *v /= f;
        }
    });
}

/// [`normalize_rows_by`] then [`log1p_values`], bit for bit, in one pass: a row's small whole
/// counts (the bulk of its entries) are each normalized and logged once.
pub fn normalize_log1p_rows_by(x: &mut Csr, totals: &[f32], target: f32, base: Option<f64>) {
    const SMALL: usize = 64;
    let factors = norm_factors(totals, target);
    let lb = base.map(f64::ln);
    rows_mut(x, &factors).for_each(|(row, &f)| {
        let mut memo = [None::<f32>; SMALL];
        for v in row.iter_mut() {
            let k = *v as usize;
            *v = if k < SMALL && (k as f32).to_bits() == v.to_bits() {
                *memo[k].get_or_insert_with(|| log1p_one(*v / f, lb))
            } else {
                log1p_one(*v / f, lb)
            };
        }
    });
}

/// scanpy's `log1p` of one value: `ln(1 + v)` in f32, divided by `ln(base)` in f64 when given.
fn log1p_one(v: f32, ln_base: Option<f64>) -> f32 {
    let l = v.ln_1p();
    match ln_base {
        Some(lb) => (l as f64 / lb) as f32,
        None => l,
    }
}

/// numpy's median of a float32 array (mean of the two middle values, in f32).
pub fn median_f32(v: &[f32]) -> f32 {
    if v.is_empty() {
        return f32::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// scanpy's `log1p(base)`: `ln(1 + x)` (f32), divided by `ln(base)` (f64) when a base is given.
pub fn log1p(ds: &mut Dataset, base: Option<f64>) {
    log1p_values(&mut ds.x, base);
    ds.state = XState::LogNormalized { base };
}

/// [`log1p`] of a matrix's stored values.
pub fn log1p_values(x: &mut Csr, base: Option<f64>) {
    let lb = base.map(f64::ln);
    x.data.par_iter_mut().for_each(|v| *v = log1p_one(*v, lb));
}

/// Parameters of the whole preprocessing stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreprocessParams {
    /// QC thresholds.
    pub qc: QcParams,
    /// `normalize_total` target (`None` = median of totals, scanpy's default).
    pub target_sum: Option<f32>,
    /// `log1p` base (`None` = natural log); the paper uses 10.
    pub log_base: Option<f64>,
}

impl Default for PreprocessParams {
    fn default() -> Self {
        Self {
            qc: QcParams::default(),
            target_sum: None,
            log_base: Some(10.0),
        }
    }
}

/// Output of [`preprocess`].
#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// Log-normalized expression of the cells and genes kept by QC.
    pub data: Dataset,
    /// The QC-filtered raw counts (for `seurat_v3` on counts), if requested.
    pub counts: Option<Csr>,
    /// What QC kept.
    pub report: QcReport,
    /// The `normalize_total` target used.
    pub target_sum: f32,
}

/// QC, `normalize_total` and `log1p` in one call. `keep_counts` also returns the filtered counts.
pub fn preprocess(ds: &Dataset, p: &PreprocessParams, keep_counts: bool) -> Result<Preprocessed> {
    preprocess_owned(ds.clone(), p, keep_counts)
}

/// [`preprocess`] consuming the dataset, working in place (peak memory: one matrix, plus the
/// counts when `keep_counts`).
pub fn preprocess_owned(
    ds: Dataset,
    p: &PreprocessParams,
    keep_counts: bool,
) -> Result<Preprocessed> {
    crate::validate::Validate::validate(p)?;
    let (mut data, report) = qc_owned(ds, &p.qc)?;
    let counts = keep_counts.then(|| data.x.clone());
    let target_sum = normalize_total(&mut data, p.target_sum);
    log1p(&mut data, p.log_base);
    data.x.eliminate_zeros();
    Ok(Preprocessed {
        data,
        counts,
        report,
        target_sum,
    })
}

impl crate::validate::Validate for QcParams {
    fn validate(&self) -> crate::Result<()> {
        if let Some(m) = self.max_genes {
            if m <= self.min_genes {
                return Err(crate::Error::param(
                    "max_genes",
                    format!(
                        "{m} keeps no cell with min_genes {} (cells need min_genes ≤ genes < max_genes); use 6000, or null for no limit",
                        self.min_genes
                    ),
                ));
            }
        }
        if let Some(p) = self.max_pct_mt {
            crate::validate::within(
                "max_pct_mt",
                p,
                0.0,
                100.0,
                true,
                "50, or null for no limit",
            )?;
            if p == 0.0 {
                return Err(crate::Error::param(
                    "max_pct_mt",
                    "0 keeps no cell (the test is pct_mt < max_pct_mt); use 50, or null for no limit",
                ));
            }
        }
        Ok(())
    }
}

impl crate::validate::Validate for PreprocessParams {
    fn validate(&self) -> crate::Result<()> {
        crate::validate::Validate::validate(&self.qc)?;
        if let Some(t) = self.target_sum {
            crate::validate::positive_real(
                "target_sum",
                f64::from(t),
                "null = median of the totals (scanpy's default), or 1e4",
            )?;
        }
        if let Some(b) = self.log_base {
            if !(b.is_finite() && b > 0.0 && b != 1.0) {
                return Err(crate::Error::param(
                    "log_base",
                    format!("{b} is not a logarithm base (positive, not 1); use 10, or null for natural log"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_matches_numpy() {
        assert_eq!(median_f32(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_f32(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
