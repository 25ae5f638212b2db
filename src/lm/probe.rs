//! What a model's token states encode: the share of their variance explained by the token's
//! position in the sentence (next-token statistics of a rank-ordered sentence) and by the cell's
//! type (cell identity), per hidden state.
use super::model::GptNeox;
use crate::{Error, Result};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// Variance shares of one hidden state's token vectors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenShares {
    /// Between-position share (η² of the position index).
    pub position: f64,
    /// Between-cell-type share (η² of the cell's label, every token of a cell labelled alike).
    pub cell_type: f64,
}

/// η² of position and of cell type for every hidden state (0 = token embeddings … last = final
/// output), over sequences of one common length (`seqs` of equal length, no padding).
pub fn token_variance_shares(
    model: &GptNeox,
    seqs: &[Vec<i64>],
    labels: &[String],
) -> Result<Vec<TokenShares>> {
    let n = seqs.len();
    if n < 2 || labels.len() != n {
        return Err(Error::param(
            "probe",
            "need at least 2 sequences, one label each",
        ));
    }
    let t = seqs[0].len();
    if seqs.iter().any(|s| s.len() != t) {
        return Err(Error::param("probe", "sequences must share one length"));
    }
    let flat: Vec<i64> = seqs.iter().flatten().copied().collect();
    let ids = Tensor::from_slice(&flat)
        .view([n as i64, t as i64])
        .to_device(model.device());
    let mut groups: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        groups.entry(l.as_str()).or_default().push(i as i64);
    }
    let (_, states) = tch::no_grad(|| model.hidden(&ids, true))?;
    let mut out = Vec::with_capacity(states.len());
    for s in &states {
        let s = s.to_kind(Kind::Double).to_device(tch::Device::Cpu);
        let mean = s.mean_dim(&[0i64, 1][..], false, Kind::Double);
        let total = (&s - &mean).square().sum(Kind::Double).double_value(&[]);
        let pos_means = s.mean_dim(0, false, Kind::Double); // [T, H]
        let position = (pos_means - &mean)
            .square()
            .sum(Kind::Double)
            .double_value(&[])
            * n as f64
            / total;
        let mut between = 0.0;
        for rows in groups.values() {
            let idx = Tensor::from_slice(rows);
            let m = s
                .index_select(0, &idx)
                .mean_dim(&[0i64, 1][..], false, Kind::Double);
            between +=
                (m - &mean).square().sum(Kind::Double).double_value(&[]) * (rows.len() * t) as f64;
        }
        out.push(TokenShares {
            position,
            cell_type: between / total,
        });
    }
    Ok(out)
}

/// How [`probe_model`] reads a model: the classifier, its stratified folds and their seed, the
/// pooling, and the genes per prompt (`None`: the model's own budget, else 200).
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub classifier: crate::classify::Classifier,
    pub folds: usize,
    pub seed: u64,
    pub pool: super::Pool,
    pub max_genes: Option<usize>,
}

/// One hidden state's scores: the classifier's fold means on the pooled states, the label's
/// share of their variance, their mean cosine, and the token states' variance shares.
#[derive(Debug, Clone, Copy)]
pub struct LayerProbe {
    pub layer: i64,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub label_variance_share: f64,
    pub mean_cosine: f64,
    pub tokens: TokenShares,
}

/// A probed model: its training steps and last validation loss (when it says them) and every
/// hidden state's scores.
#[derive(Debug, Clone)]
pub struct ProbedModel {
    pub steps: Option<usize>,
    pub val_loss: Option<f64>,
    pub layers: Vec<LayerProbe>,
}

/// Embeds every hidden state of the model in `model` for the sentences `words` and scores each
/// one against `labels` (`lm-probe`).
pub fn probe_model(
    model: &std::path::Path,
    words: &[Vec<String>],
    labels: &[String],
    o: &ProbeOptions,
) -> Result<ProbedModel> {
    use crate::classify::{self, metrics};
    let meta = super::ModelMeta::read(model)?;
    let budget = o
        .max_genes
        .or(meta.as_ref().map(|m| m.max_genes))
        .unwrap_or(200);
    let ck = super::load(model, tch::Device::Cpu, Kind::Float)?;
    let style = super::prompt_style(model)?;
    let texts = super::sentence_texts(&ck, words, &style, budget)?;
    let ids = ck.tokenizer.encode_batch(&texts)?;
    let opts = super::EmbedOptions {
        pool: o.pool,
        progress: true,
        ..Default::default()
    };
    let layers: Vec<i64> = (0..=ck.model.cfg.num_hidden_layers).collect();
    let mats = super::embed::embed_layers(&ck.model, &ids, &opts, &layers)?;
    let folds = classify::stratified_kfold(labels, o.folds, 0.1, o.seed)?;
    // token-level view on up to 300 cells (spread over the dataset) whose prompts have the most
    // common length: how much of the token states' variance is position, how much cell type
    let pick = common_length_cells(&ids, 300);
    let shares = token_variance_shares(
        &ck.model,
        &pick.iter().map(|&i| ids[i].clone()).collect::<Vec<_>>(),
        &pick.iter().map(|&i| labels[i].clone()).collect::<Vec<_>>(),
    )?;
    let mut scored = Vec::with_capacity(layers.len());
    for ((&layer, x), &tokens) in layers.iter().zip(&mats).zip(&shares) {
        let ev = classify::evaluate(x, labels, &folds, &o.classifier, tch::Device::Cpu)?;
        eprintln!(
            "[lm-probe] {} layer {layer}: accuracy {:.4}, macro-F1 {:.4}",
            model.display(),
            ev.accuracy_mean,
            ev.macro_f1_mean
        );
        scored.push(LayerProbe {
            layer,
            accuracy: ev.accuracy_mean,
            macro_f1: ev.macro_f1_mean,
            label_variance_share: metrics::label_variance_share(x, labels),
            mean_cosine: metrics::mean_cosine(x),
            tokens,
        });
    }
    let log = super::LogRow::read(model).unwrap_or_default();
    Ok(ProbedModel {
        steps: meta.map(|m| m.training.steps),
        val_loss: log.iter().rev().find_map(|r| r.val_loss),
        layers: scored,
    })
}

/// Up to `most` of the sequences whose length is the most common one (the longer on a tie),
/// spread evenly over the dataset.
fn common_length_cells(ids: &[Vec<i64>], most: usize) -> Vec<usize> {
    let mut count = BTreeMap::new();
    for s in ids {
        *count.entry(s.len()).or_insert(0usize) += 1;
    }
    let common = count
        .into_iter()
        .max_by_key(|&(len, k)| (k, len))
        .map_or(0, |(len, _)| len);
    let same: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].len() == common).collect();
    let step = same.len().div_ceil(most).max(1);
    same.iter().step_by(step).copied().collect()
}
