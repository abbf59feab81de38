//! Image-caption pairs for CLIP: the synthetic world rendered on the fly, or image files listed
//! by a captions JSONL (`{"image": "x.png", "caption": "..."}`, paths relative to the file) or
//! by COCO captions (`annotations/captions_*.json` plus the image folder).
//!
//! Batch `i` is a pure function of (seed, i) for every source, so a checkpoint's batch index is
//! the whole sampler state. Files are decoded in parallel (rayon) on the loader thread; an image
//! that fails to decode is skipped with a warning naming it, replaced by the next draw, and
//! counted, and never stops the run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, ensure, Context, Result};
use gptlab_vision::transform::{load_image, Preprocess};
use gptlab_vision::world::{generate_item, WorldConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Deserialize;
use tch::Tensor;

use crate::tokenizer::Tokenizer;

/// Token ids of `caption`, cut to `context - 1` tokens, then end-of-text, then padding.
pub fn encode_caption(tok: &Tokenizer, caption: &str, context: usize) -> Result<Vec<i64>> {
    let mut ids = caption_ids(tok, caption, context)?;
    ids.resize(context, tok.pad() as i64);
    Ok(ids)
}

/// Token ids of `caption`, cut to `context - 1` tokens, then end-of-text (no padding).
pub fn caption_ids(tok: &Tokenizer, caption: &str, context: usize) -> Result<Vec<i64>> {
    let mut ids: Vec<i64> = tok.encode(caption)?.into_iter().map(i64::from).collect();
    ids.truncate(context - 1);
    ids.push(tok.eot() as i64);
    Ok(ids)
}

/// A source of training and validation pairs, as tensors: pixels [n, 3, S, S], tokens [n, L].
pub trait PairStream: Send + Sync {
    fn train_batch(&self, seed: u64, index: u64, n: u64) -> Result<(Tensor, Tensor)>;
    /// Validation pairs `start..start + n` (a fixed, held-out set).
    fn val_batch(&self, start: u64, n: u64) -> Result<(Tensor, Tensor)>;
    fn val_len(&self) -> u64;
    /// Images skipped so far because they did not decode.
    fn skipped(&self) -> u64 {
        0
    }
}

/// How captions become token rows.
pub struct TextSide {
    pub tokenizer: Tokenizer,
    pub context: usize,
}

impl TextSide {
    /// Captions as token rows [n, L]: each cut to the context, ended with end-of-text and padded
    /// to L, the longest row of this batch. Padding only to the batch's longest caption (HF's
    /// dynamic padding) changes no feature: the text tower is causal and pools at the first
    /// end-of-text, so no position it reads sees the padding. Short captions then cost a fraction
    /// of the context.
    pub fn rows(&self, captions: &[&str]) -> Result<Tensor> {
        let mut rows =
            captions.iter().map(|c| caption_ids(&self.tokenizer, c, self.context)).collect::<Result<Vec<_>>>()?;
        let len = rows.iter().map(Vec::len).max().unwrap_or(1);
        rows.iter_mut().for_each(|r| r.resize(len, self.tokenizer.pad() as i64));
        Ok(Tensor::from_slice(&rows.concat()).view([captions.len() as i64, len as i64]))
    }
}

/// The synthetic world: item `i` of stream `seed` with one of its captions.
pub struct WorldPairs {
    pub world: WorldConfig,
    pub preprocess: Preprocess,
    pub text: TextSide,
    pub val_seed: u64,
    pub val_pairs: u64,
}

impl WorldPairs {
    fn pairs(&self, seed: u64, start: u64, n: u64) -> Result<(Tensor, Tensor)> {
        let items: Vec<_> =
            (start..start + n).into_par_iter().map(|i| (i, generate_item(&self.world, seed, i))).collect();
        let captions: Vec<&str> = items
            .iter()
            .map(|(index, item)| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00ca_9710);
                rng.set_stream(*index);
                item.captions[rng.random_range(0..item.captions.len())].as_str()
            })
            .collect();
        let pixels: Vec<Tensor> = items.iter().map(|(_, item)| self.preprocess.to_tensor(&item.image)).collect();
        Ok((Tensor::stack(&pixels, 0), self.text.rows(&captions)?))
    }
}

impl PairStream for WorldPairs {
    fn train_batch(&self, seed: u64, index: u64, n: u64) -> Result<(Tensor, Tensor)> {
        self.pairs(seed, index * n, n)
    }

    fn val_batch(&self, start: u64, n: u64) -> Result<(Tensor, Tensor)> {
        self.pairs(self.val_seed, start, n)
    }

    fn val_len(&self) -> u64 {
        self.val_pairs
    }
}

/// One image file and one of its captions.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptionedImage {
    pub image: PathBuf,
    pub caption: String,
    /// The image's path as the data names it (relative to the captions file or COCO's image
    /// folder): the validation split is keyed on it, so moving the data keeps its split.
    pub key: String,
}

/// Reads a captions JSONL; image paths are resolved against the file's directory. Lines with a
/// missing field are configuration errors and name the file and line.
pub fn read_captions_jsonl(path: &Path) -> Result<Vec<CaptionedImage>> {
    #[derive(Deserialize)]
    struct Line {
        image: String,
        caption: String,
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let l: Line = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{}:{}: expected {{\"image\", \"caption\"}}: {e}", path.display(), i + 1))?;
        out.push(CaptionedImage { image: base.join(&l.image), caption: l.caption, key: l.image });
    }
    ensure!(!out.is_empty(), "{} lists no image-caption pairs", path.display());
    Ok(out)
}

