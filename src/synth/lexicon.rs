//! The embedded word list and the fixed hold-out of words and operand pairs.
//!
//! Hold-out membership is a fixed hash of the item itself, never of the corpus seed, so every
//! corpus holds out exactly the same words and pairs and a later evaluation can probe them as
//! items the model never saw in training.

use crate::data::split::unit_hash;
use rand::Rng;

/// Common English words (lowercase, 3 to 9 letters) that icl episodes and instruct tasks draw
/// from. None of them is a colour, shape or size of a scene, or a word of any template, so a
/// held-out word never reaches a training document through another door.
#[rustfmt::skip]
pub const WORDS: &[&str] = &[
    // animals
    "cat", "dog", "horse", "tiger", "lion", "zebra", "monkey", "rabbit", "mouse", "eagle", "parrot",
    "salmon", "shark", "whale", "dolphin", "turtle", "frog", "snake", "spider", "beetle", "camel",
    "donkey", "goat", "sheep", "pig", "cow", "duck", "goose", "owl", "wolf", "fox", "bear", "deer",
    "moose", "otter", "beaver", "squirrel", "lizard", "penguin", "pigeon", "falcon", "hawk",
    "raven", "crow", "swan", "lobster", "crab", "oyster", "octopus", "bee", "ant", "moth",
    "butterfly", "giraffe", "panda", "koala", "kitten", "puppy", "pony", "bull", "hen", "lamb",
    "seal", "trout",
    // food
    "apple", "banana", "cherry", "grape", "lemon", "mango", "melon", "peach", "pear", "plum",
    "berry", "bread", "butter", "cheese", "cake", "cookie", "honey", "sugar", "salt", "pepper",
    "rice", "pasta", "pizza", "soup", "salad", "onion", "garlic", "carrot", "potato", "tomato",
    "bean", "corn", "egg", "milk", "coffee", "tea", "juice", "cream", "candy", "walnut", "almond",
    "olive", "bacon", "sausage", "pancake", "muffin", "yogurt", "noodle", "wheat", "flour", "jam",
    "pie", "cabbage", "spinach", "celery", "radish", "pumpkin", "coconut", "ginger", "vinegar",
    // household
    "table", "chair", "sofa", "bed", "lamp", "mirror", "window", "door", "carpet", "pillow",
    "blanket", "clock", "kettle", "spoon", "fork", "knife", "plate", "bowl", "cup", "bottle",
    "basket", "bucket", "broom", "towel", "soap", "candle", "curtain", "drawer", "shelf", "cabinet",
    "oven", "fridge", "sink", "stove", "ladder", "hammer", "nail", "screw", "rope", "chain",
    "needle", "thread", "button", "pocket", "jacket", "shirt", "sweater", "scarf", "glove", "boot",
    "shoe", "sock", "hat", "helmet", "umbrella", "wallet", "ring", "necklace",
    // nature
    "river", "lake", "ocean", "island", "forest", "desert", "valley", "canyon", "meadow", "hill",
    "cliff", "cave", "beach", "stone", "rock", "sand", "mud", "snow", "rain", "storm", "cloud",
    "thunder", "wind", "fog", "ice", "fire", "smoke", "flame", "tree", "leaf", "branch", "root",
    "seed", "flower", "rose", "tulip", "daisy", "grass", "moss", "fern", "bush", "oak", "pine",
    "maple", "willow", "bamboo", "cactus", "mushroom", "sun", "moon", "planet", "comet", "galaxy",
    "sky", "dawn", "dusk", "winter", "summer", "autumn", "season", "volcano", "glacier", "harbor",
    "pond", "stream", "waterfall",
    // places
    "house", "castle", "tower", "bridge", "church", "temple", "school", "library", "museum",
    "market", "garden", "farm", "barn", "kitchen", "bedroom", "garage", "office", "factory",
    "hospital", "airport", "station", "village", "city", "town", "street", "road", "tunnel",
    "palace", "prison", "hotel", "cottage", "cabin", "tent", "fence", "roof", "chimney",
    // vehicles
    "car", "bus", "truck", "train", "plane", "boat", "ship", "bicycle", "rocket", "wagon", "canoe",
    "taxi", "tractor", "scooter", "sled", "yacht",
    // people
    "doctor", "teacher", "farmer", "baker", "pilot", "sailor", "soldier", "artist", "singer",
    "dancer", "writer", "painter", "lawyer", "nurse", "judge", "king", "queen", "prince",
    "princess", "knight", "wizard", "pirate", "captain", "chef", "driver", "friend", "mother",
    "father", "sister", "brother", "uncle", "aunt", "cousin", "child", "baby", "student", "hunter",
    "miner", "poet", "clown", "guard", "thief",
    // things
    "book", "pencil", "paper", "envelope", "stamp", "map", "compass", "key", "lock", "box", "bag",
    "coin", "money", "gift", "toy", "ball", "kite", "doll", "drum", "guitar", "piano", "violin",
    "flute", "trumpet", "bell", "whistle", "camera", "phone", "radio", "robot", "computer",
    "laptop", "cable", "battery", "magnet", "engine", "wheel", "anchor", "sword", "shield", "arrow",
    "crown", "flag", "medal", "trophy", "puzzle", "card", "ticket", "banner", "poster", "statue",
    "brush", "comb", "sponge", "bubble", "balloon", "feather", "shell", "pearl", "crystal", "gold",
    "silver", "copper", "iron", "steel", "glass", "wood", "cotton", "wool", "silk", "leather",
    "marble", "ruby", "emerald",
];

