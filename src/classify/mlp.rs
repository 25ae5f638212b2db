//! The CellFM-style MLP head of the paper, in libtorch: Linear 512 → BatchNorm → GELU → Dropout 0.1 →
//! Linear 256 → BatchNorm → GELU → Dropout 0.1 → Linear n_classes; cross-entropy, Adam 1e-3,
//! mini-batches of 128, ≤ 150 epochs, early stopping on validation loss (patience 30, best weights
//! restored). PyTorch's default initialisation and BatchNorm settings.
use crate::npy::Matrix;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// MLP and training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlpConfig {
    pub hidden: Vec<i64>,
    pub dropout: f64,
    pub lr: f64,
    pub batch_size: usize,
    pub max_epochs: usize,
    pub patience: usize,
    /// Seed of initialisation, dropout and batch order (the paper's code: 1234).
    pub seed: u64,
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig {
            hidden: vec![512, 256],
            dropout: 0.1,
            lr: 1e-3,
            batch_size: 128,
            max_epochs: 150,
            patience: 30,
            seed: 1234,
        }
    }
}

/// How a training run went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpRun {
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_val_loss: Option<f64>,
    /// Wall-clock seconds of each epoch: the mini-batch updates plus the validation loss (the
    /// best-weights snapshot is not counted, as in the PyTorch reference script).
    pub epoch_seconds: Vec<f64>,
}

/// PyTorch's `nn.Linear` initialisation: U(±1/√fan_in) for weight and bias.
fn torch_linear(p: nn::Path, i: i64, o: i64) -> nn::Linear {
    let b = 1.0 / (i as f64).sqrt();
    nn::linear(
        p,
        i,
        o,
        nn::LinearConfig {
            ws_init: nn::Init::Uniform { lo: -b, up: b },
            bs_init: Some(nn::Init::Uniform { lo: -b, up: b }),
            bias: true,
        },
    )
}

fn build(vs: &nn::Path, d_in: i64, n_classes: i64, c: &MlpConfig) -> nn::SequentialT {
    let mut seq = nn::seq_t();
    let mut d = d_in;
    for (i, &h) in c.hidden.iter().enumerate() {
        let p = vs / format!("block{i}");
        seq = seq
            .add(torch_linear(&p / "linear", d, h))
            .add(nn::batch_norm1d(
                &p / "bn",
                h,
                nn::BatchNormConfig {
                    ws_init: nn::Init::Const(1.0),
                    ..Default::default()
                },
            ))
            .add_fn(|x| x.gelu("none"))
            .add_fn_t({
                let p = c.dropout;
                move |x, train| x.dropout(p, train)
            });
        d = h;
    }
    seq.add(torch_linear(vs / "out", d, n_classes))
}

/// Standardises columns with the mean and (population) sd of `train` rows; sd 0 → 1.
pub fn standardize(x: &Matrix, train: &[usize]) -> Matrix {
    standardize_with_stats(x, train).0
}

/// [`standardize`], also returning the column means and sds it used.
fn standardize_with_stats(x: &Matrix, train: &[usize]) -> (Matrix, Vec<f32>, Vec<f32>) {
    let d = x.cols;
    let n = train.len().max(1) as f64;
    let mut mean = vec![0f64; d];
    let mut sq = vec![0f64; d];
    for &i in train {
        for (j, &v) in x.row(i).iter().enumerate() {
            mean[j] += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    for &i in train {
        for (j, &v) in x.row(i).iter().enumerate() {
            sq[j] += (v as f64 - mean[j]).powi(2);
        }
    }
    let sd: Vec<f64> = sq
        .iter()
        .map(|s| {
            let v = (s / n).sqrt();
            if v > 0.0 {
                v
            } else {
                1.0
            }
        })
        .collect();
    let data = x
        .data
        .chunks(d)
        .flat_map(|r| {
            r.iter()
                .enumerate()
                .map(|(j, &v)| ((v as f64 - mean[j]) / sd[j]) as f32)
        })
        .collect();
    (
        Matrix {
            rows: x.rows,
            cols: d,
            data,
        },
        mean.iter().map(|&m| m as f32).collect(),
        sd.iter().map(|&v| v as f32).collect(),
    )
}

fn rows(x: &Tensor, idx: &[usize], device: Device) -> Tensor {
    let i: Vec<i64> = idx.iter().map(|&v| v as i64).collect();
    x.index_select(0, &Tensor::from_slice(&i).to_device(device))
}

/// A copy of every variable (parameters and BatchNorm statistics).
type Snapshot = Vec<(String, Tensor)>;

/// A trained MLP with the standardisation of its training cells.
pub struct TrainedMlp {
    /// Holds the network's variables.
    pub vs: nn::VarStore,
    net: nn::SequentialT,
    /// Column means and sds of the training cells (features are standardised with them).
    pub mean: Vec<f32>,
    pub sd: Vec<f32>,
    pub run: MlpRun,
}

impl TrainedMlp {
    /// Class logits of raw (unstandardised) feature rows `[n, d]`, differentiable in `x`.
    pub fn logits(&self, x: &Tensor) -> Tensor {
        let dev = x.device();
        let mean = Tensor::from_slice(&self.mean)
            .to_device(dev)
            .to_kind(x.kind());
        let sd = Tensor::from_slice(&self.sd)
            .to_device(dev)
            .to_kind(x.kind());
        self.net.forward_t(&((x - mean) / sd), false)
    }
}

/// Trains on the fold's `train` cells (early stopping on `val`) and predicts its `test` cells:
/// returns class indices.
/// `x` is standardised here with training statistics.
pub fn train_predict(
    x: &Matrix,
    y: &[usize],
    n_classes: usize,
    fold: &super::Fold,
    c: &MlpConfig,
    device: Device,
) -> (Vec<usize>, MlpRun) {
    let (m, xt) = fit(x, y, n_classes, fold, c, device);
    let pred = tch::no_grad(|| {
        let logits = m.net.forward_t(&rows(&xt, &fold.test, device), false);
        Vec::<i64>::try_from(
            logits
                .argmax(1, false)
                .to_device(Device::Cpu)
                .to_kind(Kind::Int64),
        )
        .expect("predictions")
    });
    (pred.into_iter().map(|v| v as usize).collect(), m.run)
}

/// Trains on the fold's `train` cells with early stopping on `val` (best weights restored);
/// returns the model and the standardised features of every row. Initialisation and dropout draw
/// from libtorch's global generator, seeded with `c.seed` and held for the whole fit, so that a
/// concurrent seeded section (another fit, a thread, a parallel test) cannot interleave draws.
pub fn fit(
    x: &Matrix,
    y: &[usize],
    n_classes: usize,
    fold: &super::Fold,
    c: &MlpConfig,
    device: Device,
) -> (TrainedMlp, Tensor) {
    crate::torch_seeded(c.seed, || fit_seeded(x, y, n_classes, fold, c, device))
}

/// The MLP initialised on the CPU (the generator is seeded), then copied to `device`: the same
/// start on every device.
fn built_on(
    device: Device,
    d_in: i64,
    n_classes: i64,
    c: &MlpConfig,
) -> (nn::VarStore, nn::SequentialT) {
    let cpu = nn::VarStore::new(Device::Cpu);
    let net = build(&cpu.root(), d_in, n_classes, c);
    if device == Device::Cpu {
        return (cpu, net);
    }
    let mut vs = nn::VarStore::new(device);
    let moved = build(&vs.root(), d_in, n_classes, c);
    vs.copy(&cpu)
        .expect("the same MLP built twice has the same variables");
    (vs, moved)
}

/// A copy of every variable.
fn snapshot(vs: &nn::VarStore) -> Snapshot {
    vs.variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().copy()))
        .collect()
}

