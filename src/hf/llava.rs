//! Hugging Face LLaVA interop: `LlavaForConditionalGeneration` directories whose `text_config`
//! is GPT-2 and whose `vision_config` is CLIP, in and out.
//!
//! transformers 5 saves the vision tower as `vision_tower.*` (the CLIP vision model's names
//! without its `vision_model.` prefix), the projector as `multi_modal_projector.linear_1/2.*`,
//! the decoder as `language_model.model.*` (GPT-2's names) and the head as
//! `language_model.lm_head.weight`; transformers 4 wrote `vision_tower.vision_model.*` and
//! `language_model.transformer.*`, and the newest in-memory names start with `model.`. Import
//! reads all three. HF needs `tie_word_embeddings = false` (at the top and in `text_config`)
//! to build this combination, so the head is always saved: a head equal to `wte` imports as
//! gptlab's tied head, another as an untied one.
//!
//! HF expects the image token repeated once per image feature in `input_ids`, as gptlab's
//! decoder reads it, so `image_seq_length` is the tokens per image.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use tch::{nn::VarStore, Device, Kind, Tensor};

use super::check_output;
use super::clip::{read_normalisation, vision_from_hf};
use super::gpt2::{self, head_is_tied, is_attention_buffer, write_hf_dir};
use crate::checkpoint::{self, TOKENIZER_FILE};
use crate::models::vlm::{FeatureSelect, ProjectorKind, Vlm, VlmConfig};

/// gptlab's name for an HF LLaVA tensor of any of the three naming generations (`None` for HF
/// buffers).
fn gptlab_name(hf: &str) -> Option<String> {
    let name = hf.strip_prefix("model.").unwrap_or(hf);
    if name == "lm_head.weight" || name == "language_model.lm_head.weight" {
        return Some("language_model.lm_head.weight".into());
    }
    if let Some(rest) = name.strip_prefix("language_model.") {
        let rest = rest.strip_prefix("model.").or_else(|| rest.strip_prefix("transformer.")).unwrap_or(rest);
        return (!is_attention_buffer(rest)).then(|| format!("language_model.transformer.{rest}"));
    }
    if let Some(rest) = name.strip_prefix("vision_tower.") {
        let rest = rest.strip_prefix("vision_model.").unwrap_or(rest);
        return (!super::clip::is_hf_buffer(rest)).then(|| format!("vision_tower.vision_model.{rest}"));
    }
    Some(name.to_string())
}

/// gptlab's config for an HF LLaVA `config.json`, the decoder's head tied or not.
pub fn config_from_hf(hf: &Value, tied: bool) -> Result<VlmConfig> {
    ensure!(hf["model_type"] == "llava", "model_type is {}, not llava", hf["model_type"]);
    let text = &hf["text_config"];
    ensure!(
        text["model_type"] == "gpt2",
        "text_config.model_type is {}: gptlab's decoder is GPT-2",
        text["model_type"]
    );
    let vision = &hf["vision_config"];
    ensure!(
        vision["model_type"] == "clip_vision_model",
        "vision_config.model_type is {}: gptlab's vision tower is CLIP's",
        vision["model_type"]
    );
    let act = hf["projector_hidden_act"].as_str().unwrap_or("gelu");
    ensure!(act == "gelu", "projector_hidden_act {act:?} is unsupported: gptlab's mlp2x_gelu projector uses gelu");
    ensure!(
        hf["multimodal_projector_bias"].as_bool().unwrap_or(true),
        "multimodal_projector_bias = false is unsupported: gptlab's projector has biases"
    );
    let layer = match &hf["vision_feature_layer"] {
        Value::Null => -2,
        v => v.as_i64().context("vision_feature_layer must be one layer index (lists of layers are unsupported)")?,
    };
    let select = match hf["vision_feature_select_strategy"].as_str().unwrap_or("default") {
        "default" => FeatureSelect::Patches,
        "full" => FeatureSelect::All,
        other => bail!("vision_feature_select_strategy {other:?} is unsupported (default or full)"),
    };
    let cfg = VlmConfig {
        vision: vision_from_hf(vision).context("vision_config")?,
        text: gpt2::config_from_hf(text, tied).context("text_config")?,
        projector: ProjectorKind::Mlp2xGelu,
        vision_feature_layer: layer,
        select,
        image_token_id: hf["image_token_index"].as_i64().context("config lacks image_token_index")?,
        image_mean: gptlab_vision::transform::CLIP_MEAN,
        image_std: gptlab_vision::transform::CLIP_STD,
    };
    cfg.validate()?;
    if let Some(n) = hf["image_seq_length"].as_i64() {
        ensure!(
            n == cfg.tokens_per_image(),
            "image_seq_length {n} disagrees with the {} tokens per image the vision config gives",
            cfg.tokens_per_image()
        );
    }
    Ok(cfg)
}

