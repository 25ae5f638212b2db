//! Expression reconstruction from rank: how much of a cell's normalized expression a cell
//! sentence keeps. Two models, both ordinary least squares fitted with `linfa-linear`:
//!
//! - [`RecModel::C2s`], Cell2Sentence's `benchmark_expression_conversion`: one global line
//!   `y = a·log10(1 + rank) + b` fitted on the entries with `log10(1 + rank) < 3`, used for all.
//! - [`RecModel::PerGene`], the paper's equation (1): one line per gene over every cell where it is
//!   expressed (no rank threshold: it would extrapolate a few top-ranked cells' line to the gene's
//!   low-ranked ones); genes with fewer than three entries, or one rank only, use the global line.
//!
//! Ranks follow the cell sentence (rank 0 = highest expression, ties in Cell2Sentence's seeded
//! order); only non-zero entries are scored. Metrics: R² (scikit-learn `r2_score`), Pearson and
//! Spearman (average ranks for ties) between the true and the reconstructed values.
use linfa::prelude::*;
use linfa_linear::LinearRegression;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::csr::Csr;
use crate::error::{Error, Result};
use crate::sentence;
pub use crate::stats::{average_ranks, pearson};

/// Reconstruction model.
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
#[strum(serialize_all = "kebab-case")]
#[serde(rename_all = "kebab-case")]
pub enum RecModel {
    /// Cell2Sentence's global log-rank line.
    C2s,
    /// One line per gene (the paper's equation 1).
    #[strum(to_string = "per-gene", serialize = "per_gene")]
    PerGene,
}

/// The entries of the sampled cells: log-rank, value and gene of each non-zero entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RankedEntries {
    /// `log10(1 + rank)`.
    pub x: Vec<f64>,
    /// Normalized expression.
    pub y: Vec<f64>,
    /// Column (gene) of the entry.
    pub gene: Vec<u32>,
    /// Number of cells.
    pub n_cells: usize,
}

/// Metrics and fitted values of one reconstruction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecResult {
    /// Coefficient of determination.
    pub r2: f64,
    /// Pearson correlation.
    pub pearson: f64,
    /// Spearman correlation.
    pub spearman: f64,
    /// Cells scored.
    pub n_cells: usize,
    /// Non-zero entries scored.
    pub n_entries: usize,
    /// Global slope.
    pub slope: f64,
    /// Global intercept.
    pub intercept: f64,
    /// Reconstructed values, aligned with the entries.
    #[serde(skip)]
    pub predicted: Vec<f64>,
}

/// Fewest entries a gene needs for its own line ([`RecModel::PerGene`]); fewer use the global line.
pub const MIN_GENE_POINTS: usize = 3;

/// Cell2Sentence's threshold on `log10(1 + rank)` for the fit.
pub const BASE10_THRESHOLD: f64 = 3.0;

