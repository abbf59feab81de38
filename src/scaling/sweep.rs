//! `gptlab scaling sweep`: trains a grid of GPT shapes × token budgets, each run's LR schedule
//! decayed to its own budget, and gathers them into `runs.csv` and `runs.jsonl`.
//!
//! Each run is a child process (`gptlab scaling run --dir RUN`) with its share of the threads,
//! or the same command as a Ray task (`--executor ray`, through the generated `ray_sweep.py`),
//! writing `RUN/result.json` atomically when done. A run with a result is skipped on the next
//! sweep; one with a checkpoint but no result resumes from it.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};

use anyhow::{bail, ensure, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::RunRow;
use crate::checkpoint;
use crate::data::shards::ShardMeta;
use crate::eval::harness::{self, RunOptions};
use crate::eval::{builtin, model::EvalModel};
use crate::models::gpt::GptConfig;
use crate::synth::arithmetic::ArithFamily;
use crate::synth::{Mixture, SynthConfig};
use crate::train::{self, ModelSpec, TrainConfig, TrainSection};

/// `sweep.toml`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweepConfig {
    pub data: SweepData,
    pub grid: Grid,
    pub train: SweepTrain,
}

/// The corpus: token shards from `gptlab data tokenize`, or (by default) the synthetic corpus
/// generated into the sweep's `data/` folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweepData {
    pub shards: Option<PathBuf>,
    pub docs: usize,
    pub vocab_size: usize,
    pub seed: u64,
    /// Weights of the synthetic document kinds (scene, arithmetic, icl, instruct).
    pub mix: Mixture,
}

impl Default for SweepData {
    fn default() -> Self {
        SweepData { shards: None, docs: 20_000, vocab_size: 512, seed: 1337, mix: Mixture::default() }
    }
}

/// Shapes and budgets: every (width, depth) of `widths` × `depths` with every budget of
/// `tokens`, plus any explicit `runs`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grid {
    pub widths: Vec<i64>,
    pub depths: Vec<i64>,
    pub tokens: Vec<f64>,
    pub runs: Vec<GridRun>,
    /// n_head = n_embd / head_dim.
    pub head_dim: i64,
    pub block_size: i64,
}

impl Default for Grid {
    fn default() -> Self {
        Grid {
            widths: Vec::new(),
            depths: Vec::new(),
            tokens: Vec::new(),
            runs: Vec::new(),
            head_dim: 16,
            block_size: 64,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridRun {
    pub n_embd: i64,
    pub n_layer: i64,
    pub tokens: f64,
}

/// Training settings shared by every run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweepTrain {
    pub batch_size: usize,
    pub lr: f64,
    /// Warmup as a fraction of each run's steps.
    pub warmup_frac: f64,
    /// Validation points per run (the val-loss curve).
    pub evals: u64,
    pub eval_batches: u64,
    pub seed: u64,
    pub device: String,
    /// Held-out problems per arithmetic family for the capability law (0: skip it).
    pub capability_problems: usize,
}

impl Default for SweepTrain {
    fn default() -> Self {
        SweepTrain {
            batch_size: 16,
            lr: 2e-3,
            warmup_frac: 0.05,
            evals: 8,
            eval_batches: 8,
            seed: 1337,
            device: "auto".into(),
            capability_problems: 20,
        }
    }
}

impl SweepConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        crate::config::read_toml(path)
    }

    /// The token shards a sweep in `out` trains on: the configured ones, or the synthetic
    /// corpus it generates into `out/data`.
    pub fn shard_dir(&self, out: &Path) -> PathBuf {
        self.data.shards.clone().unwrap_or_else(|| out.join("data/shards"))
    }
}

/// One planned run.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub name: String,
    pub n_embd: i64,
    pub n_layer: i64,
    pub steps: u64,
}

