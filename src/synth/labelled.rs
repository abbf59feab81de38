//! Labelled tasks of the embedded world, one per GPT-1 task type, for fine-tuning and for the
//! prompted paradigm to be compared on the same examples:
//!
//! - `scene_entailment` (entailment): does a sentence hold for a described scene?
//! - `review_sentiment` (classification): is a synthetic review, whose sentences praise or fault
//!   aspects of a product (some negated), positive on balance?
//! - `scene_paraphrase` (similarity): do two listings describe the same scene, or does one
//!   object differ?
//! - `scene_qa` (multiple choice): a question about a described scene with four answers.
//!
//! Records are in the JSONL formats `gptlab finetune` reads from users, so a task can be written
//! out, edited and read back. Every split draws from its own seeded stream: the same records on
//! every machine, and no test record among the training ones except by chance of the world.

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use super::any;
use super::scene::{describe, join_list, Color, Object, Scene, Shape, Size, MAX_DESCRIBED_OBJECTS};

/// The labelled tasks: name, GPT-1 task type, class names (empty for multiple choice), and what
/// the task asks.
pub const TASKS: [(&str, &str, &[&str], &str); 4] = [
    ("scene_entailment", "entailment", &["false", "true"], "does the sentence hold for the described scene"),
    ("review_sentiment", "classification", &["negative", "positive"], "is the synthetic review positive on balance"),
    ("scene_paraphrase", "similarity", &["different", "same"], "do the two listings describe the same scene"),
    ("scene_qa", "multiple_choice", &[], "a question on a described scene, four answers"),
];

/// Choices of a `scene_qa` record.
pub const QA_CHOICES: usize = 4;

