//! A synthetic "raw crawl" with every cleaning label known, so each cleaning stage can be
//! measured for precision and recall: articles (scene reports and instructions, the curated
//! kind of text), low-quality pages (boilerplate, spam, keyword lists, templated pages), exact
//! duplicates, near duplicates with word edits at known rates, and articles that quote an
//! evaluation document (contamination); and beside it a curated corpus of articles, the quality
//! classifier's positives.

use anyhow::Context;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::instruct::InstructTask;
use super::lexicon::train_words;
use super::scene::{describe, Scene, MAX_DESCRIBED_OBJECTS};
use super::Holdout;

/// What `data synth-crawl` generates.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrawlConfig {
    pub pages: usize,
    pub seed: u64,
    /// Share of original pages that are low quality.
    pub low_quality: f64,
    /// Share of pages that copy an earlier page exactly.
    pub exact_duplicates: f64,
    /// Share of pages that copy an earlier page with word edits.
    pub near_duplicates: f64,
    /// The per-word edit rates near duplicates are made at (one drawn per copy).
    pub edit_rates: Vec<f64>,
    /// Share of articles that quote a held-out `review_sentiment` test document.
    pub contaminated: f64,
    /// Articles of a separate curated corpus (`curated.jsonl`): the quality classifier's
    /// positives, as GPT-3 used WebText, books and Wikipedia against raw Common Crawl.
    pub curated: usize,
}

impl Default for CrawlConfig {
    fn default() -> Self {
        Self {
            pages: 10_000,
            seed: 0,
            low_quality: 0.3,
            exact_duplicates: 0.05,
            near_duplicates: 0.1,
            edit_rates: vec![0.01, 0.03, 0.05, 0.1],
            contaminated: 0.02,
            curated: 5_000,
        }
    }
}

impl CrawlConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.pages > 0, "pages must be positive");
        for (k, v) in [
            ("low_quality", self.low_quality),
            ("exact_duplicates", self.exact_duplicates),
            ("near_duplicates", self.near_duplicates),
            ("contaminated", self.contaminated),
        ] {
            anyhow::ensure!((0.0..=1.0).contains(&v), "{k} must be a share in [0, 1], got {v}");
        }
        anyhow::ensure!(
            self.exact_duplicates + self.near_duplicates < 1.0,
            "exact_duplicates + near_duplicates must leave room for original pages"
        );
        anyhow::ensure!(
            !self.edit_rates.is_empty() && self.edit_rates.iter().all(|e| (0.0..1.0).contains(e)),
            "edit_rates must be rates in [0, 1)"
        );
        Ok(())
    }
}

/// One page with its labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrawlPage {
    pub id: String,
    pub text: String,
    /// "article", "boilerplate", "spam", "keywords" or "templated" (a copy has its original's).
    pub kind: String,
    /// Whether a quality filter should keep the page (articles) or not.
    pub high_quality: bool,
    /// The page this one copies, and how: "exact" or "near".
    pub copy_of: Option<String>,
    pub duplicate: Option<String>,
    /// The per-word edit rate of a near duplicate.
    pub edit_rate: Option<f64>,
    /// The evaluation document quoted: `review_sentiment/test/INDEX`.
    pub contaminated_from: Option<String>,
}

/// Evaluation documents contaminated pages quote from.
pub const CONTAMINATION_TASK: &str = "review_sentiment";

