//! The synthetic multimodal world as chat records (`gptlab data synth-vlm`): captions, visual
//! questions by type, two-image comparisons, and GPT-4V-style in-context gauge episodes, all with
//! answers true by construction.
//!
//! In an episode every gauge shares one scale that is drawn without labels, and several scales
//! look alike (the same number of ticks), so only the k worked examples in the prompt say how to
//! read the query gauge: GPT-4V needed two to read a speedometer. Answers are the nearest major
//! tick.
//!
//! Evaluation records come from another seed stream (no image is shared with training), and
//! scenes holding a held-out colour-shape combination are kept out of training altogether.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use gptlab_vision::render::{render_unlabelled_gauge, Gauge, RenderOptions};
use gptlab_vision::scene::{Scene, Shape};
use gptlab_vision::world::{generate_item, WorldConfig, WorldItem};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::jsonl::write_jsonl;

/// Episode scales: (first label, step between major ticks, major ticks). They come in pairs
/// that share a tick count, so the picture alone cannot tell the two apart, and no two scales
/// share a value, so any one worked example tells which scale an episode uses.
pub const EPISODE_SCALES: [(i64, i64, u32); 6] =
    [(0, 20, 6), (200, 50, 6), (5, 10, 7), (120, 5, 7), (160, 2, 9), (500, 25, 9)];

/// The question every episode ends with.
pub const EPISODE_QUESTION: &str = "What does it read?";

/// How the data set is generated; written to `synth_vlm.toml` beside it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthVlmConfig {
    pub world: WorldConfig,
    /// World items (images) drawn for training, before held-out combinations are dropped.
    pub train_images: u64,
    pub eval_images: u64,
    /// Two-image comparison questions.
    pub train_pairs: u64,
    pub eval_pairs: u64,
    /// In-context gauge episodes for training (k drawn from 0..=max_shots).
    pub train_episodes: u64,
    /// Evaluation episodes at each k.
    pub eval_episodes_per_k: u64,
    pub max_shots: usize,
    /// Colour-shape combinations ("green star") never shown in training.
    pub holdout_combos: Vec<String>,
    pub seed: u64,
}

impl Default for SynthVlmConfig {
    fn default() -> Self {
        Self {
            world: WorldConfig { max_objects: 4, ..WorldConfig::default() },
            train_images: 2000,
            eval_images: 300,
            train_pairs: 1000,
            eval_pairs: 100,
            train_episodes: 2000,
            eval_episodes_per_k: 60,
            max_shots: 4,
            holdout_combos: vec!["green star".into(), "blue triangle".into()],
            seed: 0,
        }
    }
}

/// What a generated data set holds, by split and type.
#[derive(Debug, Default, Serialize)]
pub struct SynthVlmStats {
    pub align: usize,
    pub train: std::collections::BTreeMap<String, usize>,
    pub eval: std::collections::BTreeMap<String, usize>,
    pub train_images_dropped: usize,
}

const EVAL_SALT: u64 = 0x5eed_e7a1;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Split {
    Train,
    Eval,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Eval => "eval",
        }
    }
}

/// One chat record: a user turn with images and a question, the assistant's answer, and the
/// fields evaluation reads (`type`, `answer`, and `k` for episodes).
fn record(images: &[String], question: &str, answer: &str, kind: &str) -> Value {
    json!({
        "images": images,
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
        "type": kind,
        "answer": answer,
    })
}

