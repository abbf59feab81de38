//! Checkpoints: a directory with `model.safetensors` (HF tensor names and layouts), `config.json`
//! (the model family's config, tagged `"family": "gpt" | "clip"`), and for training runs
//! `optimizer.safetensors`, `state.json` and the tokenizer. [`load`] checks the family, so a
//! command given the wrong kind of checkpoint says so; [`load_prefixed`] assembles a model from
//! parts of other checkpoints.
//!
//! Written atomically: everything goes into `NAME.tmp`, is fsynced, then `NAME` moves to
//! `NAME.old`, `NAME.tmp` moves to `NAME` and `NAME.old` is removed. A kill at any moment leaves
//! either `NAME` or, between the two renames, `NAME.old` complete; [`resolve`] falls back to it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use gptlab_vision::clip::{Clip, ClipConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tch::{nn, nn::VarStore, Device, Kind, Tensor};

use crate::models::gpt::{Gpt, GptConfig};

pub const MODEL_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// What [`save`] writes besides the model.
pub struct TrainingParts<'a, S: Serialize> {
    pub optimizer: Vec<(String, Tensor)>,
    /// The trainer's state, written as `state.json`.
    pub state: &'a S,
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    dir.with_file_name(name)
}

/// The temporary sibling a directory is written into before [`commit`] publishes it.
pub fn temp_sibling(dir: &Path) -> PathBuf {
    sibling(dir, ".tmp")
}

/// Flushes a directory written file by file, then the directory entry itself.
pub fn fsync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        File::open(entry?.path())?.sync_all()?;
    }
    fsync_dir(dir)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// A tensor's bytes as safetensors wants them.
