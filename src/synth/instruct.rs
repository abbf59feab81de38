//! Instruction/response pairs whose answers a program can check, so the same tasks serve as
//! supervised fine-tuning data and as an exact reward for RLHF.

use super::arithmetic::{ArithFamily, ArithProblem};
use super::lexicon::random_train_word;
use super::scene::{list_objects, Color, Scene, Shape, MAX_DESCRIBED_OBJECTS};
use super::{any, Holdout};
use crate::chat::{self, Role, Turn};
use crate::special::EOT;
use rand::Rng;

/// Fewest and most numbers in a sorting task, and their range [0, MAX_SORT_VALUE].
const MIN_SORT_LEN: usize = 3;
const MAX_SORT_LEN: usize = 7;
const MAX_SORT_VALUE: i64 = 99;

/// Share of letter-counting tasks that ask for a letter the word lacks (answer 0).
const ABSENT_LETTER_SHARE: f64 = 0.2;

/// Share of scene-counting tasks that ask about a colour or shape the scene lacks.
const ABSENT_FEATURE_SHARE: f64 = 0.2;

/// What a scene-counting task counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SceneFeature {
    Color(Color),
    Shape(Shape),
}

/// A task with exactly one right answer.
#[derive(Clone, Debug, PartialEq)]
pub enum InstructTask {
    /// Answer an arithmetic question.
    Arithmetic(ArithProblem),
    /// Sort numbers from smallest to largest.
    SortNumbers(Vec<i64>),
    /// Spell a word backwards.
    ReverseWord(String),
    /// Count how often a letter occurs in a word.
    CountLetter { word: String, letter: char },
    /// Write a word in capital letters.
    Uppercase(String),
    /// Count the objects of a colour or shape in a listed scene.
    CountInScene { scene: Scene, feature: SceneFeature },
}

impl InstructTask {
    /// A random task of a random kind, never with held-out words or operand pairs.
    pub fn random<R: Rng + ?Sized>(rng: &mut R, holdout: &Holdout) -> Self {
        match rng.random_range(0..6) {
            0 => {
                let family = any(&ArithFamily::ALL, rng);
                InstructTask::Arithmetic(ArithProblem::random(rng, family, holdout))
            }
            1 => {
                let n = rng.random_range(MIN_SORT_LEN..=MAX_SORT_LEN);
                InstructTask::SortNumbers((0..n).map(|_| rng.random_range(0..=MAX_SORT_VALUE)).collect())
            }
            2 => InstructTask::ReverseWord(random_train_word(rng, holdout.words).to_string()),
            3 => {
                let word = random_train_word(rng, holdout.words);
                let letters: Vec<char> = word.chars().collect();
                let letter = if rng.random_bool(ABSENT_LETTER_SHARE) {
                    let absent: Vec<char> = ('a'..='z').filter(|c| !letters.contains(c)).collect();
                    any(&absent, rng)
                } else {
                    any(&letters, rng)
                };
                InstructTask::CountLetter { word: word.to_string(), letter }
            }
            4 => InstructTask::Uppercase(random_train_word(rng, holdout.words).to_string()),
            _ => {
                let scene = Scene::random(rng, MAX_DESCRIBED_OBJECTS);
                let feature = random_feature(&scene, rng);
                InstructTask::CountInScene { scene, feature }
            }
        }
    }

    /// The instruction the user gives.
    pub fn prompt(&self) -> String {
        match self {
            InstructTask::Arithmetic(p) => p.question(),
            InstructTask::SortNumbers(numbers) => {
                format!("Sort these numbers from smallest to largest: {}", join_numbers(numbers))
            }
            InstructTask::ReverseWord(word) => format!("Spell the word \"{word}\" backwards."),
            InstructTask::CountLetter { word, letter } => {
                format!("How many times does the letter \"{letter}\" occur in \"{word}\"?")
            }
            InstructTask::Uppercase(word) => {
                format!("Write the word \"{word}\" in capital letters.")
            }
            InstructTask::CountInScene { scene, feature } => {
                let question = match feature {
                    SceneFeature::Color(c) => format!("How many {} objects are there?", c.name()),
                    SceneFeature::Shape(s) => format!("How many {} are there?", s.plural()),
                };
                format!("A picture shows {}.\n{question}", list_objects(scene))
            }
        }
    }

