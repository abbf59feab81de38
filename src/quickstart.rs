//! `gptlab quickstart`: the whole pipeline in one command, sized to about two minutes of GPT
//! training on two CPU cores: synthesise a corpus, train a tokenizer, tokenize, train a tiny
//! GPT, sample from it, train a small CLIP, join both into a multimodal GPT and ask it about
//! images, and write a report with the loss curve.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tch::Device;

use crate::checkpoint;
use crate::clip::eval::ClipEvalResults;
use crate::clip::{ClipDataSpec, ClipModelSpec, ClipTrainConfig};
use crate::data::multimodal::LossOn;
use crate::data::shards::ShardMeta;
use crate::eval::harness::RunOptions;
use crate::eval::results::Row;
use crate::eval::EvalSpec;
use crate::infer::generate::{self, SampleOptions};
use crate::models::vlm::ProjectorKind;
use crate::report::Report;
use crate::synth::vlm::{write_synth_vlm, SynthVlmConfig};
use crate::synth::SynthConfig;
use crate::train::{self, ModelSpec, TrainConfig, TrainSection, TrainSummary};
use crate::vlm::eval::{EvalOptions, VlmEvalResults};
use crate::vlm::train::{Stage, VlmDataSpec, VlmModelSpec, VlmTrainConfig};
use gptlab_vision::clip::ClipConfig;
use gptlab_vision::world::WorldConfig;

#[derive(Clone, Debug)]
pub struct QuickstartOptions {
    pub out: PathBuf,
    /// Training time budget; the step count is derived from a throughput probe.
    pub minutes: f64,
    /// Fixed step count instead of the time budget.
    pub steps: Option<u64>,
    pub docs: usize,
    pub vocab_size: usize,
    pub preset: String,
    pub seed: u64,
    pub device: String,
    pub threads: Option<usize>,
    /// Steps of the small CLIP trained after the GPT (0 skips it).
    pub clip_steps: u64,
    /// Instruct steps of the multimodal GPT assembled from both (0, or no CLIP, skips it).
    pub vlm_steps: u64,
    /// Documents per task of the GPT's few-shot evaluation (0 skips it).
    pub eval_docs: usize,
}

impl Default for QuickstartOptions {
    fn default() -> Self {
        Self {
            out: PathBuf::from("runs/quickstart"),
            minutes: 2.0,
            steps: None,
            docs: 40_000,
            vocab_size: 1024,
            preset: "micro".into(),
            seed: 1337,
            device: "auto".into(),
            threads: None,
            clip_steps: 250,
            vlm_steps: 300,
            eval_docs: 50,
        }
    }
}

/// The few-shot table's tasks and shot counts: one of each request type the harness scores.
const FEW_SHOT_TASKS: [&str; 4] = ["arithmetic_2da", "word_map", "scene_count_mc", "lambada_scene"];
const FEW_SHOT_K: [usize; 2] = [0, 4];

/// Prompts that show each kind of document the corpus teaches.
const PROMPTS: [&str; 4] = [
    "Q: What is 23 plus 58? A:",
    "There are 2 objects: a large red circle",
    "enots -> stone\ntenalp -> planet\nnedrag ->",
    "<|user|>\nSort these numbers from smallest to largest: 42, 7, 19<|endoftext|><|assistant|>\n",
];

