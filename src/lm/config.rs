//! `config.json` of a Hugging Face GPT-NeoX checkpoint, both the old (`rotary_pct`, `rotary_emb_base`)
//! and the newer (`rope_parameters` / `rope_theta`, `partial_rotary_factor`) spellings.
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The GPT-NeoX hyper-parameters the forward pass needs, resolved from either config spelling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeoxConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    /// Fraction of each head's dimensions that get rotary embeddings.
    pub rotary_pct: f64,
    /// Rotary base (theta).
    pub rotary_emb_base: f64,
    pub max_position_embeddings: i64,
    pub layer_norm_eps: f64,
    pub use_parallel_residual: bool,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub bos_token_id: Option<i64>,
    pub eos_token_id: Option<i64>,
}

/// The raw JSON, every key optional where transformers has a default.
#[derive(Deserialize)]
struct Raw {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    vocab_size: Option<i64>,
    hidden_size: Option<i64>,
    num_hidden_layers: Option<i64>,
    num_attention_heads: Option<i64>,
    intermediate_size: Option<i64>,
    hidden_act: Option<String>,
    rotary_pct: Option<f64>,
    rotary_emb_base: Option<f64>,
    partial_rotary_factor: Option<f64>,
    rope_theta: Option<f64>,
    rope_parameters: Option<serde_json::Value>,
    rope_scaling: Option<serde_json::Value>,
    max_position_embeddings: Option<i64>,
    layer_norm_eps: Option<f64>,
    use_parallel_residual: Option<bool>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    bos_token_id: Option<i64>,
    eos_token_id: Option<i64>,
}

/// The checkpoint is a GPT-NeoX (model_type or architectures say so).
fn check_architecture(raw: &Raw, path: &Path) -> Result<()> {
    let is_neox = raw.model_type.as_deref() == Some("gpt_neox")
        || raw
            .architectures
            .as_ref()
            .is_some_and(|a| a.iter().any(|s| s.starts_with("GPTNeoX")));
    if !is_neox {
        let found = raw
            .model_type
            .clone()
            .or_else(|| raw.architectures.as_ref().map(|a| a.join(",")))
            .unwrap_or_else(|| "nothing".into());
        return Err(Error::bad_value(
            path,
            "model_type",
            format!("unsupported architecture `{found}`; only GPT-NeoX (Pythia, C2S-Pythia) is implemented"),
            "use a GPTNeoXForCausalLM checkpoint (model_type \"gpt_neox\")",
        ));
    }
    Ok(())
}

/// The activation is Pythia's exact `gelu` and the rotary embeddings are unscaled.
fn check_activation_and_rope(raw: &Raw, path: &Path) -> Result<()> {
    if let Some(act) = raw.hidden_act.as_deref() {
        if act != "gelu" {
            return Err(Error::bad_value(
                path,
                "hidden_act",
                format!("`{act}` is not supported (only the exact erf `gelu` of Pythia)"),
                "use a checkpoint with hidden_act \"gelu\"",
            ));
        }
    }
    let rope = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
    if let Some(kind) = rope.and_then(|r| r.get("rope_type").or_else(|| r.get("type"))) {
        if kind.as_str() != Some("default") {
            return Err(Error::bad_value(
                path,
                "rope_parameters.rope_type",
                format!("rotary scaling {kind} is not supported"),
                "use a checkpoint with the default rotary embeddings",
            ));
        }
    }
    Ok(())
}

impl NeoxConfig {
    /// Head size (hidden / heads).
    pub fn head_size(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }
    /// Number of rotary dimensions per head, `int(head_size * rotary_pct)` as transformers computes it.
    pub fn rotary_ndims(&self) -> i64 {
        (self.head_size() as f64 * self.rotary_pct) as i64
    }

