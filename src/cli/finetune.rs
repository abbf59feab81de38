//! `gptlab finetune`: GPT-1's supervised fine-tuning of a pretrained GPT, one task or several.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use gptlab::finetune;

#[derive(Args)]
pub struct FinetuneArgs {
    /// The run's TOML config (see experiments/three_paradigms/)
    #[arg(long)]
    config: PathBuf,
    /// Continue from out_dir/checkpoint exactly where it stopped
    #[arg(long)]
    resume: bool,
    /// Overrides out_dir
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Overrides train.device
    #[arg(long)]
    device: Option<String>,
    /// Overrides train.threads
    #[arg(long)]
    threads: Option<usize>,
    /// Overrides train.seed
    #[arg(long)]
    seed: Option<u64>,
}

pub fn run(args: FinetuneArgs) -> Result<()> {
    let mut file = finetune::FinetuneFile::from_file(&args.config)?;
    if let Some(o) = args.out_dir {
        file.out_dir = o;
    }
    if let Some(d) = args.device {
        file.train.insert("device".into(), d.into());
    }
    if let Some(t) = args.threads {
        file.train.insert("threads".into(), (t as i64).into());
    }
    if let Some(s) = args.seed {
        file.train.insert("seed".into(), (s as i64).into());
    }
    let s = finetune::finetune(&file, args.resume)?;
    super::train::print_summary("", &s.train);
    for (task, acc, stderr, ece, n) in &s.tasks {
        println!("{task}: acc {acc:.4} ± {stderr:.4}, ece {ece:.4} ({n} held-out examples)");
    }
    println!(
        "{} parameters trained on {} labelled examples; results {}",
        s.params_trained,
        s.labelled_examples,
        s.results.display()
    );
    Ok(())
}

/// The three paradigms side by side, from results files.
#[derive(Args)]
pub struct ParadigmsArgs {
    /// results.json files, or folders holding them (fine-tuning runs, eval outputs); repeatable
    #[arg(long, required = true)]
    results: Vec<PathBuf>,
    /// Where paradigms.md, paradigms.jsonl and the plots go
    #[arg(long)]
    out: PathBuf,
}

pub fn paradigms(args: ParadigmsArgs) -> Result<()> {
    let rows = finetune::paradigms::report(&args.results, &args.out)?;
    println!("{} results compared; report {}", rows.len(), args.out.join("paradigms.md").display());
    Ok(())
}
