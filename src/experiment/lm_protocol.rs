//! Which model embeds which sentences in the annotation experiments' LM rows.
//!
//! `per_mode` (the harness's first protocol): one small LM trained per dataset and sentence mode on
//! the evaluated cells. `pretrained` (the paper's): one model pretrained on every reachable dataset
//! except the evaluated ones (and files sharing their cells) embeds both modes; beside it the same
//! model fine-tuned on each mode's unlabelled sentences of the evaluated dataset (transductive), and
//! the untrained model of the same shape and vocabulary as a control.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::pretrain::{self, CorpusSpec};
use super::Experiment;
use crate::cache::{Cache, Outcome};
use crate::data;
use crate::error::Result;
use crate::lm::{self, TrainConfig};

/// Where the LM rows' models come from (when `annotation.model` is not given).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LmProtocol {
    /// One small LM per dataset and sentence mode, trained on the evaluated cells.
    #[default]
    PerMode,
    /// One model pretrained on held-out datasets embeds both modes (the paper's protocol).
    Pretrained,
}

impl LmProtocol {
    /// Whether this is the default (`per_mode`).
    pub fn is_default(&self) -> bool {
        *self == LmProtocol::PerMode
    }
}

/// Settings of the `pretrained` protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainSection {
    /// Corpus datasets (default: every one reachable); the evaluated ones are always left out.
    pub datasets: Option<Vec<String>>,
    /// Datasets held out besides the evaluated ones (so that experiments evaluating different
    /// datasets share one model).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// A model directory to use (committed with the repository) instead of the stage cache:
    /// used when its `cellsentence.json` training settings equal `lm` and its `corpus.json`
    /// digests match the local files; trained into it when missing or with `--retrain-lm`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<PathBuf>,
    /// The pretrained model's shape and optimisation.
    pub lm: TrainConfig,
    /// Mode-specific fine-tunes of the pretrained model on the evaluated dataset's sentences
    /// (language-model objective, never the labels); `null`: no fine-tuned rows.
    pub finetune: Option<TrainConfig>,
    /// Add the untrained (random-initialisation) model of the same shape as a control row.
    pub untrained_control: bool,
    /// Pretrain on Cell2Sentence's cell-type-prediction task: each corpus sentence followed by its
    /// cell type (corpus labels only; the evaluated datasets stay unlabelled and held out).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cell_type_task: bool,
    /// The answer-only stage after next-gene pretraining (Cell2Sentence's cell-type prediction on
    /// the corpus labels, loss on the answer alone; the kept step by the corpus validation split):
    /// its settings, and a frozen row of its own (`pretrained LM + corpus answers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<TrainConfig>,
    /// A labelled corpus dataset to choose the held-out default on (needs `answer`): the answer
    /// stage is run again without its labels, and the next-gene model and that model are scored
    /// on it by the frozen embedding → the paper's MLP (`default_selection.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub select_on: Option<String>,
    /// Use the pretrained run's snapshot at this step instead of its end (set by the scaling
    /// sweep; the step must be in `lm.snapshots`).
    #[serde(skip)]
    pub at_step: Option<usize>,
    /// Retrain `checkpoint` even when it matches (`--retrain-lm`).
    #[serde(skip)]
    pub retrain: bool,
}

impl Default for PretrainSection {
    fn default() -> Self {
        PretrainSection {
            datasets: None,
            exclude: Vec::new(),
            checkpoint: None,
            lm: TrainConfig::default(),
            finetune: None,
            untrained_control: true,
            cell_type_task: false,
            answer: None,
            select_on: None,
            at_step: None,
            retrain: false,
        }
    }
}

impl PretrainSection {
    /// Whether these are the default settings.
    pub fn is_default(&self) -> bool {
        *self == PretrainSection::default()
    }
}

