//! Hugging Face GPT-2 interop: a `save_pretrained` directory (`config.json` +
//! `model.safetensors`) in and out. gptlab already stores GPT-2's names and Conv1D layouts, so
//! the work is the config, the optional `transformer.` prefix, the tied head and HF's buffers.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use serde_json::json;
use tch::{nn::VarStore, Device, Tensor};

use super::check_output;
use crate::checkpoint::{self, TOKENIZER_FILE};
use crate::models::gpt::{Gelu, Gpt, GptConfig};

/// The fields of HF's `GPT2Config` that change the function the model computes.
#[derive(Deserialize)]
struct HfGpt2Config {
    vocab_size: i64,
    n_positions: i64,
    n_embd: i64,
    n_layer: i64,
    n_head: i64,
    #[serde(default)]
    n_inner: Option<i64>,
    #[serde(default = "default_activation")]
    activation_function: String,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    reorder_and_upcast_attn: bool,
    #[serde(default = "default_true")]
    scale_attn_weights: bool,
}

fn default_activation() -> String {
    "gelu_new".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}

impl HfGpt2Config {
    /// gptlab's config for this GPT-2, its head tied to `wte` or not.
    fn to_gptlab(&self, tie_word_embeddings: bool) -> Result<GptConfig> {
        let gelu = match self.activation_function.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" => Gelu::Tanh,
            "gelu" => Gelu::Exact,
            other => bail!("unsupported activation_function {other:?} (gptlab supports gelu_new and gelu)"),
        };
        if let Some(inner) = self.n_inner {
            ensure!(inner == 4 * self.n_embd, "n_inner = {inner} is unsupported: gptlab's MLP is 4 * n_embd");
        }
        ensure!(
            !self.scale_attn_by_inverse_layer_idx && !self.reorder_and_upcast_attn && self.scale_attn_weights,
            "non-default GPT-2 attention scaling options are unsupported"
        );
        let cfg = GptConfig {
            vocab_size: self.vocab_size,
            block_size: self.n_positions,
            n_layer: self.n_layer,
            n_head: self.n_head,
            n_embd: self.n_embd,
            dropout: 0.0,
            bias: true,
            gelu,
            layer_norm_epsilon: self.layer_norm_epsilon,
            tie_word_embeddings,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// gptlab's config for an HF `GPT2Config` (a whole `config.json`, or LLaVA's `text_config`).
pub(crate) fn config_from_hf(value: &serde_json::Value, tie_word_embeddings: bool) -> Result<GptConfig> {
    let hf: HfGpt2Config = serde_json::from_value(value.clone()).context("not a GPT-2 config")?;
    hf.to_gptlab(tie_word_embeddings)
}

/// HF's `GPT2Config` for `cfg`, with the special ids of the tokenizer at `tok` when there is one
/// (without them HF falls back to GPT-2's 50256, outside gptlab's vocabularies).
pub(crate) fn hf_config(cfg: &GptConfig, tok: &Path) -> Result<serde_json::Value> {
    let mut hf = json!({
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_ctx": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": null,
        "activation_function": match cfg.gelu { Gelu::Tanh => "gelu_new", Gelu::Exact => "gelu" },
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "initializer_range": 0.02,
        "tie_word_embeddings": cfg.tie_word_embeddings,
    });
    if tok.exists() {
        let t = crate::tokenizer::Tokenizer::from_file(tok)?;
        hf["bos_token_id"] = t.eot().into();
        hf["eos_token_id"] = t.eot().into();
        hf["pad_token_id"] = t.pad().into();
    }
    Ok(hf)
}

/// HF GPT-2 always has biases: a bias-free model exports with zero ones (the same function),
/// named under `prefix` (`transformer.`, or LLaVA's `language_model.model.`).
pub(crate) fn zero_biases(cfg: &GptConfig, prefix: &str) -> Vec<(String, Tensor)> {
    if cfg.bias {
        return Vec::new();
    }
    let c = cfg.n_embd;
    let zeros = |name: String, n: i64| (format!("{prefix}{name}"), Tensor::zeros([n], (tch::Kind::Float, Device::Cpu)));
    let mut out: Vec<(String, Tensor)> = (0..cfg.n_layer)
        .flat_map(|i| {
            let h = format!("h.{i}");
            [
                zeros(format!("{h}.ln_1.bias"), c),
                zeros(format!("{h}.ln_2.bias"), c),
                zeros(format!("{h}.attn.c_attn.bias"), 3 * c),
                zeros(format!("{h}.attn.c_proj.bias"), c),
                zeros(format!("{h}.mlp.c_fc.bias"), 4 * c),
                zeros(format!("{h}.mlp.c_proj.bias"), c),
            ]
        })
        .collect();
    out.push(zeros("ln_f.bias".into(), c));
    out
}

/// Whether an HF head equals the token embedding it may be tied to.
pub(crate) fn head_is_tied(wte: Option<&Tensor>, head: &Tensor) -> bool {
    wte.is_some_and(|w| w.size() == head.size() && w.equal(&head.to_kind(tch::Kind::Float)))
}

/// HF buffers of GPT-2's attention that are not parameters.
pub(crate) fn is_attention_buffer(name: &str) -> bool {
    name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias")
}

/// Converts a HF GPT-2 directory into a gptlab checkpoint at `out`; a head that differs from
/// `wte` is kept as an untied head. `out` must be new, empty, or (with `force`) an earlier import.
pub fn import_gpt2(from: &Path, out: &Path, force: bool) -> Result<GptConfig> {
    super::check_output(from, out, force, "an imported GPT checkpoint", super::is_imported::<GptConfig>)?;
    let config_path = from.join("config.json");
    let text = std::fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", config_path.display()))?;
    let weights = from.join("model.safetensors");
    let mut tensors = Vec::new();
    let mut lm_head = None;
    for (name, t) in checkpoint::read_tensors(&weights)? {
        let bare = name.strip_prefix("transformer.").unwrap_or(&name);
        if bare == "lm_head.weight" {
            lm_head = Some(t.to_kind(tch::Kind::Float));
        } else if !is_attention_buffer(bare) {
            tensors.push((format!("transformer.{bare}"), t.to_kind(tch::Kind::Float)));
        }
    }
    let wte = tensors.iter().find(|(n, _)| n == "transformer.wte.weight").map(|(_, t)| t);
    let tied = lm_head.as_ref().is_none_or(|head| head_is_tied(wte, head));
    let cfg = config_from_hf(&value, tied).with_context(|| format!("{}", config_path.display()))?;
    if let (Some(head), false) = (lm_head, tied) {
        tensors.push(("lm_head.weight".into(), head));
    }
    let vs = VarStore::new(Device::Cpu);
    Gpt::new(&cfg, vs.root())?;
    checkpoint::fill(&vs, tensors, &weights)?;
    let tok = from.join(TOKENIZER_FILE);
    checkpoint::save_model(out, &vs, &cfg, tok.exists().then_some(tok.as_path()))?;
    Ok(cfg)
}

/// Writes a gptlab checkpoint as a HF GPT-2 directory that `GPT2LMHeadModel.from_pretrained`
/// loads. Bias-free models get zero biases, which computes the same function.
/// `out` must be new, empty, or (with `force`) an earlier GPT-2 export; it is written atomically
/// (a temporary sibling, then a rename), never into the checkpoint itself.
pub fn export_gpt2(ckpt: &Path, out: &Path, force: bool) -> Result<()> {
    check_output(ckpt, out, force, "an HF GPT-2 export", is_gpt2_export)?;
    let loaded = checkpoint::load::<Gpt>(ckpt, Device::Cpu)?;
    let cfg = &loaded.model.cfg;
    let mut tensors: Vec<(String, Tensor)> = checkpoint::model_tensors(&loaded.vs);
    tensors.extend(zero_biases(cfg, "transformer."));
    let tok = loaded.dir.join(TOKENIZER_FILE);
    let mut hf = hf_config(cfg, &tok)?;
    hf["architectures"] = json!(["GPT2LMHeadModel"]);
    write_hf_dir(out, &hf, &tensors, &tok, &[])?;
    checkpoint::commit_replacing(&checkpoint::temp_sibling(out), out, is_gpt2_export, "an HF GPT-2 export")
}

/// Writes `config.json`, `model.safetensors`, the tokenizer when there is one and `extra` files
/// into the temporary sibling of `out`, synced, for the caller to commit.
pub(crate) fn write_hf_dir(
    out: &Path,
    config: &serde_json::Value,
    tensors: &[(String, Tensor)],
    tok: &Path,
    extra: &[(&str, serde_json::Value)],
) -> Result<()> {
    let tmp = checkpoint::temp_sibling(out);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    std::fs::write(tmp.join("config.json"), serde_json::to_string_pretty(config)?)?;
    checkpoint::write_safetensors(tensors, &tmp.join("model.safetensors"))?;
    if tok.exists() {
        std::fs::copy(tok, tmp.join(TOKENIZER_FILE))?;
    }
    for (name, value) in extra {
        std::fs::write(tmp.join(name), serde_json::to_string_pretty(value)?)?;
    }
    checkpoint::fsync_tree(&tmp)
}

/// Whether `dir` is a GPT-2 `save_pretrained` directory (an earlier export).
fn is_gpt2_export(dir: &Path) -> bool {
    let config = std::fs::read_to_string(dir.join("config.json")).ok();
    let model_type =
        config.and_then(|c| serde_json::from_str::<serde_json::Value>(&c).ok()).map(|v| v["model_type"].clone());
    dir.join("model.safetensors").is_file() && model_type.is_some_and(|t| t == "gpt2")
}
