//! GPT-NeoX (Pythia) forward pass in libtorch, computed as Hugging Face `transformers` does:
//! one struct per block of the network, each with its own `forward` (candle-transformers' layout).
//!
//! Parameter names follow the HF state dict (`gpt_neox.layers.N.attention.query_key_value.weight`, ...),
//! so a `VarStore` of this model loads and saves HF `model.safetensors` files directly.
use super::config::NeoxConfig;
use crate::error::{Error, Result};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Rotary position embeddings (NeoX form): cos/sin tables over the positions and how many
/// dimensions of each head rotate.
#[derive(Debug)]
struct Rope {
    cos: Tensor,
    sin: Tensor,
    dims: i64,
}

impl Rope {
    fn new(cfg: &NeoxConfig, device: Device) -> Self {
        let (cos, sin) = rope_tables(cfg, device);
        Rope {
            cos,
            sin,
            dims: cfg.rotary_ndims(),
        }
    }

    /// `q` and `k` (`[batch, heads, time, head_size]`) with their first `dims` dimensions rotated
    /// by position; `kind` is the hidden states' element type.
    fn apply(&self, q: Tensor, k: Tensor, kind: Kind) -> (Tensor, Tensor) {
        let rot = self.dims;
        if rot == 0 {
            return (q, k);
        }
        let (t, hs) = (q.size()[2], q.size()[3]);
        let cos = self.cos.narrow(0, 0, t).to_kind(kind);
        let sin = self.sin.narrow(0, 0, t).to_kind(kind);
        let apply = |y: &Tensor| {
            let yr = y.narrow(3, 0, rot);
            let rotated = &yr * &cos + rotate_half(&yr) * &sin;
            if rot == hs {
                rotated
            } else {
                Tensor::cat(&[rotated, y.narrow(3, rot, hs - rot)], 3)
            }
        };
        (apply(&q), apply(&k))
    }
}

/// Causal self-attention: the fused query/key/value projection, rotary positions, and the
/// output projection.
#[derive(Debug)]
struct Attention {
    qkv: nn::Linear,
    dense: nn::Linear,
    heads: i64,
    head_size: i64,
}

impl Attention {
    fn new(p: &nn::Path, cfg: &NeoxConfig) -> Self {
        let h = cfg.hidden_size;
        Attention {
            qkv: linear(p / "query_key_value", h, 3 * h, cfg.attention_bias),
            dense: linear(p / "dense", h, h, cfg.attention_bias),
            heads: cfg.num_attention_heads,
            head_size: cfg.head_size(),
        }
    }

    fn forward(&self, x: &Tensor, rope: &Rope) -> Result<Tensor> {
        let (b, t, h) = x.size3().map_err(|e| {
            Error::param("hidden states", format!("need [batch, time, hidden]: {e}"))
        })?;
        let (nh, hs) = (self.heads, self.head_size);
        // per head [q | k | v]
        let qkv = self.qkv.forward(x).view([b, t, nh, 3 * hs]).transpose(1, 2);
        let (q, k) = rope.apply(qkv.narrow(3, 0, hs), qkv.narrow(3, hs, hs), x.kind());
        let v = qkv.narrow(3, 2 * hs, hs);
        let a = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            true,
            None,
            false,
        );
        Ok(self
            .dense
            .forward(&a.transpose(1, 2).contiguous().view([b, t, h])))
    }
}

/// The feed-forward network: up-projection, exact (erf) GELU, down-projection.
#[derive(Debug)]
struct Mlp {
    fc_in: nn::Linear,
    fc_out: nn::Linear,
}

impl Mlp {
    fn new(p: &nn::Path, cfg: &NeoxConfig) -> Self {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Mlp {
            fc_in: linear(p / "dense_h_to_4h", h, i, true),
            fc_out: linear(p / "dense_4h_to_h", i, h, true),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.fc_out.forward(&self.fc_in.forward(x).gelu("none"))
    }
}

/// One transformer block: attention and MLP, in parallel on the same input (Pythia) or in turn.
#[derive(Debug)]
struct Block {
    ln1: nn::LayerNorm,
    ln2: nn::LayerNorm,
    attention: Attention,
    mlp: Mlp,
    parallel: bool,
}

impl Block {
    /// The block's variables, created in the order transformers creates them (the seeded
    /// initialisation depends on it).
    fn new(p: &nn::Path, cfg: &NeoxConfig) -> Self {
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        Block {
            ln1: layer_norm(p / "input_layernorm", h, eps),
            ln2: layer_norm(p / "post_attention_layernorm", h, eps),
            attention: Attention::new(&(p / "attention"), cfg),
            mlp: Mlp::new(&(p / "mlp"), cfg),
            parallel: cfg.use_parallel_residual,
        }
    }

