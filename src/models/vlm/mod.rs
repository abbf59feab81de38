//! The multimodal GPT in LLaVA's shape: a CLIP ViT encodes each image, a projector maps its
//! features into the decoder's embedding space, and wherever the text holds the `<image>` token
//! those projected tokens take its place, so any number of images interleave with text. The
//! decoder is the GPT of `models::gpt`, unchanged: positions run on through image tokens and
//! attention is causal over everything. Parameter names follow HF LLaVA's layout:
//! `vision_tower.vision_model.*`, `multi_modal_projector.*`, `language_model.transformer.*`.
//!
//! Shapes: B rows, T positions, I images, N tokens per image, C decoder width.

pub mod projector;

use std::path::Path;

use anyhow::{ensure, Result};
use gptlab_vision::clip::{VisionConfig, VisionTransformer};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use super::gpt::{lm_loss, Gpt, GptConfig, Input, Pass, IGNORE_INDEX};
pub use projector::{Projector, ProjectorKind};

/// Which vision tokens feed the projector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureSelect {
    /// The patch tokens, class token dropped (LLaVA's "default").
    #[default]
    Patches,
    /// Every token, class token first (LLaVA's "full").
    All,
}

/// A VLM's architecture; `config.json` of its checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlmConfig {
    pub vision: VisionConfig,
    pub text: GptConfig,
    pub projector: ProjectorKind,
    /// HF's indexing of the tower's hidden states: 0 is the embedding output, -1 the last layer,
    /// -2 (LLaVA's default) the penultimate one.
    #[serde(default = "penultimate")]
    pub vision_feature_layer: i64,
    #[serde(default)]
    pub select: FeatureSelect,
    /// The tokenizer's `<image>` id.
    pub image_token_id: i64,
    /// The pixel normalisation the vision tower was trained with.
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

fn penultimate() -> i64 {
    -2
}

impl VlmConfig {
    pub fn validate(&self) -> Result<()> {
        self.text.validate()?;
        let layers = self.vision.layers;
        ensure!(
            (-(layers + 1)..=layers).contains(&self.vision_feature_layer),
            "vision_feature_layer {} is outside the tower's hidden states (-{}..={layers})",
            self.vision_feature_layer,
            layers + 1
        );
        ensure!(
            (0..self.text.vocab_size).contains(&self.image_token_id),
            "image_token_id {} is outside the decoder's vocabulary",
            self.image_token_id
        );
        let grid = self.vision.image_size / self.vision.patch_size;
        if let ProjectorKind::PixelShuffle { factor } = self.projector {
            ensure!(self.select == FeatureSelect::Patches, "the pixel_shuffle projector needs select = \"patches\"");
            ensure!(
                factor > 0 && grid % factor == 0,
                "pixel_shuffle factor {factor} must divide the {grid}-patch grid"
            );
        }
        Ok(())
    }

    /// Decoder positions one image takes.
    pub fn tokens_per_image(&self) -> i64 {
        let grid = self.vision.image_size / self.vision.patch_size;
        let n = grid * grid + (self.select == FeatureSelect::All) as i64;
        match self.projector {
            ProjectorKind::PixelShuffle { factor } => n / (factor * factor),
            _ => n,
        }
    }
}

/// The vision tower, the projector and the decoder.
#[derive(Debug)]
pub struct Vlm {
    pub cfg: VlmConfig,
    pub vision_tower: VisionTransformer,
    pub projector: Projector,
    pub language_model: Gpt,
}

impl Vlm {
    /// Builds every variable under `p` (use the VarStore root), freshly initialised; fill them
    /// from a CLIP and a GPT checkpoint with [`Vlm::load_parts`].
    pub fn new(cfg: &VlmConfig, p: nn::Path) -> Result<Self> {
        cfg.validate()?;
        let vision_tower = VisionTransformer::new(&p / "vision_tower" / "vision_model", &cfg.vision);
        let projector = Projector::new(&p / "multi_modal_projector", cfg.projector, cfg.vision.width, cfg.text.n_embd);
        let language_model = Gpt::new(&cfg.text, &p / "language_model")?;
        Ok(Self { cfg: cfg.clone(), vision_tower, projector, language_model })
    }

    /// Loads the vision tower from a `gptlab clip train` (or imported HF CLIP) checkpoint and the
    /// decoder from a GPT checkpoint; the projector keeps its initialisation.
    pub fn load_parts(vs: &nn::VarStore, clip: &Path, gpt: &Path) -> Result<()> {
        crate::checkpoint::load_prefixed(vs, clip, "vision_model.", "vision_tower.vision_model.")?;
        crate::checkpoint::load_prefixed(vs, gpt, "transformer.", "language_model.transformer.")?;
        if vs.variables().contains_key("language_model.lm_head.weight") {
            crate::checkpoint::load_prefixed(vs, gpt, "lm_head.", "language_model.lm_head.")?;
        }
        Ok(())
    }

