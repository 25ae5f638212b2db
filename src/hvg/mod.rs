//! Highly variable genes with scanpy's `highly_variable_genes` semantics (scanpy 1.11):
//! flavors `seurat` and `cell_ranger` (dispersion-based, on log data) and `seurat_v3`
//! (normalized variance with a LOESS fit, meant for counts), each with optional `batch_key`; and
//! `deviance` (binomial deviance on counts, scry's `devianceFeatureSelection`, in [`deviance`])
//! and `pearson_residuals` (scanpy's experimental flavor, on counts, in [`pearson`]).
//!
//! The paper ran `seurat_v3` on the log10-normalized matrix; that is [`Flavor::SeuratV3`] applied
//! to the preprocessed data. The textbook choices are `seurat` on log data and `seurat_v3` on counts.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::csr::Csr;
use crate::error::{Error, Result};
use crate::stats::median_skipna;

mod deviance;
mod pearson;
mod seurat_v3;

pub use deviance::binomial_deviance;
pub use pearson::residual_variances;
use seurat_v3::seurat_v3;
pub use seurat_v3::{seurat_v3_norm_var, seurat_v3_select, seurat_v3_trend};

/// HVG method.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    /// Seurat (v1/v2) dispersion, 20 equal-width mean bins; expects log data.
    Seurat,
    /// Cell Ranger dispersion, percentile bins, median/MAD; expects log data.
    #[strum(to_string = "cell_ranger", serialize = "cell-ranger")]
    CellRanger,
    /// Seurat v3 normalized variance with LOESS (span 0.3); expects counts.
    #[serde(rename = "seurat_v3")]
    #[strum(to_string = "seurat_v3", serialize = "seurat-v3")]
    SeuratV3,
    /// Binomial deviance (scry's `devianceFeatureSelection`, Townes et al. 2019); needs counts.
    Deviance,
    /// Variance of analytic Pearson residuals (scanpy `experimental.pp.highly_variable_genes`,
    /// Lause et al. 2021); needs counts.
    PearsonResiduals,
}

impl Flavor {
    /// Whether the flavor models raw counts (deviance, Pearson residuals): it runs on the
    /// QC-filtered counts, never on log data.
    pub fn models_counts(self) -> bool {
        matches!(self, Flavor::Deviance | Flavor::PearsonResiduals)
    }
}

/// Parameters of [`highly_variable_genes`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HvgParams {
    /// Method.
    pub flavor: Flavor,
    /// Number of genes to select.
    pub n_top_genes: usize,
    /// Number of mean bins (`seurat`).
    pub n_bins: usize,
    /// LOESS span (`seurat_v3`).
    pub span: f64,
}

impl Default for HvgParams {
    fn default() -> Self {
        Self {
            flavor: Flavor::SeuratV3,
            n_top_genes: 2000,
            n_bins: 20,
            span: 0.3,
        }
    }
}

/// Per-gene HVG statistics and the selection.
#[derive(Debug, Clone)]
pub struct HvgResult {
    /// Selected genes (mask over the input's genes).
    pub highly_variable: Vec<bool>,
    /// Gene means (log1p of the mean for `seurat`; averaged over batches).
    pub means: Vec<f64>,
    /// Normalized dispersion (`seurat`/`cell_ranger`), normalized variance (`seurat_v3`) or
    /// binomial deviance (`deviance`, summed over batches).
    pub score: Vec<f64>,
    /// Number of batches in which the gene was highly variable (1 batch when no batch key).
    pub n_batches: Vec<usize>,
    /// `seurat_v3` only: the gene's normalized variance ties another gene's inside the top
    /// `n_top_genes` of some batch. scanpy ranks with numpy's unstable (and CPU-dispatched)
    /// argsort, so its order inside such ties is arbitrary; we break ties by gene order.
    pub tie_dependent: Vec<bool>,
}

