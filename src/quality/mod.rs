//! Embedding quality, as the single-cell foundation-model evaluations score it (scIB; Kedzierska
//! et al. 2025): Leiden clusters on scanpy's k-nearest-neighbour graph compared with the cell
//! types (NMI, ARI at the best of scIB's resolutions), label silhouettes, and with a batch key
//! batch mixing (`asw_batch`), `graph_connectivity` and k-NN label transfer across batches.
//!
//! Graph: exact euclidean neighbours and UMAP connectivities ([`neighbors`]); clustering: the
//! Leiden algorithm of the `single-clustering` crate (SingleRust, BSD-3: modularity with
//! leidenalg's weight conventions, seeded and reproducible); scores: scikit-learn's and scIB's
//! definitions ([`scores`]). Distances are exact (O(n² d)), computed once per cell in parallel.
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use single_clustering::community_search::leiden::{self, LeidenConfig, ObjectiveKind};
use single_clustering::network::CSRNetwork;

use crate::npy::Matrix;
use crate::{Error, Result};

pub mod neighbors;
pub mod scores;
pub mod umap;

use neighbors::{Graph, Knn};

/// Settings of the panel (scanpy's and scIB's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityParams {
    /// Neighbours of the cell graph, the cell itself included (`sc.pp.neighbors`).
    pub n_neighbors: usize,
    /// Leiden resolutions tried; the one with the best NMI is reported (scIB: 0.1 … 2.0).
    pub resolutions: Vec<f64>,
    /// Seed of the Leiden node orderings.
    pub seed: u64,
    /// Neighbours voting in the label transfer across batches.
    pub knn_k: usize,
    /// Epochs of the 2-D UMAP map drawn beside the panel (0: no map).
    pub umap_epochs: usize,
}

impl Default for QualityParams {
    fn default() -> Self {
        Self {
            n_neighbors: 15,
            resolutions: (1..=20).map(|i| i as f64 / 10.0).collect(),
            seed: 0,
            knn_k: 15,
            umap_epochs: 500,
        }
    }
}

/// The panel of one embedding (`metrics` writes it as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Panel {
    pub n_cells: usize,
    pub n_dims: usize,
    pub n_labels: usize,
    /// Leiden resolution with the best NMI, its cluster count and modularity.
    pub resolution: f64,
    pub n_clusters: usize,
    pub modularity: f64,
    pub nmi: f64,
    pub ari: f64,
    /// scikit-learn `silhouette_score` (euclidean) of the cell types, in [-1, 1].
    pub silhouette_label: f64,
    /// scIB's rescaled label silhouette, `(silhouette_label + 1) / 2`.
    pub asw_label: f64,
    /// mean(NMI, ARI, asw_label).
    pub avg_bio: f64,
    pub n_batches: Option<usize>,
    /// scIB `silhouette_batch`: 1 − |batch silhouette| within each cell type, averaged.
    pub asw_batch: Option<f64>,
    /// scIB `graph_connectivity` of each cell type's subgraph.
    pub graph_connectivity: Option<f64>,
    /// Label transfer by a k-NN vote (uniform weights), each batch predicted from the others.
    pub knn_accuracy: Option<f64>,
}

/// A panel, the Leiden clusters behind its NMI / ARI, and the cell graph.
#[derive(Debug, Clone)]
pub struct Quality {
    pub panel: Panel,
    pub clusters: Vec<usize>,
    pub graph: Graph,
}

/// The 2-D UMAP map of `x` from its panel's graph ([`umap::layout`], PCA initialisation).
pub fn map(x: &Matrix, q: &Quality, p: &QualityParams) -> Vec<[f64; 2]> {
    let all: Vec<usize> = (0..x.rows).collect();
    let pcs = crate::classify::pca(x, &all, 2);
    let init: Vec<[f64; 2]> = (0..x.rows)
        .map(|i| {
            let r = pcs.row(i);
            [r[0] as f64, r.get(1).copied().unwrap_or(0.0) as f64]
        })
        .collect();
    umap::layout(&q.graph, &init, p.umap_epochs, p.seed)
}

/// Class indices of `values` in sorted order of the distinct values, and those values.
pub fn encode(values: &[String]) -> (Vec<usize>, Vec<String>) {
    let mut names: Vec<String> = values.to_vec();
    names.sort();
    names.dedup();
    let idx = values
        .iter()
        .map(|v| names.binary_search(v).expect("value is in the list"))
        .collect();
    (idx, names)
}

