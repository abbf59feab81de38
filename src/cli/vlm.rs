//! `gptlab vlm`: train the multimodal GPT, ask it about images, chat with it, score records.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use gptlab::chat::Role;
use gptlab::checkpoint;
use gptlab::data::multimodal::{read_records, Message, Part};
use gptlab::infer::generate::SampleOptions;
use gptlab::models::vlm::Vlm;
use gptlab::vlm::{self, infer};

use super::train::{print_summary, TrainArgs};
use super::{write_or_print, DeviceArgs, JsonlJob};

#[derive(Subcommand)]
pub enum VlmCommand {
    /// Train a stage (align: projector only; instruct: projector and decoder) from a TOML config
    Train(TrainArgs),
    /// Answer one question about images: text with <image> placeholders (images without one go first)
    Ask {
        #[arg(long)]
        ckpt: PathBuf,
        /// An image file; repeat for several, in placeholder order
        #[arg(long = "image")]
        images: Vec<PathBuf>,
        text: String,
        #[command(flatten)]
        gen: GenerationArgs,
        #[command(flatten)]
        dev: DeviceArgs,
    },
    /// A conversation on stdin: /image PATH attaches an image to the next message, /reset, /quit
    Chat {
        #[arg(long)]
        ckpt: PathBuf,
        #[command(flatten)]
        gen: GenerationArgs,
        #[command(flatten)]
        dev: DeviceArgs,
    },
    /// Accuracy by question type beside a text-only baseline and chance, and in-context gauge
    /// reading by k, on held-out synthetic questions: results.json, predictions.jsonl, report.md
    Eval {
        #[arg(long)]
        ckpt: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Evaluation records (default: the synthetic world's held-out questions, written to OUT/data)
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long)]
        image_root: Option<PathBuf>,
        /// At most this many questions of each type (and of each k)
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        #[arg(long, default_value_t = 8)]
        max_new_tokens: usize,
        #[command(flatten)]
        dev: DeviceArgs,
    },
    /// Per-token log-probabilities of interleaved or chat records, one JSONL line each
    Score {
        #[command(flatten)]
        job: JsonlJob,
        /// Where relative image paths start (default: the input file's folder)
        #[arg(long)]
        image_root: Option<PathBuf>,
    },
}

