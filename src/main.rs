//! The `gptlab` command line. Every failure ends as one `error: ...` line and a non-zero exit.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use gptlab::{
    bench, checkpoint, config, corpus, data, device, generate, hf, model::gpt::GptConfig, quickstart, scaling, score,
    synth, tokenizer::Tokenizer, train,
};

#[derive(Parser)]
#[command(
    name = "gptlab",
    version,
    about = "The GPT series rebuilt at a scale one CPU can train and one GPU can scale"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        device::set_threads(self.threads)?;
        device::parse_device(&self.device)
    }
}

/// A training run: its TOML config, and what the command line overrides in it.
#[derive(Args)]
struct TrainArgs {
    /// The run's TOML config (see experiments/*/config.toml)
    #[arg(long)]
    config: PathBuf,
    /// Continue from out_dir/checkpoint exactly where it stopped
    #[arg(long)]
    resume: bool,
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

impl TrainArgs {
    /// `--device`, `--threads` and `--seed` given on the command line win over the config file.
    fn apply(&self, t: &mut train::TrainSection) {
        if let Some(d) = &self.device {
            t.device = d.clone();
        }
        if self.threads.is_some() {
            t.threads = self.threads;
        }
        if let Some(s) = self.seed {
            t.seed = s;
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole text pipeline on synthetic data in about two minutes: corpus, tokenizer, training, samples, report
    Quickstart {
        #[arg(long, default_value = "runs/quickstart")]
        out: PathBuf,
        /// Training time budget in minutes
        #[arg(long, default_value_t = 2.0)]
        minutes: f64,
        /// Train for exactly this many steps instead of the time budget
        #[arg(long)]
        steps: Option<u64>,
        /// Documents to synthesise
        #[arg(long, default_value_t = 40_000)]
        docs: usize,
        #[arg(long, default_value = "micro")]
        preset: String,
        /// Steps of the small CLIP trained after the GPT (0 skips it)
        #[arg(long, default_value_t = 250)]
        clip_steps: u64,
        #[arg(long, default_value_t = 1337)]
        seed: u64,
        #[command(flatten)]
        dev: DeviceArgs,
    },
    /// Corpora: synthesise, import, tokenize
    #[command(subcommand)]
    Data(DataCommand),
    /// Byte-level BPE tokenizers
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
    /// Train a GPT from a TOML config
    Train {
        #[command(flatten)]
        run: TrainArgs,
    },
    /// CLIP: contrastive image-text pretraining
    #[command(subcommand)]
    Clip(ClipCommand),
    /// Complete a prompt with a trained model
    Sample {
        #[arg(long)]
        ckpt: PathBuf,
        #[arg(long)]
        prompt: String,
        /// 0 = greedy
        #[arg(long, default_value_t = 0.8)]
        temperature: f64,
        #[arg(long)]
        top_k: Option<i64>,
        #[arg(long)]
        top_p: Option<f64>,
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        /// Stop before this string (repeatable)
        #[arg(long)]
        stop: Vec<String>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Recompute the whole context at every step (for checking the cache)
        #[arg(long)]
        no_kv_cache: bool,
        #[command(flatten)]
        dev: DeviceArgs,
    },
    /// Per-token log-probabilities of each line of a JSONL file ({"text"} or {"tokens"})
    Score {
        #[arg(long)]
        ckpt: PathBuf,
        #[arg(long)]
        input: PathBuf,
        /// Output JSONL (default: stdout)
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        dev: DeviceArgs,
    },
    /// Bring weights in from other formats
    #[command(subcommand)]
    Import(InteropCommand),
    /// Write weights out to other formats
    #[command(subcommand)]
    Export(ExportCommand),
    /// Model sizes: parameters and FLOPs per token
    Info {
        /// A preset name
        #[arg(long, conflicts_with = "ckpt")]
        preset: Option<String>,
        /// Or a checkpoint
        #[arg(long)]
        ckpt: Option<PathBuf>,
    },
    /// Throughput measurements
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Scaling laws: sweeps of GPT shapes x token budgets, and fits with bootstrap intervals
    #[command(subcommand)]
    Scaling(ScalingCommand),
    /// Plot a run's train and validation loss (PNG and SVG)
    Plot {
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
    },
}

#[derive(Subcommand)]
enum ClipCommand {
    /// Projected features of images and texts, one JSONL line each ({"image"}, {"text"} or {"tokens"})
    Embed {
        #[arg(long)]
        ckpt: PathBuf,
        #[arg(long)]
        input: PathBuf,
        /// Output JSONL (default: stdout)
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        dev: DeviceArgs,
    },
    /// Zero-shot shape/colour/count accuracy and retrieval recall on held-out synthetic images
    Eval {
        #[arg(long)]
        ckpt: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Images per task
        #[arg(long, default_value_t = 200)]
        n: usize,
        #[command(flatten)]
        dev: DeviceArgs,
    },
    /// Train a CLIP from a TOML config (synthetic world, captions JSONL or COCO)
    Train {
        #[command(flatten)]
        run: TrainArgs,
    },
}

#[derive(Subcommand)]
enum ScalingCommand {
    /// Train every run of a sweep.toml (finished runs are skipped, interrupted ones resume)
    Sweep {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Runs trained at once, each in its own process with its share of the threads
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Threads shared by all jobs (default: every core)
        #[arg(long)]
        threads: Option<usize>,
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
        #[arg(long)]
        predict_compute: Vec<f64>,
        /// Predict the loss of N parameters trained on D tokens with Chinchilla's law
        #[arg(long, requires = "predict_d")]
        predict_n: Option<f64>,
        #[arg(long, requires = "predict_n")]
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

#[derive(Subcommand)]
enum DataCommand {
    /// Write the synthetic corpus (train.jsonl, val.jsonl, synth.toml)
    Synth {
        #[arg(long)]
        out: PathBuf,
        /// A synth TOML config; flags below override it
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        docs: Option<usize>,
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long)]
        val_fraction: Option<f64>,
    },
    /// Render the synthetic image world: images/, captions.jsonl, scenes.jsonl, world.json
    SynthImages {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1000)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// A world TOML config (side, max_objects, noise, texture, overlap, gauge/marked fractions, shape_group)
        #[arg(long)]
        config: Option<PathBuf>,
        /// Image side in pixels (overrides the config)
        #[arg(long)]
        side: Option<u32>,
    },
    /// Import .txt and JSONL ({"text": ...}) files into a corpus directory
    Import {
        #[arg(long)]
        out: PathBuf,
        /// Files or directories
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        #[arg(long, default_value_t = 0.05)]
        val_fraction: f64,
        /// .txt documents: a whole file, or each blank-line-separated block
        #[arg(long, value_parser = ["file", "blocks"], default_value = "file")]
        txt_mode: String,
    },
    /// Tokenize a corpus directory into token shards
    Tokenize {
        #[arg(long)]
        corpus: PathBuf,
        #[arg(long)]
        tokenizer: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = data::shards::DEFAULT_SHARD_TOKENS)]
        shard_tokens: usize,
    },
}