/// The crawl `cfg` describes; the same config gives the same pages.
pub fn generate(cfg: &CrawlConfig) -> anyhow::Result<Vec<CrawlPage>> {
    cfg.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let words = train_words(Holdout::default().words);
    let evals = super::labelled::records(CONTAMINATION_TASK, "test", crate::eval::builtin::TEST_DOCS)?;
    let mut pages: Vec<CrawlPage> = Vec::with_capacity(cfg.pages);
    let mut originals: Vec<usize> = Vec::new();
    for i in 0..cfg.pages {
        let id = format!("page-{i:07}");
        let r: f64 = rng.random();
        // A copy of an earlier original (none to copy before the first one).
        let copied =
            if r < cfg.exact_duplicates + cfg.near_duplicates { originals.choose(&mut rng).copied() } else { None };
        if let Some(k) = copied {
            let src = pages[k].clone();
            let near = r >= cfg.exact_duplicates;
            let edit_rate = match near {
                true => Some(*cfg.edit_rates.choose(&mut rng).context("edit_rates is empty")?),
                false => None,
            };
            let text = match edit_rate {
                Some(e) => edit(&src.text, e, &words, &mut rng),
                None => src.text.clone(),
            };
            pages.push(CrawlPage {
                id,
                text,
                copy_of: Some(src.id.clone()),
                duplicate: Some(if near { "near" } else { "exact" }.into()),
                edit_rate,
                ..src
            });
            continue;
        }
        let page = if rng.random_bool(cfg.low_quality) {
            low_quality_page(id, &words, &mut rng)
        } else {
            let mut text = article(&mut rng);
            let mut contaminated_from = None;
            if rng.random_bool(cfg.contaminated) {
                let k = rng.random_range(0..evals.len());
                let quote = evals[k]["text"].as_str().unwrap_or_default();
                text = format!("{text}\nA reader wrote: {quote}\n{}", article(&mut rng));
                contaminated_from = Some(format!("{CONTAMINATION_TASK}/test/{k}"));
            }
            CrawlPage {
                id,
                text,
                kind: "article".into(),
                high_quality: true,
                copy_of: None,
                duplicate: None,
                edit_rate: None,
                contaminated_from,
            }
        };
        originals.push(pages.len());
        pages.push(page);
    }
    Ok(pages)
}

/// The curated corpus: `cfg.curated` articles from their own random stream.
pub fn curated(cfg: &CrawlConfig) -> Vec<serde_json::Value> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(1);
    (0..cfg.curated).map(|i| serde_json::json!({"id": format!("curated-{i:07}"), "text": article(&mut rng)})).collect()
}

/// Generates the crawl into `dir/crawl.jsonl` and the curated corpus into `dir/curated.jsonl`,
/// with the resolved config in `dir/crawl.toml`.
pub fn write_crawl(dir: &std::path::Path, cfg: &CrawlConfig) -> anyhow::Result<Vec<CrawlPage>> {
    let crawl = generate(cfg)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::jsonl::write_jsonl(&dir.join("crawl.jsonl"), &crawl)?;
    crate::jsonl::write_jsonl(&dir.join("curated.jsonl"), &curated(cfg))?;
    std::fs::write(dir.join("crawl.toml"), toml::to_string(cfg)?)
        .with_context(|| format!("writing {}", dir.join("crawl.toml").display()))?;
    Ok(crawl)
}