/// The stream of a task's split: a fixed hash of both names.
pub fn split_rng(task: &str, split: &str) -> ChaCha8Rng {
    let h = format!("{task}/{split}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    ChaCha8Rng::seed_from_u64(h)
}

/// The first `n` records of split `split` ("train", "val", "test") of task `task`; a longer
/// request extends a shorter one, so 10 training examples are the first 10 of 1000.
pub fn records(task: &str, split: &str, n: usize) -> Result<Vec<Value>> {
    let make: fn(&mut ChaCha8Rng) -> Value = match task {
        "scene_entailment" => entailment_record,
        "review_sentiment" => review_record,
        "scene_paraphrase" => paraphrase_record,
        "scene_qa" => qa_record,
        other => bail!(
            "unknown built-in labelled task {other:?}; they are {}",
            TASKS.iter().map(|t| t.0).collect::<Vec<_>>().join(", ")
        ),
    };
    let mut rng = split_rng(task, split);
    Ok((0..n).map(|_| make(&mut rng)).collect())
}

/// The task type and class names of a built-in labelled task.
pub fn task_type(task: &str) -> Option<(&'static str, &'static [&'static str])> {
    TASKS.iter().find(|t| t.0 == task).map(|t| (t.1, t.2))
}

fn scene<R: Rng + ?Sized>(rng: &mut R) -> Scene {
    loop {
        let s = Scene::random(rng, MAX_DESCRIBED_OBJECTS);
        if s.objects.len() >= 2 {
            return s;
        }
    }
}

fn plural_of(shape: Shape, n: usize) -> String {
    if n == 1 {
        shape.name().to_string()
    } else {
        shape.plural()
    }
}

/// A true or false sentence about the scene, half of each: an object that is or is not there,
/// or a count of a shape or colour that is right or off by one.
fn entailment_record(rng: &mut ChaCha8Rng) -> Value {
    let s = scene(rng);
    let truth = rng.random_bool(0.5);
    let hypothesis = match rng.random_range(0..3) {
        0 => {
            let o = s.objects[rng.random_range(0..s.objects.len())];
            let (color, shape) = if truth {
                (o.color, o.shape)
            } else {
                // A near miss: the shape with a colour no such object has.
                let absent: Vec<Color> = Color::ALL
                    .into_iter()
                    .filter(|c| !s.objects.iter().any(|x| x.shape == o.shape && x.color == *c))
                    .collect();
                (any(&absent, rng), o.shape)
            };
            format!("There is a {} {}.", color.name(), shape.name())
        }
        1 => {
            let shape = s.objects[rng.random_range(0..s.objects.len())].shape;
            let n = s.count_shape(shape);
            let k = if truth { n } else { off_by_one(n, rng) };
            format!("There {} {} {}.", if k == 1 { "is" } else { "are" }, number(k), plural_of(shape, k))
        }
        _ => {
            let color = s.objects[rng.random_range(0..s.objects.len())].color;
            let n = s.count_color(color);
            let k = if truth { n } else { off_by_one(n, rng) };
            format!("{} {} {}.", capital(&number(k)), if k == 1 { "object is" } else { "objects are" }, color.name())
        }
    };
    json!({"premise": describe(&s, rng), "hypothesis": hypothesis, "label": truth as usize})
}

fn off_by_one<R: Rng + ?Sized>(n: usize, rng: &mut R) -> usize {
    if n == 0 || rng.random_bool(0.5) {
        n + 1
    } else {
        n - 1
    }
}

fn number(n: usize) -> String {
    if n == 0 {
        "no".into()
    } else {
        n.to_string()
    }
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

const PRODUCTS: [&str; 8] = ["kettle", "lamp", "backpack", "chair", "phone", "bicycle", "blender", "tent"];
const ASPECTS: [&str; 8] = ["price", "design", "battery", "handle", "colour", "delivery", "sound", "size"];
const GOOD: [&str; 8] = ["great", "excellent", "lovely", "perfect", "reliable", "superb", "solid", "pleasant"];
const BAD: [&str; 8] = ["awful", "terrible", "flimsy", "useless", "poor", "cheap", "noisy", "disappointing"];

/// Three aspect sentences, each praising or faulting (a third of them through "not"), labelled
/// by the majority.
fn review_record(rng: &mut ChaCha8Rng) -> Value {
    let product = any(&PRODUCTS, rng);
    let mut aspects = ASPECTS.to_vec();
    aspects.shuffle(rng);
    let mut score = 0i32;
    let mut sentences = vec![format!("I bought this {product} last month.")];
    for aspect in &aspects[..3] {
        let positive = rng.random_bool(0.5);
        score += if positive { 1 } else { -1 };
        let negated = rng.random_bool(1.0 / 3.0);
        // "not" takes the opposite word: "not awful" praises, "not great" faults.
        let word = if positive != negated { any(&GOOD, rng) } else { any(&BAD, rng) };
        sentences.push(format!("The {aspect} is {}{word}.", if negated { "not " } else { "" }));
    }
    json!({"text": sentences.join(" "), "label": (score > 0) as usize})
}

/// Two listings of a scene in different orders and phrasings; half the time one object of the
/// second differs in colour, shape or size.
fn paraphrase_record(rng: &mut ChaCha8Rng) -> Value {
    let s = scene(rng);
    let same = rng.random_bool(0.5);
    let mut other = s.objects.clone();
    if !same {
        let i = rng.random_range(0..other.len());
        let o = &mut other[i];
        match rng.random_range(0..3) {
            0 => o.color = any(&Color::ALL.into_iter().filter(|c| *c != o.color).collect::<Vec<_>>(), rng),
            1 => o.shape = any(&Shape::ALL.into_iter().filter(|c| *c != o.shape).collect::<Vec<_>>(), rng),
            _ => o.size = any(&Size::ALL.into_iter().filter(|c| *c != o.size).collect::<Vec<_>>(), rng),
        }
    }
    other.shuffle(rng);
    json!({"text_a": listing(&s.objects, 0), "text_b": listing(&other, rng.random_range(1..3)), "label": same as usize})
}

fn listing(objects: &[Object], style: usize) -> String {
    let items = join_list(objects.iter().map(|o| format!("a {}", o.noun_phrase())).collect());
    match style {
        0 => format!("The picture shows {items}."),
        1 => format!("There are {} objects: {items}.", objects.len()),
        _ => format!("In it we see {items}."),
    }
}

/// A described scene and a question on it, the right answer among three distractors: the colour
/// of a shape that occurs once, or how many objects have a shape.
fn qa_record(rng: &mut ChaCha8Rng) -> Value {
    let s = scene(rng);
    let unique: Vec<Shape> = Shape::ALL.into_iter().filter(|sh| s.count_shape(*sh) == 1).collect();
    let (question, answer, pool): (String, String, Vec<String>) = if !unique.is_empty() && rng.random_bool(0.5) {
        let shape = any(&unique, rng);
        let color = s.objects.iter().find(|o| o.shape == shape).map(|o| o.color).unwrap_or(Color::ALL[0]);
        (
            format!("What colour is the {}?", shape.name()),
            color.name().to_string(),
            Color::ALL.iter().map(|c| c.name().to_string()).collect(),
        )
    } else {
        let shape = any(&Shape::ALL, rng);
        (
            format!("How many {} are there?", shape.plural()),
            s.count_shape(shape).to_string(),
            (0..=MAX_DESCRIBED_OBJECTS).map(|n| n.to_string()).collect(),
        )
    };
    let mut distractors: Vec<String> = pool.into_iter().filter(|c| *c != answer).collect();
    distractors.shuffle(rng);
    let mut choices: Vec<String> = distractors.into_iter().take(QA_CHOICES - 1).collect();
    let label = rng.random_range(0..QA_CHOICES);
    choices.insert(label, answer);
    json!({"context": format!("{}\nQ: {question}", describe(&s, rng)), "choices": choices, "label": label})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_fixed_prefixes_and_labels_balanced() {
        for (task, _, classes, _) in TASKS {
            let long = records(task, "train", 400).unwrap();
            assert_eq!(records(task, "train", 10).unwrap(), long[..10]);
            assert_ne!(records(task, "test", 10).unwrap(), long[..10]);
            let labels: Vec<usize> = long.iter().map(|r| r["label"].as_u64().unwrap() as usize).collect();
            let classes = if classes.is_empty() { QA_CHOICES } else { classes.len() };
            for c in 0..classes {
                let share = labels.iter().filter(|&&l| l == c).count() as f64 / labels.len() as f64;
                assert!(share > 0.6 / classes as f64, "{task}: class {c} has share {share}");
            }
        }
    }

    #[test]
    fn qa_choices_are_distinct_and_review_labels_follow_the_majority() {
        for r in records("scene_qa", "test", 50).unwrap() {
            let mut choices: Vec<&str> = r["choices"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
            choices.sort();
            choices.dedup();
            assert_eq!(choices.len(), QA_CHOICES);
        }
        for r in records("review_sentiment", "test", 100).unwrap() {
            let text = r["text"].as_str().unwrap();
            let votes: i32 = text
                .split(". ")
                .skip(1)
                .map(|s| {
                    let good = GOOD.iter().any(|w| s.contains(w));
                    if good != s.contains(" not ") {
                        1
                    } else {
                        -1
                    }
                })
                .sum();
            assert_eq!(r["label"].as_u64().unwrap() == 1, votes > 0, "{text}");
        }
    }
}
