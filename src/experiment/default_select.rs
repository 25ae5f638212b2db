//! The held-out default chosen without the evaluated data (issue 29 item 3): the next-gene model
//! and the same model after the answer-only stage compete on a corpus dataset whose labels that
//! stage never read (`pretrain.select_on`), by the use the default serves — the frozen
//! mean-pooled embedding of full sentences fed to the paper's MLP, stratified k-fold. The
//! untrained model of the same shape stands beside them as the control; the evaluated datasets
//! are never read.
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::lm_protocol::{self, LmProtocol, LmSource, PretrainSection};
use super::outputs::{names, Outputs};
use super::{pretrain, Experiment};
use crate::cache::Cache;
use crate::classify::{self, Classifier};
use crate::error::{Error, Result};
use crate::lm::{self, EmbedOptions};
use crate::report::{self, Col};

/// One model's frozen-embedding score on the selection dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub source: LmSource,
    /// Whether the model may be chosen (the untrained control may not).
    pub candidate: bool,
    pub accuracy: f64,
    pub accuracy_sd: f64,
    pub macro_f1: f64,
    pub macro_f1_sd: f64,
}

/// The selection's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// The corpus dataset kept out of the answer stage's labels and scored.
    pub dataset: String,
    pub cells: usize,
    pub labels: usize,
    pub folds: usize,
    pub candidates: Vec<Candidate>,
    /// The candidate of the highest mean macro-F1.
    pub chosen: LmSource,
}

/// Where the selection runs and how it scores.
pub struct SelectionRun<'a> {
    pub e: &'a Experiment,
    pub evaluated: &'a [String],
    pub data_dir: Option<&'a Path>,
    pub cache: &'a Cache,
    pub device: tch::Device,
    pub quiet: bool,
}

/// The selection of an annotation experiment with `pretrain.select_on` (and the `pretrained`
/// protocol), written as the table [`names::DEFAULT_SELECTION`]; `None` otherwise.
pub fn run_and_write(r: &SelectionRun<'_>, o: &mut Outputs) -> Result<Option<Selection>> {
    let a = &r.e.annotation;
    if a.lm_protocol != LmProtocol::Pretrained {
        return Ok(None);
    }
    let Some(sel) = select_default(r, &a.pretrain)? else {
        return Ok(None);
    };
    write_selection(&sel, o)?;
    Ok(Some(sel))
}

/// Scores the next-gene model, the model after an answer stage that left `p.select_on`'s labels
/// out, and the untrained control on `p.select_on` (`None` when it is not set).
pub fn select_default(r: &SelectionRun<'_>, p: &PretrainSection) -> Result<Option<Selection>> {
    let Some(id) = &p.select_on else {
        return Ok(None);
    };
    let a = &r.e.annotation;
    let (words, labels) = selection_cells(r, p, id, a.max_genes)?;
    let pretrained = |untrained| {
        lm_protocol::pretrained_model(
            r.e,
            p,
            r.evaluated,
            r.data_dir,
            r.cache,
            untrained,
            r.device,
            r.quiet,
        )
        .map(|m| m.0)
    };
    let base = pretrained(false)?;
    let aside = std::slice::from_ref(id);
    let (answers, _) = lm_protocol::answer_model(
        r.e,
        p,
        r.evaluated,
        aside,
        r.data_dir,
        r.cache,
        &base,
        r.device,
        r.quiet,
    )?;
    let models = [
        (LmSource::Pretrained, base, true),
        (LmSource::AnswerOnly, answers, true),
        (LmSource::Untrained, pretrained(true)?, false),
    ];
    let folds = classify::stratified_kfold(&labels, a.folds, a.val_fraction, r.e.seed)?;
    let mut candidates = Vec::new();
    for (source, dir, candidate) in models {
        let x = frozen_embedding(r, &dir, &words, a.max_genes, id)?;
        let ev = classify::evaluate(
            &x,
            &labels,
            &folds,
            &Classifier::Mlp(a.mlp.clone()),
            r.device,
        )?;
        candidates.push(Candidate {
            source,
            candidate,
            accuracy: ev.accuracy_mean,
            accuracy_sd: ev.accuracy_sd,
            macro_f1: ev.macro_f1_mean,
            macro_f1_sd: ev.macro_f1_sd,
        });
    }
    let chosen = chosen(&candidates);
    let mut distinct = labels.clone();
    distinct.sort();
    distinct.dedup();
    Ok(Some(Selection {
        dataset: id.clone(),
        cells: labels.len(),
        labels: distinct.len(),
        folds: folds.len(),
        candidates,
        chosen,
    }))
}

/// The candidate of the highest mean macro-F1 (the first on a tie: the next-gene model).
fn chosen(candidates: &[Candidate]) -> LmSource {
    candidates
        .iter()
        .filter(|c| c.candidate)
        .fold(None::<&Candidate>, |best, c| match best {
            Some(b) if b.macro_f1 >= c.macro_f1 => Some(b),
            _ => Some(c),
        })
        .map_or(LmSource::Pretrained, |c| c.source)
}

