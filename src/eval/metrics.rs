//! lm-eval's metrics and aggregations, as formulas a hand-computed case can check: the argmax
//! rules of multiple choice, exact match with its normalisations, perplexities, and standard
//! errors (sample standard deviation over sqrt(n) for means, bootstrap for perplexity).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use regex::Regex;

use super::task::MetricSpec;

/// The index of the largest value; the first on ties, as numpy's argmax.
pub fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// Multiple-choice predictions from the choices' log-likelihoods: `acc` (largest log-likelihood),
/// `acc_norm` (per character of the choice), `acc_bytes` (per UTF-8 byte), and `acc_mutual_info`
/// (less the log-likelihood of the choice after the unconditional context).
pub fn choice_prediction(metric: &str, lls: &[f64], choices: &[String], unconditional: Option<&[f64]>) -> usize {
    match metric {
        "acc_norm" => argmax(&lls.iter().zip(choices).map(|(ll, c)| ll / c.chars().count() as f64).collect::<Vec<_>>()),
        "acc_bytes" => argmax(&lls.iter().zip(choices).map(|(ll, c)| ll / c.len() as f64).collect::<Vec<_>>()),
        "acc_mutual_info" => {
            let u = unconditional.expect("acc_mutual_info needs unconditional log-likelihoods");
            argmax(&lls.iter().zip(u).map(|(ll, u)| ll - u).collect::<Vec<_>>())
        }
        _ => argmax(lls),
    }
}

/// HF `evaluate`'s exact match as lm-eval calls it: regexes removed, then case, punctuation and
/// digits dropped as asked, on both sides; no whitespace is stripped unless a regex says so.
pub fn exact_match(prediction: &str, reference: &str, spec: &MetricSpec) -> bool {
    let regexes: Vec<Regex> = spec.regexes_to_ignore.iter().filter_map(|r| Regex::new(r).ok()).collect();
    let norm = |s: &str| {
        let mut s = s.to_string();
        for re in &regexes {
            s = re.replace_all(&s, "").into_owned();
        }
        if spec.ignore_case {
            s = s.to_lowercase();
        }
        if spec.ignore_punctuation {
            s.retain(|c| !c.is_ascii_punctuation());
        }
        if spec.ignore_numbers {
            s.retain(|c| !c.is_ascii_digit());
        }
        s
    };
    norm(prediction) == norm(reference)
}

pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample standard deviation (n - 1 in the denominator).
pub fn sample_std(xs: &[f64]) -> f64 {
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() as f64 - 1.0)).sqrt()
}

/// lm-eval's `mean_stderr`: sample std / sqrt(n); `None` for fewer than two values.
pub fn mean_stderr(xs: &[f64]) -> Option<f64> {
    (xs.len() > 1).then(|| sample_std(xs) / (xs.len() as f64).sqrt())
}

/// lm-eval's `perplexity` aggregation of per-document log-likelihoods: exp(-mean).
pub fn perplexity(lls: &[f64]) -> f64 {
    (-mean(lls)).exp()
}

/// exp(-sum(ll) / sum(units)): `word_perplexity` and `byte_perplexity`.
pub fn weighted_perplexity(lls: &[f64], units: &[f64]) -> f64 {
    (-lls.iter().sum::<f64>() / units.iter().sum::<f64>()).exp()
}

/// -sum(ll) / sum(bytes) / ln 2.
pub fn bits_per_byte(lls: &[f64], bytes: &[f64]) -> f64 {
    -lls.iter().sum::<f64>() / bytes.iter().sum::<f64>() / std::f64::consts::LN_2
}

/// Words as lm-eval counts them: pieces of a split on whitespace runs (`re.split(r"\s+", text)`),
/// so leading or trailing whitespace adds an empty piece.
pub fn count_words(text: &str) -> usize {
    let re = Regex::new(r"\s+").expect("a valid regex");
    re.split(text).count()
}

