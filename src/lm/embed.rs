//! Cell embeddings: the mean of the last layer's (final layer-normed) hidden states over each prompt's
//! own tokens. Prompts are sorted by length and packed under a token budget, padded on the right, so
//! a cell's embedding does not depend on its batch (it equals Cell2Sentence's at batch size 1).
use super::model::GptNeox;
use crate::npy::Matrix;
use crate::progress::Progress;
use crate::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Batching knobs of [`embed_ids`].
#[derive(Debug, Clone)]
pub struct EmbedOptions {
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

/// Embeds token-id sequences: returns a cells × hidden f32 matrix in input order.
pub fn embed_ids(model: &GptNeox, seqs: &[Vec<i64>], opts: &EmbedOptions) -> Result<Matrix> {
    let device = model.device();
    let h = model.cfg.hidden_size as usize;
    let max_pos = model.cfg.max_position_embeddings as usize;
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
        let vocab = model.cfg.vocab_size;
        if let Some(&bad) = s.iter().find(|&&t| t < 0 || t >= vocab) {
            return Err(Error::param(
                "prompts",
                format!(
                    "prompt {i} has token id {bad}, outside the model's vocabulary (vocab_size {vocab}); use the tokenizer saved with this checkpoint"
                ),
            ));
        }
    }
    let lengths: Vec<usize> = seqs.iter().map(Vec::len).collect();
    let mut out = vec![0f32; seqs.len() * h];
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
            let (last, _) = model.hidden(&ids, false);
            let pooled = (last.to_kind(Kind::Float) * &mask).sum_dim_intlist(1, false, Kind::Float)
                / mask.sum_dim_intlist(1, false, Kind::Float);
            let pooled = pooled.to_device(Device::Cpu).contiguous();
            let v: Vec<f32> = Vec::<f32>::try_from(pooled.view([-1]))
                .map_err(|e| Error::param("embeddings", e.to_string()))?;
            for (r, &i) in batch.iter().enumerate() {
                out[i * h..(i + 1) * h].copy_from_slice(&v[r * h..(r + 1) * h]);
            }
            bar.inc(batch.len() as u64);
        }
        Ok::<(), Error>(())
    })?;
    bar.finish();
    if out.iter().any(|v| !v.is_finite()) {
        return Err(Error::param(
            "embeddings",
            "non-finite values (overflow in reduced precision?); use --dtype f32",
        ));
    }
    Ok(Matrix {
        rows: seqs.len(),
        cols: h,
        data: out,
    })
}
