//! From a task and a number of shots to scored documents, with lm-eval's semantics: the prompt
//! is the description, K labelled shots from the few-shot split, then the query; each request
//! type is scored the way lm-eval scores it; metrics aggregate as lm-eval aggregates them.
//!
//! Two choices differ from lm-eval, both documented: shots are drawn per document from a
//! ChaCha stream seeded by (seed, task, document), so K-shot prompts nest (the 4 shots of a
//! document include its 2) and do not depend on which other K or `--limit` run; and K shrinks,
//! per document, until the prompt and the longest answer fit the context (lm-eval cuts the
//! prompt from the left instead), the K used being reported per document.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use indicatif::ProgressBar;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::Value;

use super::metrics::{self, BOOTSTRAP_ITERS};
use super::model::{EvalModel, GenRequest, LlRequest};
use super::task::{OutputType, Target, Task};
use crate::special::IMAGE;

/// Most shots a document's draw holds.
pub const MAX_SHOTS: usize = 64;

/// Settings of one evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct RunOptions {
    pub limit: Option<usize>,
    pub batch_size: usize,
    /// Seeds the shot draws.
    pub seed: u64,
}

/// A document's prompt at the K it could hold.
#[derive(Clone, Debug)]
pub struct Prompt {
    pub context: String,
    pub images: Vec<PathBuf>,
    pub k_used: usize,
    /// Indices of the shots in the few-shot split, in prompt order.
    pub shots: Vec<usize>,
    /// The zero-shot prompt alone exceeded the context and was cut from the left (lm-eval's rule).
    pub truncated: bool,
}

/// One scored document, as `samples_<task>.jsonl` records it.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub doc_id: usize,
    pub doc: Value,
    pub target: String,
    pub prompt: String,
    pub k_used: usize,
    pub shots: Vec<usize>,
    pub truncated: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// Per choice (multiple choice), or of the target (loglikelihood, rolling, and the gold
    /// answer of a generation).
    pub loglikelihoods: Vec<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub is_greedy: Vec<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unconditional_loglikelihoods: Vec<f64>,
    /// Multiple choice: the gold choice, and the probability the model gives its chosen one
    /// (the softmax over the choices' log-likelihoods), what calibration is measured on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gold: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    pub prediction: String,
    /// The prediction after each `filter_list` pipeline, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub filtered: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, f64>,
}

/// An aggregated metric and its standard error (`None` where lm-eval writes "N/A").
#[derive(Clone, Debug)]
pub struct Metric {
    pub name: String,
    /// The filter pipeline the metric was computed after: "none" (lm-eval's name for no filter)
    /// or a `filter_list` name.
    pub filter: String,
    pub value: f64,
    pub stderr: Option<f64>,
    pub higher_is_better: bool,
}

/// A task scored at one K.
#[derive(Clone, Debug)]
pub struct TaskScore {
    pub task: String,
    pub k: usize,
    pub samples: Vec<Sample>,
    pub metrics: Vec<Metric>,
    /// Documents in the split, before `--limit`.
    pub original: usize,
}

impl TaskScore {
    /// Mean shots actually used.
    pub fn k_used_mean(&self) -> f64 {
        self.samples.iter().map(|s| s.k_used as f64).sum::<f64>() / self.samples.len().max(1) as f64
    }

    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// The metric reports lead with: the task's first, after its first filter when it has
    /// filters (a scratchpad's unfiltered text never equals the answer).
    pub fn headline(&self) -> &Metric {
        self.metrics.iter().find(|m| m.filter != "none").unwrap_or(&self.metrics[0])
    }
}