/// Checks the inputs of [`evaluate`]; `what` names the embedding in errors (its file).
pub fn check_inputs(
    x: &Matrix,
    labels: &[String],
    batches: Option<&[String]>,
    what: &str,
) -> Result<()> {
    let bad = |field: &str, msg: String, fix: &str| Error::bad_value(what, field, msg, fix);
    if labels.len() != x.rows {
        return Err(bad(
            "rows",
            format!("{} rows but {} labelled cells", x.rows, labels.len()),
            "give the embeddings of exactly the input's (QC-kept) cells, in its order",
        ));
    }
    if let Some(k) = x.data.iter().position(|v| !v.is_finite()) {
        return Err(bad(
            "values",
            format!(
                "non-finite value {} at row {}, column {}",
                x.data[k],
                k / x.cols.max(1),
                k % x.cols.max(1)
            ),
            "re-embed the cells; NaN/Inf have no distance",
        ));
    }
    let distinct = |v: &[String]| encode(v).1.len();
    if distinct(labels) < 2 {
        return Err(bad(
            "labels",
            format!(
                "one label only (`{}`): cluster agreement and silhouettes need two",
                labels.first().map_or("", |s| s)
            ),
            "choose a label key with at least two cell types",
        ));
    }
    if let Some(b) = batches {
        if b.len() != x.rows {
            return Err(bad(
                "batches",
                format!("{} batches for {} rows", b.len(), x.rows),
                "give one batch per cell",
            ));
        }
        if distinct(b) < 2 {
            return Err(bad(
                "batches",
                format!(
                    "one batch only (`{}`): batch mixing needs two",
                    b.first().map_or("", |s| s)
                ),
                "drop the batch key, or choose one with at least two batches",
            ));
        }
    }
    Ok(())
}

/// What one pass over a cell's distances yields.
struct RowPass {
    /// The cell's nearest neighbours, itself first.
    knn: Vec<(f64, u32)>,
    /// Summed distance to each label's cells.
    label_sums: Vec<f64>,
    /// Summed distance to each batch's cells of the cell's own label.
    batch_sums: Vec<f64>,
    /// The label voted by the `knn_k` nearest cells of other batches.
    transfer: Option<usize>,
}

fn row_pass(
    x: &Matrix,
    i: usize,
    (labels, n_labels): (&[usize], usize),
    batches: Option<(&[usize], usize)>,
    p: &QualityParams,
) -> RowPass {
    let xi = x.row(i);
    let mut all = Vec::with_capacity(x.rows);
    let mut label_sums = vec![0.0; n_labels];
    let mut batch_sums = vec![0.0; batches.map_or(0, |b| b.1)];
    for j in 0..x.rows {
        let d = xi
            .iter()
            .zip(x.row(j))
            .map(|(&a, &b)| {
                let t = a as f64 - b as f64;
                t * t
            })
            .sum::<f64>()
            .sqrt();
        let d = if i == j { 0.0 } else { d };
        all.push((d, j as u32));
        label_sums[labels[j]] += d;
        if let Some((b, _)) = batches {
            if labels[j] == labels[i] {
                batch_sums[b[j]] += d;
            }
        }
    }
    let transfer = batches.map(|(b, _)| {
        let other: Vec<(f64, u32)> = all
            .iter()
            .copied()
            .filter(|&(_, j)| b[j as usize] != b[i])
            .collect();
        let mut votes = vec![0usize; n_labels];
        for (_, j) in neighbors::smallest(other, p.knn_k) {
            votes[labels[j as usize]] += 1;
        }
        // the most votes; ties to the first class in sorted order (scipy's mode)
        (0..n_labels).rev().max_by_key(|&c| votes[c]).unwrap_or(0)
    });
    RowPass {
        knn: neighbors::smallest(all, p.n_neighbors),
        label_sums,
        batch_sums,
        transfer,
    }
}

