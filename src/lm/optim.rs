//! AdamW as libtorch's C++ `torch::optim::AdamW` computes it (decoupled weight decay, bias
//! correction), written out so that its moments can be saved with the weights and a killed training
//! run resumes from its last checkpoint exactly. tch's optimiser keeps its state out of reach.
use tch::{nn, Tensor};

/// AdamW over every trainable variable of a [`nn::VarStore`], in variable-name order.
pub struct AdamW {
    params: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Optimiser steps taken.
    pub step: i64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamW {
    /// Zero moments for the trainable variables of `vs`.
    pub fn new(vs: &nn::VarStore, beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Self {
        let mut params: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = |t: &Tensor| t.zeros_like().set_requires_grad(false);
        let m = params.iter().map(|(_, t)| zeros(t)).collect();
        let v = params.iter().map(|(_, t)| zeros(t)).collect();
        AdamW {
            params,
            m,
            v,
            step: 0,
            beta1,
            beta2,
            eps,
            weight_decay,
        }
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// Scales the gradients so that their global L2 norm is at most `max` (as tch and PyTorch's
    /// `clip_grad_norm_`: coefficient `max / (norm + 1e-6)`).
    pub fn clip_grad_norm(&self, max: f64) {
        tch::no_grad(|| {
            let norms: Vec<Tensor> = self
                .params
                .iter()
                .map(|(_, p)| p.grad())
                .filter(Tensor::defined)
                .map(|g| g.norm())
                .collect();
            if norms.is_empty() {
                return;
            }
            let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
            let coef = max / (total + 1e-6);
            if coef < 1.0 {
                for (_, p) in &self.params {
                    let mut g = p.grad();
                    if g.defined() {
                        let _ = g.g_mul_scalar_(coef);
                    }
                }
            }
        });
    }

    /// One update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        let step_size = lr / bc1;
        tch::no_grad(|| {
            for ((_, p), (m, v)) in self
                .params
                .iter_mut()
                .zip(self.m.iter_mut().zip(self.v.iter_mut()))
            {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                if self.weight_decay != 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - lr * self.weight_decay);
                }
                let _ = m.g_mul_scalar_(self.beta1);
                let _ = m.g_add_(&(&g * (1.0 - self.beta1)));
                let _ = v.g_mul_scalar_(self.beta2);
                let _ = v.addcmul_(&(&g * (1.0 - self.beta2)), &g);
                let mut denom = v.sqrt() / bc2.sqrt();
                let _ = denom.g_add_scalar_(self.eps);
                let _ = p.g_add_(&((&*m / &denom) * -step_size));
            }
        });
    }

    /// The moments as named tensors (`exp_avg.<var>`, `exp_avg_sq.<var>`) on the CPU, to save
    /// beside the weights.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let cpu = |t: &Tensor| t.to_device(tch::Device::Cpu).contiguous();
        self.params
            .iter()
            .zip(self.m.iter().zip(&self.v))
            .flat_map(|((n, _), (m, v))| {
                [
                    (format!("exp_avg.{n}"), cpu(m)),
                    (format!("exp_avg_sq.{n}"), cpu(v)),
                ]
            })
            .collect()
    }

    /// Restores moments written by [`AdamW::state`] after `step` steps; `Err` names the first
    /// missing or misshapen tensor.
    pub fn load_state(&mut self, named: &[(String, Tensor)], step: i64) -> Result<(), String> {
        let find = |k: &str| named.iter().find(|(n, _)| n == k).map(|(_, t)| t);
        tch::no_grad(|| {
            for ((n, p), (m, v)) in self
                .params
                .iter()
                .zip(self.m.iter_mut().zip(self.v.iter_mut()))
            {
                for (prefix, dst) in [("exp_avg", m), ("exp_avg_sq", v)] {
                    let key = format!("{prefix}.{n}");
                    let src = find(&key).ok_or_else(|| format!("{key} is missing"))?;
                    if src.size() != p.size() {
                        return Err(format!(
                            "{key} has shape {:?}, not {:?}",
                            src.size(),
                            p.size()
                        ));
                    }
                    dst.copy_(&src.to_kind(dst.kind()).to_device(dst.device()));
                }
            }
            Ok(())
        })?;
        self.step = step;
        Ok(())
    }
}
