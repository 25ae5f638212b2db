//! A small GPT-NeoX-shaped cell-sentence language model trained by the harness itself: gene-level
//! WordLevel tokenizer, causal-LM loss, AdamW with linear warm-up and cosine decay, seeded; saved in
//! Hugging Face layout so [`super::load`] (and transformers) read it back.
use super::config::NeoxConfig;
use super::model::GptNeox;
use super::optim::AdamW;
use super::prompt::PromptStyle;
use super::resume::{named_cpu, ResumeState};
pub use super::resume::{partial_dir, Snapshot};
use super::tokenizer::{gene_tokenizer, Tok};
use crate::progress::Progress;
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// Model shape and optimisation settings of the small LM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub layers: i64,
    pub hidden: i64,
    pub heads: i64,
    pub intermediate: i64,
    /// Genes per training sentence (the model's gene budget).
    pub max_genes: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Sentences per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Fraction of steps of linear warm-up.
    pub warmup: f64,
    /// Final learning rate as a fraction of the peak (cosine decay).
    pub min_lr: f64,
    pub weight_decay: f64,
    /// Gradient-norm clip.
    pub grad_clip: f64,
    /// Fraction of sentences held out for the validation loss.
    pub val_fraction: f64,
    /// Tie the output projection to the gene embeddings (every step then updates every gene's
    /// vector through the softmax; halves the parameters of a large vocabulary).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tie_embeddings: bool,
    /// Store the weights as float16 (halves the checkpoint; computation stays float32).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub half: bool,
    /// Steps at which a copy of the weights is kept and saved as a complete model directory
    /// `step<k>/` inside the output (as Pythia publishes checkpoints along one run; 0 = the
    /// initialisation).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<usize>,
    /// Steps between validation losses.
    pub eval_every: usize,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            layers: 4,
            hidden: 256,
            heads: 4,
            intermediate: 1024,
            max_genes: 200,
            steps: 120,
            batch_size: 16,
            lr: 1e-3,
            warmup: 0.05,
            min_lr: 0.1,
            weight_decay: 0.01,
            grad_clip: 1.0,
            val_fraction: 0.05,
            tie_embeddings: false,
            half: false,
            snapshots: Vec::new(),
            eval_every: 50,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// The GPT-NeoX shape these settings describe (Pythia's choices elsewhere: rotary on a quarter
    /// of each head, parallel residual), no BOS/EOS token.
    pub fn neox_config(&self, vocab_size: i64, max_position_embeddings: i64) -> NeoxConfig {
        NeoxConfig {
            vocab_size,
            hidden_size: self.hidden,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads,
            intermediate_size: self.intermediate,
            rotary_pct: 0.25,
            rotary_emb_base: 10000.0,
            max_position_embeddings,
            layer_norm_eps: 1e-5,
            use_parallel_residual: true,
            tie_word_embeddings: self.tie_embeddings,
            attention_bias: true,
            bos_token_id: None,
            eos_token_id: None,
        }
    }
}

/// One logged step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    pub step: usize,
    pub lr: f64,
    /// NaN for the untrained model's row (step 0); JSON `null` then.
    #[serde(with = "nan_as_null")]
    pub train_loss: f64,
    /// Validation loss, at evaluation steps.
    pub val_loss: Option<f64>,
}

impl LogRow {
    /// `training_log.csv`'s text.
    pub fn to_csv(log: &[LogRow]) -> String {
        let mut csv = String::from("step,lr,train_loss,val_loss\n");
        for r in log {
            csv.push_str(&format!(
                "{},{:.6e},{:.6},{}\n",
                r.step,
                r.lr,
                r.train_loss,
                r.val_loss.map(|v| format!("{v:.6}")).unwrap_or_default()
            ));
        }
        csv
    }

    /// Reads a model directory's `training_log.csv`.
    pub fn read(dir: &Path) -> Result<Vec<LogRow>> {
        let p = dir.join(TRAINING_LOG);
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        let bad = |i: usize| {
            Error::format(
                &p,
                format!("line {}: not step,lr,train_loss,val_loss", i + 1),
                "re-train the model",
            )
        };
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() != 4 {
                return Err(bad(i));
            }
            out.push(LogRow {
                step: f[0].parse().map_err(|_| bad(i))?,
                lr: f[1].parse().map_err(|_| bad(i))?,
                train_loss: f[2].parse().map_err(|_| bad(i))?,
                val_loss: if f[3].is_empty() {
                    None
                } else {
                    Some(f[3].parse().map_err(|_| bad(i))?)
                },
            });
        }
        Ok(out)
    }
}

mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_nan() {
            s.serialize_none()
        } else {
            s.serialize_f64(*v)
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

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

/// Metadata file the harness writes next to its models (`cellsentence.json`).
pub const META: &str = "cellsentence.json";
/// Per-step loss log the harness writes next to its models.
pub const TRAINING_LOG: &str = "training_log.csv";

/// `cellsentence.json`: how a harness-trained model reads cells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Its gene budget.
    pub max_genes: usize,
    /// How sentences become its input text.
    pub prompt: PromptStyle,
    pub trained_by: String,
    pub training: TrainConfig,
    /// Its vocabulary holds upper-case gene symbols (a multi-dataset corpus): sentences are
    /// upper-cased before tokenizing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upper_case_genes: bool,
}

/// Reads a JSON file of a model directory; `None` when it does not exist.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    p: &Path,
    what: &str,
    fix: &str,
) -> Result<Option<T>> {
    if !p.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::format(p, format!("not {what}: {e}"), fix))
}

impl ModelMeta {
    /// The metadata of a model trained here with `c`.
    pub fn new(c: &TrainConfig, upper_case_genes: bool) -> Self {
        ModelMeta {
            max_genes: c.max_genes,
            prompt: PromptStyle::Sentence,
            trained_by: format!("cellsentence {}", env!("CARGO_PKG_VERSION")),
            training: c.clone(),
            upper_case_genes,
        }
    }

    /// Reads `dir/cellsentence.json`; `None` for models not trained by the harness.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        read_json(&dir.join(META), "model metadata", "delete it or re-train")
    }
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

fn check(c: &TrainConfig) -> Result<()> {
    let bad = |what: &str| Err(Error::param("training", what.to_string()));
    if c.layers < 1 || c.hidden < 1 || c.heads < 1 || c.intermediate < 1 {
        return bad("layers, hidden, heads and intermediate must be positive");
    }
    if c.hidden % c.heads != 0 || (c.hidden / c.heads) % 8 != 0 {
        return bad("hidden must be a multiple of heads, with head size a multiple of 8");
    }
    if c.batch_size == 0 || c.max_genes == 0 {
        return bad(
            "batch_size and max_genes must be positive (steps: 0 saves the untrained model)",
        );
    }
    if c.lr.is_nan()
        || c.lr <= 0.0
        || !(0.0..1.0).contains(&c.val_fraction)
        || !(0.0..=1.0).contains(&c.warmup)
    {
        return bad("lr must be positive; val_fraction and warmup in [0, 1)");
    }
    Ok(())
}

