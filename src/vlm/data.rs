//! Multimodal records as training batches. Records are encoded once; every image they name is
//! decoded once (in parallel) and kept as bytes, or, when the vision tower is frozen, replaced
//! by the tower's features computed once (the feature cache: no ViT pass per step). Training
//! batch `i` is a pure function of (seed, i): each epoch is its own seeded permutation, so the
//! sampler state is the next batch's index, as for the other objectives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use gptlab_vision::transform::{load_image, resize_center_crop};
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::data::multimodal::{read_records, LossOn};
use crate::data::sampler::batch_range;
use crate::dist::ProcessGroup;
use crate::models::gpt::IGNORE_INDEX;
use crate::models::vlm::{Images, Vlm, VlmConfig};
use crate::tokenizer::Tokenizer;

/// One record, ready for the decoder: ids with every image expanded to its N positions, labels,
/// and its images as rows of the data set's image table.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub ids: Vec<i64>,
    pub labels: Vec<i64>,
    pub images: Vec<usize>,
}

/// Every distinct image of a data set, as the decoder will receive it.
pub enum ImageTable {
    /// RGB bytes [n, 3, S, S] (uint8), normalised per batch.
    Pixels { bytes: Tensor, mean: Tensor, std: Tensor },
    /// A frozen tower's selected features [n, N, W].
    Features(Tensor),
}

impl ImageTable {
    /// Rows `rows` of the table as the model input for one batch, on `device`.
    pub fn gather(&self, rows: &[usize], device: Device) -> Option<Tensor> {
        if rows.is_empty() {
            return None;
        }
        let index = Tensor::from_slice(&rows.iter().map(|&r| r as i64).collect::<Vec<_>>());
        Some(match self {
            ImageTable::Pixels { bytes, mean, std } => {
                let px = bytes.index_select(0, &index).to_device(device).to_kind(Kind::Float) / 255.0; // [I, 3, S, S]
                (px - mean.to_device(device)) / std.to_device(device)
            }
            ImageTable::Features(f) => f.index_select(0, &index).to_device(device), // [I, N, W]
        })
    }

    pub fn as_images<'a>(&self, t: &'a Tensor) -> Images<'a> {
        match self {
            ImageTable::Pixels { .. } => Images::Pixels(t),
            ImageTable::Features(_) => Images::Features(t),
        }
    }
}

/// A data set of encoded records and their images.
pub struct VlmDataset {
    pub examples: Vec<Encoded>,
    pub images: ImageTable,
    pub pad: i64,
}

/// A padded batch: ids and labels [B, T] (right-padded), and its images in row order.
pub struct Batch {
    pub ids: Tensor,
    pub labels: Tensor,
    pub images: Option<Tensor>,
    /// Positions that are not padding (for FLOPs).
    pub positions: i64,
    /// Positions whose next token is trained: the terms the loss averages.
    pub trained: usize,
}

impl VlmDataset {
    /// Reads and encodes the records of `path` (at most `limit`), checks that each fits the
    /// decoder's context (or, with `skip_too_long`, leaves out those that do not, saying how
    /// many), and loads their images (preprocessed for `cfg`'s tower).
    pub fn load(
        path: &Path,
        image_root: Option<&Path>,
        tok: &Tokenizer,
        cfg: &VlmConfig,
        loss_on: LossOn,
        limit: Option<usize>,
        skip_too_long: bool,
    ) -> Result<Self> {
        let mut items = read_records(path, image_root)?;
        if let Some(limit) = limit {
            items.truncate(limit);
        }
        let n = cfg.tokens_per_image() as usize;
        let block = cfg.text.block_size as usize;
        let mut table: HashMap<PathBuf, usize> = HashMap::new();
        let mut paths = Vec::new();
        let mut examples = Vec::with_capacity(items.len());
        let mut skipped = 0;
        for item in &items {
            let ex = item.record.encode(tok, loss_on).with_context(|| item.origin.clone())?;
            if skip_too_long && ex.expanded_len(n) > block {
                skipped += 1;
                continue;
            }
            ensure!(
                ex.expanded_len(n) <= block,
                "{}: {} positions ({} image(s) of {n} tokens) exceed the decoder's context of {block} \
                 (data.skip_too_long = true leaves such records out)",
                item.origin,
                ex.expanded_len(n),
                ex.images.len()
            );
            let (ids, labels) = ex.expanded(cfg.image_token_id, n);
            let images = ex
                .images
                .iter()
                .map(|p| {
                    *table.entry(p.clone()).or_insert_with(|| {
                        paths.push(p.clone());
                        paths.len() - 1
                    })
                })
                .collect();
            examples.push(Encoded { ids, labels, images });
        }
        if skipped > 0 {
            crate::main_eprintln!(
                "[vlm] {}: left out {skipped} record(s) longer than the context of {block}",
                path.display()
            );
        }
        let images = load_pixels(&paths, cfg)?;
        Ok(Self { examples, images, pad: tok.pad() as i64 })
    }