/// Converts a HF LLaVA directory (`config.json`, `model.safetensors`, and, when present,
/// `preprocessor_config.json` and `tokenizer.json`) into a gptlab VLM checkpoint at `out`.
pub fn import_llava(from: &Path, out: &Path, force: bool) -> Result<VlmConfig> {
    check_output(from, out, force, "an imported VLM checkpoint", super::is_imported::<VlmConfig>)?;
    let config_path = from.join("config.json");
    let text = std::fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
    let hf: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", config_path.display()))?;
    let weights = from.join("model.safetensors");
    let mut tensors: Vec<(String, Tensor)> = checkpoint::read_tensors(&weights)?
        .into_iter()
        .filter_map(|(name, t)| gptlab_name(&name).map(|n| (n, t.to_kind(Kind::Float))))
        .collect();
    let head_at = tensors.iter().position(|(n, _)| n == "language_model.lm_head.weight");
    let head = head_at.map(|i| tensors.remove(i).1);
    let wte = tensors.iter().find(|(n, _)| n == "language_model.transformer.wte.weight").map(|(_, t)| t);
    let tied = head.as_ref().is_none_or(|h| head_is_tied(wte, h));
    if let (Some(head), false) = (head, tied) {
        tensors.push(("language_model.lm_head.weight".into(), head));
    }
    let mut cfg = config_from_hf(&hf, tied).with_context(|| format!("{}", config_path.display()))?;
    (cfg.image_mean, cfg.image_std) = read_normalisation(from)?;
    let vs = VarStore::new(Device::Cpu);
    Vlm::new(&cfg, vs.root())?;
    checkpoint::fill(&vs, tensors, &weights)?;
    let tok = from.join(TOKENIZER_FILE);
    checkpoint::save_model(out, &vs, &cfg, tok.exists().then_some(tok.as_path()))?;
    Ok(cfg)
}

/// HF's `CLIPVisionConfig` for gptlab's tower.
fn hf_vision_config(cfg: &VlmConfig) -> Value {
    let v = &cfg.vision;
    json!({
        "model_type": "clip_vision_model",
        "hidden_size": v.width,
        "intermediate_size": 4 * v.width,
        "num_hidden_layers": v.layers,
        "num_attention_heads": v.heads,
        "image_size": v.image_size,
        "patch_size": v.patch_size,
        "num_channels": 3,
        "hidden_act": match v.act {
            gptlab_vision::clip::Activation::QuickGelu => "quick_gelu",
            gptlab_vision::clip::Activation::Gelu => "gelu",
        },
        "layer_norm_eps": v.layer_norm_eps,
    })
}

