//! `gptlab rlhf`: InstructGPT's stages and their data.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use gptlab::rlhf;

use super::train::TrainArgs;

#[derive(Subcommand)]
pub enum RlhfCommand {
    /// Write the embedded world's RLHF data: demonstrations, K-wise rankings, preferences, prompts
    Data(DataArgs),
    /// Supervised fine-tuning on demonstrations (InstructGPT's first stage)
    Sft(TrainArgs),
    /// The reward model on K-wise rankings or preferences (InstructGPT's second stage)
    Rm(TrainArgs),
    /// Direct Preference Optimization from the SFT model on the same preferences
    Dpo(TrainArgs),
    /// PPO against the reward model with a per-token KL penalty and the pretraining mix (PPO-ptx)
    Ppo(TrainArgs),
    /// Sample K responses per prompt from a model and have the labeler rank them (InstructGPT's comparison data)
    Label(LabelArgs),
    /// The labeler's verdict on several models' answers to held-out prompts: shares and win rates
    Compare(CompareArgs),
    /// InstructGPT's figures in one Markdown report: win rates, reward against KL, the held-out LM loss, the harness
    Report(ReportArgs),
}

#[derive(Args)]
pub struct ReportArgs {
    /// An `rlhf compare` output folder
    #[arg(long)]
    compare: PathBuf,
    /// The compared model win rates are taken against (default: the first)
    #[arg(long)]
    baseline: Option<String>,
    /// A PPO run folder (repeat for several: one line each in the plots)
    #[arg(long)]
    ppo: Vec<PathBuf>,
    /// A `gptlab eval` output folder of the same models
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Where rlhf.md and its plots go
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct LabelArgs {
    /// The model whose samples are ranked (the SFT model, as in InstructGPT)
    #[arg(long)]
    ckpt: PathBuf,
    /// Prompt records with the labeler's fields, as `rlhf data` writes them (prompts.jsonl)
    #[arg(long)]
    prompts: PathBuf,
    /// The K-wise rankings file to write (JSONL)
    #[arg(long)]
    out: PathBuf,
    /// Fewest responses sampled per prompt
    #[arg(long, default_value_t = 4)]
    k_min: usize,
    /// Most responses sampled per prompt
    #[arg(long, default_value_t = 9)]
    k_max: usize,
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    #[arg(long, default_value_t = 24)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    dev: super::DeviceArgs,
}

#[derive(Args)]
pub struct CompareArgs {
    /// Checkpoints to compare (at least two; any GPT, SFT, reward-free or RLHF checkpoint)
    #[arg(long, required = true)]
    ckpt: Vec<PathBuf>,
    /// Prompt records with the labeler's fields, as `rlhf data` writes them (prompts_val.jsonl)
    #[arg(long)]
    prompts: PathBuf,
    /// Where compare.json and each model's answers go
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 24)]
    max_new_tokens: usize,
    #[command(flatten)]
    dev: super::DeviceArgs,
}

#[derive(Args)]
pub struct DataArgs {
    /// Output folder (sft, rankings, preferences and prompts JSONL, each with a _val twin)
    #[arg(long)]
    out: PathBuf,
    /// Prompts per file
    #[arg(long, default_value_t = 2000)]
    prompts: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(cmd: RlhfCommand) -> Result<()> {
    match cmd {
        RlhfCommand::Data(a) => {
            anyhow::ensure!(a.prompts > 0, "--prompts must be positive");
            rlhf::data::write_synthetic(&a.out, a.prompts, a.seed)?;
            println!("wrote sft, rankings, preferences and prompts (and their _val twins) to {}", a.out.display());
            Ok(())
        }
        RlhfCommand::Sft(args) => {
            let mut file = rlhf::sft::SftFile::from_file(args.config())?;
            args.apply_to_table(&mut file.train, &mut file.out_dir);
            let s = rlhf::sft::sft(&file, args.resume)?;
            super::train::print_summary("SFT ", &s);
            Ok(())
        }
        RlhfCommand::Rm(args) => {
            let mut file = rlhf::reward::RmFile::from_file(args.config())?;
            args.apply_to_table(&mut file.train, &mut file.out_dir);
            let s = rlhf::reward::train_rm(&file, args.resume)?;
            super::train::print_summary("reward model ", &s.train);
            if gptlab::dist::is_main_process() {
                println!("reward offset {:.4}: demonstrations now score 0 on average", s.offset);
            }
            Ok(())
        }
        RlhfCommand::Dpo(args) => {
            let mut file = rlhf::dpo::DpoFile::from_file(args.config())?;
            args.apply_to_table(&mut file.train, &mut file.out_dir);
            let s = rlhf::dpo::dpo(&file, args.resume)?;
            super::train::print_summary("DPO ", &s);
            Ok(())
        }
        RlhfCommand::Label(a) => {
            let opts = rlhf::label::LabelOptions {
                k_min: a.k_min,
                k_max: a.k_max,
                temperature: a.temperature,
                max_new_tokens: a.max_new_tokens,
                seed: a.seed,
                limit: a.limit,
            };
            let s = rlhf::label::label(&a.ckpt, &a.prompts, &a.out, &opts, a.dev.resolve()?)?;
            println!(
                "ranked {} prompts' samples ({:.1} distinct responses each; {} skipped: samples the labeler could not tell apart) into {}",
                s.ranked,
                s.mean_k,
                s.skipped,
                a.out.display()
            );
            Ok(())
        }
        RlhfCommand::Compare(a) => {
            let c = rlhf::compare::compare(&a.ckpt, &a.prompts, &a.out, a.limit, a.max_new_tokens, a.dev.resolve()?)?;
            println!("{:<24} {:>6} {:>8} {:>7} {:>7} {:>6}", "model", "safe", "correct", "format", "budget", "chars");
            for m in &c.models {
                println!(
                    "{:<24} {:>6.3} {:>8.3} {:>7.3} {:>7.3} {:>6.1}",
                    m.model, m.safe, m.correct, m.format, m.within_budget, m.mean_chars
                );
            }
            for (i, row) in c.win_rate.iter().enumerate() {
                for (j, w) in row.iter().enumerate().filter(|(j, _)| *j != i) {
                    println!("{} preferred to {}: {w:.3}", c.models[i].model, c.models[j].model);
                }
            }
            println!("{} prompts; {}", c.prompts, a.out.join("compare.json").display());
            Ok(())
        }
        RlhfCommand::Report(a) => {
            let inputs =
                rlhf::report::ReportInputs { compare: a.compare, baseline: a.baseline, ppo: a.ppo, eval: a.eval };
            let h = rlhf::report::report(&inputs, &a.out)?;
            for (m, w) in &h.win_rates {
                println!("{m} preferred to {}: {w:.3}", h.baseline);
            }
            println!("report: {}", a.out.join("rlhf.md").display());
            Ok(())
        }
        RlhfCommand::Ppo(args) => {
            let mut file = rlhf::ppo::PpoFile::from_file(args.config())?;
            args.apply_to_table(&mut file.train, &mut file.out_dir);
            let s = rlhf::ppo::ppo(&file, args.resume)?;
            super::train::print_summary("PPO ", &s);
            Ok(())
        }
    }
}
