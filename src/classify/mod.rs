//! Cell-type annotation: splits, the paper's MLP head, a linear-SVM baseline, PCA features, and
//! scikit-learn-compatible metrics, wired by [`evaluate`].
pub mod files;
pub mod metrics;
pub mod mlp;
pub mod scmap;
pub mod splits;
pub mod svm;

pub use mlp::MlpConfig;
pub use scmap::{ScmapConfig, UNASSIGNED};
pub use splits::{leave_one_batch_out, split_warnings, stratified_kfold, Fold};
pub use svm::SvmConfig;

use crate::npy::Matrix;
use crate::validate::Validate;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Which classifier reads the features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Classifier {
    Mlp(MlpConfig),
    Svm(SvmConfig),
    /// scmap-cluster; its `unassigned` cells count as wrong, and `unassigned` is no class of the
    /// macro-F1 (it enters as a miss of each cell's true class).
    Scmap(ScmapConfig),
}

impl crate::validate::Validate for Classifier {
    /// The chosen classifier's settings (checked by [`evaluate`] before any fold runs).
    fn validate(&self) -> Result<()> {
        match self {
            Classifier::Mlp(c) => c.validate(),
            Classifier::Svm(c) => c.validate(),
            Classifier::Scmap(c) => c.validate(),
        }
    }
}

impl Classifier {
    /// Short name (`mlp`, `svm`, `scmap`).
    pub fn name(&self) -> &'static str {
        match self {
            Classifier::Mlp(_) => "mlp",
            Classifier::Svm(_) => "svm",
            Classifier::Scmap(_) => "scmap",
        }
    }
}

/// One test cell's prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub cell: usize,
    pub fold: String,
    pub truth: String,
    pub pred: String,
}

/// Sorted label encoding (the paper's code sorts its classes): the distinct names and each cell's
/// index into them.
pub fn encode_labels(labels: &[String]) -> (Vec<String>, Vec<usize>) {
    let mut names: Vec<String> = labels.to_vec();
    names.sort();
    names.dedup();
    let y = labels
        .iter()
        .map(|l| names.binary_search(l).expect("label in its own list"))
        .collect();
    (names, y)
}

/// Metrics of one fold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldMetrics {
    pub fold: String,
    pub n_train: usize,
    pub n_val: usize,
    pub n_test: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub unseen_labels: Vec<String>,
    /// MLP epochs run (0 for the SVM).
    pub epochs: usize,
    pub seconds: f64,
}

/// All folds of one classifier on one feature matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub classifier: String,
    pub folds: Vec<FoldMetrics>,
    pub predictions: Vec<Prediction>,
    pub accuracy_mean: f64,
    pub accuracy_sd: f64,
    pub macro_f1_mean: f64,
    pub macro_f1_sd: f64,
    /// Per-class scores over all test predictions pooled.
    pub per_class: Vec<metrics::ClassScore>,
}

/// Checks that features fit the labels: same number of rows, all finite.
pub fn check_features(x: &Matrix, labels: &[String], what: &str) -> Result<()> {
    if x.rows != labels.len() {
        return Err(Error::param(
            what,
            format!(
                "{} feature rows for {} cells; the rows must be the dataset's cells, in order",
                x.rows,
                labels.len()
            ),
        ));
    }
    if x.cols == 0 {
        return Err(Error::param(
            what,
            "the matrix has no columns (no features); embed or select features first",
        ));
    }
    if let Some(i) = x.data.iter().position(|v| !v.is_finite()) {
        return Err(Error::param(
            what,
            format!(
                "non-finite value at row {}, column {}; fix or drop that cell",
                i / x.cols.max(1),
                i % x.cols.max(1)
            ),
        ));
    }
    Ok(())
}

