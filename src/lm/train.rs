//! A small GPT-NeoX-shaped cell-sentence language model trained by the harness itself: gene-level
//! WordLevel tokenizer, causal-LM loss, AdamW with linear warm-up and cosine decay, seeded; saved in
//! Hugging Face layout so [`super::load`](fn@super::load) (and transformers) read it back.
use super::config::NeoxConfig;
use super::model::GptNeox;

pub(crate) use super::model_dir::read_json;
pub use super::model_dir::{
    check_out, save, untrained_like, ExtraFiles, LogRow, ModelMeta, META, TRAINING_LOG,
};
pub use super::model_dir::{partial_dir, Fitted, Snapshot};
use super::tokenizer::{gene_tokenizer, Tok};
pub use super::train_config::{Sampling, TrainConfig};
use super::trainer::{Resume, Task, Trainer};
use crate::progress::Progress;
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// What training produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    pub dir: PathBuf,
    pub log: Vec<LogRow>,
    pub n_train: usize,
    pub n_val: usize,
    pub vocab: usize,
    pub parameters: i64,
    pub seconds: f64,
    pub tokens_per_s: f64,
}

/// Learning rate at `step` (0-based) of `n`: linear warm-up then cosine to `min_lr`·peak.
pub fn lr_at(c: &TrainConfig, step: usize, n: usize) -> f64 {
    let warm = ((c.warmup * n as f64).ceil() as usize).max(1);
    if step < warm {
        return c.lr * (step + 1) as f64 / warm as f64;
    }
    let p = (step - warm) as f64 / (n - warm).max(1) as f64;
    let cos = 0.5 * (1.0 + (std::f64::consts::PI * p.min(1.0)).cos());
    c.lr * (c.min_lr + (1.0 - c.min_lr) * cos)
}

pub(super) fn check(c: &TrainConfig) -> Result<()> {
    let bad = |what: &str| Err(Error::param("training", what.to_string()));
    if c.layers < 1 || c.hidden < 1 || c.heads < 1 || c.intermediate < 1 {
        return bad("layers, hidden, heads and intermediate must be positive; fix: e.g. layers 4, hidden 256, heads 4, intermediate 1024 (the default)");
    }
    if c.hidden % c.heads != 0 || (c.hidden / c.heads) % 8 != 0 {
        return bad(&format!(
            "hidden must be a multiple of heads, with head size a multiple of 8 (hidden {}, heads {}); fix: e.g. hidden 256 with heads 4 (Pythia-410M: 1024 with 16)",
            c.hidden, c.heads
        ));
    }
    if c.batch_size == 0 || c.max_genes == 0 {
        return bad(
            "batch_size and max_genes must be positive (steps: 0 saves the untrained model); fix: e.g. batch_size 16, max_genes 200",
        );
    }
    if c.lr.is_nan()
        || c.lr <= 0.0
        || !(0.0..1.0).contains(&c.val_fraction)
        || !(0.0..=1.0).contains(&c.warmup)
    {
        return bad("lr must be positive; val_fraction and warmup in [0, 1); fix: e.g. lr 0.001, val_fraction 0.05, warmup 0.05");
    }
    if !(0.0..=1.0).contains(&c.rotary_pct) {
        return bad("rotary_pct must be in [0, 1]; fix: use 0.25 (Pythia's)");
    }
    if let Some(k) = c.snapshots.iter().find(|&&k| k > c.steps) {
        return Err(Error::param(
            "snapshots",
            format!(
                "step {k} is beyond steps {}: it would never be taken; fix: lower it or raise steps",
                c.steps
            ),
        ));
    }
    Ok(())
}

/// Bytes a training step of `c` needs at least, with a vocabulary of `vocab` rows: parameters
/// with their gradients and Adam's two moments (4 copies of f32), and the activations a batch
/// keeps for the backward pass (per token and layer about 16 × hidden + 2 × intermediate floats,
/// plus the logits over the vocabulary).
pub fn memory_estimate(c: &TrainConfig, vocab: usize) -> u128 {
    let (h, l, i) = (c.hidden as u128, c.layers as u128, c.intermediate as u128);
    let params = l * (4 * h * h + 2 * h * i) + vocab as u128 * h * 2;
    let tokens = c.batch_size as u128 * (c.max_genes as u128 + 2);
    let activations = tokens * (l * (16 * h + 2 * i) + 2 * vocab as u128);
    4 * (4 * params + activations)
}

