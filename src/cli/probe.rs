//! `cellsentence lm-probe`: what each layer of a cell-sentence model knows about cell identity.
use std::path::{Path, PathBuf};

use clap::Args;

use super::domain;

use super::annotate::ClassifierArg;
use super::args::LabelArgs;
use super::lm::SentenceSource;
use super::{prepared_sentences, print_out, InputArgs};
use crate::attribution::model::{attribute_model, read_markers, ModelAttribution};
use crate::classify::{Classifier, MlpConfig, SvmConfig};
use crate::error::{Error, Result};
use crate::lm::{self, ModelMeta};
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
    #[command(flatten)]
    pub labels: LabelArgs,
    /// Genes per prompt (default: each model's own budget, else 200).
    #[arg(long, value_parser = super::domain::count())]
    pub max_genes: Option<usize>,
    /// Stratified folds of the classifier probe.
    #[arg(long, default_value_t = 5, value_parser = super::domain::folds())]
    pub folds: usize,
    #[arg(long, value_enum, default_value = "mlp")]
    pub classifier: ClassifierArg,
    #[arg(long, value_parser = domain::choice::<lm::Pool>(), default_value_t = lm::Pool::Mean)]
    pub pool: lm::Pool,
    /// Seed of the folds.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output CSV, one row per model and hidden state (a Markdown copy beside it).
    #[arg(long)]
    pub out: PathBuf,
}

/// Probes `model` and appends a row per hidden state to `t`.
fn probe_model(
    a: &ProbeArgs,
    model: &std::path::Path,
    words: &[Vec<String>],
    labels: &[String],
    t: &mut Table,
) -> Result<()> {
    let o = lm::probe::ProbeOptions {
        classifier: match a.classifier {
            ClassifierArg::Mlp => Classifier::Mlp(MlpConfig::default()),
            ClassifierArg::Svm => Classifier::Svm(SvmConfig::default()),
        },
        folds: a.folds,
        seed: a.seed,
        pool: a.pool,
        max_genes: a.max_genes,
    };
    let p = lm::probe::probe_model(model, words, labels, &o)?;
    for l in &p.layers {
        t.push([
            model.display().to_string(),
            p.steps.map_or(String::new(), |s| s.to_string()),
            p.val_loss.map_or(String::new(), |v| format!("{v:.4}")),
            l.layer.to_string(),
            a.pool.to_string(),
            format!("{:.4}", l.accuracy),
            format!("{:.4}", l.macro_f1),
            format!("{:.4}", l.label_variance_share),
            format!("{:.4}", l.mean_cosine),
            format!("{:.4}", l.tokens.position),
            format!("{:.4}", l.tokens.cell_type),
        ]);
    }
    Ok(())
}

/// The dataset id, sentence words and labels of a labelled input (preprocessed as `sentences`
/// does; `max_genes` truncates the sentences).
fn labelled_words(
    input: &str,
    source: &SentenceSource,
    labels: &LabelArgs,
    max_genes: Option<usize>,
) -> Result<(String, Vec<Vec<String>>, Vec<String>)> {
    let args = InputArgs {
        input: input.to_string(),
        layer: source.adata_layer.clone(),
        raw: source.raw,
        dirs: source.dirs.clone(),
    };
    let dirs = crate::data::default_data_dirs(source.dirs.data_dir.as_deref());
    let entry = crate::data::resolve(input, &dirs)?;
    let key = labels.key_for(Some(&entry));
    let (p, sents) = prepared_sentences(
        &args,
        &source.prep,
        source.genes,
        &SentenceParams {
            tie_seed: source.tie_seed,
            max_genes,
        },
    )?;
    let labels = p.data.obs_labels(
        &key,
        "remove the unlabelled cells from the file, or choose another label key",
    )?;
    Ok((entry.id, sents.to_words(), labels))
}

