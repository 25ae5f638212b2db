//! The HVG sweep (beyond the paper): how the number of highly variable genes and the HVG flavor
//! trade sentence length against what the sentence keeps.
//!
//! Per dataset, flavor and `n_top`: the HVG sentences' mean length (genes per cell), the
//! reconstruction of expression from log-rank (Cell2Sentence's global line, on the experiment's
//! sampled cells), and the annotation macro-F1 of a linear SVM whose only input is the sentence:
//! each gene's feature is the expression the same line reconstructs from its rank (0 when the gene
//! is not in the sentence). The full sentence (all expressed genes) is the reference point.
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::context::{for_each_dataset, DatasetContext};
use super::outputs::{names, Outputs};
use super::{CellCount, Experiment, RunDataset, RunSummary};
use crate::cache::Cache;
use crate::classify::{self, Classifier, SvmConfig};
use crate::csr::Csr;
use crate::error::{Error, Result};
use crate::hvg::{Flavor, HvgParams};
use crate::npy::Matrix;
use crate::pipeline::{self, Prepared};
use crate::pipeline::{all_dense, hvg_dense};
use crate::quality::{self, QualityParams};
use crate::reconstruct::{self, RecModel};
use crate::report::{self, Col};
use crate::sentence;

mod figures;
use figures::{sweep_figure, sweep_svg};

/// Sweep settings (task `hvg_sweep`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweepSection {
    /// Numbers of highly variable genes.
    pub n_top: Vec<usize>,
    /// HVG flavors (on the log data, as the paper ran `seurat_v3`; deviance and pearson_residuals
    /// on the QC-filtered counts they model).
    pub flavors: Vec<Flavor>,
    /// Cells sampled for the reconstruction (the paper: 1,024).
    pub cells: CellCount,
    /// Stratified folds of the annotation score.
    pub folds: usize,
    /// The linear SVM reading the sentence features.
    pub svm: SvmConfig,
    /// Seeds of the random-gene controls: for each `n_top`, that many genes drawn uniformly
    /// (without replacement) from the QC-kept genes, once per seed (none: no controls).
    pub random_seeds: Vec<u64>,
    /// Score each point's genes by the embedding-quality panel of PCA(50) of their expression
    /// (AvgBIO; randomized PCA, seed = the experiment's); `null`: no AvgBIO column.
    pub quality: Option<QualityParams>,
    /// Add the deviation sentence of all genes (label-free reordering; reference profile: every
    /// cell for the reconstruction, each fold's training cells for the SVM).
    pub deviation: bool,
}

/// Principal components of the sweep's AvgBIO embeddings.
pub const SWEEP_PCS: usize = 50;

impl Default for SweepSection {
    fn default() -> Self {
        Self {
            n_top: vec![500, 1000, 2000, 3000, 5000],
            flavors: vec![Flavor::Seurat, Flavor::SeuratV3, Flavor::CellRanger],
            cells: CellCount::N(1024),
            folds: 5,
            svm: SvmConfig::default(),
            random_seeds: Vec::new(),
            quality: None,
            deviation: false,
        }
    }
}

/// The flavor name of the random-gene control points.
pub const RANDOM: &str = "random genes";
/// The flavor name of the deviation-sentence point.
pub const DEVIATION: &str = "deviation (all genes)";
/// The flavor name of the full-sentence reference point.
pub const ALL_GENES: &str = "all genes";

/// The genes one sweep point's sentences draw from.
#[derive(Debug, Clone, Copy)]
enum Unit {
    All,
    /// The deviation sentence of all genes ([`crate::deviation`]).
    Deviation,
    Hvg(Flavor, usize),
    Random {
        seed: u64,
        n_top: usize,
    },
}

/// `n_top` of the `n` genes drawn uniformly without replacement (ChaCha8, `seed`), sorted.
pub fn random_genes(n: usize, n_top: usize, seed: u64) -> Vec<usize> {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v = rand::seq::index::sample(&mut rng, n, n_top.min(n)).into_vec();
    v.sort_unstable();
    v
}

