//! Hugging Face `CLIPModel` import: its `config.json` as a [`ClipConfig`], its weights into a
//! gptlab CLIP checkpoint. The weights need no
//! conversion (gptlab's CLIP uses HF's names and layouts) beyond dropping HF's `position_ids`
//! buffers, which [`is_hf_buffer`] recognises.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use gptlab_vision::clip::{Activation, Clip, ClipConfig, TextConfig, VisionConfig};
use gptlab_vision::transform::{CLIP_MEAN, CLIP_STD};
use serde::Deserialize;
use tch::{nn::VarStore, Device, Tensor};

use crate::checkpoint::{self, TOKENIZER_FILE};

#[derive(Deserialize)]
struct HfTower {
    hidden_size: i64,
    intermediate_size: i64,
    num_hidden_layers: i64,
    num_attention_heads: i64,
    #[serde(default = "quick_gelu")]
    hidden_act: String,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    // Vision only.
    image_size: Option<i64>,
    patch_size: Option<i64>,
    num_channels: Option<i64>,
    // Text only.
    vocab_size: Option<i64>,
    max_position_embeddings: Option<i64>,
    eos_token_id: Option<i64>,
}

#[derive(Deserialize)]
struct HfClipConfig {
    text_config: HfTower,
    vision_config: HfTower,
    projection_dim: i64,
    #[serde(default = "default_logit_scale")]
    logit_scale_init_value: f64,
}

fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_logit_scale() -> f64 {
    2.6592
}

fn activation(name: &str) -> Result<Activation> {
    match name {
        "quick_gelu" => Ok(Activation::QuickGelu),
        "gelu" => Ok(Activation::Gelu),
        other => bail!("unsupported CLIP hidden_act {other:?} (supported: quick_gelu, gelu)"),
    }
}

fn check_mlp(t: &HfTower, tower: &str) -> Result<()> {
    ensure!(
        t.intermediate_size == 4 * t.hidden_size,
        "{tower}: intermediate_size {} is unsupported: gptlab's CLIP MLP is 4 * hidden_size",
        t.intermediate_size
    );
    Ok(())
}

/// gptlab's vision tower for an HF `CLIPVisionConfig` (a `CLIPModel`'s `vision_config`, or
/// LLaVA's).
pub(crate) fn vision_from_hf(value: &serde_json::Value) -> Result<VisionConfig> {
    let v: HfTower = serde_json::from_value(value.clone()).context("not a CLIP vision config")?;
    vision_tower(&v)
}

fn vision_tower(v: &HfTower) -> Result<VisionConfig> {
    check_mlp(v, "vision_config")?;
    ensure!(v.num_channels.unwrap_or(3) == 3, "only 3-channel CLIP vision towers are supported");
    let need = |x: Option<i64>, name: &str| x.with_context(|| format!("CLIP config lacks {name}"));
    Ok(VisionConfig {
        image_size: need(v.image_size, "vision_config.image_size")?,
        patch_size: need(v.patch_size, "vision_config.patch_size")?,
        width: v.hidden_size,
        layers: v.num_hidden_layers,
        heads: v.num_attention_heads,
        act: activation(&v.hidden_act)?,
        layer_norm_eps: v.layer_norm_eps,
    })
}

/// Parses an HF `CLIPModel` `config.json`.
pub fn config_from_hf(json: &str) -> Result<ClipConfig> {
    let hf: HfClipConfig = serde_json::from_str(json).context("not a CLIPModel config")?;
    let t = &hf.text_config;
    check_mlp(t, "text_config")?;
    let need = |x: Option<i64>, name: &str| x.with_context(|| format!("CLIP config lacks {name}"));
    let cfg = ClipConfig {
        vision: vision_tower(&hf.vision_config)?,
        text: TextConfig {
            vocab_size: need(t.vocab_size, "text_config.vocab_size")?,
            context_length: need(t.max_position_embeddings, "text_config.max_position_embeddings")?,
            width: t.hidden_size,
            layers: t.num_hidden_layers,
            heads: t.num_attention_heads,
            // Legacy configs say eos_token_id = 2 and pool at the largest id, which in CLIP's
            // vocabulary is the end-of-text token, the last id.
            eot_token_id: match need(t.eos_token_id, "text_config.eos_token_id")? {
                2 => need(t.vocab_size, "text_config.vocab_size")? - 1,
                id => id,
            },
            act: activation(&t.hidden_act)?,
            layer_norm_eps: t.layer_norm_eps,
        },
        embed_dim: hf.projection_dim,
        logit_scale_init: hf.logit_scale_init_value,
        image_mean: CLIP_MEAN,
        image_std: CLIP_STD,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The pixel normalisation of `dir/preprocessor_config.json` (`image_mean`, `image_std`), each
/// OpenAI CLIP's where the file or the key is missing.
pub(crate) fn read_normalisation(dir: &Path) -> Result<([f32; 3], [f32; 3])> {
    #[derive(Deserialize)]
    struct HfPreprocessor {
        image_mean: Option<[f32; 3]>,
        image_std: Option<[f32; 3]>,
    }
    let path = dir.join("preprocessor_config.json");
    if !path.exists() {
        return Ok((CLIP_MEAN, CLIP_STD));
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let hf: HfPreprocessor =
        serde_json::from_str(&text).with_context(|| format!("{} is not a HF preprocessor config", path.display()))?;
    let (mean, std) = (hf.image_mean.unwrap_or(CLIP_MEAN), hf.image_std.unwrap_or(CLIP_STD));
    ensure!(
        std.iter().all(|s| s.is_finite() && *s > 0.0),
        "{}: needs image_std positive in every channel, got {std:?}",
        path.display()
    );
    Ok((mean, std))
}

/// HF buffers that are not parameters.
pub fn is_hf_buffer(name: &str) -> bool {
    name.ends_with("position_ids")
}

/// Converts a HF `CLIPModel` directory (`config.json` + `model.safetensors`, and the pixel
/// normalisation of `preprocessor_config.json` when present) into a gptlab CLIP checkpoint at
/// `out`.
pub fn import_clip(from: &Path, out: &Path, force: bool) -> Result<ClipConfig> {
    super::check_output(from, out, force, "an imported CLIP checkpoint", super::is_imported::<ClipConfig>)?;
    let config_path = from.join("config.json");
    let text = std::fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
    let mut cfg = config_from_hf(&text).with_context(|| format!("{}", config_path.display()))?;
    (cfg.image_mean, cfg.image_std) = read_normalisation(from)?;
    cfg.validate()?;
    let weights = from.join("model.safetensors");
    let tensors: Vec<(String, Tensor)> = checkpoint::read_tensors(&weights)?
        .into_iter()
        .filter(|(name, _)| !is_hf_buffer(name))
        .map(|(name, t)| (name, t.to_kind(tch::Kind::Float)))
        .collect();
    let vs = VarStore::new(Device::Cpu);
    Clip::new(&cfg, vs.root())?;
    checkpoint::fill(&vs, tensors, &weights)?;
    let tok = from.join(TOKENIZER_FILE);
    checkpoint::save_model(out, &vs, &cfg, tok.exists().then_some(tok.as_path()))?;
    Ok(cfg)
}
