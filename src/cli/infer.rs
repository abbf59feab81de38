//! `gptlab sample`, `gptlab score` and `gptlab info`: using a trained GPT.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use gptlab::checkpoint;
use gptlab::infer::{generate, score};
use gptlab::models::gpt::{Gpt, GptConfig};

use super::{write_or_print, DeviceArgs, JsonlJob};

#[derive(Args)]
pub struct SampleArgs {
    #[arg(long)]
    ckpt: PathBuf,
    /// One prompt; its completion is printed as text
    #[arg(long, required_unless_present = "input", conflicts_with = "input", allow_hyphen_values = true)]
    prompt: Option<String>,
    /// A JSONL file of {"prompt": ...} lines, completed in batches; one JSON completion per line out
    #[arg(long)]
    input: Option<PathBuf>,
    /// Output JSONL for --input (default: stdout)
    #[arg(long, requires = "input")]
    out: Option<PathBuf>,
    /// Prompts per batch with --input
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// 0 = greedy
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    temperature: f64,
    #[arg(long)]
    top_k: Option<i64>,
    #[arg(long)]
    top_p: Option<f64>,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Stop before this string (repeatable)
    #[arg(long, allow_hyphen_values = true)]
    stop: Vec<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Recompute the whole context at every step (for checking the cache)
    #[arg(long)]
    no_kv_cache: bool,
    /// Weights and matmuls in fp32, or bf16 (faster where the device's bf16 matmuls are: GPUs;
    /// on CPUs without AMX, fp32 decodes faster)
    #[arg(long, default_value = "fp32")]
    dtype: String,
    #[command(flatten)]
    dev: DeviceArgs,
}

pub fn sample(args: SampleArgs) -> Result<()> {
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let device = args.dev.resolve()?;
    let kind = gptlab::train::Dtype::parse(&args.dtype)?.compute_kind(device);
    let mut loaded = checkpoint::load::<Gpt>(&args.ckpt, device)?;
    loaded.model.cast_linears_for_inference(kind);
    let tok = loaded.tokenizer()?;
    let opts = generate::SampleOptions {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        max_new_tokens: args.max_new_tokens,
        stop: args.stop,
        seed: args.seed,
        kv_cache: !args.no_kv_cache,
    };
    let Some(input) = args.input else {
        let prompt = args.prompt.unwrap_or_default();
        println!("{}", generate::complete(&loaded.model, &tok, &prompt, &opts)?.text);
        return Ok(());
    };
    let mut prompts = Vec::new();
    for (i, rec) in gptlab::jsonl::read_jsonl(&input)?.iter().enumerate() {
        let prompt = rec.get("prompt").and_then(|p| p.as_str());
        prompts.push(
            prompt
                .with_context(|| format!("{}: record {}: expected {{\"prompt\": \"...\"}}", input.display(), i + 1))?
                .to_string(),
        );
    }
    let mut lines = String::new();
    for chunk in prompts.chunks(args.batch_size) {
        for c in generate::complete_batch(&loaded.model, &tok, chunk, &opts)? {
            lines += &(serde_json::json!({ "completion": c.text, "tokens": c.tokens }).to_string() + "\n");
        }
    }
    write_or_print(args.out.as_deref(), &lines)
}

#[derive(Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    job: JsonlJob,
    /// Lines scored per forward pass
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
}

pub fn score(args: ScoreArgs) -> Result<()> {
    let JsonlJob { ckpt, input, out, dev } = args.job;
    let loaded = checkpoint::load::<Gpt>(&ckpt, dev.resolve()?)?;
    let tok = loaded.tokenizer().ok();
    let scored = score::score_file(&loaded.model, tok.as_ref(), &input, args.batch_size)?;
    let lines: String = scored.iter().map(|s| serde_json::to_string(s).map(|l| l + "\n")).collect::<Result<_, _>>()?;
    write_or_print(out.as_deref(), &lines)
}

#[derive(Args)]
pub struct InfoArgs {
    /// A preset name
    #[arg(long, conflicts_with = "ckpt")]
    preset: Option<String>,
    /// Or a checkpoint
    #[arg(long)]
    ckpt: Option<PathBuf>,
}

pub fn info(args: InfoArgs) -> Result<()> {
    let cfg: GptConfig = match (args.preset, args.ckpt) {
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
