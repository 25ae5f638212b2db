//! `train-lm` and `pretrain-lm`, and the sentence sources and device options the LM commands
//! share: the language-model stage from the command line.
use std::path::{Path, PathBuf};

use clap::Args;

use super::domain;

use super::{prepared_sentences, print_out, DataDirArgs, InputArgs, PrepArgs};
use crate::cache::Cache;
use crate::error::Result;
use crate::lm::{self, TrainConfig};
use crate::output::{check_out, OutKind};

/// A model directory (Hugging Face layout).
const MODEL: OutKind = OutKind::Folder {
    marker: "config.json",
};
use crate::sentence::{GeneSet, SentenceParams};

/// Where the cells come from and how their sentences are built.
#[derive(Debug, Args)]
pub struct SentenceSource {
    /// Genes that enter the sentences.
    #[arg(long, value_parser = domain::choice::<GeneSet>(), default_value = "all")]
    pub genes: GeneSet,
    /// Seed of the tie-breaking shuffle (Cell2Sentence: 42).
    #[arg(long, default_value_t = crate::sentence::C2S_TIE_SEED)]
    pub tie_seed: u32,
    /// Read the AnnData layer `layers/NAME` instead of X (`--layer` is the model's hidden state).
    #[arg(long, conflicts_with = "raw")]
    pub adata_layer: Option<String>,
    /// Read `raw/X` instead of X.
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub dirs: DataDirArgs,
    #[command(flatten)]
    pub prep: PrepArgs,
}

/// Device, precision and batching.
#[derive(Debug, Args)]
pub struct RunDevice {
    /// Run on the first CUDA device.
    #[arg(long)]
    pub cuda: bool,
    /// Parameter precision: f32, or bf16/f16 on CUDA.
    #[arg(long, value_parser = domain::choice::<lm::Precision>(), default_value = "f32")]
    pub dtype: lm::Precision,
    /// Most tokens (batch × padded length) per forward pass.
    #[arg(long, default_value_t = 8192, value_parser = super::domain::count())]
    pub batch_tokens: usize,
}

impl RunDevice {
    /// The options as the library takes them.
    pub fn run_on(&self) -> crate::embedding::RunOn {
        crate::embedding::RunOn {
            cuda: self.cuda,
            dtype: self.dtype,
            batch_tokens: self.batch_tokens,
        }
    }
}

/// `train-lm` options.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Cells whose sentences train the model.
    #[arg(long, short)]
    pub input: String,
    #[command(flatten)]
    pub source: SentenceSource,
    /// Output model directory (Hugging Face layout; replaced atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Training settings as JSON (keys of TrainConfig), e.g. '{"steps": 200, "hidden": 128}'.
    #[arg(long, default_value = "{}")]
    pub config: String,
    /// Fine-tune this Hugging Face GPT-NeoX directory (e.g. Pythia-410M; GPU recommended) instead of
    /// training a small model from scratch.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Train on the first CUDA device.
    #[arg(long)]
    pub cuda: bool,
}

/// `pretrain-lm` options.
#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// Datasets to hold out (those you will evaluate); files sharing their cells are held out too.
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Datasets to pretrain on (default: every one found in the data directories).
    #[arg(long, value_delimiter = ',')]
    pub datasets: Option<Vec<String>>,
    /// Output model directory (Hugging Face layout + corpus.json; replaced atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Training settings as JSON (keys of TrainConfig), e.g. '{"steps": 2000}'.
    #[arg(long, default_value = "{}")]
    pub config: String,
    /// Seed of the sentences' tie-breaking shuffle (Cell2Sentence: 42).
    #[arg(long, default_value_t = crate::sentence::C2S_TIE_SEED)]
    pub tie_seed: u32,
    /// Cell2Sentence's cell-type-prediction task: each corpus sentence is followed by its cell
    /// type (the corpus datasets' labels; held-out datasets are never read).
    #[arg(long)]
    pub cell_type_task: bool,
    /// Then the answer-only cell-type stage on the corpus labels (Cell2Sentence's prediction task,
    /// loss on the answer alone, the kept step by a stratified corpus validation split): its
    /// settings as JSON (keys of TrainConfig), e.g. '{"steps": 400}'; the model goes to
    /// --answer-out.
    #[arg(long, requires = "answer_out")]
    pub answer: Option<String>,
    /// Output model directory of the answer-only stage (with --answer).
    #[arg(long, requires = "answer")]
    pub answer_out: Option<PathBuf>,
    #[command(flatten)]
    pub dirs: DataDirArgs,
    /// Train on the first CUDA device.
    #[arg(long)]
    pub cuda: bool,
    /// Cache folder (file digests).
    #[arg(long, default_value = ".cache/stages")]
    pub cache: PathBuf,
}

