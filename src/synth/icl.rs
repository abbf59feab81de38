//! In-context learning episodes: each document draws a fresh rule and shows it on a few
//! "input -> output" lines, so later outputs are predictable only from the earlier lines.
//!
//! The rules are GPT-3's word-scrambling tasks, random word-to-word maps and random linear maps
//! on numbers; an evaluation builds its tasks from the same rules.

use super::any;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

/// Fewest and most lines in an episode.
const MIN_LINES: usize = 4;
const MAX_LINES: usize = 10;

/// Fewest and most pairs in a word map: few enough that pairs repeat within an episode.
const MIN_MAP_PAIRS: usize = 2;
const MAX_MAP_PAIRS: usize = 4;

/// Inputs of a linear map are drawn from [0, MAX_LINEAR_INPUT].
const MAX_LINEAR_INPUT: i64 = 20;

/// What random insertion puts between letters; neither '-' nor '>', so lines still read as
/// "input -> output".
const INSERTIONS: [char; 8] = ['.', ',', '!', '?', ';', ':', '/', ' '];

/// Shuffles an anagram tries before accepting one equal to the word.
const SHUFFLE_TRIES: usize = 16;

/// GPT-3's word-scrambling transforms. An example shows the scrambled word as input and the
/// original word as output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scramble {
    /// The letters rotated by a random shift ("lyinevitab" for "inevitably").
    CycleLetters,
    /// All letters but the first and last shuffled ("criroptuon" for "corruption").
    AnagramKeep1,
    /// All letters but the first two and last two shuffled ("opoepnnt" for "opponent").
    AnagramKeep2,
    /// A random punctuation or space character between every two letters ("s.u!c/c!e.s s").
    RandomInsertion,
    /// The word backwards ("stcejbo" for "objects").
    Reversed,
}

impl Scramble {
    pub const ALL: [Scramble; 5] = [
        Scramble::CycleLetters,
        Scramble::AnagramKeep1,
        Scramble::AnagramKeep2,
        Scramble::RandomInsertion,
        Scramble::Reversed,
    ];

    /// Shortest word the transform can change; shorter words are left out of its episodes.
    pub fn min_len(self) -> usize {
        match self {
            Scramble::AnagramKeep1 => 4,
            Scramble::AnagramKeep2 => 6,
            Scramble::CycleLetters | Scramble::RandomInsertion | Scramble::Reversed => 2,
        }
    }

    /// The scrambled form of `word`.
    pub fn apply<R: Rng + ?Sized>(self, word: &str, rng: &mut R) -> String {
        let letters: Vec<char> = word.chars().collect();
        match self {
            Scramble::CycleLetters if letters.len() > 1 => cycle_letters(&letters, rng.random_range(1..letters.len())),
            Scramble::CycleLetters => word.to_string(),
            Scramble::AnagramKeep1 => shuffle_inner(&letters, 1, rng),
            Scramble::AnagramKeep2 => shuffle_inner(&letters, 2, rng),
            Scramble::RandomInsertion => {
                let mut out = String::new();
                for (i, c) in letters.iter().enumerate() {
                    if i > 0 {
                        out.push(any(&INSERTIONS, rng));
                    }
                    out.push(*c);
                }
                out
            }
            Scramble::Reversed => letters.iter().rev().collect(),
        }
    }
}

/// The letters rotated left by `shift`.
fn cycle_letters(letters: &[char], shift: usize) -> String {
    letters[shift..].iter().chain(&letters[..shift]).collect()
}

/// The letters with all but `keep` at each end shuffled, differing from the word when the
/// inner letters allow it.
fn shuffle_inner<R: Rng + ?Sized>(letters: &[char], keep: usize, rng: &mut R) -> String {
    if letters.len() <= 2 * keep {
        return letters.iter().collect();
    }
    let mut out = letters.to_vec();
    for _ in 0..SHUFFLE_TRIES {
        out[keep..letters.len() - keep].shuffle(rng);
        if out != letters {
            break;
        }
    }
    out.into_iter().collect()
}

/// One line of an episode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub input: String,
    pub output: String,
}

impl Example {
    /// "input -> output"; a prompt for the output is the line cut after "->".
    pub fn line(&self) -> String {
        format!("{} -> {}", self.input, self.output)
    }
}

/// A rule an episode teaches.
#[derive(Clone, Debug, PartialEq)]
pub enum IclRule {
    /// A random map between words; the keys are its inputs.
    WordMap(Vec<(String, String)>),
    /// A scrambling transform: input scrambled, output the original word.
    Scramble(Scramble),
    /// y = a * x + b on integers.
    Linear { a: i64, b: i64 },
}

impl IclRule {
    /// A random rule over `words`: the map's pairs and the scrambled words come from it, so
    /// passing the training words keeps held-out words out. Rules that `words` cannot feed
    /// (too few words, none long enough) are not drawn.
    pub fn random<R: Rng + ?Sized>(rng: &mut R, words: &[&str]) -> Self {
        let scrambles: Vec<Scramble> =
            Scramble::ALL.into_iter().filter(|s| words.iter().any(|w| w.chars().count() >= s.min_len())).collect();
        let can_map = words.len() >= 2 * MIN_MAP_PAIRS;
        match rng.random_range(0..3) {
            0 if can_map => {
                let n = rng.random_range(MIN_MAP_PAIRS..=MAX_MAP_PAIRS).min(words.len() / 2);
                let picked: Vec<&&str> = words.choose_multiple(rng, 2 * n).collect();
                let pairs = picked.chunks(2).map(|p| (p[0].to_string(), p[1].to_string())).collect();
                IclRule::WordMap(pairs)
            }
            1 if !scrambles.is_empty() => IclRule::Scramble(any(&scrambles, rng)),
            _ => IclRule::Linear { a: rng.random_range(1..=9), b: rng.random_range(-9..=9) },
        }
    }

