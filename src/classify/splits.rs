//! Seeded, deterministic splits: stratified k-fold (intra-dataset), leave-one-batch-out
//! (inter-dataset), and a stratified validation carve-out of each training part.
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One train/validation/test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fold {
    /// Fold name: `fold1`.. for k-fold, the held-out batch for leave-one-batch-out.
    pub name: String,
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
    /// Test labels that never occur in train + val (they can only be missed).
    pub unseen_labels: Vec<String>,
}

fn by_class(labels: &[String], idx: &[usize]) -> BTreeMap<String, Vec<usize>> {
    let mut m: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for &i in idx {
        m.entry(labels[i].clone()).or_default().push(i);
    }
    m
}

/// Splits `idx` into (rest, validation) with `fraction` of each class in validation (rounded; a
/// class of one cell stays in training), shuffled with `seed`.
pub fn carve_validation(
    labels: &[String],
    idx: &[usize],
    fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_f7a1);
    let (mut rest, mut val) = (Vec::new(), Vec::new());
    for (_, mut members) in by_class(labels, idx) {
        members.shuffle(&mut rng);
        let k = if members.len() < 2 {
            0
        } else {
            ((members.len() as f64 * fraction).round() as usize).min(members.len() - 1)
        };
        val.extend_from_slice(&members[..k]);
        rest.extend_from_slice(&members[k..]);
    }
    rest.sort_unstable();
    val.sort_unstable();
    (rest, val)
}

fn unseen(labels: &[String], train: &[usize], val: &[usize], test: &[usize]) -> Vec<String> {
    let seen: BTreeSet<&str> = train
        .iter()
        .chain(val)
        .map(|&i| labels[i].as_str())
        .collect();
    let t: BTreeSet<&str> = test.iter().map(|&i| labels[i].as_str()).collect();
    t.difference(&seen).map(|s| s.to_string()).collect()
}

fn check_labels(labels: &[String]) -> Result<()> {
    let distinct: BTreeSet<&str> = labels.iter().map(String::as_str).collect();
    if distinct.len() < 2 {
        return Err(Error::param(
            "labels",
            format!(
                "{} distinct label(s); classification needs at least 2 cell types",
                distinct.len()
            ),
        ));
    }
    Ok(())
}

/// Stratified k-fold: each class's cells are shuffled and dealt round-robin to the folds (the
/// dealing continues across classes), so every fold holds within one cell of its ideal share of
/// each class; `val_fraction` of each training part (stratified) is held out for early stopping.
pub fn stratified_kfold(
    labels: &[String],
    k: usize,
    val_fraction: f64,
    seed: u64,
) -> Result<Vec<Fold>> {
    check_labels(labels)?;
    if k < 2 || k > labels.len() {
        return Err(Error::param(
            "folds",
            format!(
                "{k} folds for {} cells; need 2 ≤ folds ≤ cells",
                labels.len()
            ),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut fold_of = vec![0usize; labels.len()];
    let mut next = 0usize;
    let all: Vec<usize> = (0..labels.len()).collect();
    for (_, mut members) in by_class(labels, &all) {
        members.shuffle(&mut rng);
        for i in members {
            fold_of[i] = next % k;
            next += 1;
        }
    }
    Ok((0..k)
        .map(|f| {
            let test: Vec<usize> = all.iter().copied().filter(|&i| fold_of[i] == f).collect();
            let rest: Vec<usize> = all.iter().copied().filter(|&i| fold_of[i] != f).collect();
            let (train, val) =
                carve_validation(labels, &rest, val_fraction, seed.wrapping_add(f as u64));
            let unseen_labels = unseen(labels, &train, &val, &test);
            Fold {
                name: format!("fold{}", f + 1),
                train,
                val,
                test,
                unseen_labels,
            }
        })
        .collect())
}

/// What a split hides from its numbers, as scikit-learn warns it: classes with fewer cells than
/// the `k` folds of a stratified split (some test folds lack them, and their F1 rests on a few
/// cells), and per fold the test classes that training never saw (their cells can only be missed).
pub fn split_warnings(labels: &[String], folds: &[Fold], k: Option<usize>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(k) = k {
        let all: Vec<usize> = (0..labels.len()).collect();
        let small: Vec<String> = by_class(labels, &all)
            .into_iter()
            .filter(|(_, m)| m.len() < k)
            .map(|(c, m)| format!("{c} ({})", m.len()))
            .collect();
        if !small.is_empty() {
            out.push(format!(
                "{} class(es) have fewer cells than the {k} folds: {}; some test folds lack them and their F1 rests on those cells (scikit-learn warns the same)",
                small.len(),
                small.join(", ")
            ));
        }
    }
    for f in folds.iter().filter(|f| !f.unseen_labels.is_empty()) {
        out.push(format!(
            "{}: test class(es) never seen in training: {}; their cells can only be missed (reported in `unseen_test_labels`)",
            f.name,
            f.unseen_labels.join(", ")
        ));
    }
    out
}

/// Leave-one-batch-out: each batch (sorted by name) is the test set once, all others train.
pub fn leave_one_batch_out(
    labels: &[String],
    batches: &[String],
    val_fraction: f64,
    seed: u64,
) -> Result<Vec<Fold>> {
    check_labels(labels)?;
    if labels.len() != batches.len() {
        return Err(Error::param("batches", "one batch per cell is needed"));
    }
    let names: BTreeSet<&str> = batches.iter().map(String::as_str).collect();
    if names.len() < 2 {
        return Err(Error::param(
            "batch_key",
            format!(
                "{} batch(es); leave-one-batch-out needs at least 2",
                names.len()
            ),
        ));
    }
    Ok(names
        .iter()
        .enumerate()
        .map(|(f, &b)| {
            let test: Vec<usize> = (0..labels.len()).filter(|&i| batches[i] == b).collect();
            let rest: Vec<usize> = (0..labels.len()).filter(|&i| batches[i] != b).collect();
            let (train, val) =
                carve_validation(labels, &rest, val_fraction, seed.wrapping_add(f as u64));
            let unseen_labels = unseen(labels, &train, &val, &test);
            Fold {
                name: b.to_string(),
                train,
                val,
                test,
                unseen_labels,
            }
        })
        .collect())
}

#[cfg(test)]
mod warning_tests {
    use super::*;

    #[test]
    fn small_and_unseen_classes_are_named() {
        let mut labels: Vec<String> = (0..20).map(|i| ["a", "b"][i % 2].to_string()).collect();
        labels.extend(["rare".to_string(), "rare".to_string()]);
        let folds = stratified_kfold(&labels, 5, 0.0, 0).unwrap();
        let w = split_warnings(&labels, &folds, Some(5));
        assert!(
            w[0].contains("rare (2)") && w[0].contains("5 folds"),
            "{w:?}"
        );
        let batches: Vec<String> = (0..22)
            .map(|i| if i < 20 && i % 3 != 0 { "b1" } else { "b2" }.to_string())
            .collect();
        let lobo = leave_one_batch_out(&labels, &batches, 0.0, 0).unwrap();
        let w = split_warnings(&labels, &lobo, None);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("b2: ") && w[0].contains("rare"), "{w:?}");
        let even: Vec<String> = (0..20).map(|i| ["a", "b"][i % 2].to_string()).collect();
        let folds = stratified_kfold(&even, 5, 0.0, 0).unwrap();
        assert!(split_warnings(&even, &folds, Some(5)).is_empty());
    }
}