pub fn run(opts: &QuickstartOptions) -> Result<()> {
    let out = &opts.out;
    let previous = ["checkpoint", "clip/checkpoint", "vlm/align/checkpoint", "vlm/instruct/checkpoint"];
    for ckpt in previous.map(|p| out.join(p)) {
        if checkpoint::resolve(&ckpt).is_ok() {
            eprintln!("[quickstart] replacing the previous run in {}", ckpt.display());
            for dir in [ckpt.clone(), ckpt.with_file_name("checkpoint.old"), ckpt.with_file_name("checkpoint.tmp")] {
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
                }
            }
        }
    }
    let data = out.join("data");
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let step = |msg: &str| eprintln!("[quickstart] {msg}");

    let synth_cfg = SynthConfig { docs: opts.docs, seed: opts.seed, ..SynthConfig::default() };
    let (shard_dir, meta) = crate::synth::prepare_synthetic(&data, &synth_cfg, opts.vocab_size)?;

    let mut cfg = TrainConfig {
        out_dir: out.clone(),
        data: shard_dir.clone(),
        model: ModelSpec { preset: opts.preset.clone(), ..ModelSpec::default() },
        train: TrainSection {
            batch_size: 16,
            lr: 2e-3,
            warmup_steps: 30,
            eval_interval: 50,
            eval_batches: 10,
            log_interval: 10,
            ckpt_interval: 250,
            seed: opts.seed,
            device: opts.device.clone(),
            threads: opts.threads,
            ..TrainSection::default()
        },
        optim: Default::default(),
    };
    let steps = match opts.steps {
        Some(s) => s,
        None => {
            let tps = probe_tokens_per_s(&cfg, &meta)?;
            let tokens = tps * opts.minutes * 60.0 * 0.9; // leave room for evaluation
            ((tokens / cfg.tokens_per_step(cfg.model.resolve(meta.vocab_size)?.block_size) as f64) as u64).max(20)
        }
    };
    cfg.train.max_steps = steps;
    cfg.train.warmup_steps = cfg.train.warmup_steps.min(steps / 10);
    step(&format!("training preset {} for {steps} steps", opts.preset));
    let summary = train::train(&cfg, false)?;

    step("sampling");
    let loaded =
        checkpoint::load::<crate::models::gpt::Gpt>(&cfg.checkpoint_dir(), crate::device::parse_device(&opts.device)?)?;
    let tok = loaded.tokenizer()?;
    let sample_opts = SampleOptions {
        temperature: 0.0,
        max_new_tokens: 48,
        stop: vec!["\n\n".into()],
        seed: opts.seed,
        ..SampleOptions::default()
    };
    let mut samples = Vec::new();
    for prompt in PROMPTS {
        let c = generate::complete(&loaded.model, &tok, prompt, &sample_opts)?;
        samples.push((prompt.to_string(), c.text));
    }
    let samples_md: String = samples
        .iter()
        .map(|(p, c)| format!("### Prompt\n```text\n{p}\n```\n### Completion (greedy)\n```text\n{c}\n```\n\n"))
        .collect();
    std::fs::write(out.join("samples.md"), &samples_md)?;
    drop(loaded);

    let few_shot = match opts.eval_docs {
        0 => None,
        docs => {
            step("few-shot evaluation of the GPT");
            let spec = EvalSpec {
                ckpts: vec![cfg.checkpoint_dir()],
                tasks: FEW_SHOT_TASKS.iter().map(|t| t.to_string()).collect(),
                shots: FEW_SHOT_K.to_vec(),
                options: RunOptions { limit: Some(docs), batch_size: 32, seed: 1234 },
            };
            Some(crate::eval::run(&spec, &out.join("eval"), crate::device::parse_device(&opts.device)?)?)
        }
    };

    let clip = match opts.clip_steps {
        0 => None,
        steps => Some(run_clip(opts, steps)?),
    };
    let vlm = match (&clip, opts.vlm_steps) {
        (Some(c), steps) if steps > 0 => Some(run_vlm(opts, &cfg.checkpoint_dir(), &c.summary.checkpoint)?),
        _ => None,
    };
    let sections =
        Sections { samples: &samples, few_shot: few_shot.as_deref(), clip: clip.as_ref(), vlm: vlm.as_ref() };
    write_report(out, &cfg, &meta, &summary, &sections)?;
    step(&format!(
        "done: val loss {:.3} nats/token vs unigram baseline {:.3}; report at {}",
        summary.final_val_loss,
        meta.train_unigram_entropy,
        out.join("report.md").display()
    ));
    Ok(())
}

/// What the quickstart's CLIP part trained and measured.
struct ClipPart {
    summary: TrainSummary,
    eval: ClipEvalResults,
    /// The trained model's config, as its checkpoint holds it.
    model: ClipConfig,
    batch_size: usize,
}

/// Trains the small CLIP preset on the synthetic image world and evaluates it zero-shot.
fn run_clip(opts: &QuickstartOptions, steps: u64) -> Result<ClipPart> {
    eprintln!("[quickstart] training a small CLIP on the synthetic image world for {steps} steps");
    let world =
        WorldConfig { side: 64, max_objects: 4, gauge_fraction: 0.0, marked_fraction: 0.0, ..Default::default() };
    let cfg = ClipTrainConfig {
        out_dir: opts.out.join("clip"),
        model: ClipModelSpec { preset: "small".into() },
        data: ClipDataSpec { world, val_pairs: 128, ..ClipDataSpec::default() },
        train: TrainSection {
            batch_size: 64,
            max_steps: steps,
            lr: 5e-4,
            warmup_steps: (steps / 10).min(50),
            eval_interval: 50,
            eval_batches: 1,
            log_interval: 10,
            ckpt_interval: 1000,
            seed: opts.seed,
            device: opts.device.clone(),
            threads: opts.threads,
            ..TrainSection::default()
        },
        optim: crate::clip::train::clip_adamw(),
    };
    let summary = crate::clip::train(&cfg, false)?;
    let device = crate::device::parse_device(&opts.device)?;
    let eval = crate::clip::eval::evaluate(&summary.checkpoint, &cfg.out_dir.join("eval"), device, 200)?;
    let model = checkpoint::read_config(&checkpoint::resolve(&summary.checkpoint)?)?;
    Ok(ClipPart { summary, eval, model, batch_size: cfg.train.batch_size })
}