/// `cellsentence lm-probe`.
pub fn cmd_probe(a: &ProbeArgs) -> Result<()> {
    let mut inputs: Vec<&Path> = a.model.iter().map(PathBuf::as_path).collect();
    inputs.push(Path::new(&a.input));
    for out in [a.out.clone(), a.out.with_extension("md")] {
        crate::output::check_out("--out", &out, &inputs, crate::output::OutKind::File)?;
    }
    let (_, words, labels) = labelled_words(&a.input, &a.source, &a.labels, a.max_genes)?;
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

/// `attribute` options.
#[derive(Debug, Args)]
pub struct AttributeArgs {
    /// A gene-level model directory trained by the harness (`train-lm`, `pretrain-lm`): its
    /// embedding feeds an MLP per fold. A model fine-tuned for cell types (`finetune-lm --task
    /// cell_type`) is attributed through its own answer instead.
    #[arg(long)]
    pub model: PathBuf,
    /// Labelled cells (an .h5ad or dataset id), preprocessed as `sentences` does.
    #[arg(long, short)]
    pub input: String,
    #[command(flatten)]
    pub source: SentenceSource,
    #[command(flatten)]
    pub labels: LabelArgs,
    #[arg(long, value_parser = domain::choice::<crate::attribution::Method>(), default_value = "grad_input")]
    pub method: crate::attribution::Method,
    /// Steps of integrated gradients (default 16; with `--method integrated_gradients` only).
    #[arg(long, value_parser = super::domain::count())]
    pub ig_steps: Option<usize>,
    /// Hidden state the embedding pools (as `embed --layer`; default -1). Not for a model's answer.
    #[arg(long, allow_negative_numbers = true)]
    pub layer: Option<i64>,
    /// Genes kept per cell type.
    #[arg(long, default_value_t = 20, value_parser = super::domain::count())]
    pub top: usize,
    /// Stratified folds (each cell is attributed with the MLP of the fold that tests it; default
    /// 5). Not for a model's answer.
    #[arg(long, value_parser = super::domain::folds())]
    pub folds: Option<usize>,
    /// Known markers, CSV `cell_type,gene` (lines starting with # are comments): flagged in the
    /// Markdown table.
    #[arg(long)]
    pub markers: Option<PathBuf>,
    /// Attribute even when most of the sentences' genes are unknown to the model's vocabulary
    /// (they are read as `<unk>` and can never rank).
    #[arg(long)]
    pub allow_unknown_genes: bool,
    /// Output folder: top_genes.csv, top_genes.md, figures/attribution_heatmap.html.
    #[arg(long)]
    pub out: PathBuf,
}

/// `cellsentence attribute`.
pub fn cmd_attribute(a: &AttributeArgs) -> Result<()> {
    let how = ModelAttribution {
        method: a.method,
        ig_steps: a.ig_steps,
        layer: a.layer,
        folds: a.folds,
        top: a.top,
    };
    how.check()?;
    let inputs: Vec<&Path> = [
        Some(a.model.as_path()),
        Some(Path::new(&a.input)),
        a.markers.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let marker = crate::output::OutKind::Folder {
        marker: "top_genes.csv",
    };
    crate::output::check_out("--out", &a.out, &inputs, marker)?;
    let meta = ModelMeta::read(&a.model)?.ok_or_else(|| {
        Error::param(
            "model",
            format!(
                "{} has no cellsentence.json: attribution needs a gene-level model trained here (one token per gene); use train-lm or pretrain-lm",
                a.model.display()
            ),
        )
    })?;
    let key = &a.labels;
    let (id, words, labels) = labelled_words(&a.input, &a.source, key, Some(meta.max_genes))?;
    let ck = lm::load(&a.model, tch::Device::Cpu, tch::Kind::Float)?;
    let style = lm::prompt_style(&a.model)?;
    let texts = lm::sentence_texts(&ck, &words, &style, meta.max_genes)?;
    crate::embedding::check_vocabulary(&a.model, &texts, a.allow_unknown_genes)?;
    let markers = a
        .markers
        .as_deref()
        .map(|p| read_markers(p, &labels, &ck.tokenizer))
        .transpose()?
        .unwrap_or_default();
    let ids = ck.tokenizer.encode_batch(&texts)?;
    let (r, how) = attribute_model(&a.model, &ck, &ids, &labels, &how)?;
    write_attribution(a, &id, &r, &markers, &how)
}

/// `--out`, written as one folder: top_genes.csv, top_genes.md (the per-type summary, then the top
/// genes with known markers marked) and the heat map; prints the summary.
fn write_attribution(
    a: &AttributeArgs,
    id: &str,
    r: &crate::attribution::Attribution,
    markers: &[(String, String)],
    how: &str,
) -> Result<()> {
    let (csv, md, summary) = crate::attribution::tables::tables(id, r, markers);
    let heading = format!(
        "# Gene-token attribution — {} ({} sentences), model {}\n\n{how}; scores are the mean over a type's attributed cells (0 where a gene is not in the sentence).{}\n\n",
        id,
        crate::experiment::mode_label(a.source.genes),
        a.model.display(),
        a.markers.as_ref().map_or(String::new(), |m| format!(" Known markers from {}.", m.display()))
    );
    let fig = crate::attribution::tables::heatmap(id, r);
    // one folder, committed whole (hand-written notes beside the results are kept)
    let staged = crate::output::StagedDir::new(&a.out)?;
    let dir = staged.path();
    write_atomic(dir.join("top_genes.csv"), csv.to_csv().as_bytes())?;
    write_atomic(
        dir.join("top_genes.md"),
        format!("{heading}{}\n{}", summary.to_markdown(), md.to_markdown()).as_bytes(),
    )?;
    crate::figure::write_in_results(&fig, dir, "attribution_heatmap", "attribution")?;
    staged.keep_from_old(crate::experiment::KEPT_NOTES)?;
    staged.commit("attribute")?;
    print_out(&summary.to_markdown())
}
