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
    static WHITESPACE: std::sync::LazyLock<Regex> =
        std::sync::LazyLock::new(|| Regex::new(r"\s+").expect("a constant, valid pattern"));
    WHITESPACE.split(text).count()
}

/// The probability a model gives its chosen answer: the softmax over the choices' summed
/// log-likelihoods, at the argmax.
pub fn choice_confidence(lls: &[f64]) -> f64 {
    let best = lls[argmax(lls)];
    1.0 / lls.iter().map(|ll| (ll - best).exp()).sum::<f64>()
}

/// Bins of a reliability diagram.
pub const CALIBRATION_BINS: usize = 10;

/// One equal-width confidence bin: how many answers fell in it, their mean confidence, and the
/// share of them that were right.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibrationBin {
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
    pub confidence: f64,
    pub accuracy: f64,
}

/// (confidence, right) pairs in `bins` equal-width bins of [0, 1]; a confidence of 1 goes to the
/// last bin.
pub fn reliability(pairs: &[(f64, bool)], bins: usize) -> Vec<CalibrationBin> {
    let mut out: Vec<CalibrationBin> = (0..bins)
        .map(|b| CalibrationBin {
            lo: b as f64 / bins as f64,
            hi: (b + 1) as f64 / bins as f64,
            n: 0,
            confidence: 0.0,
            accuracy: 0.0,
        })
        .collect();
    for &(c, right) in pairs {
        let b = ((c * bins as f64) as usize).min(bins - 1);
        out[b].n += 1;
        out[b].confidence += c;
        out[b].accuracy += right as u8 as f64;
    }
    for b in out.iter_mut().filter(|b| b.n > 0) {
        b.confidence /= b.n as f64;
        b.accuracy /= b.n as f64;
    }
    out
}

/// Expected calibration error: the bins' |accuracy − confidence| weighted by their share of the
/// answers.
pub fn ece(pairs: &[(f64, bool)], bins: usize) -> f64 {
    let n = pairs.len() as f64;
    reliability(pairs, bins).iter().map(|b| b.n as f64 / n * (b.accuracy - b.confidence).abs()).sum()
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
    fn calibration_on_a_hand_computed_case() {
        // Softmax of log-likelihoods ln 0.2 and ln 0.3: 0.4 and 0.6, so the chosen one has 0.6.
        assert!((choice_confidence(&[0.2f64.ln(), 0.3f64.ln()]) - 0.6).abs() < 1e-12);
        // Two answers at 0.95 (one right) and two at 0.55 (both right):
        // bin 0.9-1: |0.5 - 0.95| * 2/4 = 0.225; bin 0.5-0.6: |1 - 0.55| * 2/4 = 0.225.
        let pairs = [(0.95, true), (0.95, false), (0.55, true), (0.55, true)];
        assert!((ece(&pairs, 10) - 0.45).abs() < 1e-12);
        let bins = reliability(&pairs, 10);
        assert_eq!((bins[9].n, bins[5].n, bins[0].n), (2, 2, 0));
        assert!((bins[9].accuracy - 0.5).abs() < 1e-12 && (bins[5].confidence - 0.55).abs() < 1e-12);
        // Confidence 1 falls in the last bin; a perfectly calibrated set has ECE 0.
        assert_eq!(reliability(&[(1.0, true)], 10)[9].n, 1);
        assert!(ece(&[(1.0, true), (0.5, true), (0.5, false)], 10).abs() < 1e-12);
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