impl HvgResult {
    /// The selection a gene list names (one gene a line; `list` is its file, for errors), over
    /// `genes`. Only the mask is known: means and scores are NaN, `n_batches` 0.
    pub fn from_list(genes: &[String], list: &std::path::Path, text: &str) -> Result<Self> {
        let pos: std::collections::HashMap<&str, usize> = genes
            .iter()
            .enumerate()
            .map(|(j, g)| (g.as_str(), j))
            .collect();
        let mut mask = vec![false; genes.len()];
        let fix = "make the list with `cellsentence hvg` on the same input and options";
        for (i, g) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let g = g.trim();
            let j = *pos.get(g).ok_or_else(|| {
                Error::bad_value(
                    list,
                    format!("line {}", i + 1),
                    format!("`{g}` is not a gene of the input (after QC)"),
                    fix,
                )
            })?;
            if std::mem::replace(&mut mask[j], true) {
                return Err(Error::bad_value(
                    list,
                    format!("line {}", i + 1),
                    format!("`{g}` is listed twice"),
                    fix,
                ));
            }
        }
        if !mask.contains(&true) {
            return Err(Error::format(list, "lists no gene", fix));
        }
        let n = genes.len();
        Ok(HvgResult {
            highly_variable: mask,
            means: vec![f64::NAN; n],
            score: vec![f64::NAN; n],
            n_batches: vec![0; n],
            tie_dependent: vec![false; n],
        })
    }

    /// Indices of the selected genes, increasing.
    pub fn indices(&self) -> Vec<usize> {
        (0..self.highly_variable.len())
            .filter(|&j| self.highly_variable[j])
            .collect()
    }
}

/// Column means and unbiased variances as scanpy's sparse `_get_mean_var` computes them
/// (f64 sums; each square taken in f32 before accumulation, as scanpy's numba kernel does).
pub fn mean_var(x: &Csr, rows: Option<&[usize]>) -> (Vec<f64>, Vec<f64>) {
    let n = rows.map_or(x.n_rows, |r| r.len());
    let mut s = vec![0f64; x.n_cols];
    let mut sq = vec![0f64; x.n_cols];
    match rows {
        Some(rs) => add_sums(x, rs.iter().copied(), &mut s, &mut sq, None),
        None => add_sums(x, 0..x.n_rows, &mut s, &mut sq, None),
    }
    finish_mean_var(&s, &sq, n)
}

/// Adds the rows' per-gene sums and sums of squares to `s` and `sq` (f64; squares in f32, as
/// [`mean_var`]; with `clip`, each value first clipped to its gene's bound, in f64, as
/// `seurat_v3` does). Row order is the summation order: chunks added in row order give the
/// whole matrix's sums bit for bit.
pub fn add_sums(
    x: &Csr,
    rows: impl Iterator<Item = usize>,
    s: &mut [f64],
    sq: &mut [f64],
    clip: Option<&[f64]>,
) {
    for r in rows {
        let (c, v) = x.row(r);
        for (&cc, &vv) in c.iter().zip(v) {
            let j = cc as usize;
            match clip {
                None => {
                    s[j] += vv as f64;
                    sq[j] += (vv * vv) as f64;
                }
                Some(clip) => {
                    let e = (vv as f64).min(clip[j]);
                    sq[j] += e * e;
                    s[j] += e;
                }
            }
        }
    }
}

/// Means and unbiased variances from the sums of `n` rows ([`add_sums`]).
pub fn finish_mean_var(s: &[f64], sq: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let nf = n as f64;
    let mut mean = vec![0f64; s.len()];
    let mut var = vec![0f64; s.len()];
    for j in 0..s.len() {
        mean[j] = s[j] / nf;
        var[j] = sq[j] / nf - (s[j] / nf).powi(2);
        if n != 1 {
            var[j] *= nf / (nf - 1.0);
        }
    }
    (mean, var)
}

