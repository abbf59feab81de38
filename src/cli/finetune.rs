//! `gptlab finetune`: GPT-1's supervised fine-tuning of a pretrained GPT, one task or several.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use gptlab::finetune;

use super::train::TrainArgs;

/// `gptlab finetune --config FILE.toml [--resume]`, with the training overrides `gptlab train`
/// takes (see experiments/three_paradigms/finetune.toml).
pub fn run(args: TrainArgs) -> Result<()> {
    let mut file = finetune::FinetuneFile::from_file(args.config())?;
    args.apply_to_table(&mut file.train, &mut file.out_dir);
    let s = finetune::finetune(&file, args.resume)?;
    if !gptlab::dist::is_main_process() {
        return Ok(());
    }
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
