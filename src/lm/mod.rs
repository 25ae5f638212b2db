//! The language-model stage: GPT-NeoX (Pythia / C2S-Pythia) in libtorch, loaded from Hugging Face
//! model directories, C2S prompts, batched cell embeddings, and small cell-sentence models trained
//! by the harness.
pub mod cell_type;
mod cell_type_predict;
mod cell_type_run;
mod cell_type_start;
pub mod config;
pub mod corpus;
pub mod embed;
pub mod load;
pub mod model;
pub mod model_dir;
pub mod optim;
pub mod probe;
pub mod prompt;
pub mod resume;
pub mod tokenizer;
pub mod train;
pub mod train_config;
mod trainer;

pub use config::NeoxConfig;
pub use corpus::{check_held_out, pretrain, Corpus, CorpusDataset, CorpusPart};
pub use embed::{embed_ids, resolve_layer, EmbedOptions, Pool};
pub use load::{load, Checkpoint};
pub use model::GptNeox;
pub use prompt::PromptStyle;
pub use train::{train, LogRow, ModelMeta, TrainConfig, TrainReport};

use crate::npy::Matrix;
use crate::{Error, Result};
use std::path::Path;
/// libtorch's device and dtype, re-exported so notebooks and callers can name them without `tch`.
pub use tch::{Device, Kind};

/// The prompt style a model directory asks for: `cellsentence.json`'s `prompt` for the harness's own
/// models, Cell2Sentence's cell-type prompt otherwise.
pub fn prompt_style(dir: &Path) -> Result<PromptStyle> {
    Ok(ModelMeta::read(dir)?.map_or_else(PromptStyle::c2s_default, |m| m.prompt))
}

/// Where a model runs (CLI `--cuda`, experiment files' `device:`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum DeviceChoice {
    /// CUDA when available, else CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA device (an error without one).
    Cuda,
}

impl DeviceChoice {
    /// `Cuda` when `cuda`, else `Cpu` (the CLI's `--cuda` flag).
    pub fn from_flag(cuda: bool) -> Self {
        if cuda {
            DeviceChoice::Cuda
        } else {
            DeviceChoice::Cpu
        }
    }

    /// The default (serialised only when not `auto`).
    pub fn is_auto(&self) -> bool {
        *self == DeviceChoice::Auto
    }

    /// The libtorch device; `cuda` without a visible GPU is an error.
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceChoice::Auto => Ok(Device::cuda_if_available()),
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            DeviceChoice::Cuda => Err(Error::param(
                "device",
                "cuda was asked for but libtorch sees no GPU (`cellsentence env`); use cpu",
            )),
        }
    }
}

/// Parameter precision (CLI `--dtype`); reduced precision is for CUDA.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// float32.
    #[default]
    #[strum(to_string = "f32", serialize = "float32")]
    F32,
    /// bfloat16.
    #[strum(to_string = "bf16", serialize = "bfloat16")]
    Bf16,
    /// float16.
    #[strum(to_string = "f16", serialize = "float16")]
    F16,
}

impl Precision {
    /// libtorch's parameter kind.
    pub fn kind(self) -> Kind {
        match self {
            Precision::F32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
            Precision::F16 => Kind::Half,
        }
    }
}

/// The device (`cuda`: the first GPU, an error without one; else the CPU) and parameter kind.
pub fn device_and_kind(cuda: bool, precision: Precision) -> Result<(Device, Kind)> {
    let device = DeviceChoice::from_flag(cuda).resolve()?;
    if precision != Precision::F32 && device == Device::Cpu {
        return Err(Error::param(
            "dtype",
            "reduced precision is for CUDA; use f32 on CPU",
        ));
    }
    Ok((device, precision.kind()))
}

/// Embeds cell sentences (gene words, most expressed first) with a checkpoint: see
/// [`sentence_texts`]; tokenized and pooled as `opts` says.
pub fn embed_sentences(
    ck: &Checkpoint,
    sentences: &[Vec<String>],
    style: &PromptStyle,
    max_genes: usize,
    opts: &EmbedOptions,
) -> Result<Matrix> {
    embed_texts(ck, &sentence_texts(ck, sentences, style, max_genes)?, opts)
}

/// The texts a checkpoint reads for cell sentences: each truncated to `max_genes`, upper-cased for
/// a model pretrained on a corpus (`upper_case_genes`), rendered with `style`.
pub fn sentence_texts(
    ck: &Checkpoint,
    sentences: &[Vec<String>],
    style: &PromptStyle,
    max_genes: usize,
) -> Result<Vec<String>> {
    let upper = ModelMeta::read(&ck.dir)?.is_some_and(|m| m.upper_case_genes);
    Ok(render_sentences(sentences, style, max_genes, upper))
}

/// Sentences truncated to `max_genes`, upper-cased when `upper`, rendered with `style`.
pub(crate) fn render_sentences(
    sentences: &[Vec<String>],
    style: &PromptStyle,
    max_genes: usize,
    upper: bool,
) -> Vec<String> {
    let owned: Vec<Vec<String>> = sentences
        .iter()
        .map(|s| {
            s.iter()
                .take(max_genes)
                .map(|w| if upper { w.to_uppercase() } else { w.clone() })
                .collect()
        })
        .collect();
    let words: Vec<Vec<&str>> = owned
        .iter()
        .map(|s| s.iter().map(String::as_str).collect())
        .collect();
    style.render(&words, max_genes)
}

/// Embeds prompt texts as given.
pub fn embed_texts(ck: &Checkpoint, texts: &[String], opts: &EmbedOptions) -> Result<Matrix> {
    let ids = ck.tokenizer.encode_batch(texts)?;
    embed_ids(&ck.model, &ids, opts)
}
