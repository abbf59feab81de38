//! `gptlab vlm eval`: accuracy per question type on held-out synthetic VQA, beside the same
//! model asked the same questions with the images removed (what the text alone gives away) and
//! chance; gauge reading at k = 0.. in-context examples; `results.json`, `predictions.jsonl` and
//! `report.md` with bar charts and a grid of example images with question, answer and truth.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ab_glyph::FontRef;
use anyhow::{ensure, Context, Result};
use gptlab_vision::image::{imageops, Rgb, RgbImage};
use gptlab_vision::transform::{load_image, resize_center_crop};
use gptlab_vision::world::WorldConfig;
use imageproc::drawing::draw_text_mut;
use serde::Serialize;
use tch::Device;

use super::infer::{answer_batch, chat_prompt, Prompt};
use crate::checkpoint;
use crate::data::multimodal::{read_records, Message, Part};
use crate::infer::generate::SampleOptions;
use crate::models::vlm::Vlm;
use crate::plot::{BarChart, LinePlot, Series};
use crate::report::Report;
use crate::synth::vlm::{write_synth_vlm, SynthVlmConfig};

/// What `vlm eval` reads and how long its answers may be.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Evaluation records (a `data synth-vlm` eval.jsonl); generated under `out/data` when absent.
    pub data: Option<PathBuf>,
    pub image_root: Option<PathBuf>,
    /// At most this many records of each type (and of each k), in file order.
    pub limit_per_type: Option<usize>,
    pub batch_size: usize,
    pub max_new_tokens: usize,
    /// Cells of the example grid.
    pub examples: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { data: None, image_root: None, limit_per_type: None, batch_size: 32, max_new_tokens: 8, examples: 12 }
    }
}

/// Accuracy of one question type (or of all, n-weighted).
#[derive(Clone, Debug, Serialize)]
pub struct TypeResult {
    pub accuracy: f64,
    pub text_only_accuracy: f64,
    /// One over the number of distinct true answers of the type in the evaluation set.
    pub chance: f64,
    pub n: usize,
}

/// `results.json`.
#[derive(Clone, Debug, Serialize)]
pub struct VlmEvalResults {
    pub types: BTreeMap<String, TypeResult>,
    pub overall: TypeResult,
    /// Accuracy of the in-context gauge episodes by number of worked examples k.
    pub gauge_kshot: BTreeMap<String, f64>,
    /// Share of the episodes' answers that are a value of the episode's own scale, by k: whether
    /// the examples told the model which scale it is reading, right needle or not.
    pub gauge_kshot_scale: BTreeMap<String, f64>,
    /// Accuracy by question type and number of objects in the scene (records that say it): how
    /// much is seeing an attribute and how much finding the object a question names.
    pub by_objects: BTreeMap<String, BTreeMap<String, f64>>,
    /// Questions about scenes holding a colour-shape combination kept out of training.
    pub held_out_combo: Option<TypeResult>,
    /// Records left out because prompt and answer do not fit the decoder's context.
    pub skipped_too_long: usize,
}

/// One evaluated question.
#[derive(Clone, Debug, Serialize)]
struct Prediction {
    kind: String,
    k: Option<u64>,
    question: String,
    truth: String,
    answer: String,
    correct: bool,
    text_only_answer: Option<String>,
    text_only_correct: Option<bool>,
    held_out_combo: bool,
    /// An episode's scale: first value, step, major ticks.
    scale: Option<(i64, i64, u32)>,
    /// Objects in the scene asked about.
    objects: Option<u64>,
    images: Vec<PathBuf>,
}

impl Prediction {
    /// Whether the answer is one of the tick values of the episode's scale.
    fn on_scale(&self) -> bool {
        let Some((first, step, ticks)) = self.scale else { return false };
        let Ok(v) = normalise(&self.answer).parse::<i64>() else { return false };
        (0..ticks as i64).any(|i| first + step * i == v)
    }
}

/// Answers compare without case, surrounding space or a final full stop.
pub fn normalise(answer: &str) -> String {
    answer.trim().trim_end_matches('.').trim().to_lowercase()
}