/// Shots a document may use, in draw order: a seeded sample of the few-shot split, without the
/// document itself when shots come from its own split.
pub fn shot_order(task: &Task, seed: u64, doc: usize) -> Vec<usize> {
    let pool = task.shots().len();
    if task.first_n() {
        return (0..pool).filter(|&i| !(task.same_split && i == doc)).take(MAX_SHOTS).collect();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(fnv1a(task.name()) ^ doc as u64);
    let draw = rand::seq::index::sample(&mut rng, pool, pool.min(MAX_SHOTS + 1)).into_vec();
    draw.into_iter().filter(|&i| !(task.same_split && i == doc)).take(MAX_SHOTS).collect()
}

/// The shots the few-shot split can give a document.
pub fn shots_available(task: &Task) -> usize {
    let pool = task.shots().len();
    if task.same_split {
        pool.saturating_sub(1).min(MAX_SHOTS)
    } else {
        pool.min(MAX_SHOTS)
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Rejects what cannot run before anything runs: too many shots for the split, images for a
/// text-only model.
pub fn check(task: &Task, model: &EvalModel, k: usize) -> Result<()> {
    if task.cfg.doc_to_image.is_some() && !model.is_multimodal() {
        bail!(
            "task {} has images (doc_to_image) but {} is a text-only GPT; give a VLM checkpoint",
            task.name(),
            model.dir.display()
        );
    }
    if task.cfg.output_type != OutputType::LoglikelihoodRolling {
        ensure!(k <= MAX_SHOTS, "task {}: {k} shots asked; at most {MAX_SHOTS} are supported", task.name());
        let n = shots_available(task);
        ensure!(
            k <= n,
            "task {}: {k} shots asked, but its few-shot split `{}` gives at most {n}",
            task.name(),
            task.cfg.shot_split()
        );
    }
    Ok(())
}

/// A document's text with one `<image>` placeholder per image: those the text lacks go first.
fn with_placeholders(text: &str, images: usize) -> Result<String> {
    let have = text.matches(IMAGE).count();
    ensure!(have <= images, "the text has {have} {IMAGE} placeholder(s) for {images} image(s)");
    Ok(format!("{}{text}", format!("{IMAGE}\n").repeat(images - have)))
}

/// A shot ([`Task::shot`]) with one placeholder per image, and its images.
fn labelled_shot(task: &Task, doc: &Value) -> Result<(String, Vec<PathBuf>)> {
    let images = image_paths(task, doc)?;
    Ok((with_placeholders(&task.shot(doc)?, images.len())?, images))
}

fn image_paths(task: &Task, doc: &Value) -> Result<Vec<PathBuf>> {
    let root = task.image_root();
    Ok(task.images(doc)?.into_iter().map(|p| root.join(p)).collect())
}

/// The K-shot prompt of document `i`, with K lowered until it and `reserve` more positions fit.
pub fn build_prompt(task: &Task, model: &EvalModel, i: usize, k: usize, seed: u64, reserve: usize) -> Result<Prompt> {
    let doc = &task.docs[i];
    let order = shot_order(task, seed, i);
    let mut shot_texts = Vec::new();
    let mut shot_images = Vec::new();
    for &s in order.iter().take(k) {
        let (text, images) = labelled_shot(task, &task.shots()[s])?;
        shot_texts.push(text);
        shot_images.push(images);
    }
    let images = image_paths(task, doc)?;
    let query = with_placeholders(&task.text(doc)?, images.len())?;
    let description = task.description(doc)?;
    let block = model.block_size();
    for k_used in (0..=k).rev() {
        let context = format!("{description}{}{query}", shot_texts[..k_used].concat());
        let mut all_images: Vec<PathBuf> = shot_images[..k_used].iter().flatten().cloned().collect();
        all_images.extend(images.iter().cloned());
        let positions = model.positions(&model.encode(&context)?);
        if positions + reserve <= block || k_used == 0 {
            let truncated = positions + reserve > block;
            ensure!(
                !(truncated && model.is_multimodal()),
                "document {}: its zero-shot prompt ({positions} positions with images) and {reserve} answer positions exceed the context of {block}",
                i + 1
            );
            return Ok(Prompt { context, images: all_images, k_used, shots: order[..k_used].to_vec(), truncated });
        }
    }
    unreachable!("k_used = 0 always returns")
}

/// lm-eval's `_encode_pair`: trailing whitespace of the context moves to the continuation, the
/// pair is encoded jointly and split where the context's own encoding ends; an empty context
/// becomes the end-of-text token (the prefix token of a model without BOS).
pub fn encode_pair(model: &EvalModel, context: &str, continuation: &str) -> Result<(Vec<i64>, Vec<i64>)> {
    if context.is_empty() {
        return Ok((vec![model.eot()], model.encode(continuation)?));
    }
    let trimmed = context.trim_end();
    let (context, continuation) = (trimmed, format!("{}{continuation}", &context[trimmed.len()..]));
    let whole = model.encode(&format!("{context}{continuation}"))?;
    let ctx = model.encode(context)?;
    let split = ctx.len().min(whole.len());
    Ok((whole[..split].to_vec(), whole[split..].to_vec()))
}

/// lm-eval's rolling windows of a token list: the first predicts up to `block` tokens after the
/// prefix token; each further one predicts the next up to `block` tokens, its context what
/// remains of the `block` tokens before its last prediction (one token for a full window).
pub fn rolling_windows(tokens: &[i64], prefix: i64, block: usize) -> Vec<(Vec<i64>, Vec<i64>)> {
    if tokens.is_empty() {
        return Vec::new();
    }
    let first = block.min(tokens.len());
    let mut out = vec![(vec![prefix], tokens[..first].to_vec())];
    let mut predicted = first;
    while predicted < tokens.len() {
        let len = block.min(tokens.len() - predicted);
        let end = predicted + len;
        out.push((tokens[end - block - 1..end - len].to_vec(), tokens[end - len..end].to_vec()));
        predicted = end;
    }
    out
}

/// Reserved positions after the prompt: the longest continuation, or the generation budget
/// (at most half the context, so a long `max_gen_toks` leaves room for shots).
fn reserve(task: &Task, model: &EvalModel, doc: &Value) -> Result<usize> {
    let delim = &task.cfg.target_delimiter;
    Ok(match task.cfg.output_type {
        OutputType::MultipleChoice => {
            let mut longest = 0;
            for c in task.choices(doc)? {
                longest = longest.max(model.encode(&format!("{delim}{c}"))?.len());
            }
            longest
        }
        OutputType::Loglikelihood => model.encode(&task.target_text(doc)?)?.len(),
        OutputType::GenerateUntil if model.is_multimodal() => task.cfg.max_gen_toks(),
        OutputType::GenerateUntil => task.cfg.max_gen_toks().min(model.block_size() / 2),
        OutputType::LoglikelihoodRolling => 0,
    })
}

/// What each document asks of the model.
enum Plan {
    Choices { first: usize, n: usize, uncond: Option<usize> },
    Target { ll: usize },
    Generate { gen: usize, gold: usize },
    Rolling { first: usize, n: usize },
}

/// Scores `task` at `k` shots on `model`.
pub fn evaluate(model: &EvalModel, task: &Task, k: usize, opts: &RunOptions, bar: &ProgressBar) -> Result<TaskScore> {
    check(task, model, k)?;
    let cfg = &task.cfg;
    let specs = cfg.metrics();
    let n_docs = opts.limit.map_or(task.docs.len(), |l| l.min(task.docs.len()));
    // A rolling log-likelihood scores the text alone: no prompt, so no shots (lm-eval too).
    let k_asked = k;
    let k = if cfg.output_type == OutputType::LoglikelihoodRolling { 0 } else { k };
    let mutual = specs.iter().any(|m| m.metric == "acc_mutual_info");
    let mut ll_reqs = Vec::new();
    let mut gen_reqs = Vec::new();
    let mut prompts = Vec::with_capacity(n_docs);
    let mut plans = Vec::with_capacity(n_docs);
    for i in 0..n_docs {
        let doc = &task.docs[i];
        let at = || format!("task {}: document {}", task.name(), i + 1);
        let prompt =
            build_prompt(task, model, i, k, opts.seed, reserve(task, model, doc).with_context(at)?).with_context(at)?;
        let pair = |cont: &str| -> Result<LlRequest> {
            let (context, continuation) = encode_pair(model, &prompt.context, cont)?;
            ensure!(!continuation.is_empty(), "{}: the continuation {cont:?} encodes to no tokens", at());
            Ok(LlRequest { context, continuation, images: prompt.images.clone() })
        };
        let plan = match cfg.output_type {
            OutputType::MultipleChoice => {
                let choices = task.choices(doc)?;
                let first = ll_reqs.len();
                for c in &choices {
                    ll_reqs.push(pair(&format!("{}{c}", cfg.target_delimiter))?);
                }
                let uncond = if mutual {
                    let start = ll_reqs.len();
                    for c in &choices {
                        let (context, continuation) =
                            encode_pair(model, cfg.unconditional_context(), &format!("{}{c}", cfg.target_delimiter))?;
                        ll_reqs.push(LlRequest { context, continuation, images: Vec::new() });
                    }
                    Some(start)
                } else {
                    None
                };
                Plan::Choices { first, n: choices.len(), uncond }
            }
            OutputType::Loglikelihood => {
                ll_reqs.push(pair(&task.target_text(doc)?)?);
                Plan::Target { ll: ll_reqs.len() - 1 }
            }
            OutputType::GenerateUntil => {
                let context = model.encode(&prompt.context)?;
                let context = context[context.len().saturating_sub(model.block_size() - 1)..].to_vec();
                let room = model.block_size().saturating_sub(model.positions(&context)).max(1);
                gen_reqs.push(GenRequest {
                    context,
                    images: prompt.images.clone(),
                    until: cfg.until(),
                    max_new: cfg.max_gen_toks().min(room),
                });
                // The gold answer's log-likelihood: its pass rate, defined before greedy decoding
                // ever gets it right (GPT-4's capability metric).
                ll_reqs.push(pair(&format!("{}{}", cfg.target_delimiter, task.target_text(doc)?))?);
                Plan::Generate { gen: gen_reqs.len() - 1, gold: ll_reqs.len() - 1 }
            }
            OutputType::LoglikelihoodRolling => {
                let tokens = model.encode(&task.target_text(doc)?)?;
                let first = ll_reqs.len();
                for (context, continuation) in rolling_windows(&tokens, model.eot(), model.block_size()) {
                    ll_reqs.push(LlRequest { context, continuation, images: Vec::new() });
                }
                Plan::Rolling { first, n: ll_reqs.len() - first }
            }
        };
        prompts.push(prompt);
        plans.push(plan);
    }
    bar.inc_length((ll_reqs.len() + gen_reqs.len()) as u64);
    let lls = model.loglikelihood(&ll_reqs, opts.batch_size, bar).with_context(|| format!("task {}", task.name()))?;
    let gens = model.generate(&gen_reqs, opts.batch_size, bar).with_context(|| format!("task {}", task.name()))?;

    let filters = cfg.filter_list.iter().map(|p| p.compile()).collect::<Result<Vec<_>>>()?;
    let mut samples = Vec::with_capacity(n_docs);
    for (i, (prompt, plan)) in prompts.into_iter().zip(plans).enumerate() {
        let doc = &task.docs[i];
        let mut s = Sample {
            doc_id: i,
            doc: doc.clone(),
            target: task.target_text(doc)?,
            prompt: prompt.context,
            k_used: prompt.k_used,
            shots: prompt.shots,
            truncated: prompt.truncated,
            choices: Vec::new(),
            loglikelihoods: Vec::new(),
            is_greedy: Vec::new(),
            unconditional_loglikelihoods: Vec::new(),
            gold: None,
            confidence: None,
            prediction: String::new(),
            filtered: BTreeMap::new(),
            metrics: BTreeMap::new(),
        };
        match plan {
            Plan::Choices { first, n, uncond } => {
                let choices = task.choices(doc)?;
                let gold = match task.target(doc)? {
                    Target::Index(g) => g,
                    Target::Text(t) => choices.iter().position(|c| *c == t).context("validated")?,
                };
                s.loglikelihoods = lls[first..first + n].iter().map(|l| l.0).collect();
                s.is_greedy = lls[first..first + n].iter().map(|l| l.1).collect();
                if let Some(u) = uncond {
                    s.unconditional_loglikelihoods = lls[u..u + n].iter().map(|l| l.0).collect();
                }
                let u = uncond.map(|_| s.unconditional_loglikelihoods.as_slice());
                for m in specs.iter().filter(|m| m.metric != "ece") {
                    let pred = metrics::choice_prediction(&m.metric, &s.loglikelihoods, &choices, u);
                    s.metrics.insert(m.metric.clone(), (pred == gold) as u8 as f64);
                }
                s.gold = Some(gold);
                s.confidence = Some(metrics::choice_confidence(&s.loglikelihoods));
                s.prediction = choices[metrics::argmax(&s.loglikelihoods)].clone();
                s.choices = choices;
            }
            Plan::Target { ll } => {
                s.loglikelihoods = vec![lls[ll].0];
                s.is_greedy = vec![lls[ll].1];
                s.metrics.insert("perplexity".into(), lls[ll].0);
                s.metrics.insert("acc".into(), lls[ll].1 as u8 as f64);
            }
            Plan::Generate { gen, gold } => {
                s.prediction = gens[gen].clone();
                s.loglikelihoods = vec![lls[gold].0];
                for f in &filters {
                    s.filtered.insert(f.name.clone(), f.apply(&s.prediction));
                }
                for m in &specs {
                    s.metrics.insert(m.metric.clone(), metrics::exact_match(&s.prediction, &s.target, m) as u8 as f64);
                    for (name, filtered) in &s.filtered {
                        let right = metrics::exact_match(filtered, &s.target, m);
                        s.metrics.insert(filtered_key(&m.metric, name), right as u8 as f64);
                    }
                }
                s.metrics.insert("log_pass_rate".into(), lls[gold].0);
            }
            Plan::Rolling { first, n } => {
                let ll: f64 = lls[first..first + n].iter().map(|l| l.0).sum();
                s.loglikelihoods = vec![ll];
                s.metrics.insert("loglikelihood".into(), ll);
            }
        }
        samples.push(s);
    }
    let metrics = aggregate(task, &samples, opts.seed)?;
    Ok(TaskScore { task: task.name().to_string(), k: k_asked, samples, metrics, original: task.docs.len() })
}

/// A sample's metric key after filter pipeline `filter`.
fn filtered_key(metric: &str, filter: &str) -> String {
    format!("{metric},{filter}")
}

/// Resamples of the ECE bootstrap: each one bins every document again, so fewer than the
/// perplexity's.
const ECE_BOOTSTRAP_ITERS: usize = 2_000;

/// (confidence in the chosen answer, whether it is the gold one) of each multiple-choice sample.
pub fn calibration_pairs(samples: &[Sample]) -> Vec<(f64, bool)> {
    samples.iter().filter_map(|s| Some((s.confidence?, metrics::argmax(&s.loglikelihoods) == s.gold?))).collect()
}

/// lm-eval's aggregations: means with `mean_stderr`, perplexity with a bootstrap, weighted
/// perplexities and bits per byte without a standard error. Generation tasks also report
/// gptlab's `log_pass_rate`, the mean log-probability of the gold answer, and multiple-choice
/// tasks `ece`, the expected calibration error over 10 confidence bins (bootstrap stderr).
fn aggregate(task: &Task, samples: &[Sample], seed: u64) -> Result<Vec<Metric>> {
    let column = |name: &str| samples.iter().map(|s| s.metrics[name]).collect::<Vec<f64>>();
    let mut out = Vec::new();
    let mut specs = task.cfg.metrics();
    // Every multiple-choice task also reports its calibration (GPT-4's "does confidence mean
    // anything"), listed or not.
    if task.cfg.output_type == OutputType::MultipleChoice && !specs.iter().any(|m| m.metric == "ece") {
        specs.push(super::task::MetricSpec::named("ece"));
    }
    for spec in specs {
        let name = spec.metric.as_str();
        let (value, stderr, higher) = match name {
            "perplexity" => {
                let lls = column("perplexity");
                (
                    metrics::perplexity(&lls),
                    metrics::bootstrap_stderr(&lls, metrics::perplexity, BOOTSTRAP_ITERS, seed),
                    false,
                )
            }
            "ece" => {
                let pairs = calibration_pairs(samples);
                let stat = |idx: &[f64]| {
                    let picked: Vec<(f64, bool)> = idx.iter().map(|&i| pairs[i as usize]).collect();
                    metrics::ece(&picked, metrics::CALIBRATION_BINS)
                };
                let all: Vec<f64> = (0..pairs.len()).map(|i| i as f64).collect();
                // The bootstrap resamples documents; ECE is not a mean, so lm-eval's rule applies.
                (stat(&all), metrics::bootstrap_stderr(&all, stat, ECE_BOOTSTRAP_ITERS, seed), false)
            }
            "word_perplexity" | "byte_perplexity" | "bits_per_byte" => {
                let lls = column("loglikelihood");
                let units: Vec<f64> = samples
                    .iter()
                    .map(|s| match name {
                        "word_perplexity" => metrics::count_words(&s.target) as f64,
                        _ => s.target.len() as f64,
                    })
                    .collect();
                let value = match name {
                    "bits_per_byte" => metrics::bits_per_byte(&lls, &units),
                    _ => metrics::weighted_perplexity(&lls, &units),
                };
                (value, None, false)
            }
            _ => {
                let xs = column(name);
                (metrics::mean(&xs), metrics::mean_stderr(&xs), true)
            }
        };
        let higher_is_better = spec.higher_is_better.unwrap_or(higher);
        out.push(Metric { name: name.to_string(), filter: "none".into(), value, stderr, higher_is_better });
        for p in &task.cfg.filter_list {
            let xs = column(&filtered_key(name, &p.name));
            let (value, stderr) = (metrics::mean(&xs), metrics::mean_stderr(&xs));
            out.push(Metric { name: name.to_string(), filter: p.name.clone(), value, stderr, higher_is_better });
        }
    }
    if task.cfg.output_type == OutputType::GenerateUntil {
        let xs = column("log_pass_rate");
        out.push(Metric {
            name: "log_pass_rate".into(),
            filter: "none".into(),
            value: metrics::mean(&xs),
            stderr: metrics::mean_stderr(&xs),
            higher_is_better: true,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_windows_follow_lm_eval() {
        // 7 tokens, context 3: [p]->1,2,3 ; [3]->4,5,6 ; [4,5,6]->7 (the last window keeps the
        // context its disjoint cut leaves: a[:len(a) - (len(b) - 1)]).
        let t = [1, 2, 3, 4, 5, 6, 7];
        let w = rolling_windows(&t, 0, 3);
        assert_eq!(w, vec![(vec![0], vec![1, 2, 3]), (vec![3], vec![4, 5, 6]), (vec![4, 5, 6], vec![7])]);
        assert_eq!(rolling_windows(&[5], 0, 3), vec![(vec![0], vec![5])]);
        assert!(rolling_windows(&[], 0, 3).is_empty());
    }

    #[test]
    fn placeholders_fill_in_front() {
        assert_eq!(with_placeholders("What is it?", 1).unwrap(), "<image>\nWhat is it?");
        assert_eq!(with_placeholders("<image> and <image>?", 2).unwrap(), "<image> and <image>?");
        assert!(with_placeholders("<image><image>", 1).is_err());
    }
}