    /// The one correct response.
    pub fn reference_answer(&self) -> String {
        match self {
            InstructTask::Arithmetic(p) => p.answer.to_string(),
            InstructTask::SortNumbers(numbers) => {
                let mut sorted = numbers.clone();
                sorted.sort_unstable();
                join_numbers(&sorted)
            }
            InstructTask::ReverseWord(word) => word.chars().rev().collect(),
            InstructTask::CountLetter { word, letter } => word.chars().filter(|c| c == letter).count().to_string(),
            InstructTask::Uppercase(word) => word.to_uppercase(),
            InstructTask::CountInScene { scene, feature } => match feature {
                SceneFeature::Color(c) => scene.count_color(*c),
                SceneFeature::Shape(s) => scene.count_shape(*s),
            }
            .to_string(),
        }
    }

    /// Whether `response` is the reference answer, ignoring surrounding whitespace only.
    pub fn verify(&self, response: &str) -> bool {
        response.trim() == self.reference_answer()
    }

    /// The supervised fine-tuning document in the chat template: the user turn, then the
    /// assistant's reference answer, whose closing end-of-text the shard writer appends (as it
    /// does to every document).
    pub fn document(&self) -> String {
        let turns = [Turn::new(Role::User, self.prompt()), Turn::new(Role::Assistant, self.reference_answer())];
        let text = chat::render(&turns);
        text.strip_suffix(EOT).unwrap_or(&text).to_string()
    }
}

/// Mostly a colour or shape the scene has, sometimes one it lacks (answer 0).
fn random_feature<R: Rng + ?Sized>(scene: &Scene, rng: &mut R) -> SceneFeature {
    let absent = rng.random_bool(ABSENT_FEATURE_SHARE) || scene.objects.is_empty();
    let by_color = rng.random_bool(0.5);
    match (absent, by_color) {
        (true, true) => SceneFeature::Color(any(&Color::ALL, rng)),
        (true, false) => SceneFeature::Shape(any(&Shape::ALL, rng)),
        (false, true) => SceneFeature::Color(any(&scene.objects, rng).color),
        (false, false) => SceneFeature::Shape(any(&scene.objects, rng).shape),
    }
}

fn join_numbers(numbers: &[i64]) -> String {
    numbers.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::arithmetic::Op;
    use crate::synth::scene::{Object, Size};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn one_of_each() -> Vec<(InstructTask, &'static str, &'static str)> {
        let sum = ArithProblem::new(ArithFamily::Add2, 48, Op::Add, 76, None);
        let scene = Scene {
            width: 64,
            height: 64,
            objects: vec![
                Object { shape: Shape::Circle, color: Color::Red, size: Size::Small, x: 0.2, y: 0.2 },
                Object { shape: Shape::Star, color: Color::Red, size: Size::Large, x: 0.7, y: 0.7 },
            ],
        };
        vec![
            (InstructTask::Arithmetic(sum), "124", "-28"),
            (InstructTask::SortNumbers(vec![42, 7, 19]), "7, 19, 42", "42, 19, 7"),
            (InstructTask::ReverseWord("stone".into()), "enots", "stone"),
            (InstructTask::CountLetter { word: "cabbage".into(), letter: 'b' }, "2", "3"),
            (InstructTask::Uppercase("stone".into()), "STONE", "Stone"),
            (InstructTask::CountInScene { scene: scene.clone(), feature: SceneFeature::Color(Color::Red) }, "2", "1"),
            (InstructTask::CountInScene { scene, feature: SceneFeature::Shape(Shape::Square) }, "0", "2"),
        ]
    }

    #[test]
    fn verify_accepts_the_reference_and_rejects_wrong_answers() {
        for (task, right, wrong) in one_of_each() {
            assert_eq!(task.reference_answer(), right, "{}", task.prompt());
            assert!(task.verify(right));
            assert!(task.verify(&format!("  {right}\n")));
            assert!(!task.verify(wrong), "{} accepted {wrong}", task.prompt());
            assert!(!task.verify(&format!("{right} and more")));
            assert!(!task.verify(""));
        }
    }

    #[test]
    fn documents_wrap_prompt_and_answer_in_chat_markers() {
        let task = InstructTask::ReverseWord("stone".into());
        assert_eq!(task.document(), "<|user|>\nSpell the word \"stone\" backwards.<|endoftext|><|assistant|>\nenots");
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..300 {
            let task = InstructTask::random(&mut rng, &Holdout::default());
            assert!(task.verify(&task.reference_answer()));
            assert!(task.document().len() < 400, "{}", task.document());
        }
    }
}
