//! scanpy's dispersion flavors `seurat` and `cell_ranger` (`_highly_variable_genes_single_batch`
//! and `_highly_variable_genes_batched`): per-gene mean and dispersion of the data (`seurat`: of
//! `expm1` of the log data), normalized within bins of the means. The per-gene sums are
//! [`DispSums`], added in row order, so a streamed run ([`crate::stream`]) that adds them chunk by
//! chunk selects the same genes.
use std::collections::BTreeMap;

use super::{cell_groups, Flavor, HvgParams, HvgResult};
use crate::csr::Csr;
use crate::error::{Error, Result};
use crate::stats::median_skipna;

/// The per-gene sums `seurat`/`cell_ranger` select from, over the cells of one batch (or all).
#[derive(Debug, Clone)]
pub struct DispSums {
    s: Vec<f64>,
    sq: Vec<f64>,
    /// Genes with a positive value in some cell (a batch keeps only these, as scanpy).
    expressed: Vec<bool>,
    n: usize,
}

impl DispSums {
    /// Empty sums over `n_genes` genes.
    pub fn new(n_genes: usize) -> Self {
        DispSums {
            s: vec![0.0; n_genes],
            sq: vec![0.0; n_genes],
            expressed: vec![false; n_genes],
            n: 0,
        }
    }

    /// Adds the rows `rows` of `x` (log data in base `log_base`, `None` = e): `seurat` sums
    /// `expm1` of the values, `cell_ranger` the values (f64 sums, squares in f32, as scanpy).
    pub fn add(
        &mut self,
        x: &Csr,
        rows: impl Iterator<Item = usize>,
        flavor: Flavor,
        log_base: Option<f64>,
    ) {
        let ln_base = log_base.map(f64::ln);
        let seurat = flavor == Flavor::Seurat;
        for r in rows {
            self.n += 1;
            let (c, v) = x.row(r);
            for (&cc, &vv) in c.iter().zip(v) {
                let j = cc as usize;
                let val = if seurat {
                    let y = match ln_base {
                        Some(lb) => (vv as f64 * lb) as f32,
                        None => vv,
                    };
                    y.exp_m1()
                } else {
                    vv
                };
                self.s[j] += val as f64;
                self.sq[j] += (val * val) as f64;
                if vv > 0.0 {
                    self.expressed[j] = true;
                }
            }
        }
    }

    /// The sums of the genes `genes` only.
    fn restrict(&self, genes: &[usize]) -> (Vec<f64>, Vec<f64>) {
        (
            genes.iter().map(|&j| self.s[j]).collect(),
            genes.iter().map(|&j| self.sq[j]).collect(),
        )
    }
}

/// `seurat`/`cell_ranger` on `x` (log data in base `log_base`), per batch when `batches` holds
/// one label per cell.
pub(super) fn dispersion(
    x: &Csr,
    names: &[String],
    p: &HvgParams,
    log_base: Option<f64>,
    batches: Option<&[String]>,
) -> Result<HvgResult> {
    let sums: Vec<DispSums> = cell_groups(x.n_rows, batches)
        .iter()
        .map(|rows| {
            let mut d = DispSums::new(x.n_cols);
            d.add(x, rows.iter().copied(), p.flavor, log_base);
            d
        })
        .collect();
    dispersion_select(&sums, names, p, batches.is_some())
}

/// The selection from the sums of all cells (`batched` false: one group) or of each batch, in
/// the batches' sorted order.
pub fn dispersion_select(
    groups: &[DispSums],
    names: &[String],
    p: &HvgParams,
    batched: bool,
) -> Result<HvgResult> {
    if !batched {
        let g = &groups[0];
        let d = dispersion_stats(&g.s, &g.sq, g.n, p)?;
        return Ok(HvgResult {
            n_batches: d.hv.iter().map(|&h| h as usize).collect(),
            tie_dependent: vec![false; d.hv.len()],
            highly_variable: d.hv,
            means: d.means,
            score: d.disp_norm,
        });
    }
    let ng = names.len();
    let mut sum_means = vec![0f64; ng];
    let mut sum_norm = vec![0f64; ng];
    let mut cnt_norm = vec![0usize; ng];
    let mut nbatches = vec![0usize; ng];
    for g in groups {
        let genes: Vec<usize> = (0..ng).filter(|&j| g.expressed[j]).collect();
        let (s, sq) = g.restrict(&genes);
        let d = dispersion_stats(&s, &sq, g.n, p)?;
        // genes absent from the batch contribute zeros (scanpy fills them with 0)
        let mut k = 0;
        for j in 0..ng {
            if g.expressed[j] {
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
    let nb = groups.len() as f64;
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

struct DispResult {
    means: Vec<f64>,
    disp_norm: Vec<f64>,
    hv: Vec<bool>,
}

/// Means, normalized dispersions and selection from the sums `s`, `sq` of `n_rows` cells.
fn dispersion_stats(s: &[f64], sq: &[f64], n_rows: usize, p: &HvgParams) -> Result<DispResult> {
    let ng = s.len();
    let n = n_rows as f64;
    let seurat = p.flavor == Flavor::Seurat;
    let mut means = vec![0f64; ng];
    let mut disp = vec![0f64; ng];
    for j in 0..ng {
        let mut m = s[j] / n;
        let mut var = sq[j] / n - m * m;
        if n_rows != 1 {
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
