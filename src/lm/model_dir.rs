//! A harness model directory (Hugging Face layout plus `cellsentence.json` and
//! `training_log.csv`): its typed metadata and log, read and written here only, and how a trained
//! model is saved (staged and swapped in whole).
use super::config::NeoxConfig;
use super::model::GptNeox;
use super::prompt::PromptStyle;
use super::tokenizer::Tok;
use super::train_config::TrainConfig;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// Weights kept at one step (see [`TrainConfig::snapshots`]).
pub struct Snapshot {
    pub step: usize,
    /// Training tokens seen by then.
    pub tokens: usize,
    pub(crate) weights: Vec<(String, Tensor)>,
}

impl Snapshot {
    pub(crate) fn take(step: usize, tokens: usize, vs: &nn::VarStore) -> Self {
        Snapshot {
            step,
            tokens,
            weights: named_cpu(vs),
        }
    }
}

/// Every variable of `vs`, by name, copied to the CPU.
pub(crate) fn named_cpu(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
        .into_iter()
        .map(|(n, t)| (n, t.to_device(Device::Cpu).copy().contiguous()))
        .collect()
}

/// Where a run writing to `out` keeps its resumable state: the sibling `<out>.partial/`.
pub fn partial_dir(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// A trained model before it is saved.
pub struct Fitted {
    pub(super) vs: nn::VarStore,
    pub(super) cfg: NeoxConfig,
    pub(super) tok: Tok,
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
    pub(super) half: bool,
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
