//! `cellsentence lm-probe`: what each layer of a cell-sentence model knows about cell identity.
use std::path::{Path, PathBuf};

use clap::Args;

use super::domain;

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
    let ids = ck
        .tokenizer
        .encode_batch(&lm::sentence_texts(&ck, words, &style, budget)?)?;
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

/// The dataset id, sentence words and labels of a labelled input (preprocessed as `sentences`
/// does; `max_genes` truncates the sentences).
fn labelled_words(
    input: &str,
    source: &SentenceSource,
    label_key: Option<&str>,
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
    let key = label_key
        .map(String::from)
        .or(entry.label_key)
        .unwrap_or_else(|| "cell_type".into());
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
    let (_, words, labels) =
        labelled_words(&a.input, &a.source, a.label_key.as_deref(), a.max_genes)?;
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
    /// obs column with the cell types (default: the dataset's known one, else `cell_type`).
    #[arg(long)]
    pub label_key: Option<String>,
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

/// Reads `cell_type,gene` lines: a cell type the input's labels lack is refused by name; a gene
/// the model cannot read (not in its vocabulary, so it can never rank) is warned about by name.
fn read_markers(
    path: &std::path::Path,
    labels: &[String],
    tok: &lm::tokenizer::Tok,
) -> Result<Vec<(String, String)>> {
    let markers = parse_markers(path)?;
    let known: std::collections::BTreeSet<&str> = labels.iter().map(String::as_str).collect();
    let mut unknown: Vec<&str> = markers
        .iter()
        .map(|(t, _)| t.as_str())
        .filter(|t| !known.contains(t))
        .collect();
    unknown.dedup();
    if !unknown.is_empty() {
        let list: Vec<&str> = known.iter().copied().collect();
        return Err(Error::format(
            path,
            format!(
                "cell type(s) {} are not labels of the input (its labels: {})",
                unknown.join(", "),
                list.join(", ")
            ),
            "spell the types as the input's label column does, or remove their lines",
        ));
    }
    let unread: Vec<&str> = markers
        .iter()
        .map(|(_, g)| g.as_str())
        .filter(|g| tok.id(g).is_none())
        .collect();
    if !unread.is_empty() {
        eprintln!(
            "warning: {}: marker gene(s) {} are not in the model's vocabulary: they can never rank among the top genes",
            path.display(),
            unread.join(", ")
        );
    }
    Ok(markers)
}

/// Parses `cell_type,gene` lines (genes upper-cased).
fn parse_markers(path: &std::path::Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line == "cell_type,gene" {
            continue;
        }
        let Some((t, g)) = line.split_once(',') else {
            return Err(Error::format(
                path,
                format!("line {}: expected cell_type,gene", i + 1),
                "write one cell_type,gene pair per line",
            ));
        };
        out.push((t.trim().to_string(), g.trim().to_uppercase()));
    }
    Ok(out)
}

/// Integrated-gradients steps when `--ig-steps` is not given.
const IG_STEPS: usize = 16;

