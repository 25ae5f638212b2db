//! The reconstruction experiment: Table I and Figures II–VII.
//!
//! Per dataset: QC + normalize + log (cached as the kept-cell/gene counts and the HVG list), then
//! per sentence mode and model a cached reconstruction record (metrics plus a small seeded sample
//! of points for the figure). Tables and figures are rebuilt from the records on every run.
use std::collections::HashMap;
use std::path::Path;

use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::context::{for_each_dataset, DatasetContext};
use super::outputs::{names, Outputs};
use super::{mode_label, Experiment, RunDataset, RunSummary};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::figure;
use crate::paper::{RecMetrics, Reported};
use crate::reconstruct::{self, RankedEntries, RecModel};
use crate::report::{self, Col};
use crate::sentence::GeneSet;

/// Output of the cached selection stage: what QC kept and the HVG list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Cells read.
    pub cells_in: usize,
    /// Cells after QC.
    pub cells_kept: usize,
    /// Genes after QC.
    pub genes_kept: usize,
    /// Highly variable genes, in the dataset's gene order.
    pub hvg: Vec<String>,
}

/// Output of the cached reconstruction stage for one dataset, mode and model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecRecord {
    /// Dataset id.
    pub dataset: String,
    /// Sentence mode.
    pub mode: GeneSet,
    /// Model.
    pub model: RecModel,
    /// R².
    pub r2: f64,
    /// Pearson.
    pub pearson: f64,
    /// Spearman.
    pub spearman: f64,
    /// Cells scored.
    pub n_cells: usize,
    /// Non-zero entries scored.
    pub n_entries: usize,
    /// Genes the sentences draw from.
    pub n_genes: usize,
    /// Global slope.
    pub slope: f64,
    /// Global intercept.
    pub intercept: f64,
    /// Figure sample: true values (4 decimals).
    pub fig_true: Vec<f64>,
    /// Figure sample: reconstructed values (4 decimals).
    pub fig_pred: Vec<f64>,
}

/// A dataset of the run and its ranked entries per sentence mode, made on first use.
struct Lazy<'a> {
    data: DatasetContext<'a>,
    entries: HashMap<GeneSet, RankedEntries>,
}

impl Lazy<'_> {
    fn entries(&mut self, mode: GeneSet, sel: &Selection) -> Result<&RankedEntries> {
        if !self.entries.contains_key(&mode) {
            let e = self.data.experiment;
            let (seed, k, tie) = (e.seed, e.reconstruction.cells, e.sentences.tie_seed);
            let p = self.data.prepared()?;
            let x = match mode {
                GeneSet::All => p.data.x.clone(),
                GeneSet::Hvg => {
                    let pos: HashMap<&str, usize> = p
                        .data
                        .genes
                        .iter()
                        .enumerate()
                        .map(|(i, g)| (g.as_str(), i))
                        .collect();
                    let idx: Vec<usize> = sel
                        .hvg
                        .iter()
                        .map(|g| pos.get(g.as_str()).copied().ok_or_else(|| Error::param("hvg", format!("cached HVG `{g}` is not a gene of the data; rerun with --force"))))
                        .collect::<Result<_>>()?;
                    p.data.x.select_cols(&idx)
                }
            };
            let cells = reconstruct::sample_cells(x.n_rows, k.of(x.n_rows), seed);
            if cells.is_empty() {
                return Err(Error::param(
                    "cells",
                    format!("{}: no cells left after QC", self.data.id()),
                ));
            }
            self.entries
                .insert(mode, reconstruct::rank_entries(&x, &cells, tie));
        }
        Ok(&self.entries[&mode])
    }
}

fn figure_sample(n: usize, k: usize, seed: u64) -> Vec<usize> {
    if k >= n {
        return (0..n).collect();
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_f16e);
    let mut idx = rand::seq::index::sample(&mut rng, n, k).into_vec();
    idx.sort_unstable();
    idx
}