/// Iterations of the bootstrap of non-mean metrics (lm-eval's default).
pub const BOOTSTRAP_ITERS: usize = 100_000;

/// Bootstrap standard error of `stat` over resamples of `xs` (seeded, so reruns agree).
pub fn bootstrap_stderr(xs: &[f64], stat: impl Fn(&[f64]) -> f64, iters: usize, seed: u64) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sample = vec![0.0; xs.len()];
    let stats: Vec<f64> = (0..iters)
        .map(|_| {
            for s in sample.iter_mut() {
                *s = xs[rng.random_range(0..xs.len())];
            }
            stat(&sample)
        })
        .collect();
    Some(sample_std(&stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(f: impl FnOnce(&mut MetricSpec)) -> MetricSpec {
        let mut s = MetricSpec::named("exact_match");
        f(&mut s);
        s
    }

    #[test]
    fn choice_rules_on_a_hand_computed_case() {
        // Choices " a" (1 char), " bbbb" (4 chars): lls -2 and -4.
        let choices = vec!["a".to_string(), "bbbb".to_string()];
        let lls = [-2.0, -4.0];
        assert_eq!(choice_prediction("acc", &lls, &choices, None), 0); // -2 > -4
        assert_eq!(choice_prediction("acc_norm", &lls, &choices, None), 1); // -2/1 < -4/4 = -1
                                                                            // Unconditional lls -1 and -5: -2-(-1) = -1 < -4-(-5) = 1.
        assert_eq!(choice_prediction("acc_mutual_info", &lls, &choices, Some(&[-1.0, -5.0])), 1);
        let accented = vec!["é".to_string(), "ab".to_string()];
        // acc_norm: -3/1 vs -4/2 = -2 picks 1; acc_bytes: -3/2 = -1.5 vs -2 picks 0.
        assert_eq!(choice_prediction("acc_norm", &[-3.0, -4.0], &accented, None), 1);
        assert_eq!(choice_prediction("acc_bytes", &[-3.0, -4.0], &accented, None), 0);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }

    #[test]
    fn exact_match_normalises_only_as_asked() {
        assert!(!exact_match(" 124", "124", &spec(|_| {})));
        assert!(exact_match(" 124", "124", &spec(|s| s.regexes_to_ignore = vec![r"^\s+".into()])));
        assert!(exact_match(
            "Paris.",
            "paris",
            &spec(|s| {
                s.ignore_case = true;
                s.ignore_punctuation = true;
            })
        ));
        assert!(!exact_match("Paris.", "paris", &spec(|s| s.ignore_case = true)));
        assert!(exact_match("room 12", "room 7", &spec(|s| s.ignore_numbers = true)));
    }

    #[test]
    fn aggregations_on_hand_computed_cases() {
        let xs = [1.0, 0.0, 1.0, 1.0];
        // mean 0.75; sample var = (3 * 0.0625 + 0.5625) / 3 = 0.25; std 0.5; stderr 0.5 / 2.
        assert!((mean_stderr(&xs).unwrap() - 0.25).abs() < 1e-12);
        assert_eq!(mean_stderr(&[1.0]), None);
        assert!((perplexity(&[-1.0, -3.0]) - 2f64.exp()).abs() < 1e-12);
        // Two documents: lls -4 and -2 over 2 and 4 words: exp(6/6) = e.
        assert!((weighted_perplexity(&[-4.0, -2.0], &[2.0, 4.0]) - 1f64.exp()).abs() < 1e-12);
        assert!((bits_per_byte(&[-(2f64.ln()) * 8.0], &[8.0]) - 1.0).abs() < 1e-12);
        assert_eq!(count_words("a b  c"), 3);
        assert_eq!(count_words(" a b"), 3);
        let b = bootstrap_stderr(&[0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0], mean, 20_000, 0).unwrap();
        // The bootstrap of a mean approaches the population std / sqrt(n) = 0.5 / sqrt(8).
        assert!((b - 0.5 / 8f64.sqrt()).abs() < 0.01, "{b}");
    }
}