/// Whether `word` is held out at fraction `frac`: a fixed hash of the word, so the same words
/// are held out in every corpus.
pub fn is_held_out_word(word: &str, frac: f64) -> bool {
    unit_hash(format!("word:{word}").as_bytes()) < frac
}

/// Whether the operand pair `(a, b)` is held out at fraction `frac`; ordered, so `(a, b)` and
/// `(b, a)` are decided independently.
pub fn is_held_out_pair(a: i64, b: i64, frac: f64) -> bool {
    unit_hash(format!("pair:{a},{b}").as_bytes()) < frac
}

/// The lexicon words training documents may use at hold-out fraction `frac`.
pub fn train_words(frac: f64) -> Vec<&'static str> {
    WORDS.iter().copied().filter(|w| !is_held_out_word(w, frac)).collect()
}

/// The lexicon words kept for evaluation at hold-out fraction `frac`.
pub fn held_out_words(frac: f64) -> Vec<&'static str> {
    WORDS.iter().copied().filter(|w| is_held_out_word(w, frac)).collect()
}

/// A uniformly random training word, by rejection; `frac` must leave some training words
/// (`Holdout::validate` ensures it), otherwise this never returns.
pub fn random_train_word<R: Rng + ?Sized>(rng: &mut R, frac: f64) -> &'static str {
    loop {
        let word = WORDS[rng.random_range(0..WORDS.len())];
        if !is_held_out_word(word, frac) {
            return word;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn words_are_unique_lowercase_and_sized() {
        assert!(WORDS.len() >= 300, "only {} words", WORDS.len());
        let unique: HashSet<_> = WORDS.iter().collect();
        assert_eq!(unique.len(), WORDS.len(), "duplicate words");
        for w in WORDS {
            assert!((3..=9).contains(&w.len()), "{w}");
            assert!(w.chars().all(|c| c.is_ascii_lowercase()), "{w}");
        }
    }

    #[test]
    fn holdout_partitions_the_lexicon_at_about_the_fraction() {
        let held = held_out_words(0.1);
        let train = train_words(0.1);
        assert_eq!(held.len() + train.len(), WORDS.len());
        assert!(held.iter().all(|w| !train.contains(w)));
        let share = held.len() as f64 / WORDS.len() as f64;
        assert!((0.04..0.2).contains(&share), "share {share}");
        assert!(held_out_words(0.0).is_empty());
    }

    #[test]
    fn holdout_grows_monotonically_with_the_fraction() {
        let small: HashSet<_> = held_out_words(0.1).into_iter().collect();
        let large: HashSet<_> = held_out_words(0.3).into_iter().collect();
        assert!(small.is_subset(&large));
        let pairs = (0..100).flat_map(|a| (0..100).map(move |b| (a, b)));
        let held = pairs.filter(|&(a, b)| is_held_out_pair(a, b, 0.1)).count();
        assert!((500..1500).contains(&held), "{held} of 10000 pairs held out");
    }
}