/// Runs `classifier` over `folds` and scores the test predictions.
pub fn evaluate(
    x: &Matrix,
    labels: &[String],
    folds: &[Fold],
    classifier: &Classifier,
    device: Device,
) -> Result<Evaluation> {
    check_features(x, labels, "features")?;
    classifier.validate()?;
    let (names, y) = encode_labels(labels);
    let mut out_folds = Vec::new();
    let mut predictions = Vec::new();
    for f in folds {
        let start = std::time::Instant::now();
        let name = |k: usize| names[k].clone();
        // the SVM and scmap have no early stopping: they fit on train + validation
        let fit_idx: Vec<usize> = f.train.iter().chain(&f.val).copied().collect();
        let xt: Vec<&[f32]> = f.test.iter().map(|&i| x.row(i)).collect();
        let (pred, epochs): (Vec<String>, usize) = match classifier {
            Classifier::Mlp(c) => {
                let (p, run) = mlp::train_predict(x, &y, names.len(), f, c, device);
                (p.into_iter().map(name).collect(), run.epochs)
            }
            Classifier::Svm(c) => {
                let xs: Vec<&[f32]> = fit_idx.iter().map(|&i| x.row(i)).collect();
                let ys: Vec<usize> = fit_idx.iter().map(|&i| y[i]).collect();
                let model = svm::LinearSvm::fit(&xs, &ys, c);
                (model.predict(&xt).into_iter().map(name).collect(), 0)
            }
            Classifier::Scmap(c) => {
                let xs: Vec<&[f32]> = fit_idx.iter().map(|&i| x.row(i)).collect();
                let ys: Vec<usize> = fit_idx.iter().map(|&i| y[i]).collect();
                let index = scmap::ScmapIndex::fit(&xs, &ys, c);
                let p = index.predict(&xt, c);
                let p = p
                    .into_iter()
                    .map(|(k, _)| k.map_or_else(|| UNASSIGNED.to_string(), name));
                (p.collect(), 0)
            }
        };
        let truth: Vec<String> = f.test.iter().map(|&i| labels[i].clone()).collect();
        out_folds.push(FoldMetrics {
            fold: f.name.clone(),
            n_train: f.train.len(),
            n_val: f.val.len(),
            n_test: f.test.len(),
            accuracy: metrics::accuracy(&truth, &pred),
            macro_f1: macro_f1(classifier, &truth, &pred),
            unseen_labels: f.unseen_labels.clone(),
            epochs,
            seconds: start.elapsed().as_secs_f64(),
        });
        for ((&cell, t), p) in f.test.iter().zip(truth).zip(pred) {
            predictions.push(Prediction {
                cell,
                fold: f.name.clone(),
                truth: t,
                pred: p,
            });
        }
    }
    Ok(summarise(classifier, out_folds, predictions))
}

/// Runs `classifier` over `folds`, each on its own features (`features(fold)`, e.g. built from
/// that fold's training cells only), and scores the pooled test predictions.
pub fn evaluate_per_fold(
    mut features: impl FnMut(&Fold) -> Result<Matrix>,
    labels: &[String],
    folds: &[Fold],
    classifier: &Classifier,
    device: Device,
) -> Result<Evaluation> {
    let (mut out_folds, mut predictions) = (Vec::new(), Vec::new());
    for f in folds {
        let x = features(f)?;
        let ev = evaluate(&x, labels, std::slice::from_ref(f), classifier, device)?;
        out_folds.extend(ev.folds);
        predictions.extend(ev.predictions);
    }
    Ok(summarise(classifier, out_folds, predictions))
}

/// Scores answers given per fold (`answer(fold)`: a label per test cell, e.g. a fine-tuned LM's),
/// as [`evaluate`] scores a classifier's; `name` is the evaluation's classifier name.
pub fn evaluate_answers(
    name: &str,
    labels: &[String],
    folds: &[Fold],
    mut answer: impl FnMut(&Fold) -> Result<Vec<String>>,
) -> Result<Evaluation> {
    let (mut out_folds, mut predictions) = (Vec::new(), Vec::new());
    for f in folds {
        let start = std::time::Instant::now();
        let pred = answer(f)?;
        if pred.len() != f.test.len() {
            return Err(Error::param(
                "answers",
                format!("{} answers for {} test cells", pred.len(), f.test.len()),
            ));
        }
        let truth: Vec<String> = f.test.iter().map(|&i| labels[i].clone()).collect();
        out_folds.push(FoldMetrics {
            fold: f.name.clone(),
            n_train: f.train.len(),
            n_val: f.val.len(),
            n_test: f.test.len(),
            accuracy: metrics::accuracy(&truth, &pred),
            macro_f1: metrics::macro_f1(&truth, &pred),
            unseen_labels: f.unseen_labels.clone(),
            epochs: 0,
            seconds: start.elapsed().as_secs_f64(),
        });
        for ((&cell, t), p) in f.test.iter().zip(truth).zip(pred) {
            predictions.push(Prediction {
                cell,
                fold: f.name.clone(),
                truth: t,
                pred: p,
            });
        }
    }
    let mut ev = summarise(
        &Classifier::Svm(SvmConfig::default()),
        out_folds,
        predictions,
    );
    ev.classifier = name.to_string();
    Ok(ev)
}

fn summarise(
    classifier: &Classifier,
    out_folds: Vec<FoldMetrics>,
    predictions: Vec<Prediction>,
) -> Evaluation {
    let acc: Vec<f64> = out_folds.iter().map(|f| f.accuracy).collect();
    let f1: Vec<f64> = out_folds.iter().map(|f| f.macro_f1).collect();
    let (accuracy_mean, accuracy_sd) = metrics::mean_sd(&acc);
    let (macro_f1_mean, macro_f1_sd) = metrics::mean_sd(&f1);
    let all_t: Vec<String> = predictions.iter().map(|p| p.truth.clone()).collect();
    let all_p: Vec<String> = predictions.iter().map(|p| p.pred.clone()).collect();
    Evaluation {
        classifier: classifier.name().into(),
        folds: out_folds,
        per_class: per_class(classifier, &all_t, &all_p),
        predictions,
        accuracy_mean,
        accuracy_sd,
        macro_f1_mean,
        macro_f1_sd,
    }
}

