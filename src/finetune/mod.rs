//! `gptlab finetune --config FILE.toml [--resume]`: GPT-1's supervised fine-tuning (section
//! 3.2) through the shared [`Trainer`]. A pretrained GPT gets the `start`, `delim` and `extract`
//! tokens (fresh embedding rows), one linear head per task on the `extract` state, and trains on
//! `L = L_task + lm_coef * L_LM` (GPT-1: 0.5; 0 turns the auxiliary LM loss off).
//!
//! One task gives GPT-1's paradigm (a model per task). Several tasks give the multitask one: a
//! shared model whose input names its task with a token of its own after `start`
//! (`finetune.task_tokens`, on by default with more than one task), a head per task, and batches
//! of one task at a time, shuffled together.
//!
//! GPT-1's recipe is the default, scaled to small models: 3 epochs, batch 32, linear warmup over
//! 0.2% of the steps then decay to 0 (cosine here, linear in GPT-1), head dropout 0.1, weight
//! decay 0.01, and a learning rate a quarter of the one the model was pretrained with (GPT-1:
//! 6.25e-5 after 2.5e-4; 6.25e-5 when the checkpoint does not say). Any `[train]` key given
//! replaces the derived value.
//!
//! When training ends, every task's held-out records are scored and written in lm-eval's shape:
//! `eval/results.json` (`acc,none`, `acc_stderr,none`, `ece,none`), `eval/samples_<task>.jsonl`
//! and a reliability diagram per task (`eval/reliability_<task>.png`).

pub mod data;
pub mod paradigms;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tch::Device;

use crate::checkpoint;
use crate::data::sampler::batch_range;
use crate::dist::{self, ProcessGroup};
use crate::eval::metrics as m;
use crate::models::finetuned::{FinetunedConfig, FinetunedGpt, HeadSpec, TaskType};
use crate::models::gpt::GptConfig;
use crate::special;
use crate::synth::labelled;
use crate::tokenizer::Tokenizer;
use crate::train::optim::AdamWConfig;
use crate::train::trainer::{Evaluate, MicroLoss, RunParts, Setup, Trainer, ValMetrics};
use crate::train::{epoch_section, pretraining_lr, EpochRecipe, TrainSection, TrainSummary};
use data::{Layout, Specials, TaskData, TooLong};

/// One task to fine-tune on: a built-in labelled task (by name alone) or records of the user's.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The head's name; a built-in task's name (`scene_entailment`, `review_sentiment`,
    /// `scene_paraphrase`, `scene_qa`) selects its generated records when `train` is absent.
    pub name: String,
    /// `classification`, `entailment`, `similarity` or `multiple_choice` (built-ins know theirs).
    #[serde(rename = "type", default)]
    pub task_type: Option<TaskType>,
    /// Training records (JSONL, one format per type; see [`data`]).
    #[serde(default)]
    pub train: Option<PathBuf>,
    /// Held-out records: validation during training.
    #[serde(default)]
    pub val: Option<PathBuf>,
    /// Records the final accuracy is reported on (default: `val`).
    #[serde(default)]
    pub test: Option<PathBuf>,
    /// Class names, in label order (classification, entailment, similarity).
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// Train on the first N training records only (a built-in generates N; default 1000).
    #[serde(default)]
    pub train_examples: Option<usize>,
}

/// GPT-1's fine-tuning settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneSection {
    /// lambda in L = L_task + lambda * L_LM.
    pub lm_coef: f64,
    pub head_dropout: f64,
    /// Passes over the training records; gives `train.max_steps` unless that is set.
    pub epochs: f64,
    /// Share of the steps the learning rate warms up over.
    pub warmup_fraction: f64,
    pub too_long: TooLong,
    /// A token per task after `start` (default: on when there are several tasks).
    pub task_tokens: Option<bool>,
    /// Records a built-in task validates on (each epoch).
    pub val_examples: usize,
    /// Records a built-in task's final accuracy is reported on.
    pub test_examples: usize,
}

impl Default for FinetuneSection {
    fn default() -> Self {
        Self {
            lm_coef: 0.5,
            head_dropout: 0.1,
            epochs: 3.0,
            warmup_fraction: 0.002,
            too_long: TooLong::Error,
            task_tokens: None,
            val_examples: 200,
            test_examples: 300,
        }
    }
}

