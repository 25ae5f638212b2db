//! `finetune-lm --task cell_type` and `predict-cell-type`: the LM at Cell2Sentence's own task.
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::args::LabelArgs;
use super::lm::SentenceSource;
use super::{prepared_sentences, print_out, InputArgs};
use crate::error::{Error, Result};
use crate::lm::{self, cell_type, TrainConfig};
use crate::output::{check_out, OutKind};
use crate::sentence::SentenceParams;

/// The tasks `finetune-lm` trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Task {
    /// Cell2Sentence's cell-type prediction: prompt → the cell type, loss on the answer alone.
    CellType,
}

/// `finetune-lm` options.
#[derive(Debug, Args)]
pub struct FinetuneArgs {
    /// The task to train.
    #[arg(long, value_enum)]
    pub task: Task,
    /// Labelled cells to train on (an .h5ad, 10x directory or dataset id).
    #[arg(long, short)]
    pub input: String,
    #[command(flatten)]
    pub labels: LabelArgs,
    #[command(flatten)]
    pub source: SentenceSource,
    /// Start from this Hugging Face GPT-NeoX directory (e.g. the pretrained model); default: random
    /// weights of the `--config` shape.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Output model directory (replaced atomically; a killed run resumes from `<out>.partial`).
    #[arg(long)]
    pub out: PathBuf,
    /// Training settings as JSON (keys of TrainConfig), e.g. '{"steps": 400}'.
    #[arg(long, default_value = "{}")]
    pub config: String,
    /// Stratified share of the cells held out to choose the kept step (lowest answer loss).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Train on the first CUDA device.
    #[arg(long)]
    pub cuda: bool,
}

/// `predict-cell-type` options.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A model fine-tuned by `finetune-lm --task cell_type`.
    #[arg(long)]
    pub model: PathBuf,
    /// Cells to answer for.
    #[arg(long, short)]
    pub input: String,
    #[command(flatten)]
    pub source: SentenceSource,
    /// Write `cell,predicted,<score per label>` here (CSV); default: standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// With a label column: also print accuracy and macro-F1 against it.
    #[arg(long)]
    pub label_key: Option<String>,
    /// Run on the first CUDA device.
    #[arg(long)]
    pub cuda: bool,
}

/// Cell names, sentence words and (with a label key) labels of an input's kept cells.
type LabelledWords = (Vec<String>, Vec<Vec<String>>, Option<Vec<String>>);

/// Cell names, sentence words and (with `label_key`) labels of an input's kept cells.
fn labelled_words(
    input: &str,
    s: &SentenceSource,
    max_genes: usize,
    label_key: Option<&str>,
) -> Result<LabelledWords> {
    let args = InputArgs {
        input: input.to_string(),
        layer: s.adata_layer.clone(),
        raw: s.raw,
        dirs: s.dirs.clone(),
    };
    let params = SentenceParams {
        tie_seed: s.tie_seed,
        max_genes: Some(max_genes),
    };
    let (p, sents) = prepared_sentences(&args, &s.prep, s.genes, &params)?;
    let words = sents.to_words();
    let labels = match label_key {
        Some(k) => Some(p.data.obs_labels(
            k,
            "remove the unlabelled cells from the file, or choose another --label-key",
        )?),
        None => None,
    };
    Ok((p.data.cells.clone(), words, labels))
}

/// The label column of `input`: the one given, else the dataset's known one, else `cell_type`.
fn label_key(input: &str, s: &SentenceSource, labels: &LabelArgs) -> String {
    let dirs = crate::data::default_data_dirs(s.dirs.data_dir.as_deref());
    labels.key_for(crate::data::resolve(input, &dirs).ok().as_ref())
}

/// `cellsentence finetune-lm`.
pub fn cmd_finetune(a: &FinetuneArgs, quiet: bool) -> Result<()> {
    let Task::CellType = a.task;
    let inputs: Vec<&Path> = [Some(Path::new(&a.input)), a.base.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    check_out(
        "--out",
        &a.out,
        &inputs,
        OutKind::Folder {
            marker: "config.json",
        },
    )?;
    if !(0.0..0.5).contains(&a.val_fraction) {
        return Err(Error::param(
            "--val-fraction",
            format!("{} is outside [0, 0.5)", a.val_fraction),
        ));
    }
    let cfg: TrainConfig = lm::TrainConfig::from_flag(&a.config)?;
    let key = label_key(&a.input, &a.source, &a.labels);
    let (_, words, labels) = labelled_words(&a.input, &a.source, cfg.max_genes, Some(&key))?;
    let labels = labels.expect("asked for");
    let (tr, va) = cell_type::stratified_split(&labels, a.val_fraction, cfg.seed);
    let (device, _) = lm::device_and_kind(a.cuda, lm::Precision::F32)?;
    let r = cell_type::finetune_indices(
        &words,
        &labels,
        (&tr, &va),
        &cfg,
        a.base.as_deref(),
        &a.out,
        &[],
        device,
        !quiet,
    )?;
    let best = r.head.curve.iter().find(|p| p.step == r.head.best_step);
    print_out(&format!(
        "{}\n",
        serde_json::json!({
            "model": a.out, "labels": r.head.labels.len(), "n_train": tr.len(), "n_val": va.len(),
            "best_step": r.head.best_step, "val_loss": best.map(|p| p.loss),
            "val_accuracy": best.map(|p| p.accuracy), "seconds": r.seconds,
        })
    ))
}

/// `cellsentence predict-cell-type`.
pub fn cmd_predict(a: &PredictArgs) -> Result<()> {
    if let Some(out) = &a.out {
        check_out("--out", out, &[Path::new(&a.input)], OutKind::File)?;
    }
    let (device, kind) = lm::device_and_kind(a.cuda, lm::Precision::F32)?;
    let ck = lm::load(&a.model, device, kind)?;
    let meta = lm::ModelMeta::read(&a.model)?;
    let budget = meta.map_or(200, |m| m.max_genes);
    let key = a.label_key.as_deref();
    let (cells, words, truth) = labelled_words(&a.input, &a.source, budget, key)?;
    let ans = cell_type::predict(&ck, &words, true)?;
    let mut csv = format!("cell,predicted,{}\n", ans.labels.join(","));
    for (i, c) in cells.iter().enumerate() {
        let scores: Vec<String> = ans
            .scores
            .row(i)
            .iter()
            .map(|v| format!("{v:.6}"))
            .collect();
        csv.push_str(&format!("{c},{},{}\n", ans.predicted[i], scores.join(",")));
    }
    if let Some(t) = &truth {
        let acc = crate::classify::metrics::accuracy(t, &ans.predicted);
        let f1 = crate::classify::metrics::macro_f1(t, &ans.predicted);
        eprintln!(
            "accuracy {acc:.4}, macro-F1 {f1:.4} against {}",
            key.unwrap_or_default()
        );
    }
    match &a.out {
        Some(out) => crate::report::write_atomic(out, csv.as_bytes()),
        None => print_out(&csv),
    }
}