/// Writes `align.jsonl` (a caption per training image), `train.jsonl` and `eval.jsonl` (the
/// question types, comparisons and episodes), images under `images/{train,eval}/` and the
/// resolved config, under `dir`; with `train_images = 0`, the evaluation split alone.
pub fn write_synth_vlm(dir: &Path, cfg: &SynthVlmConfig) -> Result<SynthVlmStats> {
    cfg.world.validate()?;
    ensure!(cfg.eval_images > 0, "eval_images must be positive");
    for combo in &cfg.holdout_combos {
        let words: Vec<&str> = combo.split(' ').collect();
        ensure!(words.len() == 2, "holdout_combos entries are \"colour shape\", got {combo:?}");
    }
    let mut stats = SynthVlmStats::default();
    let mut align = Vec::new();
    // Without training images only the evaluation split is written (what `vlm eval` needs).
    let splits: &[Split] = if cfg.train_images > 0 { &[Split::Train, Split::Eval] } else { &[Split::Eval] };
    for &split in splits {
        let seed = match split {
            Split::Train => cfg.seed,
            Split::Eval => cfg.seed ^ EVAL_SALT,
        };
        let image_dir = dir.join("images").join(split.name());
        std::fs::create_dir_all(&image_dir).with_context(|| format!("creating {}", image_dir.display()))?;
        let n = if split == Split::Train { cfg.train_images } else { cfg.eval_images };
        let items: Vec<(u64, WorldItem)> =
            (0..n).into_par_iter().map(|i| (i, generate_item(&cfg.world, seed, i))).collect();
        let mut records = Vec::new();
        let mut kept: Vec<(String, &WorldItem)> = Vec::new();
        for (i, item) in &items {
            let held_out = item.scene.as_ref().is_some_and(|s| has_combo(s, &cfg.holdout_combos));
            if held_out && split == Split::Train {
                stats.train_images_dropped += 1;
                continue;
            }
            let name = format!("images/{}/{i:06}.png", split.name());
            item.image.save(dir.join(&name)).with_context(|| format!("writing {name}"))?;
            let mut rng = stream(seed, 1, *i);
            if split == Split::Train {
                let caption = &item.captions[rng.random_range(0..item.captions.len())];
                align.push(record(std::slice::from_ref(&name), "<image>\nDescribe the picture.", caption, "caption"));
            }
            for qa in &item.qa {
                let mut r =
                    record(std::slice::from_ref(&name), &format!("<image>\n{}", qa.question), &qa.answer, &qa.kind);
                r["held_out_combo"] = held_out.into();
                if let Some(scene) = &item.scene {
                    r["objects"] = scene.objects.len().into();
                }
                records.push(r);
            }
            kept.push((name, item));
        }
        let pairs = if split == Split::Train { cfg.train_pairs } else { cfg.eval_pairs };
        let scenes: Vec<&(String, &WorldItem)> = kept.iter().filter(|(_, it)| it.scene.is_some()).collect();
        ensure!(
            scenes.len() >= 2 || pairs == 0,
            "two-image questions need at least two scenes in the {} split",
            split.name()
        );
        for p in 0..pairs {
            let mut rng = stream(seed, 2, p);
            records.push(comparison(&scenes, &mut rng).with_context(|| format!("the {} split", split.name()))?);
        }
        let episodes: Vec<(u64, usize)> = match split {
            Split::Train => {
                (0..cfg.train_episodes).map(|e| (e, stream(seed, 3, e).random_range(0..=cfg.max_shots))).collect()
            }
            Split::Eval => (0..=cfg.max_shots)
                .flat_map(|k| (0..cfg.eval_episodes_per_k).map(move |e| (k as u64 * 1_000_000 + e, k)))
                .collect(),
        };
        let opts = RenderOptions { side: cfg.world.side, noise: cfg.world.noise, texture: cfg.world.texture };
        let rendered: Vec<Result<Value>> =
            episodes.par_iter().map(|&(e, k)| episode(dir, split, seed, e, k, &opts)).collect();
        for r in rendered {
            records.push(r?);
        }
        let counts = if split == Split::Train { &mut stats.train } else { &mut stats.eval };
        for r in &records {
            *counts.entry(r["type"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        }
        write_jsonl(&dir.join(format!("{}.jsonl", split.name())), &records)?;
    }
    stats.align = align.len();
    if cfg.train_images > 0 {
        write_jsonl(&dir.join("align.jsonl"), &align)?;
    }
    std::fs::write(dir.join("synth_vlm.toml"), toml::to_string_pretty(cfg)?)?;
    Ok(stats)
}

/// A random stream of its own for each (purpose, index), so no part of the data set moves when
/// another's size changes.
fn stream(seed: u64, purpose: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(purpose.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    rng.set_stream(index);
    rng
}

fn has_combo(scene: &Scene, combos: &[String]) -> bool {
    scene.objects.iter().any(|o| combos.iter().any(|c| *c == format!("{} {}", o.color.name(), o.shape.name())))
}

/// Draws before [`comparison`] gives up: scenes that never differ in any shape count (a tiny
/// split of one-object scenes) would otherwise loop for ever.
const COMPARISON_TRIES: usize = 10_000;

/// "Which image has more circles?" over two scenes whose counts of that shape differ.
fn comparison<R: Rng + ?Sized>(scenes: &[&(String, &WorldItem)], rng: &mut R) -> Result<Value> {
    for _ in 0..COMPARISON_TRIES {
        let a = scenes[rng.random_range(0..scenes.len())];
        let b = scenes[rng.random_range(0..scenes.len())];
        let shape = Shape::ALL[rng.random_range(0..Shape::ALL.len())];
        let count = |x: &(String, &WorldItem)| x.1.scene.as_ref().map_or(0, |s| s.count_shape(shape));
        let (ca, cb) = (count(a), count(b));
        if ca == cb {
            continue;
        }
        let question = format!("<image>\n<image>\nWhich image has more {}, the first or the second?", shape.plural());
        let answer = if ca > cb { "the first" } else { "the second" };
        return Ok(record(&[a.0.clone(), b.0.clone()], &question, answer, "multi"));
    }
    bail!("no two scenes of the split differ in a shape count: raise the image count or set the pairs to 0")
}

/// The value of major tick `tick` on `scale`.
fn tick_value((first, step, _): (i64, i64, u32), tick: u32) -> i64 {
    first + step * tick as i64
}

/// An unlabelled gauge on `scale` whose needle stands within a third of a tick of major tick
/// `tick`, and that tick's value.
pub(crate) fn episode_gauge<R: Rng + ?Sized>(scale: (i64, i64, u32), rng: &mut R) -> (Gauge, i64) {
    let (first, step, ticks) = scale;
    let tick = rng.random_range(0..ticks);
    let jitter: f32 = rng.random_range(-0.3..=0.3);
    let value = tick_value(scale, tick) as f32 + jitter * step as f32;
    let max = tick_value(scale, ticks - 1) as f32;
    (Gauge { min: first as f32, max, value, unit: String::new(), ticks }, tick_value(scale, tick))
}

/// Episode `e` with `k` worked examples: k + 1 gauges of one scale, the last one asked about.
fn episode(dir: &Path, split: Split, seed: u64, e: u64, k: usize, opts: &RenderOptions) -> Result<Value> {
    let mut rng = stream(seed, 4, e);
    let scale = EPISODE_SCALES[rng.random_range(0..EPISODE_SCALES.len())];
    let mut images = Vec::with_capacity(k + 1);
    let mut question = String::new();
    let mut answer = 0;
    for j in 0..=k {
        let (gauge, reading) = episode_gauge(scale, &mut rng);
        let name = format!("images/{}/episode_{e:07}_{j}.png", split.name());
        render_unlabelled_gauge(&gauge, opts, &mut rng)
            .save(dir.join(&name))
            .with_context(|| format!("writing {name}"))?;
        images.push(name);
        if j < k {
            question += &format!("<image>\nIt reads {reading}.\n");
        } else {
            question += &format!("<image>\n{EPISODE_QUESTION}");
            answer = reading;
        }
    }
    let mut r = record(&images, &question, &answer.to_string(), "gauge_kshot");
    r["k"] = k.into();
    r["scale"] = json!([scale.0, scale.1, scale.2]);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn episode_gauges_read_the_nearest_major_tick() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for scale in EPISODE_SCALES {
            for _ in 0..200 {
                let (g, reading) = episode_gauge(scale, &mut rng);
                let step = scale.1 as f32;
                let nearest = ((g.value - g.min) / step).round() * step + g.min;
                assert_eq!(nearest as i64, reading, "{g:?}");
                assert!((g.value - reading as f32).abs() <= 0.3 * step + 1e-4);
                assert_eq!(g.ticks, scale.2);
            }
        }
        let ticks: Vec<u32> = EPISODE_SCALES.iter().map(|s| s.2).collect();
        for t in &ticks {
            assert_eq!(ticks.iter().filter(|u| *u == t).count(), 2, "every scale has one look-alike");
        }
        let values: Vec<i64> = EPISODE_SCALES.iter().flat_map(|&s| (0..s.2).map(move |i| tick_value(s, i))).collect();
        let distinct: std::collections::BTreeSet<i64> = values.iter().copied().collect();
        assert_eq!(distinct.len(), values.len(), "one example must identify its scale");
    }
}
