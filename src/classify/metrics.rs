//! Accuracy, macro-F1 and per-class F1 with scikit-learn's semantics: macro over the sorted union of
//! labels present in truth or prediction; a label never predicted (or never true) has F1 = 0.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Per-class counts and F1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    pub label: String,
    /// Cells of this class in the truth.
    pub support: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Fraction of equal entries.
pub fn accuracy(truth: &[String], pred: &[String]) -> f64 {
    assert_eq!(
        truth.len(),
        pred.len(),
        "truth and prediction lengths differ"
    );
    if truth.is_empty() {
        return f64::NAN;
    }
    truth.iter().zip(pred).filter(|(a, b)| a == b).count() as f64 / truth.len() as f64
}

/// Per-class scores over the sorted union of labels in `truth` and `pred` (sklearn's
/// `precision_recall_fscore_support(average=None)` with zero_division = 0).
pub fn per_class(truth: &[String], pred: &[String]) -> Vec<ClassScore> {
    assert_eq!(
        truth.len(),
        pred.len(),
        "truth and prediction lengths differ"
    );
    // label -> (tp, true count, predicted count)
    let mut c: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for (t, p) in truth.iter().zip(pred) {
        c.entry(t).or_default().1 += 1;
        c.entry(p).or_default().2 += 1;
        if t == p {
            c.entry(t).or_default().0 += 1;
        }
    }
    c.into_iter()
        .map(|(label, (tp, nt, np))| {
            let div = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
            let precision = div(tp, np);
            let recall = div(tp, nt);
            let f1 = div(2 * tp, nt + np);
            ClassScore {
                label: label.to_string(),
                support: nt,
                precision,
                recall,
                f1,
            }
        })
        .collect()
}

/// Unweighted mean F1 over the union of labels (sklearn `f1_score(average="macro")`).
pub fn macro_f1(truth: &[String], pred: &[String]) -> f64 {
    let s = per_class(truth, pred);
    if s.is_empty() {
        return f64::NAN;
    }
    s.iter().map(|c| c.f1).sum::<f64>() / s.len() as f64
}

/// Confusion counts `[truth][pred]` over `labels` (rows and columns in that order).
pub fn confusion(truth: &[String], pred: &[String], labels: &[String]) -> Vec<Vec<usize>> {
    let idx: BTreeMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let mut m = vec![vec![0usize; labels.len()]; labels.len()];
    for (t, p) in truth.iter().zip(pred) {
        if let (Some(&i), Some(&j)) = (idx.get(t.as_str()), idx.get(p.as_str())) {
            m[i][j] += 1;
        }
    }
    m
}

/// Mean and sample standard deviation (ddof = 1; 0 for a single value).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (m, 0.0);
    }
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, var.sqrt())
}

/// Share of the embedding's total variance that lies between the labels' centroids (η², the
/// R² of a one-way ANOVA pooled over dimensions): 1 when cells of a type coincide, 0 when the
/// types share one centroid.
pub fn label_variance_share(x: &crate::npy::Matrix, labels: &[String]) -> f64 {
    assert_eq!(x.rows, labels.len(), "one label per row");
    let d = x.cols;
    let mut groups: BTreeMap<&str, (usize, Vec<f64>)> = BTreeMap::new();
    let mut mean = vec![0f64; d];
    for (i, l) in labels.iter().enumerate() {
        let g = groups
            .entry(l.as_str())
            .or_insert_with(|| (0, vec![0.0; d]));
        g.0 += 1;
        for (j, &v) in x.row(i).iter().enumerate() {
            g.1[j] += f64::from(v);
            mean[j] += f64::from(v);
        }
    }
    let n = x.rows as f64;
    mean.iter_mut().for_each(|m| *m /= n);
    let total: f64 = (0..x.rows)
        .map(|i| {
            x.row(i)
                .iter()
                .zip(&mean)
                .map(|(&v, m)| (f64::from(v) - m).powi(2))
                .sum::<f64>()
        })
        .sum();
    let between: f64 = groups
        .values()
        .map(|(k, s)| {
            let k = *k as f64;
            s.iter()
                .zip(&mean)
                .map(|(s, m)| k * (s / k - m).powi(2))
                .sum::<f64>()
        })
        .sum();
    if total > 0.0 {
        between / total
    } else {
        f64::NAN
    }
}

/// Mean cosine similarity over all ordered pairs of distinct rows (anisotropy: near 1 when every
/// cell's vector points the same way).
pub fn mean_cosine(x: &crate::npy::Matrix) -> f64 {
    let n = x.rows;
    if n < 2 {
        return f64::NAN;
    }
    let mut sum = vec![0f64; x.cols];
    for i in 0..n {
        let r = x.row(i);
        let norm = r.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
        if norm > 0.0 {
            for (s, &v) in sum.iter_mut().zip(r) {
                *s += f64::from(v) / norm;
            }
        }
    }
    // |Σ u_i|² = n (the i = j terms, for unit rows) + Σ_{i≠j} cos(i, j)
    let sq: f64 = sum.iter().map(|s| s * s).sum();
    (sq - n as f64) / (n as f64 * (n as f64 - 1.0))
}

#[cfg(test)]
mod quality_tests {
    use super::*;
    use crate::npy::Matrix;

    #[test]
    fn variance_share_and_cosine_on_small_cases() {
        let x = Matrix {
            rows: 4,
            cols: 2,
            data: vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0],
        };
        let l: Vec<String> = ["a", "a", "b", "b"].iter().map(|s| s.to_string()).collect();
        assert!((label_variance_share(&x, &l) - 1.0).abs() < 1e-12);
        let mixed: Vec<String> = ["a", "b", "a", "b"].iter().map(|s| s.to_string()).collect();
        assert!(label_variance_share(&x, &mixed).abs() < 1e-12);
        // pairs: (0,1)=1, (2,3)=1, the four cross pairs 0 → 2·2 / 12
        assert!((mean_cosine(&x) - 4.0 / 12.0).abs() < 1e-12);
    }
}