/// `k` distinct cells out of `n`, seeded (ChaCha8), sorted; all cells when `k >= n`.
pub fn sample_cells(n: usize, k: usize, seed: u64) -> Vec<usize> {
    if k >= n {
        return (0..n).collect();
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut idx = rand::seq::index::sample(&mut rng, n, k).into_vec();
    idx.sort_unstable();
    idx
}

/// Ranks the non-zero genes of `cells` (a fresh tie-shuffle stream seeded `tie_seed`, over the
/// cells in the given order) and returns their entries.
pub fn rank_entries(x: &Csr, cells: &[usize], tie_seed: u32) -> RankedEntries {
    let sub = x.select(cells, None);
    let mut out = RankedEntries {
        n_cells: cells.len(),
        ..Default::default()
    };
    sentence::for_each_ranked(&sub, tie_seed, |r, ranked| {
        let (c, v) = sub.row(r);
        for (rank, &g) in ranked.iter().enumerate() {
            // rows keep sorted columns, so the value is found by binary search
            let k = c
                .binary_search(&g)
                .expect("ranked gene is a stored entry of its row");
            out.x.push(((1 + rank) as f64).log10());
            out.y.push(v[k] as f64);
            out.gene.push(g);
        }
    });
    out
}

/// Fits `y = a·x + b` with linfa-linear; returns (a, b).
pub fn fit_line(x: &[f64], y: &[f64]) -> Result<(f64, f64)> {
    if x.len() < 2 {
        return Err(Error::param(
            "cells",
            format!("a line needs at least 2 points, got {}", x.len()),
        ));
    }
    let records = ndarray16::Array2::from_shape_vec((x.len(), 1), x.to_vec())
        .map_err(|e| Error::param("x", e.to_string()))?;
    let targets = ndarray16::Array1::from_vec(y.to_vec());
    let ds = linfa::Dataset::new(records, targets);
    let fit = LinearRegression::new()
        .fit(&ds)
        .map_err(|e| Error::param("fit", format!("linear regression failed: {e}")))?;
    Ok((fit.params()[0], fit.intercept()))
}

/// Fits the model on `e` and scores it.
pub fn fit_predict(e: &RankedEntries, model: RecModel, threshold: f64) -> Result<RecResult> {
    let (xs, ys): (Vec<f64>, Vec<f64>) =
        e.x.iter()
            .zip(&e.y)
            .filter(|(x, _)| **x < threshold)
            .map(|(x, y)| (*x, *y))
            .unzip();
    let (a, b) = fit_line(&xs, &ys)?;
    let predicted: Vec<f64> = match model {
        RecModel::C2s => e.x.iter().map(|x| a * x + b).collect(),
        RecModel::PerGene => {
            let n_genes = e.gene.iter().copied().max().map_or(0, |g| g as usize + 1);
            let mut by_gene: Vec<Vec<usize>> = vec![Vec::new(); n_genes];
            for (k, &g) in e.gene.iter().enumerate() {
                by_gene[g as usize].push(k);
            }
            let mut coef = vec![(a, b); n_genes];
            for (g, ks) in by_gene.iter().enumerate() {
                let (gx, gy): (Vec<f64>, Vec<f64>) = ks.iter().map(|&k| (e.x[k], e.y[k])).unzip();
                let varies = gx.iter().any(|&v| v != gx[0]);
                if gx.len() >= MIN_GENE_POINTS && varies {
                    coef[g] = fit_line(&gx, &gy)?;
                }
            }
            e.x.iter()
                .zip(&e.gene)
                .map(|(x, &g)| coef[g as usize].0 * x + coef[g as usize].1)
                .collect()
        }
    };
    let (r2, pearson, spearman) = metrics(&e.y, &predicted);
    Ok(RecResult {
        r2,
        pearson,
        spearman,
        n_cells: e.n_cells,
        n_entries: e.y.len(),
        slope: a,
        intercept: b,
        predicted,
    })
}

/// R² (scikit-learn `r2_score`), Pearson and Spearman between `y` and `pred`.
pub fn metrics(y: &[f64], pred: &[f64]) -> (f64, f64, f64) {
    let n = y.len() as f64;
    let my = y.iter().sum::<f64>() / n;
    let ss_tot: f64 = y.iter().map(|v| (v - my).powi(2)).sum();
    let ss_res: f64 = y.iter().zip(pred).map(|(a, b)| (a - b).powi(2)).sum();
    let r2 = if ss_tot == 0.0 {
        f64::NAN
    } else {
        1.0 - ss_res / ss_tot
    };
    (
        r2,
        pearson(y, pred),
        pearson(&average_ranks(y), &average_ranks(pred)),
    )
}

/// Samples cells, ranks them and fits: the whole reconstruction stage.
pub fn reconstruct(x: &Csr, cells: &[usize], model: RecModel, tie_seed: u32) -> Result<RecResult> {
    if cells.is_empty() {
        return Err(Error::param("cells", "no cells to reconstruct"));
    }
    let e = rank_entries(x, cells, tie_seed);
    fit_predict(&e, model, BASE10_THRESHOLD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_ranks_like_scipy() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5, 1.0, 3.5, 2.0]
        );
    }

    #[test]
    fn exact_line_is_recovered() {
        let x: Vec<f64> = (0..50).map(|i| i as f64 / 20.0).collect();
        let y: Vec<f64> = x.iter().map(|v| 2.0 - 0.5 * v).collect();
        let (a, b) = fit_line(&x, &y).unwrap();
        assert!((a + 0.5).abs() < 1e-12 && (b - 2.0).abs() < 1e-12);
        let (r2, p, s) = metrics(&y, &y);
        assert!((r2 - 1.0).abs() < 1e-12 && (p - 1.0).abs() < 1e-12 && (s - 1.0).abs() < 1e-12);
    }

    #[test]
    fn sampling_is_seeded_and_sorted() {
        let a = sample_cells(1000, 10, 7);
        assert_eq!(a, sample_cells(1000, 10, 7));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sample_cells(5, 10, 7), vec![0, 1, 2, 3, 4]);
    }
}