/// Computes highly variable genes of `x` (cells × genes).
///
/// `log_base` is scanpy's `uns["log1p"]["base"]` (`None` = natural log), used by `seurat` to undo
/// the log. `batches`, when given, holds one label per cell (scanpy's `batch_key`).
pub fn highly_variable_genes(
    x: &Csr,
    genes: &[String],
    p: &HvgParams,
    log_base: Option<f64>,
    batches: Option<&[String]>,
) -> Result<HvgResult> {
    crate::validate::Validate::validate(p)?;
    if x.n_rows < 2 {
        return Err(Error::param(
            "cells",
            format!("HVG needs at least 2 cells, got {}", x.n_rows),
        ));
    }
    if let Some(b) = batches {
        if b.len() != x.n_rows {
            return Err(Error::param(
                "batch_key",
                format!("{} labels for {} cells", b.len(), x.n_rows),
            ));
        }
    }
    match p.flavor {
        Flavor::SeuratV3 => seurat_v3(x, p, batches),
        Flavor::Deviance => Ok(deviance::deviance(x, p, batches)),
        Flavor::PearsonResiduals => Ok(pearson::pearson_residuals(x, p, batches)),
        Flavor::Seurat | Flavor::CellRanger => match batches {
            None => {
                let rows: Vec<usize> = (0..x.n_rows).collect();
                let d = dispersion_single(x, &rows, None, p, log_base)?;
                Ok(HvgResult {
                    n_batches: d.hv.iter().map(|&h| h as usize).collect(),
                    tie_dependent: vec![false; d.hv.len()],
                    highly_variable: d.hv,
                    means: d.means,
                    score: d.disp_norm,
                })
            }
            Some(b) => dispersion_batched(x, genes, p, log_base, b),
        },
    }
}

struct DispResult {
    means: Vec<f64>,
    disp_norm: Vec<f64>,
    hv: Vec<bool>,
}

/// `_highly_variable_genes_single_batch` on `rows`, restricted to `genes` if given.
fn dispersion_single(
    x: &Csr,
    rows: &[usize],
    genes: Option<&[usize]>,
    p: &HvgParams,
    log_base: Option<f64>,
) -> Result<DispResult> {
    let ng = genes.map_or(x.n_cols, |g| g.len());
    // Column map: original gene -> position in the subset.
    let colmap: Option<Vec<u32>> = genes.map(|g| {
        let mut m = vec![u32::MAX; x.n_cols];
        for (k, &j) in g.iter().enumerate() {
            m[j] = k as u32;
        }
        m
    });
    let ln_base = log_base.map(f64::ln);
    let seurat = p.flavor == Flavor::Seurat;
    let n = rows.len() as f64;
    let mut s = vec![0f64; ng];
    let mut sq = vec![0f64; ng];
    for &r in rows {
        let (c, v) = x.row(r);
        for (&cc, &vv) in c.iter().zip(v) {
            let j = match &colmap {
                Some(m) => {
                    let k = m[cc as usize];
                    if k == u32::MAX {
                        continue;
                    }
                    k as usize
                }
                None => cc as usize,
            };
            let val = if seurat {
                let y = match ln_base {
                    Some(lb) => (vv as f64 * lb) as f32,
                    None => vv,
                };
                y.exp_m1()
            } else {
                vv
            };
            s[j] += val as f64;
            sq[j] += (val * val) as f64;
        }
    }
    let mut means = vec![0f64; ng];
    let mut disp = vec![0f64; ng];
    for j in 0..ng {
        let mut m = s[j] / n;
        let mut var = sq[j] / n - m * m;
        if rows.len() != 1 {
            var *= n / (n - 1.0);
        }
        if m == 0.0 {
            m = 1e-12;
        }
        let mut d = var / m;
        if seurat {
            if d == 0.0 {
                d = f64::NAN;
            }
            d = d.ln();
            m = m.ln_1p();
        }
        means[j] = m;
        disp[j] = d;
    }
    let bins = if seurat {
        cut_equal_width(&means, p.n_bins)
    } else {
        cut_percentiles(&means)?
    };
    // Group statistics over the bins (pandas groupby, NaN skipped).
    let mut groups: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for j in 0..ng {
        if let Some(b) = bins[j] {
            groups.entry(b).or_default().push(disp[j]);
        }
    }
    let mut stats: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
    for (b, vals) in groups {
        let (avg, dev) = if seurat {
            let (m, sd) = mean_std_skipna(&vals);
            if sd.is_nan() {
                (0.0, m)
            } else {
                (m, sd)
            }
        } else {
            (median_skipna(&vals), mad(&vals))
        };
        stats.insert(b, (avg, dev));
    }
    let disp_norm: Vec<f64> = (0..ng)
        .map(|j| match bins[j] {
            Some(b) => {
                let (a, d) = stats[&b];
                (disp[j] - a) / d
            }
            None => f64::NAN,
        })
        .collect();
    let n_top = p.n_top_genes.min(ng);
    let mut finite: Vec<f64> = disp_norm.iter().copied().filter(|v| !v.is_nan()).collect();
    let hv = if finite.is_empty() {
        vec![false; ng]
    } else {
        let n_top = n_top.min(finite.len());
        finite.sort_by(|a, b| b.total_cmp(a));
        let cut = finite[n_top - 1];
        disp_norm.iter().map(|&v| !v.is_nan() && v >= cut).collect()
    };
    Ok(DispResult {
        means,
        disp_norm,
        hv,
    })
}

