//! Cell embeddings: a pooling (by default the mean, as Cell2Sentence) of one layer's hidden states (by
//! default the last, final layer-normed one) over each prompt's own tokens. Prompts are sorted by
//! length and packed under a token budget, padded on the right, so a cell's embedding does not depend
//! on its batch (it equals Cell2Sentence's at batch size 1).
use super::model::GptNeox;
use crate::npy::Matrix;
use crate::progress::Progress;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// How a prompt's token states become one vector.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    /// Mean over the prompt's tokens (Cell2Sentence, the paper).
    #[default]
    Mean,
    /// The last token's state (what a causal model has read the whole prompt for).
    Last,
    /// Element-wise maximum over the prompt's tokens.
    Max,
}

/// Which of transformers' `hidden_states` entries to pool: 0 is the token embeddings, `i` the
/// output of block `i`, the last (`-1`, the default) the final layer-normed output; negative
/// values count from the end, as Python indexing does.
pub fn resolve_layer(layer: i64, num_layers: i64) -> Result<usize> {
    let n = num_layers + 1;
    let i = if layer < 0 { n + layer } else { layer };
    if !(0..n).contains(&i) {
        return Err(Error::param(
            "layer",
            format!(
                "{layer} is outside the model's {n} hidden states (0 = token embeddings … {} = final output, or -1 … -{n})",
                n - 1
            ),
        ));
    }
    Ok(i as usize)
}

/// Layer, pooling and batching knobs of [`embed_ids`].
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// Hidden-state index to pool (see [`resolve_layer`]; default -1, the final output).
    pub layer: i64,
    /// Pooling over the prompt's tokens (default mean).
    pub pool: Pool,
    /// Most tokens (batch × padded length) in one forward pass.
    pub batch_tokens: usize,
    /// Most sequences in one forward pass.
    pub max_batch: usize,
    /// Show a progress bar (cells/s).
    pub progress: bool,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            layer: -1,
            pool: Pool::Mean,
            batch_tokens: 8192,
            max_batch: 64,
            progress: true,
        }
    }
}

/// Groups sequence indices into batches: longest first, each batch's padded size within the budget.
pub fn plan_batches(lengths: &[usize], opts: &EmbedOptions) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    let mut batches = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    for i in order {
        let longest = cur.first().map_or(lengths[i], |&f| lengths[f]).max(1);
        if !cur.is_empty()
            && ((cur.len() + 1) * longest > opts.batch_tokens || cur.len() >= opts.max_batch)
        {
            batches.push(std::mem::take(&mut cur));
        }
        cur.push(i);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    batches
}

/// Pools `[batch, time, hidden]` states over each row's real tokens (`mask` `[batch, time, 1]`,
/// `lens` the real lengths).
fn pool(x: &Tensor, mask: &Tensor, lens: &[i64], how: Pool) -> Tensor {
    match how {
        Pool::Mean => {
            (x * mask).sum_dim_intlist(1, false, Kind::Float)
                / mask.sum_dim_intlist(1, false, Kind::Float)
        }
        Pool::Max => {
            let pad = (mask - 1.0) * f64::from(f32::MAX);
            (x * mask + pad).amax(1, false)
        }
        Pool::Last => {
            let idx = Tensor::from_slice(&lens.iter().map(|n| n - 1).collect::<Vec<_>>())
                .to_device(x.device())
                .view([-1, 1, 1])
                .expand([lens.len() as i64, 1, x.size()[2]], false);
            x.gather(1, &idx, false).squeeze_dim(1)
        }
    }
}

/// Why embeddings came out NaN or infinite, and the fix: weights that already hold them (a
/// damaged or diverged checkpoint), or overflow in reduced precision.
fn non_finite_cause(model: &GptNeox) -> String {
    if !model.weights_finite() {
        "non-finite values: the checkpoint's weights hold NaN or infinity (a diverged or damaged training run); retrain it or take an earlier checkpoint".into()
    } else if model.kind() == Kind::Float {
        "non-finite values from finite f32 weights (activations overflowed); check the checkpoint's scale (layer norms, embeddings) against its config".into()
    } else {
        "non-finite values (overflow in reduced precision); use --dtype f32".into()
    }
}

