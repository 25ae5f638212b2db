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