struct TensorBytes {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for TensorBytes {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Writes named tensors with the `{"format": "pt"}` metadata that HF loaders check for
/// (tch's own writer leaves the metadata out).
pub fn write_safetensors(tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, t)| {
            let dtype = match t.kind() {
                Kind::Float => safetensors::Dtype::F32,
                Kind::BFloat16 => safetensors::Dtype::BF16,
                Kind::Half => safetensors::Dtype::F16,
                Kind::Double => safetensors::Dtype::F64,
                Kind::Int64 => safetensors::Dtype::I64,
                other => bail!("cannot write tensor {name} of kind {other:?} to safetensors"),
            };
            let t = t.to_device(Device::Cpu).contiguous();
            let mut data = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
            t.f_copy_data_u8(&mut data, t.numel())?;
            let shape = t.size().iter().map(|&d| d as usize).collect();
            Ok((name.clone(), TensorBytes { dtype, shape, data }))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    safetensors::serialize_to_file(views, &metadata, path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", path.display()))
}

/// Whether every parameter is finite: a checkpoint must never hold NaN or inf weights.
pub fn all_finite(vs: &VarStore) -> bool {
    let flags: Vec<Tensor> = vs.variables().values().map(|t| t.isfinite().all()).collect();
    Tensor::stack(&flags, 0).all().int64_value(&[]) == 1
}

/// Model tensors in name order.
pub fn model_tensors(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Writes a checkpoint to `dir` atomically (see the module docs). `config` is the tagged
/// `config.json` of [`tagged_config`].
pub fn save<S: Serialize>(
    dir: &Path,
    vs: &VarStore,
    config: &Value,
    tokenizer: Option<&Path>,
    training: Option<TrainingParts<S>>,
) -> Result<()> {
    let tmp = temp_sibling(dir);
    write_files(&tmp, vs, config, tokenizer, training)
        .with_context(|| format!("writing checkpoint {}", tmp.display()))?;
    commit(&tmp, dir)
}

/// A model's `config.json`: its family's config with the family tag beside it.
pub fn tagged_config<C: ModelConfig>(cfg: &C) -> Result<Value> {
    let mut v = serde_json::to_value(cfg)?;
    v.as_object_mut()
        .context("a model config must serialise to a JSON object")?
        .insert("family".into(), C::FAMILY.into());
    Ok(v)
}

/// Writes an inference-only checkpoint (weights, config, tokenizer) of a `C` model.
pub fn save_model<C: ModelConfig>(dir: &Path, vs: &VarStore, cfg: &C, tokenizer: Option<&Path>) -> Result<()> {
    save::<()>(dir, vs, &tagged_config(cfg)?, tokenizer, None)
}

fn write_files<S: Serialize>(
    tmp: &Path,
    vs: &VarStore,
    config: &Value,
    tokenizer: Option<&Path>,
    training: Option<TrainingParts<S>>,
) -> Result<()> {
    if tmp.exists() {
        std::fs::remove_dir_all(tmp)?;
    }
    std::fs::create_dir_all(tmp)?;
    let write_json = |name: &str, json: String| -> Result<()> {
        std::fs::write(tmp.join(name), json)?;
        Ok(())
    };
    write_safetensors(&model_tensors(vs), &tmp.join(MODEL_FILE))?;
    write_json(CONFIG_FILE, serde_json::to_string_pretty(config)?)?;
    if let Some(tok) = tokenizer {
        std::fs::copy(tok, tmp.join(TOKENIZER_FILE)).with_context(|| format!("copying {}", tok.display()))?;
    }
    if let Some(TrainingParts { optimizer, state }) = training {
        write_safetensors(&optimizer, &tmp.join(OPTIMIZER_FILE))?;
        write_json(STATE_FILE, serde_json::to_string_pretty(state)?)?;
    }
    fsync_tree(tmp)
}

/// The two renames that publish `tmp` as `dir`. Only a previous checkpoint (or an empty
/// directory) is ever replaced: any other directory at `dir` (an HF download, a home folder) is
/// refused.
pub fn commit(tmp: &Path, dir: &Path) -> Result<()> {
    commit_replacing(tmp, dir, is_checkpoint, "a gptlab checkpoint")
}

/// Whether `dir` is a directory with nothing in it.
pub fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// [`commit`] for outputs of another kind: an existing `dir` is replaced only when it is empty or
/// `replaceable` says it is an earlier output of that kind (`kind` names it in the error).
pub fn commit_replacing(tmp: &Path, dir: &Path, replaceable: impl Fn(&Path) -> bool, kind: &str) -> Result<()> {
    let old = sibling(dir, ".old");
    if dir.exists() {
        ensure!(
            is_empty_dir(dir) || replaceable(dir),
            "refusing to replace {}: it exists and is not {kind}",
            dir.display()
        );
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        std::fs::rename(dir, &old).with_context(|| format!("moving {} aside", dir.display()))?;
    }
    std::fs::rename(tmp, dir).with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fsync_dir(parent)?;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// The directory to read for checkpoint `dir`: itself, or `dir.old` when a save was interrupted
/// between its two renames.
pub fn resolve(dir: &Path) -> Result<PathBuf> {
    if dir.join(CONFIG_FILE).exists() {
        return Ok(dir.to_path_buf());
    }
    let old = sibling(dir, ".old");
    if !dir.exists() && old.join(CONFIG_FILE).exists() {
        crate::main_eprintln!(
            "warning: {} is missing; using {} left by an interrupted save",
            dir.display(),
            old.display()
        );
        return Ok(old);
    }
    if dir.exists() {
        bail!("checkpoint {} has no {CONFIG_FILE}: not a gptlab checkpoint", dir.display());
    }
    bail!("checkpoint {} does not exist", dir.display())
}

/// A model family's `config.json`: what a checkpoint needs to rebuild its variables.
pub trait ModelConfig: Serialize + DeserializeOwned {
    /// The tag in `config.json`.
    const FAMILY: &'static str;
    /// How messages name the family.
    const DISPLAY: &'static str;
    fn validate(&self) -> Result<()>;
}

impl ModelConfig for GptConfig {
    const FAMILY: &'static str = "gpt";
    const DISPLAY: &'static str = "GPT";
    fn validate(&self) -> Result<()> {
        GptConfig::validate(self)
    }
}

impl ModelConfig for crate::models::vlm::VlmConfig {
    const FAMILY: &'static str = "vlm";
    const DISPLAY: &'static str = "VLM";
    fn validate(&self) -> Result<()> {
        crate::models::vlm::VlmConfig::validate(self)
    }
}

impl ModelConfig for crate::models::finetuned::FinetunedConfig {
    const FAMILY: &'static str = FINETUNED;
    const DISPLAY: &'static str = "fine-tuned GPT";
    fn validate(&self) -> Result<()> {
        crate::models::finetuned::FinetunedConfig::validate(self)
    }
}

impl ModelConfig for crate::models::reward::RewardConfig {
    const FAMILY: &'static str = REWARD;
    const DISPLAY: &'static str = "reward model";
    fn validate(&self) -> Result<()> {
        crate::models::reward::RewardConfig::validate(self)
    }
}

/// GPT-1-style fine-tuned models and reward models: families that hold a whole GPT (their
/// config's `gpt`) beside heads of their own, so anything that takes a GPT checkpoint takes
/// these too, reading only the GPT's tensors (`transformer.*`, `lm_head.*`).
const FINETUNED: &str = "gpt-finetuned";
const REWARD: &str = "gpt-reward";
/// A PPO run: the policy GPT with its value model beside it.
const PPO: &str = "gpt-ppo";
const GPT_HOSTS: [&str; 3] = [FINETUNED, REWARD, PPO];

impl ModelConfig for crate::models::reward::PolicyValueConfig {
    const FAMILY: &'static str = PPO;
    const DISPLAY: &'static str = "PPO policy";
    fn validate(&self) -> Result<()> {
        crate::models::reward::PolicyValueConfig::validate(self)
    }
}

impl ModelConfig for ClipConfig {
    const FAMILY: &'static str = "clip";
    const DISPLAY: &'static str = "CLIP";
    fn validate(&self) -> Result<()> {
        ClipConfig::validate(self)
    }
}

/// A model a checkpoint can hold: its config type and how its variables are built.
pub trait Family: Sized {
    type Config: ModelConfig;
    /// Builds the model's variables under `p`.
    fn build(cfg: &Self::Config, p: nn::Path) -> Result<Self>;
    /// Rows of the token embedding a tokenizer's ids index.
    fn vocab_rows(&self) -> i64;
}

impl Family for Gpt {
    type Config = GptConfig;
    fn build(cfg: &GptConfig, p: nn::Path) -> Result<Self> {
        Gpt::new(cfg, p)
    }
    fn vocab_rows(&self) -> i64 {
        self.cfg.vocab_size
    }
}

impl Family for crate::models::vlm::Vlm {
    type Config = crate::models::vlm::VlmConfig;
    fn build(cfg: &Self::Config, p: nn::Path) -> Result<Self> {
        crate::models::vlm::Vlm::new(cfg, p)
    }
    fn vocab_rows(&self) -> i64 {
        self.cfg.text.vocab_size
    }
}

impl Family for crate::models::finetuned::FinetunedGpt {
    type Config = crate::models::finetuned::FinetunedConfig;
    fn build(cfg: &Self::Config, p: nn::Path) -> Result<Self> {
        crate::models::finetuned::FinetunedGpt::new(cfg, p)
    }
    fn vocab_rows(&self) -> i64 {
        self.cfg.gpt.vocab_size
    }
}

impl Family for crate::models::reward::RewardModel {
    type Config = crate::models::reward::RewardConfig;
    fn build(cfg: &Self::Config, p: nn::Path) -> Result<Self> {
        crate::models::reward::RewardModel::new(cfg, p)
    }
    fn vocab_rows(&self) -> i64 {
        self.cfg.gpt.vocab_size
    }
}

impl Family for Clip {
    type Config = ClipConfig;
    fn build(cfg: &ClipConfig, p: nn::Path) -> Result<Self> {
        Clip::new(cfg, p)
    }
    fn vocab_rows(&self) -> i64 {
        self.cfg.text.vocab_size
    }
}

/// Display names of the families a `config.json` tag may hold.
fn display_name(family: &str) -> &str {
    match family {
        "gpt" => GptConfig::DISPLAY,
        "clip" => ClipConfig::DISPLAY,
        "vlm" => crate::models::vlm::VlmConfig::DISPLAY,
        FINETUNED => crate::models::finetuned::FinetunedConfig::DISPLAY,
        REWARD => crate::models::reward::RewardConfig::DISPLAY,
        PPO => crate::models::reward::PolicyValueConfig::DISPLAY,
        other => other,
    }
}

/// The family tag of a `config.json`. Checkpoints written before the tag existed are told apart
/// by their fields (only CLIP's config has `vision`).
fn family_of(config: &Value) -> &str {
    match config.get("family").and_then(Value::as_str) {
        Some(f) => f,
        None if config.get("vision").is_some() => "clip",
        None => "gpt",
    }
}

/// The model family a checkpoint holds ("gpt", "clip", "vlm"), for commands that take any.
pub fn family(dir: &Path) -> Result<String> {
    Ok(family_of(&read_config_json(&resolve(dir)?)?).to_string())
}

fn read_config_json(dir: &Path) -> Result<Value> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("checkpoint config {} is invalid (not JSON)", path.display()))
}

/// Whether `dir` holds a gptlab checkpoint of any model family: the only kind of directory a
/// save may replace.
pub fn is_checkpoint(dir: &Path) -> bool {
    dir.join(MODEL_FILE).is_file()
        && read_config_json(dir).is_ok_and(|v| match family_of(&v) {
            "gpt" => parse_config::<GptConfig>(v, dir).is_ok(),
            "clip" => parse_config::<ClipConfig>(v, dir).is_ok(),
            "vlm" => parse_config::<crate::models::vlm::VlmConfig>(v, dir).is_ok(),
            FINETUNED => parse_config::<crate::models::finetuned::FinetunedConfig>(v, dir).is_ok(),
            REWARD => parse_config::<crate::models::reward::RewardConfig>(v, dir).is_ok(),
            PPO => parse_config::<crate::models::reward::PolicyValueConfig>(v, dir).is_ok(),
            _ => false,
        })
}

/// Reads a checkpoint's config as family `C`; a checkpoint of another family is a one-line
/// error naming both.
pub fn read_config<C: ModelConfig>(dir: &Path) -> Result<C> {
    parse_config(read_config_json(dir)?, dir)
}

fn parse_config<C: ModelConfig>(mut v: Value, dir: &Path) -> Result<C> {
    let mut family = family_of(&v).to_string();
    if GPT_HOSTS.contains(&family.as_str()) && C::FAMILY == GptConfig::FAMILY {
        v = v.get("gpt").cloned().unwrap_or(Value::Null);
        family = C::FAMILY.to_string();
    }
    ensure!(
        family == C::FAMILY,
        "{} is a {} checkpoint, not a {} checkpoint",
        dir.display(),
        display_name(&family),
        C::DISPLAY
    );
    if let Some(obj) = v.as_object_mut() {
        obj.remove("family");
    }
    let path = dir.join(CONFIG_FILE);
    let cfg: C =
        serde_json::from_value(v).with_context(|| format!("checkpoint config {} is invalid", path.display()))?;
    cfg.validate().with_context(|| format!("checkpoint config {}", path.display()))?;
    Ok(cfg)
}

/// Reads a safetensors file, turning I/O and format failures into one-line errors.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    ensure!(path.exists(), "{} is missing", path.display());
    Tensor::read_safetensors(path).map_err(|e| anyhow::anyhow!("{} is corrupt or truncated ({e})", path.display()))
}

/// Copies `tensors` into the variables of `vs`, requiring the same names and shapes.
pub fn fill(vs: &VarStore, tensors: Vec<(String, Tensor)>, source: &Path) -> Result<()> {
    fill_under(vs, tensors, source, "")
}

/// Copies `tensors` into the variables of `vs` whose names start with `under`: every one of
/// them must be given, with its shape, and every tensor must land somewhere.
fn fill_under(vs: &VarStore, tensors: Vec<(String, Tensor)>, source: &Path, under: &str) -> Result<()> {
    let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(n, _)| n.starts_with(under)).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, mut var) in vars {
        let Some(t) = by_name.remove(&name) else {
            bail!("{} lacks tensor {name} that the config requires", source.display())
        };
        ensure!(
            t.size() == var.size(),
            "{}: tensor {name} has shape {:?} but the config requires {:?}",
            source.display(),
            t.size(),
            var.size()
        );
        tch::no_grad(|| var.copy_(&t));
    }
    if let Some(extra) = by_name.keys().next() {
        bail!("{} has tensor {extra}, which the config does not define", source.display());
    }
    Ok(())
}