/// Reads COCO captions (`{"images": [{"id", "file_name"}], "annotations": [{"image_id",
/// "caption"}]}`): one pair per caption, images under `images_dir`.
pub fn read_coco(annotations: &Path, images_dir: &Path) -> Result<Vec<CaptionedImage>> {
    #[derive(Deserialize)]
    struct Image {
        id: u64,
        file_name: String,
    }
    #[derive(Deserialize)]
    struct Annotation {
        image_id: u64,
        caption: String,
    }
    #[derive(Deserialize)]
    struct Coco {
        images: Vec<Image>,
        annotations: Vec<Annotation>,
    }
    let text = std::fs::read_to_string(annotations).with_context(|| format!("reading {}", annotations.display()))?;
    let coco: Coco =
        serde_json::from_str(&text).with_context(|| format!("{} is not COCO captions", annotations.display()))?;
    let files: HashMap<u64, &str> = coco.images.iter().map(|i| (i.id, i.file_name.as_str())).collect();
    let mut out = Vec::with_capacity(coco.annotations.len());
    for a in &coco.annotations {
        let Some(file) = files.get(&a.image_id) else {
            bail!("{}: caption for image id {} that the file does not list", annotations.display(), a.image_id)
        };
        let (image, key) = (images_dir.join(file), file.to_string());
        out.push(CaptionedImage { image, caption: a.caption.trim().to_string(), key });
    }
    ensure!(!out.is_empty(), "{} holds no captions", annotations.display());
    Ok(out)
}

/// Image files with captions, split into train and validation by a hash of the image path (all
/// captions of an image land on the same side).
pub struct FilePairs {
    train: Vec<CaptionedImage>,
    val: Vec<CaptionedImage>,
    preprocess: Preprocess,
    /// Random horizontal flips in training (off unless asked: captions say left and right).
    hflip: bool,
    text: TextSide,
    skipped: AtomicU64,
}

impl FilePairs {
    pub fn new(
        pairs: Vec<CaptionedImage>,
        val_fraction: f64,
        preprocess: Preprocess,
        hflip: bool,
        text: TextSide,
    ) -> Result<Self> {
        let (val, train): (Vec<_>, Vec<_>) =
            pairs.into_iter().partition(|p| crate::data::split::in_val_split(&p.key, val_fraction));
        ensure!(!train.is_empty(), "no training pairs left after the validation split");
        ensure!(val.len() >= 2, "the validation split has {} pairs; raise val_fraction or add data", val.len());
        Ok(Self { train, val, preprocess, hflip, text, skipped: AtomicU64::new(0) })
    }

    /// Decodes the pairs at `picks` in parallel; a failed image is replaced by the draws of
    /// `fallback` until one decodes.
    fn load(
        &self,
        pool: &[CaptionedImage],
        picks: &[usize],
        augment: Option<u64>,
        mut fallback: impl FnMut() -> usize,
    ) -> Result<(Tensor, Tensor)> {
        let decode = |i: usize, slot: usize| -> Option<Tensor> {
            match load_image(&pool[i].image) {
                Ok(img) => Some(match augment {
                    Some(seed) => {
                        let mut rng = ChaCha8Rng::seed_from_u64(seed);
                        rng.set_stream(slot as u64);
                        self.preprocess.train(&img, self.hflip, &mut rng)
                    }
                    None => self.preprocess.eval(&img),
                }),
                Err(e) => {
                    eprintln!("warning: skipping an image: {e:#}");
                    self.skipped.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        };
        let mut chosen: Vec<usize> = picks.to_vec();
        let mut pixels: Vec<Option<Tensor>> = chosen.par_iter().enumerate().map(|(slot, &i)| decode(i, slot)).collect();
        for (slot, px) in pixels.iter_mut().enumerate() {
            let mut tries = 0;
            while px.is_none() {
                tries += 1;
                ensure!(tries <= 100, "100 images in a row failed to decode; check the data");
                chosen[slot] = fallback();
                *px = decode(chosen[slot], slot);
            }
        }
        let pixels: Vec<Tensor> = pixels.into_iter().map(|p| p.expect("filled above")).collect();
        let captions: Vec<&str> = chosen.iter().map(|&i| pool[i].caption.as_str()).collect();
        Ok((Tensor::stack(&pixels, 0), self.text.rows(&captions)?))
    }
}

impl PairStream for FilePairs {
    fn train_batch(&self, seed: u64, index: u64, n: u64) -> Result<(Tensor, Tensor)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index);
        let len = self.train.len();
        let picks: Vec<usize> = (0..n).map(|_| rng.random_range(0..len)).collect();
        let augment = rng.random::<u64>();
        self.load(&self.train, &picks, Some(augment), || rng.random_range(0..len))
    }

    fn val_batch(&self, start: u64, n: u64) -> Result<(Tensor, Tensor)> {
        let len = self.val.len();
        let picks: Vec<usize> = (start..start + n).map(|i| i as usize % len).collect();
        let mut next = (start + n) as usize;
        self.load(&self.val, &picks, None, || {
            next += 1;
            next % len
        })
    }

    fn val_len(&self) -> u64 {
        self.val.len() as u64
    }

    fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}
