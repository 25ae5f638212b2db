//! Gene-token attribution: how much each gene token of a cell sentence pushes a readout towards a
//! class, through the language model's token embeddings and its layers, by libtorch autograd. The
//! readout is the annotation MLP on the mean-pooled embedding, or, for a model fine-tuned for cell
//! types, the LM's own answer (the answer token's logit at the prompt's end).
//!
//! `grad_input`: score_t = Σ_h ∂logit/∂E\[t,h\] · E\[t,h\] (gradient × input). `integrated_gradients`:
//! the same with the gradient averaged over E scaled by α ∈ (0, 1] (midpoint rule, `steps`
//! points; baseline: zero embeddings), so the scores of a cell add up to logit(E) − logit(0).
//! Both are checked against finite differences (tests/lm.rs).
pub mod model;
pub mod tables;

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
) -> Result<Tensor> {
    let (b, t) = (embeds.size()[0], embeds.size()[1]);
    let final_state = layer == model.cfg.num_hidden_layers as usize;
    let (last, states) = model.hidden_from_embeds(embeds, !final_state)?;
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
    Ok(mlp.logits(&pooled))
}

/// The logits of the LM's own answer for token embeddings `embeds` `[batch, time, hidden]` with
/// right padding (`lens` real lengths): the next-token logits at each prompt's last token, as a
/// model fine-tuned for cell types reads its answer (`cell_type::predict`).
pub fn answer_logits(model: &GptNeox, embeds: &Tensor, lens: &[i64]) -> Result<Tensor> {
    let (h, _) = model.hidden_from_embeds(embeds, false)?;
    let (t, hd) = (h.size()[1], h.size()[2]);
    let last: Vec<i64> = lens
        .iter()
        .enumerate()
        .map(|(r, &n)| r as i64 * t + n - 1)
        .collect();
    let h = h
        .reshape([-1, hd])
        .index_select(0, &Tensor::from_slice(&last).to_device(embeds.device()));
    Ok(model.logits(&h))
}

/// Token-id sequences as one right-padded `[batch, time]` tensor on `device` (pad id 0; causal
/// attention never lets a real token see the pads behind it), with their real lengths.
fn right_padded(seqs: &[Vec<i64>], device: Device) -> (Tensor, Vec<i64>) {
    let t = seqs.iter().map(Vec::len).max().unwrap_or(1);
    let mut ids = vec![0i64; seqs.len() * t];
    for (r, s) in seqs.iter().enumerate() {
        ids[r * t..r * t + s.len()].copy_from_slice(s);
    }
    let lens = seqs.iter().map(|s| s.len() as i64).collect();
    let x = Tensor::from_slice(&ids)
        .view([seqs.len() as i64, t as i64])
        .to_device(device);
    (x, lens)
}

/// What an attribution score explains.
#[derive(Clone, Copy)]
pub enum Readout<'a> {
    /// A class logit of the annotation MLP on the mean-pooled hidden state `layer` (as `embed
    /// --layer`); targets are class indices.
    Mlp { mlp: &'a TrainedMlp, layer: i64 },
    /// The LM's answer: the logit of an answer token at the prompt's end; targets are token ids.
    Answer,
}

/// Per-token scores of each sequence for its `targets` class (one score per token, in order).
pub fn token_scores(
    model: &GptNeox,
    mlp: &TrainedMlp,
    seqs: &[Vec<i64>],
    targets: &[usize],
    method: (Method, usize),
    layer: i64,
    batch: usize,
) -> Result<Vec<Vec<f64>>> {
    let targets: Vec<i64> = targets.iter().map(|&c| c as i64).collect();
    readout_scores(
        model,
        Readout::Mlp { mlp, layer },
        seqs,
        &targets,
        method,
        batch,
    )
}

