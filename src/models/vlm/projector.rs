//! Projectors from ViT patch features into the decoder's embedding space: LLaVA's `linear` and
//! `mlp2x_gelu`, and nanoVLM's `pixel_shuffle` (merge f x f neighbouring patches into one token,
//! N / f^2 tokens, then a Linear). Parameter names are HF LLaVA's (`linear_1`, `linear_2`).
//!
//! Shapes: B images, N patch tokens, W ViT width, C decoder width, g patches a side.

use anyhow::{ensure, Result};
use gptlab_nn::Linear;
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// Which projector maps vision features to decoder embeddings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ProjectorKind {
    /// One Linear W -> C.
    Linear,
    /// LLaVA-1.5: Linear W -> C, GELU, Linear C -> C.
    Mlp2xGelu,
    /// nanoVLM: f x f patches merged into one token of width f^2 W, then a Linear to C. Needs the
    /// patch tokens only (no class token) on a grid divisible by `factor`.
    PixelShuffle { factor: i64 },
}

/// A projector's weights.
#[derive(Debug)]
pub struct Projector {
    kind: ProjectorKind,
    linear_1: Linear,
    linear_2: Option<Linear>,
}

impl Projector {
    /// Builds the projector under `p` (HF: `multi_modal_projector`), Linear init N(0, 0.02).
    pub fn new(p: nn::Path, kind: ProjectorKind, vision_width: i64, text_width: i64) -> Self {
        let n_in = match kind {
            ProjectorKind::PixelShuffle { factor } => vision_width * factor * factor,
            _ => vision_width,
        };
        let linear_1 = Linear::new(&p / "linear_1", n_in, text_width, 0.02, true);
        let linear_2 = (kind == ProjectorKind::Mlp2xGelu)
            .then(|| Linear::new(&p / "linear_2", text_width, text_width, 0.02, true));
        Self { kind, linear_1, linear_2 }
    }

    /// Tokens per image for `n` vision tokens.
    pub fn tokens_per_image(&self, n: i64) -> i64 {
        match self.kind {
            ProjectorKind::PixelShuffle { factor } => n / (factor * factor),
            _ => n,
        }
    }

    /// features: [B, N, W] -> [B, N', C] (fp32), matmuls in `kind`.
    pub fn forward(&self, features: &Tensor, kind: Kind) -> Result<Tensor> {
        let x = match self.kind {
            ProjectorKind::PixelShuffle { factor } => pixel_shuffle(features, factor)?,
            _ => features.shallow_clone(),
        };
        let h = self.linear_1.forward(&x, kind);
        let y = match &self.linear_2 {
            Some(l2) => l2.forward(&h.gelu("none"), kind),
            None => h,
        };
        Ok(y.to_kind(Kind::Float))
    }
}

/// nanoVLM's pixel shuffle: [B, g*g, W] -> [B, (g/f)^2, f*f*W], each output token the f x f block
/// of patches it covers, row by row.
pub fn pixel_shuffle(x: &Tensor, factor: i64) -> Result<Tensor> {
    let (b, n, w) = x.size3()?;
    let g = (n as f64).sqrt().round() as i64;
    ensure!(g * g == n, "pixel_shuffle needs a square grid of patch tokens (select = \"patches\"), got {n} tokens");
    ensure!(factor > 0 && g % factor == 0, "pixel_shuffle factor {factor} must divide the {g}-patch grid side");
    let h = g / factor;
    Ok(x.reshape([b, h, factor, h, factor, w]) // [B, g/f, f, g/f, f, W]
        .permute([0, 1, 3, 2, 4, 5]) // [B, g/f, g/f, f, f, W]
        .reshape([b, h * h, factor * factor * w])) // [B, (g/f)^2, f^2 W]
}