#[derive(Subcommand)]
enum TokenizerCommand {
    /// Train byte-level BPE on a corpus directory's train split
    Train {
        #[arg(long)]
        corpus: PathBuf,
        #[arg(long, default_value_t = 1024)]
        vocab_size: usize,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum InteropCommand {
    /// A Hugging Face GPT-2 directory (config.json + model.safetensors) to a gptlab checkpoint
    HfGpt2 {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// A Hugging Face CLIPModel directory (config.json + model.safetensors) to a gptlab checkpoint
    HfClip {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ExportCommand {
    /// A gptlab checkpoint to a Hugging Face GPT-2 directory
    HfGpt2 {
        #[arg(long)]
        ckpt: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Achieved matmul TFLOP/s: the peak that MFU is measured against
    Peak {
        /// fp32 or bf16
        #[arg(long, default_value = "auto")]
        dtype: String,
        #[command(flatten)]
        dev: DeviceArgs,
    },
    /// Images/s of a CLIP config's data loader against its training steps
    ClipLoader {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = 10)]
        batches: u64,
    },
    /// Training tokens/s and MFU of a preset on random tokens
    Train {
        #[arg(long, default_value = "micro")]
        preset: String,
        #[arg(long, default_value_t = 16)]
        batch_size: i64,
        #[arg(long, default_value_t = 20)]
        steps: usize,
        #[arg(long, default_value = "auto")]
        dtype: String,
        /// Peak TFLOP/s for MFU (default: measured)
        #[arg(long)]
        peak_tflops: Option<f64>,
        #[arg(long, default_value_t = 1337)]
        seed: u64,
        #[command(flatten)]
        dev: DeviceArgs,
    },
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Quickstart { out, minutes, steps, docs, preset, clip_steps, seed, dev } => {
            quickstart::run(&quickstart::QuickstartOptions {
                out,
                minutes,
                steps,
                docs,
                preset,
                seed,
                device: dev.device,
                threads: dev.threads,
                clip_steps,
                ..Default::default()
            })
        }
        Command::Data(cmd) => run_data(cmd),
        Command::Plot { metrics, out, data, title } => run_plot(metrics, out, data, title),
        Command::Tokenizer(TokenizerCommand::Train { corpus: dir, vocab_size, out }) => {
            let texts = corpus::read_split(&dir, "train")?;
            let tok = Tokenizer::train(texts.iter(), vocab_size, &out)?;
            println!("wrote {} ({} tokens)", out.display(), tok.vocab_size());
            Ok(())
        }
        Command::Train { run } => {
            let mut cfg = train::TrainConfig::from_file(&run.config)?;
            run.apply(&mut cfg.train);
            let s = train::train(&cfg, run.resume)?;
            println!(
                "trained {} steps ({} tokens): val loss {:.4}, {:.0} tokens/s, MFU {:.2}%; checkpoint {}",
                s.steps,
                s.units_seen,
                s.final_val_loss,
                s.units_per_s,
                100.0 * s.mfu,
                s.checkpoint.display()
            );
            Ok(())
        }
        Command::Clip(ClipCommand::Train { run }) => {
            let mut cfg = gptlab::clip::ClipTrainConfig::from_file(&run.config)?;
            run.apply(&mut cfg.train);
            let s = gptlab::clip::train(&cfg, run.resume)?;
            println!(
                "trained CLIP {} steps ({} pairs): val loss {:.4}, {:.0} pairs/s; checkpoint {}",
                s.steps,
                s.units_seen,
                s.final_val_loss,
                s.units_per_s,
                s.checkpoint.display()
            );
            Ok(())
        }
        Command::Clip(ClipCommand::Embed { ckpt, input, out, dev }) => {
            let features = gptlab::clip_eval::embed_file(&ckpt, &input, dev.resolve()?)?;
            let lines: String =
                features.iter().map(|f| serde_json::json!({ "embedding": f }).to_string() + "\n").collect();
            write_or_print(out.as_deref(), &lines)
        }
        Command::Clip(ClipCommand::Eval { ckpt, out, n, dev }) => {
            let r = gptlab::clip_eval::evaluate(&ckpt, &out, dev.resolve()?, n)?;
            for z in &r.zero_shot {
                println!("zero-shot {}: accuracy {:.3} (chance {:.3})", z.attribute, z.accuracy, z.chance);
            }
            let (i2t, t2i) = (r.retrieval.image_to_text, r.retrieval.text_to_image);
            println!(
                "retrieval R@1/5/10: image->text {:.3}/{:.3}/{:.3}, text->image {:.3}/{:.3}/{:.3}",
                i2t[0], i2t[1], i2t[2], t2i[0], t2i[1], t2i[2]
            );
            println!("report: {}", out.join("report.md").display());
            Ok(())
        }
        Command::Sample { ckpt, prompt, temperature, top_k, top_p, max_new_tokens, stop, seed, no_kv_cache, dev } => {
            let loaded = checkpoint::load_model(&ckpt, dev.resolve()?)?;
            let tok = Tokenizer::from_file(&loaded.dir.join(checkpoint::TOKENIZER_FILE))?;
            let opts = generate::SampleOptions {
                temperature,
                top_k,
                top_p,
                max_new_tokens,
                stop,
                seed,
                kv_cache: !no_kv_cache,
            };
            let c = generate::complete(&loaded.model, &tok, &prompt, &opts)?;
            println!("{}", c.text);
            Ok(())
        }
        Command::Score { ckpt, input, out, dev } => {
            let loaded = checkpoint::load_model(&ckpt, dev.resolve()?)?;
            let tok = Tokenizer::from_file(&loaded.dir.join(checkpoint::TOKENIZER_FILE))?;
            let scored = score::score_file(&loaded.model, &tok, &input)?;
            let lines: String =
                scored.iter().map(|s| serde_json::to_string(s).map(|l| l + "\n")).collect::<Result<_, _>>()?;
            write_or_print(out.as_deref(), &lines)
        }
        Command::Import(InteropCommand::HfGpt2 { from, out }) => {
            let cfg = hf::import_gpt2(&from, &out)?;
            println!("imported GPT-2 ({} params) into {}", cfg.param_counts().total, out.display());
            Ok(())
        }
        Command::Import(InteropCommand::HfClip { from, out }) => {
            let cfg = hf::import_clip(&from, &out)?;
            println!(
                "imported CLIP (ViT {}px/{} px patches, width {}) into {}",
                cfg.vision.image_size,
                cfg.vision.patch_size,
                cfg.vision.width,
                out.display()
            );
            Ok(())
        }
        Command::Export(ExportCommand::HfGpt2 { ckpt, out }) => {
            hf::export_gpt2(&ckpt, &out)?;
            println!("exported {} to {}", ckpt.display(), out.display());
            Ok(())
        }
        Command::Info { preset, ckpt } => {
            let cfg = match (preset, ckpt) {
                (_, Some(dir)) => checkpoint::read_config(&checkpoint::resolve(&dir)?)?,
                (Some(p), None) => GptConfig::preset(&p)?,
                (None, None) => anyhow::bail!("give --preset NAME or --ckpt DIR"),
            };
            let n = cfg.param_counts();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "config": cfg,
                    "n_total": n.total,
                    "n_non_embedding": n.non_embedding,
                    "flops_per_token": cfg.flops_per_token(cfg.block_size),
                }))?
            );
            Ok(())
        }
        Command::Scaling(cmd) => run_scaling(cmd),
        Command::Bench(BenchCommand::Peak { dtype, dev }) => {
            let device = dev.resolve()?;
            let kind = train::compute_kind(&dtype, device)?;
            let tflops = bench::measure_peak_tflops(device, kind)?;
            println!(
                "{}",
                serde_json::json!({"device": format!("{device:?}"), "dtype": format!("{kind:?}"), "peak_tflops": tflops})
            );
            Ok(())
        }
        Command::Bench(BenchCommand::ClipLoader { config, batches }) => {
            let cfg = gptlab::clip::ClipTrainConfig::from_file(&config)?;
            println!("{}", serde_json::to_string(&gptlab::clip::bench_loader(&cfg, batches)?)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Train { preset, batch_size, steps, dtype, peak_tflops, seed, dev }) => {
            let device = dev.resolve()?;
            let kind = train::compute_kind(&dtype, device)?;
            tch::manual_seed(seed as i64);
            let cfg = GptConfig::preset(&preset)?;
            let mut b = bench::bench_train(&cfg, device, kind, batch_size, steps, 3, peak_tflops)?;
            b.preset = preset;
            println!("{}", serde_json::to_string(&b)?);
            Ok(())
        }
    }
}