/// Writes the selection as the table [`names::DEFAULT_SELECTION`] (a row per model, its role:
/// `chosen`, `candidate` or `control`).
pub fn write_selection(sel: &Selection, o: &mut Outputs) -> Result<()> {
    let c = &sel.candidates;
    let f = |g: fn(&Candidate) -> f64| Col::F64(c.iter().map(|x| Some(g(x))).collect());
    let df = report::frame(vec![
        (
            "dataset",
            Col::Str(c.iter().map(|_| Some(sel.dataset.clone())).collect()),
        ),
        (
            "model",
            Col::Str(
                c.iter()
                    .map(|x| Some(x.source.prefix().to_string()))
                    .collect(),
            ),
        ),
        (
            "role",
            Col::Str(
                c.iter()
                    .map(|x| {
                        Some(match (x.candidate, x.source == sel.chosen) {
                            (true, true) => "chosen".to_string(),
                            (true, false) => "candidate".to_string(),
                            _ => "control".to_string(),
                        })
                    })
                    .collect(),
            ),
        ),
        (
            "cells",
            Col::I64(c.iter().map(|_| sel.cells as i64).collect()),
        ),
        (
            "labels",
            Col::I64(c.iter().map(|_| sel.labels as i64).collect()),
        ),
        (
            "folds",
            Col::I64(c.iter().map(|_| sel.folds as i64).collect()),
        ),
        ("accuracy", f(|x| x.accuracy)),
        ("accuracy_sd", f(|x| x.accuracy_sd)),
        ("macro_f1", f(|x| x.macro_f1)),
        ("macro_f1_sd", f(|x| x.macro_f1_sd)),
    ])?;
    let heading = format!(
        "The held-out default chosen on {} (its labels kept out of the answer stage; frozen mean-pooled embedding of full sentences → the paper's MLP, stratified {}-fold)",
        sel.dataset, sel.folds
    );
    o.table(&df, names::DEFAULT_SELECTION, &heading)
}

/// The selection dataset's full sentences and labels (cells without a type left out), as the
/// answer stage would have read them.
fn selection_cells(
    r: &SelectionRun<'_>,
    p: &PretrainSection,
    id: &str,
    max_genes: usize,
) -> Result<(Vec<Vec<String>>, Vec<String>)> {
    let spec = lm_protocol::corpus_spec(r.e, p, r.evaluated);
    let dirs = crate::data::corpus_data_dirs(r.data_dir);
    let only = pretrain::CorpusSpec {
        datasets: Some(vec![id.to_string()]),
        ..spec
    };
    let (parts, _) = pretrain::labelled_parts(&only, max_genes, &dirs, r.cache, !r.quiet)
        .map_err(|_| not_in_corpus(id))?;
    let part = parts
        .into_iter()
        .find(|q| q.dataset.id == id)
        .ok_or_else(|| not_in_corpus(id))?;
    let labels = part.labels.unwrap_or_default();
    Ok((part.sentences, labels))
}

fn not_in_corpus(id: &str) -> Error {
    Error::param(
        "annotation.pretrain.select_on",
        format!("{id} is not a labelled dataset of the pretraining corpus; name one (held-out and evaluated datasets cannot be chosen on)"),
    )
}

/// The frozen mean-pooled embedding of `words` by the model in `dir` (a cached stage).
fn frozen_embedding(
    r: &SelectionRun<'_>,
    dir: &Path,
    words: &[Vec<String>],
    max_genes: usize,
    id: &str,
) -> Result<crate::npy::Matrix> {
    let style = lm::prompt_style(dir)?;
    let key = (r.cache.file_digest(dir)?, words, &style, max_genes);
    let (m, _) = r
        .cache
        .npy("embeddings", &format!("{id} selection"), &key, || {
            let ck = lm::load(dir, r.device, tch::Kind::Float)?;
            let opts = EmbedOptions {
                progress: !r.quiet,
                ..Default::default()
            };
            lm::embed_sentences(&ck, words, &style, max_genes, &opts)
        })?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(source: LmSource, candidate: bool, f1: f64) -> Candidate {
        Candidate {
            source,
            candidate,
            accuracy: 0.0,
            accuracy_sd: 0.0,
            macro_f1: f1,
            macro_f1_sd: 0.0,
        }
    }

    /// The best candidate wins, a tie keeps the next-gene model, and the control never wins.
    #[test]
    fn the_control_is_never_chosen() {
        let next = |f| c(LmSource::Pretrained, true, f);
        let ans = |f| c(LmSource::AnswerOnly, true, f);
        let ctl = c(LmSource::Untrained, false, 0.99);
        assert_eq!(
            chosen(&[next(0.5), ans(0.6), ctl.clone()]),
            LmSource::AnswerOnly
        );
        assert_eq!(
            chosen(&[next(0.6), ans(0.6), ctl.clone()]),
            LmSource::Pretrained
        );
        assert_eq!(chosen(&[next(0.7), ans(0.6), ctl]), LmSource::Pretrained);
    }
}
