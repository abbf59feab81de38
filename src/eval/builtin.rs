//! Built-in tasks, generated from the embedded world: GPT-3's arithmetic and word-scrambling
//! families, the in-context rule tasks, scene questions in text and a LAMBADA-style last word.
//! Every scored item is held out of the synthetic training corpus (its held-out operand pairs and
//! words at the corpus's default fractions), freshly drawn (scenes, pictures) or a rule drawn at
//! random (the word and linear maps), so nothing scored was seen in training. Each task is an lm-eval task file plus JSONL splits, the same thing a user
//! writes: `gptlab eval tasks --write DIR` puts them on disk for lm-eval or for editing.

use anyhow::{bail, ensure, Context, Result};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::path::Path;

use super::task::{Task, TaskConfig};
use crate::synth::arithmetic::{ArithFamily, ArithFormat, ArithProblem};
use crate::synth::icl::Scramble;
use crate::synth::labelled;
use crate::synth::lexicon::{held_out_words, train_words};
use crate::synth::scene::{list_objects, Color, Scene, Shape, MAX_DESCRIBED_OBJECTS};
use crate::synth::vlm::{episode_gauge, EPISODE_QUESTION, EPISODE_SCALES};
use crate::synth::{any, Holdout};
use gptlab_vision::image::RgbImage;
use gptlab_vision::render::{render_unlabelled_gauge, RenderOptions};
use gptlab_vision::world::{generate_item, WorldConfig};
use rayon::prelude::*;

/// Documents scored per task (the synthetic crawl's contaminated pages quote these), and shots
/// to draw from.
pub const TEST_DOCS: usize = 300;
const SHOT_DOCS: usize = 100;

/// Pairs of the fixed word map `word_map` asks about: more than one shot can show, so
/// accuracy grows with K as the query's own pair becomes likely to be among the shots.
const WORD_MAP_PAIRS: usize = 6;

/// Every built-in task, with what it measures.
pub const TASKS: [(&str, &str); 44] = [
    ("arithmetic_2da", "GPT-3 2-digit addition, generated answer"),
    ("arithmetic_2ds", "GPT-3 2-digit subtraction"),
    ("arithmetic_3da", "GPT-3 3-digit addition"),
    ("arithmetic_3ds", "GPT-3 3-digit subtraction"),
    ("arithmetic_4da", "GPT-3 4-digit addition"),
    ("arithmetic_4ds", "GPT-3 4-digit subtraction"),
    ("arithmetic_5da", "GPT-3 5-digit addition"),
    ("arithmetic_5ds", "GPT-3 5-digit subtraction"),
    ("arithmetic_2dm", "GPT-3 2-digit multiplication"),
    ("arithmetic_1dc", "GPT-3 one-digit composite, e.g. 6+(4*8)"),
    ("arithmetic_2da_mc", "2-digit addition as multiple choice among near misses"),
    (
        "arithmetic_2da_cot",
        "arithmetic_2da's problems worked digit by digit (the corpus's scratchpad), answer extracted",
    ),
    ("arithmetic_3da_cot", "arithmetic_3da's problems with the scratchpad"),
    ("arithmetic_4da_cot", "arithmetic_4da's problems with the scratchpad"),
    ("arithmetic_5da_cot", "arithmetic_5da's problems with the scratchpad"),
    ("arithmetic_2dm_cot", "arithmetic_2dm's problems by partial products"),
    ("cycle_letters", "GPT-3 word scrambling: letters cycled"),
    ("anagrams1", "GPT-3 word scrambling: all but the first and last letter shuffled"),
    ("anagrams2", "GPT-3 word scrambling: all but the first and last two letters shuffled"),
    ("random_insertion", "GPT-3 word scrambling: a symbol between letters"),
    ("reversed_words", "GPT-3 word scrambling: the word reversed"),
    ("word_map", "in-context rule: a fixed random map between words, in no training document"),
    ("linear_map", "in-context rule: a fixed linear map y = a x + b"),
    ("scene_count", "scene question answering in text: how many objects of a colour or shape"),
    ("scene_count_mc", "the same as multiple choice over 0..5"),
    ("scene_entailment", "labelled: does the sentence hold for the described scene (true/false); fine-tunable"),
    ("review_sentiment", "labelled: is the synthetic review positive or negative; fine-tunable"),
    ("scene_paraphrase", "labelled: do two listings describe the same picture (yes/no); fine-tunable"),
    ("scene_qa", "labelled: a question on a described scene, four choices; fine-tunable"),
    ("lambada_scene", "LAMBADA-style last word: an object named earlier in the description"),
    ("lambada_scene_rolling", "the same descriptions scored whole (loglikelihood_rolling)"),
    ("vqa_count", "VLM: how many objects of a colour or shape the picture shows"),
    ("vqa_colour", "VLM: the colour of a named object"),
    ("vqa_shape", "VLM: the shape of a named object"),
    ("vqa_position", "VLM: where in the picture an object is"),
    ("vqa_relation", "VLM: whether one object is left of, right of, above or below another"),
    ("vqa_gauge", "VLM: reading a labelled gauge"),
    ("vqa_pointing", "VLM: visual pointing, what the marker points at"),
    (
        "gauge_reading_1",
        "VLM, in context: unlabelled gauges of scale 1 (0 to 100 in 20s); K worked examples show the scale",
    ),
    ("gauge_reading_2", "VLM, in context: scale 2 (200 to 450 in 50s), drawn like scale 1"),
    ("gauge_reading_3", "VLM, in context: scale 3 (5 to 65 in 10s)"),
    ("gauge_reading_4", "VLM, in context: scale 4 (120 to 150 in 5s), drawn like scale 3"),
    ("gauge_reading_5", "VLM, in context: scale 5 (160 to 176 in 2s)"),
    ("gauge_reading_6", "VLM, in context: scale 6 (500 to 700 in 25s), drawn like scale 5"),
];