/// The panel of embedding `x` (rows = cells) against `labels` (and `batches`).
pub fn evaluate(
    x: &Matrix,
    labels: &[String],
    batches: Option<&[String]>,
    p: &QualityParams,
) -> Result<Quality> {
    check_inputs(x, labels, batches, "embedding")?;
    if p.n_neighbors < 2 || p.knn_k < 1 || p.resolutions.is_empty() {
        return Err(Error::param(
            "quality",
            "n_neighbors ≥ 2, knn_k ≥ 1 and at least one resolution",
        ));
    }
    let (y, names) = encode(labels);
    let nl = names.len();
    let enc_b = batches.map(encode);
    let b = enc_b.as_ref().map(|(v, n)| (v.as_slice(), n.len()));
    let rows: Vec<RowPass> = (0..x.rows)
        .into_par_iter()
        .map(|i| row_pass(x, i, (&y, nl), b, p))
        .collect();
    let graph = neighbors::connectivities(&knn_of(&rows, p.n_neighbors.min(x.rows)));
    let (resolution, clusters, modularity) = best_leiden(&graph, &y, p)?;
    let mut sizes = vec![0usize; nl];
    y.iter().for_each(|&c| sizes[c] += 1);
    let sil = rows
        .iter()
        .zip(&y)
        .map(|(r, &c)| scores::silhouette(c, &r.label_sums, &sizes))
        .sum::<f64>()
        / x.rows as f64;
    let (nmi, ari) = (scores::nmi(&y, &clusters), scores::ari(&y, &clusters));
    let asw_label = (sil + 1.0) / 2.0;
    let batch_part = b.map(|(bv, nb)| {
        let correct = rows
            .iter()
            .zip(&y)
            .filter(|(r, &c)| r.transfer == Some(c))
            .count();
        (
            nb,
            asw_batch(&rows, &y, nl, bv, nb),
            scores::graph_connectivity(&graph, &y, nl),
            correct as f64 / x.rows as f64,
        )
    });
    let panel = Panel {
        n_cells: x.rows,
        n_dims: x.cols,
        n_labels: nl,
        resolution,
        n_clusters: clusters.iter().max().map_or(0, |m| m + 1),
        modularity,
        nmi,
        ari,
        silhouette_label: sil,
        asw_label,
        avg_bio: (nmi + ari + asw_label) / 3.0,
        n_batches: batch_part.map(|t| t.0),
        asw_batch: batch_part.and_then(|t| t.1),
        graph_connectivity: batch_part.map(|t| t.2),
        knn_accuracy: batch_part.map(|t| t.3),
    };
    Ok(Quality {
        panel,
        clusters,
        graph,
    })
}

/// The `k` nearest neighbours the row passes found, as one table.
fn knn_of(rows: &[RowPass], k: usize) -> Knn {
    Knn {
        k,
        indices: rows
            .iter()
            .flat_map(|r| r.knn.iter().map(|e| e.1))
            .collect(),
        distances: rows
            .iter()
            .flat_map(|r| r.knn.iter().map(|e| e.0))
            .collect(),
    }
}

/// scIB `silhouette_batch`: per label with 2 ≤ batches < cells, the mean of 1 − |s| of its
/// cells' batch silhouettes; the mean over those labels (`None` if there is none).
fn asw_batch(rows: &[RowPass], y: &[usize], nl: usize, b: &[usize], nb: usize) -> Option<f64> {
    let mut sizes = vec![vec![0usize; nb]; nl];
    y.iter().zip(b).for_each(|(&l, &bb)| sizes[l][bb] += 1);
    let mut per_label = Vec::new();
    for (l, s) in sizes.iter().enumerate() {
        let n: usize = s.iter().sum();
        let present = s.iter().filter(|&&c| c > 0).count();
        if present < 2 || present == n {
            continue;
        }
        let vals: Vec<f64> = (0..y.len())
            .filter(|&i| y[i] == l)
            .map(|i| 1.0 - scores::silhouette(b[i], &rows[i].batch_sums, s).abs())
            .collect();
        per_label.push(vals.iter().sum::<f64>() / vals.len() as f64);
    }
    (!per_label.is_empty()).then(|| per_label.iter().sum::<f64>() / per_label.len() as f64)
}

/// Leiden clusters (RB configuration model, as `scanpy.tl.leiden`) at `resolution`.
pub fn leiden_clusters(g: &Graph, resolution: f64, seed: u64) -> Result<(Vec<usize>, f64)> {
    let net = CSRNetwork::from_edges(g.n_nodes(), &g.edges())
        .map_err(|e| Error::param("quality.graph", e.to_string()))?;
    let config = LeidenConfig {
        objective: ObjectiveKind::Rb { resolution },
        seed: Some(seed),
        n_iterations: 100,
        ..Default::default()
    };
    let c =
        leiden::leiden(&net, &config).map_err(|e| Error::param("quality.leiden", e.to_string()))?;
    let labels = c.into_labels();
    let q = leiden::modularity(&net, &labels, resolution);
    Ok((labels, q))
}

/// scIB's `cluster_optimal_resolution`: the resolution whose clusters agree best (NMI) with the
/// labels; returns it, its clusters and their modularity.
fn best_leiden(g: &Graph, y: &[usize], p: &QualityParams) -> Result<(f64, Vec<usize>, f64)> {
    let mut best: Option<(f64, f64, Vec<usize>, f64)> = None;
    for &r in &p.resolutions {
        let (c, q) = leiden_clusters(g, r, p.seed)?;
        let s = scores::nmi(y, &c);
        if best.as_ref().is_none_or(|b| s > b.0) {
            best = Some((s, r, c, q));
        }
    }
    let (_, r, c, q) = best.expect("at least one resolution");
    Ok((r, c, q))
}