/// Computes (or reads from the cache) every record of one dataset.
fn dataset_records(
    e: &Experiment,
    d: &RunDataset,
    cache: &Cache,
    quiet: bool,
) -> Result<(Selection, Vec<RecRecord>)> {
    let sel_inputs = d.data_key(e, cache)?;
    let mut lazy = Lazy {
        data: DatasetContext::new(e, d, quiet),
        entries: HashMap::new(),
    };
    let id = d.entry.id.clone();
    let (sel, _) = cache.json("selection", &id, &sel_inputs, || {
        let (p, hvg) = lazy.data.hvg()?;
        Ok(Selection {
            cells_in: p.report.as_ref().map_or(p.data.n_cells(), |r| r.cells_in),
            cells_kept: p.data.n_cells(),
            genes_kept: p.data.n_genes(),
            hvg: hvg.iter().map(|&j| p.data.genes[j].clone()).collect(),
        })
    })?;
    let sel_key = Cache::key("selection", &sel_inputs);
    let r = &e.reconstruction;
    let mut records = Vec::new();
    for &mode in &e.modes {
        for &model in &r.models {
            let inputs = (&sel_key, mode, r.cells, e.seed, model, r.figure_points);
            let label = format!("{id} {} {}", mode_label(mode), model);
            let (rec, _) = cache.json("reconstruction", &label, &inputs, || {
                let entries = lazy.entries(mode, &sel)?;
                let res = reconstruct::fit_predict(entries, model, reconstruct::BASE10_THRESHOLD)?;
                let pick = figure_sample(entries.y.len(), r.figure_points, e.seed);
                Ok(RecRecord {
                    dataset: id.clone(),
                    mode,
                    model,
                    r2: res.r2,
                    pearson: res.pearson,
                    spearman: res.spearman,
                    n_cells: res.n_cells,
                    n_entries: res.n_entries,
                    n_genes: match mode {
                        GeneSet::All => sel.genes_kept,
                        GeneSet::Hvg => sel.hvg.len(),
                    },
                    slope: res.slope,
                    intercept: res.intercept,
                    fig_true: pick.iter().map(|&k| figure::r4(entries.y[k])).collect(),
                    fig_pred: pick.iter().map(|&k| figure::r4(res.predicted[k])).collect(),
                })
            })?;
            records.push(rec);
        }
    }
    Ok((sel, records))
}

/// The preprocessing actually configured, in words (the paper's settings are named as such).
fn preprocess_text(p: &crate::preprocess::PreprocessParams) -> String {
    let q = &p.qc;
    let limit =
        |v: Option<String>, unit: &str| v.map_or(String::new(), |v| format!(", < {v}{unit}"));
    let paper = if *p == crate::preprocess::PreprocessParams::default() {
        " as the paper"
    } else {
        ""
    };
    format!(
        "QC{paper} (min {} genes, min {} cells{}{}), normalize_total to {}, log1p {}",
        q.min_genes,
        q.min_cells,
        limit(q.max_genes.map(|v| v.to_string()), " genes"),
        limit(
            q.max_pct_mt.map(|v| v.to_string()),
            &format!(" % {}", q.mt_prefix)
        ),
        p.target_sum
            .map_or("the median total".into(), |t| t.to_string()),
        p.log_base.map_or("natural".into(), |b| format!("base {b}")),
    )
}

fn paper_metrics(reported: &Reported, paper: Option<&str>, mode: GeneSet) -> Option<RecMetrics> {
    let p = reported.reconstruction_of(paper?)?;
    Some(match mode {
        GeneSet::All => p.full,
        GeneSet::Hvg => p.hvg,
    })
}

fn role(d: &RunDataset, reported: &Reported) -> String {
    match &d.paper {
        Some(p) if reported.reconstruction_of(p).is_some() => {
            format!("substitute for the paper's {p}")
        }
        Some(p) => {
            format!("substitute for the paper's {p} (no reconstruction numbers in the paper)")
        }
        None => "no counterpart in the paper".into(),
    }
}