    /// Replaces the pixel table by `model`'s selected vision features, computed once in chunks
    /// (the tower must stay frozen for these to stay right). Under data parallelism each rank
    /// computes every `world_size`-th chunk, and a sum over the ranks fills in the rest.
    pub fn cache_features(&mut self, model: &Vlm, device: Device, group: Option<&ProcessGroup>) -> Result<()> {
        let ImageTable::Pixels { bytes, .. } = &self.images else {
            return Ok(());
        };
        let n = bytes.size()[0] as usize;
        let (rank, world) = crate::dist::rank_world(group);
        let features = |rows: &[usize]| -> Result<Tensor> {
            let px = self.images.gather(rows, device).context("no images")?;
            Ok(tch::no_grad(|| model.vision_features(&px))?.to_device(Device::Cpu))
            // [I, N, W]
        };
        // Another rank's chunk is zeros of its shape, which the sum over the ranks replaces.
        let probe = if world > 1 && n > 0 { Some(features(&[0])?) } else { None }; // [1, N, W]
        let mut chunks = Vec::new();
        for k in 0..n.div_ceil(64) {
            let rows: Vec<usize> = batch_range(n, 64, k).collect();
            chunks.push(match (&probe, k % world == rank) {
                (Some(p), false) => p.zeros_like().repeat([rows.len() as i64, 1, 1]),
                _ => features(&rows)?,
            });
        }
        if !chunks.is_empty() {
            let table = Tensor::cat(&chunks, 0); // [n, N, W]
            if let Some(group) = group {
                group.sum_tensors(&[table.shallow_clone()])?;
            }
            self.images = ImageTable::Features(table);
        }
        Ok(())
    }

    /// The examples at `indices`, padded into one batch.
    pub fn batch(&self, indices: &[usize], device: Device) -> Batch {
        let width = indices.iter().map(|&i| self.examples[i].ids.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(indices.len() * width);
        let mut labels = Vec::with_capacity(ids.capacity());
        let mut rows = Vec::new();
        let (mut positions, mut trained) = (0, 0);
        for &i in indices {
            let ex = &self.examples[i];
            trained += ex.labels.iter().skip(1).filter(|&&l| l != IGNORE_INDEX).count();
            let pad = width - ex.ids.len();
            ids.extend(ex.ids.iter().copied().chain(std::iter::repeat_n(self.pad, pad)));
            labels.extend(ex.labels.iter().copied().chain(std::iter::repeat_n(IGNORE_INDEX, pad)));
            rows.extend(&ex.images);
            positions += ex.ids.len() as i64;
        }
        let shape = [indices.len() as i64, width as i64];
        Batch {
            ids: Tensor::from_slice(&ids).view(shape).to_device(device),
            labels: Tensor::from_slice(&labels).view(shape).to_device(device),
            images: self.images.gather(&rows, device),
            positions,
            trained,
        }
    }
}

/// Decodes every image (in parallel), resized and centre-cropped to the tower's size, as bytes.
pub(crate) fn load_pixels(paths: &[PathBuf], cfg: &VlmConfig) -> Result<ImageTable> {
    let size = cfg.vision.image_size as u32;
    let decoded: Vec<Vec<u8>> = paths
        .par_iter()
        .map(|p| -> Result<Vec<u8>> {
            let rgb = resize_center_crop(&load_image(p)?, size);
            let plane = (size * size) as usize;
            let mut chw = vec![0u8; 3 * plane];
            for (i, px) in rgb.pixels().enumerate() {
                for c in 0..3 {
                    chw[c * plane + i] = px[c];
                }
            }
            Ok(chw)
        })
        .collect::<Result<_>>()?;
    let flat: Vec<u8> = decoded.concat();
    let s = size as i64;
    let bytes = Tensor::from_slice(&flat).view([paths.len() as i64, 3, s, s]);
    let channel = |v: [f32; 3]| Tensor::from_slice(&v).view([1, 3, 1, 1]);
    Ok(ImageTable::Pixels { bytes, mean: channel(cfg.image_mean), std: channel(cfg.image_std) })
}
