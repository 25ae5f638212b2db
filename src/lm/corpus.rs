//! Pretraining on a corpus of datasets, with a manifest (`corpus.json`) of what the model saw, so
//! that a dataset evaluated with the model can be proven held out.
pub use super::prompt::CELL_TYPE_SEP;
use super::train::{self, Fitted, Init, ModelMeta, TrainConfig, TrainReport};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::Device;

/// The manifest file in a pretrained model's directory.
pub const CORPUS: &str = "corpus.json";

/// One dataset of a pretraining corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorpusDataset {
    /// Dataset id.
    pub id: String,
    /// The input file's name, as given.
    pub file: String,
    /// SHA-256 of the input file's bytes (the identity the hold-out check compares).
    pub sha256: String,
    /// Cells whose sentences entered the corpus (after QC).
    pub cells: usize,
}

/// `corpus.json`: what a pretrained model was trained on and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Corpus {
    pub datasets: Vec<CorpusDataset>,
    /// Datasets left out on purpose (the ones to evaluate, and files that share their cells),
    /// each with the reason.
    pub held_out: BTreeMap<String, String>,
    pub seed: u64,
    pub steps: usize,
    /// Tokens of every training batch (padding excluded).
    pub tokens_seen: usize,
    pub wall_seconds: f64,
    /// The command that made it.
    pub command: String,
    /// Gene vocabulary size (upper-case symbols, plus the special tokens).
    pub vocab_size: usize,
    /// The training task when not plain cell sentences: [`CELL_TYPE_TASK`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The answer-only stage ([`ANSWER_TASK`]): each labelled corpus dataset's label column (the
    /// only labels the model read).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_keys: BTreeMap<String, String>,
    /// The answer-only stage: the cell types it answers (its label vocabulary), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_vocabulary: Vec<String>,
}

/// The manifest's `task` when the corpus sentences carry their cell types.
pub const CELL_TYPE_TASK: &str =
    "cell type prediction (Cell2Sentence): each corpus sentence is followed by <|CELL_TYPE|> and a token of its cell type";

/// The manifest's `task` of a model given the answer-only stage after next-gene pretraining.
pub const ANSWER_TASK: &str = "next-gene pretraining, then Cell2Sentence's cell-type prediction on the corpus labels (prompt: the sentence and <|CELL_TYPE|>; loss on the answer token alone)";

/// The one-word token of a cell type label: `CELL_TYPE:` and the label upper-cased, blanks as `_`.
pub fn cell_type_token(label: &str) -> String {
    let words: Vec<&str> = label.split_whitespace().collect();
    format!("CELL_TYPE:{}", words.join("_").to_uppercase())
}

impl Corpus {
    /// Reads `dir/corpus.json`; `None` when the model has no manifest (not pretrained here).
    pub fn read(dir: &Path) -> Result<Option<Corpus>> {
        train::read_json(
            &dir.join(CORPUS),
            "a corpus manifest",
            "re-run `cellsentence pretrain-lm`",
        )
    }

    /// The corpus dataset whose file has this SHA-256, if any.
    pub fn find(&self, sha256: &str) -> Option<&CorpusDataset> {
        self.datasets.iter().find(|d| d.sha256 == sha256)
    }
}

/// Whether the model in `model_dir` saw the dataset `id` (file digest `sha256`) in pretraining.
/// A seen dataset is an error naming the dataset, the manifest and the fix, unless `allow_seen`.
pub fn check_held_out(model_dir: &Path, id: &str, sha256: &str, allow_seen: bool) -> Result<bool> {
    let Some(c) = Corpus::read(model_dir)? else {
        return Ok(false);
    };
    match c.find(sha256) {
        None => Ok(false),
        Some(_) if allow_seen => Ok(true),
        Some(d) => Err(Error::param(
            "annotation.model",
            format!(
                "dataset `{id}` is in the pretraining corpus of {} (as `{}`, {} cells, listed in {}): its scores would not be held out; pretrain without it (`pretrain-lm --exclude {id}`) or set `allow_seen: true` to report it marked \"seen in pretraining\"",
                model_dir.display(),
                d.id,
                d.cells,
                model_dir.join(CORPUS).display()
            ),
        )),
    }
}

/// One dataset's share of a corpus: its manifest entry, gene symbols and sentences.
pub struct CorpusPart {
    pub dataset: CorpusDataset,
    /// The dataset's gene symbols (any case).
    pub genes: Vec<String>,
    /// Cell sentences (gene words, most expressed first).
    pub sentences: Vec<Vec<String>>,
    /// Each sentence's cell type, when the corpus trains Cell2Sentence's cell-type-prediction
    /// task (the sentence, then [`CELL_TYPE_SEP`] and the type's token).
    pub labels: Option<Vec<String>>,
}

/// Upper-case gene vocabulary of a corpus: every dataset's symbols, most frequent in the
/// sentences first, then by name.
fn vocabulary(parts: &[CorpusPart]) -> Vec<String> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for p in parts {
        for g in &p.genes {
            counts.entry(g.to_uppercase()).or_default();
        }
        for s in &p.sentences {
            for w in s {
                *counts.entry(w.to_uppercase()).or_default() += 1;
            }
        }
    }
    let mut words: Vec<(String, usize)> = counts.into_iter().collect();
    words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    words.into_iter().map(|(w, _)| w).collect()
}