/// One point of the sweep (cached).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    pub dataset: String,
    /// HVG flavor, or `all genes` for the full-sentence reference.
    pub flavor: String,
    /// Requested HVG count (0 for the full sentence).
    pub n_top: usize,
    /// Genes the sentences draw from.
    pub n_genes: usize,
    /// Mean genes per sentence.
    pub mean_length: f64,
    pub r2: f64,
    pub pearson: f64,
    pub spearman: f64,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub macro_f1_sd: f64,
    /// The random control's seed (none for HVG flavors and the full sentence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// AvgBIO of PCA(50) of the genes' log-normalized expression (a stage of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_bio: Option<f64>,
}

/// Sentence features: each cell's genes get `intercept + slope·log10(1 + rank)` (floored at 0).
pub fn sentence_features(x: &Csr, tie_seed: u32, slope: f64, intercept: f64) -> Matrix {
    let (n, d) = (x.n_rows, x.n_cols);
    let mut data = vec![0f32; n * d];
    sentence::for_each_ranked(x, tie_seed, |i, ranked| {
        for (r, &g) in ranked.iter().enumerate() {
            let v = intercept + slope * ((1 + r) as f64).log10();
            data[i * d + g as usize] = v.max(0.0) as f32;
        }
    });
    Matrix {
        rows: n,
        cols: d,
        data,
    }
}

/// Scores the sentences built from the columns `cols` (all when `None`).
fn score(
    p: &Prepared,
    cols: Option<&[usize]>,
    labels: &[String],
    folds: &[classify::Fold],
    e: &Experiment,
    s: &SweepSection,
) -> Result<(usize, f64, reconstruct::RecResult, classify::Evaluation)> {
    let x = match cols {
        Some(c) => p.data.x.select_cols(c),
        None => p.data.x.clone(),
    };
    let mean_length = x.nnz() as f64 / x.n_rows.max(1) as f64;
    let cells = reconstruct::sample_cells(x.n_rows, s.cells.of(x.n_rows), e.seed);
    let rec = reconstruct::reconstruct(&x, &cells, RecModel::C2s, e.sentences.tie_seed)?;
    let feats = sentence_features(&x, e.sentences.tie_seed, rec.slope, rec.intercept);
    let ev = classify::evaluate(
        &feats,
        labels,
        folds,
        &Classifier::Svm(s.svm.clone()),
        tch::Device::Cpu,
    )?;
    Ok((x.n_cols, mean_length, rec, ev))
}

/// The deviation sentence's point: the line fitted to deviations from every cell's mean profile
/// (reference added back); the SVM reads, per fold, the sentence of deviations from that fold's
/// training cells, each gene valued `line(rank) + reference` (floored at 0).
fn score_deviation(
    p: &Prepared,
    labels: &[String],
    folds: &[classify::Fold],
    e: &Experiment,
    s: &SweepSection,
) -> Result<(usize, f64, reconstruct::RecResult, classify::Evaluation)> {
    use crate::deviation;
    let x = &p.data.x;
    let tie = e.sentences.tie_seed;
    let all: Vec<usize> = (0..x.n_rows).collect();
    let cells = reconstruct::sample_cells(x.n_rows, s.cells.of(x.n_rows), e.seed);
    let reference = deviation::reference_profile(x, &all)?;
    let rec = deviation::reconstruct(x, &reference, &cells, RecModel::C2s, tie)?;
    let features = |f: &classify::Fold| -> Result<Matrix> {
        let fit: Vec<usize> = f.train.iter().chain(&f.val).copied().collect();
        let r = deviation::reference_profile(x, &fit)?;
        deviation::sentence_features(x, &r, tie, (rec.slope, rec.intercept))
    };
    let svm = Classifier::Svm(s.svm.clone());
    let ev = classify::evaluate_per_fold(features, labels, folds, &svm, tch::Device::Cpu)?;
    let mean_length = x.data.iter().filter(|v| **v > 0.0).count() as f64 / x.n_rows.max(1) as f64;
    Ok((x.n_cols, mean_length, rec, ev))
}

