//! Linear SVM baseline, one-vs-rest, as scikit-learn's `LinearSVC()` (liblinear: L2-regularised
//! squared-hinge loss, C = 1, intercept as an extra feature of value 1, dual coordinate descent
//! with shrinking, tol 1e-4, at most 1000 passes). Written here rather than taken from smartcore,
//! whose SMO `SVC` is binary-only and far slower on thousands of dense features.
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Linear SVM settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SvmConfig {
    /// Inverse regularisation strength.
    pub c: f64,
    pub tol: f64,
    pub max_iter: usize,
    pub seed: u64,
}

impl Default for SvmConfig {
    fn default() -> Self {
        SvmConfig {
            c: 1.0,
            tol: 1e-4,
            max_iter: 1000,
            seed: 0,
        }
    }
}

/// A fitted one-vs-rest model: per class a weight vector and intercept.
#[derive(Debug, Clone)]
pub struct LinearSvm {
    /// Classes (indices into the caller's label list) in training order.
    pub classes: Vec<usize>,
    pub w: Vec<Vec<f64>>,
    pub b: Vec<f64>,
}

/// A row's non-zero (column, value) pairs: expression rows are sparse, so dot products and
/// updates touch only these (as liblinear's sparse rows).
type SparseRow = Vec<(u32, f64)>;

fn sparse(x: &[&[f32]]) -> Vec<SparseRow> {
    x.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .filter(|(_, &v)| v != 0.0)
                .map(|(j, &v)| (j as u32, v as f64))
                .collect()
        })
        .collect()
}

/// Dual coordinate descent for one binary problem (y ∈ {−1, +1}); returns (w, b). As liblinear's
/// `solve_l2r_l1l2_svc`, with its shrinking: a cell whose α is 0 and whose gradient exceeds the
/// last pass's largest projected gradient leaves the active set; at convergence of the active set
/// every cell is checked once more before stopping.
fn binary(x: &[SparseRow], d: usize, y: &[f64], c: &SvmConfig) -> (Vec<f64>, f64) {
    let n = x.len();
    let diag = 0.5 / c.c; // squared hinge: D_ii = 1/(2C), no upper bound
    let qd: Vec<f64> = x
        .iter()
        .map(|r| r.iter().map(|&(_, v)| v * v).sum::<f64>() + 1.0 + diag)
        .collect();
    let mut w = vec![0f64; d];
    let mut b = 0f64;
    let mut alpha = vec![0f64; n];
    let mut index: Vec<usize> = (0..n).collect();
    let mut active = n;
    // (liblinear's lower threshold shrinks α at the upper bound; the squared hinge has none)
    let mut pg_max_old = f64::INFINITY;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c.seed);
    for _ in 0..c.max_iter {
        index[..active].shuffle(&mut rng);
        let (mut pg_max, mut pg_min) = (f64::NEG_INFINITY, f64::INFINITY);
        let mut s = 0;
        while s < active {
            let i = index[s];
            let xi = &x[i];
            let dot: f64 = xi.iter().map(|&(j, v)| v * w[j as usize]).sum::<f64>() + b;
            let g = y[i] * dot - 1.0 + diag * alpha[i];
            let pg = if alpha[i] == 0.0 {
                if g > pg_max_old {
                    // shrink: swap the last active cell into this slot and look at it next
                    active -= 1;
                    index.swap(s, active);
                    continue;
                }
                g.min(0.0)
            } else {
                g
            };
            pg_max = pg_max.max(pg);
            pg_min = pg_min.min(pg);
            if pg.abs() > 1e-12 {
                let old = alpha[i];
                alpha[i] = (old - g / qd[i]).max(0.0);
                let step = (alpha[i] - old) * y[i];
                for &(j, v) in xi {
                    w[j as usize] += step * v;
                }
                b += step;
            }
            s += 1;
        }
        if pg_max - pg_min <= c.tol {
            if active == n {
                break;
            }
            // converged on the active set: check every cell once more
            active = n;
            pg_max_old = f64::INFINITY;
            continue;
        }
        pg_max_old = if pg_max <= 0.0 { f64::INFINITY } else { pg_max };
    }
    (w, b)
}

impl LinearSvm {
    /// Fits one binary problem per class present in `train` (classes in parallel).
    pub fn fit(x: &[&[f32]], y: &[usize], c: &SvmConfig) -> Self {
        let d = x.first().map_or(0, |r| r.len());
        let xs = sparse(x);
        let mut classes: Vec<usize> = y.to_vec();
        classes.sort_unstable();
        classes.dedup();
        let fits: Vec<(Vec<f64>, f64)> = if classes.len() == 2 {
            // binary: one problem, the second class is positive (as liblinear)
            let yy: Vec<f64> = y
                .iter()
                .map(|&v| if v == classes[1] { 1.0 } else { -1.0 })
                .collect();
            let (w, b) = binary(&xs, d, &yy, c);
            vec![(w.iter().map(|v| -v).collect(), -b), (w, b)]
        } else {
            classes
                .par_iter()
                .map(|&k| {
                    let yy: Vec<f64> = y.iter().map(|&v| if v == k { 1.0 } else { -1.0 }).collect();
                    binary(&xs, d, &yy, c)
                })
                .collect()
        };
        let (w, b) = fits.into_iter().unzip();
        LinearSvm { classes, w, b }
    }

    /// The class with the largest decision value for each row.
    pub fn predict(&self, x: &[&[f32]]) -> Vec<usize> {
        x.iter()
            .map(|r| {
                let mut best = (f64::NEG_INFINITY, 0usize);
                for (k, (w, b)) in self.w.iter().zip(&self.b).enumerate() {
                    let s: f64 = r.iter().zip(w).map(|(&a, &b)| a as f64 * b).sum::<f64>() + b;
                    if s > best.0 {
                        best = (s, k);
                    }
                }
                self.classes[best.1]
            })
            .collect()
    }
}

impl crate::validate::Validate for SvmConfig {
    fn validate(&self) -> crate::Result<()> {
        crate::validate::positive_real("svm.c", self.c, "1.0")?;
        crate::validate::positive_real("svm.tol", self.tol, "1e-4")?;
        crate::validate::positive("svm.max_iter", self.max_iter, "1000")
    }
}