/// The default evaluation records: held-out synthetic questions sized to the model, written
/// under `out/data`.
fn synthetic_eval_data(model: &Vlm, out: &Path) -> Result<PathBuf> {
    let dir = out.join("data");
    let cfg = SynthVlmConfig {
        world: WorldConfig { side: model.cfg.vision.image_size as u32, ..SynthVlmConfig::default().world },
        train_images: 0,
        train_pairs: 0,
        train_episodes: 0,
        ..SynthVlmConfig::default()
    };
    eprintln!("[vlm eval] writing held-out synthetic questions to {}", dir.display());
    write_synth_vlm(&dir, &cfg)?;
    Ok(dir.join("eval.jsonl"))
}

/// The user's last line of text: the question itself, for the report.
fn question_text(messages: &[Message]) -> String {
    let text: String = messages
        .last()
        .map(|m| m.parts.iter().filter_map(|p| if let Part::Text(t) = p { Some(t.as_str()) } else { None }).collect())
        .unwrap_or_default();
    text.trim().lines().last().unwrap_or_default().to_string()
}

fn without_images(messages: &[Message]) -> Vec<Message> {
    messages
        .iter()
        .map(|m| Message {
            role: m.role,
            parts: m.parts.iter().filter(|p| !matches!(p, Part::Image(_))).cloned().collect(),
        })
        .collect()
}

