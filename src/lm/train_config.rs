//! The small LM's training settings (shape, optimisation, sampling), as experiment files and
//! `--config` give them.
use super::config::NeoxConfig;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

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
    /// Fraction of each attention head's dimensions that get rotary position embeddings (Pythia:
    /// 0.25; 0: no position signal beyond the causal order).
    #[serde(skip_serializing_if = "is_pythia_rotary")]
    pub rotary_pct: f64,
    /// Add the training sentences' log gene frequencies (add-one smoothed) to the logits while
    /// training, so the network learns next-gene prediction relative to that corpus prior. The
    /// prior is not saved: the saved model's logits are relative to it (hidden states and
    /// embeddings are unaffected); `cellsentence.json` records the setting.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub logit_prior: bool,
    /// Train on each sentence's genes in a fresh random order every time it is drawn (the loss
    /// then rewards only which genes go together, not their rank).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shuffle_genes: bool,
    /// How a cell-type fine-tune draws its training cells (`finetune-lm --task cell_type` and the
    /// answer stages only).
    #[serde(skip_serializing_if = "Sampling::is_balanced")]
    pub answer_sampling: Sampling,
    /// A cell-type fine-tune's loss on every token of the prompt as well as the answer
    /// (cell2sentence's `loss_on_response_only=False`, as its cell-type tutorial runs it); the
    /// default is the answer alone. Validation and the kept step still read the answer alone.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub loss_on_prompt: bool,
}

/// How the cells of a cell-type fine-tune's batches are drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// A class uniformly, then one of its cells (every type as often as any other).
    #[default]
    Balanced,
    /// A class with probability proportional to the square root of its cells, then one of them.
    Sqrt,
    /// A cell uniformly (the reference's shuffled epochs: types as often as they occur).
    Natural,
}

impl Sampling {
    pub(crate) fn is_balanced(&self) -> bool {
        *self == Sampling::Balanced
    }

    /// The probability of drawing each class of `sizes` cells.
    pub fn class_weights(self, sizes: &[usize]) -> Vec<f64> {
        let w: Vec<f64> = sizes
            .iter()
            .map(|&n| match self {
                Sampling::Balanced => f64::from(u8::from(n > 0)),
                Sampling::Sqrt => (n as f64).sqrt(),
                Sampling::Natural => n as f64,
            })
            .collect();
        let total: f64 = w.iter().sum();
        w.into_iter()
            .map(|x| x / total.max(f64::MIN_POSITIVE))
            .collect()
    }
}

/// Pythia's rotary fraction (left out of serialised settings, so earlier keys stay valid).
fn is_pythia_rotary(v: &f64) -> bool {
    *v == PYTHIA_ROTARY_PCT
}

const PYTHIA_ROTARY_PCT: f64 = 0.25;

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
            rotary_pct: PYTHIA_ROTARY_PCT,
            logit_prior: false,
            shuffle_genes: false,
            answer_sampling: Sampling::Balanced,
            loss_on_prompt: false,
        }
    }
}

impl crate::validate::Validate for TrainConfig {
    /// Shape, optimisation and snapshot settings (the check every trainer runs first).
    fn validate(&self) -> Result<()> {
        super::train::check(self)
    }
}

impl TrainConfig {
    /// The GPT-NeoX shape these settings describe (Pythia's choices elsewhere: parallel
    /// residual), no BOS/EOS token.
    pub fn neox_config(&self, vocab_size: i64, max_position_embeddings: i64) -> NeoxConfig {
        NeoxConfig {
            vocab_size,
            hidden_size: self.hidden,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads,
            intermediate_size: self.intermediate,
            rotary_pct: self.rotary_pct,
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

impl TrainConfig {
    /// Reads `--config`: an inline JSON object of `TrainConfig` keys (`'{"steps": 200}'`). A file
    /// path or another JSON value is refused with what the option takes.
    pub fn from_flag(text: &str) -> Result<Self> {
        let t = text.trim();
        let example = r#"'{"steps": 200, "hidden": 128}'"#;
        if !t.starts_with('{') {
            let what = if std::path::Path::new(t).is_file() {
                format!("`{t}` is a file; use its JSON object inline: --config \"$(cat {t})\"")
            } else {
                format!("`{t}` is not a JSON object; use an inline object of TrainConfig keys, e.g. {example}")
            };
            return Err(Error::param("--config", what));
        }
        serde_json::from_str(t).map_err(|e| {
            Error::param(
                "--config",
                format!("{e}; use a JSON object of TrainConfig keys, e.g. {example}"),
            )
        })
    }
}
