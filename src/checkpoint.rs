//! Checkpoints: a directory with `model.safetensors` (HF GPT-2 tensor names and layouts),
//! `config.json`, and for training runs `optimizer.safetensors`, `state.json` and the tokenizer.
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
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::data::sampler::SamplerState;
use crate::model::gpt::{Gpt, GptConfig};
use crate::train::schedule::LrSchedule;

pub const MODEL_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Where a training run stands; with the optimizer moments this is all that exact resume needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer updates done.
    pub step: u64,
    /// Progress in the run's unit: tokens for a GPT, image-text pairs for CLIP.
    pub units_seen: u64,
    pub sampler: SamplerState,
    /// Base of the per-step torch seed (dropout); see `train::step_seed`.
    pub torch_seed: i64,
    pub best_val_loss: Option<f64>,
    /// What the batch stream and schedule were, so a resume can refuse a run that would
    /// silently differ from a straight one.
    pub batch_size: usize,
    pub grad_accum: usize,
    pub schedule: LrSchedule,
}

/// What [`save`] writes besides the model.
pub struct TrainingParts<'a> {
    pub optimizer: Vec<(String, Tensor)>,
    pub state: &'a TrainState,
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    dir.with_file_name(name)
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

/// Writes a checkpoint to `dir` atomically (see the module docs).
pub fn save<C: Serialize>(
    dir: &Path,
    vs: &VarStore,
    cfg: &C,
    tokenizer: Option<&Path>,
    training: Option<TrainingParts>,
) -> Result<()> {
    let tmp = sibling(dir, ".tmp");
    write_files(&tmp, vs, cfg, tokenizer, training).with_context(|| format!("writing checkpoint {}", tmp.display()))?;
    commit(&tmp, dir)
}

fn write_files<C: Serialize>(
    tmp: &Path,
    vs: &VarStore,
    cfg: &C,
    tokenizer: Option<&Path>,
    training: Option<TrainingParts>,
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
    write_json(CONFIG_FILE, serde_json::to_string_pretty(cfg)?)?;
    if let Some(tok) = tokenizer {
        std::fs::copy(tok, tmp.join(TOKENIZER_FILE)).with_context(|| format!("copying {}", tok.display()))?;
    }
    if let Some(TrainingParts { optimizer, state }) = training {
        write_safetensors(&optimizer, &tmp.join(OPTIMIZER_FILE))?;
        write_json(STATE_FILE, serde_json::to_string_pretty(state)?)?;
    }
    for entry in std::fs::read_dir(tmp)? {
        File::open(entry?.path())?.sync_all()?;
    }
    fsync_dir(tmp)
}

/// The two renames that publish `tmp` as `dir`. Only a previous checkpoint is ever replaced:
/// any other directory at `dir` (an HF download, a home folder) is refused.
pub fn commit(tmp: &Path, dir: &Path) -> Result<()> {
    let old = sibling(dir, ".old");
    if dir.exists() {
        ensure!(is_checkpoint(dir), "refusing to replace {}: it exists and is not a gptlab checkpoint", dir.display());
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
        eprintln!("warning: {} is missing; using {} left by an interrupted save", dir.display(), old.display());
        return Ok(old);
    }
    if dir.exists() {
        bail!("checkpoint {} has no {CONFIG_FILE}: not a gptlab checkpoint", dir.display());
    }
    bail!("checkpoint {} does not exist", dir.display())
}

/// A model family's `config.json`: what a checkpoint needs to rebuild its variables.
pub trait ModelConfig: Serialize + DeserializeOwned {
    fn validate(&self) -> Result<()>;
}

impl ModelConfig for GptConfig {
    fn validate(&self) -> Result<()> {
        GptConfig::validate(self)
    }
}

impl ModelConfig for ClipConfig {
    fn validate(&self) -> Result<()> {
        ClipConfig::validate(self)
    }
}

/// Whether `dir` holds a gptlab checkpoint of any model family: the only kind of directory a
/// save may replace.
pub fn is_checkpoint(dir: &Path) -> bool {
    dir.join(MODEL_FILE).is_file() && (read_config::<GptConfig>(dir).is_ok() || read_config::<ClipConfig>(dir).is_ok())
}

pub fn read_config<C: ModelConfig>(dir: &Path) -> Result<C> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: C =
        serde_json::from_str(&text).with_context(|| format!("checkpoint config {} is invalid", path.display()))?;
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
    let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
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

/// A model loaded from a checkpoint, ready to run.
pub struct LoadedModel {
    pub dir: PathBuf,
    pub vs: VarStore,
    pub model: Gpt,
}

pub fn load_model(dir: &Path, device: Device) -> Result<LoadedModel> {
    let dir = resolve(dir)?;
    let cfg = read_config(&dir)?;
    let vs = VarStore::new(device);
    let model = Gpt::new(&cfg, vs.root())?;
    fill(&vs, read_tensors(&dir.join(MODEL_FILE))?, &dir.join(MODEL_FILE))?;
    Ok(LoadedModel { dir, vs, model })
}

/// A CLIP model loaded from a checkpoint.
pub struct LoadedClip {
    pub dir: PathBuf,
    pub vs: VarStore,
    pub model: Clip,
}

pub fn load_clip(dir: &Path, device: Device) -> Result<LoadedClip> {
    let dir = resolve(dir)?;
    let cfg: ClipConfig = read_config(&dir)?;
    let vs = VarStore::new(device);
    let model = Clip::new(&cfg, vs.root())?;
    fill(&vs, read_tensors(&dir.join(MODEL_FILE))?, &dir.join(MODEL_FILE))?;
    Ok(LoadedClip { dir, vs, model })
}

pub fn read_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is invalid", path.display()))
}