/// Writes the kept snapshot back into the variables.
fn restore(vs: &nn::VarStore, snap: &Snapshot) {
    let vars = vs.variables();
    tch::no_grad(|| {
        for (k, v) in snap {
            if let Some(t) = vars.get(k) {
                t.shallow_clone().copy_(v);
            }
        }
    });
}

fn fit_seeded(
    x: &Matrix,
    y: &[usize],
    n_classes: usize,
    fold: &super::Fold,
    c: &MlpConfig,
    device: Device,
) -> (TrainedMlp, Tensor) {
    let (train, val) = (&fold.train, &fold.val);
    let (xs, mean, sd) = standardize_with_stats(x, train);
    let xt = Tensor::from_slice(&xs.data)
        .view([xs.rows as i64, xs.cols as i64])
        .to_device(device);
    let yt = Tensor::from_slice(&y.iter().map(|&v| v as i64).collect::<Vec<_>>()).to_device(device);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c.seed);
    let (vs, net) = built_on(device, xs.cols as i64, n_classes as i64, c);
    let mut opt = nn::Adam::default()
        .build(&vs, c.lr)
        .expect("Adam over the MLP's variables");
    let (xv, yv) = (rows(&xt, val, device), rows(&yt, val, device));
    let mut order = train.clone();
    let mut best: Option<(f64, usize, Snapshot)> = None;
    let mut wait = 0usize;
    let mut epochs = 0usize;
    let mut epoch_seconds = Vec::new();
    for epoch in 1..=c.max_epochs {
        epochs = epoch;
        let start = std::time::Instant::now();
        order.shuffle(&mut rng);
        for chunk in order.chunks(c.batch_size) {
            if chunk.len() < 2 {
                continue; // BatchNorm needs two samples in training mode
            }
            let (xb, yb) = (rows(&xt, chunk, device), rows(&yt, chunk, device));
            opt.backward_step(&net.forward_t(&xb, true).cross_entropy_for_logits(&yb));
        }
        if val.is_empty() {
            epoch_seconds.push(start.elapsed().as_secs_f64());
            continue;
        }
        let vl = tch::no_grad(|| {
            net.forward_t(&xv, false)
                .cross_entropy_for_logits(&yv)
                .double_value(&[])
        });
        epoch_seconds.push(start.elapsed().as_secs_f64());
        if best.as_ref().is_none_or(|b| vl < b.0) {
            best = Some((vl, epoch, snapshot(&vs)));
            wait = 0;
        } else {
            wait += 1;
            if wait >= c.patience {
                break;
            }
        }
    }
    let (best_val_loss, best_epoch) = match &best {
        Some((l, e, snap)) => {
            restore(&vs, snap);
            (Some(*l), *e)
        }
        None => (None, epochs),
    };
    (
        TrainedMlp {
            vs,
            net,
            mean,
            sd,
            run: MlpRun {
                epochs,
                best_epoch,
                best_val_loss,
                epoch_seconds,
            },
        },
        xt,
    )
}

impl crate::validate::Validate for MlpConfig {
    fn validate(&self) -> crate::Result<()> {
        if self.hidden.is_empty() || self.hidden.iter().any(|&h| h < 1) {
            return Err(crate::Error::param(
                "mlp.hidden",
                "needs at least one positive layer width; use [512, 256] (the paper's)",
            ));
        }
        crate::validate::within("mlp.dropout", self.dropout, 0.0, 1.0, false, "0.1")?;
        crate::validate::positive_real("mlp.lr", self.lr, "0.001")?;
        crate::validate::positive("mlp.batch_size", self.batch_size, "128")?;
        crate::validate::positive("mlp.max_epochs", self.max_epochs, "150")
    }
}
