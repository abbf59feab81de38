//! `gptlab train` (a GPT from a TOML config) and `gptlab plot` (a run's loss curves); the
//! training arguments CLIP's `clip train` shares.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use gptlab::{data, train};

/// A training run: its TOML config, and what the command line overrides in it.
#[derive(Args)]
pub struct TrainArgs {
    /// The run's TOML config (see experiments/*/config.toml)
    #[arg(long)]
    config: PathBuf,
    /// Continue from out_dir/checkpoint exactly where it stopped
    #[arg(long)]
    pub resume: bool,
    /// Overrides train.device
    #[arg(long)]
    device: Option<String>,
    /// Overrides train.threads
    #[arg(long)]
    threads: Option<usize>,
    /// Overrides train.seed
    #[arg(long)]
    seed: Option<u64>,
    /// Overrides train.dtype: auto (fp32 on CPU, bf16 on CUDA), fp32 or bf16
    #[arg(long)]
    dtype: Option<String>,
    /// Overrides out_dir
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

impl TrainArgs {
    /// The config file's path.
    pub fn config(&self) -> &std::path::Path {
        &self.config
    }

    /// The same overrides for a `[train]` table whose other keys are derived later (fine-tuning).
    pub fn apply_to_table(&self, t: &mut toml::Table, out_dir: &mut PathBuf) {
        if let Some(o) = &self.out_dir {
            out_dir.clone_from(o);
        }
        let keys = [
            ("device", self.device.clone().map(toml::Value::from)),
            ("threads", self.threads.map(|n| toml::Value::from(n as i64))),
            ("seed", self.seed.map(|n| toml::Value::from(n as i64))),
            ("dtype", self.dtype.clone().map(toml::Value::from)),
        ];
        for (key, value) in keys {
            if let Some(v) = value {
                t.insert(key.into(), v);
            }
        }
    }

    /// `--device`, `--threads`, `--seed`, `--dtype` and `--out-dir` given on the command line win
    /// over the config file.
    pub fn apply(&self, t: &mut train::TrainSection, out_dir: &mut PathBuf) -> Result<()> {
        if let Some(o) = &self.out_dir {
            out_dir.clone_from(o);
        }
        if let Some(d) = &self.device {
            t.device = d.clone();
        }
        if self.threads.is_some() {
            t.threads = self.threads;
        }
        if let Some(s) = self.seed {
            t.seed = s;
        }
        if let Some(d) = &self.dtype {
            t.dtype = train::Dtype::parse(d)?;
        }
        Ok(())
    }
}

/// One line on how a run ended, printed by rank 0 alone under data parallelism.
pub fn print_summary(what: &str, s: &train::TrainSummary) {
    if !gptlab::dist::is_main_process() {
        return;
    }
    println!(
        "trained {what}{} steps ({} {}, {}): val loss {:.4}, {:.0} {}/s, MFU {:.2}%; checkpoint {}",
        s.steps,
        s.units_seen,
        s.unit,
        s.dtype,
        s.final_val_loss,
        s.units_per_s,
        s.unit,
        100.0 * s.mfu,
        s.checkpoint.display()
    );
}

pub fn run(args: TrainArgs) -> Result<()> {
    let mut cfg = train::TrainConfig::from_file(&args.config)?;
    args.apply(&mut cfg.train, &mut cfg.out_dir)?;
    let s = train::train(&cfg, args.resume)?;
    print_summary("", &s);
    Ok(())
}

#[derive(Args)]
pub struct PlotArgs {
    /// A metrics.jsonl written by `gptlab train`
    #[arg(long)]
    metrics: PathBuf,
    /// Output path without extension (default: loss next to the metrics)
    #[arg(long)]
    out: Option<PathBuf>,
    /// The run's shard directory, to draw its unigram-entropy baseline
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value = "loss vs tokens")]
    title: String,
}

pub fn plot(args: PlotArgs) -> Result<()> {
    let PlotArgs { metrics, out, data, title } = args;
    let out = out.unwrap_or_else(|| metrics.with_file_name("loss"));
    let baseline = data.map(|d| data::shards::ShardMeta::read(&d)).transpose()?.map(|m| m.train_unigram_entropy);
    let first = gptlab::jsonl::read_jsonl(&metrics)?.into_iter().next().unwrap_or_default();
    let unit = ["tokens", "pairs"].into_iter().find(|k| first.get(*k).is_some()).unwrap_or("tokens");
    gptlab::plot::loss_plot(&metrics, &out, &title, unit, baseline.map(|b| ("unigram baseline", b)))?;
    println!("wrote {} and {}", out.with_extension("png").display(), out.with_extension("svg").display());
    Ok(())
}