/// An article: several scene reports and instructions with their answers.
fn article(rng: &mut ChaCha8Rng) -> String {
    let holdout = Holdout::default();
    let n = rng.random_range(4..=9);
    (0..n)
        .map(|_| {
            if rng.random_bool(0.7) {
                describe(&Scene::random(rng, MAX_DESCRIBED_OBJECTS), rng)
            } else {
                InstructTask::random(rng, &holdout).document()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn pick<'a>(words: &[&'a str], rng: &mut ChaCha8Rng) -> &'a str {
    words.choose(rng).copied().unwrap_or("word")
}

/// Boilerplate, spam, a keyword list or a templated page.
fn low_quality_page(id: String, words: &[&str], rng: &mut ChaCha8Rng) -> CrawlPage {
    let w = |rng: &mut ChaCha8Rng| pick(words, rng).to_string();
    let (kind, text) = match rng.random_range(0..4) {
        0 => {
            let site = w(rng);
            let body: Vec<String> = (0..rng.random_range(3..8)).map(|_| w(rng)).collect();
            ("boilerplate", format!(
                "Home | About | Contact | Login | Register\nWelcome to {site} online. We use cookies to improve your experience. \
                 Accept all cookies.\n{}\nCopyright {} {site}. All rights reserved. Privacy policy | Terms of use | Sitemap",
                body.join(" "),
                rng.random_range(1998..2024)
            ))
        }
        1 => {
            let lines: Vec<String> = (0..rng.random_range(4..10))
                .map(|_| {
                    let item = w(rng);
                    format!("BUY cheap {item} NOW!!! best {item} price, click here for FREE {} {}", w(rng), w(rng))
                })
                .collect();
            ("spam", lines.join("\n"))
        }
        2 => ("keywords", (0..rng.random_range(30..80)).map(|_| w(rng)).collect::<Vec<_>>().join(", ")),
        _ => {
            let (item, a, b) = (w(rng), w(rng), w(rng));
            (
                "templated",
                format!(
                    "{item} for sale. Buy {item} online at the best price. Our {item} comes with {a} and {b}. \
                 Order your {item} today and get free delivery. Customers who bought {item} also bought {}. \
                 {item} reviews: {} stars.",
                    w(rng),
                    rng.random_range(1..=5)
                ),
            )
        }
    };
    CrawlPage {
        id,
        text,
        kind: kind.into(),
        high_quality: false,
        copy_of: None,
        duplicate: None,
        edit_rate: None,
        contaminated_from: None,
    }
}

/// `text` with each word, at `rate`, replaced, dropped or followed by an inserted word (one of
/// the three at random); line breaks are kept.
pub fn edit(text: &str, rate: f64, words: &[&str], rng: &mut ChaCha8Rng) -> String {
    text.lines()
        .map(|line| {
            let mut out: Vec<&str> = Vec::new();
            for word in line.split(' ') {
                if !rng.random_bool(rate) {
                    out.push(word);
                    continue;
                }
                match rng.random_range(0..3) {
                    0 => out.push(pick(words, rng)),
                    1 => {}
                    _ => {
                        out.push(word);
                        out.push(pick(words, rng));
                    }
                }
            }
            out.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crawl_is_labelled_and_repeats_from_its_seed() {
        let cfg = CrawlConfig { pages: 600, ..CrawlConfig::default() };
        let pages = generate(&cfg).unwrap();
        assert_eq!(pages, generate(&cfg).unwrap());
        let by_id: std::collections::HashMap<&str, &CrawlPage> = pages.iter().map(|p| (p.id.as_str(), p)).collect();
        let mut seen = (0, 0, 0, 0);
        for p in &pages {
            match (p.duplicate.as_deref(), &p.copy_of) {
                (Some("exact"), Some(src)) => {
                    assert_eq!(p.text, by_id[src.as_str()].text);
                    seen.0 += 1;
                }
                (Some("near"), Some(src)) => {
                    assert!(p.edit_rate.is_some() && by_id[src.as_str()].duplicate.is_none());
                    seen.1 += 1;
                }
                (None, None) => {}
                other => panic!("inconsistent labels {other:?}"),
            }
            seen.2 += !p.high_quality as usize;
            seen.3 += p.contaminated_from.is_some() as usize;
        }
        assert!(seen.0 > 10 && seen.1 > 30 && seen.2 > 100 && seen.3 > 0, "{seen:?}");
    }

    #[test]
    fn edits_happen_at_the_asked_rate() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let text = vec!["w"; 20_000].join(" ");
        let edited = edit(&text, 0.05, &["x"], &mut rng);
        let changed = edited.split(' ').filter(|w| *w == "x").count() as f64;
        // Two of the three edit kinds add an "x": 2/3 of 5% of 20,000 words is 667.
        assert!((changed - 667.0).abs() < 80.0, "{changed}");
        assert_eq!(edit(&text, 0.0, &["x"], &mut rng), text);
    }
}
