//! CLIP in one file: a ViT image tower and a causal text tower built from the same encoder
//! layer, their projections into a shared space, and open_clip's contrastive loss. Parameter
//! names and layouts are HF `CLIPModel`'s own (`vision_model.encoder.layers.0.self_attn.q_proj.
//! weight`, Linear weights `[out, in]`), so HF checkpoints load without renaming.
//!
//! Shapes: B batch, N patches (+1 for the class token), W tower width, E embedding dim, L text
//! length, P patch side.

use anyhow::{bail, ensure, Result};
use gptlab_nn::{LayerNorm, Linear};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use crate::transform::{Preprocess, CLIP_MEAN, CLIP_STD};

/// MLP activation: `quick_gelu` (x * sigmoid(1.702 x)) is what OpenAI's CLIP and HF's configs
/// use; exact GELU is open_clip's default for new models.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    QuickGelu,
    Gelu,
}

impl Activation {
    fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::QuickGelu => x * (x * 1.702).sigmoid(),
            Activation::Gelu => x.gelu("none"),
        }
    }
}

/// The image tower.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionConfig {
    pub image_size: i64,
    pub patch_size: i64,
    pub width: i64,
    pub layers: i64,
    pub heads: i64,
    #[serde(default)]
    pub act: Activation,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

/// The text tower; `eot_token_id` marks the position whose state is pooled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    pub vocab_size: i64,
    pub context_length: i64,
    pub width: i64,
    pub layers: i64,
    pub heads: i64,
    pub eot_token_id: i64,
    #[serde(default)]
    pub act: Activation,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

/// A whole CLIP model; `config.json` of its checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipConfig {
    pub vision: VisionConfig,
    pub text: TextConfig,
    pub embed_dim: i64,
    /// Initial ln(1 / temperature): ln(1 / 0.07) as in CLIP.
    #[serde(default = "default_logit_scale")]
    pub logit_scale_init: f64,
    /// Per-channel pixel mean and std that images are normalised with: the model's own, since a
    /// checkpoint sees its inputs only through them (CLIP's by default; HF imports take
    /// `preprocessor_config.json`'s).
    #[serde(default = "crate::transform::clip_mean")]
    pub image_mean: [f32; 3],
    #[serde(default = "crate::transform::clip_std")]
    pub image_std: [f32; 3],
}

fn default_eps() -> f64 {
    1e-5
}

fn default_logit_scale() -> f64 {
    (1.0f64 / 0.07).ln()
}

/// Upper clamp of the logit scale after each step: ln 100 (CLIP).
pub const MAX_LOGIT_SCALE: f64 = 4.605_170_185_988_092;

pub const PRESETS: [&str; 4] = ["tiny", "small", "vit-b-32", "vit-b-16"];

