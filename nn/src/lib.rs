//! Layers every gptlab model family shares, written once: the GPT decoder (`gptlab::models`)
//! and the ViT/CLIP towers (`gptlab-vision`) both build on them. It sits below both crates so
//! that neither has to depend on the other for a LayerNorm.
//!
//! Mixed precision follows autocast's rules: matmuls and attention run in the compute kind
//! (bf16 under mixed precision), LayerNorm, softmax and the loss in fp32, weights stay fp32
//! (the optimizer's master copy) and are cast on use.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

/// A run's numeric precision as configs name it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// fp32 on CPU, bf16 matmuls on CUDA: what every documented result before bf16 on CPU used.
    #[default]
    Auto,
    Fp32,
    Bf16,
}

impl Dtype {
    /// Parses `auto`, `fp32` or `bf16` (command-line flags).
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "auto" => Ok(Dtype::Auto),
            "fp32" => Ok(Dtype::Fp32),
            "bf16" => Ok(Dtype::Bf16),
            other => bail!("unknown dtype {other:?}: expected auto, fp32 or bf16"),
        }
    }

    /// The kind matmuls run in on `device`.
    pub fn compute_kind(self, device: Device) -> Kind {
        match (self, device) {
            (Dtype::Fp32, _) | (Dtype::Auto, Device::Cpu) => Kind::Float,
            (Dtype::Bf16, _) | (Dtype::Auto, _) => Kind::BFloat16,
        }
    }

    /// The name of a compute kind as configs and state files write it.
    pub fn name_of(kind: Kind) -> &'static str {
        if kind == Kind::BFloat16 {
            "bf16"
        } else {
            "fp32"
        }
    }
}

/// A linear map in either weight layout, computed in a chosen kind.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// `[in, out]` (GPT-2's Conv1D) rather than `[out, in]` (torch.nn.Linear, HF CLIP).
    in_out: bool,
}

impl Linear {
    /// torch.nn.Linear's layout, weight `[out, in]`, initialised N(0, std), zero bias.
    pub fn new(p: nn::Path, n_in: i64, n_out: i64, std: f64, bias: bool) -> Self {
        Self::build(p, [n_out, n_in], n_out, std, bias, false)
    }

    /// GPT-2's Conv1D: the same map with its weight stored `[in, out]`, so HF GPT-2 state dicts
    /// load without transposes.
    pub fn conv1d(p: nn::Path, n_in: i64, n_out: i64, std: f64, bias: bool) -> Self {
        Self::build(p, [n_in, n_out], n_out, std, bias, true)
    }

    fn build(p: nn::Path, shape: [i64; 2], n_out: i64, std: f64, bias: bool, in_out: bool) -> Self {
        let weight = p.var("weight", &shape, nn::Init::Randn { mean: 0.0, stdev: std });
        let bias = bias.then(|| p.var("bias", &[n_out], nn::Init::Const(0.0)));
        Self { weight, bias, in_out }
    }

    /// x: [.., in] -> [.., out], computed in `kind` (the weights are cast, never stored cast).
    pub fn forward(&self, x: &Tensor, kind: Kind) -> Tensor {
        // Casts only where the kind differs: each call is a dispatch, and a decoding step is
        // hundreds of small ops.
        let cast = |t: &Tensor| if t.kind() == kind { t.shallow_clone() } else { t.to_kind(kind) };
        let (x, w) = (cast(x), cast(&self.weight));
        let b = self.bias.as_ref().map(cast);
        if !self.in_out {
            return x.linear(&w, b.as_ref());
        }
        match b {
            // One fused GEMM with the bias: [N, in] @ [in, out] + [out].
            Some(b) => {
                let mut shape = x.size();
                let n_in = shape.pop().unwrap_or(1);
                shape.push(w.size()[1]);
                b.addmm(&x.reshape([-1, n_in]), &w).view(shape.as_slice())
            }
            None => x.matmul(&w),
        }
    }
}

/// LayerNorm over the last dimension, always in fp32 (autocast's rule: its statistics lose too
/// much in bf16).
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    eps: f64,
}

impl LayerNorm {
    /// Gain 1, bias 0 (or no bias).
    pub fn new(p: nn::Path, width: i64, bias: bool, eps: f64) -> Self {
        let weight = p.var("weight", &[width], nn::Init::Const(1.0));
        let bias = bias.then(|| p.var("bias", &[width], nn::Init::Const(0.0)));
        Self { weight, bias, eps }
    }

    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// x: [.., W] in any kind -> fp32.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let w = self.weight.size()[0];
        let x = if x.kind() == Kind::Float { x.shallow_clone() } else { x.to_kind(Kind::Float) };
        x.layer_norm([w], Some(&self.weight), self.bias.as_ref(), self.eps, true)
    }
}