    fn forward(&self, x: &Tensor, rope: &Rope) -> Result<Tensor> {
        if self.parallel {
            let a = self.attention.forward(&self.ln1.forward(x), rope)?;
            let m = self.mlp.forward(&self.ln2.forward(x));
            Ok(m + a + x)
        } else {
            let a = self.attention.forward(&self.ln1.forward(x), rope)? + x;
            Ok(self.mlp.forward(&self.ln2.forward(&a)) + a)
        }
    }

    /// Whether the block's weight matrices are finite.
    fn finite(&self) -> bool {
        let (at, m) = (&self.attention, &self.mlp);
        [&at.qkv, &at.dense, &m.fc_in, &m.fc_out]
            .iter()
            .all(|l| l.ws.isfinite().all().int64_value(&[]) != 0)
    }
}

/// A GPT-NeoX causal language model (`GPTNeoXForCausalLM`).
#[derive(Debug)]
pub struct GptNeox {
    /// The hyper-parameters it was built with.
    pub cfg: NeoxConfig,
    embed_in: nn::Embedding,
    layers: Vec<Block>,
    final_ln: nn::LayerNorm,
    /// `None` when the output projection is tied to `embed_in`.
    embed_out: Option<nn::Linear>,
    rope: Rope,
}

/// Initialisation that mirrors transformers' `_init_weights` for GPT-NeoX: N(0, 0.02) weights, zero
/// biases, LayerNorm 1/0.
fn linear(p: nn::Path, i: i64, o: i64, bias: bool) -> nn::Linear {
    let c = nn::LinearConfig {
        ws_init: nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        },
        bs_init: Some(nn::Init::Const(0.0)),
        bias,
    };
    nn::linear(p, i, o, c)
}

fn layer_norm(p: nn::Path, n: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(
        p,
        vec![n],
        nn::LayerNormConfig {
            eps,
            ..Default::default()
        },
    )
}

/// `rotate_half` of the NeoX rotary form: cat(-x2, x1) over the last dimension.
fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size()[x.dim() - 1] / 2;
    let x1 = x.narrow(-1, 0, half);
    let x2 = x.narrow(-1, half, half);
    Tensor::cat(&[x2.neg(), x1], -1)
}

/// Places `build`'s freshly initialised variables on `device` with the values `seed` gives them on
/// the CPU: libtorch's CUDA generator draws other numbers than its CPU one, so a model is always
/// initialised on the CPU (under `seed`) and then copied, and the same seed starts every device
/// from the same weights. `copy` forces the copy path on the CPU too (tests).
pub fn init_on<M>(
    seed: u64,
    device: Device,
    copy: bool,
    build: impl Fn(&nn::Path) -> M,
) -> Result<(nn::VarStore, M), tch::TchError> {
    let (cpu, model) = crate::torch_seeded(seed, || {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = build(&vs.root());
        (vs, model)
    });
    if device == Device::Cpu && !copy {
        return Ok((cpu, model));
    }
    drop(model);
    let (mut vs, model) = crate::torch_unseeded(|| {
        let vs = nn::VarStore::new(device);
        let model = build(&vs.root());
        (vs, model)
    });
    vs.copy(&cpu)?;
    Ok((vs, model))
}