/// Runs the reconstruction experiment and writes its tables and figures to `out`.
pub fn run(
    e: &Experiment,
    datasets: &[RunDataset],
    reported: &Reported,
    cache: &Cache,
    out: &Path,
    quiet: bool,
) -> Result<RunSummary> {
    let (done, skipped) = for_each_dataset(e, datasets, |d| dataset_records(e, d, cache, quiet))?;
    let all: Vec<(&RunDataset, Selection, Vec<RecRecord>)> =
        done.into_iter().map(|(d, (s, r))| (d, s, r)).collect();
    let mut o = Outputs::new(out);
    datasets_table(e, &all, reported, &mut o)?;
    let rows: Vec<(&RunDataset, &RecRecord)> = all
        .iter()
        .flat_map(|(d, _, r)| r.iter().map(move |x| (*d, x)))
        .collect();
    per_dataset_table(e, &rows, reported, &mut o)?;
    let ids: Vec<String> = all.iter().map(|(d, _, _)| d.entry.id.clone()).collect();
    let t_rows = table_i(e, &ids, &rows, reported, &mut o)?;
    scatter_figures(e, &rows, &mut o)?;
    table_i_figure(e, ids.len(), &t_rows, reported, &mut o)?;
    let mut idx = format!("# {}\n\n{}\n\nTables: [Table I](table_I.md), [per dataset](reconstruction.md), [datasets](datasets.md).\n\nFigures:\n", e.name, e.description);
    for f in o.files().iter().filter(|f| f.ends_with(".html")) {
        idx.push_str(&format!("- [{f}]({f})\n"));
    }
    if !skipped.is_empty() {
        idx.push_str("\nSkipped datasets:\n");
        for s in &skipped {
            idx.push_str(&format!("- {s}\n"));
        }
    }
    o.text(names::INDEX, &idx)?;
    Ok(o.finish(skipped))
}

/// Table I's rows: mode, model, mean metrics over the datasets, number of datasets.
type MeanRow = (GeneSet, RecModel, RecMetrics, usize);

/// QC and HVG per dataset, with sentence lengths.
fn datasets_table(
    e: &Experiment,
    all: &[(&RunDataset, Selection, Vec<RecRecord>)],
    reported: &Reported,
    o: &mut Outputs,
) -> Result<()> {
    let mean_len = |recs: &[RecRecord], m: GeneSet| {
        recs.iter()
            .find(|r| r.mode == m)
            .map(|r| r.n_entries as f64 / r.n_cells.max(1) as f64)
    };
    let df = report::frame(vec![
        (
            "dataset",
            Col::Str(
                all.iter()
                    .map(|(d, _, _)| Some(d.entry.id.clone()))
                    .collect(),
            ),
        ),
        (
            "paper_dataset",
            Col::Str(all.iter().map(|(d, _, _)| d.paper.clone()).collect()),
        ),
        (
            "cells_in",
            Col::I64(all.iter().map(|(_, s, _)| s.cells_in as i64).collect()),
        ),
        (
            "cells_kept",
            Col::I64(all.iter().map(|(_, s, _)| s.cells_kept as i64).collect()),
        ),
        (
            "genes_kept",
            Col::I64(all.iter().map(|(_, s, _)| s.genes_kept as i64).collect()),
        ),
        (
            "hvg",
            Col::I64(all.iter().map(|(_, s, _)| s.hvg.len() as i64).collect()),
        ),
        (
            "genes_per_cell_full",
            Col::F64(
                all.iter()
                    .map(|(_, _, r)| mean_len(r, GeneSet::All))
                    .collect(),
            ),
        ),
        (
            "genes_per_cell_hvg",
            Col::F64(
                all.iter()
                    .map(|(_, _, r)| mean_len(r, GeneSet::Hvg))
                    .collect(),
            ),
        ),
        (
            "role",
            Col::Str(
                all.iter()
                    .map(|(d, _, _)| Some(role(d, reported)))
                    .collect(),
            ),
        ),
    ])?;
    o.table(&df, names::DATASETS, &format!(
        "# Datasets of `{}`\n\n{}; HVG {} n_top {} on {} data. Sentence length = mean non-zero genes per sampled cell.",
        e.name, preprocess_text(&e.preprocess), serde_json::to_string(&e.hvg.flavor).unwrap_or_default().trim_matches('"'), e.hvg.n_top_genes, serde_json::to_string(&e.hvg.on).unwrap_or_default().trim_matches('"')
    ))?;
    Ok(())
}

