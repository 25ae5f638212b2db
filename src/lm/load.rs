//! Loading a Hugging Face model directory: `config.json`, `model.safetensors` or sharded
//! `model-0000x-of-0000y.safetensors` + `model.safetensors.index.json`, and `tokenizer.json`.
use super::config::NeoxConfig;
use super::model::GptNeox;
use super::tokenizer::Tok;
use crate::{Error, Result};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// A loaded checkpoint: the model, its variables and its tokenizer.
pub struct Checkpoint {
    /// Directory it came from.
    pub dir: PathBuf,
    pub model: GptNeox,
    /// Holds the model's parameters (for training or saving).
    pub vs: nn::VarStore,
    pub tokenizer: Tok,
}

/// Tensors stored in old checkpoints that are buffers, not parameters: ignored.
fn is_buffer(name: &str) -> bool {
    name.ends_with("attention.bias")
        || name.ends_with("attention.masked_bias")
        || name.ends_with("rotary_emb.inv_freq")
}

/// The safetensors files of a checkpoint directory, in a stable order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            Error::format(&index, format!("not JSON: {e}"), "re-save the checkpoint")
        })?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                Error::missing(
                    &index,
                    "weight_map",
                    "re-save the checkpoint with save_pretrained",
                )
            })?;
        let files: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
        let mut out = Vec::new();
        for f in files {
            let p = dir.join(f);
            if !p.is_file() {
                return Err(Error::NotFound {
                    path: p,
                    hint: format!(" (a shard named by {})", index.display()),
                });
            }
            out.push(p);
        }
        return Ok(out);
    }
    if dir.join("pytorch_model.bin").is_file() {
        return Err(Error::format(
            dir.join("pytorch_model.bin"),
            "PyTorch pickle weights are not read (unsafe and not portable)",
            "convert once with transformers: model.save_pretrained(dir, safe_serialization=True)",
        ));
    }
    Err(Error::NotFound {
        path: single,
        hint: " (nor model.safetensors.index.json); give a Hugging Face model directory".into(),
    })
}

/// Reads every tensor of the checkpoint's safetensors files.
fn read_tensors(files: &[PathBuf]) -> Result<HashMap<String, (Tensor, PathBuf)>> {
    let mut all = HashMap::new();
    for f in files {
        let ts = Tensor::read_safetensors(f).map_err(|e| {
            Error::format(
                f,
                format!("cannot read safetensors: {e}"),
                "re-download the file",
            )
        })?;
        for (name, t) in ts {
            all.insert(name, (t, f.clone()));
        }
    }
    Ok(all)
}

/// Copies checkpoint tensors into `vs`, checking names and shapes.
pub fn fill(vs: &mut nn::VarStore, files: &[PathBuf]) -> Result<()> {
    let mut stored = read_tensors(files)?;
    // a bare GPTNeoXModel has no `gpt_neox.` prefix
    let keys: Vec<String> = stored.keys().cloned().collect();
    for k in keys {
        if !k.starts_with("gpt_neox.") && k != "embed_out.weight" {
            if let Some(v) = stored.remove(&k) {
                stored.insert(format!("gpt_neox.{k}"), v);
            }
        }
    }
    let where_ = files
        .first()
        .map(|f| f.parent().unwrap_or(f).to_path_buf())
        .unwrap_or_default();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, mut var) in vars {
        let Some((src, file)) = stored.remove(&name) else {
            return Err(Error::missing(
                &where_,
                &name,
                format!(
                    "the checkpoint lacks this tensor (expected shape {:?}); check that config.json matches the weights",
                    var.size()
                ),
            ));
        };
        if src.size() != var.size() {
            return Err(Error::bad_value(
                &file,
                &name,
                format!(
                    "shape {:?}, expected {:?} from config.json",
                    src.size(),
                    var.size()
                ),
                "use the config.json that belongs to these weights",
            ));
        }
        tch::no_grad(|| var.copy_(&src.to_kind(var.kind())));
    }
    let extra: Vec<&String> = stored.keys().filter(|k| !is_buffer(k)).collect();
    if !extra.is_empty() {
        eprintln!(
            "warning: {}: {} tensor(s) not used by GPT-NeoX, e.g. `{}`",
            where_.display(),
            extra.len(),
            extra[0]
        );
    }
    Ok(())
}

/// Loads a Hugging Face GPT-NeoX model directory onto `device`; `kind` is the parameter dtype
/// (`Float` on CPU; `BFloat16`/`Half` are for CUDA).
pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Checkpoint> {
    if !dir.is_dir() {
        return Err(Error::NotFound {
            path: dir.into(),
            hint: " (a model directory with config.json, model.safetensors, tokenizer.json)".into(),
        });
    }
    let cfg = NeoxConfig::load(&dir.join("config.json"))?;
    let tokenizer = Tok::load(&dir.join("tokenizer.json"))?;
    if tokenizer.vocab_size() as i64 > cfg.vocab_size {
        return Err(Error::bad_value(
            dir.join("tokenizer.json"),
            "vocabulary",
            format!(
                "{} tokens do not fit the model's embedding of {} rows (config.json vocab_size)",
                tokenizer.vocab_size(),
                cfg.vocab_size
            ),
            "use the tokenizer.json saved with this checkpoint",
        ));
    }
    let files = weight_files(dir)?;
    let (mut vs, model) = crate::torch_unseeded(|| {
        let vs = nn::VarStore::new(device);
        let model = GptNeox::new(&vs.root(), &cfg);
        (vs, model)
    });
    fill(&mut vs, &files)?;
    if kind != Kind::Float {
        vs.set_kind(kind);
    }
    Ok(Checkpoint {
        dir: dir.into(),
        model,
        vs,
        tokenizer,
    })
}

/// Loads only the model part of a directory (config + weights), for fixtures without a tokenizer.
pub fn load_model(dir: &Path, device: Device) -> Result<(GptNeox, nn::VarStore)> {
    let cfg = NeoxConfig::load(&dir.join("config.json"))?;
    let files = weight_files(dir)?;
    let (mut vs, model) = crate::torch_unseeded(|| {
        let vs = nn::VarStore::new(device);
        let model = GptNeox::new(&vs.root(), &cfg);
        (vs, model)
    });
    fill(&mut vs, &files)?;
    Ok((model, vs))
}