/// The runs of a sweep, checked: every shape must split into heads, every budget must cover at
/// least one step.
pub fn plan(cfg: &SweepConfig) -> Result<Vec<Planned>> {
    let g = &cfg.grid;
    ensure!(g.head_dim > 0 && g.block_size > 0, "grid: head_dim and block_size must be positive");
    ensure!(cfg.train.batch_size > 0, "train: batch_size must be positive");
    let mut wanted: Vec<GridRun> = Vec::new();
    for &n_embd in &g.widths {
        for &n_layer in &g.depths {
            wanted.extend(g.tokens.iter().map(|&tokens| GridRun { n_embd, n_layer, tokens }));
        }
    }
    wanted.extend(g.runs.iter().cloned());
    ensure!(!wanted.is_empty(), "the sweep has no runs: give grid.widths, grid.depths and grid.tokens, or grid.runs");
    let per_step = (cfg.train.batch_size as i64 * g.block_size) as f64;
    let mut out: Vec<Planned> = Vec::new();
    for r in wanted {
        let name = format!("L{}-W{}-T{}", r.n_layer, r.n_embd, crate::plot::human(r.tokens));
        if r.n_embd <= 0 || r.n_layer <= 0 || r.n_embd % g.head_dim != 0 {
            bail!("run {name}: infeasible shape (n_embd {} must be a positive multiple of head_dim {}, n_layer {} positive)", r.n_embd, g.head_dim, r.n_layer);
        }
        if !(r.tokens.is_finite() && r.tokens >= per_step) {
            bail!("run {name}: a budget of {} tokens is less than one step ({per_step} tokens)", r.tokens);
        }
        ensure!(!out.iter().any(|p| p.name == name), "run {name} appears twice in the grid");
        out.push(Planned { name, n_embd: r.n_embd, n_layer: r.n_layer, steps: (r.tokens / per_step).round() as u64 });
    }
    Ok(out)
}

pub(crate) fn train_config(cfg: &SweepConfig, p: &Planned, shards: &Path, out_dir: PathBuf) -> TrainConfig {
    let t = &cfg.train;
    let evals = t.evals.max(1);
    TrainConfig {
        out_dir,
        data: shards.to_path_buf(),
        model: ModelSpec {
            preset: "nano".into(),
            n_layer: Some(p.n_layer),
            n_head: Some(p.n_embd / cfg.grid.head_dim),
            n_embd: Some(p.n_embd),
            block_size: Some(cfg.grid.block_size),
            dropout: Some(0.0),
            ..ModelSpec::default()
        },
        train: TrainSection {
            batch_size: t.batch_size,
            max_steps: p.steps,
            lr: t.lr,
            warmup_steps: ((p.steps as f64 * t.warmup_frac) as u64).max(1).min(p.steps),
            eval_interval: p.steps.div_ceil(evals).max(1),
            eval_batches: t.eval_batches,
            log_interval: p.steps.div_ceil(20).max(1),
            ckpt_interval: p.steps.div_ceil(4).max(1),
            seed: t.seed,
            device: t.device.clone(),
            ..TrainSection::default()
        },
        optim: Default::default(),
    }
}

/// What one finished run reports (`RUN/result.json`, one line of `runs.jsonl`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    #[serde(flatten)]
    pub row: RunRow,
    pub steps: u64,
    pub flops_per_token: f64,
    /// (tokens, val loss) at each evaluation.
    pub val_curve: Vec<(f64, f64)>,
    /// Arithmetic family → share of held-out problems answered exactly (greedy).
    pub pass_rates: BTreeMap<String, f64>,
    /// Arithmetic family → mean over its held-out problems of log P(the answer), the model's
    /// pass rate as GPT-4 reads it: defined while greedy accuracy is still 0.
    #[serde(default)]
    pub log_pass_rates: BTreeMap<String, f64>,
    pub elapsed_s: f64,
}

const RESULT_FILE: &str = "result.json";

/// Where a sweep's runs train.
#[derive(Clone, Debug, PartialEq)]
pub enum Executor {
    /// Child processes on this machine, `jobs` at a time, sharing `threads` (default: every
    /// core).
    Local { jobs: usize, threads: Option<usize> },
    /// One Ray task per run, each given `threads_per_run` CPUs, on a local Ray instance
    /// (`address` None) or the cluster at `address`; `python` has Ray installed.
    Ray { address: Option<String>, python: PathBuf, threads_per_run: usize },
}

