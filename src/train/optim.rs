//! AdamW (Loshchilov & Hutter) over a VarStore's variables, with parameter groups, written here
//! rather than taken from `tch::nn::AdamW` because its moments must be saved and restored for
//! exact resume.

use std::collections::HashMap;

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Kind, Tensor};

/// nanoGPT's defaults for GPT-2.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamWConfig {
    pub fn validate(&self) -> Result<()> {
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            ensure!((0.0..1.0).contains(&b), "optim.{name} must be in [0, 1), got {b}");
        }
        ensure!(self.eps.is_finite() && self.eps > 0.0, "optim.eps must be positive, got {}", self.eps);
        ensure!(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "optim.weight_decay must be >= 0, got {}",
            self.weight_decay
        );
        Ok(())
    }
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 }
    }
}

/// Parameters whose names start with `prefix` train with their own settings, e.g.
/// `[[train.groups]] prefix = "multi_modal_projector." lr_scale = 10` or
/// `prefix = "vision_tower." frozen = true`. The first group whose prefix matches wins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamGroup {
    pub prefix: String,
    /// Multiplies the schedule's learning rate.
    #[serde(default = "one")]
    pub lr_scale: f64,
    /// Replaces `optim.weight_decay` (still only on tensors of dim >= 2).
    #[serde(default)]
    pub weight_decay: Option<f64>,
    /// No gradient, no optimizer state, never changed.
    #[serde(default)]
    pub frozen: bool,
}

fn one() -> f64 {
    1.0
}

impl ParamGroup {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.lr_scale.is_finite() && self.lr_scale >= 0.0,
            "train.groups: lr_scale of {:?} must be a non-negative number, got {}",
            self.prefix,
            self.lr_scale
        );
        if let Some(wd) = self.weight_decay {
            ensure!(wd.is_finite() && wd >= 0.0, "train.groups: weight_decay of {:?} must be >= 0", self.prefix);
        }
        Ok(())
    }
}

struct Param {
    name: String,
    value: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    lr_scale: f64,
    /// Decoupled weight decay of this tensor: 0 for biases and LayerNorm gains (dim < 2).
    weight_decay: f64,
}

pub struct AdamW {
    pub cfg: AdamWConfig,
    params: Vec<Param>,
    /// Steps taken so far (drives the bias corrections).
    pub steps: i64,
}

impl AdamW {
    /// Optimises every trainable variable of `vs`, in name order so that state files and
    /// reductions are deterministic. Variables of a frozen group stop requiring gradients and
    /// get no state; a group that matches no variable is an error (a typo would otherwise
    /// silently train what was meant to be frozen).
    pub fn new(vs: &VarStore, cfg: AdamWConfig, groups: &[ParamGroup]) -> Result<Self> {
        cfg.validate()?;
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        for g in groups {
            ensure!(
                named.iter().any(|(name, _)| name.starts_with(&g.prefix)),
                "train.groups: prefix {:?} matches no parameter of the model",
                g.prefix
            );
        }
        let mut params = Vec::with_capacity(named.len());
        for (name, mut value) in named {
            let group = groups.iter().find(|g| name.starts_with(&g.prefix));
            if group.is_some_and(|g| g.frozen) {
                let _ = value.requires_grad_(false);
                continue;
            }
            let decay = group.and_then(|g| g.weight_decay).unwrap_or(cfg.weight_decay);
            params.push(Param {
                exp_avg: value.zeros_like(),
                exp_avg_sq: value.zeros_like(),
                lr_scale: group.map_or(1.0, |g| g.lr_scale),
                weight_decay: if value.dim() >= 2 { decay } else { 0.0 },
                name,
                value,
            });
        }
        Ok(Self { cfg, params, steps: 0 })
    }

    /// The optimised tensors, in name order (the same order on every data-parallel rank).
    pub fn parameters(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.value.shallow_clone()).collect()
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.value.zero_grad();
        }
    }

    /// Scales gradients so their global L2 norm is at most `max_norm`; returns the norm before
    /// clipping as a device scalar, so the caller decides when to pay for a host sync.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Tensor {
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.value.grad()).filter(|g| g.defined()).collect();
        let norms: Vec<Tensor> = grads.iter().map(|g| g.to_kind(Kind::Float).norm()).collect();
        let total = Tensor::stack(&norms, 0).norm();
        if max_norm > 0.0 {
            let coef = (max_norm / (&total + 1e-6)).clamp_max(1.0);
            for mut g in grads {
                g *= &coef;
            }
        }
        total
    }

    /// One update with learning rate `lr` (times each group's `lr_scale`):
    /// p -= lr * (wd * p + m_hat / (sqrt(v_hat) + eps)), m and v the bias-corrected moments.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let AdamWConfig { beta1, beta2, eps, .. } = self.cfg;
        let bc1 = 1.0 - beta1.powi(self.steps as i32);
        let bc2 = 1.0 - beta2.powi(self.steps as i32);
        tch::no_grad(|| {
            for p in &mut self.params {
                let g = p.value.grad();
                if !g.defined() {
                    continue;
                }
                let lr = lr * p.lr_scale;
                if p.weight_decay > 0.0 {
                    p.value *= 1.0 - lr * p.weight_decay;
                }
                p.exp_avg *= beta1;
                p.exp_avg += &g * (1.0 - beta1);
                p.exp_avg_sq *= beta2;
                p.exp_avg_sq += g.square() * (1.0 - beta2);
                let denom = (&p.exp_avg_sq / bc2).sqrt() + eps;
                p.value -= &p.exp_avg / denom * (lr / bc1);
            }
        });
    }

    /// Moments as named tensors for `optimizer.safetensors`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .flat_map(|p| {
                [
                    (format!("exp_avg.{}", p.name), p.exp_avg.shallow_clone()),
                    (format!("exp_avg_sq.{}", p.name), p.exp_avg_sq.shallow_clone()),
                ]
            })
            .collect()
    }

    /// Restores moments saved by [`AdamW::state_tensors`] and the step count.
    pub fn load_state(&mut self, tensors: Vec<(String, Tensor)>, steps: i64) -> Result<()> {
        let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
        for p in &mut self.params {
            for (prefix, slot) in [("exp_avg", &mut p.exp_avg), ("exp_avg_sq", &mut p.exp_avg_sq)] {
                let key = format!("{prefix}.{}", p.name);
                let Some(t) = by_name.remove(&key) else { bail!("optimizer state lacks {key}") };
                ensure!(
                    t.size() == slot.size(),
                    "optimizer state {key} has shape {:?}, the model needs {:?}",
                    t.size(),
                    slot.size()
                );
                tch::no_grad(|| slot.copy_(&t));
            }
        }
        if let Some(extra) = by_name.keys().next() {
            bail!("optimizer state has {extra}, which the model does not have");
        }
        self.steps = steps;
        Ok(())
    }
}
