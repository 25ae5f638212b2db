//! The pretraining stage: one cell-sentence model trained on the full sentences of every reachable
//! dataset except those to be evaluated (and the files that share their cells), with a manifest.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::data::{self, DatasetEntry};
use crate::error::{Error, Result};
use crate::lm::{self, CorpusDataset, CorpusPart, TrainConfig};
use crate::pipeline;
use crate::preprocess::PreprocessParams;
use crate::sentence::{GeneSet, SentenceParams};

/// Files that hold cells of another file (the same study's cells, re-distributed): holding one
/// out of a corpus holds out its relatives too.
pub fn shares_cells(id: &str) -> &'static [&'static str] {
    match id {
        // pancreas_cider = Baron 2016 human + mouse; pancreas_2studies = Baron (inDrop) + Segerstolpe
        "baron_human" => &["pancreas_cider", "pancreas_2studies"],
        "baron_mouse" => &["pancreas_cider"],
        "pancreas_cider" => &["baron_human", "baron_mouse", "pancreas_2studies"],
        "pancreas_2studies" => &["baron_human", "pancreas_cider"],
        // symphony's 3' v1 PBMCs and 10x's PBMC 3k are both 10x v1 PBMC releases
        "pbmc3k" => &["pbmc_3tech"],
        "pbmc_3tech" => &["pbmc3k"],
        _ => &[],
    }
}

/// How the corpus is assembled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorpusSpec {
    /// Datasets to use (default: every one found in the data directories).
    pub datasets: Option<Vec<String>>,
    /// Datasets to hold out (the evaluated ones); files that share their cells are held out too.
    pub exclude: Vec<String>,
    /// QC and normalization of raw-count datasets.
    pub preprocess: PreprocessParams,
    /// Tie-breaking shuffle seed of the sentences (Cell2Sentence: 42).
    pub tie_seed: u32,
    /// Train Cell2Sentence's cell-type-prediction task on the corpus: each corpus sentence is
    /// followed by its cell type (from the dataset's label column; the evaluated datasets' labels
    /// are never read).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cell_type_task: bool,
}

impl Default for CorpusSpec {
    fn default() -> Self {
        CorpusSpec {
            datasets: None,
            exclude: Vec::new(),
            preprocess: PreprocessParams::default(),
            tie_seed: crate::sentence::C2S_TIE_SEED,
            cell_type_task: false,
        }
    }
}

/// Datasets of the corpus and the held-out ones with their reasons.
pub fn plan(spec: &CorpusSpec, dirs: &[PathBuf]) -> (Vec<DatasetEntry>, BTreeMap<String, String>) {
    let mut held = BTreeMap::new();
    for x in &spec.exclude {
        held.insert(x.clone(), "evaluated with this model".to_string());
        for r in shares_cells(x) {
            held.entry(r.to_string())
                .or_insert_with(|| format!("shares cells with {x}"));
        }
    }
    let entries = data::catalog(dirs)
        .into_iter()
        .filter(|e| spec.datasets.as_ref().is_none_or(|d| d.contains(&e.id)))
        .filter(|e| !held.contains_key(&e.id))
        .collect();
    (entries, held)
}