/// Evaluates checkpoint `ckpt` and writes its results under `out`.
pub fn evaluate(ckpt: &Path, out: &Path, device: Device, opts: &EvalOptions) -> Result<VlmEvalResults> {
    ensure!(opts.batch_size > 0, "--batch-size must be positive");
    let loaded = checkpoint::load::<Vlm>(ckpt, device)?;
    let tok = loaded.tokenizer()?;
    let model = &loaded.model;
    // Records the user names are read before anything is written, so bad data leaves no output.
    let data = match &opts.data {
        Some(path) => path.clone(),
        None => {
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            synthetic_eval_data(model, out)?
        }
    };
    let items = read_records(&data, opts.image_root.as_deref())?;
    let n = model.cfg.tokens_per_image() as usize;
    let block = model.cfg.text.block_size as usize;
    let fits = |p: &Prompt| p.ids.len() + p.images.len() * (n - 1) + opts.max_new_tokens <= block;

    let mut taken: BTreeMap<(String, Option<u64>), usize> = BTreeMap::new();
    let mut cases = Vec::new();
    let mut skipped_too_long = 0;
    for item in &items {
        let (messages, truth) = item.record.split_last_answer().with_context(|| item.origin.clone())?;
        let kind = item.raw["type"].as_str().unwrap_or("unknown").to_string();
        let k = item.raw["k"].as_u64();
        let count = taken.entry((kind.clone(), k)).or_default();
        if opts.limit_per_type.is_some_and(|l| *count >= l) {
            continue;
        }
        let prompt = chat_prompt(&tok, &messages).with_context(|| item.origin.clone())?;
        if !fits(&prompt) {
            skipped_too_long += 1;
            continue;
        }
        *count += 1;
        let text_only = (k.is_none()).then(|| chat_prompt(&tok, &without_images(&messages))).transpose()?;
        let held_out_combo = item.raw["held_out_combo"].as_bool().unwrap_or(false);
        let scale = serde_json::from_value::<(i64, i64, u32)>(item.raw["scale"].clone()).ok();
        let about = (held_out_combo, scale, item.raw["objects"].as_u64());
        cases.push((kind, k, question_text(&messages), truth, prompt, text_only, about));
    }
    ensure!(!cases.is_empty(), "no evaluation record fits the decoder's context of {block}");
    if skipped_too_long > 0 {
        eprintln!("[vlm eval] {skipped_too_long} record(s) do not fit the context of {block} and are left out");
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let sample = SampleOptions { temperature: 0.0, max_new_tokens: opts.max_new_tokens, ..SampleOptions::default() };
    let bar = indicatif::ProgressBar::new(cases.len() as u64);
    let mut predictions = Vec::with_capacity(cases.len());
    for chunk in cases.chunks(opts.batch_size) {
        let prompts: Vec<Prompt> = chunk.iter().map(|c| c.4.clone()).collect();
        let answers = answer_batch(model, &tok, &prompts, &sample)?;
        let text_prompts: Vec<Prompt> = chunk.iter().filter_map(|c| c.5.clone()).collect();
        let mut text_answers = answer_batch(model, &tok, &text_prompts, &sample)?.into_iter();
        for (case, answer) in chunk.iter().zip(answers) {
            let (kind, k, question, truth, prompt, text_only, (held_out_combo, scale, objects)) = case;
            let text_only_answer = text_only.as_ref().and_then(|_| text_answers.next());
            predictions.push(Prediction {
                kind: kind.clone(),
                k: *k,
                question: question.clone(),
                truth: truth.clone(),
                correct: normalise(&answer) == normalise(truth),
                text_only_correct: text_only_answer.as_ref().map(|a| normalise(a) == normalise(truth)),
                answer,
                text_only_answer,
                held_out_combo: *held_out_combo,
                scale: *scale,
                objects: *objects,
                images: prompt.images.clone(),
            });
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let results = summarise(&predictions, skipped_too_long);
    crate::jsonl::write_jsonl(&out.join("predictions.jsonl"), &predictions)?;
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&results)? + "\n")?;
    write_report(out, ckpt, &data, &results, &predictions, opts.examples)?;
    Ok(results)
}

fn type_result(preds: &[&Prediction]) -> TypeResult {
    let n = preds.len();
    let share = |f: &dyn Fn(&Prediction) -> bool| preds.iter().filter(|p| f(p)).count() as f64 / n.max(1) as f64;
    let truths: std::collections::BTreeSet<String> = preds.iter().map(|p| normalise(&p.truth)).collect();
    TypeResult {
        accuracy: share(&|p| p.correct),
        text_only_accuracy: share(&|p| p.text_only_correct == Some(true)),
        chance: 1.0 / truths.len().max(1) as f64,
        n,
    }
}

fn summarise(predictions: &[Prediction], skipped_too_long: usize) -> VlmEvalResults {
    let mut by_type: BTreeMap<String, Vec<&Prediction>> = BTreeMap::new();
    let mut by_k: BTreeMap<u64, Vec<&Prediction>> = BTreeMap::new();
    for p in predictions {
        match p.k {
            Some(k) => by_k.entry(k).or_default().push(p),
            None => by_type.entry(p.kind.clone()).or_default().push(p),
        }
    }
    let types: BTreeMap<String, TypeResult> = by_type.iter().map(|(k, v)| (k.clone(), type_result(v))).collect();
    let total: usize = types.values().map(|t| t.n).sum();
    let weighted =
        |f: fn(&TypeResult) -> f64| types.values().map(|t| f(t) * t.n as f64).sum::<f64>() / total.max(1) as f64;
    let overall = TypeResult {
        accuracy: weighted(|t| t.accuracy),
        text_only_accuracy: weighted(|t| t.text_only_accuracy),
        chance: weighted(|t| t.chance),
        n: total,
    };
    let gauge_kshot = by_k.iter().map(|(k, v)| (k.to_string(), type_result(v).accuracy)).collect();
    let on_scale = |v: &[&Prediction]| v.iter().filter(|p| p.on_scale()).count() as f64 / v.len().max(1) as f64;
    let gauge_kshot_scale = by_k.iter().map(|(k, v)| (k.to_string(), on_scale(v))).collect();
    let mut by_objects: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for (kind, preds) in &by_type {
        let mut groups: BTreeMap<u64, Vec<&Prediction>> = BTreeMap::new();
        for p in preds {
            if let Some(n) = p.objects {
                groups.entry(n).or_default().push(p);
            }
        }
        if !groups.is_empty() {
            let accuracy = groups.iter().map(|(n, v)| (n.to_string(), type_result(v).accuracy)).collect();
            by_objects.insert(kind.clone(), accuracy);
        }
    }
    let held: Vec<&Prediction> = predictions.iter().filter(|p| p.held_out_combo).collect();
    let held_out_combo = (!held.is_empty()).then(|| type_result(&held));
    VlmEvalResults { types, overall, gauge_kshot, gauge_kshot_scale, by_objects, held_out_combo, skipped_too_long }
}

/// Table rows (type, accuracy, text only, chance, n) of every type and, last, of all of them,
/// with `digits` decimals.
pub fn result_rows(r: &VlmEvalResults, digits: usize) -> Vec<Vec<String>> {
    let overall = "overall".to_string();
    r.types
        .iter()
        .chain([(&overall, &r.overall)])
        .map(|(name, t)| {
            vec![
                name.clone(),
                format!("{:.*}", digits, t.accuracy),
                format!("{:.*}", digits, t.text_only_accuracy),
                format!("{:.*}", digits, t.chance),
                t.n.to_string(),
            ]
        })
        .collect()
}

fn write_report(
    out: &Path,
    ckpt: &Path,
    data: &Path,
    r: &VlmEvalResults,
    predictions: &[Prediction],
    examples: usize,
) -> Result<()> {
    let mut report = Report::new("VLM evaluation on held-out synthetic questions");
    report.paragraph(&format!(
        "Checkpoint `{}`, questions `{}`. Greedy answers, compared without case or a final full stop. \
         *Text only* asks the same model the same question with its images removed; *chance* is one over \
         the number of distinct true answers of the type.",
        ckpt.display(),
        data.display()
    ));
    let mut rows = result_rows(r, 3);
    if let Some(h) = &r.held_out_combo {
        rows.push(vec![
            "held-out colour-shape combinations".into(),
            format!("{:.3}", h.accuracy),
            format!("{:.3}", h.text_only_accuracy),
            "".into(),
            h.n.to_string(),
        ]);
    }
    report.heading("Accuracy by question type").table(&["type", "accuracy", "text only", "chance", "n"], &rows);
    if !r.by_objects.is_empty() {
        let counts: std::collections::BTreeSet<&String> = r.by_objects.values().flat_map(|m| m.keys()).collect();
        let mut header = vec!["type".to_string()];
        header.extend(counts.iter().map(|n| format!("{n} object(s)")));
        let rows: Vec<Vec<String>> = r
            .by_objects
            .iter()
            .map(|(kind, m)| {
                let mut row = vec![kind.clone()];
                row.extend(counts.iter().map(|n| m.get(*n).map_or(String::new(), |a| format!("{a:.3}"))));
                row
            })
            .collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        report
            .paragraph(
                "By the number of objects in the scene: with one object a question needs only the attribute \
                 seen; with more, the model must also find the object the question names.",
            )
            .table(&header, &rows);
    }
    let names: Vec<String> = r.types.keys().cloned().collect();
    let column = |f: fn(&TypeResult) -> f64| r.types.values().map(f).collect::<Vec<f64>>();
    BarChart {
        title: "VQA accuracy by question type".into(),
        y_label: "accuracy".into(),
        categories: names,
        groups: vec![
            ("with images".into(), column(|t| t.accuracy)),
            ("text only".into(), column(|t| t.text_only_accuracy)),
            ("chance".into(), column(|t| t.chance)),
        ],
        y_max: 1.05,
    }
    .save(&out.join("accuracy_by_type"))?;
    report.image("accuracy by type", "accuracy_by_type.png");
    if !r.gauge_kshot.is_empty() {
        let rows: Vec<Vec<String>> = r
            .gauge_kshot
            .iter()
            .map(|(k, a)| vec![k.clone(), format!("{a:.3}"), format!("{:.3}", r.gauge_kshot_scale[k])])
            .collect();
        report
            .heading("Reading an unlabelled gauge from k worked examples")
            .paragraph(
                "Each episode's gauges share one scale drawn without labels; every scale has a look-alike, \
                 so only the examples in the prompt say how to read the last one (answer: the nearest major \
                 tick). *On scale* is the share of answers that are a value of the episode's scale at all: \
                 whether the examples told the model which scale it reads, whatever the needle says.",
            )
            .table(&["k", "accuracy", "on scale"], &rows);
        let points = |m: &BTreeMap<String, f64>| -> Vec<(f64, f64)> {
            m.iter().filter_map(|(k, a)| Some((k.parse::<f64>().ok()?, *a))).collect()
        };
        LinePlot {
            title: "in-context gauge reading".into(),
            x_label: "worked examples in the prompt (k)".into(),
            y_label: "share of episodes".into(),
            series: vec![
                Series::line("accuracy", points(&r.gauge_kshot)),
                Series::line("answer on the episode's scale", points(&r.gauge_kshot_scale)),
            ],
            log_x: false,
            log_y: false,
        }
        .save(&out.join("gauge_kshot"))?;
        report.image("gauge accuracy against k", "gauge_kshot.png");
    }
    if r.skipped_too_long > 0 {
        report.paragraph(&format!(
            "{} record(s) did not fit the decoder's context and were left out.",
            r.skipped_too_long
        ));
    }
    if examples > 0 {
        example_grid(predictions, examples, &out.join("examples.png"))?;
        report.heading("Examples").image("example questions", "examples.png");
    }
    report.write(&out.join("report.md"))
}

const CELL: u32 = 256;
const PICTURE: u32 = 128;

/// A grid of example questions, one per type in turn: the record's last image, then the
/// question, the model's answer (green when right, red when wrong) and the truth, drawn with
/// imageproc's text rendering in the embedded font.
fn example_grid(predictions: &[Prediction], count: usize, path: &Path) -> Result<()> {
    let font = FontRef::try_from_slice(crate::plot::FONT_BYTES).context("the embedded font")?;
    let mut kinds: Vec<&str> = predictions.iter().map(|p| p.kind.as_str()).collect();
    kinds.sort();
    kinds.dedup();
    let mut chosen: Vec<&Prediction> = Vec::new();
    for round in 0.. {
        let before = chosen.len();
        for kind in &kinds {
            if let Some(p) = predictions.iter().filter(|p| p.kind == *kind && !p.images.is_empty()).nth(round) {
                if chosen.len() < count {
                    chosen.push(p);
                }
            }
        }
        if chosen.len() == before || chosen.len() >= count {
            break;
        }
    }
    let cols = chosen.len().clamp(1, 4) as u32;
    let rows = chosen.len().div_ceil(4).max(1) as u32;
    let height = PICTURE + 70;
    let mut grid = RgbImage::from_pixel(cols * CELL, rows * height, Rgb([255, 255, 255]));
    for (i, p) in chosen.iter().enumerate() {
        let (x, y) = ((i as u32 % 4) * CELL, (i as u32 / 4) * height);
        let last = p.images.last().context("an example has an image")?;
        let img = resize_center_crop(&load_image(last)?, PICTURE);
        let img = imageops::resize(&img, PICTURE, PICTURE, imageops::FilterType::Nearest);
        imageops::overlay(&mut grid, &img, (x + (CELL - PICTURE) / 2) as i64, y as i64 + 4);
        let fit = |s: &str| s.chars().take(32).collect::<String>();
        let lines = [
            (format!("{}: {}", p.kind, fit(&p.question)), Rgb([0, 0, 0])),
            (format!("model: {}", fit(&p.answer)), if p.correct { Rgb([0, 128, 0]) } else { Rgb([200, 0, 0]) }),
            (format!("truth: {}", fit(&p.truth)), Rgb([60, 60, 60])),
        ];
        for (j, (text, color)) in lines.iter().enumerate() {
            draw_text_mut(
                &mut grid,
                *color,
                x as i32 + 4,
                (y + PICTURE + 10 + 18 * j as u32) as i32,
                13.0,
                &font,
                text,
            );
        }
    }
    grid.save(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