/// Refuses a configuration whose [`memory_estimate`] exceeds the memory this machine has
/// available (CPU training; on CUDA the device reports its own limit).
pub(super) fn check_memory(c: &TrainConfig, vocab: usize, device: Device) -> Result<()> {
    if device != Device::Cpu {
        return Ok(());
    }
    let Some(avail) = available_memory() else {
        return Ok(());
    };
    let need = memory_estimate(c, vocab);
    if need > avail as u128 {
        let gib = |b: u128| b as f64 / (1u128 << 30) as f64;
        return Err(Error::param(
            "training",
            format!(
                "this configuration needs at least {:.1} GiB (hidden {}, layers {}, intermediate {}, batch_size {} × {} tokens, vocabulary {vocab}) and {:.1} GiB are available; fix: lower batch_size, hidden or intermediate",
                gib(need),
                c.hidden,
                c.layers,
                c.intermediate,
                c.batch_size,
                c.max_genes + 2,
                gib(avail as u128)
            ),
        ));
    }
    Ok(())
}

/// `MemAvailable` of `/proc/meminfo`, in bytes (Linux; `None` elsewhere).
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Pads id sequences on the right into `[batch, time]` ids and `[batch, time-1]` next-token targets
/// (-100 where there is no next token).
fn lm_batch(seqs: &[Cow<'_, [i64]>], device: Device) -> (Tensor, Tensor) {
    let t = seqs.iter().map(|s| s.len()).max().unwrap_or(1);
    let b = seqs.len();
    let mut ids = vec![1i64; b * t];
    let mut tgt = vec![-100i64; b * (t - 1).max(1)];
    let tt = (t - 1).max(1);
    for (r, s) in seqs.iter().enumerate() {
        ids[r * t..r * t + s.len()].copy_from_slice(s);
        for j in 1..s.len() {
            tgt[r * tt + j - 1] = s[j];
        }
    }
    (
        Tensor::from_slice(&ids)
            .view([b as i64, t as i64])
            .to_device(device),
        Tensor::from_slice(&tgt)
            .view([b as i64, tt as i64])
            .to_device(device),
    )
}

fn loss(model: &GptNeox, ids: &Tensor, tgt: &Tensor, prior: Option<&Tensor>) -> Result<Tensor> {
    let t = ids.size()[1];
    let (h, _) = model.hidden(ids, false)?;
    let logits = model.logits(&h.narrow(1, 0, t - 1));
    let logits = match prior {
        Some(p) => logits + p,
        None => logits,
    };
    let v = logits.size()[2];
    Ok(logits
        .view([-1, v])
        .to_kind(Kind::Float)
        .cross_entropy_loss::<Tensor>(&tgt.view([-1]), None, tch::Reduction::Mean, -100, 0.0))
}

/// How a training run starts.
#[derive(Clone, Copy)]
pub enum Init<'a> {
    /// A new small model; its WordLevel vocabulary is `vocab` when given (e.g. a pretraining
    /// corpus's union of gene symbols), else the training sentences' genes by decreasing count.
    Scratch { vocab: Option<&'a [String]> },
    /// Fine-tune a Hugging Face GPT-NeoX directory with its own tokenizer.
    Base(&'a Path),
}

/// Trains a small LM on `sentences` (gene words, most expressed first; truncated to `max_genes`)
/// and saves it in Hugging Face layout to `out` (replaced atomically). With `base` (a Hugging Face
/// GPT-NeoX directory, e.g. Pythia or C2S-Pythia) that model and its tokenizer are fine-tuned
/// instead (the shape settings of `c` are then unused).
pub fn train(
    sentences: &[Vec<String>],
    c: &TrainConfig,
    base: Option<&Path>,
    out: &Path,
    device: Device,
    progress: bool,
) -> Result<TrainReport> {
    train_with(sentences, c, base, out, device, progress, &|_, _, _| {
        Vec::new()
    })
}

/// [`train`], with `extra` files (e.g. a loss figure) committed inside the model directory.
pub fn train_with(
    sentences: &[Vec<String>],
    c: &TrainConfig,
    base: Option<&Path>,
    out: &Path,
    device: Device,
    progress: bool,
    extra: &ExtraFiles<'_>,
) -> Result<TrainReport> {
    check_out(out)?;
    let init = match base {
        Some(b) => Init::Base(b),
        None => Init::Scratch { vocab: None },
    };
    // a base pretrained on a corpus reads upper-case symbols, and so does its fine-tune
    let upper = match base {
        Some(b) => ModelMeta::read(b)?.is_some_and(|m| m.upper_case_genes),
        None => false,
    };
    let f = if upper {
        let up: Vec<Vec<String>> = sentences
            .iter()
            .map(|s| s.iter().map(|w| w.to_uppercase()).collect())
            .collect();
        fit(
            &up,
            c,
            init,
            device,
            progress,
            Some(&partial_dir(out)),
            None,
        )?
    } else {
        fit(
            sentences,
            c,
            init,
            device,
            progress,
            Some(&partial_dir(out)),
            None,
        )?
    };
    save(out, &f, &ModelMeta::new(c, upper), extra)?;
    Ok(f.report(out))
}

impl Fitted {
    /// The summary of this run, for a model saved at `dir`.
    pub fn report(self, dir: &Path) -> TrainReport {
        TrainReport {
            dir: dir.into(),
            n_train: self.n_train,
            n_val: self.n_val,
            vocab: self.vocab,
            parameters: self.parameters,
            seconds: self.seconds,
            tokens_per_s: self.tokens as f64 / self.seconds.max(1e-9),
            log: self.log,
        }
    }
}

fn vocabulary(sents: &[&[String]]) -> Vec<String> {
    // genes by decreasing count, then name
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for s in sents {
        for w in s.iter() {
            *counts.entry(w.as_str()).or_default() += 1;
        }
    }
    let mut words: Vec<(&str, usize)> = counts.into_iter().collect();
    words.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    words.into_iter().map(|(w, _)| w.to_string()).collect()
}

/// The sequences `idx` of `ids`, borrowed, or (with `shuffle`) each copied in a random order drawn
/// from `rng`.
fn sequences<'a>(
    ids: &'a [Vec<i64>],
    idx: &[usize],
    shuffle: bool,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Vec<Cow<'a, [i64]>> {
    idx.iter()
        .map(|&i| {
            if shuffle {
                let mut s = ids[i].clone();
                s.shuffle(rng);
                Cow::Owned(s)
            } else {
                Cow::Borrowed(ids[i].as_slice())
            }
        })
        .collect()
}

/// Log frequency of each token as a next-token target in the training sequences, add-one smoothed
/// over `vocab` rows.
fn log_prior(ids: &[Vec<i64>], train: &[usize], vocab: i64, device: Device) -> Tensor {
    let mut counts = vec![1.0f64; vocab as usize];
    for &i in train {
        for &t in ids[i].iter().skip(1) {
            counts[t as usize] += 1.0;
        }
    }
    let total: f64 = counts.iter().sum();
    let logp: Vec<f32> = counts.iter().map(|c| (c / total).ln() as f32).collect();
    Tensor::from_slice(&logp).to_device(device)
}

/// Mean next-token loss over validation sequences.
fn val_loss(
    model: &GptNeox,
    val: &[Cow<'_, [i64]>],
    batch: usize,
    device: Device,
    prior: Option<&Tensor>,
) -> Result<f64> {
    tch::no_grad(|| {
        let mut sum = 0.0;
        for chunk in val.chunks(batch) {
            let (x, y) = lm_batch(chunk, device);
            sum += loss(model, &x, &y, prior)?.double_value(&[]) * chunk.len() as f64;
        }
        Ok(sum / val.len() as f64)
    })
}

/// Trains (without saving): see [`train`].
///
/// With `resume` (a run's [`partial_dir`]) the state is saved there every `eval_every` steps and a
/// killed run with the same settings and data continues from its last save; `stop_after` ends the
/// run early (its schedule still that of `c.steps`).
pub fn fit(
    sentences: &[Vec<String>],
    c: &TrainConfig,
    init: Init<'_>,
    device: Device,
    progress: bool,
    resume: Option<&Path>,
    stop_after: Option<usize>,
) -> Result<Fitted> {
    check_next_gene(c)?;
    let sents = training_sentences(sentences, c)?;
    let base_ck = base_checkpoint(init, device)?;
    let tok = tokenizer_for(base_ck.as_ref(), init, &sents)?;
    let texts: Vec<String> = sents.iter().map(|s| s.join(" ")).collect();
    let ids = tok.encode_batch(&texts)?;
    let (vs, model, cfg) = model_to_train(base_ck, c, tok.vocab_size(), device)?;
    check_positions(&ids, &cfg, "a sentence")?;
    let mut task = NextGene::new(&ids, c, cfg.vocab_size, device);
    let data_digest = crate::cache::sha256_hex(texts.join("\n").as_bytes());
    let resume = resume.map(|dir| Resume {
        dir,
        data_digest: &data_digest,
    });
    let (mut t, snapshots) = Trainer::start((c, &model, &vs), resume, "train", progress)?;
    task.snapshots = snapshots;
    if t.done == 0 && c.snapshots.contains(&0) {
        // the initialisation, with its validation loss as step 0
        let v = task
            .validates()
            .then(|| task.val_loss(&model))
            .transpose()?;
        t.log.push(step0_row(v));
        task.snapshots.push(Snapshot::take(0, 0, &vs));
    }
    let bar = Progress::bar(progress, c.steps as u64, "train LM (steps)");
    bar.inc(t.done as u64);
    t.run(
        &mut task,
        stop_after.map_or(c.steps, |s| s.min(c.steps)),
        &bar,
    )?;
    bar.finish();
    if c.steps == 0 && task.validates() && !c.snapshots.contains(&0) {
        // the untrained model: its validation loss as step 0
        t.log.push(step0_row(Some(task.val_loss(&model)?)));
    }
    let sizes = (task.train_idx.len(), task.val.len(), parameter_count(&vs));
    let (log, snapshots) = (
        std::mem::take(&mut t.log),
        std::mem::take(&mut task.snapshots),
    );
    let run = (log, snapshots, t.tokens, t.seconds);
    Ok(fitted(run, sizes, c.half, (vs, cfg, tok)))
}

/// Next-gene training: every token of a sentence is a target (with `logit_prior`, over the
/// training genes' log-frequency prior).
struct NextGene<'a> {
    ids: &'a [Vec<i64>],
    c: &'a TrainConfig,
    device: Device,
    train_idx: Vec<usize>,
    val: Vec<Cow<'a, [i64]>>,
    /// The seeded generator of the split, then of the batches and gene shuffles.
    rng: rand_chacha::ChaCha8Rng,
    queue: Vec<usize>,
    prior: Option<Tensor>,
    snapshots: Vec<Snapshot>,
}

impl<'a> NextGene<'a> {
    /// The task over `ids` (a `vocab`-token model): split into training and validation, seeded.
    fn new(ids: &'a [Vec<i64>], c: &'a TrainConfig, vocab: i64, device: Device) -> Self {
        // split train / validation, seeded; the same generator then orders the training batches
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c.seed);
        let (val, train_idx) = split_validation(ids, c, &mut rng);
        let prior = (c.logit_prior).then(|| log_prior(ids, &train_idx, vocab, device));
        NextGene {
            ids,
            c,
            device,
            train_idx,
            val,
            rng,
            queue: Vec::new(),
            prior,
            snapshots: Vec::new(),
        }
    }

    fn val_loss(&self, model: &GptNeox) -> Result<f64> {
        val_loss(
            model,
            &self.val,
            self.c.batch_size,
            self.device,
            self.prior.as_ref(),
        )
    }
}