/// How answers are decoded.
#[derive(Args, Clone)]
pub struct GenerationArgs {
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// 0 is greedy
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl GenerationArgs {
    fn options(&self) -> SampleOptions {
        SampleOptions {
            temperature: self.temperature,
            max_new_tokens: self.max_new_tokens,
            seed: self.seed,
            ..SampleOptions::default()
        }
    }
}

pub fn run(cmd: VlmCommand) -> Result<()> {
    match cmd {
        VlmCommand::Train(args) => {
            let mut cfg = vlm::VlmTrainConfig::from_file(args.config())?;
            args.apply(&mut cfg.train, &mut cfg.out_dir)?;
            let s = vlm::train(&cfg, args.resume)?;
            print_summary("VLM ", &s);
            Ok(())
        }
        VlmCommand::Ask { ckpt, images, text, gen, dev } => {
            let loaded = checkpoint::load::<Vlm>(&ckpt, dev.resolve()?)?;
            let tok = loaded.tokenizer()?;
            let prompt = infer::chat_prompt(&tok, &[infer::user_message(&text, &images)?])?;
            let answer = infer::answer_batch(&loaded.model, &tok, &[prompt], &gen.options())?;
            println!("{}", answer[0]);
            Ok(())
        }
        VlmCommand::Eval { ckpt, out, data, image_root, limit, batch_size, max_new_tokens, dev } => {
            let opts = vlm::eval::EvalOptions {
                data,
                image_root,
                limit_per_type: limit,
                batch_size,
                max_new_tokens,
                ..Default::default()
            };
            let r = vlm::eval::evaluate(&ckpt, &out, dev.resolve()?, &opts)?;
            for (name, t) in r.types.iter().chain([(&"overall".to_string(), &r.overall)]) {
                println!(
                    "{name:>10}: accuracy {:.3}, text only {:.3}, chance {:.3} (n = {})",
                    t.accuracy, t.text_only_accuracy, t.chance, t.n
                );
            }
            let kshot: Vec<String> = r
                .gauge_kshot
                .iter()
                .map(|(k, a)| format!("k={k} {a:.3} ({:.3} on scale)", r.gauge_kshot_scale[k]))
                .collect();
            println!("gauge reading in context: {}", kshot.join(", "));
            println!("report: {}", out.join("report.md").display());
            Ok(())
        }
        VlmCommand::Chat { ckpt, gen, dev } => chat(&ckpt, &gen, &dev),
        VlmCommand::Score { job: JsonlJob { ckpt, input, out, dev }, image_root } => {
            let loaded = checkpoint::load::<Vlm>(&ckpt, dev.resolve()?)?;
            let tok = loaded.tokenizer()?;
            let mut lines = String::new();
            for item in read_records(&input, image_root.as_deref())? {
                let scored = infer::score_record(&loaded.model, &tok, &item.record)
                    .map_err(|e| anyhow::anyhow!("{}: {e:#}", item.origin))?;
                lines += &(serde_json::to_string(&scored)? + "\n");
            }
            write_or_print(out.as_deref(), &lines)
        }
    }
}

/// The REPL: each line is a user message (or a command); the model's answer is printed and kept
/// in the history, which is cut from the oldest exchange when it outgrows the context.
fn chat(ckpt: &std::path::Path, gen: &GenerationArgs, dev: &DeviceArgs) -> Result<()> {
    let loaded = checkpoint::load::<Vlm>(ckpt, dev.resolve()?)?;
    let tok = loaded.tokenizer()?;
    let model = &loaded.model;
    let interactive = std::io::stdin().is_terminal();
    let prompt_sign = || {
        if interactive {
            print!("> ");
            let _ = std::io::stdout().flush();
        }
    };
    let mut history: Vec<Message> = Vec::new();
    let mut attached: Vec<PathBuf> = Vec::new();
    let opts = gen.options();
    let context = model.cfg.text.block_size as usize;
    let n = model.cfg.tokens_per_image() as usize;
    prompt_sign();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let text = line.trim();
        match text.split_once(' ').map_or((text, ""), |(c, rest)| (c, rest.trim())) {
            ("/quit", _) => break,
            ("/reset", _) => {
                history.clear();
                attached.clear();
                println!("(history cleared)");
            }
            ("/image", path) => {
                let path = PathBuf::from(path);
                if path.is_file() {
                    println!("(attached {})", path.display());
                    attached.push(path);
                } else {
                    println!("(no such image: {})", path.display());
                }
            }
            ("", _) => {}
            _ => {
                let message = match infer::user_message(text, &attached) {
                    Ok(m) => m,
                    Err(e) => {
                        println!("({e})");
                        prompt_sign();
                        continue;
                    }
                };
                attached.clear();
                history.push(message);
                let mut prompt = infer::chat_prompt(&tok, &history)?;
                while prompt.ids.len() + prompt.images.len() * n.saturating_sub(1) + opts.max_new_tokens > context
                    && history.len() > 1
                {
                    history.drain(..history.len().min(2));
                    eprintln!("(the conversation outgrew the context; dropped the oldest exchange)");
                    prompt = infer::chat_prompt(&tok, &history)?;
                }
                match infer::answer_batch(model, &tok, &[prompt], &opts) {
                    Ok(answer) => {
                        println!("{}", answer[0]);
                        history.push(Message { role: Role::Assistant, parts: vec![Part::Text(answer[0].clone())] });
                    }
                    Err(e) => {
                        history.pop();
                        println!("({e:#})");
                    }
                }
            }
        }
        prompt_sign();
    }
    Ok(())
}