/// A fine-tuning run as the user writes it; `[train]` keys left out are derived (see the module
/// doc) and the resolved [`FinetuneConfig`] is written next to the outputs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneFile {
    pub out_dir: PathBuf,
    /// The pretrained GPT checkpoint.
    pub init: PathBuf,
    pub tasks: Vec<TaskSpec>,
    #[serde(default)]
    pub finetune: FinetuneSection,
    #[serde(default)]
    pub train: toml::Table,
    /// AdamW settings; `weight_decay` defaults to GPT-1's 0.01 here.
    #[serde(default)]
    pub optim: toml::Table,
}

/// The resolved run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinetuneConfig {
    pub out_dir: PathBuf,
    pub init: PathBuf,
    pub tasks: Vec<TaskSpec>,
    pub finetune: FinetuneSection,
    pub train: TrainSection,
    pub optim: AdamWConfig,
}

impl FinetuneFile {
    pub fn from_file(path: &Path) -> Result<Self> {
        let file: Self = crate::config::read_toml(path)?;
        file.validate().with_context(|| format!("config {}", path.display()))?;
        Ok(file)
    }

    fn validate(&self) -> Result<()> {
        let f = &self.finetune;
        ensure!(!self.tasks.is_empty(), "give at least one [[tasks]]");
        ensure!(f.lm_coef.is_finite() && f.lm_coef >= 0.0, "finetune.lm_coef must be >= 0, got {}", f.lm_coef);
        ensure!((0.0..1.0).contains(&f.head_dropout), "finetune.head_dropout must be in [0, 1)");
        EpochRecipe::check("finetune", f.epochs, f.warmup_fraction)?;
        ensure!(f.val_examples > 0 && f.test_examples > 0, "finetune.val_examples and test_examples must be positive");
        for (i, t) in self.tasks.iter().enumerate() {
            ensure!(
                !t.name.is_empty() && t.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "task name {:?} must be letters, digits, '_' or '-'",
                t.name
            );
            ensure!(!self.tasks[..i].iter().any(|o| o.name == t.name), "task {:?} is listed twice", t.name);
            ensure!(t.train_examples != Some(0), "task {:?}: train_examples must be positive", t.name);
            ensure!(
                t.train.is_some() || (t.val.is_none() && t.test.is_none()),
                "task {:?}: val and test records need train records too (a built-in task generates all three)",
                t.name
            );
        }
        Ok(())
    }

    /// The `[optim]` section: the user's keys over AdamW's defaults, with GPT-1's weight decay.
    fn resolve_optim(&self) -> Result<AdamWConfig> {
        let mut t = self.optim.clone();
        t.entry("weight_decay".to_string()).or_insert(0.01.into());
        let optim: AdamWConfig = toml::Value::Table(t)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("[optim]: {}", e.message()))?;
        optim.validate()?;
        Ok(optim)
    }
}

/// A task's records, checked against its spec: training, validation and test.
struct TaskRecords {
    spec: HeadSpec,
    train: Vec<Value>,
    val: Vec<Value>,
    test: Vec<Value>,
    sources: [String; 3],
}

fn read_records(path: &Path) -> Result<Vec<Value>> {
    let records = crate::jsonl::read_jsonl(path)?;
    ensure!(!records.is_empty(), "{} holds no records", path.display());
    Ok(records)
}