/// Cell names and sentence words (most expressed first, truncated to `max_genes`).
pub fn sentence_words(
    input: &str,
    s: &SentenceSource,
    max_genes: Option<usize>,
) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let args = InputArgs {
        input: input.to_string(),
        layer: s.adata_layer.clone(),
        raw: s.raw,
        dirs: s.dirs.clone(),
    };
    let (p, sents) = prepared_sentences(
        &args,
        &s.prep,
        s.genes,
        &SentenceParams {
            tie_seed: s.tie_seed,
            max_genes,
        },
    )?;
    Ok((p.data.cells.clone(), sents.to_words()))
}

/// `cellsentence train-lm`.
pub fn cmd_train(a: &TrainArgs, quiet: bool) -> Result<()> {
    let inputs: Vec<&Path> = [Some(Path::new(&a.input)), a.base.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    check_out("--out", &a.out, &inputs, MODEL)?;
    let cfg: TrainConfig = lm::TrainConfig::from_flag(&a.config)?;
    let (_, words) = sentence_words(&a.input, &a.source, Some(cfg.max_genes))?;
    let (device, _) = lm::device_and_kind(a.cuda, lm::Precision::F32)?;
    let what = format!("{} ({:?} sentences)", a.input, a.source.genes);
    // the loss figure is committed with the model, as one folder
    let fig = |_: usize, _: usize, log: &[lm::LogRow]| {
        let html = crate::figure::html(&crate::pl::training_loss(log, &what), "training loss");
        vec![("training_loss.html", html.into_bytes())]
    };
    let r = lm::train::train_with(
        &words,
        &cfg,
        a.base.as_deref(),
        &a.out,
        device,
        !quiet,
        &fig,
    )?;
    print_out(&format!(
        "{}\n",
        serde_json::json!({
            "model": r.dir, "parameters": r.parameters, "vocab": r.vocab, "n_train": r.n_train,
            "n_val": r.n_val, "seconds": r.seconds, "tokens_per_s": r.tokens_per_s,
            "final_train_loss": r.log.last().map(|l| l.train_loss),
            "final_val_loss": r.log.last().and_then(|l| l.val_loss),
        })
    ))
}

/// `cellsentence pretrain-lm`.
pub fn cmd_pretrain(a: &PretrainArgs, quiet: bool) -> Result<()> {
    let dirs = crate::data::corpus_data_dirs(a.dirs.data_dir.as_deref());
    let inputs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    check_out("--out", &a.out, &inputs, MODEL)?;
    let cfg: TrainConfig = lm::TrainConfig::from_flag(&a.config)?;
    let answer = match (&a.answer, &a.answer_out) {
        (Some(c), Some(out)) => {
            check_out("--answer-out", out, &inputs, MODEL)?;
            Some((lm::TrainConfig::from_flag(c)?, out))
        }
        _ => None,
    };
    let spec = crate::experiment::pretrain::CorpusSpec {
        datasets: a.datasets.clone(),
        exclude: a.exclude.clone(),
        tie_seed: a.tie_seed,
        cell_type_task: a.cell_type_task,
        ..Default::default()
    };
    let dirs = crate::data::corpus_data_dirs(a.dirs.data_dir.as_deref());
    crate::experiment::pretrain::check_ids(&spec, &dirs)?;
    let (device, _) = lm::device_and_kind(a.cuda, lm::Precision::F32)?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let cache = Cache::open(&a.cache, false)?.quiet(true);
    let (r, corpus) = crate::experiment::pretrain::pretrain(
        &spec, &cfg, &dirs, &cache, &command, &a.out, device, !quiet,
    )?;
    let answer = match answer {
        Some((c, out)) => {
            let f = crate::experiment::pretrain::answer_stage(
                &spec,
                &[],
                &c,
                &a.out,
                &dirs,
                &cache,
                &command,
                out,
                device,
                !quiet,
            )?;
            let best = f.head.curve.iter().find(|p| p.step == f.head.best_step);
            serde_json::json!({
                "model": out, "labels": f.head.labels.len(), "best_step": f.head.best_step,
                "val_loss": best.map(|p| p.loss), "val_accuracy": best.map(|p| p.accuracy),
                "seconds": f.seconds,
            })
        }
        None => serde_json::Value::Null,
    };
    print_out(&format!(
        "{}\n",
        serde_json::json!({
            "answer_stage": answer,
            "model": r.dir, "parameters": r.parameters, "vocab": r.vocab, "n_train": r.n_train,
            "n_val": r.n_val, "seconds": r.seconds, "tokens_per_s": r.tokens_per_s,
            "datasets": corpus.datasets.iter().map(|d| (&d.id, d.cells)).collect::<Vec<_>>(),
            "held_out": corpus.held_out,
            "final_train_loss": r.log.last().map(|l| l.train_loss),
            "final_val_loss": r.log.last().and_then(|l| l.val_loss),
        })
    ))
}