/// Pads id sequences on the right into `[batch, time]` ids and `[batch, time-1]` next-token targets
/// (-100 where there is no next token).
fn lm_batch(seqs: &[&Vec<i64>], device: Device) -> (Tensor, Tensor) {
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

fn loss(model: &GptNeox, ids: &Tensor, tgt: &Tensor) -> Tensor {
    let t = ids.size()[1];
    let (h, _) = model.hidden(ids, false);
    let logits = model.logits(&h.narrow(1, 0, t - 1));
    let v = logits.size()[2];
    logits
        .view([-1, v])
        .to_kind(Kind::Float)
        .cross_entropy_loss::<Tensor>(&tgt.view([-1]), None, tch::Reduction::Mean, -100, 0.0)
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

/// A trained model before it is saved.
pub struct Fitted {
    vs: nn::VarStore,
    cfg: NeoxConfig,
    tok: Tok,
    /// Per-step log.
    pub log: Vec<LogRow>,
    pub n_train: usize,
    pub n_val: usize,
    pub vocab: usize,
    pub parameters: i64,
    pub seconds: f64,
    /// Tokens of every training batch (padding excluded).
    pub tokens: usize,
    /// Weights kept along the run.
    pub snapshots: Vec<Snapshot>,
    half: bool,
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

/// Mean next-token loss over validation sequences.
fn val_loss(model: &GptNeox, val: &[&Vec<i64>], batch: usize, device: Device) -> f64 {
    tch::no_grad(|| {
        let mut sum = 0.0;
        for chunk in val.chunks(batch) {
            let (x, y) = lm_batch(chunk, device);
            sum += loss(model, &x, &y).double_value(&[]) * chunk.len() as f64;
        }
        sum / val.len() as f64
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
    check(c)?;
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
    let base_ck = match init {
        Init::Base(dir) => Some(super::load(dir, device, Kind::Float)?),
        Init::Scratch { .. } => None,
    };
    let tok = match (&base_ck, init) {
        (Some(ck), _) => Tok {
            path: "tokenizer.json".into(),
            inner: ck.tokenizer.inner.clone(),
        },
        (None, Init::Scratch { vocab }) => Tok {
            path: "tokenizer.json".into(),
            inner: gene_tokenizer(&vocab.map_or_else(|| vocabulary(&sents), <[String]>::to_vec))?,
        },
        (None, Init::Base(_)) => unreachable!("a base checkpoint was loaded above"),
    };
    let texts: Vec<String> = sents.iter().map(|s| s.join(" ")).collect();
    let ids = tok.encode_batch(&texts)?;

    // split train / validation, seeded
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c.seed);
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.shuffle(&mut rng);
    let n_val = ((ids.len() as f64 * c.val_fraction).round() as usize).min(ids.len() / 2);
    let (val_idx, train_idx) = order.split_at(n_val);
    let val: Vec<&Vec<i64>> = val_idx.iter().take(256).map(|&i| &ids[i]).collect();
    let train_idx = train_idx.to_vec();

    let vocab = tok.vocab_size() as i64;
    let (vs, model, cfg) = match base_ck {
        Some(ck) => {
            let cfg = ck.model.cfg.clone();
            (ck.vs, ck.model, cfg)
        }
        None => {
            let cfg = NeoxConfig {
                bos_token_id: Some(0),
                eos_token_id: Some(0),
                ..c.neox_config(
                    (vocab as usize).div_ceil(64) as i64 * 64,
                    (c.max_genes + 1).next_power_of_two() as i64,
                )
            };
            let (vs, model) = crate::torch_seeded(c.seed, || {
                let vs = nn::VarStore::new(device);
                let model = GptNeox::new(&vs.root(), &cfg);
                (vs, model)
            });
            (vs, model, cfg)
        }
    };
    if let Some(long) = ids
        .iter()
        .find(|s| s.len() as i64 > cfg.max_position_embeddings)
    {
        return Err(Error::param(
            "training",
            format!(
                "a sentence has {} tokens, more than max_position_embeddings {}; lower max_genes",
                long.len(),
                cfg.max_position_embeddings
            ),
        ));
    }
    let parameters: i64 = vs
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    let mut opt = AdamW::new(&vs, 0.9, 0.95, 1e-8, c.weight_decay);
    let data_digest = crate::cache::sha256_hex(texts.join("\n").as_bytes());
    let mut snapshots: Vec<Snapshot> = Vec::new();
    let mut log = Vec::with_capacity(c.steps);
    let mut tokens = 0usize;
    let mut seconds = 0.0;
    let done = match resume {
        Some(dir) => match ResumeState::load(dir, c, &data_digest, &vs, &mut opt)? {
            Some(st) => {
                if progress {
                    eprintln!("[train] resuming {} at step {}", dir.display(), st.step);
                }
                log = st.log;
                snapshots = st.snapshots;
                seconds = st.seconds;
                st.step
            }
            None => 0,
        },
        None => 0,
    };
    let stop = stop_after.map_or(c.steps, |s| s.min(c.steps));
    if done == 0 && c.snapshots.contains(&0) {
        // the initialisation, with its validation loss as step 0
        log.push(LogRow {
            step: 0,
            lr: 0.0,
            train_loss: f64::NAN,
            val_loss: (!val.is_empty()).then(|| val_loss(&model, &val, c.batch_size, device)),
        });
        snapshots.push(Snapshot::take(0, 0, &vs));
    }

    let start = std::time::Instant::now();
    let bar = Progress::bar(progress, c.steps as u64, "train LM (steps)");
    bar.inc(done as u64);
    let mut queue: Vec<usize> = Vec::new();
    for step in 0..stop {
        let mut batch = Vec::with_capacity(c.batch_size);
        while batch.len() < c.batch_size {
            if queue.is_empty() {
                queue = train_idx.clone();
                queue.shuffle(&mut rng);
            }
            batch.push(queue.pop().expect("refilled"));
        }
        let seqs: Vec<&Vec<i64>> = batch.iter().map(|&i| &ids[i]).collect();
        tokens += seqs.iter().map(|s| s.len()).sum::<usize>();
        if step < done {
            continue; // replaying the data order of the steps a resumed run already took
        }
        let (x, y) = lm_batch(&seqs, device);
        let lr = lr_at(c, step, c.steps);
        let l = loss(&model, &x, &y);
        opt.zero_grad();
        l.backward();
        opt.clip_grad_norm(c.grad_clip);
        opt.step(lr);
        let train_loss = l.double_value(&[]);
        if !train_loss.is_finite() {
            return Err(Error::param(
                "training",
                format!("loss became {train_loss} at step {step}; lower lr"),
            ));
        }
        let last = step + 1 == c.steps;
        let at_eval = (step + 1) % c.eval_every.max(1) == 0;
        let val_loss = (!val.is_empty() && (last || at_eval))
            .then(|| val_loss(&model, &val, c.batch_size, device));
        log.push(LogRow {
            step: step + 1,
            lr,
            train_loss,
            val_loss,
        });
        if c.snapshots.contains(&(step + 1)) {
            snapshots.push(Snapshot::take(step + 1, tokens, &vs));
        }
        bar.inc(1);
        if let Some(dir) = resume.filter(|_| at_eval && !last) {
            let st = ResumeState {
                step: step + 1,
                config: c.clone(),
                data_digest: data_digest.clone(),
                log: log.clone(),
                seconds: seconds + start.elapsed().as_secs_f64(),
                snapshot_tokens: snapshots.iter().map(|s| (s.step, s.tokens)).collect(),
                snapshots: Vec::new(),
            };
            st.save(dir, &vs, &opt, &snapshots)?;
        }
    }
    bar.finish();
    if c.steps == 0 && !val.is_empty() && !c.snapshots.contains(&0) {
        // the untrained model: its validation loss as step 0
        log.push(LogRow {
            step: 0,
            lr: 0.0,
            train_loss: f64::NAN,
            val_loss: Some(val_loss(&model, &val, c.batch_size, device)),
        });
    }
    Ok(Fitted {
        n_train: train_idx.len(),
        n_val: val.len(),
        vocab: vocab as usize,
        parameters,
        seconds: seconds + start.elapsed().as_secs_f64(),
        tokens,
        log,
        snapshots,
        half: c.half,
        vs,
        cfg,
        tok,
    })
}

/// Files a model directory gets besides the model's own, given its step, the tokens it has seen and
/// its training log.
pub type ExtraFiles<'a> = dyn Fn(usize, usize, &[LogRow]) -> Vec<(&'static str, Vec<u8>)> + 'a;

/// Checks that `out` may be replaced by a model: missing, empty, or a model directory (config.json)
/// — never an unrelated folder someone pointed `--out` at.
pub fn check_out(out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    let empty = out
        .read_dir()
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    if out.is_dir() && (empty || out.join("config.json").is_file()) {
        return Ok(());
    }
    Err(Error::param(
        "out",
        format!(
            "{} exists and is not a model directory (no config.json); it is left untouched: choose a new --out or delete it",
            out.display()
        ),
    ))
}

/// Writes config.json, model.safetensors, tokenizer.json, cellsentence.json, training_log.csv and
/// the `extra(step, tokens seen)` (name, bytes) files, and each snapshot as a complete model in
/// `step<k>/`, into a temporary sibling directory, then renames it to `out` and removes the run's
/// partial state.
pub fn save(out: &Path, f: &Fitted, meta: &ModelMeta, extra: &ExtraFiles<'_>) -> Result<()> {
    if out.exists() {
        check_out(out)?;
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::output::clean_leftovers(parent)?;
    let staged = crate::output::StagedDir::new(out)?;
    let d = staged.path();
    let last = f.log.iter().map(|r| r.step).max().unwrap_or(0);
    f.write_model(
        d,
        &named_cpu(&f.vs),
        &f.log,
        meta,
        &extra(last, f.tokens, &f.log),
    )?;
    for s in &f.snapshots {
        let sd = d.join(format!("step{}", s.step));
        std::fs::create_dir_all(&sd).map_err(|e| Error::io(&sd, e))?;
        let log: Vec<LogRow> = f.log.iter().filter(|r| r.step <= s.step).cloned().collect();
        f.write_model(&sd, &s.weights, &log, meta, &extra(s.step, s.tokens, &log))?;
    }
    // the old model stays in place until the new one replaces it in one step
    staged.commit("model")?;
    let partial = partial_dir(out);
    if partial.is_dir() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    Ok(())
}

impl Fitted {
    /// One model directory's files: `weights` (float16 when configured) and this run's config,
    /// tokenizer and metadata.
    fn write_model(
        &self,
        d: &Path,
        weights: &[(String, Tensor)],
        log: &[LogRow],
        meta: &ModelMeta,
        extra: &[(&'static str, Vec<u8>)],
    ) -> Result<()> {
        let json = |v: &serde_json::Value| serde_json::to_string_pretty(v).expect("json") + "\n";
        std::fs::write(d.join("config.json"), json(&self.cfg.to_hf_json()))
            .map_err(|e| Error::io(d.join("config.json"), e))?;
        let kind = if self.half { Kind::Half } else { Kind::Float };
        let stored: Vec<(String, Tensor)> = weights
            .iter()
            .map(|(n, t)| (n.clone(), t.to_kind(kind).contiguous()))
            .collect();
        let st = d.join("model.safetensors");
        Tensor::write_safetensors(&stored, &st)
            .map_err(|e| Error::format(&st, e.to_string(), "check disk space"))?;
        let tj = d.join("tokenizer.json");
        self.tok
            .inner
            .save(&tj, false)
            .map_err(|e| Error::format(&tj, e.to_string(), "check disk space"))?;
        let meta = serde_json::to_value(meta).expect("model metadata serializes");
        std::fs::write(d.join(META), json(&meta)).map_err(|e| Error::io(d.join(META), e))?;
        for (name, bytes) in extra {
            std::fs::write(d.join(name), bytes).map_err(|e| Error::io(d.join(name), e))?;
        }
        std::fs::write(d.join(TRAINING_LOG), LogRow::to_csv(log))
            .map_err(|e| Error::io(d.join(TRAINING_LOG), e))
    }
}

/// The untrained initialisation of a model this harness trained from scratch: the same config,
/// tokenizer and seed at zero steps (what `steps: 0` saves), written to `out` with `extra` files.
/// Needs no corpus, so a committed checkpoint brings its own control.
pub fn untrained_like(dir: &Path, out: &Path, extra: &ExtraFiles<'_>) -> Result<()> {
    let meta = ModelMeta::read(dir)?.ok_or_else(|| {
        Error::format(
            dir.join(META),
            "missing: not a model trained by this harness",
            "train it with cellsentence train-lm or pretrain-lm",
        )
    })?;
    let cfg = NeoxConfig::load(&dir.join("config.json"))?;
    let tok = Tok::load(&dir.join("tokenizer.json"))?;
    let c = TrainConfig {
        steps: 0,
        snapshots: Vec::new(),
        ..meta.training.clone()
    };
    let vs = crate::torch_seeded(c.seed, || {
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = GptNeox::new(&vs.root(), &cfg);
        vs
    });
    let f = Fitted {
        parameters: vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum(),
        vocab: tok.vocab_size(),
        n_train: 0,
        n_val: 0,
        seconds: 0.0,
        tokens: 0,
        log: Vec::new(),
        snapshots: Vec::new(),
        half: c.half,
        vs,
        cfg,
        tok,
    };
    let meta = ModelMeta {
        training: c,
        ..meta
    };
    check_out(out)?;
    save(out, &f, &meta, extra)
}