impl<'a> Task for NextGene<'a> {
    type Batch = Vec<Cow<'a, [i64]>>;

    fn draw(&mut self, batch_size: usize) -> (Self::Batch, usize) {
        let batch = next_batch(&mut self.queue, &self.train_idx, &mut self.rng, batch_size);
        let seqs = sequences(self.ids, &batch, self.c.shuffle_genes, &mut self.rng);
        let tokens = seqs.iter().map(|s| s.len()).sum();
        (seqs, tokens)
    }

    fn loss(&self, model: &GptNeox, seqs: &Self::Batch) -> Result<Tensor> {
        let (x, y) = lm_batch(seqs, self.device);
        loss(model, &x, &y, self.prior.as_ref())
    }

    fn validates(&self) -> bool {
        !self.val.is_empty()
    }

    fn validate(&mut self, model: &GptNeox, _: &nn::VarStore, _: usize, _: usize) -> Result<f64> {
        self.val_loss(model)
    }

    fn after_step(&mut self, vs: &nn::VarStore, step: usize, tokens: usize) {
        if self.c.snapshots.contains(&step) {
            self.snapshots.push(Snapshot::take(step, tokens, vs));
        }
    }

    fn kept(&self) -> &[Snapshot] {
        &self.snapshots
    }
}

/// The trained model and its summary (`run`: log, snapshots, tokens and seconds; `sizes`:
/// training and validation sentences, parameters).
fn fitted(
    (log, snapshots, tokens, seconds): (Vec<LogRow>, Vec<Snapshot>, usize, f64),
    sizes: (usize, usize, i64),
    half: bool,
    (vs, cfg, tok): (nn::VarStore, NeoxConfig, Tok),
) -> Fitted {
    Fitted {
        n_train: sizes.0,
        n_val: sizes.1,
        vocab: tok.vocab_size(),
        parameters: sizes.2,
        seconds,
        tokens,
        log,
        snapshots,
        half,
        vs,
        cfg,
        tok,
    }
}