/// Refuses ids in `spec.datasets` or `spec.exclude` that name no dataset found in `dirs`: a typo in
/// `--exclude` would otherwise leave the dataset it meant in the corpus, and one in `--datasets`
/// would answer "no dataset left" without saying which id was unknown.
pub fn check_ids(spec: &CorpusSpec, dirs: &[PathBuf]) -> Result<()> {
    let known: Vec<String> = data::catalog(dirs).into_iter().map(|e| e.id).collect();
    let lists = [
        ("--datasets", spec.datasets.clone().unwrap_or_default()),
        ("--exclude", spec.exclude.clone()),
    ];
    for (option, ids) in lists {
        if let Some(bad) = ids.iter().find(|id| !known.contains(id)) {
            return Err(crate::error::Error::param(
                option,
                format!(
                    "`{bad}` is no dataset found in {}; known: {}; check the spelling (`cellsentence datasets` lists them)",
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// One dataset's corpus part: QC'd (for counts), full sentences of `max_genes` genes.
pub fn part(
    e: &DatasetEntry,
    spec: &CorpusSpec,
    max_genes: usize,
    cache: &Cache,
    progress: bool,
) -> Result<CorpusPart> {
    let ds = e.load(progress)?;
    let p = pipeline::prepare(
        ds,
        e.counts.then_some(&spec.preprocess),
        pipeline::Counts::Drop,
    )?;
    let params = SentenceParams {
        tie_seed: spec.tie_seed,
        max_genes: Some(max_genes),
    };
    let sentences = pipeline::sentences(&p, GeneSet::All, None, &params)?.to_words();
    let labels = match (&e.label_key, spec.cell_type_task) {
        (Some(key), true) => Some(p.data.obs_column(key)?),
        _ => None,
    };
    Ok(CorpusPart {
        dataset: CorpusDataset {
            id: e.id.clone(),
            file: e
                .path
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().to_string()),
            sha256: cache.file_digest(&e.path)?,
            cells: p.data.n_cells(),
        },
        genes: p.data.genes.clone(),
        sentences,
        labels,
    })
}

/// Builds the corpus and pretrains one model into `out` (with `corpus.json`). A dataset that cannot
/// be read or prepared is left out with a warning and recorded among the held-out ones.
#[allow(clippy::too_many_arguments)]
pub fn pretrain(
    spec: &CorpusSpec,
    c: &TrainConfig,
    dirs: &[PathBuf],
    cache: &Cache,
    command: &str,
    out: &Path,
    device: tch::Device,
    progress: bool,
) -> Result<(lm::TrainReport, lm::Corpus)> {
    let (entries, mut held) = plan(spec, dirs);
    let mut parts = Vec::new();
    for e in &entries {
        if progress {
            eprintln!("[pretrain] corpus: {} ({})", e.id, e.path.display());
        }
        match part(e, spec, c.max_genes, cache, progress) {
            Ok(p) => parts.push(p),
            Err(err) => {
                eprintln!("[pretrain] leaving out {}: {err}", e.id);
                held.insert(e.id.clone(), format!("unusable: {err}"));
            }
        }
    }
    if parts.is_empty() {
        return Err(Error::param(
            "corpus",
            format!(
                "no dataset left to pretrain on in {} (held out: {}); add data with --data-dir or exclude fewer",
                dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
                held.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    lm::pretrain(&parts, held, c, command, out, device, progress)
}

/// The corpus parts the answer-only stage reads: every planned dataset with a label column (the
/// evaluated datasets and their relatives are never planned, so their labels are never read).
/// Datasets without one are named on stderr and left to the next-gene stage.
pub fn labelled_parts(
    spec: &CorpusSpec,
    max_genes: usize,
    dirs: &[PathBuf],
    cache: &Cache,
    progress: bool,
) -> Result<(Vec<CorpusPart>, BTreeMap<String, String>)> {
    let spec = CorpusSpec {
        cell_type_task: true,
        ..spec.clone()
    };
    let (entries, held) = plan(&spec, dirs);
    let mut parts = Vec::new();
    let mut keys = BTreeMap::new();
    for e in &entries {
        let Some(key) = &e.label_key else {
            eprintln!(
                "[pretrain] answer stage: {} has no label column; next-gene stage only",
                e.id
            );
            continue;
        };
        match part(e, &spec, max_genes, cache, progress) {
            Ok(p) => {
                keys.insert(e.id.clone(), key.clone());
                parts.push(without_unlabelled(p));
            }
            Err(err) => eprintln!("[pretrain] answer stage: leaving out {}: {err}", e.id),
        }
    }
    if parts.is_empty() {
        return Err(Error::param(
            "pretrain.answer",
            format!(
                "no labelled corpus dataset is left for the answer-only stage (held out: {}); add labelled data or remove `answer`",
                held.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok((parts, keys))
}

/// Whether a label says the cell has no type: missing (read as `NA`), empty, `?`, `nan`,
/// `unknown`, `unassigned` or `none` (any case).
pub fn is_unlabelled(label: &str) -> bool {
    let t = label.trim().to_lowercase();
    ["", "?", "na", "nan", "unknown", "unassigned", "none"].contains(&t.as_str())
}

/// A labelled part without its cells of no type ([`is_unlabelled`]): they are not a class to
/// answer. How many were left out, and as what, is printed.
fn without_unlabelled(mut p: CorpusPart) -> CorpusPart {
    let Some(labels) = p.labels.take() else {
        return p;
    };
    let keep: Vec<bool> = labels.iter().map(|l| !is_unlabelled(l)).collect();
    let dropped: Vec<&String> = labels
        .iter()
        .zip(&keep)
        .filter(|(_, k)| !**k)
        .map(|(l, _)| l)
        .collect();
    if let Some(first) = dropped.first() {
        eprintln!(
            "[pretrain] answer stage: {}: {} of {} cells have no cell type (`{first}`); left out of the answer-only stage",
            p.dataset.id,
            dropped.len(),
            labels.len()
        );
    }
    let mut i = 0;
    p.sentences.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    p.labels = Some(
        labels
            .into_iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(l, _)| l)
            .collect(),
    );
    p
}

/// The answer-only cell-type stage after next-gene pretraining: the model in `base` trained on
/// Cell2Sentence's prediction task (the sentence and `<|CELL_TYPE|>`, then the cell type; loss on
/// the answer alone) over the labelled corpus datasets, class-balanced; a stratified `val_fraction`
/// of the corpus cells picks the kept step. Saved to `out` with `corpus.json` (the base's corpus,
/// the label keys and the label vocabulary) as one unit. The datasets in `unlabelled` keep their
/// labels out of the stage (a dataset kept aside to choose a default on).
#[allow(clippy::too_many_arguments)]
pub fn answer_stage(
    spec: &CorpusSpec,
    unlabelled: &[String],
    c: &TrainConfig,
    base: &Path,
    dirs: &[PathBuf],
    cache: &Cache,
    command: &str,
    out: &Path,
    device: tch::Device,
    progress: bool,
) -> Result<lm::cell_type::FinetuneReport> {
    let corpus = lm::Corpus::read(base)?.ok_or_else(|| {
        Error::format(
            base.join(lm::corpus::CORPUS),
            "missing: the answer-only stage needs a pretrained model with its corpus manifest",
            "pretrain it first (`cellsentence pretrain-lm`)",
        )
    })?;
    let (mut parts, mut label_keys) = labelled_parts(spec, c.max_genes, dirs, cache, progress)?;
    parts.retain(|p| !unlabelled.contains(&p.dataset.id));
    label_keys.retain(|id, _| !unlabelled.contains(id));
    if parts.is_empty() {
        return Err(Error::param(
            "pretrain.select_on",
            format!(
                "no labelled corpus dataset is left for the answer-only stage once {} is kept aside; choose another dataset",
                unlabelled.join(", ")
            ),
        ));
    }
    let words: Vec<Vec<String>> = parts.iter().flat_map(|p| p.sentences.clone()).collect();
    let labels: Vec<String> = parts
        .iter()
        .flat_map(|p| p.labels.clone().unwrap_or_default())
        .collect();
    let (train, val) = lm::cell_type::stratified_split(&labels, c.val_fraction, c.seed);
    let mut vocabulary = labels.clone();
    vocabulary.sort();
    vocabulary.dedup();
    let manifest = lm::Corpus {
        task: Some(lm::corpus::ANSWER_TASK.to_string()),
        command: command.to_string(),
        label_keys,
        label_vocabulary: vocabulary,
        ..corpus
    };
    let json = serde_json::to_string_pretty(&manifest).expect("corpus serializes") + "\n";
    lm::cell_type::finetune_indices(
        &words,
        &labels,
        (&train, &val),
        c,
        Some(base),
        out,
        &[(lm::corpus::CORPUS, json.into_bytes())],
        device,
        progress,
    )
}

#[cfg(test)]
mod answer_tests {
    use super::*;

    #[test]
    fn cells_of_no_type_leave_the_answer_stage() {
        let words = |w: &str| vec![w.to_string()];
        let p = CorpusPart {
            dataset: CorpusDataset {
                id: "pbmc".into(),
                file: "pbmc.h5ad".into(),
                sha256: String::new(),
                cells: 4,
            },
            genes: vec![],
            sentences: vec![words("A"), words("B"), words("C"), words("D")],
            labels: Some(vec!["T".into(), "?".into(), "NA".into(), "B".into()]),
        };
        let p = without_unlabelled(p);
        assert_eq!(p.sentences, [words("A"), words("D")]);
        assert_eq!(p.labels.unwrap(), ["T", "B"]);
        assert!(is_unlabelled(" Unknown ") && !is_unlabelled("NK"));
    }
}
