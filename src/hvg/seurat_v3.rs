//! scanpy's `seurat_v3` flavor (Stuart et al. 2019): a LOESS trend of log variance on log mean
//! per batch, each gene's variance of values clipped at `mean + reg_std·√n` standardized by the
//! trend, genes ranked within batches and selected by median rank. Split into steps a streamed
//! run calls with sums accumulated chunk by chunk ([`crate::stream`]).
use rayon::prelude::*;

use super::{add_sums, batch_groups, mean_var, HvgParams, HvgResult};
use crate::error::{Error, Result};
use crate::loess;

pub(super) fn seurat_v3(
    x: &crate::csr::Csr,
    p: &HvgParams,
    batches: Option<&[String]>,
) -> Result<HvgResult> {
    let ng = x.n_cols;
    let (means_all, _) = mean_var(x, None);
    let groups: Vec<Vec<usize>> = match batches {
        None => vec![(0..x.n_rows).collect()],
        Some(b) => {
            let (cats, groups) = batch_groups(b);
            let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
            seurat_v3_check_batches(&cats, &sizes)?;
            groups
        }
    };
    let norm_vars: Vec<Vec<f64>> = groups
        .par_iter()
        .map(|rows| -> Result<Vec<f64>> {
            let (mean, var) = mean_var(x, Some(rows));
            let (reg_std, clip) = seurat_v3_trend(&mean, &var, rows.len(), p.span)?;
            let (mut s, mut sq) = (vec![0f64; ng], vec![0f64; ng]);
            add_sums(x, rows.iter().copied(), &mut s, &mut sq, Some(&clip));
            Ok(seurat_v3_norm_var(&mean, &reg_std, &s, &sq, rows.len()))
        })
        .collect::<Result<_>>()?;
    Ok(seurat_v3_select(&norm_vars, p.n_top_genes, means_all))
}

/// Refuses a batch (`cats`, with `sizes` cells each) too small for `seurat_v3`'s trend.
pub fn seurat_v3_check_batches(cats: &[&String], sizes: &[usize]) -> Result<()> {
    match cats.iter().zip(sizes).find(|(_, &n)| n < 2) {
        Some((c, n)) => Err(Error::param(
            "batch_key",
            format!(
                "batch `{c}` has {n} cell(s) after QC; seurat_v3 fits each batch's mean-variance trend and needs at least 2 cells per batch (use another batch key, merge or drop that batch, or leave batch_key unset)"
            ),
        )),
        None => Ok(()),
    }
}

/// `seurat_v3`'s trend of one batch of `n` cells: the LOESS-regularized standard deviation of each
/// gene and the bound its values are clipped to (`reg_std · √n + mean`).
pub fn seurat_v3_trend(
    mean: &[f64],
    var: &[f64],
    n: usize,
    span: f64,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let ng = mean.len();
    let nc: Vec<usize> = (0..ng).filter(|&j| var[j] > 0.0).collect();
    let xs: Vec<f64> = nc.iter().map(|&j| mean[j].log10()).collect();
    let ys: Vec<f64> = nc.iter().map(|&j| var[j].log10()).collect();
    let fitted = loess::fit(&xs, &ys, span, 2)
        .map_err(|e| Error::param("flavor", format!("seurat_v3 LOESS fit failed: {e}")))?;
    let mut est = vec![0f64; ng];
    for (k, &j) in nc.iter().enumerate() {
        est[j] = fitted[k];
    }
    let reg_std: Vec<f64> = est.iter().map(|e| 10f64.powf(*e).sqrt()).collect();
    let vmax = (n as f64).sqrt();
    let clip: Vec<f64> = (0..ng).map(|j| reg_std[j] * vmax + mean[j]).collect();
    Ok((reg_std, clip))
}

/// `seurat_v3`'s normalized variance of each gene from the clipped sums `s`, `sq` of `n` cells.
pub fn seurat_v3_norm_var(
    mean: &[f64],
    reg_std: &[f64],
    s: &[f64],
    sq: &[f64],
    n: usize,
) -> Vec<f64> {
    let n = n as f64;
    (0..mean.len())
        .map(|j| {
            (1.0 / ((n - 1.0) * reg_std[j].powi(2)))
                * ((n * mean[j].powi(2)) + sq[j] - 2.0 * s[j] * mean[j])
        })
        .collect()
}

/// `seurat_v3`'s selection from the per-batch normalized variances: the `n_top` genes by median
/// rank within the batches' top `n_top`, then by number of such batches.
pub fn seurat_v3_select(norm_vars: &[Vec<f64>], n_top: usize, means_all: Vec<f64>) -> HvgResult {
    let ng = means_all.len();
    let nbat = norm_vars.len();
    // ranks are per batch; a gene tied at rank k < n_top could take any rank of its tie group
    // per batch: rank = position in descending order of normalized variance
    let mut tie_dependent = vec![false; ng];
    let ranks: Vec<Vec<usize>> = norm_vars
        .iter()
        .map(|v| {
            let mut order: Vec<usize> = (0..ng).collect();
            order.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
            let mut rank = vec![0usize; ng];
            for (k, &j) in order.iter().enumerate() {
                rank[j] = k;
            }
            // a tie group starting inside the top n could be ordered any way by numpy
            let mut start = 0;
            while start < ng {
                let mut end = start + 1;
                while end < ng && v[order[end]] == v[order[start]] {
                    end += 1;
                }
                if end - start > 1 && start < n_top {
                    order[start..end]
                        .iter()
                        .for_each(|&j| tie_dependent[j] = true);
                }
                start = end;
            }
            rank
        })
        .collect();
    let mut nbatches = vec![0usize; ng];
    let mut median_rank = vec![f64::NAN; ng];
    for j in 0..ng {
        let mut r: Vec<f64> = ranks
            .iter()
            .map(|rk| rk[j])
            .filter(|&k| k < n_top)
            .map(|k| k as f64)
            .collect();
        nbatches[j] = r.len();
        if !r.is_empty() {
            r.sort_by(|a, b| a.total_cmp(b));
            let m = r.len();
            median_rank[j] = if m % 2 == 1 {
                r[m / 2]
            } else {
                (r[m / 2 - 1] + r[m / 2]) / 2.0
            };
        }
    }
    let score: Vec<f64> = (0..ng)
        .map(|j| norm_vars.iter().map(|v| v[j]).sum::<f64>() / nbat as f64)
        .collect();
    let mut order: Vec<usize> = (0..ng).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (median_rank[a], median_rank[b]);
        match (ra.is_nan(), rb.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => ra.total_cmp(&rb).then(nbatches[b].cmp(&nbatches[a])),
        }
    });
    let mut hv = vec![false; ng];
    for &j in order.iter().take(n_top.min(ng)) {
        hv[j] = true;
    }
    HvgResult {
        highly_variable: hv,
        means: means_all,
        score,
        n_batches: nbatches,
        tie_dependent,
    }
}