/// `gptlab scaling sweep`: plans, prepares the data, trains what is missing with `executor`,
/// and writes `runs.csv` and `runs.jsonl`.
pub fn sweep(cfg: &SweepConfig, out: &Path, executor: &Executor) -> Result<Vec<RunResult>> {
    match executor {
        Executor::Local { jobs, .. } => ensure!(*jobs > 0, "--jobs must be at least 1"),
        Executor::Ray { threads_per_run, .. } => ensure!(*threads_per_run > 0, "--threads must be at least 1"),
    }
    let planned = plan(cfg)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("sweep.toml"), toml::to_string_pretty(cfg)?)?;
    let shards = cfg.shard_dir(out);
    let meta = match (ShardMeta::read(&shards), &cfg.data.shards) {
        (Ok(meta), _) => meta,
        (Err(e), Some(_)) => return Err(e),
        (Err(_), None) => {
            let synth_cfg = SynthConfig {
                docs: cfg.data.docs,
                seed: cfg.data.seed,
                mix: cfg.data.mix.clone(),
                ..SynthConfig::default()
            };
            crate::synth::prepare_synthetic(&out.join("data"), &synth_cfg, cfg.data.vocab_size)?.1
        }
    };
    let shards = std::fs::canonicalize(&shards)?;

    let mut todo = VecDeque::new();
    for p in &planned {
        let dir = out.join("runs").join(&p.name);
        if dir.join(RESULT_FILE).exists() {
            continue;
        }
        let tc = train_config(cfg, p, &shards, dir.clone());
        tc.model.resolve(meta.vocab_size).with_context(|| format!("run {}", p.name))?;
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("config.toml"), toml::to_string_pretty(&tc)?)?;
        todo.push_back(dir);
    }
    let skipped = planned.len() - todo.len();
    let bar = ProgressBar::new(planned.len() as u64).with_position(skipped as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} runs {elapsed_precise} {msg}").expect("valid template"),
    );
    let exe = std::env::current_exe().context("locating the gptlab binary")?;
    let problems = cfg.train.capability_problems;
    let failures = match executor {
        Executor::Local { jobs, threads } => {
            let total = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            // Threads go to the jobs that will actually run: a lone target gets them all.
            let jobs = (*jobs).min(todo.len()).max(1);
            let per_job = (total / jobs).max(1);
            eprintln!(
                "[sweep] {} runs: {skipped} done before, {} to train, {jobs} at a time, {per_job} threads each",
                planned.len(),
                todo.len()
            );
            run_local(&exe, todo, jobs, per_job, problems, &bar)
        }
        Executor::Ray { address, python, threads_per_run } => {
            eprintln!(
                "[sweep] {} runs: {skipped} done before, {} to train as Ray tasks ({}), {threads_per_run} threads each",
                planned.len(),
                todo.len(),
                address.as_deref().unwrap_or("a local instance")
            );
            run_ray(out, &exe, todo, address.as_deref(), python, *threads_per_run, problems, &bar)?
        }
    };
    bar.finish();
    ensure!(failures.is_empty(), "{} run(s) failed: {}", failures.len(), failures.join("; "));

    let results: Vec<RunResult> =
        planned.iter().map(|p| read_result(&out.join("runs").join(&p.name))).collect::<Result<_>>()?;
    write_results(out, &results)?;
    Ok(results)
}

/// Trains `todo` with `jobs` child processes at once; returns the failures.
fn run_local(
    exe: &Path,
    todo: VecDeque<PathBuf>,
    jobs: usize,
    threads: usize,
    problems: usize,
    bar: &ProgressBar,
) -> Vec<String> {
    // Neither lock is held across anything that can panic; a poisoned one still holds valid data.
    let queue = Mutex::new(todo);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                while let Some(dir) = queue.lock().unwrap_or_else(PoisonError::into_inner).pop_front() {
                    bar.set_message(dir.file_name().unwrap_or_default().to_string_lossy().to_string());
                    if let Err(e) = run_child(exe, &dir, threads, problems) {
                        failures.lock().unwrap_or_else(PoisonError::into_inner).push(format!("{e:#}"));
                    }
                    bar.inc(1);
                }
            });
        }
    });
    failures.into_inner().unwrap_or_else(PoisonError::into_inner)
}