/// Reconstruction per dataset, mode and model, beside the paper's (Figures II–VII).
fn per_dataset_table(
    e: &Experiment,
    rows: &[(&RunDataset, &RecRecord)],
    reported: &Reported,
    o: &mut Outputs,
) -> Result<()> {
    let paper_of = |d: &RunDataset, r: &RecRecord| {
        (r.model == RecModel::C2s)
            .then(|| paper_metrics(reported, d.paper.as_deref(), r.mode))
            .flatten()
    };
    let metric =
        |f: fn(&RecRecord) -> f64| Col::F64(rows.iter().map(|(_, r)| Some(f(r))).collect());
    let pmetric = |f: fn(&RecMetrics) -> f64| {
        Col::F64(
            rows.iter()
                .map(|(d, r)| paper_of(d, r).map(|p| f(&p)))
                .collect(),
        )
    };
    let dmetric = |f: fn(&RecRecord) -> f64, g: fn(&RecMetrics) -> f64| {
        Col::F64(
            rows.iter()
                .map(|(d, r)| paper_of(d, r).map(|p| f(r) - g(&p)))
                .collect(),
        )
    };
    let text = |f: &dyn Fn(&RunDataset, &RecRecord) -> Option<String>| {
        Col::Str(rows.iter().map(|(d, r)| f(d, r)).collect())
    };
    let df = report::frame(vec![
        ("dataset", text(&|d, _| Some(d.entry.id.clone()))),
        ("paper_dataset", text(&|d, _| d.paper.clone())),
        ("mode", text(&|_, r| Some(mode_label(r.mode).to_string()))),
        ("model", text(&|_, r| Some(r.model.to_string()))),
        (
            "cells",
            Col::I64(rows.iter().map(|(_, r)| r.n_cells as i64).collect()),
        ),
        (
            "entries",
            Col::I64(rows.iter().map(|(_, r)| r.n_entries as i64).collect()),
        ),
        ("r2", metric(|r| r.r2)),
        ("pearson", metric(|r| r.pearson)),
        ("spearman", metric(|r| r.spearman)),
        ("paper_r2", pmetric(|p| p.r2)),
        ("paper_pearson", pmetric(|p| p.pearson)),
        ("paper_spearman", pmetric(|p| p.spearman)),
        ("diff_r2", dmetric(|r| r.r2, |p| p.r2)),
        ("diff_pearson", dmetric(|r| r.pearson, |p| p.pearson)),
        ("diff_spearman", dmetric(|r| r.spearman, |p| p.spearman)),
        ("slope", metric(|r| r.slope)),
        ("intercept", metric(|r| r.intercept)),
        ("note", text(&|d, _| Some(role(d, reported)))),
    ])?;
    o.table(&df, names::RECONSTRUCTION, &format!(
        "# Reconstruction per dataset (Figures II–VII)\n\nExpression reconstructed from log10(1 + rank) on {} seeded sampled cells (seed {}); `c2s` = Cell2Sentence's global line (what produced the paper's numbers), `per-gene` = the paper's equation (1). Paper values are shown for `c2s` rows of datasets that stand in for one of the paper's; diff = ours − paper.",
        match e.reconstruction.cells { super::CellCount::N(k) => k.to_string(), super::CellCount::All => "all".into() }, e.seed
    ))?;
    Ok(())
}

/// Table I: means over our datasets beside the paper's.
fn table_i(
    e: &Experiment,
    ids: &[String],
    rows: &[(&RunDataset, &RecRecord)],
    reported: &Reported,
    o: &mut Outputs,
) -> Result<Vec<MeanRow>> {
    let n = ids.len();
    let t_rows = means(e, rows);
    let tpaper = |mode: GeneSet, model: RecModel| {
        (model == RecModel::C2s).then_some(match mode {
            GeneSet::All => reported.table_i.full,
            GeneSet::Hvg => reported.table_i.hvg,
        })
    };
    let tcol = |f: fn(&RecMetrics) -> f64| {
        Col::F64(t_rows.iter().map(|(_, _, m, _)| Some(f(m))).collect())
    };
    let tp = |f: fn(&RecMetrics) -> f64| {
        Col::F64(
            t_rows
                .iter()
                .map(|(mo, md, _, _)| tpaper(*mo, *md).map(|p| f(&p)))
                .collect(),
        )
    };
    let td = |f: fn(&RecMetrics) -> f64| {
        Col::F64(
            t_rows
                .iter()
                .map(|(mo, md, m, _)| tpaper(*mo, *md).map(|p| f(m) - f(&p)))
                .collect(),
        )
    };
    let text = |f: fn(&MeanRow) -> String| Col::Str(t_rows.iter().map(|r| Some(f(r))).collect());
    let df = report::frame(vec![
        ("mode", text(|r| mode_label(r.0).to_string())),
        ("model", text(|r| r.1.to_string())),
        (
            "datasets",
            Col::I64(t_rows.iter().map(|(_, _, _, k)| *k as i64).collect()),
        ),
        ("r2", tcol(|m| m.r2)),
        ("pearson", tcol(|m| m.pearson)),
        ("spearman", tcol(|m| m.spearman)),
        ("paper_r2", tp(|m| m.r2)),
        ("paper_pearson", tp(|m| m.pearson)),
        ("paper_spearman", tp(|m| m.spearman)),
        ("diff_r2", td(|m| m.r2)),
        ("diff_pearson", td(|m| m.pearson)),
        ("diff_spearman", td(|m| m.spearman)),
    ])?;
    o.table(&df, names::TABLE_I, &format!(
        "# Table I — mean reconstruction quality, full vs HVG sentences\n\nOurs: mean over {n} datasets ({}); the paper: mean over Liver, Skin and Pancreas (CellFM curation, not available here), so the comparison is of the protocol, not the data. Cell2Sentence's own PBMC figures, quoted by the paper: R² {}, Spearman {}.",
        ids.join(", "), reported.c2s_original_pbmc.0, reported.c2s_original_pbmc.1
    ))?;
    Ok(t_rows)
}