/// pandas `mean` and `std(ddof=1)` skipping NaN (Welford, as pandas' groupby kernels).
fn mean_std_skipna(v: &[f64]) -> (f64, f64) {
    let (mut n, mut mean, mut m2) = (0f64, 0f64, 0f64);
    let mut sum = 0f64;
    for &x in v.iter().filter(|x| !x.is_nan()) {
        n += 1.0;
        sum += x;
        let d = x - mean;
        mean += d / n;
        m2 += d * (x - mean);
    }
    if n == 0.0 {
        return (f64::NAN, f64::NAN);
    }
    let sd = if n < 2.0 {
        f64::NAN
    } else {
        (m2 / (n - 1.0)).sqrt()
    };
    (sum / n, sd)
}

/// statsmodels `robust.mad`: median(|a - median(a)|) / Φ⁻¹(3/4); NaN if any value is NaN.
fn mad(v: &[f64]) -> f64 {
    if v.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    let med = median_skipna(v);
    let dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    median_skipna(&dev) / 0.674_489_750_196_081_7
}

/// pandas `cut(x, bins=n)` (right-closed, lowest edge extended by 0.1 % of the range).
fn cut_equal_width(x: &[f64], n_bins: usize) -> Vec<Option<usize>> {
    let finite = x.iter().copied().filter(|v| !v.is_nan());
    let mn = finite.clone().fold(f64::INFINITY, f64::min);
    let mx = finite.fold(f64::NEG_INFINITY, f64::max);
    let mut edges: Vec<f64>;
    if mn == mx {
        let (a, b) = if mn != 0.0 {
            (mn - 0.001 * mn.abs(), mx + 0.001 * mx.abs())
        } else {
            (mn - 0.001, mx + 0.001)
        };
        edges = linspace(a, b, n_bins + 1);
    } else {
        edges = linspace(mn, mx, n_bins + 1);
        edges[0] -= (mx - mn) * 0.001;
    }
    assign_bins(x, &edges)
}

/// numpy `linspace(start, stop, num)` with its rounding (`i * step + start`, exact last value).
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let div = (num - 1) as f64;
    let step = (stop - start) / div;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if num > 1 {
        v[num - 1] = stop;
    }
    v
}

/// Bin index for right-closed bins `(e[i], e[i+1]]` via `searchsorted(side="left")`.
fn assign_bins(x: &[f64], edges: &[f64]) -> Vec<Option<usize>> {
    x.iter()
        .map(|&v| {
            if v.is_nan() {
                return None;
            }
            let id = edges.partition_point(|&e| e < v);
            if id == 0 || id == edges.len() {
                None
            } else {
                Some(id - 1)
            }
        })
        .collect()
}

/// numpy `percentile(x, q)` with the default linear method.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let idx = q / 100.0 * (n - 1) as f64;
    let lo = idx.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let t = idx - lo as f64;
    let (a, b) = (sorted[lo], sorted[hi]);
    let d = b - a;
    if t >= 0.5 {
        b - d * (1.0 - t)
    } else {
        a + d * t
    }
}

/// Cell Ranger bins: `[-inf, percentiles 10, 15, ..., 100, inf]`.
fn cut_percentiles(x: &[f64]) -> Result<Vec<Option<usize>>> {
    let mut s: Vec<f64> = x.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let mut edges = vec![f64::NEG_INFINITY];
    for k in 0..19 {
        edges.push(percentile(&s, 10.0 + 5.0 * k as f64));
    }
    edges.push(f64::INFINITY);
    if edges.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::param(
            "flavor",
            "cell_ranger: the percentile bin edges of the gene means are not unique (too many genes with equal means, as scanpy/pandas also reject); use flavor seurat or filter genes first",
        ));
    }
    Ok(assign_bins(x, &edges))
}