/// The Ray driver script, written beside the sweep and run with the user's Python.
const RAY_SCRIPT: &str = include_str!("ray_sweep.py");

/// Trains `todo` as Ray tasks through `ray_sweep.py`; returns the failures. Ray's own output
/// goes to `OUT/ray.log`.
#[allow(clippy::too_many_arguments)]
fn run_ray(
    out: &Path,
    exe: &Path,
    todo: VecDeque<PathBuf>,
    address: Option<&str>,
    python: &Path,
    threads: usize,
    problems: usize,
    bar: &ProgressBar,
) -> Result<Vec<String>> {
    use std::io::BufRead;
    if todo.is_empty() {
        return Ok(Vec::new());
    }
    let runs: Vec<String> = todo
        .iter()
        .map(|d| std::fs::canonicalize(d).map(|p| p.display().to_string()))
        .collect::<std::io::Result<_>>()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spec = serde_json::json!({
        "exe": exe, "runs": runs, "threads": threads, "problems": problems, "address": address,
        "num_cpus": cores.max(threads),
    });
    let (script, spec_path, log_path) = (out.join("ray_sweep.py"), out.join("ray_sweep.json"), out.join("ray.log"));
    std::fs::write(&script, RAY_SCRIPT)?;
    std::fs::write(&spec_path, serde_json::to_string_pretty(&spec)?)?;
    let mut child = Command::new(python)
        .arg(&script)
        .arg(&spec_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()
        .with_context(|| format!("starting {} (--python names a Python with Ray installed)", python.display()))?;
    let mut failures = Vec::new();
    let mut finished = 0;
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            finished += 1;
            let run = v["run"].as_str().unwrap_or_default();
            if v["ok"] != true {
                failures.push(format!("{run}: {} (log: {run}/train.log)", v["last"].as_str().unwrap_or_default()));
            }
            bar.set_message(Path::new(run).file_name().unwrap_or_default().to_string_lossy().to_string());
            bar.inc(1);
        }
    }
    let status = child.wait()?;
    if !status.success() || finished < runs.len() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        bail!("the Ray driver stopped after {finished} of {} runs: {last} (log: {})", runs.len(), log_path.display());
    }
    Ok(failures)
}

fn run_child(exe: &Path, dir: &Path, threads: usize, problems: usize) -> Result<()> {
    let log_path = dir.join("train.log");
    let log = std::fs::File::create(&log_path)?;
    let status = Command::new(exe)
        .args(["scaling", "run", "--dir"])
        .arg(dir)
        .args(["--threads", &threads.to_string(), "--capability-problems", &problems.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("starting {}", exe.display()))?;
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        bail!("{}: {last} (log: {})", dir.display(), log_path.display());
    }
    Ok(())
}