impl ClipConfig {
    /// `tiny` (tests), `small` (quickstart, 64-pixel synthetic images), and the ViT-B/32 and
    /// ViT-B/16 shapes of OpenAI's CLIP. The small presets' text vocab is a placeholder that
    /// training replaces with the tokenizer's.
    pub fn preset(name: &str, vocab_size: i64, eot_token_id: i64) -> Result<Self> {
        let (image_size, patch_size, v_width, v_layers, v_heads, t_width, t_layers, t_heads, ctx, embed_dim) =
            match name {
                "tiny" => (32, 8, 64, 2, 2, 64, 2, 2, 32, 64),
                "small" => (64, 8, 128, 4, 4, 128, 4, 4, 64, 128),
                "vit-b-32" => (224, 32, 768, 12, 12, 512, 12, 8, 77, 512),
                "vit-b-16" => (224, 16, 768, 12, 12, 512, 12, 8, 77, 512),
                other => bail!("unknown CLIP preset {other:?}; presets: {}", PRESETS.join(", ")),
            };
        let act = if name.starts_with("vit-b") { Activation::QuickGelu } else { Activation::Gelu };
        let cfg = Self {
            vision: VisionConfig {
                image_size,
                patch_size,
                width: v_width,
                layers: v_layers,
                heads: v_heads,
                act,
                layer_norm_eps: 1e-5,
            },
            text: TextConfig {
                vocab_size,
                context_length: ctx,
                width: t_width,
                layers: t_layers,
                heads: t_heads,
                eot_token_id,
                act,
                layer_norm_eps: 1e-5,
            },
            embed_dim,
            logit_scale_init: default_logit_scale(),
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let v = &self.vision;
        let t = &self.text;
        for (name, x) in [
            ("vision.image_size", v.image_size),
            ("vision.patch_size", v.patch_size),
            ("vision.width", v.width),
            ("vision.layers", v.layers),
            ("vision.heads", v.heads),
            ("text.vocab_size", t.vocab_size),
            ("text.context_length", t.context_length),
            ("text.width", t.width),
            ("text.layers", t.layers),
            ("text.heads", t.heads),
            ("embed_dim", self.embed_dim),
        ] {
            ensure!(x > 0, "CLIP config: {name} must be positive, got {x}");
        }
        ensure!(
            v.image_size % v.patch_size == 0,
            "CLIP config: image_size ({}) must be a multiple of patch_size ({})",
            v.image_size,
            v.patch_size
        );
        ensure!(
            v.width % v.heads == 0,
            "CLIP config: vision.width ({}) must divide by vision.heads ({})",
            v.width,
            v.heads
        );
        ensure!(
            t.width % t.heads == 0,
            "CLIP config: text.width ({}) must divide by text.heads ({})",
            t.width,
            t.heads
        );
        ensure!(
            self.image_std.iter().chain(&self.image_mean).all(|x| x.is_finite())
                && self.image_std.iter().all(|&s| s > 0.0),
            "CLIP config: image_mean must be finite and image_std positive, got {:?} and {:?}",
            self.image_mean,
            self.image_std
        );
        ensure!(
            (0..t.vocab_size).contains(&t.eot_token_id),
            "CLIP config: eot_token_id {} is outside the vocabulary",
            t.eot_token_id
        );
        Ok(())
    }

    /// How images become this model's pixels: its size, mean and std.
    pub fn preprocess(&self) -> Preprocess {
        Preprocess { size: self.vision.image_size as u32, mean: self.image_mean, std: self.image_std }
    }

    /// Patches per image side.
    pub fn grid(&self) -> i64 {
        self.vision.image_size / self.vision.patch_size
    }
}

/// Multi-head self-attention with HF CLIP's separate q/k/v projections.
#[derive(Debug)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: i64,
}

/// One pre-LN transformer layer; both towers are stacks of it.
#[derive(Debug)]
pub struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: Attention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl EncoderLayer {
    /// open_clip's init: attention std width^-0.5, projections into the residual stream
    /// width^-0.5 * (2 * layers)^-0.5, MLP input (2 * width)^-0.5.
    fn new(p: nn::Path, width: i64, heads: i64, layers: i64, act: Activation, eps: f64) -> Self {
        let w = width as f64;
        let attn_std = w.powf(-0.5);
        let proj_std = attn_std * (2.0 * layers as f64).powf(-0.5);
        let fc_std = (2.0 * w).powf(-0.5);
        let a = &p / "self_attn";
        let m = &p / "mlp";
        Self {
            layer_norm1: LayerNorm::new(&p / "layer_norm1", width, true, eps),
            self_attn: Attention {
                q_proj: Linear::new(&a / "q_proj", width, width, attn_std, true),
                k_proj: Linear::new(&a / "k_proj", width, width, attn_std, true),
                v_proj: Linear::new(&a / "v_proj", width, width, attn_std, true),
                out_proj: Linear::new(&a / "out_proj", width, width, proj_std, true),
                heads,
            },
            layer_norm2: LayerNorm::new(&p / "layer_norm2", width, true, eps),
            fc1: Linear::new(&m / "fc1", width, 4 * width, fc_std, true),
            fc2: Linear::new(&m / "fc2", 4 * width, width, proj_std, true),
            act,
        }
    }

    /// x: [B, T, W] fp32 -> [B, T, W] fp32; `causal` for the text tower. The residual stream
    /// stays fp32; both branches compute in `kind`.
    pub fn forward(&self, x: &Tensor, causal: bool, kind: Kind) -> Tensor {
        let (b, t, w) = x.size3().expect("[B, T, W]");
        let a = &self.self_attn;
        let d = w / a.heads;
        let h = self.layer_norm1.forward(x);
        let split = |lin: &Linear| lin.forward(&h, kind).view([b, t, a.heads, d]).transpose(1, 2); // [B, H, T, D]
        let (q, k, v) = (split(&a.q_proj), split(&a.k_proj), split(&a.v_proj));
        let y = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, causal, None::<f64>, false);
        let y = a.out_proj.forward(&y.transpose(1, 2).contiguous().view([b, t, w]), kind);
        let x = x + y;
        let h = self.fc2.forward(&self.act.apply(&self.fc1.forward(&self.layer_norm2.forward(&x), kind)), kind);
        x + h
    }
}

