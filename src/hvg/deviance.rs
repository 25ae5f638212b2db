//! Binomial deviance feature selection (Townes et al. 2019; scry's `devianceFeatureSelection`
//! with `fam = "binomial"`): each gene's deviance from a model in which every cell draws its
//! counts from one gene-proportion shared by all cells, on raw counts. With batches, the deviance
//! is summed over batches (each batch its own null model), as scry does.
use super::{HvgParams, HvgResult};
use crate::csr::Csr;

/// Binomial deviance of every gene over `rows` (cells) of the counts `x`:
/// `2 Σ_i [x log(x / (n_i p)) + (n_i − x) log((n_i − x) / (n_i (1 − p)))]`, `n_i` the cell's total
/// count, `p` the gene's share of all counts, `0 log 0 = 0`. A gene without counts in `rows` has
/// deviance 0.
pub fn binomial_deviance(x: &Csr, rows: &[usize]) -> Vec<f64> {
    let mut sat = vec![0f64; x.n_cols];
    let mut sums = vec![0f64; x.n_cols];
    let mut total = 0f64;
    for &r in rows {
        let (cols, vals) = x.row(r);
        let n: f64 = vals.iter().map(|&v| v as f64).sum();
        total += n;
        for (&c, &v) in cols.iter().zip(vals) {
            let v = v as f64;
            if v <= 0.0 {
                continue;
            }
            // saturated log-likelihood: x log(x/n) + (n − x) log(1 − x/n)
            let rest = if v < n {
                (n - v) * (-v / n).ln_1p()
            } else {
                0.0
            };
            sat[c as usize] += v * (v / n).ln() + rest;
            sums[c as usize] += v;
        }
    }
    sums.iter()
        .zip(&sat)
        .map(|(&s, &ll_sat)| {
            if s <= 0.0 {
                return 0.0;
            }
            // null log-likelihood: Σ_i x log p + (n_i − x) log(1 − p)
            let p = s / total;
            let ll_null = s * p.ln() + (total - s) * (-p).ln_1p();
            2.0 * (ll_sat - ll_null)
        })
        .collect()
}

/// The `n_top_genes` genes of highest deviance (summed over batches), ties by gene order.
pub fn deviance(x: &Csr, p: &HvgParams, batches: Option<&[String]>) -> HvgResult {
    let groups = super::cell_groups(x.n_rows, batches);
    let mut score = vec![0f64; x.n_cols];
    for g in &groups {
        for (s, d) in score.iter_mut().zip(binomial_deviance(x, g)) {
            *s += d;
        }
    }
    let mut order: Vec<usize> = (0..x.n_cols).collect();
    order.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
    let mut highly_variable = vec![false; x.n_cols];
    for &j in order.iter().take(p.n_top_genes) {
        highly_variable[j] = true;
    }
    let all: Vec<usize> = (0..x.n_rows).collect();
    let (means, _) = super::mean_var(x, Some(&all));
    HvgResult {
        n_batches: highly_variable.iter().map(|&h| h as usize).collect(),
        tie_dependent: vec![false; x.n_cols],
        highly_variable,
        means,
        score,
    }
}
