//! `gptlab eval`: few-shot evaluation of checkpoints on built-in tasks and lm-eval task files.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use clap::Args;
use gptlab::eval::{self, builtin, harness::RunOptions, EvalSpec};

use super::DeviceArgs;

#[derive(Args)]
pub struct EvalArgs {
    /// A GPT or VLM checkpoint (repeat for several models: one line each in the plots)
    #[arg(long, required_unless_present_any = ["list_tasks", "write_tasks"])]
    ckpt: Vec<PathBuf>,
    /// Comma-separated built-in task names and lm-eval task files (.yaml)
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<String>,
    /// Comma-separated numbers of examples in context; each is capped per document by the context
    #[arg(long, value_delimiter = ',', default_value = "0")]
    shots: Vec<usize>,
    /// Output directory
    #[arg(long, required_unless_present_any = ["list_tasks", "write_tasks"])]
    out: Option<PathBuf>,
    /// Score only the first N documents of each task
    #[arg(long)]
    limit: Option<usize>,
    /// Requests per forward pass
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Seeds the shot draws
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// List the built-in tasks and exit
    #[arg(long)]
    list_tasks: bool,
    /// Write the --tasks (built-in; default all) as lm-eval YAML + JSONL into this directory and exit
    #[arg(long, conflicts_with = "list_tasks")]
    write_tasks: Option<PathBuf>,
    #[command(flatten)]
    dev: DeviceArgs,
}

pub fn run(args: EvalArgs) -> Result<()> {
    if args.list_tasks {
        for (name, what) in builtin::TASKS {
            println!("{name:24} {what}");
        }
        return Ok(());
    }
    if let Some(dir) = &args.write_tasks {
        let names: Vec<String> = if args.tasks.is_empty() {
            builtin::names().into_iter().map(String::from).collect()
        } else {
            args.tasks.clone()
        };
        for name in &names {
            builtin::generate(name)?;
        }
        for name in &names {
            builtin::write(name, dir)?;
        }
        println!("wrote {} task file(s) with their JSONL splits to {}", names.len(), dir.display());
        return Ok(());
    }
    ensure!(
        !args.tasks.is_empty(),
        "give --tasks (built-in names or .yaml files; --list-tasks lists the built-in ones)"
    );
    let out = args.out.context("give --out")?;
    let spec = EvalSpec {
        ckpts: args.ckpt,
        tasks: args.tasks,
        shots: args.shots,
        options: RunOptions { limit: args.limit, batch_size: args.batch_size, seed: args.seed },
    };
    let device = args.dev.resolve()?;
    let rows = eval::run(&spec, &out, device)?;
    // One line per model, K and task: its first metric, after its first filter when it has one.
    let mut seen = std::collections::BTreeSet::new();
    let lead = |r: &&gptlab::eval::results::Row| {
        r.metric.contains(',') || !rows.iter().any(|o| o.task == r.task && o.metric.contains(','))
    };
    for r in rows.iter().filter(lead) {
        if seen.insert((r.model.clone(), r.k, r.task.clone())) {
            let err = r.stderr.map(|s| format!(" ± {s:.4}")).unwrap_or_default();
            println!(
                "{:20} {:2}-shot  {:24} {:12} {:.4}{err}  (K used {:.2}, n {})",
                r.model, r.k, r.task, r.metric, r.value, r.k_used_mean, r.n
            );
        }
    }
    println!("results in {} (report.md, summary.jsonl, <model>/<K>shot/results.json)", out.display());
    Ok(())
}