/// Resolves a task: a built-in's generated records, or the user's files and declared type.
fn task_records(t: &TaskSpec, f: &FinetuneSection) -> Result<TaskRecords> {
    let builtin = labelled::task_type(&t.name).filter(|_| t.train.is_none());
    let (task_type, classes, train, val, test, sources) = match builtin {
        Some((type_name, classes)) => {
            let task_type = TaskType::ALL.into_iter().find(|k| k.name() == type_name).context("built-in task type")?;
            if let Some(declared) = t.task_type {
                ensure!(declared == task_type, "built-in task {} is {}, not {}", t.name, type_name, declared.name());
            }
            let n = t.train_examples.unwrap_or(1000);
            let name = &t.name;
            (
                task_type,
                t.classes.clone().unwrap_or_else(|| classes.iter().map(|c| c.to_string()).collect()),
                labelled::records(name, "train", n)?,
                labelled::records(name, "val", f.val_examples)?,
                labelled::records(name, "test", f.test_examples)?,
                ["train", "val", "test"].map(|s| format!("built-in {name} {s}")),
            )
        }
        None => {
            let task_type = t.task_type.with_context(|| {
                format!(
                    "task {:?}: give its type (classification, entailment, similarity, multiple_choice) and its \
                     train and val records, or name a built-in task ({})",
                    t.name,
                    labelled::TASKS.iter().map(|x| x.0).collect::<Vec<_>>().join(", ")
                )
            })?;
            let train_path = t.train.as_ref().with_context(|| format!("task {:?}: give train records", t.name))?;
            let val_path = t.val.as_ref().with_context(|| format!("task {:?}: give val records", t.name))?;
            let test_path = t.test.as_ref().unwrap_or(val_path);
            let mut train = read_records(train_path)?;
            if let Some(n) = t.train_examples {
                train.truncate(n);
            }
            let classes = match (task_type, &t.classes) {
                (TaskType::MultipleChoice, _) => Vec::new(),
                (_, Some(c)) => c.clone(),
                (_, None) => bail!("task {:?}: a {} task needs classes = [...]", t.name, task_type.name()),
            };
            (
                task_type,
                classes,
                train,
                read_records(val_path)?,
                read_records(test_path)?,
                [train_path, val_path, test_path].map(|p| p.display().to_string()),
            )
        }
    };
    ensure!(!train.is_empty(), "task {:?}: no training records", t.name);
    let choices = match task_type {
        TaskType::MultipleChoice => match train[0].get("choices") {
            Some(Value::Array(c)) => c.len(),
            _ => bail!("{} record 1 lacks a \"choices\" list", sources[0]),
        },
        _ => 0,
    };
    ensure!(
        task_type == TaskType::MultipleChoice || classes.len() >= 2,
        "task {:?}: needs at least two classes, got {classes:?}",
        t.name
    );
    ensure!(task_type != TaskType::MultipleChoice || choices >= 2, "task {:?}: needs at least two choices", t.name);
    let spec = HeadSpec { name: t.name.clone(), task_type, classes, choices, task_token: None };
    Ok(TaskRecords { spec, train, val, test, sources })
}

/// The token a multitask model names task `name` with.
pub fn task_token(name: &str) -> String {
    format!("<|task:{name}|>")
}

/// The init checkpoint's tokenizer with GPT-1's tokens (and task tokens) added, and the decoder
/// config with room for them: the padding rows when they suffice, else more rows.
fn extend_vocab(init: &Path, tokens: &[String]) -> Result<(Tokenizer, GptConfig, usize)> {
    let mut gpt: GptConfig = checkpoint::read_config(init)?;
    let mut tok = Tokenizer::from_file(&init.join(checkpoint::TOKENIZER_FILE))
        .with_context(|| format!("the GPT checkpoint {} needs its tokenizer", init.display()))?;
    let old = tok.vocab_size();
    let rows = gpt.vocab_size;
    ensure!(
        old as i64 <= rows && rows - (old as i64) < checkpoint::VOCAB_PADDING,
        "{}: the tokenizer does not belong to this model ({old} tokens for {rows} embedding rows)",
        init.display()
    );
    for t in tokens {
        ensure!(tok.token_to_id(t).is_none(), "the checkpoint's tokenizer already has {t}: give a pretrained GPT");
    }
    tok.add_special_tokens(tokens);
    let pad = checkpoint::VOCAB_PADDING;
    let needed = tok.vocab_size() as i64;
    if needed > gpt.vocab_size {
        gpt.vocab_size = (needed + pad - 1) / pad * pad;
    }
    Ok((tok, gpt, old))
}

/// Copies the pretrained decoder into `vs`: every tensor by name, except that embedding rows
/// from `fresh_from` on (the added tokens, and any new padding) keep their fresh init.
fn load_pretrained(vs: &tch::nn::VarStore, init: &Path, fresh_from: usize) -> Result<()> {
    let file = init.join(checkpoint::MODEL_FILE);
    let tensors = checkpoint::read_tensors(&file)?;
    let mut vars = vs.variables();
    vars.retain(|name, _| !name.starts_with("heads."));
    for (name, t) in tensors {
        if name.starts_with("heads.") {
            continue;
        }
        let mut var = vars.remove(&name).with_context(|| format!("{}: unexpected tensor {name}", file.display()))?;
        tch::no_grad(|| -> Result<()> {
            if name.ends_with("wte.weight") || name == "lm_head.weight" {
                let rows = fresh_from as i64;
                var.narrow(0, 0, rows).copy_(&t.narrow(0, 0, rows));
            } else {
                ensure!(t.size() == var.size(), "{}: tensor {name} has shape {:?}", file.display(), t.size());
                var.copy_(&t);
            }
            Ok(())
        })?;
    }
    if let Some(missing) = vars.keys().next() {
        bail!("{} lacks tensor {missing} of the decoder", file.display());
    }
    Ok(())
}

