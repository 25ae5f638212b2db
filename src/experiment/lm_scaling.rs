//! The language-model scaling sweep (task `lm_scaling`): the pretrained model of the paper's protocol
//! at several checkpoints of its one run (0 = the untrained initialisation), each reported as its corpus
//! validation loss and as the annotation accuracy and macro-F1 of its embeddings (MLP, the
//! experiment's split) on every evaluated dataset; and the layer sweep of the largest budget.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::annotation::{self, Method};
use super::lm_protocol::{LmProtocol, LmSource};
use super::outputs::{names, Outputs};
use super::{mode_label, Experiment, RunDataset, RunSummary};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::figure;
use crate::lm::{self, train::LogRow};
use crate::report::{self, Col};
use crate::sentence::GeneSet;

/// Sweep settings (task `lm_scaling`); the model, corpus and MLP come from `annotation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LmScalingSection {
    /// Checkpoints of the pretraining run, in optimiser steps: `annotation.pretrain.lm.steps` and
    /// members of its `snapshots`; 0 = untrained.
    pub budgets: Vec<usize>,
    /// Score every hidden state of the largest budget's model (full sentences).
    pub layer_sweep: bool,
}

impl Default for LmScalingSection {
    fn default() -> Self {
        LmScalingSection {
            budgets: vec![0, 250, 500, 1000],
            layer_sweep: true,
        }
    }
}

/// One budget × dataset × mode.
#[derive(Debug, Clone)]
struct Point {
    budget: usize,
    tokens: Option<usize>,
    val_loss: Option<f64>,
    dataset: String,
    mode: GeneSet,
    accuracy: f64,
    macro_f1: f64,
}

/// The experiment at one budget: the pretrained protocol's LM rows only.
fn at_budget(e: &Experiment, steps: usize) -> Experiment {
    let mut x = e.clone();
    let a = &mut x.annotation;
    a.methods = vec![Method::Lm];
    a.lm_protocol = LmProtocol::Pretrained;
    a.model = None;
    a.pretrain.at_step = Some(steps);
    a.pretrain.finetune = None;
    a.pretrain.untrained_control = false;
    x
}

/// Runs the sweep and writes `scaling.{csv,md}`, `layers.{csv,md}` and figures to `out`.
pub fn run(
    e: &Experiment,
    datasets: &[RunDataset],
    cache: &Cache,
    out: &Path,
    quiet: bool,
    data_dir: Option<&Path>,
) -> Result<RunSummary> {
    let s = &e.lm_scaling;
    if s.budgets.is_empty() {
        return Err(e.err(
            "lm_scaling",
            "budgets",
            "no budgets",
            "list optimiser steps, e.g. [0, 250, 500, 1000]",
        ));
    }
    let (points, largest) = budget_points(e, datasets, cache, quiet, data_dir)?;
    let mut o = Outputs::new(out);
    scaling_table(e, &points, &mut o)?;
    scaling_figures(e, datasets, &points, &mut o)?;
    if let (true, Some(model)) = (s.layer_sweep, &largest) {
        layers_table(e, datasets, cache, model, quiet, &mut o)?;
    }
    let index = format!(
        "# {}\n\n{}\n\n- [scaling](scaling.md) — validation loss and annotation by budget\n{}",
        e.name,
        e.description,
        if o.files().contains(&names::md(names::LAYERS)) {
            "- [layers](layers.md) — every hidden state of the largest model\n"
        } else {
            ""
        }
    );
    o.text(names::INDEX, &index)?;
    Ok(o.finish(Vec::new()))
}

/// Every budget's pretrained-LM rows per dataset and mode, and the largest budget's model.
fn budget_points(
    e: &Experiment,
    datasets: &[RunDataset],
    cache: &Cache,
    quiet: bool,
    data_dir: Option<&Path>,
) -> Result<(Vec<Point>, Option<PathBuf>)> {
    let s = &e.lm_scaling;
    let evaluated: Vec<String> = datasets.iter().map(|d| d.entry.id.clone()).collect();
    let mut points = Vec::new();
    let mut largest = None;
    for &b in &s.budgets {
        let eb = at_budget(e, b);
        for d in datasets {
            let rows = annotation::lm_evaluations(&eb, d, cache, quiet, &evaluated, data_dir)
                .map_err(|err| Error::InExperiment {
                    file: e.file.clone(),
                    dataset: d.entry.id.clone(),
                    source: Box::new(err),
                })?;
            for r in rows
                .into_iter()
                .filter(|r| r.source == LmSource::Pretrained)
            {
                let (tokens, val_loss) = match &r.model {
                    Some(m) => (
                        lm::Corpus::read(m)?.map(|c| c.tokens_seen),
                        LogRow::read(m)?.iter().rev().find_map(|l| l.val_loss),
                    ),
                    None => (None, None),
                };
                if b == *s.budgets.iter().max().expect("non-empty") && r.mode == GeneSet::All {
                    largest = r.model.clone();
                }
                points.push(Point {
                    budget: b,
                    tokens,
                    val_loss,
                    dataset: d.entry.id.clone(),
                    mode: r.mode,
                    accuracy: r.eval.accuracy_mean,
                    macro_f1: r.eval.macro_f1_mean,
                });
            }
        }
    }
    Ok((points, largest))
}