    /// Matmuls of all three parts in `kind` (bf16 under mixed precision).
    pub fn set_compute_kind(&mut self, kind: Kind) {
        self.vision_tower.compute_kind = kind;
        self.language_model.set_compute_kind(kind);
    }

    pub fn device(&self) -> Device {
        self.language_model.device()
    }

    /// The tower's features at `vision_feature_layer`, selected: pixels [I, 3, S, S]
    /// (normalised) -> [I, N, W]. A frozen tower's features can be computed once and cached.
    pub fn vision_features(&self, pixels: &Tensor) -> Result<Tensor> {
        let hidden = self.vision_tower.forward(pixels)?.hidden_states; // layers + 1 of [I, 1 + g^2, W]
        let n = hidden.len() as i64;
        let at = self.cfg.vision_feature_layer.rem_euclid(n) as usize;
        Ok(match self.cfg.select {
            FeatureSelect::Patches => hidden[at].narrow(1, 1, hidden[at].size()[1] - 1), // [I, g^2, W]
            FeatureSelect::All => hidden[at].shallow_clone(),
        })
    }

    /// Projected image tokens [I, N', C].
    pub fn image_tokens(&self, images: Images) -> Result<Tensor> {
        let features = match images {
            Images::Pixels(pixels) => self.vision_features(pixels)?,
            Images::Features(f) => f.shallow_clone(),
        };
        self.projector.forward(&features, self.vision_tower.compute_kind)
    }

    /// The decoder's input embeddings [B, T, C] for `ids` [B, T] whose `<image>` positions each
    /// image's N tokens fill, in order (row by row), by a mask scatter.
    pub fn embed(&self, ids: &Tensor, images: Option<Images>) -> Result<Tensor> {
        let is_image = ids.eq(self.cfg.image_token_id); // [B, T]
        let text_ids = ids.where_scalarother(&is_image.logical_not(), 0); // placeholders embed as id 0, then are overwritten
        let emb = self.language_model.embed_tokens(&text_ids); // [B, T, C]
        let slots = is_image.sum(Kind::Int64).int64_value(&[]);
        let Some(images) = images else {
            ensure!(slots == 0, "the text has {slots} image positions but no image was given");
            return Ok(emb);
        };
        let tokens = self.image_tokens(images)?; // [I, N, C]
        let (images, n, c) = tokens.size3()?;
        ensure!(
            slots == images * n,
            "the text has {slots} image positions; {images} image(s) of {n} tokens need {}",
            images * n
        );
        let mask = is_image.unsqueeze(-1).expand_as(&emb); // [B, T, C]
        Ok(emb.masked_scatter(&mask, &tokens.reshape([images * n, c]).to_kind(emb.kind())))
    }

    /// Logits [B, T, V]: see [`Vlm::embed`]; `pass` as for the GPT (cache, mask, dropout).
    pub fn forward(&self, ids: &Tensor, images: Option<Images>, pass: Pass) -> Result<Tensor> {
        let emb = self.embed(ids, images)?;
        self.language_model.forward(Input::Embeddings(&emb), pass)
    }

    /// Mean next-token loss of `ids` [B, T] against `labels` [B, T] (the token each position is
    /// trained to be; [`IGNORE_INDEX`] where it is not). Image positions never count.
    pub fn loss(&self, ids: &Tensor, images: Option<Images>, labels: &Tensor, train: bool) -> Result<Tensor> {
        let t = ids.size()[1];
        let logits = self.forward(ids, images, Pass { train, ..Default::default() })?; // [B, T, V]
        let labels = labels.masked_fill(&ids.eq(self.cfg.image_token_id), IGNORE_INDEX);
        Ok(lm_loss(&logits.narrow(1, 0, t - 1), &labels.narrow(1, 1, t - 1)))
    }
}

/// What fills a batch's image positions.
#[derive(Clone, Copy)]
pub enum Images<'a> {
    /// Normalised pixels [I, 3, S, S], run through the vision tower.
    Pixels(&'a Tensor),
    /// The tower's selected features [I, N, W] ([`Vlm::vision_features`]), computed earlier.
    Features(&'a Tensor),
}

/// Repeats every `image_token` of `ids` `n` times: a placeholder per image in the text becomes
/// the N positions its projected tokens fill.
pub fn expand_placeholders(ids: &[i64], image_token: i64, n: usize) -> Vec<i64> {
    ids.iter().flat_map(|&id| std::iter::repeat_n(id, if id == image_token { n } else { 1 })).collect()
}
