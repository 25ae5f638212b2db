//! `cellsentence lm-probe`: what each layer of a cell-sentence model knows about cell identity.
use std::path::PathBuf;

use clap::Args;

use super::annotate::ClassifierArg;
use super::lm::SentenceSource;
use super::{prepared_sentences, print_out, InputArgs};
use crate::classify::{self, metrics, Classifier, MlpConfig, SvmConfig};
use crate::error::{Error, Result};
use crate::lm::{self, EmbedOptions, ModelMeta};
use crate::report::{write_atomic, Table};
use crate::sentence::SentenceParams;

/// `lm-probe` options.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Model directories to probe (e.g. one model after several training budgets).
    #[arg(long, required = true, num_args = 1..)]
    pub model: Vec<PathBuf>,
    /// Labelled cells (an .h5ad or dataset id), preprocessed as `sentences` does.
    #[arg(long, short)]
    pub input: String,
    #[command(flatten)]
    pub source: SentenceSource,
    /// obs column with the cell types (default: the dataset's known one, else `cell_type`).
    #[arg(long)]
    pub label_key: Option<String>,
    /// Genes per prompt (default: each model's own budget, else 200).
    #[arg(long)]
    pub max_genes: Option<usize>,
    /// Stratified folds of the classifier probe.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    #[arg(long, value_enum, default_value = "mlp")]
    pub classifier: ClassifierArg,
    #[arg(long, value_enum, default_value_t = lm::Pool::Mean)]
    pub pool: lm::Pool,
    /// Seed of the folds.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output CSV, one row per model and hidden state (a Markdown copy beside it).
    #[arg(long)]
    pub out: PathBuf,
}

/// Embeds every hidden state of `model` for the sentences and scores each one.
fn probe_model(
    a: &ProbeArgs,
    model: &std::path::Path,
    words: &[Vec<String>],
    labels: &[String],
    t: &mut Table,
) -> Result<()> {
    let meta = ModelMeta::read(model)?;
    let budget = a
        .max_genes
        .or(meta.as_ref().map(|m| m.max_genes))
        .unwrap_or(200);
    let ck = lm::load(model, tch::Device::Cpu, tch::Kind::Float)?;
    let style = lm::prompt_style(model)?;
    let texts_for = |w: &[Vec<String>]| {
        let upper = meta.as_ref().is_some_and(|m| m.upper_case_genes);
        let owned: Vec<Vec<String>> = w
            .iter()
            .map(|s| {
                s.iter()
                    .take(budget)
                    .map(|g| if upper { g.to_uppercase() } else { g.clone() })
                    .collect()
            })
            .collect();
        let refs: Vec<Vec<&str>> = owned
            .iter()
            .map(|s| s.iter().map(String::as_str).collect())
            .collect();
        style.render(&refs, budget)
    };
    let ids = ck.tokenizer.encode_batch(&texts_for(words))?;
    let n = ck.model.cfg.num_hidden_layers;
    let opts = EmbedOptions {
        pool: a.pool,
        progress: true,
        ..Default::default()
    };
    let layers: Vec<i64> = (0..=n).collect();
    let mats = lm::embed::embed_layers(&ck.model, &ids, &opts, &layers)?;
    let folds = classify::stratified_kfold(labels, a.folds, 0.1, a.seed)?;
    let classifier = match a.classifier {
        ClassifierArg::Mlp => Classifier::Mlp(MlpConfig::default()),
        ClassifierArg::Svm => Classifier::Svm(SvmConfig::default()),
    };
    // token-level view on up to 300 cells (spread over the dataset) whose prompts have the most
    // common length: how much of the token states' variance is position, how much cell type
    let common = {
        let mut c = std::collections::BTreeMap::new();
        for s in &ids {
            *c.entry(s.len()).or_insert(0usize) += 1;
        }
        c.into_iter()
            .max_by_key(|&(len, k)| (k, len))
            .map_or(0, |(len, _)| len)
    };
    let same: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].len() == common).collect();
    let step = same.len().div_ceil(300).max(1);
    let pick: Vec<usize> = same.iter().step_by(step).copied().collect();
    let shares = lm::probe::token_variance_shares(
        &ck.model,
        &pick.iter().map(|&i| ids[i].clone()).collect::<Vec<_>>(),
        &pick.iter().map(|&i| labels[i].clone()).collect::<Vec<_>>(),
    )?;
    let log = lm::train::LogRow::read(model).unwrap_or_default();
    let steps = meta.as_ref().map(|m| m.training.steps.to_string());
    let val = log.iter().rev().find_map(|r| r.val_loss);
    for ((layer, x), sh) in layers.iter().zip(&mats).zip(&shares) {
        let ev = classify::evaluate(x, labels, &folds, &classifier, tch::Device::Cpu)?;
        t.push([
            model.display().to_string(),
            steps.clone().unwrap_or_default(),
            val.map_or(String::new(), |v| format!("{v:.4}")),
            layer.to_string(),
            a.pool.to_string(),
            format!("{:.4}", ev.accuracy_mean),
            format!("{:.4}", ev.macro_f1_mean),
            format!("{:.4}", metrics::label_variance_share(x, labels)),
            format!("{:.4}", metrics::mean_cosine(x)),
            format!("{:.4}", sh.position),
            format!("{:.4}", sh.cell_type),
        ]);
        eprintln!(
            "[lm-probe] {} layer {layer}: accuracy {:.4}, macro-F1 {:.4}",
            model.display(),
            ev.accuracy_mean,
            ev.macro_f1_mean
        );
    }
    Ok(())
}

/// `cellsentence lm-probe`.
pub fn cmd_probe(a: &ProbeArgs) -> Result<()> {
    let input = InputArgs {
        input: a.input.clone(),
        layer: a.source.adata_layer.clone(),
        raw: a.source.raw,
        dirs: a.source.dirs.clone(),
    };
    let dirs = crate::data::default_data_dirs(a.source.dirs.data_dir.as_deref());
    let entry = crate::data::resolve(&a.input, &dirs)?;
    let key = a
        .label_key
        .clone()
        .or(entry.label_key)
        .unwrap_or_else(|| "cell_type".into());
    let budget = a.max_genes.unwrap_or(usize::MAX);
    let (p, sents) = prepared_sentences(
        &input,
        &a.source.prep,
        a.source.genes,
        &SentenceParams {
            seed: a.source.tie_seed,
            max_genes: (budget != usize::MAX).then_some(budget),
        },
    )?;
    let labels = p.data.obs_column(&key)?;
    let words: Vec<Vec<String>> = sents
        .iter()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    if words.is_empty() {
        return Err(Error::param("input", "no cells left after preprocessing"));
    }
    let mut t = Table::new([
        "model",
        "steps",
        "val_loss",
        "layer",
        "pool",
        "accuracy",
        "macro_f1",
        "label_variance_share",
        "mean_cosine",
        "token_position_share",
        "token_type_share",
    ]);
    for m in &a.model {
        probe_model(a, m, &words, &labels, &mut t)?;
    }
    write_atomic(&a.out, t.to_csv().as_bytes())?;
    write_atomic(a.out.with_extension("md"), t.to_markdown().as_bytes())?;
    print_out(&t.to_markdown())
}