/// `_highly_variable_genes_batched` for `seurat`/`cell_ranger`.
fn dispersion_batched(
    x: &Csr,
    names: &[String],
    p: &HvgParams,
    log_base: Option<f64>,
    batches: &[String],
) -> Result<HvgResult> {
    let mut cats: Vec<&String> = batches.iter().collect();
    cats.sort();
    cats.dedup();
    let ng = x.n_cols;
    let mut sum_means = vec![0f64; ng];
    let mut sum_norm = vec![0f64; ng];
    let mut cnt_norm = vec![0usize; ng];
    let mut nbatches = vec![0usize; ng];
    for b in &cats {
        let rows: Vec<usize> = (0..x.n_rows).filter(|&r| &batches[r] == *b).collect();
        let mut expressed = vec![false; ng];
        for &r in &rows {
            let (c, v) = x.row(r);
            for (&cc, &vv) in c.iter().zip(v) {
                if vv > 0.0 {
                    expressed[cc as usize] = true;
                }
            }
        }
        let genes: Vec<usize> = (0..ng).filter(|&j| expressed[j]).collect();
        let d = dispersion_single(x, &rows, Some(&genes), p, log_base)?;
        // genes absent from the batch contribute zeros (scanpy fills them with 0)
        let mut k = 0;
        for j in 0..ng {
            if expressed[j] {
                sum_means[j] += d.means[k];
                if !d.disp_norm[k].is_nan() {
                    sum_norm[j] += d.disp_norm[k];
                    cnt_norm[j] += 1;
                }
                nbatches[j] += d.hv[k] as usize;
                k += 1;
            } else {
                cnt_norm[j] += 1;
            }
        }
    }
    let nb = cats.len() as f64;
    let means: Vec<f64> = sum_means.iter().map(|s| s / nb).collect();
    let norm: Vec<f64> = (0..ng)
        .map(|j| {
            if cnt_norm[j] == 0 {
                f64::NAN
            } else {
                sum_norm[j] / cnt_norm[j] as f64
            }
        })
        .collect();
    Ok(HvgResult {
        highly_variable: top_by_nbatches_then_score(&nbatches, &norm, p.n_top_genes, names),
        means,
        score: norm,
        n_batches: nbatches,
        tie_dependent: vec![false; ng],
    })
}

/// Sort as scanpy's batched selection: `n_batches` desc, score desc (NaN last); ties keep the
/// alphabetical order of the gene names (pandas' groupby sorts genes by name).
fn top_by_nbatches_then_score(
    nb: &[usize],
    score: &[f64],
    n_top: usize,
    names: &[String],
) -> Vec<bool> {
    let mut order: Vec<usize> = (0..nb.len()).collect();
    order.sort_by(|&a, &b| names[a].cmp(&names[b]));
    order.sort_by(|&a, &b| {
        nb[b]
            .cmp(&nb[a])
            .then_with(|| match (score[a].is_nan(), score[b].is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ => score[b].total_cmp(&score[a]),
            })
    });
    let mut hv = vec![false; nb.len()];
    for &j in order.iter().take(n_top) {
        hv[j] = true;
    }
    hv
}

/// `_highly_variable_genes_seurat_v3`.
/// The batches' names (sorted, as numpy's `unique`) and each one's cells, in cell order.
fn batch_groups(batches: &[String]) -> (Vec<&String>, Vec<Vec<usize>>) {
    let mut cats: Vec<&String> = batches.iter().collect();
    cats.sort();
    cats.dedup();
    let groups = cats
        .iter()
        .map(|c| (0..batches.len()).filter(|&r| &batches[r] == *c).collect())
        .collect();
    (cats, groups)
}

/// The cells of each batch (sorted names), or all cells as one group without batches.
fn cell_groups(n_rows: usize, batches: Option<&[String]>) -> Vec<Vec<usize>> {
    batches.map_or_else(|| vec![(0..n_rows).collect()], |b| batch_groups(b).1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pandas_cut_semantics() {
        let x = [0.0, 1.0, 2.0, 3.0, 4.0];
        let b = cut_equal_width(&x, 4);
        assert_eq!(b, vec![Some(0), Some(0), Some(1), Some(2), Some(3)]);
    }

    #[test]
    fn numpy_percentile_linear() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert!((percentile(&s, 50.0) - 2.5).abs() < 1e-15);
        assert!((percentile(&s, 10.0) - 1.3).abs() < 1e-12);
    }
}