/// The objective: GPT-1's loss on batches of one task at a time.
struct Finetune {
    model: FinetunedGpt,
    train: Vec<TaskData>,
    val: Vec<TaskData>,
    lm_coef: f64,
    batch_size: usize,
    pad: i64,
    device: Device,
    dist: Option<Arc<ProcessGroup>>,
}

/// An epoch's batches: (task, indices of its examples).
type Plan = Vec<(usize, Vec<usize>)>;

/// The batches of one epoch: each task's examples in a seeded order, cut into batches, and the
/// batches of all tasks shuffled together.
fn epoch_plan(sizes: &[usize], b: usize, seed: u64, epoch: u64) -> Plan {
    let mut plan = Vec::new();
    for (task, &n) in sizes.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch * 1024 + task as u64 + 1);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        plan.extend(order.chunks(b).map(|c| (task, c.to_vec())));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch * 1024);
    plan.shuffle(&mut rng);
    plan
}

/// Scores of one task's examples: the predicted answer's probability and the label.
struct Scored {
    probs: Vec<Vec<f64>>,
    labels: Vec<i64>,
}

impl Finetune {
    /// The summed task loss and the class probabilities of examples `idx` of `data`.
    fn batch_scores(&self, data: &TaskData, idx: &[usize]) -> Result<(f64, Vec<Vec<f64>>)> {
        let batch = data.batch(idx, self.pad, self.device);
        let out = tch::no_grad(|| self.model.losses(&batch, false, false))?;
        let p = out.logits.softmax(-1, tch::Kind::Double).to_device(Device::Cpu);
        let k = p.size()[1] as usize;
        let flat = Vec::<f64>::try_from(p.reshape([-1]))?;
        Ok((out.task.double_value(&[]) * idx.len() as f64, flat.chunks(k).map(|c| c.to_vec()).collect()))
    }

    /// Every example of `data` scored, in order (the test set's results).
    fn score(&self, data: &TaskData) -> Result<Scored> {
        let mut probs = Vec::new();
        let n = data.examples.len();
        for k in 0..n.div_ceil(self.batch_size) {
            probs.extend(self.batch_scores(data, &batch_range(n, self.batch_size, k).collect::<Vec<_>>())?.1);
        }
        let labels = data.examples.iter().map(|e| e.label).collect();
        Ok(Scored { probs, labels })
    }
}

impl Scored {
    fn right(&self) -> Vec<f64> {
        self.probs.iter().zip(&self.labels).map(|(p, &l)| (m::argmax(p) == l as usize) as u8 as f64).collect()
    }

    fn calibration(&self) -> Vec<(f64, bool)> {
        self.probs.iter().zip(&self.labels).map(|(p, &l)| (p[m::argmax(p)], m::argmax(p) == l as usize)).collect()
    }
}

impl Evaluate for Finetune {
    /// Loss and accuracy per task (and their means over the tasks), each task's batches shared
    /// among the ranks.
    fn validate(&mut self) -> Result<ValMetrics> {
        let mut metrics = ValMetrics::new();
        let (mut loss, mut acc) = (0.0, 0.0);
        for data in &self.val {
            let n = data.examples.len();
            let sums = dist::sum_over_shards(self.dist.as_deref(), n.div_ceil(self.batch_size), 2, |k| {
                let idx: Vec<usize> = batch_range(n, self.batch_size, k).collect();
                let (l, probs) = self.batch_scores(data, &idx)?;
                let right = probs.iter().zip(&idx).filter(|(p, &i)| m::argmax(p) == data.examples[i].label as usize);
                Ok(vec![l, right.count() as f64])
            })?;
            let n = n.max(1) as f64;
            let a = sums[1] / n;
            loss += sums[0] / n;
            acc += a;
            if self.val.len() > 1 {
                metrics.insert(format!("val_acc_{}", self.model.cfg.heads[data.head].name), a);
            }
        }
        let tasks = self.val.len() as f64;
        metrics.insert("val_loss".into(), loss / tasks);
        metrics.insert("val_acc".into(), acc / tasks);
        Ok(metrics)
    }
}