/// Images rendered for the multimodal tasks, and documents of each split.
const MM_TEST_DOCS: usize = 200;
const MM_SHOT_DOCS: usize = 60;

/// The world the multimodal tasks draw: `data synth-vlm`'s defaults (64 px, up to 4 objects), on
/// seeds of their own, so no scored picture is one a VLM trained on.
fn mm_world() -> WorldConfig {
    WorldConfig { side: 64, max_objects: 4, ..WorldConfig::default() }
}

/// Bumped when the multimodal tasks' generation changes, so cached copies are made anew.
const MM_VERSION: u32 = 2;

/// The names of the built-in tasks.
pub fn names() -> Vec<&'static str> {
    TASKS.iter().map(|(n, _)| *n).collect()
}

/// A built-in task file and its splits (`test`, and `train` for shots).
pub struct Generated {
    pub yaml: String,
    pub test: Vec<Value>,
    pub train: Vec<Value>,
    /// Pictures the documents name, by path relative to the task file.
    pub images: Vec<(String, RgbImage)>,
}

/// A built-in task, ready to run. A multimodal one is written once to a cache folder (its
/// documents name image files) and read back as any task file is.
pub fn load(name: &str) -> Result<Task> {
    if is_multimodal(name) {
        let dir = std::env::temp_dir().join(format!("gptlab-tasks-v{MM_VERSION}")).join(name);
        let yaml = dir.join(format!("{name}.yaml"));
        if !yaml.is_file() {
            // Unique per process and per call: two threads may make the same task at once.
            static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = dir.with_extension(format!("tmp{}-{call}", std::process::id()));
            write(name, &tmp)?;
            if std::fs::rename(&tmp, &dir).is_err() {
                // Another process wrote the same files first.
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        return Task::from_file(&yaml);
    }
    let g = generate(name)?;
    let cfg = TaskConfig::from_yaml(&g.yaml).with_context(|| format!("built-in task {name}"))?;
    Task::new(cfg, None, g.test, g.train, false)
}

fn is_multimodal(name: &str) -> bool {
    name.starts_with("vqa_") || name.starts_with("gauge_reading_")
}

/// Writes a built-in task as `DIR/<name>.yaml` with `<name>_test.jsonl`, `<name>_train.jsonl`
/// and, for multimodal tasks, the pictures under `DIR/<name>_images/`.
pub fn write(name: &str, dir: &Path) -> Result<()> {
    let g = generate(name)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, &g.yaml).with_context(|| format!("writing {}", path.display()))?;
    crate::jsonl::write_jsonl(&dir.join(format!("{name}_test.jsonl")), &g.test)?;
    crate::jsonl::write_jsonl(&dir.join(format!("{name}_train.jsonl")), &g.train)?;
    g.images.par_iter().try_for_each(|(rel, img)| -> Result<()> {
        let file = dir.join(rel);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        img.save(&file).with_context(|| format!("writing {}", file.display()))
    })
}

fn seeded(name: &str, split: &str) -> ChaCha8Rng {
    let h = format!("{name}/{split}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    ChaCha8Rng::seed_from_u64(h)
}

/// The lm-eval header every built-in shares: JSONL splits beside the task file.
fn header(name: &str, output_type: &str) -> String {
    format!(
        "task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {name}_test.jsonl\n    train: {name}_train.jsonl\ntest_split: test\nfewshot_split: train\noutput_type: {output_type}\n"
    )
}

/// The addition tasks' place in the chain-of-thought probe: `metadata.steps` is the number of
/// digit columns a worked answer takes, `metadata.series` whether the answer is direct or worked,
/// so the report can put accuracy against steps for each form. Other families have none.
fn steps_metadata(family: ArithFamily, series: &str) -> String {
    use ArithFamily::*;
    match family {
        Add2 | Add3 | Add4 | Add5 => format!("metadata:\n  steps: {}\n  series: {series}\n", family.digits()),
        _ => String::new(),
    }
}

/// A generated answer, cut at the end of its line and compared without surrounding spaces.
const GENERATE_TAIL: &str = "generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 12\nmetric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n    regexes_to_ignore: [\"^\\\\s+\", \"\\\\s+$\"]\n";

/// Generates built-in task `name`.
pub fn generate(name: &str) -> Result<Generated> {
    let split = |f: &mut dyn FnMut(&mut ChaCha8Rng) -> Value| -> (Vec<Value>, Vec<Value>) {
        // A scratchpad task asks its direct twin's problems, drawn from the same streams.
        let stream = name.strip_suffix("_cot").unwrap_or(name);
        let mut rng = seeded(stream, "test");
        let test = (0..TEST_DOCS).map(|_| f(&mut rng)).collect();
        let mut rng = seeded(stream, "train");
        let train = (0..SHOT_DOCS).map(|_| f(&mut rng)).collect();
        (test, train)
    };
    if let Some(kind) = name.strip_prefix("vqa_") {
        return vqa(name, kind);
    }
    if let Some(scale) = name.strip_prefix("gauge_reading_") {
        return gauge_reading(name, scale);
    }
    let holdout = Holdout::default();
    let (yaml, (test, train)) = match name {
        n if n.starts_with("arithmetic_") && n.ends_with("_cot") => {
            let family = arithmetic_family(&n["arithmetic_".len()..n.len() - "_cot".len()])?;
            // Only additions and multiplications have a worked form in the corpus.
            use ArithFamily::*;
            ensure!(
                matches!(family, Add2 | Add3 | Add4 | Add5 | Mul2),
                "unknown task {n:?}: scratchpad tasks are {}",
                names().into_iter().filter(|t| t.ends_with("_cot")).collect::<Vec<_>>().join(", ")
            );
            let yaml = format!(
                "{}doc_to_text: prompt\ntarget_delimiter: \"\\n\"\ndoc_to_target: answer\nfewshot_config:\n  doc_to_target: steps\ngeneration_kwargs:\n  until: [\"\\n\\n\"]\n  max_gen_toks: 160\nfilter_list:\n  - name: answer\n    filter:\n      - function: regex\n        regex_pattern: \"So .* = (-?[0-9]+)\"\n      - function: take_first\nmetric_list:\n  - metric: exact_match\n{}",
                header(n, "generate_until"),
                steps_metadata(family, "scratchpad")
            );
            (yaml, split(&mut |rng| worked_doc(rng, family, &holdout)))
        }
        n if n.starts_with("arithmetic_") && !n.ends_with("_mc") => {
            let family = arithmetic_family(&n["arithmetic_".len()..])?;
            let yaml = format!(
                "{}doc_to_text: \"Q: {{{{question}}}} A:\"\ndoc_to_target: answer\nfewshot_delimiter: \"\\n\\n\"\n{GENERATE_TAIL}{}",
                header(n, "generate_until"),
                steps_metadata(family, "direct")
            );
            (yaml, split(&mut |rng| arithmetic_doc(rng, family, &holdout)))
        }
        "arithmetic_2da_mc" => {
            let yaml = format!(
                "{}doc_to_text: \"Q: {{{{question}}}} A:\"\ndoc_to_choice: choices\ndoc_to_target: label\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n",
                header(name, "multiple_choice")
            );
            (yaml, split(&mut |rng| arithmetic_mc_doc(rng, &holdout)))
        }
        "cycle_letters" | "anagrams1" | "anagrams2" | "random_insertion" | "reversed_words" => {
            let scramble = match name {
                "cycle_letters" => Scramble::CycleLetters,
                "anagrams1" => Scramble::AnagramKeep1,
                "anagrams2" => Scramble::AnagramKeep2,
                "random_insertion" => Scramble::RandomInsertion,
                _ => Scramble::Reversed,
            };
            let words: Vec<&str> =
                held_out_words(holdout.words).into_iter().filter(|w| w.chars().count() >= scramble.min_len()).collect();
            let yaml = format!(
                "{}doc_to_text: \"{{{{input}}}} ->\"\ndoc_to_target: word\nfewshot_delimiter: \"\\n\"\n{GENERATE_TAIL}",
                header(name, "generate_until")
            );
            (
                yaml,
                split(&mut |rng| {
                    let word = *words.choose(rng).expect("held-out words");
                    json!({"input": scramble.apply(word, rng), "word": word})
                }),
            )
        }
        "word_map" => {
            let mut rng = seeded(name, "map");
            // Training words in a random map no document holds: the association is what is
            // scored. A held-out word is one the model never produced, which no number of
            // examples taught it to write (measured: 0 at every K, up to 86M parameters).
            let words: Vec<&str> =
                train_words(holdout.words).choose_multiple(&mut rng, 2 * WORD_MAP_PAIRS).copied().collect();
            let pairs: Vec<(&str, &str)> = words.chunks(2).map(|p| (p[0], p[1])).collect();
            let yaml = format!(
                "{}doc_to_text: \"{{{{input}}}} ->\"\ndoc_to_target: output\nfewshot_delimiter: \"\\n\"\n{GENERATE_TAIL}",
                header(name, "generate_until")
            );
            (
                yaml,
                split(&mut |rng| {
                    let (input, output) = *pairs.choose(rng).expect("pairs");
                    json!({"input": input, "output": output})
                }),
            )
        }
        "linear_map" => {
            let mut rng = seeded(name, "rule");
            let (a, b) = (rng.random_range(2..=9i64), rng.random_range(-9..=9i64));
            let yaml = format!(
                "{}doc_to_text: \"{{{{x}}}} ->\"\ndoc_to_target: \"{{{{y}}}}\"\nfewshot_delimiter: \"\\n\"\n{GENERATE_TAIL}",
                header(name, "generate_until")
            );
            (
                yaml,
                split(&mut |rng| {
                    let x = rng.random_range(0..=20i64);
                    json!({"x": x, "y": a * x + b})
                }),
            )
        }
        "scene_count" | "scene_count_mc" => {
            // One question, answered by generation or as a choice of 0..=MAX_DESCRIBED_OBJECTS.
            let question = "doc_to_text: \"{{scene}}\\nQ: How many {{noun}} are there? A:\"\n";
            let yaml = if name == "scene_count" {
                format!("{}{question}doc_to_target: \"{{{{count}}}}\"\n{GENERATE_TAIL}", header(name, "generate_until"))
            } else {
                let choices: Vec<String> = (0..=MAX_DESCRIBED_OBJECTS).map(|n| format!("\"{n}\"")).collect();
                let choices = choices.join(", ");
                format!(
                    "{}{question}doc_to_choice: [{choices}]\ndoc_to_target: count\n",
                    header(name, "multiple_choice")
                )
            };
            (yaml, split(&mut scene_count_doc))
        }
        n if labelled::task_type(n).is_some() => {
            // The records `gptlab finetune` trains and tests on, asked in natural language: the
            // test split is its test split, shots come from its training split.
            let (text, choices) = match n {
                "scene_entailment" => {
                    ("{{premise}}\\nQuestion: {{hypothesis}} True or false?\\nAnswer:", "[\"false\", \"true\"]")
                }
                "review_sentiment" => (
                    "Review: {{text}}\\nQuestion: Is the review positive or negative?\\nAnswer:",
                    "[\"negative\", \"positive\"]",
                ),
                "scene_paraphrase" => (
                    "First: {{text_a}}\\nSecond: {{text_b}}\\nQuestion: Do they describe the same picture?\\nAnswer:",
                    "[\"no\", \"yes\"]",
                ),
                _ => ("{{context}} A:", "choices"),
            };
            let yaml = format!(
                "{}doc_to_text: \"{text}\"\ndoc_to_choice: {choices}\ndoc_to_target: label\nmetric_list:\n  - metric: acc\n",
                header(n, "multiple_choice")
            );
            let test = labelled::records(n, "test", TEST_DOCS)?;
            let train = labelled::records(n, "train", SHOT_DOCS)?;
            (yaml, (test, train))
        }
        "lambada_scene" => {
            let yaml = format!(
                "{}doc_to_text: context\ndoc_to_target: \" {{{{last_word}}}}\"\ntarget_delimiter: \"\"\n",
                header(name, "loglikelihood")
            );
            (yaml, split(&mut lambada_doc))
        }
        "lambada_scene_rolling" => {
            let yaml = format!("{}doc_to_text: \"\"\ndoc_to_target: text\n", header(name, "loglikelihood_rolling"));
            (yaml, split(&mut lambada_doc))
        }
        other => {
            bail!("unknown task {other:?}: built-in tasks are {}; or give a task file (.yaml)", names().join(", "))
        }
    };
    Ok(Generated { yaml, test, train, images: Vec::new() })
}

/// The chat template around a multimodal question: shots are earlier turns of the conversation.
const CHAT_HEADER: &str = "description: \"<|user|>\\n\"\ntarget_delimiter: \"\"\ndoc_to_image: image\n";
const CHAT_TAIL: &str = "generation_kwargs:\n  until: [\"<|endoftext|>\", \"\\n\"]\n  max_gen_toks: 10\nmetric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n    ignore_case: true\n    regexes_to_ignore: [\"^\\\\s+\", \"\\\\s+$\"]\n";

/// A visual question type of the synthetic world (`data synth-vlm`'s kinds), asked in the chat
/// template a VLM is instruction-tuned on.
fn vqa(name: &str, kind: &str) -> Result<Generated> {
    let world_kind = match kind {
        "count" | "colour" | "shape" | "position" | "relation" | "gauge" => kind,
        "pointing" => "marked",
        other => bail!("unknown task \"vqa_{other}\": built-in tasks are {}", names().join(", ")),
    };
    let world = mm_world();
    let mut images = Vec::new();
    let mut split = |split: &str, want: usize| -> Vec<Value> {
        let seed = seeded(name, split).random::<u64>();
        let mut docs = Vec::new();
        for i in 0..(want as u64 * 200) {
            if docs.len() == want {
                break;
            }
            let item = generate_item(&world, seed, i);
            // Items may ask several questions of a type (a gauge's reading and its highest
            // value): take them in turn.
            let asked: Vec<_> = item.qa.iter().filter(|q| q.kind == world_kind).collect();
            if let Some(qa) = asked.get(i as usize % asked.len().max(1)) {
                let rel = format!("{name}_images/{split}/{i:06}.png");
                docs.push(json!({"image": rel, "question": qa.question, "answer": qa.answer}));
                images.push((rel, item.image));
            }
        }
        docs
    };
    let (test, train) = (split("test", MM_TEST_DOCS), split("train", MM_SHOT_DOCS));
    let keys = "doc_to_text: \"<image>\\n{{question}}<|endoftext|><|assistant|>\\n\"\ndoc_to_target: answer\nfewshot_delimiter: \"<|endoftext|><|user|>\\n\"\n";
    Ok(chat_task(name, keys, test, train, images))
}

/// GPT-4V's gauge reading in context: every gauge of the task shares one of `data synth-vlm`'s
/// episode scales, drawn without labels, so only the K worked examples ("It reads 40.") say
/// how to read it; the prompt is the episodes' own, one user turn of shots and the question.
fn gauge_reading(name: &str, scale: &str) -> Result<Generated> {
    let index: usize = scale
        .parse()
        .ok()
        .filter(|i| (1..=EPISODE_SCALES.len()).contains(i))
        .with_context(|| format!("unknown task {name:?}: built-in tasks are {}", names().join(", ")))?;
    let scale = EPISODE_SCALES[index - 1];
    let world = mm_world();
    let opts = RenderOptions { side: world.side, noise: world.noise, texture: world.texture };
    let mut images = Vec::new();
    let mut split = |split: &str, n: usize| -> Vec<Value> {
        let mut rng = seeded(name, split);
        (0..n)
            .map(|i| {
                let (gauge, reading) = episode_gauge(scale, &mut rng);
                let rel = format!("{name}_images/{split}/{i:06}.png");
                images.push((rel.clone(), render_unlabelled_gauge(&gauge, &opts, &mut rng)));
                json!({"image": rel, "reading": reading})
            })
            .collect()
    };
    let (test, train) = (split("test", MM_TEST_DOCS), split("train", MM_SHOT_DOCS));
    let keys = format!(
        "doc_to_text: \"<image>\\n{EPISODE_QUESTION}<|endoftext|><|assistant|>\\n\"\ndoc_to_target: reading\nfewshot_config:\n  doc_to_text: \"<image>\\nIt reads\"\n  target_delimiter: \" \"\n  fewshot_delimiter: \".\\n\"\n"
    );
    Ok(chat_task(name, &keys, test, train, images))
}

/// A multimodal task in the chat template: the shared header and tail around its own `keys`.
fn chat_task(
    name: &str,
    keys: &str,
    test: Vec<Value>,
    train: Vec<Value>,
    images: Vec<(String, RgbImage)>,
) -> Generated {
    let yaml = format!("{}{CHAT_HEADER}{keys}{CHAT_TAIL}", header(name, "generate_until"));
    Generated { yaml, test, train, images }
}

/// The built-in task of an arithmetic family ("arithmetic_2da" for 2-digit addition).
pub fn arithmetic_task(family: ArithFamily) -> &'static str {
    match family {
        ArithFamily::Add2 => "arithmetic_2da",
        ArithFamily::Add3 => "arithmetic_3da",
        ArithFamily::Add4 => "arithmetic_4da",
        ArithFamily::Add5 => "arithmetic_5da",
        ArithFamily::Sub2 => "arithmetic_2ds",
        ArithFamily::Sub3 => "arithmetic_3ds",
        ArithFamily::Sub4 => "arithmetic_4ds",
        ArithFamily::Sub5 => "arithmetic_5ds",
        ArithFamily::Mul2 => "arithmetic_2dm",
        ArithFamily::Composite1 => "arithmetic_1dc",
    }
}

fn arithmetic_family(code: &str) -> Result<ArithFamily> {
    ArithFamily::from_code(code)
        .with_context(|| format!("unknown task \"arithmetic_{code}\": built-in tasks are {}", names().join(", ")))
}

fn held_out_problem(rng: &mut ChaCha8Rng, family: ArithFamily, holdout: &Holdout) -> ArithProblem {
    ArithProblem::random_held_out(rng, family, holdout).expect("the default hold-out fraction leaves problems")
}

fn arithmetic_doc(rng: &mut ChaCha8Rng, family: ArithFamily, holdout: &Holdout) -> Value {
    let p = held_out_problem(rng, family, holdout);
    debug_assert_eq!(p.render(ArithFormat::Question), format!("Q: {} A: {}", p.question(), p.answer));
    json!({"question": p.question(), "answer": p.answer.to_string()})
}

/// A held-out problem worked out step by step, as the corpus's worked documents are: the header
/// line is the prompt, the steps (ending "So a + b = c") the shots' target. Draws exactly what
/// [`arithmetic_doc`] draws, so the two tasks ask the same problems.
fn worked_doc(rng: &mut ChaCha8Rng, family: ArithFamily, holdout: &Holdout) -> Value {
    let p = held_out_problem(rng, family, holdout);
    let worked = p.worked().expect("generate() admits only the families with a worked form");
    let (prompt, steps) = worked.split_once('\n').expect("a header and steps");
    json!({"question": p.question(), "prompt": prompt, "steps": steps, "answer": p.answer.to_string()})
}

/// The right sum among three near misses (off by one, by ten, digits of the tens swapped).
fn arithmetic_mc_doc(rng: &mut ChaCha8Rng, holdout: &Holdout) -> Value {
    let p = held_out_problem(rng, ArithFamily::Add2, holdout);
    let mut choices = vec![p.answer];
    for wrong in [p.answer + 1, p.answer - 1, p.answer + 10, p.answer - 10, p.answer + 100] {
        if wrong >= 0 && !choices.contains(&wrong) && choices.len() < 4 {
            choices.push(wrong);
        }
    }
    let mut order: Vec<usize> = (0..choices.len()).collect();
    rand::seq::SliceRandom::shuffle(order.as_mut_slice(), rng);
    let label = order.iter().position(|&i| i == 0).expect("the answer is a choice");
    let choices: Vec<String> = order.iter().map(|&i| choices[i].to_string()).collect();
    json!({"question": p.question(), "choices": choices, "label": label})
}

/// A listed scene and a count question about a colour or shape (the corpus's "Q: How many ...
/// are there? A: n" lines), about one the scene has four times in five, as the corpus asks.
fn scene_count_doc(rng: &mut ChaCha8Rng) -> Value {
    let scene = Scene::random(rng, MAX_DESCRIBED_OBJECTS);
    let present = rng.random_bool(0.8);
    let pick = |all: &[usize], has: &dyn Fn(usize) -> bool, rng: &mut ChaCha8Rng| {
        let shown: Vec<usize> = all.iter().copied().filter(|&i| has(i)).collect();
        if present && !shown.is_empty() {
            any(&shown, rng)
        } else {
            any(all, rng)
        }
    };
    let (noun, count) = if rng.random_bool(0.5) {
        let all: Vec<usize> = (0..Color::ALL.len()).collect();
        let c = Color::ALL[pick(&all, &|i| scene.count_color(Color::ALL[i]) > 0, rng)];
        (format!("{} objects", c.name()), scene.count_color(c))
    } else {
        let all: Vec<usize> = (0..Shape::ALL.len()).collect();
        let s = Shape::ALL[pick(&all, &|i| scene.count_shape(Shape::ALL[i]) > 0, rng)];
        (s.plural(), scene.count_shape(s))
    };
    json!({"scene": format!("The picture shows {}.", list_objects(&scene)), "noun": noun, "count": count})
}

/// A scene listing, then a relation sentence whose last word, the shape of an object named by
/// its size and colour, only the listing can tell: the context is needed, as in LAMBADA.
fn lambada_doc(rng: &mut ChaCha8Rng) -> Value {
    loop {
        let scene = Scene::random(rng, MAX_DESCRIBED_OBJECTS);
        let objs = &scene.objects;
        let unique = |i: usize| objs.iter().filter(|o| o.size == objs[i].size && o.color == objs[i].color).count() == 1;
        let mut pairs = Vec::new();
        for i in 0..objs.len() {
            for j in 0..objs.len() {
                if i != j && unique(j) {
                    for (holds, relation) in [
                        (objs[i].left_of(&objs[j]), "to the left of"),
                        (objs[j].left_of(&objs[i]), "to the right of"),
                        (objs[i].above(&objs[j]), "above"),
                        (objs[j].above(&objs[i]), "below"),
                    ] {
                        if holds {
                            pairs.push((i, j, relation));
                        }
                    }
                }
            }
        }
        let Some(&(i, j, relation)) = pairs.choose(rng) else { continue };
        let b = &objs[j];
        let context = format!(
            "The picture shows {}. The {} is {relation} the {} {}",
            list_objects(&scene),
            objs[i].noun_phrase(),
            b.size.name(),
            b.color.name()
        );
        let last = b.shape.name();
        return json!({"context": context, "last_word": last, "text": format!("{context} {last}.")});
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::lexicon::is_held_out_word;

    #[test]
    fn every_built_in_task_loads_and_is_deterministic() {
        for name in names().into_iter().filter(|n| !is_multimodal(n)) {
            let task = load(name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(task.docs.len(), TEST_DOCS, "{name}");
            assert_eq!(generate(name).unwrap().test, task.docs, "{name}");
        }
        assert!(load("no_such_task").err().unwrap().to_string().contains("unknown task"));
        // Subtraction has no worked form: a one-line error, not a panic.
        assert!(load("arithmetic_2ds_cot").err().unwrap().to_string().contains("scratchpad tasks are"));
    }

    #[test]
    fn scored_items_are_held_out_of_training() {
        let holdout = Holdout::default();
        for doc in generate("arithmetic_3da").unwrap().test {
            let q = doc["question"].as_str().unwrap();
            let nums: Vec<i64> = q
                .trim_start_matches("What is ")
                .trim_end_matches('?')
                .split(" plus ")
                .map(|n| n.parse().unwrap())
                .collect();
            assert!(crate::synth::lexicon::is_held_out_pair(nums[0], nums[1], holdout.numbers), "{q}");
        }
        // The scratchpad tasks ask the direct ones' problems.
        let direct = generate("arithmetic_3da").unwrap().test;
        let worked = generate("arithmetic_3da_cot").unwrap().test;
        for (d, w) in direct.iter().zip(&worked) {
            assert_eq!((&d["question"], &d["answer"]), (&w["question"], &w["answer"]));
            assert!(w["steps"].as_str().unwrap().ends_with(&format!("= {}", w["answer"].as_str().unwrap())));
        }
        for family in ArithFamily::ALL {
            let name = arithmetic_task(family);
            assert_eq!(arithmetic_family(&name["arithmetic_".len()..]).unwrap(), family);
        }
        for doc in generate("reversed_words").unwrap().test {
            assert!(is_held_out_word(doc["word"].as_str().unwrap(), holdout.words));
        }
        let task = load("lambada_scene").unwrap();
        let doc = &task.docs[0];
        assert!(task.target_text(doc).unwrap().starts_with(' '));
        assert!(doc["text"].as_str().unwrap().starts_with(doc["context"].as_str().unwrap()));
    }
}
