//! `gptlab scaling`: sweeps, fits, registered predictions and their checks.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use gptlab::scaling;

#[derive(Subcommand)]
pub enum ScalingCommand {
    /// Train every run of a sweep.toml (finished runs are skipped, interrupted ones resume)
    Sweep {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Runs trained at once, each in its own process with its share of the threads (local executor)
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Local executor: threads shared by all jobs (default: every core); ray: threads (CPUs) per run (default 1)
        #[arg(long)]
        threads: Option<usize>,
        /// local: child processes on this machine; ray: one Ray task per run
        #[arg(long, default_value = "local")]
        executor: String,
        /// The Ray cluster to submit to (default: $RAY_ADDRESS, else a local Ray instance)
        #[arg(long)]
        ray_address: Option<String>,
        /// A Python with Ray installed (the ray executor's driver)
        #[arg(long, default_value = "python3")]
        python: PathBuf,
    },
    /// Fit L(C), Chinchilla's L(N, D), Kaplan's L(N) and L(D) and the capability law
    Fit {
        /// A sweep directory (runs.csv and runs.jsonl)
        #[arg(long, conflicts_with = "table", required_unless_present = "table")]
        runs: Option<PathBuf>,
        /// Or a CSV with columns name,n_params,n_params_non_embedding,n_tokens,[compute,]loss
        #[arg(long)]
        table: Option<PathBuf>,
        /// Output directory (default: beside the input)
        #[arg(long)]
        out: Option<PathBuf>,
        /// Predict the loss at this compute (FLOPs) with the L(C) law; repeatable
        #[arg(long, allow_negative_numbers = true)]
        predict_compute: Vec<f64>,
        /// Predict the loss of N parameters trained on D tokens with Chinchilla's law
        #[arg(long, requires = "predict_d", allow_negative_numbers = true)]
        predict_n: Option<f64>,
        #[arg(long, requires = "predict_n", allow_negative_numbers = true)]
        predict_d: Option<f64>,
        /// Bootstrap resamples over runs
        #[arg(long, default_value_t = 1000)]
        bootstrap: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Fit a sweep and register the predicted loss of a larger target run (prediction.json)
    Predict {
        /// The sweep directory
        #[arg(long)]
        runs: PathBuf,
        /// A sweep.toml holding exactly the one target run
        #[arg(long)]
        target: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1000)]
        bootstrap: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Compare a finished target run with its registered prediction
    Check {
        /// prediction.json written by `scaling predict`
        #[arg(long)]
        prediction: PathBuf,
        /// The target's sweep directory
        #[arg(long)]
        runs: PathBuf,
    },
    /// One run of a sweep (what `sweep` starts in a child process)
    #[command(hide = true)]
    Run {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long, default_value_t = 0)]
        capability_problems: usize,
    },
}

pub fn run(cmd: ScalingCommand) -> Result<()> {
    match cmd {
        ScalingCommand::Sweep { config, out, jobs, threads, executor, ray_address, python } => {
            let cfg = scaling::sweep::SweepConfig::from_file(&config)?;
            let executor = match executor.as_str() {
                "local" => scaling::sweep::Executor::Local { jobs, threads },
                "ray" => scaling::sweep::Executor::Ray {
                    address: ray_address.or_else(|| std::env::var("RAY_ADDRESS").ok()).filter(|a| !a.is_empty()),
                    python,
                    threads_per_run: threads.unwrap_or(1),
                },
                other => anyhow::bail!("unknown --executor {other:?}: expected local or ray"),
            };
            let results = scaling::sweep::sweep(&cfg, &out, &executor)?;
            println!("{} runs; table: {}", results.len(), out.join("runs.csv").display());
            Ok(())
        }
        ScalingCommand::Fit { runs, table, out, predict_compute, predict_n, predict_d, bootstrap, seed } => {
            let opts =
                scaling::fit::FitOptions { bootstrap, seed, predict_compute, predict_nd: predict_n.zip(predict_d) };
            let input = scaling::report::FitInput::load(runs.as_deref(), table.as_deref())?;
            let out = out.unwrap_or_else(|| input.default_out());
            let fit = scaling::report::fit_and_report(&input, &opts, &out)?;
            scaling::report::print_summary(&fit);
            println!("report: {}", out.join("report.md").display());
            Ok(())
        }
        ScalingCommand::Predict { runs, target, out, bootstrap, seed } => {
            let opts = scaling::fit::FitOptions { bootstrap, seed, ..Default::default() };
            let r = scaling::predict::predict(&runs, &target, &out, &opts)?;
            println!(
                "registered: {} (C = {:.3e}, {:.1}x the largest sweep run) will reach loss {:.4} [{:.4}, {:.4}]",
                r.target,
                r.target_compute,
                r.target_compute / r.sweep_max_compute,
                r.predicted_loss,
                r.interval[0],
                r.interval[1]
            );
            Ok(())
        }
        ScalingCommand::Check { prediction, runs } => {
            let o = scaling::predict::check(&prediction, &runs)?;
            println!(
                "predicted {:.4} [{:.4}, {:.4}], actual {:.4} ({:+.2}%): {}",
                o.predicted_loss,
                o.interval[0],
                o.interval[1],
                o.actual_loss,
                100.0 * o.relative_error,
                if o.inside_interval { "inside the interval" } else { "outside the interval" }
            );
            Ok(())
        }
        ScalingCommand::Run { dir, threads, capability_problems } => {
            let r = scaling::sweep::run_one(&dir, threads, capability_problems)?;
            println!("{}: val loss {:.4} after {} tokens", r.row.name, r.row.loss, r.row.n_tokens);
            Ok(())
        }
    }
}