fn encoder(p: nn::Path, width: i64, heads: i64, layers: i64, act: Activation, eps: f64) -> Vec<EncoderLayer> {
    let p = &p / "layers";
    (0..layers).map(|i| EncoderLayer::new(&p / i, width, heads, layers, act, eps)).collect()
}

/// Outputs of the image tower.
pub struct VisionOutput {
    /// `post_layernorm` of the class token: [B, W].
    pub pooled: Tensor,
    /// HF's `hidden_states`: the embedding output (after `pre_layrnorm`) then the residual stream
    /// after each layer, class token first: `layers + 1` tensors of [B, N+1, W]. The VLM takes
    /// one of them (LLaVA: index -2, the penultimate layer), with or without the class token.
    pub hidden_states: Vec<Tensor>,
}

/// The ViT image tower.
#[derive(Debug)]
pub struct VisionTransformer {
    class_embedding: Tensor,
    patch_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    layers: Vec<EncoderLayer>,
    post_layernorm: LayerNorm,
    patch_size: i64,
    /// Matmuls, the patch convolution and attention run in this kind (bf16 under mixed precision).
    pub compute_kind: Kind,
}

impl VisionTransformer {
    /// Builds the tower's variables under `p` (HF: `vision_model`) with open_clip's init.
    pub fn new(p: nn::Path, cfg: &VisionConfig) -> Self {
        let w = cfg.width;
        let scale = (w as f64).powf(-0.5);
        let e = &p / "embeddings";
        let n = (cfg.image_size / cfg.patch_size).pow(2) + 1;
        let conv_std = (3 * cfg.patch_size * cfg.patch_size) as f64;
        Self {
            class_embedding: e.var("class_embedding", &[w], nn::Init::Randn { mean: 0.0, stdev: scale }),
            patch_embedding: (&e / "patch_embedding").var(
                "weight",
                &[w, 3, cfg.patch_size, cfg.patch_size],
                nn::Init::Randn { mean: 0.0, stdev: conv_std.powf(-0.5) },
            ),
            position_embedding: (&e / "position_embedding").var(
                "weight",
                &[n, w],
                nn::Init::Randn { mean: 0.0, stdev: scale },
            ),
            pre_layrnorm: LayerNorm::new(&p / "pre_layrnorm", w, true, cfg.layer_norm_eps),
            layers: encoder(&p / "encoder", w, cfg.heads, cfg.layers, cfg.act, cfg.layer_norm_eps),
            post_layernorm: LayerNorm::new(&p / "post_layernorm", w, true, cfg.layer_norm_eps),
            patch_size: cfg.patch_size,
            compute_kind: Kind::Float,
        }
    }

    /// pixels: [B, 3, S, S], normalised.
    pub fn forward(&self, pixels: &Tensor) -> Result<VisionOutput> {
        let (b, c, _, _) = pixels.size4()?;
        ensure!(c == 3, "expected 3-channel images, got {c} channels");
        let w = self.class_embedding.size()[0];
        let kind = self.compute_kind;
        let patches = pixels.to_kind(kind).f_conv2d(
            &self.patch_embedding.to_kind(kind),
            None::<Tensor>,
            [self.patch_size],
            [0],
            [1],
            1,
        )?; // [B, W, S/P, S/P]
        let patches = patches.to_kind(Kind::Float);
        let patches = patches.flatten(2, 3).transpose(1, 2); // [B, N, W]
        let n = patches.size()[1] + 1;
        ensure!(
            n == self.position_embedding.size()[0],
            "image gives {} patches, the model expects {}: resize images to the model's image_size",
            n - 1,
            self.position_embedding.size()[0] - 1
        );
        let cls = self.class_embedding.view([1, 1, w]).expand([b, 1, w], false); // [B, 1, W]
        let x = Tensor::cat(&[cls, patches], 1) + &self.position_embedding; // [B, N+1, W]
        let mut x = self.pre_layrnorm.forward(&x);
        let mut hidden_states = Vec::with_capacity(self.layers.len() + 1);
        hidden_states.push(x.shallow_clone());
        for layer in &self.layers {
            x = layer.forward(&x, false, kind);
            hidden_states.push(x.shallow_clone());
        }
        let pooled = self.post_layernorm.forward(&x.select(1, 0)); // [B, W]
        Ok(VisionOutput { pooled, hidden_states })
    }
}

