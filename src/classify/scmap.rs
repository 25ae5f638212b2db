//! scmap-cluster (Kiselev et al. 2018, R package defaults) as a reference-free baseline:
//!
//! 1. `selectFeatures(n_features = 500)`: over the reference cells, per gene the dropout rate
//!    (% of zero entries) and the mean log expression; genes with 0 % or 100 % dropout are left out;
//!    a least-squares line `log2(dropout) ~ mean` is fitted and the genes with the largest residuals
//!    are kept.
//! 2. `indexCluster`: per cell type the median of each kept gene; genes whose medians are zero in
//!    every type are dropped.
//! 3. `scmapCluster(threshold = 0.7)`: each query cell's cosine, Pearson and Spearman similarity to
//!    every centroid; the type is assigned when at least two of the three measures pick it (the
//!    cosine pick first, else the Pearson one) and that measure's similarity is ≥ `threshold`;
//!    otherwise the cell is `unassigned` ([`UNASSIGNED`]), which counts as a wrong prediction.
//!
//! The scores are invariant to the log base, so log10 expression gives the same picks as scmap's
//! log2 `logcounts`.
use crate::stats::{average_ranks, median, pearson};
use serde::{Deserialize, Serialize};

/// The label of a cell scmap leaves unassigned.
pub const UNASSIGNED: &str = "unassigned";

/// scmap-cluster settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScmapConfig {
    /// Genes kept by the dropout model.
    pub n_features: usize,
    /// Minimum similarity of an assignment.
    pub threshold: f64,
}

impl Default for ScmapConfig {
    fn default() -> Self {
        ScmapConfig {
            n_features: 500,
            threshold: 0.7,
        }
    }
}

/// A fitted index: the kept genes and per-class centroids over them.
#[derive(Debug, Clone)]
pub struct ScmapIndex {
    /// Columns of the input matrix the centroids are over.
    pub features: Vec<usize>,
    /// Classes (indices into the caller's label list), ascending.
    pub classes: Vec<usize>,
    /// `centroids[c][f]`: median of feature `f` over the reference cells of `classes[c]`.
    pub centroids: Vec<Vec<f64>>,
}