/// JSONL results go to a file when one is named, else to stdout.
fn write_or_print(out: Option<&std::path::Path>, lines: &str) -> Result<()> {
    match out {
        Some(path) => std::fs::write(path, lines).with_context(|| format!("writing {}", path.display())),
        None => {
            print!("{lines}");
            Ok(())
        }
    }
}

fn run_plot(metrics: PathBuf, out: Option<PathBuf>, data: Option<PathBuf>, title: String) -> Result<()> {
    let out = out.unwrap_or_else(|| metrics.with_file_name("loss"));
    let baseline = data.map(|d| data::shards::ShardMeta::read(&d)).transpose()?.map(|m| m.train_unigram_entropy);
    let first = gptlab::metrics::read_jsonl(&metrics)?.into_iter().next().unwrap_or_default();
    let unit = ["tokens", "pairs"].into_iter().find(|k| first.get(*k).is_some()).unwrap_or("tokens");
    gptlab::plot::loss_plot(&metrics, &out, &title, unit, baseline.map(|b| ("unigram baseline", b)))?;
    println!("wrote {} and {}", out.with_extension("png").display(), out.with_extension("svg").display());
    Ok(())
}

fn run_scaling(cmd: ScalingCommand) -> Result<()> {
    match cmd {
        ScalingCommand::Sweep { config, out, jobs, threads } => {
            let cfg = scaling::sweep::SweepConfig::from_file(&config)?;
            let results = scaling::sweep::sweep(&cfg, &out, jobs, threads)?;
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

fn run_data(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Synth { out, config, docs, seed, val_fraction } => {
            let mut cfg = match config {
                Some(path) => config::read_toml(&path)?,
                None => synth::SynthConfig::default(),
            };
            cfg.docs = docs.unwrap_or(cfg.docs);
            cfg.seed = seed.unwrap_or(cfg.seed);
            cfg.val_fraction = val_fraction.unwrap_or(cfg.val_fraction);
            cfg.validate()?;
            let c = synth::generate(&cfg)?;
            synth::write_corpus(&out, &c, &cfg)?;
            println!("wrote {} train and {} val documents to {}", c.train.len(), c.val.len(), out.display());
            Ok(())
        }
        DataCommand::SynthImages { out, n, seed, config, side } => {
            let mut cfg: gptlab_vision::world::WorldConfig = match config {
                Some(path) => config::read_toml(&path)?,
                None => Default::default(),
            };
            cfg.side = side.unwrap_or(cfg.side);
            let stats = gptlab_vision::world::write_world(&out, &cfg, n, seed)?;
            println!(
                "wrote {} images ({} scenes, {} gauges, {} marked), {} captions and {} QA pairs to {}",
                stats.images,
                stats.scenes,
                stats.gauges,
                stats.marked,
                stats.captions,
                stats.qa,
                out.display()
            );
            Ok(())
        }
        DataCommand::Import { out, inputs, val_fraction, txt_mode } => {
            let txt_mode = if txt_mode == "blocks" { corpus::TxtMode::Blocks } else { corpus::TxtMode::WholeFile };
            let stats = corpus::import(&inputs, &out, &corpus::ImportOptions { val_fraction, txt_mode })?;
            println!(
                "imported {} files: {} train and {} val documents into {}",
                stats.files,
                stats.train_docs,
                stats.val_docs,
                out.display()
            );
            Ok(())
        }
        DataCommand::Tokenize { corpus: dir, tokenizer, out, shard_tokens } => {
            let meta = data::shards::tokenize_corpus(&dir, &tokenizer, &out, shard_tokens)?;
            println!(
                "wrote {} train and {} val tokens ({:?}) to {}",
                meta.train.tokens,
                meta.val.tokens,
                meta.dtype,
                out.display()
            );
            Ok(())
        }
    }
}

fn main() {
    // Library panics (libtorch exceptions surface as panics) still end as one line, no backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        // libtorch errors carry a C++ backtrace after the first (possibly escaped) newline.
        let first = msg.lines().next().unwrap_or("").split("\\n").next().unwrap_or("");
        eprintln!("error: internal error: {first}");
    }));
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        let msg = format!("{e:#}");
        eprintln!("error: {}", msg.lines().next().unwrap_or(""));
        std::process::exit(1);
    }
}
