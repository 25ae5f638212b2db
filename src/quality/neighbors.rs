//! The cell graph scanpy builds: exact euclidean k nearest neighbours (each cell its own first
//! neighbour, as `sc.pp.neighbors`), then UMAP's fuzzy-simplicial-set connectivities
//! (`set_op_mix_ratio = 1`, `local_connectivity = 1`).
//!
//! scanpy computes exact distances below 8,192 cells and switches to pynndescent (approximate)
//! above; this module is always exact.
use std::collections::BTreeMap;

/// The `k` nearest neighbours of every cell, nearest first (the cell itself first).
#[derive(Debug, Clone, PartialEq)]
pub struct Knn {
    pub k: usize,
    /// `n × k` neighbour indices.
    pub indices: Vec<u32>,
    /// `n × k` euclidean distances.
    pub distances: Vec<f64>,
}

/// A weighted undirected graph in CSR form (both directions stored, no self-loops).
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub weights: Vec<f64>,
}

impl Graph {
    /// Number of nodes.
    pub fn n_nodes(&self) -> usize {
        self.indptr.len() - 1
    }

    /// Neighbours and weights of node `i`.
    pub fn row(&self, i: usize) -> (&[u32], &[f64]) {
        let (a, b) = (self.indptr[i], self.indptr[i + 1]);
        (&self.indices[a..b], &self.weights[a..b])
    }

    /// Each undirected edge once, `(i, j, w)` with `i < j`.
    pub fn edges(&self) -> Vec<(usize, usize, f64)> {
        (0..self.n_nodes())
            .flat_map(|i| {
                let (cols, ws) = self.row(i);
                cols.iter()
                    .zip(ws)
                    .filter(move |(&j, _)| (j as usize) > i)
                    .map(move |(&j, &w)| (i, j as usize, w))
            })
            .collect()
    }
}

/// The `k` smallest `(distance, index)` pairs, nearest first (ties by index).
pub(crate) fn smallest(mut cand: Vec<(f64, u32)>, k: usize) -> Vec<(f64, u32)> {
    let cmp = |a: &(f64, u32), b: &(f64, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    if cand.len() > k {
        cand.select_nth_unstable_by(k, cmp);
        cand.truncate(k);
    }
    cand.sort_unstable_by(cmp);
    cand
}

const SMOOTH_K_TOLERANCE: f64 = 1e-5;
const MIN_K_DIST_SCALE: f64 = 1e-3;

/// umap's `smooth_knn_dist` (`local_connectivity = 1`, 64 bisection steps): each cell's
/// bandwidth `sigma` and distance to its nearest other cell `rho`.
fn smooth_knn_dist(knn: &Knn) -> (Vec<f64>, Vec<f64>) {
    let k = knn.k;
    let n = knn.indices.len() / k.max(1);
    let target = (k as f64).log2();
    let mean_all = knn.distances.iter().sum::<f64>() / knn.distances.len().max(1) as f64;
    let (mut sigmas, mut rhos) = (vec![0.0; n], vec![0.0; n]);
    for i in 0..n {
        let d = &knn.distances[i * k..(i + 1) * k];
        let rho = d.iter().copied().find(|&v| v > 0.0).unwrap_or(0.0);
        let (mut lo, mut hi, mut mid) = (0.0f64, f64::INFINITY, 1.0f64);
        for _ in 0..64 {
            let psum: f64 = d[1..]
                .iter()
                .map(|&v| {
                    let t = v - rho;
                    if t > 0.0 {
                        (-(t / mid)).exp()
                    } else {
                        1.0
                    }
                })
                .sum();
            if (psum - target).abs() < SMOOTH_K_TOLERANCE {
                break;
            }
            if psum > target {
                hi = mid;
                mid = (lo + hi) / 2.0;
            } else {
                lo = mid;
                mid = if hi.is_infinite() {
                    mid * 2.0
                } else {
                    (lo + hi) / 2.0
                };
            }
        }
        let floor = if rho > 0.0 {
            MIN_K_DIST_SCALE * d.iter().sum::<f64>() / k as f64
        } else {
            MIN_K_DIST_SCALE * mean_all
        };
        sigmas[i] = mid.max(floor);
        rhos[i] = rho;
    }
    (sigmas, rhos)
}

/// scanpy's UMAP connectivities of a kNN graph: membership strengths
/// `exp(-(d - rho) / sigma)`, symmetrised as the fuzzy union `A + Aᵀ - A∘Aᵀ`.
pub fn connectivities(knn: &Knn) -> Graph {
    let k = knn.k;
    let n = knn.indices.len() / k.max(1);
    let (sigmas, rhos) = smooth_knn_dist(knn);
    // (low, high) → (strength low→high, strength high→low)
    let mut pairs: BTreeMap<(u32, u32), (f64, f64)> = BTreeMap::new();
    for i in 0..n {
        for t in 0..k {
            let j = knn.indices[i * k + t];
            if j as usize == i {
                continue;
            }
            let d = knn.distances[i * k + t];
            let v = if d - rhos[i] <= 0.0 || sigmas[i] == 0.0 {
                1.0
            } else {
                (-((d - rhos[i]) / sigmas[i])).exp()
            };
            let ii = i as u32;
            let e = pairs.entry((ii.min(j), ii.max(j))).or_default();
            if ii < j {
                e.0 = v;
            } else {
                e.1 = v;
            }
        }
    }
    let mut rows: Vec<Vec<(u32, f64)>> = vec![Vec::new(); n];
    for ((a, b), (x, y)) in pairs {
        let w = x + y - x * y;
        if w != 0.0 {
            rows[a as usize].push((b, w));
            rows[b as usize].push((a, w));
        }
    }
    let mut g = Graph {
        indptr: vec![0],
        indices: Vec::new(),
        weights: Vec::new(),
    };
    for mut r in rows {
        r.sort_unstable_by_key(|p| p.0);
        g.indices.extend(r.iter().map(|p| p.0));
        g.weights.extend(r.iter().map(|p| p.1));
        g.indptr.push(g.indices.len());
    }
    g
}