fn dataset_points(
    e: &Experiment,
    d: &RunDataset,
    cache: &Cache,
    quiet: bool,
) -> Result<Vec<SweepPoint>> {
    let s = &e.sweep;
    let mut cx = PointCx {
        e,
        d,
        cache,
        data: DatasetContext::new(e, d, quiet),
        split: None,
    };
    let mut units: Vec<Unit> = vec![Unit::All];
    if s.deviation {
        units.push(Unit::Deviation);
    }
    for &f in &s.flavors {
        units.extend(s.n_top.iter().map(|&k| Unit::Hvg(f, k)));
    }
    for &seed in &s.random_seeds {
        units.extend(s.n_top.iter().map(|&n_top| Unit::Random { seed, n_top }));
    }
    units.into_iter().map(|u| cx.point(u)).collect()
}

impl Unit {
    /// The point's flavor name, `n_top` and control seed.
    fn names(self) -> (String, usize, Option<u64>) {
        match self {
            Unit::All => (ALL_GENES.to_string(), 0, None),
            Unit::Deviation => (DEVIATION.to_string(), 0, None),
            Unit::Hvg(f, k) => (f.to_string(), k, None),
            Unit::Random { seed, n_top } => (RANDOM.to_string(), n_top, Some(seed)),
        }
    }

    /// The HVG selection of an HVG unit.
    fn hvg_params(self, e: &Experiment) -> Option<HvgParams> {
        match self {
            Unit::Hvg(f, k) => Some(HvgParams {
                flavor: f,
                n_top_genes: k,
                ..e.hvg.params()
            }),
            _ => None,
        }
    }
}

/// One dataset's sweep: the data prepared once, labels and folds made once.
struct PointCx<'a> {
    e: &'a Experiment,
    d: &'a RunDataset,
    cache: &'a Cache,
    data: DatasetContext<'a>,
    split: Option<Split>,
}

impl PointCx<'_> {
    /// One point (a cached stage), with its AvgBIO (another) where the sweep asks for it.
    fn point(&mut self, u: Unit) -> Result<SweepPoint> {
        let (e, d, cache) = (self.e, self.d, self.cache);
        let s = &e.sweep;
        let (flavor, n_top, seed) = u.names();
        let hvg_params = u.hvg_params(e);
        let inputs = (
            d.data_key_with(e, cache, &hvg_params)?,
            e.seed,
            s.cells,
            s.folds,
            &s.svm,
        );
        let label = format!("{} {flavor} {n_top}", d.entry.id);
        let compute = || -> Result<SweepPoint> {
            let (p, labels, folds) = split_of(&mut self.data, &mut self.split, d, e)?;
            let cols = unit_cols(p, u, hvg_params.as_ref())?;
            let (n_genes, mean_length, rec, ev) = match u {
                Unit::Deviation => score_deviation(p, labels, folds, e, s)?,
                _ => score(p, cols.as_deref(), labels, folds, e, s)?,
            };
            Ok(SweepPoint {
                dataset: d.entry.id.clone(),
                flavor: flavor.clone(),
                n_top,
                n_genes,
                mean_length,
                r2: rec.r2,
                pearson: rec.pearson,
                spearman: rec.spearman,
                accuracy: ev.accuracy_mean,
                macro_f1: ev.macro_f1_mean,
                macro_f1_sd: ev.macro_f1_sd,
                seed,
                avg_bio: None,
            })
        };
        // HVG and full-sentence keys are unchanged by the controls (their cache entries stay valid)
        let (mut pt, _) = match seed {
            None if matches!(u, Unit::Deviation) => {
                cache.json("sweep", &label, &(&inputs, DEVIATION), compute)?
            }
            None => cache.json("sweep", &label, &inputs, compute)?,
            Some(sd) => cache.json(
                "sweep",
                &format!("{label} seed {sd}"),
                &(&inputs, RANDOM, sd, n_top),
                compute,
            )?,
        };
        if let (Some(q), false) = (&s.quality, matches!(u, Unit::Deviation)) {
            let key = (&inputs.0, seed, n_top, q, SWEEP_PCS, e.seed);
            let qlabel = format!(
                "{label}{} AvgBIO",
                seed.map(|v| format!(" seed {v}")).unwrap_or_default()
            );
            let (bio, _) = cache.json("sweep_quality", &qlabel, &key, || {
                self.avg_bio(u, hvg_params.as_ref(), q)
            })?;
            pt.avg_bio = Some(bio);
        }
        Ok(pt)
    }

    /// AvgBIO of PCA(50) of the unit's genes' log-normalized expression.
    fn avg_bio(&mut self, u: Unit, hvg: Option<&HvgParams>, q: &QualityParams) -> Result<f64> {
        let (p, labels, _) = split_of(&mut self.data, &mut self.split, self.d, self.e)?;
        let x = match unit_cols(p, u, hvg)? {
            Some(c) => hvg_dense(p, &c),
            None => all_dense(p),
        };
        let z = classify::pca_randomized(&x, SWEEP_PCS, self.e.seed);
        Ok(quality::evaluate(&z, labels, None, q)?.panel.avg_bio)
    }
}