/// Fills part of a model from a checkpoint: the checkpoint's tensors named `from*` go to the
/// variables of `vs` named `to*` (the rest of the name kept), e.g. a GPT's `transformer.` as a
/// VLM's `language_model.transformer.`. Every variable under `to` must be filled; the
/// checkpoint's other tensors are left out. Returns how many tensors were copied.
pub fn load_prefixed(vs: &VarStore, dir: &Path, from: &str, to: &str) -> Result<usize> {
    let dir = resolve(dir)?;
    let file = dir.join(MODEL_FILE);
    let tensors: Vec<(String, Tensor)> = read_tensors(&file)?
        .into_iter()
        .filter_map(|(name, t)| name.strip_prefix(from).map(|rest| (format!("{to}{rest}"), t)))
        .collect();
    ensure!(!tensors.is_empty(), "{} has no tensor under {from:?}", file.display());
    let n = tensors.len();
    fill_under(vs, tensors, &file, to)?;
    Ok(n)
}

/// A model loaded from a checkpoint, ready to run.
pub struct Loaded<M> {
    pub dir: PathBuf,
    pub vs: VarStore,
    pub model: M,
}

/// Training pads a GPT's embedding rows up to a multiple of this (faster matmuls).
pub const VOCAB_PADDING: i64 = 64;