/// The causal text tower, pooled at the first end-of-text token.
#[derive(Debug)]
pub struct TextTransformer {
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    eot_token_id: i64,
    /// Matmuls and attention run in this kind (bf16 under mixed precision).
    pub compute_kind: Kind,
}

impl TextTransformer {
    fn new(p: nn::Path, cfg: &TextConfig) -> Self {
        let e = &p / "embeddings";
        Self {
            token_embedding: (&e / "token_embedding").var(
                "weight",
                &[cfg.vocab_size, cfg.width],
                nn::Init::Randn { mean: 0.0, stdev: 0.02 },
            ),
            position_embedding: (&e / "position_embedding").var(
                "weight",
                &[cfg.context_length, cfg.width],
                nn::Init::Randn { mean: 0.0, stdev: 0.01 },
            ),
            layers: encoder(&p / "encoder", cfg.width, cfg.heads, cfg.layers, cfg.act, cfg.layer_norm_eps),
            final_layer_norm: LayerNorm::new(&p / "final_layer_norm", cfg.width, true, cfg.layer_norm_eps),
            eot_token_id: cfg.eot_token_id,
            compute_kind: Kind::Float,
        }
    }

    /// tokens: [B, L] with an end-of-text token in every row -> pooled [B, W].
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, l) = tokens.size2()?;
        ensure!(
            l <= self.position_embedding.size()[0],
            "text of {l} tokens exceeds the context of {}",
            self.position_embedding.size()[0]
        );
        let vocab = self.token_embedding.size()[0];
        let is_eot = tokens.eq(self.eot_token_id);
        // Both input checks in one host sync: the smallest id, the largest, and whether every row
        // has an end-of-text token.
        let all_eot = is_eot.any_dim(1, false).all().to_kind(Kind::Int64);
        let checks = Vec::<i64>::try_from(&Tensor::stack(&[tokens.min(), tokens.max(), all_eot], 0))?;
        let (lo, hi) = (checks[0], checks[1]);
        ensure!(0 <= lo && hi < vocab, "token ids must lie in 0..{vocab}, got ids from {lo} to {hi}");
        ensure!(checks[2] == 1, "every text must contain the end-of-text token {}", self.eot_token_id);
        let pos = self.position_embedding.narrow(0, 0, l);
        let mut x = Tensor::embedding(&self.token_embedding, tokens, -1, false, false) + pos; // [B, L, W]
        for layer in &self.layers {
            x = layer.forward(&x, true, self.compute_kind);
        }
        let x = self.final_layer_norm.forward(&x);
        let at = is_eot.to_kind(Kind::Int).argmax(1, false); // first end-of-text per row: [B]
        let rows = Tensor::arange(b, (Kind::Int64, tokens.device()));
        Ok(x.index(&[Some(rows), Some(at)])) // [B, W]
    }
}

/// The two towers and their projections into a shared embedding space.
#[derive(Debug)]
pub struct Clip {
    pub cfg: ClipConfig,
    pub vision_model: VisionTransformer,
    pub text_model: TextTransformer,
    visual_projection: Tensor,
    text_projection: Tensor,
    /// ln(1 / temperature), learned; clamp with [`Clip::clamp_logit_scale`] after each step.
    pub logit_scale: Tensor,
}

