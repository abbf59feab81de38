//! `gptlab data`: synthesise, import and tokenize corpora; render the image world.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use gptlab::data::corpus;
use gptlab::{config, data, synth};

#[derive(Subcommand)]
pub enum DataCommand {
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
    /// Write the synthetic multimodal data: align.jsonl (captions), train.jsonl and eval.jsonl
    /// (VQA by type, two-image questions, in-context gauge episodes) as chat records, and images/
    SynthVlm {
        #[arg(long)]
        out: PathBuf,
        /// A TOML config (world, train_images, eval_images, train_pairs, eval_pairs,
        /// train_episodes, eval_episodes_per_k, max_shots, holdout_combos, seed)
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        seed: Option<u64>,
        /// Image side in pixels (overrides the config; must equal the vision tower's)
        #[arg(long)]
        side: Option<u32>,
    },
    /// Write a labelled synthetic raw crawl (crawl.jsonl, crawl.toml): articles, low-quality
    /// pages, exact and near duplicates, contaminated pages, for measuring the cleaning stages;
    /// and curated.jsonl, curated articles for the quality classifier
    SynthCrawl {
        #[arg(long)]
        out: PathBuf,
        /// A TOML config (pages, seed, low_quality, exact_duplicates, near_duplicates, edit_rates,
        /// contaminated, curated)
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        pages: Option<usize>,
        #[arg(long)]
        seed: Option<u64>,
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
        /// Replace shards already in --out
        #[arg(long)]
        force: bool,
    },
}

pub fn run(cmd: DataCommand) -> Result<()> {
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
        DataCommand::SynthVlm { out, config, seed, side } => {
            let mut cfg: synth::vlm::SynthVlmConfig = match config {
                Some(path) => config::read_toml(&path)?,
                None => Default::default(),
            };
            cfg.seed = seed.unwrap_or(cfg.seed);
            cfg.world.side = side.unwrap_or(cfg.world.side);
            let stats = synth::vlm::write_synth_vlm(&out, &cfg)?;
            let total = |m: &std::collections::BTreeMap<String, usize>| m.values().sum::<usize>();
            println!(
                "wrote {} caption, {} train and {} eval records to {} ({} training images dropped for held-out combinations)",
                stats.align,
                total(&stats.train),
                total(&stats.eval),
                out.display(),
                stats.train_images_dropped
            );
            println!("train: {:?}\neval: {:?}", stats.train, stats.eval);
            Ok(())
        }
        DataCommand::SynthCrawl { out, config, pages, seed } => {
            let mut cfg: synth::crawl::CrawlConfig = match config {
                Some(path) => config::read_toml(&path)?,
                None => Default::default(),
            };
            cfg.pages = pages.unwrap_or(cfg.pages);
            cfg.seed = seed.unwrap_or(cfg.seed);
            let crawl = synth::crawl::write_crawl(&out, &cfg)?;
            let count = |f: &dyn Fn(&synth::crawl::CrawlPage) -> bool| crawl.iter().filter(|p| f(p)).count();
            println!(
                "wrote {} pages to {}: {} low quality, {} exact and {} near duplicates, {} contaminated",
                crawl.len(),
                out.join("crawl.jsonl").display(),
                count(&|p| !p.high_quality),
                count(&|p| p.duplicate.as_deref() == Some("exact")),
                count(&|p| p.duplicate.as_deref() == Some("near")),
                count(&|p| p.contaminated_from.is_some())
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
        DataCommand::Tokenize { corpus: dir, tokenizer, out, shard_tokens, force } => {
            let meta = data::shards::tokenize_corpus(&dir, &tokenizer, &out, shard_tokens, force)?;
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