/// What the quickstart's multimodal part trained and measured.
struct VlmPart {
    align: TrainSummary,
    instruct: TrainSummary,
    eval: VlmEvalResults,
    tokens_per_image: i64,
}

/// Joins the quickstart's GPT and CLIP into a multimodal GPT (a pixel-shuffle projector), runs
/// LLaVA's two stages on a small synthetic multimodal set, and evaluates it on held-out questions.
fn run_vlm(opts: &QuickstartOptions, gpt: &Path, clip: &Path) -> Result<VlmPart> {
    let dir = opts.out.join("vlm");
    let data = dir.join("data");
    eprintln!("[quickstart] the multimodal GPT: writing synthetic image questions to {}", data.display());
    let synth = SynthVlmConfig {
        world: WorldConfig { side: 64, max_objects: 4, ..WorldConfig::default() },
        train_images: 600,
        eval_images: 100,
        train_pairs: 300,
        eval_pairs: 40,
        train_episodes: 600,
        eval_episodes_per_k: 20,
        max_shots: 3, // four images of 16 tokens and their text fit the micro GPT's 128 positions
        seed: opts.seed,
        ..SynthVlmConfig::default()
    };
    write_synth_vlm(&data, &synth)?;
    let stage = |stage: Stage, model: VlmModelSpec, train: &str, steps: u64| VlmTrainConfig {
        out_dir: dir.join(if stage == Stage::Align { "align" } else { "instruct" }),
        stage,
        model,
        data: VlmDataSpec {
            train: data.join(train),
            val: data.join("eval.jsonl"),
            image_root: None,
            loss_on: LossOn::Assistant,
            cache_features: true,
            val_records: 64,
            skip_too_long: true, // a small preset's context holds fewer in-context examples
        },
        train: TrainSection {
            batch_size: 16,
            max_steps: steps,
            lr: 1e-3,
            warmup_steps: (steps / 10).min(30),
            eval_interval: steps,
            eval_batches: 1,
            log_interval: 10,
            ckpt_interval: steps,
            seed: opts.seed,
            device: opts.device.clone(),
            threads: opts.threads,
            ..TrainSection::default()
        },
        optim: Default::default(),
    };
    let parts = VlmModelSpec {
        clip: Some(clip.to_path_buf()),
        gpt: Some(gpt.to_path_buf()),
        projector: ProjectorKind::PixelShuffle { factor: 2 },
        ..VlmModelSpec::default()
    };
    let align = crate::vlm::train(&stage(Stage::Align, parts, "align.jsonl", 60), false)?;
    let from = VlmModelSpec { from: Some(align.checkpoint.clone()), ..VlmModelSpec::default() };
    let instruct = crate::vlm::train(&stage(Stage::Instruct, from, "train.jsonl", opts.vlm_steps), false)?;
    let device = crate::device::parse_device(&opts.device)?;
    let eval_opts =
        EvalOptions { data: Some(data.join("eval.jsonl")), limit_per_type: Some(25), ..EvalOptions::default() };
    let eval = crate::vlm::eval::evaluate(&instruct.checkpoint, &dir.join("eval"), device, &eval_opts)?;
    let cfg: crate::models::vlm::VlmConfig = checkpoint::read_config(&checkpoint::resolve(&instruct.checkpoint)?)?;
    Ok(VlmPart { align, instruct, eval, tokens_per_image: cfg.tokens_per_image() })
}