/// Per-token scores of each sequence for its target (a class of `readout`'s MLP, or an answer
/// token id): one score per token, in order.
pub fn readout_scores(
    model: &GptNeox,
    readout: Readout<'_>,
    seqs: &[Vec<i64>],
    targets: &[i64],
    (method, steps): (Method, usize),
    batch: usize,
) -> Result<Vec<Vec<f64>>> {
    if seqs.len() != targets.len() {
        return Err(Error::param("attribution", "one target per sequence"));
    }
    if method == Method::IntegratedGradients && steps == 0 {
        return Err(Error::param(
            "ig_steps",
            "integrated gradients need at least 1 step",
        ));
    }
    let layer = match readout {
        Readout::Mlp { layer, .. } => resolve_layer(layer, model.cfg.num_hidden_layers)?,
        Readout::Answer => 0,
    };
    let logits_of = |x: &Tensor, lens: &[i64]| match readout {
        Readout::Mlp { mlp, .. } => pooled_logits(model, mlp, x, lens, layer),
        Readout::Answer => answer_logits(model, x, lens),
    };
    let device = model.device();
    let mut out = Vec::with_capacity(seqs.len());
    for (chunk, tg) in seqs.chunks(batch.max(1)).zip(targets.chunks(batch.max(1))) {
        let (ids, lens) = right_padded(chunk, device);
        let t = ids.size()[1] as usize;
        let e = tch::no_grad(|| model.embed(&ids));
        let pick = Tensor::from_slice(tg).to_device(device).view([-1, 1]);
        let grad_at = |alpha: f64| -> Result<Tensor> {
            let x = (&e * alpha).detach().set_requires_grad(true);
            let logits = logits_of(&x, &lens)?;
            let target = logits.gather(1, &pick, false).sum(logits.kind());
            let g = Tensor::run_backward(&[target], &[&x], false, false);
            Ok(g[0].shallow_clone())
        };
        let grad = match method {
            Method::GradInput => grad_at(1.0)?,
            Method::IntegratedGradients => {
                let mut acc = grad_at(0.5 / steps as f64)?;
                for k in 1..steps {
                    acc += grad_at((k as f64 + 0.5) / steps as f64)?;
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

/// Per-type sums of token scores over the attributed cells.
struct Tally {
    sums: std::collections::BTreeMap<String, std::collections::HashMap<i64, f64>>,
    cells: std::collections::BTreeMap<String, (usize, usize)>,
}

impl Tally {
    fn new(labels: &[String]) -> Self {
        let mut cells = std::collections::BTreeMap::new();
        for l in labels {
            cells.entry(l.clone()).or_insert((0, 0)).1 += 1;
        }
        Tally {
            sums: Default::default(),
            cells,
        }
    }

    /// Adds one attributed cell of type `label`: its token ids and their scores.
    fn add(&mut self, label: &str, seq: &[i64], scores: &[f64]) {
        self.cells.get_mut(label).expect("counted").0 += 1;
        let per = self.sums.entry(label.to_string()).or_default();
        for (&id, &v) in seq.iter().zip(scores) {
            *per.entry(id).or_default() += v;
        }
    }

    /// The `top` genes of each type by mean score, leaving out special tokens and `skip`.
    fn finish(self, tok: &crate::lm::tokenizer::Tok, skip: &[i64], top: usize) -> Attribution {
        let mut special: Vec<i64> = [
            crate::lm::tokenizer::EOS,
            crate::lm::tokenizer::PAD,
            crate::lm::tokenizer::UNK,
        ]
        .iter()
        .filter_map(|s| tok.id(s))
        .collect();
        special.extend_from_slice(skip);
        let mut out = Vec::new();
        for (ty, per) in &self.sums {
            let n = self.cells[ty].0.max(1) as f64;
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
            for (rank, (gene, score)) in genes.into_iter().take(top).enumerate() {
                out.push(TopGene {
                    cell_type: ty.clone(),
                    rank: rank + 1,
                    gene,
                    score,
                });
            }
        }
        Attribution {
            top: out,
            cells: self.cells,
        }
    }
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
    let mut tally = Tally::new(labels);
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
            tally.add(&labels[i], s, sc);
        }
        bar.inc(test.len() as u64);
    }
    bar.finish();
    Ok(tally.finish(tok, &[], o.top))
}

/// Attributes every correctly answered cell's gene tokens to the answer of a model fine-tuned for
/// cell types (`finetune-lm --task cell_type`): `ids` are the prompts it reads, `answers` the
/// trained labels with their answer token ids. A cell is answered right when its label's token
/// scores highest among the trained labels' (as `cell_type::predict`); tokens in `skip` (the
/// prompt's task token) are left out of the rankings.
pub fn attribute_answers(
    model: &GptNeox,
    tok: &crate::lm::tokenizer::Tok,
    ids: &[Vec<i64>],
    labels: &[String],
    answers: &[(String, i64)],
    skip: &[i64],
    o: &AttributionOptions,
) -> Result<Attribution> {
    let device = model.device();
    let answer_ids =
        Tensor::from_slice(&answers.iter().map(|a| a.1).collect::<Vec<_>>()).to_device(device);
    let mut tally = Tally::new(labels);
    let bar = crate::progress::Progress::bar(true, labels.len() as u64, "attribution (cells)");
    let batch = o.batch.max(1);
    for (c, (seqs, ls)) in ids.chunks(batch).zip(labels.chunks(batch)).enumerate() {
        let (x, lens) = right_padded(seqs, device);
        let l = tch::no_grad(|| answer_logits(model, &model.embed(&x), &lens))?;
        let pick: Vec<i64> = Vec::<i64>::try_from(
            l.index_select(1, &answer_ids)
                .argmax(1, false)
                .to_device(Device::Cpu),
        )
        .map_err(|e| Error::param("attribution", e.to_string()))?;
        let right: Vec<usize> = (0..seqs.len())
            .filter(|&r| answers[pick[r] as usize].0 == ls[r])
            .collect();
        let chosen: Vec<Vec<i64>> = right.iter().map(|&r| seqs[r].clone()).collect();
        let targets: Vec<i64> = right.iter().map(|&r| answers[pick[r] as usize].1).collect();
        let scores = readout_scores(
            model,
            Readout::Answer,
            &chosen,
            &targets,
            (o.method, o.steps),
            batch,
        )?;
        for ((&r, s), sc) in right.iter().zip(&chosen).zip(&scores) {
            tally.add(&labels[c * batch + r], s, sc);
        }
        bar.inc(seqs.len() as u64);
    }
    bar.finish();
    Ok(tally.finish(tok, skip, o.top))
}