type Split = (Vec<String>, Vec<classify::Fold>);

/// The prepared data with its labels and folds (made once per dataset).
fn split_of<'s>(
    data: &'s mut DatasetContext<'_>,
    split: &'s mut Option<Split>,
    d: &RunDataset,
    e: &Experiment,
) -> Result<(&'s Prepared, &'s [String], &'s [classify::Fold])> {
    let p = data.prepared()?;
    if split.is_none() {
        let key = d.entry.label_key.as_deref().unwrap_or("cell_type");
        let labels = p
            .data
            .obs_labels(key, "remove the unlabelled cells from the file")?;
        let folds = classify::stratified_kfold(&labels, e.sweep.folds, 0.0, e.seed)?;
        *split = Some((labels, folds));
    }
    let (labels, folds) = split.as_ref().expect("split above");
    Ok((p, labels, folds))
}

/// The QC-kept genes a unit's sentences draw from (`None`: all).
fn unit_cols(p: &Prepared, u: Unit, hvg: Option<&HvgParams>) -> Result<Option<Vec<usize>>> {
    Ok(match u {
        Unit::All | Unit::Deviation => None,
        Unit::Hvg(f, _) => {
            let on = if f.models_counts() {
                pipeline::HvgInput::Counts
            } else {
                pipeline::HvgInput::Log
            };
            let params = hvg.expect("hvg unit");
            Some(pipeline::select_hvg(p, params, on, None)?.indices())
        }
        Unit::Random { seed, n_top } => Some(random_genes(p.data.n_genes(), n_top, seed)),
    })
}

