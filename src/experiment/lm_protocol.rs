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
    /// The pretrained model's shape and optimisation.
    pub lm: TrainConfig,
    /// Mode-specific fine-tunes of the pretrained model on the evaluated dataset's sentences
    /// (language-model objective, never the labels); `null`: no fine-tuned rows.
    pub finetune: Option<TrainConfig>,
    /// Add the untrained (random-initialisation) model of the same shape as a control row.
    pub untrained_control: bool,
}

impl Default for PretrainSection {
    fn default() -> Self {
        PretrainSection {
            datasets: None,
            lm: TrainConfig::default(),
            finetune: None,
            untrained_control: true,
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
}

impl LmSource {
    /// The words a method name starts with.
    pub fn prefix(self) -> &'static str {
        match self {
            LmSource::Own => "LM",
            LmSource::Pretrained => "pretrained LM",
            LmSource::FineTuned => "fine-tuned LM",
            LmSource::Untrained => "untrained LM",
        }
    }

    /// The LM rows' sources for these settings (`model` given: only that model).
    pub fn all(protocol: LmProtocol, p: &PretrainSection, model: Option<&Path>) -> Vec<LmSource> {
        if model.is_some() || protocol == LmProtocol::PerMode {
            return vec![LmSource::Own];
        }
        let mut v = vec![LmSource::Pretrained];
        if p.finetune.is_some() {
            v.push(LmSource::FineTuned);
        }
        if p.untrained_control {
            v.push(LmSource::Untrained);
        }
        v
    }
}

/// The pretrained model of an experiment (or, with `untrained`, the same shape and vocabulary at
/// zero steps), a cached stage keyed by the corpus files' digests and the settings.
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
    let spec = CorpusSpec {
        datasets: p.datasets.clone(),
        exclude: evaluated.to_vec(),
        preprocess: e.preprocess.clone(),
        tie_seed: e.sentences.tie_seed,
    };
    let dirs = data::corpus_data_dirs(data_dir);
    let (entries, held) = pretrain::plan(&spec, &dirs);
    let digests: Vec<(String, String)> = entries
        .iter()
        .map(|en| Ok((en.id.clone(), cache.file_digest(&en.path)?)))
        .collect::<Result<_>>()?;
    let lm = TrainConfig {
        steps: if untrained { 0 } else { p.lm.steps },
        ..p.lm.clone()
    };
    let label = if untrained {
        "untrained (corpus vocabulary)".to_string()
    } else {
        format!(
            "corpus of {} datasets, held out: {}",
            digests.len(),
            held.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    cache.dir_artifact("pretrain", &label, &(&digests, &spec, &lm), |out| {
        let command = format!(
            "cellsentence run {} (annotation.pretrain{})",
            e.file.display(),
            if untrained { ", steps: 0" } else { "" }
        );
        pretrain::pretrain(&spec, &lm, &dirs, cache, &command, out, device, !quiet)?;
        Ok(())
    })
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