/// The checkpoint a run starts from, if any.
fn base_checkpoint(init: Init<'_>, device: Device) -> Result<Option<super::Checkpoint>> {
    match init {
        Init::Base(dir) => Ok(Some(super::load(dir, device, Kind::Float)?)),
        Init::Scratch { .. } => Ok(None),
    }
}

/// The tokenizer of the base checkpoint, or a gene-level one over `vocab` (else the sentences'
/// own genes).
fn tokenizer_for(
    base: Option<&super::Checkpoint>,
    init: Init<'_>,
    sents: &[&[String]],
) -> Result<Tok> {
    Ok(match (base, init) {
        (Some(ck), _) => Tok {
            path: "tokenizer.json".into(),
            inner: ck.tokenizer.inner.clone(),
        },
        (None, Init::Scratch { vocab }) => Tok {
            path: "tokenizer.json".into(),
            inner: gene_tokenizer(&vocab.map_or_else(|| vocabulary(sents), <[String]>::to_vec))?,
        },
        (None, Init::Base(_)) => unreachable!("a base checkpoint was loaded above"),
    })
}

/// A seeded split of `ids` into validation sequences (at most 256 of `val_fraction`, at most
/// half) and the training indices.
fn split_validation<'a>(
    ids: &'a [Vec<i64>],
    c: &TrainConfig,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> (Vec<Cow<'a, [i64]>>, Vec<usize>) {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.shuffle(rng);
    let n_val = ((ids.len() as f64 * c.val_fraction).round() as usize).min(ids.len() / 2);
    let (val_idx, train_idx) = order.split_at(n_val);
    let n_val_used = val_idx.len().min(256);
    let val = sequences(ids, &val_idx[..n_val_used], c.shuffle_genes, rng);
    (val, train_idx.to_vec())
}

