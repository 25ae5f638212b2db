//! A 2-D UMAP map of the cell graph, as `scanpy.tl.umap` lays it out: umap-learn's
//! `optimize_layout_euclidean` (edge sampling by weight, 5 negative samples per positive one,
//! linearly decaying learning rate) on the UMAP connectivities, with scanpy's `min_dist = 0.5`,
//! `spread = 1` curve (`a`, `b`).
//!
//! Written here because the Rust UMAP crate (umap-rs) draws from an unseeded thread RNG in
//! parallel, so its maps differ on every run; this layout is single-threaded and seeded, so the
//! committed figures are reproducible. Initialisation: the first two principal components of
//! the embedding (umap-learn's `init="pca"`; scanpy's default is spectral), scaled to [0, 10].
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::neighbors::Graph;

/// scanpy's `find_ab_params(spread = 1, min_dist = 0.5)`.
const A: f64 = 0.583_030_020_548_370_9;
const B: f64 = 1.334_166_992_455_648;
const NEGATIVE_SAMPLE_RATE: f64 = 5.0;

/// Lays out `g` in 2-D from `init` (n × 2), for `n_epochs` (umap-learn: 500 below 10,000 cells).
pub fn layout(g: &Graph, init: &[[f64; 2]], n_epochs: usize, seed: u64) -> Vec<[f64; 2]> {
    let n = g.n_nodes();
    let mut emb = scaled(init);
    let mut edges: Vec<(usize, usize, f64)> = Vec::new();
    for i in 0..n {
        let (cols, ws) = g.row(i);
        edges.extend(cols.iter().zip(ws).map(|(&j, &w)| (i, j as usize, w)));
    }
    let wmax = edges.iter().map(|e| e.2).fold(0.0, f64::max);
    edges.retain(|e| e.2 >= wmax / n_epochs as f64);
    if edges.is_empty() || n < 2 {
        return emb;
    }
    let eps: Vec<f64> = edges
        .iter()
        .map(|e| n_epochs as f64 / (n_epochs as f64 * e.2 / wmax))
        .collect();
    let eps_neg: Vec<f64> = eps.iter().map(|e| e / NEGATIVE_SAMPLE_RATE).collect();
    let mut next = eps.clone();
    let mut next_neg = eps_neg.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for epoch in 0..n_epochs {
        let alpha = 1.0 - epoch as f64 / n_epochs as f64;
        let t = epoch as f64;
        for (e, &(j, k, _)) in edges.iter().enumerate() {
            if next[e] > t {
                continue;
            }
            attract(&mut emb, j, k, alpha);
            next[e] += eps[e];
            let n_neg = ((t - next_neg[e]) / eps_neg[e]).max(0.0) as usize;
            for _ in 0..n_neg {
                let k = rng.random_range(0..n);
                if k != j {
                    repel(&mut emb, j, k, alpha);
                }
            }
            next_neg[e] += n_neg as f64 * eps_neg[e];
        }
    }
    emb
}

fn clip(v: f64) -> f64 {
    v.clamp(-4.0, 4.0)
}

fn attract(emb: &mut [[f64; 2]], j: usize, k: usize, alpha: f64) {
    let (c, o) = (emb[j], emb[k]);
    let d2 = (c[0] - o[0]).powi(2) + (c[1] - o[1]).powi(2);
    if d2 <= 0.0 {
        return;
    }
    let coeff = -2.0 * A * B * d2.powf(B - 1.0) / (A * d2.powf(B) + 1.0);
    for d in 0..2 {
        let g = clip(coeff * (c[d] - o[d])) * alpha;
        emb[j][d] += g;
        emb[k][d] -= g;
    }
}

fn repel(emb: &mut [[f64; 2]], j: usize, k: usize, alpha: f64) {
    let (c, o) = (emb[j], emb[k]);
    let d2 = (c[0] - o[0]).powi(2) + (c[1] - o[1]).powi(2);
    if d2 <= 0.0 {
        return;
    }
    let coeff = 2.0 * B / ((0.001 + d2) * (A * d2.powf(B) + 1.0));
    for d in 0..2 {
        emb[j][d] += clip(coeff * (c[d] - o[d])) * alpha;
    }
}

/// `init` scaled per axis to [0, 10] (umap-learn's rescaling of a given initialisation).
fn scaled(init: &[[f64; 2]]) -> Vec<[f64; 2]> {
    let mut out = init.to_vec();
    for d in 0..2 {
        let lo = init.iter().map(|p| p[d]).fold(f64::INFINITY, f64::min);
        let hi = init.iter().map(|p| p[d]).fold(f64::NEG_INFINITY, f64::max);
        let span = if hi > lo { hi - lo } else { 1.0 };
        for p in out.iter_mut() {
            p[d] = 10.0 * (p[d] - lo) / span;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two cliques far apart in the graph end up apart on the map; the layout is seeded.
    #[test]
    fn separates_two_cliques_and_is_reproducible() {
        let mut rows: Vec<Vec<(u32, f64)>> = vec![Vec::new(); 20];
        for (i, row) in rows.iter_mut().enumerate() {
            for j in 0..20usize {
                if i != j && (i < 10) == (j < 10) {
                    row.push((j as u32, 1.0));
                }
            }
        }
        let mut g = Graph {
            indptr: vec![0],
            indices: vec![],
            weights: vec![],
        };
        for r in rows {
            g.indices.extend(r.iter().map(|p| p.0));
            g.weights.extend(r.iter().map(|p| p.1));
            g.indptr.push(g.indices.len());
        }
        let init: Vec<[f64; 2]> = (0..20)
            .map(|i| [(i * 7 % 20) as f64, (i * 3 % 20) as f64])
            .collect();
        let a = layout(&g, &init, 200, 1);
        assert_eq!(a, layout(&g, &init, 200, 1));
        let centre = |r: std::ops::Range<usize>| {
            let n = r.len() as f64;
            let s = r.fold([0.0, 0.0], |s, i| [s[0] + a[i][0], s[1] + a[i][1]]);
            [s[0] / n, s[1] / n]
        };
        let (c0, c1) = (centre(0..10), centre(10..20));
        let between = ((c0[0] - c1[0]).powi(2) + (c0[1] - c1[1]).powi(2)).sqrt();
        let within = (0..10)
            .map(|i| ((a[i][0] - c0[0]).powi(2) + (a[i][1] - c0[1]).powi(2)).sqrt())
            .sum::<f64>()
            / 10.0;
        assert!(between > 2.0 * within, "between {between}, within {within}");
    }
}