/// Each mode and model's mean metrics over the datasets, with the number of datasets.
fn means(e: &Experiment, rows: &[(&RunDataset, &RecRecord)]) -> Vec<MeanRow> {
    let mut t_rows = Vec::new();
    for &mode in &e.modes {
        for &model in &e.reconstruction.models {
            let sel: Vec<&RecRecord> = rows
                .iter()
                .map(|(_, r)| *r)
                .filter(|r| r.mode == mode && r.model == model)
                .collect();
            let k = sel.len().max(1) as f64;
            t_rows.push((
                mode,
                model,
                RecMetrics {
                    r2: sel.iter().map(|r| r.r2).sum::<f64>() / k,
                    pearson: sel.iter().map(|r| r.pearson).sum::<f64>() / k,
                    spearman: sel.iter().map(|r| r.spearman).sum::<f64>() / k,
                },
                sel.len(),
            ));
        }
    }
    t_rows
}

/// One true-vs-reconstructed scatter per dataset and mode (the first model).
fn scatter_figures(
    e: &Experiment,
    rows: &[(&RunDataset, &RecRecord)],
    o: &mut Outputs,
) -> Result<()> {
    for (d, r) in rows
        .iter()
        .filter(|(_, r)| r.model == e.reconstruction.models[0])
    {
        let stem = names::reconstruction_figure(&d.entry.id, r.mode);
        let stands = d
            .paper
            .as_ref()
            .map_or(String::new(), |p| format!(" (for the paper's {p})"));
        let title = format!(
            "{}{stands}, {} sentences: R² {:.3}, Pearson {:.3}, Spearman {:.3} ({} model, {} cells)",
            d.entry.id, mode_label(r.mode), r.r2, r.pearson, r.spearman, r.model, r.n_cells
        );
        let plot = figure::scatter_true_vs_pred(&title, &r.fig_true, &r.fig_pred);
        o.figure(&plot, &stem, &title)?;
    }
    Ok(())
}

/// Table I as grouped bars beside the paper's.
fn table_i_figure(
    e: &Experiment,
    n: usize,
    t_rows: &[MeanRow],
    reported: &Reported,
    o: &mut Outputs,
) -> Result<()> {
    let cats: Vec<String> = ["R²", "Pearson", "Spearman"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut series = Vec::new();
    for (mode, model, m, _) in t_rows
        .iter()
        .filter(|(_, md, _, _)| *md == e.reconstruction.models[0])
    {
        series.push((
            format!("ours, {} ({})", mode_label(*mode), model),
            vec![Some(m.r2), Some(m.pearson), Some(m.spearman)],
        ));
    }
    for (label, p) in [
        ("paper, full", reported.table_i.full),
        ("paper, hvg", reported.table_i.hvg),
    ] {
        series.push((
            label.to_string(),
            vec![Some(p.r2), Some(p.pearson), Some(p.spearman)],
        ));
    }
    let title = format!("Table I: mean reconstruction, ours over {n} datasets vs the paper");
    let plot = figure::grouped_bars(&title, "mean over datasets", &cats, &series);
    o.figure(&plot, names::TABLE_I, &title)?;
    Ok(())
}