impl<M: Family> Loaded<M> {
    /// The checkpoint's tokenizer, which only text input needs: an HF model imported without
    /// one still scores and embeds token ids. A tokenizer with more ids than the model has rows,
    /// or with a whole padding multiple fewer, is not the one the model was trained with.
    pub fn tokenizer(&self) -> Result<crate::tokenizer::Tokenizer> {
        let path = self.dir.join(TOKENIZER_FILE);
        ensure!(
            path.exists(),
            "{} has no {TOKENIZER_FILE}: give token ids ({{\"tokens\": [...]}}) instead of text",
            self.dir.display()
        );
        let tok = crate::tokenizer::Tokenizer::from_file(&path)?;
        let (n, rows) = (tok.vocab_size() as i64, self.model.vocab_rows());
        ensure!(
            n <= rows && rows - n < VOCAB_PADDING,
            "{}: the tokenizer does not belong to this model ({n} tokens for {rows} embedding rows)",
            path.display()
        );
        Ok(tok)
    }
}

/// Loads a model of family `M` from checkpoint `dir` (or the `.old` an interrupted save left).
pub fn load<M: Family>(dir: &Path, device: Device) -> Result<Loaded<M>> {
    let dir = resolve(dir)?;
    let cfg: M::Config = read_config(&dir)?;
    let vs = VarStore::new(device);
    let model = M::build(&cfg, vs.root())?;
    let file = dir.join(MODEL_FILE);
    let mut tensors = read_tensors(&file)?;
    check_finite(&tensors, &file)?;
    if M::Config::FAMILY == GptConfig::FAMILY && GPT_HOSTS.contains(&family(&dir)?.as_str()) {
        tensors.retain(|(name, _)| name.starts_with("transformer.") || name.starts_with("lm_head."));
    }
    fill(&vs, tensors, &file)?;
    Ok(Loaded { dir, vs, model })
}

/// Refuses weights holding NaN or infinity, naming the first such tensor: they would load and
/// then score `null` or sample nonsense with exit 0.
fn check_finite(tensors: &[(String, Tensor)], file: &Path) -> Result<()> {
    let mut names: Vec<&(String, Tensor)> = tensors.iter().filter(|(_, t)| t.is_floating_point()).collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in names {
        ensure!(
            t.isfinite().all().int64_value(&[]) == 1,
            "{}: tensor {name} holds NaN or infinite values",
            file.display()
        );
    }
    Ok(())
}

/// A checkpoint's `state.json`: the training state its trainer saved.
pub fn read_state<S: DeserializeOwned>(dir: &Path) -> Result<S> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is invalid", path.display()))
}
