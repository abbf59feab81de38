//! The `gptlab` command line: one file per command group, each with its clap arguments, its
//! run and its printed summary. This file only lists the groups and dispatches.

mod bench;
mod clean;
mod clip;
mod data;
mod eval;
mod finetune;
mod infer;
mod interop;
mod launch;
mod quickstart;
mod rlhf;
mod scaling;
mod tokenizer;
mod train;
mod vlm;

use std::path::Path;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "gptlab",
    version,
    about = "The GPT series rebuilt at a scale one CPU can train and one GPU can scale"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole text pipeline on synthetic data in about two minutes: corpus, tokenizer, training, samples, report
    Quickstart(quickstart::QuickstartArgs),
    /// Corpora: synthesise, import, tokenize
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Byte-level BPE tokenizers
    #[command(subcommand)]
    Tokenizer(tokenizer::TokenizerCommand),
    /// Train a GPT from a TOML config
    Train(train::TrainArgs),
    /// Run a gptlab command as N data-parallel ranks on this machine (like torchrun)
    Launch(launch::LaunchArgs),
    /// Fine-tune a pretrained GPT on labelled tasks with GPT-1's input transformations and heads
    Finetune(train::TrainArgs),
    /// The three paradigms (fine-tuned, multitask, prompted) side by side from their results files
    Paradigms(finetune::ParadigmsArgs),
    /// InstructGPT: the labeler's data, SFT, the reward model, PPO(-ptx), DPO, win rates and the report
    #[command(subcommand)]
    Rlhf(rlhf::RlhfCommand),
    /// GPT-3's data cleaning: near-duplicate removal
    #[command(subcommand)]
    Clean(clean::CleanCommand),
    /// CLIP: contrastive image-text pretraining
    #[command(subcommand)]
    Clip(clip::ClipCommand),
    /// The multimodal GPT: train, ask, chat, score
    #[command(subcommand)]
    Vlm(vlm::VlmCommand),
    /// Complete a prompt, or every prompt of a JSONL file in batches, with a trained model
    Sample(infer::SampleArgs),
    /// Few-shot evaluation with lm-evaluation-harness semantics: built-in tasks and lm-eval task files
    Eval(eval::EvalArgs),
    /// Per-token log-probabilities of each line of a JSONL file ({"text"} or {"tokens"})
    Score(infer::ScoreArgs),
    /// Bring weights in from other formats
    #[command(subcommand)]
    Import(interop::ImportCommand),
    /// Write weights out to other formats
    #[command(subcommand)]
    Export(interop::ExportCommand),
    /// Model sizes: parameters and FLOPs per token
    Info(infer::InfoArgs),
    /// Throughput measurements
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Scaling laws: sweeps of GPT shapes x token budgets, and fits with bootstrap intervals
    #[command(subcommand)]
    Scaling(scaling::ScalingCommand),
    /// Plot a run's train and validation loss (PNG and SVG)
    Plot(train::PlotArgs),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Quickstart(args) => quickstart::run(args),
        Command::Data(cmd) => data::run(cmd),
        Command::Tokenizer(cmd) => tokenizer::run(cmd),
        Command::Train(args) => train::run(args),
        Command::Launch(args) => launch::run(args),
        Command::Finetune(args) => finetune::run(args),
        Command::Paradigms(args) => finetune::paradigms(args),
        Command::Rlhf(cmd) => rlhf::run(cmd),
        Command::Clean(cmd) => clean::run(cmd),
        Command::Clip(cmd) => clip::run(cmd),
        Command::Vlm(cmd) => vlm::run(cmd),
        Command::Sample(args) => infer::sample(args),
        Command::Eval(args) => eval::run(args),
        Command::Score(args) => infer::score(args),
        Command::Import(cmd) => interop::import(cmd),
        Command::Export(cmd) => interop::export(cmd),
        Command::Info(args) => infer::info(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Scaling(cmd) => scaling::run(cmd),
        Command::Plot(args) => train::plot(args),
    }
}

/// Where and how libtorch runs.
#[derive(Args, Clone)]
struct DeviceArgs {
    /// auto, cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    device: String,
    /// libtorch intra-op threads (default: libtorch's choice)
    #[arg(long)]
    threads: Option<usize>,
}

impl DeviceArgs {
    fn resolve(&self) -> Result<tch::Device> {
        gptlab::device::set_threads(self.threads)?;
        gptlab::device::parse_device(&self.device)
    }
}

/// A checkpoint applied to every line of a JSONL file, with JSONL results.
#[derive(Args)]
struct JsonlJob {
    #[arg(long)]
    ckpt: std::path::PathBuf,
    #[arg(long)]
    input: std::path::PathBuf,
    /// Output JSONL (default: stdout)
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    #[command(flatten)]
    dev: DeviceArgs,
}

/// JSONL results go to a file when one is named, else to stdout.
fn write_or_print(out: Option<&Path>, lines: &str) -> Result<()> {
    match out {
        Some(path) => std::fs::write(path, lines).with_context(|| format!("writing {}", path.display())),
        None => {
            print!("{lines}");
            Ok(())
        }
    }
}