/// Refuses a sequence longer than the model's positions (`what`: what a sequence is).
pub(super) fn check_positions(ids: &[Vec<i64>], cfg: &NeoxConfig, what: &str) -> Result<()> {
    match ids
        .iter()
        .find(|s| s.len() as i64 > cfg.max_position_embeddings)
    {
        Some(long) => Err(Error::param(
            "training",
            format!(
                "{what} has {} tokens, more than max_position_embeddings {}; lower max_genes",
                long.len(),
                cfg.max_position_embeddings
            ),
        )),
        None => Ok(()),
    }
}

/// Trainable parameters of `vs`.
pub(super) fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

/// `loss` when finite; a loss that diverged at `step` is an error with its fix.
pub(super) fn finite(loss: f64, step: usize) -> Result<f64> {
    if loss.is_finite() {
        Ok(loss)
    } else {
        Err(Error::param(
            "training",
            format!("loss became {loss} at step {step}; lower lr"),
        ))
    }
}

/// Refuses the settings that only cell-type fine-tunes read.
fn check_next_gene(c: &TrainConfig) -> Result<()> {
    check(c)?;
    if !c.answer_sampling.is_balanced() {
        return Err(Error::param(
            "answer_sampling",
            "applies to cell-type fine-tunes only (finetune-lm --task cell_type, answer stages); next-gene training reads every sentence alike: remove the key",
        ));
    }
    if c.loss_on_prompt {
        return Err(Error::param(
            "loss_on_prompt",
            "applies to cell-type fine-tunes only (finetune-lm --task cell_type, answer stages); next-gene training's loss is on every token already: remove the key",
        ));
    }
    Ok(())
}