impl GptNeox {
    /// Creates the model's variables under `root` (randomly initialised; load weights into the
    /// `VarStore` afterwards). Rotary tables are computed in float32 on `root`'s device.
    pub fn new(root: &nn::Path, cfg: &NeoxConfig) -> Self {
        let h = cfg.hidden_size;
        let base = root / "gpt_neox";
        let embed_in = nn::embedding(
            &base / "embed_in",
            cfg.vocab_size,
            h,
            nn::EmbeddingConfig {
                ws_init: nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
                ..Default::default()
            },
        );
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Block::new(&(&base / "layers" / i), cfg))
            .collect();
        let final_ln = layer_norm(&base / "final_layer_norm", h, cfg.layer_norm_eps);
        let embed_out = (!cfg.tie_word_embeddings)
            .then(|| linear(root / "embed_out", h, cfg.vocab_size, false));
        GptNeox {
            cfg: cfg.clone(),
            embed_in,
            layers,
            final_ln,
            embed_out,
            rope: Rope::new(cfg, root.device()),
        }
    }

    /// Hidden states for right-padded token ids `[batch, time]` (positions 0.. for every row; real
    /// tokens never see the pads behind them, so no padding mask is needed). Returns the final
    /// layer-normed states, and when `all` is set every entry of transformers' `hidden_states`
    /// (embeddings, the input of each later layer, then the final layer-normed output).
    pub fn hidden(&self, ids: &Tensor, all: bool) -> Result<(Tensor, Vec<Tensor>)> {
        self.hidden_from_embeds(&self.embed(ids), all)
    }

    /// The token embeddings of `ids` (`hidden_states[0]`).
    pub fn embed(&self, ids: &Tensor) -> Tensor {
        self.embed_in.forward(ids)
    }

    /// [`GptNeox::hidden`] from token embeddings `[batch, time, hidden]` (e.g. scaled or
    /// perturbed ones, for attribution).
    pub fn hidden_from_embeds(&self, embeds: &Tensor, all: bool) -> Result<(Tensor, Vec<Tensor>)> {
        let mut x = embeds.shallow_clone();
        let mut states = Vec::new();
        for l in &self.layers {
            if all {
                states.push(x.shallow_clone());
            }
            x = l.forward(&x, &self.rope)?;
        }
        let out = self.final_ln.forward(&x);
        if all {
            states.push(out.shallow_clone());
        }
        Ok((out, states))
    }

    /// The device the model's tables (and so its parameters) live on.
    pub fn device(&self) -> Device {
        self.rope.cos.device()
    }

    /// The element type of the model's parameters (f32, or f16/bf16 for reduced precision).
    pub fn kind(&self) -> Kind {
        self.embed_in.ws.kind()
    }

    /// Whether every parameter is finite (no NaN or infinity in the checkpoint's weights).
    pub fn weights_finite(&self) -> bool {
        tch::no_grad(|| {
            let mut all = vec![&self.embed_in.ws];
            all.extend(self.embed_out.iter().map(|l| &l.ws));
            all.iter().all(|w| w.isfinite().all().int64_value(&[]) != 0)
                && self.layers.iter().all(Block::finite)
        })
    }

    /// Next-token logits from final hidden states.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        match &self.embed_out {
            Some(l) => l.forward(hidden),
            None => hidden.matmul(&self.embed_in.ws.tr()),
        }
    }
}

/// cos/sin tables `[max_positions, rotary_ndims]` in float32, as transformers' default rope.
fn rope_tables(cfg: &NeoxConfig, device: Device) -> (Tensor, Tensor) {
    let rot = cfg.rotary_ndims();
    let n = cfg.max_position_embeddings;
    if rot == 0 {
        let z = Tensor::zeros([n, 0], (Kind::Float, device));
        return (z.shallow_clone(), z);
    }
    let idx = Tensor::arange_start_step(0, rot, 2, (Kind::Int64, Device::Cpu)).to_kind(Kind::Float);
    let inv_freq = Tensor::scalar_tensor(cfg.rotary_emb_base, (Kind::Float, Device::Cpu))
        .pow(&(idx / rot as f64))
        .reciprocal();
    let t = Tensor::arange(n, (Kind::Float, Device::Cpu));
    let freqs = t.unsqueeze(1).matmul(&inv_freq.unsqueeze(0));
    let emb = Tensor::cat(&[&freqs, &freqs], -1);
    (emb.cos().to_device(device), emb.sin().to_device(device))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(vs: &nn::VarStore) -> Vec<(String, Vec<f32>)> {
        let mut v: Vec<(String, Vec<f32>)> = vs
            .variables()
            .into_iter()
            .map(|(k, t)| (k, Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The start does not depend on where the model goes: the weights copied to the target
    /// device's store equal the CPU initialisation under the seed, whatever the generator drew
    /// before.
    #[test]
    fn initialisation_is_made_on_the_cpu_then_moved() {
        let cfg = crate::lm::TrainConfig {
            layers: 1,
            hidden: 16,
            heads: 2,
            intermediate: 32,
            ..Default::default()
        }
        .neox_config(64, 16);
        let (direct, _) = init_on(7, Device::Cpu, false, |r| GptNeox::new(r, &cfg)).unwrap();
        let _ = crate::torch_unseeded(|| Tensor::randn([1000], (Kind::Float, Device::Cpu)));
        let (moved, m) = init_on(7, Device::Cpu, true, |r| GptNeox::new(r, &cfg)).unwrap();
        assert_eq!(weights(&direct), weights(&moved));
        assert!(!weights(&moved).is_empty());
        let (other, _) = init_on(8, Device::Cpu, true, |r| GptNeox::new(r, &cfg)).unwrap();
        assert_ne!(weights(&moved), weights(&other), "the seed matters");
        assert_eq!(m.device(), Device::Cpu);
    }
}
