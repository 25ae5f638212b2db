//! Pearson-residual HVG selection on raw counts (Lause, Berens & Kobak 2021), as scanpy's
//! `experimental.pp.highly_variable_genes(flavor="pearson_residuals")` computes it with its
//! defaults (`theta = 100`, residuals clipped to ±√n): the analytic residuals of a negative
//! binomial null model `μ_ij = n_i p_j`, their per-gene variance, per batch; genes are ranked by
//! the number of batches that select them, then by their median rank over those batches.
use rayon::prelude::*;

use super::{HvgParams, HvgResult};
use crate::csr::Csr;
use crate::stats::median_skipna;

/// scanpy's default overdispersion of the null model.
pub const THETA: f64 = 100.0;

/// Variance (ddof 0) over `rows` of each gene's Pearson residuals
/// `(x − μ) / √(μ + μ²/θ)`, `μ = n_i p_j`, clipped to `±clip`; a gene without counts in `rows`
/// gets 0 (scanpy leaves it out of the batch).
pub fn residual_variances(x: &Csr, rows: &[usize], theta: f64, clip: f64) -> Vec<f64> {
    let mut gene_sums = vec![0f64; x.n_cols];
    let mut cell_sums = Vec::with_capacity(rows.len());
    // each gene's non-zero entries: (position of the cell in `rows`, count)
    let mut entries: Vec<Vec<(u32, f64)>> = vec![Vec::new(); x.n_cols];
    for (k, &r) in rows.iter().enumerate() {
        let (cols, vals) = x.row(r);
        cell_sums.push(vals.iter().map(|&v| v as f64).sum::<f64>());
        for (&c, &v) in cols.iter().zip(vals) {
            gene_sums[c as usize] += v as f64;
            entries[c as usize].push((k as u32, v as f64));
        }
    }
    let total: f64 = cell_sums.iter().sum();
    let n = rows.len() as f64;
    let residual = |x: f64, mu: f64| ((x - mu) / (mu + mu * mu / theta).sqrt()).clamp(-clip, clip);
    (0..x.n_cols)
        .into_par_iter()
        .map(|j| {
            if gene_sums[j] <= 0.0 {
                return 0.0;
            }
            let p = gene_sums[j] / total;
            let mut counts = entries[j].iter().peekable();
            let (mut s, mut sq) = (0f64, 0f64);
            for (k, &nk) in cell_sums.iter().enumerate() {
                let x = match counts.peek() {
                    Some(&&(i, v)) if i as usize == k => {
                        counts.next();
                        v
                    }
                    _ => 0.0,
                };
                let r = residual(x, nk * p);
                s += r;
                sq += r * r;
            }
            let mean = s / n;
            (sq / n - mean * mean).max(0.0)
        })
        .collect()
}

/// The selection: per batch (sorted batch names) the residual variances and each gene's rank;
/// genes ordered by the number of batches whose top `n_top_genes` hold them, then by their median
/// rank there (ties by gene order). As scanpy does, the clip is √n of the first batch.
pub fn pearson_residuals(x: &Csr, p: &HvgParams, batches: Option<&[String]>) -> HvgResult {
    let groups = super::cell_groups(x.n_rows, batches);
    let clip = (groups[0].len() as f64).sqrt();
    let k = p.n_top_genes;
    let mut n_batches = vec![0usize; x.n_cols];
    let mut ranks: Vec<Vec<f64>> = vec![Vec::new(); x.n_cols];
    let mut score = vec![0f64; x.n_cols];
    for g in &groups {
        let var = residual_variances(x, g, THETA, clip);
        let mut order: Vec<usize> = (0..x.n_cols).collect();
        order.sort_by(|&a, &b| var[b].total_cmp(&var[a]));
        for (rank, &j) in order.iter().enumerate().take(k) {
            n_batches[j] += 1;
            ranks[j].push(rank as f64);
        }
        for (s, v) in score.iter_mut().zip(&var) {
            *s += v / groups.len() as f64;
        }
    }
    let median_rank: Vec<f64> = ranks.iter().map(|r| median_skipna(r)).collect();
    let mut order: Vec<usize> = (0..x.n_cols).collect();
    order.sort_by(|&a, &b| {
        n_batches[b].cmp(&n_batches[a]).then_with(|| {
            match (median_rank[a].is_nan(), median_rank[b].is_nan()) {
                (false, false) => median_rank[a].total_cmp(&median_rank[b]),
                (nan_a, nan_b) => nan_a.cmp(&nan_b),
            }
        })
    });
    let mut highly_variable = vec![false; x.n_cols];
    for &j in order.iter().take(k) {
        highly_variable[j] = true;
    }
    let all: Vec<usize> = (0..x.n_rows).collect();
    let (means, _) = super::mean_var(x, Some(&all));
    HvgResult {
        highly_variable,
        means,
        score,
        n_batches,
        tie_dependent: vec![false; x.n_cols],
    }
}