fn read_result(dir: &Path) -> Result<RunResult> {
    let path = dir.join(RESULT_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// `runs.csv` and `runs.jsonl` of a sweep.
pub fn write_results(out: &Path, results: &[RunResult]) -> Result<()> {
    let rows: Vec<RunRow> = results.iter().map(|r| r.row.clone()).collect();
    super::write_table(&out.join("runs.csv"), &rows)?;
    let lines: Vec<String> = results.iter().map(serde_json::to_string).collect::<Result<_, _>>()?;
    std::fs::write(out.join("runs.jsonl"), lines.join("\n") + "\n")?;
    Ok(())
}

/// Reads a sweep's `runs.jsonl`.
pub fn read_results(path: &Path) -> Result<Vec<RunResult>> {
    crate::jsonl::read_jsonl(path)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v).map_err(|e| anyhow::anyhow!("{}: record {}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// `gptlab scaling run --dir RUN`: trains (resuming from RUN's checkpoint when there is one),
/// measures the capability pass rates on `problems` per family and writes `RUN/result.json`
/// atomically.
pub fn run_one(dir: &Path, threads: Option<usize>, problems: usize) -> Result<RunResult> {
    let mut cfg = TrainConfig::from_file(&dir.join("config.toml"))?;
    cfg.train.threads = threads.or(cfg.train.threads);
    let saved = checkpoint::resolve(&cfg.checkpoint_dir()).ok();
    let done = match &saved {
        Some(dir) => checkpoint::read_state::<crate::train::TrainState>(dir)?.step >= cfg.train.max_steps,
        None => false,
    };
    // A run killed after its last checkpoint but before its result has nothing left to train.
    let trained = if done { None } else { Some(train::train(&cfg, saved.is_some())?) };
    let metrics = crate::jsonl::read_jsonl(&cfg.out_dir.join("metrics.jsonl"))?;
    let (steps, tokens, train_loss, val_loss, elapsed_s) = match trained {
        Some(s) => (s.steps, s.units_seen as f64, s.final_train_loss, s.final_val_loss, s.elapsed_s),
        None => {
            let last = metrics
                .iter()
                .rev()
                .find(|r| r["val_loss"].is_f64())
                .context("the finished run logged no validation")?;
            let get =
                |k: &str| last[k].as_f64().with_context(|| format!("metrics.jsonl: no {k} in its last evaluation"));
            (get("step")? as u64, get("tokens")?, get("train_loss")?, get("val_loss")?, get("elapsed_s")?)
        }
    };
    let val_curve = metrics.iter().filter_map(|r| Some((r["tokens"].as_f64()?, r["val_loss"].as_f64()?))).collect();
    let device = crate::device::parse_device(&cfg.train.device)?;
    // The config alone: the harness loads the weights once, for the pass rates.
    let gpt: &GptConfig = &checkpoint::read_config(&checkpoint::resolve(&cfg.checkpoint_dir())?)?;
    let counts = gpt.param_counts();
    let name = dir.file_name().unwrap_or_default().to_string_lossy().to_string();
    let flops_per_token = gpt.flops_per_token(gpt.block_size);
    let (pass_rates, log_pass_rates) = pass_rates(&cfg.checkpoint_dir(), device, problems)?;
    let result = RunResult {
        row: RunRow {
            name,
            n_layer: Some(gpt.n_layer),
            n_embd: Some(gpt.n_embd),
            n_head: Some(gpt.n_head),
            n_params: counts.total as f64,
            n_params_non_embedding: counts.non_embedding as f64,
            n_tokens: tokens,
            compute: Some(6.0 * counts.total as f64 * tokens),
            compute_exact: Some(flops_per_token * tokens),
            loss: val_loss,
            train_loss: Some(train_loss),
        },
        steps,
        flops_per_token,
        val_curve,
        pass_rates,
        log_pass_rates,
        elapsed_s,
    };
    let tmp = dir.join("result.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&result)?)?;
    std::fs::rename(&tmp, dir.join(RESULT_FILE))?;
    Ok(result)
}

/// Each arithmetic family's greedy pass rate and mean log pass rate on its first `per_family`
/// held-out problems, zero-shot, scored by the evaluation harness (the built-in
/// `arithmetic_*` tasks, in the corpus's question format).
pub fn pass_rates(
    ckpt: &Path,
    device: tch::Device,
    per_family: usize,
) -> Result<(BTreeMap<String, f64>, BTreeMap<String, f64>)> {
    let (mut rates, mut logs) = (BTreeMap::new(), BTreeMap::new());
    if per_family == 0 {
        return Ok((rates, logs));
    }
    let model = EvalModel::load(ckpt, device)?;
    let opts = RunOptions { limit: Some(per_family), batch_size: 32, seed: 1234 };
    for family in ArithFamily::ALL {
        let task = builtin::load(builtin::arithmetic_task(family))?;
        let score = harness::evaluate(&model, &task, 0, &opts, &indicatif::ProgressBar::hidden())?;
        let get = |m: &str| score.metric(m).map(|m| m.value).with_context(|| format!("no {m} for {}", task.name()));
        rates.insert(family.name().to_string(), get("exact_match")?);
        logs.insert(family.name().to_string(), get("log_pass_rate")?);
    }
    Ok((rates, logs))
}