/// Writes a gptlab VLM checkpoint as a HF LLaVA directory that
/// `LlavaForConditionalGeneration.from_pretrained` loads, with a `preprocessor_config.json`
/// holding its pixel normalisation. Only `mlp2x_gelu` projectors export: HF LLaVA has no other.
pub fn export_llava(ckpt: &Path, out: &Path, force: bool) -> Result<()> {
    check_output(ckpt, out, force, "an HF LLaVA export", is_llava_export)?;
    let loaded = checkpoint::load::<Vlm>(ckpt, Device::Cpu)?;
    let cfg = &loaded.model.cfg;
    ensure!(
        cfg.projector == ProjectorKind::Mlp2xGelu,
        "only mlp2x_gelu projectors export to HF LLaVA, which has no other; this model's is {:?}",
        cfg.projector
    );
    let mut tensors = Vec::new();
    let mut wte = None;
    for (name, t) in checkpoint::model_tensors(&loaded.vs) {
        let hf_name = if let Some(rest) = name.strip_prefix("language_model.transformer.") {
            if rest == "wte.weight" {
                wte = Some(t.shallow_clone());
            }
            format!("language_model.model.{rest}")
        } else if let Some(rest) = name.strip_prefix("vision_tower.vision_model.") {
            format!("vision_tower.{rest}")
        } else {
            name
        };
        tensors.push((hf_name, t));
    }
    if cfg.text.tie_word_embeddings {
        let wte = wte.context("the checkpoint has no token embedding")?;
        tensors.push(("language_model.lm_head.weight".into(), wte.copy()));
    }
    tensors.extend(gpt2::zero_biases(&cfg.text, "language_model.model."));
    let tok = loaded.dir.join(TOKENIZER_FILE);
    let mut text = gpt2::hf_config(&cfg.text, &tok)?;
    text["tie_word_embeddings"] = false.into();
    let hf = json!({
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "image_token_index": cfg.image_token_id,
        "image_seq_length": cfg.tokens_per_image(),
        "projector_hidden_act": "gelu",
        "multimodal_projector_bias": true,
        "vision_feature_layer": cfg.vision_feature_layer,
        "vision_feature_select_strategy": match cfg.select { FeatureSelect::Patches => "default", FeatureSelect::All => "full" },
        "tie_word_embeddings": false,
        "text_config": text,
        "vision_config": hf_vision_config(cfg),
    });
    let size = cfg.vision.image_size;
    let preprocessor = json!({
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": true,
        "size": {"shortest_edge": size},
        "do_center_crop": true,
        "crop_size": {"height": size, "width": size},
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": cfg.image_mean,
        "image_std": cfg.image_std,
        "resample": 3,
    });
    write_hf_dir(out, &hf, &tensors, &tok, &[("preprocessor_config.json", preprocessor)])?;
    checkpoint::commit_replacing(&checkpoint::temp_sibling(out), out, is_llava_export, "an HF LLaVA export")
}

/// Whether `dir` is a LLaVA `save_pretrained` directory (an earlier export).
fn is_llava_export(dir: &Path) -> bool {
    let config = std::fs::read_to_string(dir.join("config.json")).ok();
    let model_type = config.and_then(|c| serde_json::from_str::<Value>(&c).ok()).map(|v| v["model_type"].clone());
    dir.join("model.safetensors").is_file() && model_type.is_some_and(|t| t == "llava")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generation_of_hf_names_maps_to_gptlabs() {
        for (hf, ours) in [
            (
                "vision_tower.encoder.layers.0.mlp.fc1.weight",
                "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",
            ),
            ("vision_tower.vision_model.pre_layrnorm.bias", "vision_tower.vision_model.pre_layrnorm.bias"),
            ("model.vision_tower.post_layernorm.weight", "vision_tower.vision_model.post_layernorm.weight"),
            ("language_model.model.h.1.attn.c_attn.weight", "language_model.transformer.h.1.attn.c_attn.weight"),
            ("language_model.transformer.wte.weight", "language_model.transformer.wte.weight"),
            ("model.language_model.ln_f.bias", "language_model.transformer.ln_f.bias"),
            ("language_model.lm_head.weight", "language_model.lm_head.weight"),
            ("lm_head.weight", "language_model.lm_head.weight"),
            ("multi_modal_projector.linear_2.bias", "multi_modal_projector.linear_2.bias"),
            ("model.multi_modal_projector.linear_1.weight", "multi_modal_projector.linear_1.weight"),
        ] {
            assert_eq!(gptlab_name(hf).as_deref(), Some(ours), "{hf}");
        }
        assert_eq!(gptlab_name("language_model.model.h.0.attn.bias"), None);
        assert_eq!(gptlab_name("vision_tower.embeddings.position_ids"), None);
    }
}