/// What `gptlab finetune` reports: training, and accuracy per task on its test records.
#[derive(Debug, Serialize)]
pub struct FinetuneSummary {
    pub train: TrainSummary,
    /// (task, accuracy, its standard error, ECE, test records).
    pub tasks: Vec<(String, f64, f64, f64, usize)>,
    pub params_trained: i64,
    pub labelled_examples: usize,
    pub results: PathBuf,
}

/// Fine-tunes per `file`; with `resume`, continues from `out_dir/checkpoint` exactly.
pub fn finetune(file: &FinetuneFile, resume: bool) -> Result<FinetuneSummary> {
    let f = &file.finetune;
    let mut tasks = file.tasks.iter().map(|t| task_records(t, f)).collect::<Result<Vec<_>>>()?;
    let multitask = f.task_tokens.unwrap_or(tasks.len() > 1);
    let init = checkpoint::resolve(&file.init)?;
    let recipe = EpochRecipe {
        epochs: f.epochs,
        warmup_fraction: f.warmup_fraction,
        lr: pretraining_lr(&init).map_or(6.25e-5, |lr| lr * 0.25),
        batch_size: 32,
    };
    let batches = |b: usize| -> u64 { tasks.iter().map(|t| t.train.len().div_ceil(b) as u64).sum() };
    let section = epoch_section(&file.train, &recipe, batches)?;
    let batches_per_epoch = batches(section.batch_size);
    let cfg = FinetuneConfig {
        out_dir: file.out_dir.clone(),
        init: file.init.clone(),
        tasks: file.tasks.clone(),
        finetune: FinetuneSection { task_tokens: Some(multitask), ..f.clone() },
        train: section.clone(),
        optim: file.resolve_optim()?,
    };
    let mut added = vec![special::START.to_string(), special::DELIM.to_string(), special::EXTRACT.to_string()];
    if multitask {
        added.extend(tasks.iter().map(|t| task_token(&t.spec.name)));
    }
    // A fresh run's init is checked before the output directory is touched.
    let mut fresh = if resume { None } else { Some(extend_vocab(&init, &added)?) };
    let setup = Setup::begin(&section, &cfg.out_dir, resume, &cfg)?;
    let (tok, model_cfg) = match setup.resumed.as_deref() {
        Some(dir) => {
            let c: FinetunedConfig = checkpoint::read_config(dir)?;
            let names: Vec<&str> = c.heads.iter().map(|h| h.name.as_str()).collect();
            let want: Vec<&str> = tasks.iter().map(|t| t.spec.name.as_str()).collect();
            ensure!(names == want, "{} fine-tunes tasks {names:?}; the config lists {want:?}", dir.display());
            (Tokenizer::from_file(&dir.join(checkpoint::TOKENIZER_FILE))?, c)
        }
        None => {
            let (tok, gpt, _) = fresh.take().context("a fresh run's vocabulary")?;
            let id = |t: &str| tok.token_to_id(t).map(i64::from).context("added token");
            let mut heads = Vec::new();
            for t in &tasks {
                let task_token = if multitask { Some(id(&task_token(&t.spec.name))?) } else { None };
                heads.push(HeadSpec { task_token, ..t.spec.clone() });
            }
            let c = FinetunedConfig {
                gpt,
                start_token: id(special::START)?,
                delim_token: id(special::DELIM)?,
                extract_token: id(special::EXTRACT)?,
                heads,
            };
            (tok, c)
        }
    };
    for (t, h) in tasks.iter_mut().zip(&model_cfg.heads) {
        t.spec = h.clone();
    }
    let mut model = FinetunedGpt::new(&model_cfg, setup.vs.root())?;
    model.head_dropout = f.head_dropout;
    model.gpt.set_compute_kind(setup.kind);
    if setup.resumed.is_none() {
        let first_added = tok.token_to_id(special::START).context("start token")? as usize;
        load_pretrained(&setup.vs, &init, first_added)?;
    }
    let layout = Layout {
        specials: Specials {
            start: model_cfg.start_token,
            delim: model_cfg.delim_token,
            extract: model_cfg.extract_token,
            pad: tok.pad() as i64,
        },
        block: model_cfg.gpt.block_size as usize,
        too_long: f.too_long,
    };
    let encode = |split: usize| -> Result<Vec<TaskData>> {
        tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let records = [&t.train, &t.val, &t.test][split];
                layout.encode(i, &t.spec, records, &tok, &t.sources[split])
            })
            .collect()
    };
    let (train, val, test) = (encode(0)?, encode(1)?, encode(2)?);
    for (t, d) in tasks.iter().zip(&train) {
        if d.truncated > 0 {
            crate::main_eprintln!(
                "warning: task {}: {} training examples were cut to the context",
                t.spec.name,
                d.truncated
            );
        }
    }
    let tok_path = cfg.out_dir.join(checkpoint::TOKENIZER_FILE);
    if dist::is_main_process() {
        tok.save(&tok_path)?;
    }
    // What the optimizer will change: every variable but those of frozen groups (first match wins).
    let frozen = |name: &str| section.groups.iter().find(|g| name.starts_with(&g.prefix)).is_some_and(|g| g.frozen);
    let params_trained: i64 =
        setup.vs.variables().iter().filter(|(n, _)| !frozen(n)).map(|(_, v)| v.numel() as i64).sum();
    let labelled_examples = train.iter().map(|d| d.examples.len()).sum();
    crate::main_eprintln!(
        "[finetune] {} task(s), {labelled_examples} labelled examples, {} steps ({batches_per_epoch} batches per epoch), lr {:.3e}, lm_coef {}",
        tasks.len(),
        section.max_steps,
        section.lr,
        f.lm_coef
    );
    let trainer = Trainer::new(
        setup,
        RunParts {
            model_config: &model_cfg,
            tokenizer: Some(tok_path),
            optim: cfg.optim.clone(),
            unit: "examples",
            units_per_step: section.examples_per_step(),
            baseline: None,
        },
    )?;
    let device = trainer.device();
    let mut objective = Finetune {
        model,
        train,
        val,
        lm_coef: f.lm_coef,
        batch_size: section.batch_size,
        pad: tok.pad() as i64,
        device,
        dist: trainer.group(),
    };
    let summary = run_loop(trainer, &mut objective, batches_per_epoch)?;
    let results = cfg.out_dir.join("eval").join("results.json");
    if !dist::is_main_process() {
        // Rank 0 scores the test records and writes the results.
        return Ok(FinetuneSummary { train: summary, tasks: Vec::new(), params_trained, labelled_examples, results });
    }
    let scores = test.iter().map(|d| objective.score(d)).collect::<Result<Vec<_>>>()?;
    let results = write_results(&cfg, &objective.model.cfg, &scores, params_trained, labelled_examples)?;
    let tasks = objective
        .model
        .cfg
        .heads
        .iter()
        .zip(&scores)
        .map(|(h, s)| {
            let right = s.right();
            (
                h.name.clone(),
                m::mean(&right),
                m::mean_stderr(&right).unwrap_or(0.0),
                m::ece(&s.calibration(), 10),
                right.len(),
            )
        })
        .collect();
    Ok(FinetuneSummary { train: summary, tasks, params_trained, labelled_examples, results })
}