/// The non-empty sentences, each cut to the gene budget; fewer than 4 is refused.
fn training_sentences<'a>(
    sentences: &'a [Vec<String>],
    c: &TrainConfig,
) -> Result<Vec<&'a [String]>> {
    let sents: Vec<&[String]> = sentences
        .iter()
        .map(|s| &s[..s.len().min(c.max_genes)])
        .filter(|s| !s.is_empty())
        .collect();
    if sents.len() < 4 {
        return Err(Error::param(
            "training",
            format!("{} non-empty sentences; need at least 4", sents.len()),
        ));
    }
    Ok(sents)
}

/// The base checkpoint's model, or a new one of `c`'s shape for `vocab` tokens (its memory
/// checked first), seeded the same on every device.
fn model_to_train(
    base: Option<super::Checkpoint>,
    c: &TrainConfig,
    vocab: usize,
    device: Device,
) -> Result<(nn::VarStore, GptNeox, NeoxConfig)> {
    if let Some(ck) = base {
        let cfg = ck.model.cfg.clone();
        return Ok((ck.vs, ck.model, cfg));
    }
    check_memory(c, vocab, device)?;
    let cfg = NeoxConfig {
        bos_token_id: Some(0),
        eos_token_id: Some(0),
        ..c.neox_config(
            vocab.div_ceil(64) as i64 * 64,
            (c.max_genes + 1).next_power_of_two() as i64,
        )
    };
    let (vs, model) = super::model::init_on(c.seed, device, false, |r| GptNeox::new(r, &cfg))
        .map_err(|e| Error::param("device", format!("{e}")))?;
    Ok((vs, model, cfg))
}

/// The log row of an untrained model: its validation loss as step 0.
fn step0_row(val_loss: Option<f64>) -> LogRow {
    LogRow {
        step: 0,
        lr: 0.0,
        train_loss: f64::NAN,
        val_loss,
    }
}

/// The next `batch_size` training sentences: shuffled epochs over `train_idx`.
fn next_batch(
    queue: &mut Vec<usize>,
    train_idx: &[usize],
    rng: &mut rand_chacha::ChaCha8Rng,
    batch_size: usize,
) -> Vec<usize> {
    let mut batch = Vec::with_capacity(batch_size);
    while batch.len() < batch_size {
        if queue.is_empty() {
            *queue = train_idx.to_vec();
            queue.shuffle(rng);
        }
        batch.push(queue.pop().expect("refilled"));
    }
    batch
}