/// Per-class scores; scmap's `unassigned` pseudo-label (never a true label) is no class.
fn per_class(c: &Classifier, truth: &[String], pred: &[String]) -> Vec<metrics::ClassScore> {
    let mut s = metrics::per_class(truth, pred);
    if matches!(c, Classifier::Scmap(_)) {
        s.retain(|k| !(k.label == UNASSIGNED && k.support == 0));
    }
    s
}

fn macro_f1(c: &Classifier, truth: &[String], pred: &[String]) -> f64 {
    let s = per_class(c, truth, pred);
    if s.is_empty() {
        return f64::NAN;
    }
    s.iter().map(|k| k.f1).sum::<f64>() / s.len() as f64
}

/// PCA to `k` components fitted on the `fit` rows (centred, exact SVD), applied to every row.
/// Component signs follow scikit-learn's `svd_flip` (largest |loading| positive).
pub fn pca(x: &Matrix, fit: &[usize], k: usize) -> Matrix {
    let d = x.cols as i64;
    let all = Tensor::from_slice(&x.data)
        .view([x.rows as i64, d])
        .to_kind(Kind::Double);
    let idx = Tensor::from_slice(&fit.iter().map(|&i| i as i64).collect::<Vec<_>>());
    let xf = all.index_select(0, &idx);
    let mean = xf.mean_dim(0, true, Kind::Double);
    let (_, _, v) = (xf - &mean).svd(true, true);
    let vt = v.tr();
    let k = (k as i64).min(vt.size()[0]);
    project(&(all - mean), vt.narrow(0, 0, k))
}

/// The centred rows projected on `comps` (k × d) after scikit-learn's `svd_flip` (each
/// component's largest |loading| positive), as f32.
fn project(centred: &Tensor, mut comps: Tensor) -> Matrix {
    let amax = comps.abs().argmax(1, true);
    comps *= comps.gather(1, &amax, false).sign();
    let z = centred
        .matmul(&comps.tr())
        .to_kind(Kind::Float)
        .contiguous();
    let (rows, cols) = (z.size()[0] as usize, z.size()[1] as usize);
    Matrix {
        rows,
        cols,
        data: Vec::<f32>::try_from(z.view([-1])).expect("pca output"),
    }
}

/// PCA of every row to `k` components by randomized SVD (Halko et al. 2011, as scikit-learn's
/// `randomized_svd`: `k + 10` Gaussian probes from a seeded ChaCha stream, 7 power iterations
/// with QR re-orthonormalisation), for wide matrices where the exact SVD of [`pca`] is slow
/// (e.g. every gene). Same centring and sign convention as [`pca`].
pub fn pca_randomized(x: &Matrix, k: usize, seed: u64) -> Matrix {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let (n, d) = (x.rows as i64, x.cols as i64);
    let all = Tensor::from_slice(&x.data)
        .view([n, d])
        .to_kind(Kind::Double);
    let centred = &all - all.mean_dim(0, true, Kind::Double);
    let l = ((k + 10) as i64).min(n.min(d));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let probes: Vec<f64> = (0..d * l)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let omega = Tensor::from_slice(&probes).view([d, l]);
    let mut q = centred.matmul(&omega);
    for _ in 0..7 {
        q = centred.matmul(&centred.tr().matmul(&Tensor::linalg_qr(&q, "reduced").0));
        q = Tensor::linalg_qr(&q, "reduced").0;
    }
    let b = q.tr().matmul(&centred);
    let (_, _, v) = b.svd(true, true);
    project(&centred, v.tr().narrow(0, 0, (k as i64).min(l)))
}

#[cfg(test)]
mod pca_tests {
    use super::*;

    /// On data with a clear spectrum the randomized PCA's scores equal the exact ones.
    #[test]
    fn randomized_pca_matches_exact_pca() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (n, d) = (300, 400);
        // rank-8 signal with decaying scales plus small noise
        let basis: Vec<Vec<f32>> = (0..8)
            .map(|_| (0..d).map(|_| rng.random::<f32>() - 0.5).collect())
            .collect();
        let mut data = vec![0f32; n * d];
        for i in 0..n {
            for (r, b) in basis.iter().enumerate() {
                let w = (rng.random::<f32>() - 0.5) * 10.0 / (1 + r) as f32;
                for j in 0..d {
                    data[i * d + j] += w * b[j];
                }
            }
            for v in &mut data[i * d..(i + 1) * d] {
                *v += (rng.random::<f32>() - 0.5) * 0.01;
            }
        }
        let x = Matrix {
            rows: n,
            cols: d,
            data,
        };
        let exact = pca(&x, &(0..n).collect::<Vec<_>>(), 5);
        let fast = pca_randomized(&x, 5, 0);
        let err = exact
            .data
            .iter()
            .zip(&fast.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-3, "max |exact − randomized| = {err}");
    }
}