/// The loop over epoch plans; micro-batch `g` of the run is batch `g % batches_per_epoch` of
/// epoch `g / batches_per_epoch`, so a resumed run continues the same sequence.
fn run_loop(mut trainer: Trainer, obj: &mut Finetune, batches_per_epoch: u64) -> Result<TrainSummary> {
    let seed = trainer.state.sampler.seed;
    let sizes: Vec<usize> = obj.train.iter().map(|d| d.examples.len()).collect();
    let mut plan: Option<(u64, Plan)> = None;
    let gpt_cfg = obj.model.cfg.gpt.clone();
    let rank = trainer.rank_world();
    while !trainer.is_done() {
        let next = trainer.state.sampler.next_batch;
        trainer.step(|i| {
            let g = next + i as u64;
            let epoch = g / batches_per_epoch;
            if plan.as_ref().is_none_or(|(e, _)| *e != epoch) {
                plan = Some((epoch, epoch_plan(&sizes, obj.batch_size, seed, epoch)));
            }
            let (task, idx) = plan.as_ref().map(|(_, p)| &p[(g % batches_per_epoch) as usize]).context("epoch plan")?;
            let (mine, weight) = dist::rank_share(idx, rank);
            let batch = obj.train[*task].batch(&mine, obj.pad, obj.device);
            let flops = gpt_cfg.flops_per_token(batch.ids.size()[1]) * batch.positions as f64;
            let with_lm = obj.lm_coef > 0.0;
            let out = obj.model.losses(&batch, with_lm, true)?;
            let mut loss = MicroLoss::mean_of(out.task, mine.len() as f64, flops);
            if with_lm {
                // Each row's real positions but its last predict a token.
                let lm_terms = batch.positions - batch.ids.size()[0] as usize;
                loss = loss.plus(out.lm * obj.lm_coef, Some(lm_terms as f64));
            }
            Ok(loss.weighted(weight))
        })?;
        trainer.end_step(obj)?;
    }
    trainer.finish()
}

