//! Gene-token attribution: how much each gene token of a cell sentence pushes the annotation MLP
//! towards a class, through the language model's token embeddings, its layers, the mean pooling of
//! the embedding and the MLP, by libtorch autograd.
//!
//! `grad_input`: score_t = Σ_h ∂logit/∂E[t,h] · E[t,h] (gradient × input). `integrated_gradients`:
//! the same with the gradient averaged over E scaled by α ∈ (0, 1] (midpoint rule, `steps`
//! points; baseline: zero embeddings), so the scores of a cell add up to logit(E) − logit(0).
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::classify::mlp::TrainedMlp;
use crate::error::{Error, Result};
use crate::lm::{resolve_layer, GptNeox};

/// Attribution method.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Gradient × input (one backward pass per batch).
    #[strum(to_string = "grad_input", serialize = "grad-input")]
    GradInput,
    /// Integrated gradients from zero embeddings (`steps` backward passes per batch).
    #[strum(to_string = "integrated_gradients", serialize = "integrated-gradients")]
    IntegratedGradients,
}

/// Class logit of the mean-pooled hidden state `layer` for token embeddings `embeds`
/// `[batch, time, hidden]` with right padding (`lens` real lengths): what `embed_ids` computes,
/// fed to the MLP.
pub fn pooled_logits(
    model: &GptNeox,
    mlp: &TrainedMlp,
    embeds: &Tensor,
    lens: &[i64],
    layer: usize,
) -> Tensor {
    let (b, t) = (embeds.size()[0], embeds.size()[1]);
    let final_state = layer == model.cfg.num_hidden_layers as usize;
    let (last, states) = model.hidden_from_embeds(embeds, !final_state);
    let x = if final_state {
        last
    } else {
        states[layer].shallow_clone()
    };
    let mut mask = vec![0f64; (b * t) as usize];
    for (r, &n) in lens.iter().enumerate() {
        mask[r * t as usize..r * t as usize + n as usize].fill(1.0);
    }
    let mask = Tensor::from_slice(&mask)
        .view([b, t, 1])
        .to_device(embeds.device())
        .to_kind(x.kind());
    let k = x.kind();
    let pooled = (x * &mask).sum_dim_intlist(1, false, k) / mask.sum_dim_intlist(1, false, k);
    mlp.logits(&pooled)
}

/// Per-token scores of each sequence for its `targets` class (one score per token, in order).
pub fn token_scores(
    model: &GptNeox,
    mlp: &TrainedMlp,
    seqs: &[Vec<i64>],
    targets: &[usize],
    (method, steps): (Method, usize),
    layer: i64,
    batch: usize,
) -> Result<Vec<Vec<f64>>> {
    if seqs.len() != targets.len() {
        return Err(Error::param("attribution", "one target class per sequence"));
    }
    if method == Method::IntegratedGradients && steps == 0 {
        return Err(Error::param(
            "ig_steps",
            "integrated gradients need at least 1 step",
        ));
    }
    let layer = resolve_layer(layer, model.cfg.num_hidden_layers)?;
    let device = model.device();
    let mut out = Vec::with_capacity(seqs.len());
    for (chunk, tg) in seqs.chunks(batch.max(1)).zip(targets.chunks(batch.max(1))) {
        let t = chunk.iter().map(Vec::len).max().unwrap_or(1);
        let b = chunk.len();
        let mut ids = vec![0i64; b * t];
        for (r, s) in chunk.iter().enumerate() {
            ids[r * t..r * t + s.len()].copy_from_slice(s);
        }
        let lens: Vec<i64> = chunk.iter().map(|s| s.len() as i64).collect();
        let ids = Tensor::from_slice(&ids)
            .view([b as i64, t as i64])
            .to_device(device);
        let e = tch::no_grad(|| model.embed(&ids));
        let pick = Tensor::from_slice(&tg.iter().map(|&c| c as i64).collect::<Vec<_>>())
            .to_device(device)
            .view([-1, 1]);
        let grad_at = |alpha: f64| {
            let x = (&e * alpha).detach().set_requires_grad(true);
            let logits = pooled_logits(model, mlp, &x, &lens, layer);
            let target = logits.gather(1, &pick, false).sum(logits.kind());
            let g = Tensor::run_backward(&[target], &[&x], false, false);
            g[0].shallow_clone()
        };
        let grad = match method {
            Method::GradInput => grad_at(1.0),
            Method::IntegratedGradients => {
                let mut acc = grad_at(0.5 / steps as f64);
                for k in 1..steps {
                    acc += grad_at((k as f64 + 0.5) / steps as f64);
                }
                acc / steps as f64
            }
        };
        let s = (grad * &e)
            .sum_dim_intlist(2, false, Kind::Double)
            .to_device(Device::Cpu);
        let v: Vec<f64> = Vec::<f64>::try_from(s.view([-1]))
            .map_err(|err| Error::param("attribution", err.to_string()))?;
        for (r, &n) in lens.iter().enumerate() {
            out.push(v[r * t..r * t + n as usize].to_vec());
        }
    }
    Ok(out)
}