/// Genes with the largest residuals of `log2(dropout %) ~ mean expression` over `rows`.
pub fn select_features(rows: &[&[f32]], n_features: usize) -> Vec<usize> {
    let n = rows.len();
    let d = rows.first().map_or(0, |r| r.len());
    let mut nonzero = vec![0usize; d];
    let mut sum = vec![0f64; d];
    for r in rows {
        for (j, &v) in r.iter().enumerate() {
            if v != 0.0 {
                nonzero[j] += 1;
                sum[j] += v as f64;
            }
        }
    }
    // genes with a dropout rate strictly between 0 and 100 %
    let genes: Vec<usize> = (0..d)
        .filter(|&j| nonzero[j] > 0 && nonzero[j] < n)
        .collect();
    if genes.is_empty() {
        return genes;
    }
    let x: Vec<f64> = genes.iter().map(|&j| sum[j] / n as f64).collect();
    let y: Vec<f64> = genes
        .iter()
        .map(|&j| (100.0 * (n - nonzero[j]) as f64 / n as f64).log2())
        .collect();
    let m = genes.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / m, y.iter().sum::<f64>() / m);
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    let sxy: f64 = x.iter().zip(&y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let icpt = my - slope * mx;
    let mut order: Vec<usize> = (0..genes.len()).collect();
    let resid: Vec<f64> = x
        .iter()
        .zip(&y)
        .map(|(a, b)| b - (icpt + slope * a))
        .collect();
    // stable sort, decreasing (R's radix sort keeps ties in gene order)
    order.sort_by(|&a, &b| resid[b].total_cmp(&resid[a]));
    let mut keep: Vec<usize> = order
        .into_iter()
        .take(n_features)
        .map(|k| genes[k])
        .collect();
    keep.sort_unstable();
    keep
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Index of the largest value (the first of equals, as R's `which.max`); NaN counts as −∞.
fn which_max(v: &[f64]) -> (usize, f64) {
    let mut best = (0, f64::NEG_INFINITY);
    for (k, &s) in v.iter().enumerate() {
        let s = if s.is_nan() { f64::NEG_INFINITY } else { s };
        if s > best.1 {
            best = (k, s);
        }
    }
    best
}

impl ScmapIndex {
    /// Selects features and builds class centroids from the reference rows `x` with labels `y`.
    pub fn fit(x: &[&[f32]], y: &[usize], c: &ScmapConfig) -> ScmapIndex {
        let mut features = select_features(x, c.n_features);
        let mut classes: Vec<usize> = y.to_vec();
        classes.sort_unstable();
        classes.dedup();
        let mut centroids: Vec<Vec<f64>> = classes
            .iter()
            .map(|&k| {
                let members: Vec<&[f32]> = x
                    .iter()
                    .zip(y)
                    .filter(|(_, &l)| l == k)
                    .map(|(r, _)| *r)
                    .collect();
                features
                    .iter()
                    .map(|&j| {
                        let mut v: Vec<f64> = members.iter().map(|r| r[j] as f64).collect();
                        median(&mut v)
                    })
                    .collect()
            })
            .collect();
        // drop genes whose median is zero in every class
        let keep: Vec<usize> = (0..features.len())
            .filter(|&f| centroids.iter().any(|c| c[f] != 0.0))
            .collect();
        features = keep.iter().map(|&f| features[f]).collect();
        for c in &mut centroids {
            *c = keep.iter().map(|&f| c[f]).collect();
        }
        ScmapIndex {
            features,
            classes,
            centroids,
        }
    }

    /// Per query row: the assigned class (an index into the caller's labels) and its similarity,
    /// or `None` when unassigned.
    pub fn predict(&self, x: &[&[f32]], c: &ScmapConfig) -> Vec<(Option<usize>, f64)> {
        let centroid_ranks: Vec<Vec<f64>> =
            self.centroids.iter().map(|v| average_ranks(v)).collect();
        x.iter()
            .map(|r| {
                let q: Vec<f64> = self.features.iter().map(|&j| r[j] as f64).collect();
                let qr = average_ranks(&q);
                let cos: Vec<f64> = self.centroids.iter().map(|m| cosine(&q, m)).collect();
                let pea: Vec<f64> = self.centroids.iter().map(|m| pearson(&q, m)).collect();
                let spe: Vec<f64> = centroid_ranks.iter().map(|m| pearson(&qr, m)).collect();
                let (lc, sc) = which_max(&cos);
                let (lp, sp) = which_max(&pea);
                let (ls, _) = which_max(&spe);
                let (label, sim) = if lc == lp || lc == ls {
                    (lc, sc)
                } else if lp == ls {
                    (lp, sp)
                } else {
                    return (None, 0.0);
                };
                if sim.is_finite() && sim >= c.threshold {
                    (Some(self.classes[label]), sim)
                } else {
                    (None, sim.max(0.0))
                }
            })
            .collect()
    }
}

impl crate::validate::Validate for ScmapConfig {
    fn validate(&self) -> crate::Result<()> {
        crate::validate::positive("scmap.n_features", self.n_features, "500")?;
        crate::validate::within("scmap.threshold", self.threshold, -1.0, 1.0, true, "0.7")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5, 1.0, 3.5, 2.0]
        );
    }

    #[test]
    fn median_even_and_odd() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn separable_types_are_assigned_and_noise_is_not() {
        // two types with disjoint marker genes (0–2 vs 3–5); gene 6 is noise
        let a: Vec<Vec<f32>> = (0..6)
            .map(|i| {
                vec![
                    2.0,
                    1.5 + i as f32 * 0.1,
                    1.0,
                    0.0,
                    0.0,
                    0.1 * (i % 2) as f32,
                    0.0,
                ]
            })
            .collect();
        let b: Vec<Vec<f32>> = (0..6)
            .map(|i| {
                vec![
                    0.0,
                    0.0,
                    0.1 * (i % 2) as f32,
                    2.0,
                    1.4 + i as f32 * 0.1,
                    1.0,
                    0.0,
                ]
            })
            .collect();
        let x: Vec<&[f32]> = a.iter().chain(&b).map(|r| r.as_slice()).collect();
        let y: Vec<usize> = (0..12).map(|i| if i < 6 { 3 } else { 7 }).collect();
        let c = ScmapConfig {
            n_features: 10,
            threshold: 0.7,
        };
        let idx = ScmapIndex::fit(&x, &y, &c);
        assert_eq!(idx.classes, vec![3, 7]);
        assert!(!idx.features.contains(&6), "an all-zero gene is no feature");
        let q1 = [1.8f32, 1.6, 0.9, 0.0, 0.0, 0.0, 0.0];
        let q2 = [0.0f32, 0.0, 0.0, 1.9, 1.5, 1.1, 0.0];
        let q3 = [0.0f32; 7];
        let p = idx.predict(&[&q1, &q2, &q3], &c);
        assert_eq!(p[0].0, Some(3));
        assert_eq!(p[1].0, Some(7));
        assert_eq!(p[2].0, None, "a cell with no expression stays unassigned");
    }
}