/// The model behind an LM row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LmSource {
    /// `annotation.model`, or the per-mode small LM.
    Own,
    /// The pretrained model (held out from the evaluated datasets).
    Pretrained,
    /// The pretrained model fine-tuned on the row's mode (saw the dataset's unlabelled sentences).
    FineTuned,
    /// The pretrained model's shape and vocabulary, untrained.
    Untrained,
    /// The pretrained model after the answer-only stage on the corpus labels (held out too).
    AnswerOnly,
}

impl LmSource {
    /// The words a method name starts with.
    pub fn prefix(self) -> &'static str {
        match self {
            LmSource::Own => "LM",
            LmSource::Pretrained => "pretrained LM",
            LmSource::FineTuned => "fine-tuned LM",
            LmSource::Untrained => "untrained LM",
            LmSource::AnswerOnly => "pretrained LM + corpus answers",
        }
    }

    /// The LM rows' sources for these settings (`model` given: only that model).
    pub fn all(protocol: LmProtocol, p: &PretrainSection, model: Option<&Path>) -> Vec<LmSource> {
        if model.is_some() || protocol == LmProtocol::PerMode {
            return vec![LmSource::Own];
        }
        let mut v = vec![LmSource::Pretrained];
        if p.answer.is_some() {
            v.push(LmSource::AnswerOnly);
        }
        if p.finetune.is_some() {
            v.push(LmSource::FineTuned);
        }
        if p.untrained_control {
            v.push(LmSource::Untrained);
        }
        v
    }
}

/// The corpus of an experiment's pretrained model: every reachable dataset but the evaluated ones,
/// `exclude` and their relatives.
pub(super) fn corpus_spec(e: &Experiment, p: &PretrainSection, evaluated: &[String]) -> CorpusSpec {
    let mut exclude: Vec<String> = evaluated.iter().chain(&p.exclude).cloned().collect();
    exclude.sort();
    exclude.dedup();
    CorpusSpec {
        datasets: p.datasets.clone(),
        exclude,
        preprocess: e.preprocess.clone(),
        tie_seed: e.sentences.tie_seed,
        cell_type_task: p.cell_type_task,
    }
}

/// Each corpus dataset's id and file digest (what a pretrained stage's key holds).
fn file_digests(entries: &[data::DatasetEntry], cache: &Cache) -> Result<Vec<(String, String)>> {
    entries
        .iter()
        .map(|en| Ok((en.id.clone(), cache.file_digest(&en.path)?)))
        .collect()
}

/// The pretrained model `base` after the answer-only stage on the corpus labels (`p.answer`), a
/// cached stage keyed by the base's digest, the corpus files' digests and the settings; the
/// datasets in `unlabelled` keep their labels out of it (see [`pretrain::answer_stage`]).
#[allow(clippy::too_many_arguments)]
pub fn answer_model(
    e: &Experiment,
    p: &PretrainSection,
    evaluated: &[String],
    unlabelled: &[String],
    data_dir: Option<&Path>,
    cache: &Cache,
    base: &Path,
    device: tch::Device,
    quiet: bool,
) -> Result<(PathBuf, Outcome)> {
    let c = p.answer.clone().unwrap_or_default();
    let spec = corpus_spec(e, p, evaluated);
    let dirs = data::corpus_data_dirs(data_dir);
    let (entries, _) = pretrain::plan(&spec, &dirs);
    let digests = file_digests(&entries, cache)?;
    let base_digest = cache.file_digest(base)?;
    let command = format!(
        "cellsentence run {} (annotation.pretrain.answer)",
        e.file.display()
    );
    let stage = |out: &Path| {
        pretrain::answer_stage(
            &spec, unlabelled, &c, base, &dirs, cache, &command, out, device, !quiet,
        )?;
        Ok(())
    };
    let what = "answer-only stage on the corpus labels";
    if unlabelled.is_empty() {
        // the key of every answer stage before datasets could be kept aside
        cache.dir_artifact(
            "pretrain_answer",
            what,
            &(&base_digest, &digests, &spec, &c),
            stage,
        )
    } else {
        let what = format!("{what} (labels of {} kept aside)", unlabelled.join(", "));
        let key = (&base_digest, &digests, &spec, &c, unlabelled);
        cache.dir_artifact("pretrain_answer", &what, &key, stage)
    }
}