/// What [`pretrain`] trains on: the corpus vocabulary and every part's sentences, upper-cased and
/// pooled in part order; a labelled part's sentences end with [`CELL_TYPE_SEP`] and the cell type's
/// token.
pub fn training_inputs(parts: &[CorpusPart]) -> (Vec<String>, Vec<Vec<String>>) {
    let sentences: Vec<Vec<String>> = parts
        .iter()
        .flat_map(|p| {
            p.sentences.iter().enumerate().map(move |(i, s)| {
                let mut w: Vec<String> = s.iter().map(|w| w.to_uppercase()).collect();
                if let Some(l) = &p.labels {
                    w.push(CELL_TYPE_SEP.to_string());
                    w.push(cell_type_token(&l[i]));
                }
                w
            })
        })
        .collect();
    let mut vocab = vocabulary(parts);
    // the task's tokens, from the labels (not by scanning the sentences again)
    let mut extra: Vec<String> = parts
        .iter()
        .filter_map(|p| p.labels.as_deref())
        .flatten()
        .map(|l| cell_type_token(l))
        .collect();
    if !extra.is_empty() {
        extra.push(CELL_TYPE_SEP.to_string());
    }
    extra.sort();
    extra.dedup();
    extra.retain(|t| !vocab.contains(t));
    vocab.extend(extra);
    (vocab, sentences)
}

/// The settings [`pretrain`] fits with: `c`, with room after the gene budget for the cell-type
/// task's two tokens when a part is labelled.
pub fn fit_config(parts: &[CorpusPart], c: &TrainConfig) -> TrainConfig {
    let task = parts.iter().any(|p| p.labels.is_some());
    TrainConfig {
        max_genes: c.max_genes + if task { 2 } else { 0 },
        ..c.clone()
    }
}

/// Pretrains one small cell-sentence model on every part's sentences (upper-cased, pooled) and
/// saves it to `out` in Hugging Face layout with `corpus.json` (all files committed as a unit).
pub fn pretrain(
    parts: &[CorpusPart],
    held_out: BTreeMap<String, String>,
    c: &TrainConfig,
    command: &str,
    out: &Path,
    device: Device,
    progress: bool,
) -> Result<(TrainReport, Corpus)> {
    train::check_out(out)?;
    if parts.is_empty() {
        return Err(Error::param(
            "corpus",
            "no datasets left to pretrain on; add data (--data-dir) or exclude fewer",
        ));
    }
    if let Some(p) = parts.iter().find(|p| {
        p.labels
            .as_ref()
            .is_some_and(|l| l.len() != p.sentences.len())
    }) {
        return Err(Error::param(
            "corpus",
            format!("{}: labels and sentences differ in number", p.dataset.id),
        ));
    }
    let task = parts.iter().any(|p| p.labels.is_some());
    let (vocab, sentences) = training_inputs(parts);
    let fit_c = fit_config(parts, c);
    let f: Fitted = train::fit(
        &sentences,
        &fit_c,
        Init::Scratch {
            vocab: Some(&vocab),
        },
        device,
        progress,
        Some(&train::partial_dir(out)),
        None,
    )?;
    let corpus_at = |steps: usize, tokens_seen: usize| Corpus {
        datasets: parts.iter().map(|p| p.dataset.clone()).collect(),
        held_out: held_out.clone(),
        seed: c.seed,
        steps,
        tokens_seen,
        wall_seconds: (f.seconds * 1000.0).round() / 1000.0,
        command: command.to_string(),
        vocab_size: f.vocab,
        task: task.then(|| CELL_TYPE_TASK.to_string()),
        label_keys: BTreeMap::new(),
        label_vocabulary: Vec::new(),
    };
    let json = |c: &Corpus| serde_json::to_string_pretty(c).expect("corpus serializes") + "\n";
    train::save(out, &f, &ModelMeta::new(c, true), &|step, tokens, _| {
        vec![(CORPUS, json(&corpus_at(step, tokens)).into_bytes())]
    })?;
    let corpus = corpus_at(c.steps, f.tokens);
    Ok((f.report(out), corpus))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(id: &str, sentences: &[&[&str]], labels: Option<&[&str]>) -> CorpusPart {
        CorpusPart {
            dataset: CorpusDataset {
                id: id.into(),
                file: format!("{id}.h5ad"),
                sha256: String::new(),
                cells: sentences.len(),
            },
            genes: vec!["Ins".into(), "Gcg".into(), "CD3E".into()],
            sentences: sentences
                .iter()
                .map(|s| s.iter().map(|w| w.to_string()).collect())
                .collect(),
            labels: labels.map(|l| l.iter().map(|w| w.to_string()).collect()),
        }
    }

    #[test]
    fn labelled_parts_end_their_sentences_with_the_cell_type() {
        let parts = [
            part(
                "a",
                &[&["Ins", "Gcg"], &["Gcg"]],
                Some(&["beta", "alpha cell"]),
            ),
            part("b", &[&["CD3E"]], None),
        ];
        let (vocab, s) = training_inputs(&parts);
        assert_eq!(
            s,
            vec![
                vec!["INS", "GCG", CELL_TYPE_SEP, "CELL_TYPE:BETA"],
                vec!["GCG", CELL_TYPE_SEP, "CELL_TYPE:ALPHA_CELL"],
                vec!["CD3E"],
            ]
        );
        // genes by count first, then the task's tokens once each
        assert_eq!(
            vocab,
            vec![
                "GCG",
                "CD3E",
                "INS",
                "<|CELL_TYPE|>",
                "CELL_TYPE:ALPHA_CELL",
                "CELL_TYPE:BETA"
            ]
        );
    }
}