/// Settings of [`attribute_cells`].
#[derive(Debug, Clone)]
pub struct AttributionOptions {
    pub method: Method,
    /// Integrated-gradients steps.
    pub steps: usize,
    /// Hidden state the embedding pools (as `embed --layer`).
    pub layer: i64,
    /// Stratified folds: each cell is attributed with the MLP of the fold that tests it.
    pub folds: usize,
    pub seed: u64,
    pub mlp: crate::classify::MlpConfig,
    /// Genes kept per cell type.
    pub top: usize,
    /// Sequences per backward pass.
    pub batch: usize,
}

impl Default for AttributionOptions {
    fn default() -> Self {
        AttributionOptions {
            method: Method::GradInput,
            steps: 16,
            layer: -1,
            folds: 5,
            seed: 0,
            mlp: crate::classify::MlpConfig::default(),
            top: 20,
            batch: 32,
        }
    }
}

/// One gene of a cell type's ranking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopGene {
    pub cell_type: String,
    pub rank: usize,
    pub gene: String,
    /// Mean score over the type's correctly predicted cells (0 where the gene is not in a sentence).
    pub score: f64,
}

/// What [`attribute_cells`] found.
#[derive(Debug, Clone)]
pub struct Attribution {
    pub top: Vec<TopGene>,
    /// Correctly predicted (attributed) cells per cell type, and all cells of the type.
    pub cells: std::collections::BTreeMap<String, (usize, usize)>,
}

/// Attributes every correctly predicted cell's gene tokens to its predicted class: the gene-level
/// model `model` (tokenizer `tok`, one token per gene) embeds the token-id sequences `ids`, an MLP per
/// stratified fold is trained on the embeddings, and each test cell is attributed through it.
pub fn attribute_cells(
    model: &GptNeox,
    tok: &crate::lm::tokenizer::Tok,
    ids: &[Vec<i64>],
    labels: &[String],
    o: &AttributionOptions,
) -> Result<Attribution> {
    use crate::classify::{self, mlp};
    use std::collections::{BTreeMap, HashMap};
    let emb = crate::lm::embed_ids(
        model,
        ids,
        &crate::lm::EmbedOptions {
            layer: o.layer,
            progress: false,
            ..Default::default()
        },
    )?;
    let folds = classify::stratified_kfold(labels, o.folds, 0.1, o.seed)?;
    let (names, y) = classify::encode_labels(labels);
    let device = model.device();
    let mut sums: BTreeMap<&str, HashMap<i64, f64>> = BTreeMap::new();
    let mut cells: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for l in labels {
        cells.entry(l.clone()).or_default().1 += 1;
    }
    let bar = crate::progress::Progress::bar(true, labels.len() as u64, "attribution (cells)");
    for fold in &folds {
        let (m, _) = mlp::fit(&emb, &y, names.len(), fold, &o.mlp, device);
        let test = &fold.test;
        let xt = Tensor::from_slice(
            &test
                .iter()
                .flat_map(|&i| emb.row(i).to_vec())
                .collect::<Vec<f32>>(),
        )
        .view([test.len() as i64, emb.cols as i64])
        .to_device(device);
        let pred: Vec<i64> = tch::no_grad(|| {
            Vec::<i64>::try_from(m.logits(&xt).argmax(1, false).to_device(Device::Cpu))
        })
        .map_err(|e| Error::param("attribution", e.to_string()))?;
        let correct: Vec<usize> = test
            .iter()
            .zip(&pred)
            .filter(|(&i, &p)| y[i] == p as usize)
            .map(|(&i, _)| i)
            .collect();
        let seqs: Vec<Vec<i64>> = correct.iter().map(|&i| ids[i].clone()).collect();
        let targets: Vec<usize> = correct.iter().map(|&i| y[i]).collect();
        let scores = token_scores(
            model,
            &m,
            &seqs,
            &targets,
            (o.method, o.steps),
            o.layer,
            o.batch,
        )?;
        for ((&i, s), sc) in correct.iter().zip(&seqs).zip(&scores) {
            cells.get_mut(&labels[i]).expect("counted").0 += 1;
            let per = sums.entry(labels[i].as_str()).or_default();
            for (&id, &v) in s.iter().zip(sc) {
                *per.entry(id).or_default() += v;
            }
        }
        bar.inc(test.len() as u64);
    }
    bar.finish();
    let special: Vec<i64> = [
        crate::lm::tokenizer::EOS,
        crate::lm::tokenizer::PAD,
        crate::lm::tokenizer::UNK,
    ]
    .iter()
    .filter_map(|s| tok.id(s))
    .collect();
    let mut top = Vec::new();
    for (ty, per) in &sums {
        let n = cells[*ty].0.max(1) as f64;
        let mut genes: Vec<(String, f64)> = per
            .iter()
            .filter(|(id, _)| !special.contains(id))
            .map(|(&id, &s)| {
                let g = tok
                    .inner
                    .id_to_token(id as u32)
                    .unwrap_or_else(|| id.to_string());
                (g, s / n)
            })
            .collect();
        genes.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (rank, (gene, score)) in genes.into_iter().take(o.top).enumerate() {
            top.push(TopGene {
                cell_type: ty.to_string(),
                rank: rank + 1,
                gene,
                score,
            });
        }
    }
    Ok(Attribution { top, cells })
}