/// Runs the sweep and writes its table and figure to `out`.
pub fn run(
    e: &Experiment,
    datasets: &[RunDataset],
    cache: &Cache,
    out: &Path,
    quiet: bool,
) -> Result<RunSummary> {
    if e.sweep.n_top.is_empty() || e.sweep.flavors.is_empty() {
        return Err(e.err(
            "sweep",
            "sweep",
            "the sweep needs at least one n_top and one flavor",
            "list them under `sweep:` (see experiments/README.md)",
        ));
    }
    if e.sweep.n_top.contains(&0) {
        return Err(Error::param("sweep.n_top", "n_top values must be positive"));
    }
    let (done, skipped) = for_each_dataset(e, datasets, |d| dataset_points(e, d, cache, quiet))?;
    let pts: Vec<SweepPoint> = done.into_iter().flat_map(|(_, p)| p).collect();
    let df = sweep_frame(&pts)?;
    let s = &e.sweep;
    let mut o = Outputs::new(out);
    o.table(&df, names::SWEEP, &format!(
        "# HVG sweep — sentence length against what the sentence keeps\n\n`n_top` highly variable genes by each flavor (on log data; deviance and pearson_residuals on the QC-filtered counts), sentences of those genes; `all genes` = the full sentence; `random genes` = {} (controls: `n_top` genes drawn uniformly from the QC-kept genes, one row per seed). Reconstruction: Cell2Sentence's global log-rank line on {} sampled cells (seed {}). Annotation: a linear SVM (C = {}) whose input is the sentence alone (each gene's expression as the line reconstructs it from its rank), stratified {}-fold; mean over folds.{}",
        if s.random_seeds.is_empty() { "none in this run".to_string() } else { format!("seeds {:?}", s.random_seeds) },
        match s.cells { CellCount::N(k) => k.to_string(), CellCount::All => "all".into() }, e.seed, s.svm.c, s.folds,
        s.quality.as_ref().map_or(String::new(), |q| format!(" AvgBIO: the embedding-quality panel (Leiden on the {}-NN graph at the best of {} resolutions; mean of NMI, ARI and rescaled label silhouette) of PCA({SWEEP_PCS}) of the genes' log-normalized expression (randomized SVD, all cells).", q.n_neighbors, q.resolutions.len()))
    ))?;
    let mut ids: Vec<String> = pts.iter().map(|p| p.dataset.clone()).collect();
    ids.dedup();
    let mut index = format!("# {}\n\n{}\n\n- [table](sweep.md)\n", e.name, e.description);
    for id in &ids {
        let sel: Vec<SweepPoint> = pts.iter().filter(|p| &p.dataset == id).cloned().collect();
        let stem = names::sweep_figure(id);
        let plot = sweep_figure(
            &format!("HVG sweep — {id}: reconstruction and annotation against sentence length"),
            &sel,
        );
        o.figure(&plot, &stem, &stem)?;
        o.text(
            &names::svg(&stem),
            &sweep_svg(&format!("HVG sweep — {id}"), &sel)?,
        )?;
        index.push_str(&format!(
            "- [{id} figure]({}) ([static SVG]({}))\n",
            names::html(&stem),
            names::svg(&stem)
        ));
    }
    if !skipped.is_empty() {
        index.push_str("\nSkipped datasets:\n");
        for s in &skipped {
            index.push_str(&format!("- {s}\n"));
        }
    }
    o.text(names::INDEX, &index)?;
    Ok(o.finish(skipped))
}

/// The sweep table: one row per dataset and point.
fn sweep_frame(pts: &[SweepPoint]) -> Result<polars::prelude::DataFrame> {
    let f = |g: fn(&SweepPoint) -> f64| Col::F64(pts.iter().map(|p| Some(g(p))).collect());
    report::frame(vec![
        (
            "dataset",
            Col::Str(pts.iter().map(|p| Some(p.dataset.clone())).collect()),
        ),
        (
            "flavor",
            Col::Str(pts.iter().map(|p| Some(p.flavor.clone())).collect()),
        ),
        (
            "n_top",
            Col::I64(pts.iter().map(|p| p.n_top as i64).collect()),
        ),
        (
            "n_genes",
            Col::I64(pts.iter().map(|p| p.n_genes as i64).collect()),
        ),
        ("mean_length", f(|p| p.mean_length)),
        ("r2", f(|p| p.r2)),
        ("pearson", f(|p| p.pearson)),
        ("spearman", f(|p| p.spearman)),
        ("accuracy", f(|p| p.accuracy)),
        ("macro_f1", f(|p| p.macro_f1)),
        ("macro_f1_sd", f(|p| p.macro_f1_sd)),
        ("avg_bio", Col::F64(pts.iter().map(|p| p.avg_bio).collect())),
        (
            "seed",
            Col::Str(pts.iter().map(|p| p.seed.map(|v| v.to_string())).collect()),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_genes_are_seeded_distinct_sorted_and_clamped() {
        let a = random_genes(1000, 50, 3);
        assert_eq!(a, random_genes(1000, 50, 3));
        assert_ne!(a, random_genes(1000, 50, 4));
        assert_eq!(a.len(), 50);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a[49] < 1000);
        assert_eq!(random_genes(10, 50, 0), (0..10).collect::<Vec<_>>());
    }
}