/// The pretrained model of an experiment (or, with `untrained`, the same shape and vocabulary at
/// zero steps: the run's `step0` snapshot when it keeps one): `checkpoint` when set, else a cached
/// stage keyed by the corpus files' digests and the settings.
#[allow(clippy::too_many_arguments)]
pub fn pretrained_model(
    e: &Experiment,
    p: &PretrainSection,
    evaluated: &[String],
    data_dir: Option<&Path>,
    cache: &Cache,
    untrained: bool,
    device: tch::Device,
    quiet: bool,
) -> Result<(PathBuf, Outcome)> {
    let spec = corpus_spec(e, p, evaluated);
    let dirs = data::corpus_data_dirs(data_dir);
    let (entries, held) = pretrain::plan(&spec, &dirs);
    let digests = file_digests(&entries, cache)?;
    let want = run_weights(e, p, untrained)?;
    let lm = TrainConfig {
        steps: match want {
            RunWeights::Initialisation => 0,
            _ => p.lm.steps,
        },
        ..p.lm.clone()
    };
    let command = format!(
        "cellsentence run {} (annotation.pretrain{})",
        e.file.display(),
        if lm.steps == 0 { ", steps: 0" } else { "" }
    );
    let train = |out: &Path| -> Result<()> {
        pretrain::pretrain(&spec, &lm, &dirs, cache, &command, out, device, !quiet)?;
        Ok(())
    };
    let (dir, outcome) = match &p.checkpoint {
        Some(ck) if lm.steps == p.lm.steps => {
            committed(ck, &lm, p.cell_type_task, &digests, p.retrain, train)?
        }
        _ => {
            let label = if lm.steps == 0 {
                "untrained (corpus vocabulary)".to_string()
            } else {
                format!(
                    "corpus of {} datasets, held out: {}",
                    digests.len(),
                    held.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            cache.dir_artifact("pretrain", &label, &(&digests, &spec, &lm), train)?
        }
    };
    let RunWeights::Snapshot(k) = want else {
        return Ok((dir, outcome));
    };
    let snap = dir.join(format!("step{k}"));
    // a committed checkpoint's control is rebuilt from its seed, whether or not `step0/` (not
    // committed) is present here, so that every clone computes the same rows
    let rebuild = k == 0 && (untrained && p.checkpoint.is_some() || !snap.is_dir());
    if !rebuild && snap.join("config.json").is_file() {
        return Ok((snap, outcome));
    }
    if k == 0 {
        return initialisation_of(&dir, cache);
    }
    Err(crate::Error::NotFound {
        path: snap,
        hint: format!(
            " (the pretraining run's step-{k} snapshot; snapshots are not committed: rerun with --retrain-lm)"
        ),
    })
}

/// Which weights of the pretraining run a row reads.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RunWeights {
    /// The run's final weights.
    Final,
    /// The snapshot the run keeps at this step (`step<k>/`).
    Snapshot(usize),
    /// The initialisation of a run that keeps no `step0/`: a zero-step run of the same settings.
    Initialisation,
}

/// The weights `untrained` (the control) or `pretrain.at_step` ask for; a step the run does not
/// keep is an error naming the setting.
fn run_weights(e: &Experiment, p: &PretrainSection, untrained: bool) -> Result<RunWeights> {
    let at = if untrained { Some(0) } else { p.at_step };
    Ok(match at {
        Some(k) if p.lm.snapshots.contains(&k) => RunWeights::Snapshot(k),
        Some(k) if k != p.lm.steps && untrained => RunWeights::Initialisation,
        Some(k) if k != p.lm.steps => {
            return Err(e.err(
                "annotation",
                "pretrain.lm.snapshots",
                format!("step {k} is not kept by the pretraining run"),
                "add it to annotation.pretrain.lm.snapshots",
            ))
        }
        _ => RunWeights::Final,
    })
}

/// A committed checkpoint without its snapshots: its initialisation rebuilt from its seed (a
/// cached stage), with its corpus manifest at zero steps.
fn initialisation_of(dir: &Path, cache: &Cache) -> Result<(PathBuf, Outcome)> {
    let digest = cache.file_digest(dir)?;
    cache.dir_artifact(
        "pretrain",
        "untrained (from the checkpoint)",
        &(&digest, 0),
        |out| {
            let corpus = lm::Corpus::read(dir)?;
            lm::train::untrained_like(dir, out, &|_, _, _| {
                corpus
                    .iter()
                    .map(|c| {
                        let c = lm::Corpus {
                            steps: 0,
                            tokens_seen: 0,
                            wall_seconds: 0.0,
                            ..c.clone()
                        };
                        (
                            lm::corpus::CORPUS,
                            (serde_json::to_string_pretty(&c).expect("corpus serializes") + "\n")
                                .into_bytes(),
                        )
                    })
                    .collect()
            })
        },
    )
}

/// A committed pretrained model: checked against the settings and the local corpus files, trained
/// into `dir` when missing or when `retrain` is asked.
fn committed(
    dir: &Path,
    lm: &TrainConfig,
    cell_type_task: bool,
    digests: &[(String, String)],
    retrain: bool,
    train: impl FnOnce(&Path) -> Result<()>,
) -> Result<(PathBuf, Outcome)> {
    if retrain || !dir.join("config.json").is_file() {
        train(dir)?;
        return Ok((dir.to_path_buf(), Outcome::Computed));
    }
    let fix = "rerun with --retrain-lm to train it again from these settings and files";
    let meta = lm::ModelMeta::read(dir)?;
    if meta.as_ref().map(|m| &m.training) != Some(lm) {
        return Err(crate::Error::format(
            dir.join(lm::train::META),
            "the committed model was trained with other settings than annotation.pretrain.lm",
            fix,
        ));
    }
    let corpus = lm::Corpus::read(dir)?.ok_or_else(|| {
        crate::Error::format(
            dir.join(lm::corpus::CORPUS),
            "missing: not a pretrained model",
            fix,
        )
    })?;
    if corpus.task.is_some() != cell_type_task {
        return Err(crate::Error::format(
            dir.join(lm::corpus::CORPUS),
            format!(
                "the committed model was pretrained {} the cell-type task, annotation.pretrain.cell_type_task is {cell_type_task}",
                if cell_type_task { "without" } else { "with" }
            ),
            fix,
        ));
    }
    for (id, sha) in digests {
        if let Some(d) = corpus.datasets.iter().find(|d| &d.id == id) {
            if &d.sha256 != sha {
                return Err(crate::Error::format(
                    dir.join(lm::corpus::CORPUS),
                    format!("the local {id} differs from the file the model was trained on"),
                    fix,
                ));
            }
        }
    }
    Ok((dir.to_path_buf(), Outcome::Hit))
}

/// The pretrained model `base` fine-tuned on `words` (one dataset's sentences of one mode), cached
/// by the base's digest, the sentences' inputs and the settings.
#[allow(clippy::too_many_arguments)]
pub fn finetuned_model(
    base: &Path,
    c: &TrainConfig,
    inputs: &impl Serialize,
    label: &str,
    cache: &Cache,
    words: impl FnOnce() -> Result<Vec<Vec<String>>>,
    device: tch::Device,
    quiet: bool,
) -> Result<(PathBuf, Outcome)> {
    let digest = cache.file_digest(base)?;
    cache.dir_artifact("finetune", label, &(&digest, inputs, c), |out| {
        lm::train(&words()?, c, Some(base), out, device, !quiet)?;
        Ok(())
    })
}