    /// The example the rule makes of `source`: a map or linear rule sends it to its image, a
    /// scramble shows it scrambled and expects it back. `None` when `source` is outside the
    /// rule's domain (not a key of the map, not an integer).
    pub fn apply<R: Rng + ?Sized>(&self, source: &str, rng: &mut R) -> Option<Example> {
        let output = match self {
            IclRule::WordMap(pairs) => pairs.iter().find(|(k, _)| k == source).map(|(_, v)| v.clone())?,
            IclRule::Scramble(scramble) => {
                return Some(Example { input: scramble.apply(source, rng), output: source.to_string() })
            }
            IclRule::Linear { a, b } => {
                let x: i64 = source.parse().ok()?;
                (a * x + b).to_string()
            }
        };
        Some(Example { input: source.to_string(), output })
    }

    /// An example on a random source from the rule's domain (scrambles draw from `words`,
    /// preferring words long enough to change); `None` when there is nothing to draw from.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R, words: &[&str]) -> Option<Example> {
        let source = match self {
            IclRule::WordMap(pairs) => pairs.choose(rng)?.0.clone(),
            IclRule::Scramble(scramble) => {
                let long: Vec<&str> =
                    words.iter().copied().filter(|w| w.chars().count() >= scramble.min_len()).collect();
                long.choose(rng).or(words.choose(rng))?.to_string()
            }
            IclRule::Linear { .. } => rng.random_range(0..=MAX_LINEAR_INPUT).to_string(),
        };
        self.apply(&source, rng)
    }
}

/// A training document: a random rule over `words` shown on 4 to 10 lines.
pub fn random_episode<R: Rng + ?Sized>(rng: &mut R, words: &[&str]) -> String {
    let rule = IclRule::random(rng, words);
    let lines = rng.random_range(MIN_LINES..=MAX_LINES);
    (0..lines).filter_map(|_| rule.sample(rng, words)).map(|e| e.line()).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn sorted(s: &str) -> Vec<char> {
        let mut v: Vec<char> = s.chars().collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn scrambles_on_hand_made_words() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(Scramble::Reversed.apply("stone", &mut rng), "enots");
        let letters: Vec<char> = "inevitably".chars().collect();
        assert_eq!(cycle_letters(&letters, 2), "evitablyin");
        for _ in 0..20 {
            let cycled = Scramble::CycleLetters.apply("stone", &mut rng);
            assert_ne!(cycled, "stone");
            assert!(format!("{cycled}{cycled}").contains("stone"));

            let a1 = Scramble::AnagramKeep1.apply("corruption", &mut rng);
            assert!(a1.starts_with('c') && a1.ends_with('n') && a1 != "corruption");
            assert_eq!(sorted(&a1), sorted("corruption"));

            let a2 = Scramble::AnagramKeep2.apply("opponent", &mut rng);
            assert!(a2.starts_with("op") && a2.ends_with("nt"));
            assert_eq!(sorted(&a2), sorted("opponent"));

            let ri = Scramble::RandomInsertion.apply("succession", &mut rng);
            assert_eq!(ri.chars().count(), 2 * "succession".len() - 1);
            let letters: String = ri.chars().filter(|c| c.is_alphabetic()).collect();
            assert_eq!(letters, "succession");
        }
        assert_eq!(Scramble::AnagramKeep2.apply("cat", &mut rng), "cat");
    }

    #[test]
    fn rules_apply_on_their_domain_only() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let map = IclRule::WordMap(vec![("apple".into(), "river".into())]);
        assert_eq!(map.apply("apple", &mut rng).unwrap().line(), "apple -> river");
        assert_eq!(map.apply("river", &mut rng), None);
        let linear = IclRule::Linear { a: 3, b: -2 };
        assert_eq!(linear.apply("7", &mut rng).unwrap().output, "19");
        assert_eq!(linear.apply("seven", &mut rng), None);
        let reversed = IclRule::Scramble(Scramble::Reversed);
        assert_eq!(reversed.apply("stone", &mut rng).unwrap().line(), "enots -> stone");
        assert_eq!(IclRule::WordMap(Vec::new()).sample(&mut rng, &["cat"]), None);
    }

    #[test]
    fn episodes_use_only_the_given_words() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let words = ["apple", "river", "stone", "garden", "pencil", "castle"];
        for _ in 0..200 {
            let text = random_episode(&mut rng, &words);
            let lines: Vec<&str> = text.lines().collect();
            assert!((MIN_LINES..=MAX_LINES).contains(&lines.len()), "{text}");
            for line in lines {
                let (input, output) = line.split_once(" -> ").expect("an arrow");
                if output.parse::<i64>().is_err() {
                    assert!(words.contains(&output), "{line}");
                    if words.contains(&input) {
                        continue;
                    }
                    let letters: String = input.chars().filter(|c| c.is_alphabetic()).collect();
                    assert_eq!(sorted(&letters), sorted(output), "{line}");
                }
            }
        }
    }

    #[test]
    fn tiny_word_pools_fall_back_to_numbers() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        for _ in 0..50 {
            let text = random_episode(&mut rng, &[]);
            assert!(text.lines().count() >= MIN_LINES);
            assert!(text.lines().all(|l| l.split(" -> ").all(|n| n.parse::<i64>().is_ok())));
        }
    }
}