impl Clip {
    /// Builds the variables under `p` (use the VarStore root) with open_clip's init.
    pub fn new(cfg: &ClipConfig, p: nn::Path) -> Result<Self> {
        cfg.validate()?;
        let (vw, tw) = (cfg.vision.width, cfg.text.width);
        Ok(Self {
            cfg: cfg.clone(),
            vision_model: VisionTransformer::new(&p / "vision_model", &cfg.vision),
            text_model: TextTransformer::new(&p / "text_model", &cfg.text),
            visual_projection: (&p / "visual_projection").var(
                "weight",
                &[cfg.embed_dim, vw],
                nn::Init::Randn { mean: 0.0, stdev: (vw as f64).powf(-0.5) },
            ),
            text_projection: (&p / "text_projection").var(
                "weight",
                &[cfg.embed_dim, tw],
                nn::Init::Randn { mean: 0.0, stdev: (tw as f64).powf(-0.5) },
            ),
            logit_scale: p.var("logit_scale", &[], nn::Init::Const(cfg.logit_scale_init)),
        })
    }

    /// Projected image features before normalisation (HF's `get_image_features`): [B, E].
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        let pooled = self.vision_model.forward(pixels)?.pooled;
        Ok(project(&pooled, &self.visual_projection, self.vision_model.compute_kind))
    }

    /// Projected text features before normalisation (HF's `get_text_features`): [B, E].
    pub fn text_features(&self, tokens: &Tensor) -> Result<Tensor> {
        let pooled = self.text_model.forward(tokens)?;
        Ok(project(&pooled, &self.text_projection, self.text_model.compute_kind))
    }

    /// The contrastive loss of a batch of matching image-text pairs.
    pub fn loss(&self, pixels: &Tensor, tokens: &Tensor) -> Result<Tensor> {
        Ok(contrastive_loss(&self.image_features(pixels)?, &self.text_features(tokens)?, &self.logit_scale))
    }

    /// Matmuls, convolution and attention of both towers in `kind`; LayerNorms, the residual
    /// streams and the loss stay fp32.
    pub fn set_compute_kind(&mut self, kind: Kind) {
        self.vision_model.compute_kind = kind;
        self.text_model.compute_kind = kind;
    }

    /// Keeps the temperature in CLIP's range: logit_scale in [0, ln 100].
    pub fn clamp_logit_scale(&mut self) {
        tch::no_grad(|| {
            let _ = self.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE);
        });
    }
}

/// `x @ weight^T` in `kind`, back in fp32.
fn project(x: &Tensor, weight: &Tensor, kind: Kind) -> Tensor {
    x.to_kind(kind).linear(&weight.to_kind(kind), None::<Tensor>).to_kind(Kind::Float)
}

/// open_clip's loss: L2-normalise both sides, logits = exp(logit_scale) * img @ txt^T, and the
/// mean of the image->text and text->image cross-entropies against the diagonal.
pub fn contrastive_loss(image_features: &Tensor, text_features: &Tensor, logit_scale: &Tensor) -> Tensor {
    let norm = |f: &Tensor| f / f.norm_scalaropt_dim(2, [-1], true);
    let (img, txt) = (norm(image_features), norm(text_features));
    let logits_per_image = logit_scale.exp() * img.matmul(&txt.transpose(0, 1)); // [B, B]
    let labels = Tensor::arange(logits_per_image.size()[0], (Kind::Int64, logits_per_image.device()));
    (logits_per_image.cross_entropy_for_logits(&labels)
        + logits_per_image.transpose(0, 1).cross_entropy_for_logits(&labels))
        / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ViT-B presets have exactly the parameters of OpenAI's CLIP (HF `CLIPModel`'s
    /// `num_parameters()` for openai/clip-vit-base-patch32 and -patch16, 49,408-token vocabulary).
    #[test]
    fn vit_b_presets_have_openai_clips_parameter_counts() {
        for (preset, expected) in [("vit-b-32", 151_277_313i64), ("vit-b-16", 149_620_737)] {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let cfg = ClipConfig::preset(preset, 49_408, 49_407).unwrap();
            Clip::new(&cfg, vs.root()).unwrap();
            let n: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
            assert_eq!(n, expected, "{preset}");
            assert_eq!(cfg.grid() * cfg.grid() + 1, if preset == "vit-b-32" { 50 } else { 197 }, "{preset} tokens");
        }
    }
}
