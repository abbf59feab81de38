//! `gptlab clip`: train, evaluate and embed with CLIP.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use gptlab::clip::{self, eval};

use super::train::{print_summary, TrainArgs};
use super::{write_or_print, DeviceArgs, JsonlJob};

#[derive(Subcommand)]
pub enum ClipCommand {
    /// Projected features of images and texts, one JSONL line each ({"image"}, {"text"} or {"tokens"})
    Embed(JsonlJob),
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
    Train(TrainArgs),
}

pub fn run(cmd: ClipCommand) -> Result<()> {
    match cmd {
        ClipCommand::Train(args) => {
            let mut cfg = clip::ClipTrainConfig::from_file(args.config())?;
            args.apply(&mut cfg.train, &mut cfg.out_dir)?;
            let s = clip::train(&cfg, args.resume)?;
            print_summary("CLIP ", &s);
            Ok(())
        }
        ClipCommand::Embed(JsonlJob { ckpt, input, out, dev }) => {
            let features = eval::embed_file(&ckpt, &input, dev.resolve()?)?;
            let lines: String =
                features.iter().map(|f| serde_json::json!({ "embedding": f }).to_string() + "\n").collect();
            write_or_print(out.as_deref(), &lines)
        }
        ClipCommand::Eval { ckpt, out, n, dev } => {
            let r = eval::evaluate(&ckpt, &out, dev.resolve()?, n)?;
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
    }
}