/// Validation loss and annotation by budget.
fn scaling_table(e: &Experiment, points: &[Point], o: &mut Outputs) -> Result<()> {
    let df = report::frame(vec![
        (
            "budget_steps",
            Col::I64(points.iter().map(|p| p.budget as i64).collect()),
        ),
        (
            "tokens_seen",
            Col::F64(points.iter().map(|p| p.tokens.map(|t| t as f64)).collect()),
        ),
        (
            "val_loss",
            Col::F64(points.iter().map(|p| p.val_loss).collect()),
        ),
        (
            "dataset",
            Col::Str(points.iter().map(|p| Some(p.dataset.clone())).collect()),
        ),
        (
            "sentences",
            Col::Str(
                points
                    .iter()
                    .map(|p| Some(mode_label(p.mode).to_string()))
                    .collect(),
            ),
        ),
        (
            "accuracy",
            Col::F64(points.iter().map(|p| Some(p.accuracy)).collect()),
        ),
        (
            "macro_f1",
            Col::F64(points.iter().map(|p| Some(p.macro_f1)).collect()),
        ),
    ])?;
    let p = &e.annotation.pretrain.lm;
    o.table(&df, names::SCALING, &format!(
        "# {} — language-model scaling\n\nOne cell-sentence LM ({} layers, hidden {}, heads {}, {} genes per sentence, batch {}, peak lr {}, cosine to {}×) pretrained for {} steps on every reachable dataset except the evaluated ones{}; each budget is a checkpoint of that one run (as Pythia publishes its checkpoints; the learning rate at a budget is the run's schedule there, not a finished cosine; budget 0 = the untrained initialisation). `val_loss`: next-gene cross-entropy on the corpus's held-out 5 %. Accuracy and macro-F1: the paper's MLP on the mean-pooled last hidden state, {}-fold.",
        e.name, p.layers, p.hidden, p.heads, p.max_genes, p.batch_size, p.lr, p.min_lr, p.steps,
        if e.annotation.pretrain.cell_type_task {
            " on Cell2Sentence's cell-type-prediction task (each corpus sentence followed by its cell type; the evaluated cells are embedded from their bare sentences)"
        } else {
            ""
        },
        e.annotation.folds
    ))?;
    Ok(())
}

/// Macro-F1 against budget, one figure per dataset.
fn scaling_figures(
    e: &Experiment,
    datasets: &[RunDataset],
    points: &[Point],
    o: &mut Outputs,
) -> Result<()> {
    for d in datasets {
        let id = &d.entry.id;
        let mut series = Vec::new();
        for mode in &e.modes {
            let sel: Vec<&Point> = points
                .iter()
                .filter(|p| &p.dataset == id && p.mode == *mode)
                .collect();
            series.push((
                format!("macro-F1, {} sentences", mode_label(*mode)),
                sel.iter().map(|p| p.budget as f64).collect::<Vec<_>>(),
                sel.iter().map(|p| p.macro_f1).collect::<Vec<_>>(),
            ));
        }
        let plot = figure::lines(
            &format!("LM scaling — {id}: annotation macro-F1 by pretraining steps"),
            "pretraining steps (0 = untrained)",
            "macro-F1",
            &series,
        );
        let stem = names::scaling_figure(id);
        o.figure(&plot, &stem, &stem)?;
    }
    Ok(())
}

/// Every hidden state of the largest model, scored by the MLP (full sentences).
fn layers_table(
    e: &Experiment,
    datasets: &[RunDataset],
    cache: &Cache,
    model: &Path,
    quiet: bool,
    o: &mut Outputs,
) -> Result<()> {
    let s = &e.lm_scaling;
    let mut rows: Vec<(String, usize, f64, f64)> = Vec::new();
    for d in datasets {
        let evs = annotation::layer_evaluations(e, d, cache, model, GeneSet::All, quiet)?;
        for (l, ev) in evs.iter().enumerate() {
            rows.push((d.entry.id.clone(), l, ev.accuracy_mean, ev.macro_f1_mean));
        }
    }
    let df = report::frame(vec![
        (
            "dataset",
            Col::Str(rows.iter().map(|r| Some(r.0.clone())).collect()),
        ),
        (
            "hidden_state",
            Col::I64(rows.iter().map(|r| r.1 as i64).collect()),
        ),
        (
            "accuracy",
            Col::F64(rows.iter().map(|r| Some(r.2)).collect()),
        ),
        (
            "macro_f1",
            Col::F64(rows.iter().map(|r| Some(r.3)).collect()),
        ),
    ])?;
    o.table(&df, names::LAYERS, &format!(
        "# {} — layer sweep of the {}-step model (full sentences)\n\nHidden state 0 = the token embeddings, i = the output of block i, the last = the final layer-normed output (the paper's embedding); each mean-pooled and scored by the MLP.",
        e.name, s.budgets.iter().max().expect("non-empty")
    ))?;
    Ok(())
}