/// Tokens/s of this run's model and batch on random tokens, to size the step count.
fn probe_tokens_per_s(cfg: &TrainConfig, meta: &ShardMeta) -> Result<f64> {
    let device = crate::device::parse_device(&cfg.train.device)?;
    crate::device::set_threads(cfg.train.threads)?;
    let kind = cfg.train.dtype.compute_kind(device);
    let gpt = cfg.model.resolve(meta.vocab_size)?;
    let b = crate::bench::bench_train(&gpt, device, kind, cfg.train.batch_size as i64, 5, 2, Some(1.0))?;
    Ok(b.tokens_per_s)
}

/// What the report shows after the GPT's training: its samples, and the parts that ran.
struct Sections<'a> {
    samples: &'a [(String, String)],
    few_shot: Option<&'a [Row]>,
    clip: Option<&'a ClipPart>,
    vlm: Option<&'a VlmPart>,
}

fn write_report(
    out: &Path,
    cfg: &TrainConfig,
    meta: &ShardMeta,
    s: &train::TrainSummary,
    parts: &Sections,
) -> Result<()> {
    let Sections { samples, few_shot, clip, vlm } = *parts;
    let device = crate::device::parse_device(&cfg.train.device).unwrap_or(Device::Cpu);
    let params = cfg.model.resolve(meta.vocab_size)?.param_counts();
    let mut r = Report::new("gptlab quickstart");
    r.paragraph(
        "A tiny GPT-2-style decoder trained from scratch on gptlab's synthetic corpus (scene \
         descriptions, GPT-3-style arithmetic, in-context rule episodes and verifiable \
         instruction pairs), with a byte-level BPE tokenizer trained on the same corpus.",
    );
    r.heading("What ran");
    r.table(
        &["setting", "value"],
        &[
            vec!["model preset".into(), cfg.model.preset.clone()],
            vec!["parameters (total / non-embedding)".into(), format!("{} / {}", params.total, params.non_embedding)],
            vec!["FLOPs per token (training)".into(), format!("{:.3e}", s.flops_per_unit)],
            vec!["tokenizer vocab".into(), meta.vocab_size.to_string()],
            vec!["corpus tokens (train / val)".into(), format!("{} / {}", meta.train.tokens, meta.val.tokens)],
            vec!["steps × tokens per step".into(), format!("{} × {}", s.steps, s.units_seen / s.steps.max(1))],
            vec!["device".into(), format!("{device:?}")],
            vec!["precision (matmuls)".into(), s.dtype.to_string()],
            vec!["wall time".into(), format!("{:.0} s", s.elapsed_s)],
            vec![
                "throughput".into(),
                format!(
                    "{:.0} tokens/s, MFU {:.1}% of a measured {:.3} TFLOP/s matmul peak",
                    s.units_per_s,
                    100.0 * s.mfu,
                    s.peak_tflops
                ),
            ],
        ],
    );
    r.heading("Result");
    r.table(
        &["quantity", "nats/token"],
        &[
            vec!["final validation loss".into(), format!("{:.4}", s.final_val_loss)],
            vec!["final training loss".into(), format!("{:.4}", s.final_train_loss)],
            vec!["unigram-entropy baseline (context ignored)".into(), format!("{:.4}", meta.train_unigram_entropy)],
        ],
    );
    let margin = meta.train_unigram_entropy - s.final_val_loss;
    r.paragraph(&if margin > 0.0 {
        format!(
            "The model's validation loss is {margin:.2} nats/token below the unigram baseline: it uses \
             context, not just token frequencies."
        )
    } else {
        format!(
            "The model's validation loss is {:.2} nats/token above the unigram baseline: it has not yet \
             learned to use context. Train longer (`--minutes`, `--steps`).",
            -margin
        )
    });
    r.image("train and validation loss against tokens", "loss.png");
    r.heading("Samples (greedy)");
    for (p, c) in samples {
        r.code(&format!("{p}{c}"));
    }
    if let Some(rows) = few_shot {
        r.heading("Few-shot evaluation");
        r.paragraph(&format!(
            "The GPT scored by `gptlab eval` (lm-evaluation-harness's rules) on built-in tasks whose \
             items no training document contains, with K examples in the prompt ({} documents per task; \
             `eval/report.md` has the details, `eval/*/*shot/samples_*.jsonl` every prompt and answer):",
            rows.first().map_or(0, |r| r.n)
        ));
        let mut table = Vec::new();
        for task in FEW_SHOT_TASKS {
            let first = rows.iter().find(|r| r.task == task).context("every task is scored")?;
            let mut line = vec![task.to_string(), first.metric.clone()];
            for k in FEW_SHOT_K {
                let cell = rows.iter().find(|r| r.task == task && r.metric == first.metric && r.k == k);
                line.push(cell.map_or(String::new(), |c| match c.stderr {
                    Some(se) => format!("{:.3} ± {:.3}", c.value, se),
                    None => format!("{:.3}", c.value),
                }));
            }
            table.push(line);
        }
        let header: Vec<String> = ["task", "metric"]
            .iter()
            .map(|s| s.to_string())
            .chain(FEW_SHOT_K.iter().map(|k| format!("K={k}")))
            .collect();
        r.table(&header.iter().map(String::as_str).collect::<Vec<_>>(), &table);
        r.paragraph(
            "A model this small and this briefly trained is near chance on these. On `scene_count_mc` \
             chance is 1/6 by guessing but about 3/4 by always answering 1, since most questions ask about \
             something the scene has once. `experiments/gpt3_in_context/` trains three sizes with room \
             for 32 shots and plots the curves.",
        );
    }
    if let Some(ClipPart { summary: c, eval: e, model, batch_size }) = clip {
        r.heading("CLIP on the synthetic image world");
        let v = &model.vision;
        r.paragraph(&format!(
            "A CLIP ({} px ViT with {} px patches, {} layers of width {}; text tower {} layers of width {}) \
             trained contrastively for {} steps ({} image-caption pairs, {:.0} s): validation loss {:.3} \
             against {:.3} for chance (ln of the batch size, {batch_size}). Zero-shot classification of \
             held-out rendered images, with prompts phrased like the training captions:",
            v.image_size,
            v.patch_size,
            v.layers,
            v.width,
            model.text.layers,
            model.text.width,
            c.steps,
            c.units_seen,
            c.elapsed_s,
            c.final_val_loss,
            (*batch_size as f64).ln()
        ));
        let rows: Vec<Vec<String>> = e
            .zero_shot
            .iter()
            .map(|z| vec![z.attribute.clone(), format!("{:.3}", z.accuracy), format!("{:.3}", z.chance)])
            .collect();
        r.table(&["attribute", "zero-shot accuracy", "chance"], &rows);
        r.paragraph(&format!(
            "Retrieval over {} held-out pairs: image→text R@1 {:.3}, text→image R@1 {:.3} (chance {:.3}). \
             Details: `clip/eval/report.md`.",
            e.retrieval.n,
            e.retrieval.image_to_text[0],
            e.retrieval.text_to_image[0],
            1.0 / e.retrieval.n as f64
        ));
        r.image("CLIP zero-shot colour confusion", "clip/eval/confusion_colour.png");
    }
    if let Some(VlmPart { align, instruct, eval: e, tokens_per_image }) = vlm {
        r.heading("The multimodal GPT: images interleaved with text");
        r.paragraph(&format!(
            "The GPT above and the CLIP's vision tower, joined by a pixel-shuffle projector ({tokens_per_image} \
             tokens per image, written where the text says `<image>`), trained in LLaVA's two stages on \
             synthetic questions about images: the projector alone for {} steps ({:.0} s), then projector and \
             decoder for {} steps ({:.0} s). Greedy answers to held-out questions, beside the same model asked \
             with the images removed, and chance:",
            align.steps, align.elapsed_s, instruct.steps, instruct.elapsed_s
        ));
        let mut rows = crate::vlm::eval::result_rows(e, 2);
        let kshot: Vec<String> = e.gauge_kshot.iter().map(|(k, a)| format!("k={k}: {a:.2}")).collect();
        rows.push(vec![
            "gauge read from k examples".into(),
            kshot.join(", "),
            String::new(),
            String::new(),
            String::new(),
        ]);
        r.table(&["question type", "accuracy", "text only", "chance", "n"], &rows);
        r.paragraph(
            "A minute of training on two cores is a demonstration, not a result: \
             `experiments/gpt4v_interleaved/` trains longer and reports against the goals. Details: \
             `vlm/eval/report.md`.",
        );
        r.image("example questions with the model's answers", "vlm/eval/examples.png");
    }
    r.heading("Files");
    r.paragraph(
        "`config.toml` (the resolved training config), `metrics.jsonl`, `loss.png` / `loss.svg`, \
         `samples.md`, `eval/` (the few-shot evaluation), `checkpoint/` (model, optimizer, state, \
         tokenizer), `data/` (corpus, \
         tokenizer, shards). Rerun with `gptlab quickstart`; continue training with \
         `gptlab train --config config.toml --resume`.",
    );
    r.write(&out.join("report.md"))
}