    /// Reads and checks `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses `config.json` text; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw: Raw = serde_json::from_str(text).map_err(|e| {
            Error::format(
                path,
                format!("not a valid config.json: {e}"),
                "give the config.json of a Hugging Face GPT-NeoX checkpoint",
            )
        })?;
        check_architecture(&raw, path)?;
        let need = |v: Option<i64>, key: &str| {
            v.filter(|&x| x > 0).ok_or_else(|| {
                Error::missing(path, key, "config.json must give it as a positive integer")
            })
        };
        check_activation_and_rope(&raw, path)?;
        let rope = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
        let rope_field = |k: &str| rope.and_then(|r| r.get(k)).and_then(|v| v.as_f64());
        let rotary_pct = raw
            .rotary_pct
            .or(raw.partial_rotary_factor)
            .or_else(|| rope_field("partial_rotary_factor"))
            .unwrap_or(0.25);
        let base = raw
            .rotary_emb_base
            .or(raw.rope_theta)
            .or_else(|| rope_field("rope_theta"))
            .unwrap_or(10000.0);
        let c = NeoxConfig {
            vocab_size: need(raw.vocab_size, "vocab_size")?,
            hidden_size: need(raw.hidden_size, "hidden_size")?,
            num_hidden_layers: need(raw.num_hidden_layers, "num_hidden_layers")?,
            num_attention_heads: need(raw.num_attention_heads, "num_attention_heads")?,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            rotary_pct,
            rotary_emb_base: base,
            max_position_embeddings: need(raw.max_position_embeddings, "max_position_embeddings")?,
            layer_norm_eps: raw.layer_norm_eps.unwrap_or(1e-5),
            use_parallel_residual: raw.use_parallel_residual.unwrap_or(true),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias: raw.attention_bias.unwrap_or(true),
            bos_token_id: raw.bos_token_id,
            eos_token_id: raw.eos_token_id,
        };
        if c.hidden_size % c.num_attention_heads != 0 {
            return Err(Error::bad_value(
                path,
                "num_attention_heads",
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    c.hidden_size, c.num_attention_heads
                ),
                "fix config.json",
            ));
        }
        if !(0.0..=1.0).contains(&c.rotary_pct) || c.rotary_ndims() % 2 != 0 {
            return Err(Error::bad_value(
                path,
                "rotary_pct",
                format!(
                    "{} gives {} rotary dimensions per head; need an even number within the head",
                    c.rotary_pct,
                    c.rotary_ndims()
                ),
                "fix config.json",
            ));
        }
        Ok(c)
    }

    /// The config.json text transformers writes for this model (legacy keys, which every version reads).
    pub fn to_hf_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["GPTNeoXForCausalLM"],
            "model_type": "gpt_neox",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": "gelu",
            "rotary_pct": self.rotary_pct,
            "rotary_emb_base": self.rotary_emb_base,
            "max_position_embeddings": self.max_position_embeddings,
            "layer_norm_eps": self.layer_norm_eps,
            "use_parallel_residual": self.use_parallel_residual,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "attention_dropout": 0.0,
            "hidden_dropout": 0.0,
            "initializer_range": 0.02,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "torch_dtype": "float32",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_rope_spellings() {
        let p = Path::new("config.json");
        let old = r#"{"model_type":"gpt_neox","vocab_size":10,"hidden_size":8,"num_hidden_layers":1,
            "num_attention_heads":2,"intermediate_size":16,"rotary_pct":0.5,"rotary_emb_base":500,
            "max_position_embeddings":32}"#;
        let new = r#"{"architectures":["GPTNeoXForCausalLM"],"vocab_size":10,"hidden_size":8,"num_hidden_layers":1,
            "num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":32,
            "rope_parameters":{"rope_type":"default","rope_theta":500.0,"partial_rotary_factor":0.5}}"#;
        let a = NeoxConfig::parse(old, p).unwrap();
        let b = NeoxConfig::parse(new, p).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.rotary_ndims(), 2);
        let llama = r#"{"model_type":"llama","vocab_size":10}"#;
        let e = NeoxConfig::parse(llama, p).unwrap_err().to_string();
        assert!(e.contains("unsupported architecture `llama`"), "{e}");
    }
}