/// `eval/results.json` in lm-eval's keys and `eval/samples_<task>.jsonl`, written to a temporary
/// folder and renamed into place.
fn write_results(
    cfg: &FinetuneConfig,
    model: &FinetunedConfig,
    scores: &[Scored],
    params_trained: i64,
    labelled_examples: usize,
) -> Result<PathBuf> {
    let dir = cfg.out_dir.join("eval");
    let tmp = checkpoint::temp_sibling(&dir);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut results = Map::new();
    let mut n_samples = Map::new();
    for (h, s) in model.heads.iter().zip(scores) {
        let right = s.right();
        let cal = s.calibration();
        results.insert(
            h.name.clone(),
            json!({
                "alias": h.name,
                "acc,none": m::mean(&right),
                "acc_stderr,none": m::mean_stderr(&right).map_or(json!("N/A"), |x| json!(x)),
                "ece,none": m::ece(&cal, m::CALIBRATION_BINS),
                "ece_stderr,none": "N/A",
                "sample_len": right.len(),
            }),
        );
        n_samples.insert(h.name.clone(), json!({"original": right.len(), "effective": right.len()}));
        let samples: Vec<Value> = s
            .probs
            .iter()
            .zip(&s.labels)
            .enumerate()
            .map(|(i, (p, &l))| json!({"doc_id": i, "target": l, "pred": m::argmax(p), "probs": p, "acc": (m::argmax(p) == l as usize) as u8}))
            .collect();
        crate::jsonl::write_jsonl(&tmp.join(format!("samples_{}.jsonl", h.name)), &samples)?;
        crate::eval::results::reliability_diagram(
            &cal,
            &format!("{} fine-tuned", h.name),
            &tmp.join(format!("reliability_{}", h.name)),
        )?;
    }
    let doc = json!({
        "results": results,
        "n-shot": model.heads.iter().map(|h| (h.name.clone(), json!(0))).collect::<Map<_, _>>(),
        "n-samples": n_samples,
        "config": {
            "model": "gptlab-finetuned",
            "model_args": format!("ckpt={}", cfg.out_dir.join("checkpoint").display()),
            "init": cfg.init,
            "params_trained": params_trained,
            "labelled_examples": labelled_examples,
            "lm_coef": cfg.finetune.lm_coef,
        },
        "gptlab_version": env!("CARGO_PKG_VERSION"),
    });
    std::fs::write(tmp.join("results.json"), serde_json::to_string_pretty(&doc)? + "\n")?;
    checkpoint::commit_replacing(&tmp, &dir, |d| d.join("results.json").is_file(), "fine-tuning results")?;
    Ok(dir.join("results.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_plans_cover_every_example_once_and_are_seeded() {
        let plan = epoch_plan(&[10, 7], 4, 3, 0);
        assert_eq!(plan.len(), 3 + 2);
        for (task, n) in [(0, 10), (1, 7)] {
            let mut seen: Vec<usize> = plan.iter().filter(|p| p.0 == task).flat_map(|p| p.1.clone()).collect();
            seen.sort();
            assert_eq!(seen, (0..n).collect::<Vec<_>>());
        }
        assert_eq!(plan, epoch_plan(&[10, 7], 4, 3, 0));
        assert_ne!(plan, epoch_plan(&[10, 7], 4, 3, 1));
    }
}