/// Embeds token-id sequences: returns a cells × hidden f32 matrix in input order.
pub fn embed_ids(model: &GptNeox, seqs: &[Vec<i64>], opts: &EmbedOptions) -> Result<Matrix> {
    let mut m = embed_layers(model, seqs, opts, &[opts.layer])?;
    Ok(m.pop().expect("one layer asked for"))
}

/// Every prompt has tokens, fits the model's positions and stays inside its vocabulary.
fn check_prompts(model: &GptNeox, seqs: &[Vec<i64>]) -> Result<()> {
    let max_pos = model.cfg.max_position_embeddings as usize;
    let vocab = model.cfg.vocab_size;
    for (i, s) in seqs.iter().enumerate() {
        if s.is_empty() {
            return Err(Error::param("prompts", format!("prompt {i} has no tokens")));
        }
        if s.len() > max_pos {
            return Err(Error::param(
                "prompts",
                format!(
                    "prompt {i} has {} tokens, more than the model's max_position_embeddings {max_pos}; lower --max-genes",
                    s.len()
                ),
            ));
        }
        if let Some(&bad) = s.iter().find(|&&t| t < 0 || t >= vocab) {
            return Err(Error::param(
                "prompts",
                format!(
                    "prompt {i} has token id {bad}, outside the model's vocabulary (vocab_size {vocab}); use the tokenizer saved with this checkpoint"
                ),
            ));
        }
    }
    Ok(())
}

/// Like [`embed_ids`] for several hidden-state indices at once (one forward pass per batch; `opts.layer`
/// is ignored): one matrix per entry of `layers`.
pub fn embed_layers(
    model: &GptNeox,
    seqs: &[Vec<i64>],
    opts: &EmbedOptions,
    layers: &[i64],
) -> Result<Vec<Matrix>> {
    let device = model.device();
    let h = model.cfg.hidden_size as usize;
    let n_layers = model.cfg.num_hidden_layers as usize;
    let layers: Vec<usize> = layers
        .iter()
        .map(|&l| resolve_layer(l, model.cfg.num_hidden_layers))
        .collect::<Result<_>>()?;
    let only_last = layers.iter().all(|&l| l == n_layers);
    check_prompts(model, seqs)?;
    let lengths: Vec<usize> = seqs.iter().map(Vec::len).collect();
    let mut out = vec![vec![0f32; seqs.len() * h]; layers.len()];
    let bar = Progress::bar(opts.progress, seqs.len() as u64, "embed (cells)");
    tch::no_grad(|| {
        for batch in plan_batches(&lengths, opts) {
            let t = lengths[batch[0]];
            let mut ids = vec![0i64; batch.len() * t];
            let mut mask = vec![0f32; batch.len() * t];
            for (r, &i) in batch.iter().enumerate() {
                ids[r * t..r * t + seqs[i].len()].copy_from_slice(&seqs[i]);
                mask[r * t..r * t + seqs[i].len()].fill(1.0);
            }
            let b = batch.len() as i64;
            let ids = Tensor::from_slice(&ids)
                .view([b, t as i64])
                .to_device(device);
            let mask = Tensor::from_slice(&mask)
                .view([b, t as i64, 1])
                .to_device(device);
            let (last, states) = model.hidden(&ids, !only_last)?;
            let lens: Vec<i64> = batch.iter().map(|&i| seqs[i].len() as i64).collect();
            for (k, &layer) in layers.iter().enumerate() {
                let x = if layer == n_layers {
                    &last
                } else {
                    &states[layer]
                };
                let pooled = pool(&x.to_kind(Kind::Float), &mask, &lens, opts.pool);
                let pooled = pooled.to_device(Device::Cpu).contiguous();
                let v: Vec<f32> = Vec::<f32>::try_from(pooled.view([-1]))
                    .map_err(|e| Error::param("embeddings", e.to_string()))?;
                for (r, &i) in batch.iter().enumerate() {
                    out[k][i * h..(i + 1) * h].copy_from_slice(&v[r * h..(r + 1) * h]);
                }
            }
            bar.inc(batch.len() as u64);
        }
        Ok::<(), Error>(())
    })?;
    bar.finish();
    if out.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::param("embeddings", non_finite_cause(model)));
    }
    Ok(out
        .into_iter()
        .map(|data| Matrix {
            rows: seqs.len(),
            cols: h,
            data,
        })
        .collect())
}