/// The boolean attention mask of `t` new queries over `t_past + t` keys: causal, and with
/// `key_mask` [B, t_past + t] (1 = real token, 0 = padding) hiding padded keys. Every query
/// still sees itself, so a padding query's row is never empty (its output is ignored, but a
/// softmax over nothing would be NaN). Returns [B, 1, t, t_past + t], true = attend.
pub fn causal_padding_mask(key_mask: &Tensor, t_past: i64, t: i64) -> Tensor {
    let device = key_mask.device();
    let total = t_past + t;
    let causal = Tensor::ones([t, total], (Kind::Bool, device)).tril(t_past); // [t, total]
    let own = Tensor::eye_m(t, total, (Kind::Bool, device)).roll([t_past], [1]); // query i sees key t_past + i
    let keys = key_mask.to_kind(Kind::Bool).unsqueeze(1).unsqueeze(1); // [B, 1, 1, total]
    causal.logical_and(&keys).logical_or(&own) // [B, 1, t, total]
}

/// Positions of the last `t` columns of `key_mask` [B, T_total]: the count of real tokens
/// before each, so a left-padded row numbers its first real token 0, as it would unpadded.
pub fn positions_from_mask(key_mask: &Tensor, t: i64) -> Tensor {
    let total = key_mask.size()[1];
    let pos = key_mask.to_kind(Kind::Int64).cumsum(1, Kind::Int64) - 1; // [B, T_total]
    pos.clamp_min(0).narrow(1, total - t, t) // [B, t]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_compute_the_same_map() {
        let vs = nn::VarStore::new(Device::Cpu);
        let a = Linear::new(vs.root() / "a", 5, 3, 0.5, true);
        let b = Linear::conv1d(vs.root() / "b", 5, 3, 0.5, true);
        tch::no_grad(|| {
            b.weight.shallow_clone().copy_(&a.weight.tr());
            b.bias.as_ref().unwrap().shallow_clone().copy_(&Tensor::from_slice(&[1.0f32, -2.0, 0.5]));
            a.bias.as_ref().unwrap().shallow_clone().copy_(&Tensor::from_slice(&[1.0f32, -2.0, 0.5]));
        });
        let x = Tensor::randn([2, 4, 5], (Kind::Float, Device::Cpu));
        let diff = (a.forward(&x, Kind::Float) - b.forward(&x, Kind::Float)).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{diff}");
        let bf = a.forward(&x, Kind::BFloat16);
        assert_eq!(bf.kind(), Kind::BFloat16);
    }

    #[test]
    fn padding_mask_by_hand() {
        // Row 0: one pad then three tokens (left padding); row 1: no padding.
        let key_mask = Tensor::from_slice(&[0i64, 1, 1, 1, 1, 1, 1, 1]).view([2, 4]);
        let m = causal_padding_mask(&key_mask, 0, 4);
        let rows: Vec<Vec<i64>> =
            (0..4).map(|i| Vec::<i64>::try_from(&m.get(0).get(0).get(i).to_kind(Kind::Int64)).unwrap()).collect();
        assert_eq!(rows, vec![vec![1, 0, 0, 0], vec![0, 1, 0, 0], vec![0, 1, 1, 0], vec![0, 1, 1, 1]]);
        let full = Vec::<i64>::try_from(&m.get(1).get(0).get(3).to_kind(Kind::Int64)).unwrap();
        assert_eq!(full, vec![1, 1, 1, 1]);
        // One new query after three cached keys sees the real ones and itself.
        let step = causal_padding_mask(&key_mask, 3, 1);
        assert_eq!(Vec::<i64>::try_from(&step.get(0).get(0).get(0).to_kind(Kind::Int64)).unwrap(), vec![0, 1, 1, 1]);
        let pos = positions_from_mask(&key_mask, 4);
        assert_eq!(Vec::<i64>::try_from(&pos.get(0)).unwrap(), vec![0, 0, 1, 2]);
        assert_eq!(Vec::<i64>::try_from(&positions_from_mask(&key_mask, 1).get(1)).unwrap(), vec![3]);
    }
}