/// `cellsentence attribute`.
pub fn cmd_attribute(a: &AttributeArgs) -> Result<()> {
    if a.ig_steps.is_some() && a.method != crate::attribution::Method::IntegratedGradients {
        return Err(Error::param(
            "--ig-steps",
            format!(
                "applies to --method integrated_gradients only, and the method is {}; drop --ig-steps or choose that method",
                a.method
            ),
        ));
    }
    let ig_steps = a.ig_steps.unwrap_or(IG_STEPS);
    let inputs: Vec<&Path> = [
        Some(a.model.as_path()),
        Some(Path::new(&a.input)),
        a.markers.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    crate::output::check_out(
        "--out",
        &a.out,
        &inputs,
        crate::output::OutKind::Folder {
            marker: "top_genes.csv",
        },
    )?;
    let meta = ModelMeta::read(&a.model)?.ok_or_else(|| {
        Error::param(
            "model",
            format!(
                "{} has no cellsentence.json: attribution needs a gene-level model trained here (one token per gene); use train-lm or pretrain-lm",
                a.model.display()
            ),
        )
    })?;
    let (id, words, labels) = labelled_words(
        &a.input,
        &a.source,
        a.label_key.as_deref(),
        Some(meta.max_genes),
    )?;
    let ck = lm::load(&a.model, tch::Device::Cpu, tch::Kind::Float)?;
    let style = lm::prompt_style(&a.model)?;
    let texts = lm::sentence_texts(&ck, &words, &style, meta.max_genes)?;
    super::embed::check_vocabulary(&a.model, &texts, a.allow_unknown_genes)?;
    let markers = a
        .markers
        .as_deref()
        .map(|p| read_markers(p, &labels, &ck.tokenizer))
        .transpose()?
        .unwrap_or_default();
    let ids = ck.tokenizer.encode_batch(&texts)?;
    let answerer = a.model.join(lm::cell_type::HEAD).exists();
    let method = match a.method {
        crate::attribution::Method::GradInput => "Gradient × input".to_string(),
        crate::attribution::Method::IntegratedGradients => {
            format!("Integrated gradients ({ig_steps} steps, zero baseline)")
        }
    };
    let (r, how) = if answerer {
        answer_attribution(a, &ck, &ids, &labels, &method)?
    } else {
        mlp_attribution(a, &ck, &ids, &labels, &method, ig_steps)?
    };
    write_attribution(a, &id, &r, &markers, &how)
}

/// Attribution through the annotation MLP (k-fold) on the mean-pooled hidden state: the
/// attribution and the sentence saying how it was made.
fn mlp_attribution(
    a: &AttributeArgs,
    ck: &lm::Checkpoint,
    ids: &[Vec<i64>],
    labels: &[String],
    method: &str,
    ig_steps: usize,
) -> Result<(crate::attribution::Attribution, String)> {
    let o = crate::attribution::AttributionOptions {
        method: a.method,
        steps: ig_steps,
        layer: a.layer.unwrap_or(-1),
        folds: a.folds.unwrap_or(5),
        top: a.top,
        ..Default::default()
    };
    let r = crate::attribution::attribute_cells(&ck.model, &ck.tokenizer, ids, labels, &o)?;
    let how = format!(
        "{method} of the MLP's predicted-class logit through the LM's token embeddings (hidden state {}, mean-pooled), {}-fold: each correctly predicted cell is attributed with the MLP of the fold that tests it",
        o.layer, o.folds
    );
    Ok((r, how))
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

/// Attribution through the answer of a model fine-tuned for cell types: every correctly answered
/// cell with that one model (the MLP's `--folds` and `--layer` do not apply and are refused).
fn answer_attribution(
    a: &AttributeArgs,
    ck: &lm::Checkpoint,
    ids: &[Vec<i64>],
    labels: &[String],
    method: &str,
) -> Result<(crate::attribution::Attribution, String)> {
    if let Some(opt) = [
        ("--folds", a.folds.is_some()),
        ("--layer", a.layer.is_some()),
    ]
    .iter()
    .find_map(|(n, given)| given.then_some(*n))
    {
        return Err(Error::param(
            opt,
            format!(
                "{} is fine-tuned for cell types: it is attributed through its own answer, which has no MLP folds or pooled layer; drop {opt}",
                a.model.display()
            ),
        ));
    }
    let head = lm::cell_type::CellTypeHead::read(&a.model)?;
    let answers: Vec<(String, i64)> = head
        .labels
        .iter()
        .cloned()
        .zip(head.answer_ids(&ck.tokenizer)?)
        .collect();
    let skip: Vec<i64> = ck
        .tokenizer
        .id(lm::corpus::CELL_TYPE_SEP)
        .into_iter()
        .collect();
    let o = crate::attribution::AttributionOptions {
        method: a.method,
        steps: a.ig_steps.unwrap_or(IG_STEPS),
        top: a.top,
        ..Default::default()
    };
    let r = crate::attribution::attribute_answers(
        &ck.model,
        &ck.tokenizer,
        ids,
        labels,
        &answers,
        &skip,
        &o,
    )?;
    let trained: usize = head.train_cells.iter().sum();
    let how = format!(
        "{method} of the LM's own answer (the logit of the cell type's answer token at the prompt's end, Cell2Sentence's cell-type prediction) through its token embeddings: every cell the model answers right (its answer restricted to the {} trained labels) is attributed with this one fine-tuned model ({} training cells; cells it was trained on are included when they are among the input's)",
        head.labels.len(),
        trained
    );
    Ok((r, how))
}
