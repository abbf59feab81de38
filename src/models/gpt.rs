//! GPT-2's decoder in one file: pre-LN blocks, fused q/k/v, SDPA causal attention, learned
//! positions, tied LM head. Parameter names and layouts are GPT-2's own (`transformer.h.0.attn.
//! c_attn.weight`, Linear weights stored `[in, out]`), so a checkpoint's `model.safetensors` is a
//! Hugging Face GPT-2 state dict and weights port 1:1.
//!
//! Shapes: B batch, T time, C = n_embd, H = n_head, D = C / H, V = vocab_size.

use anyhow::{bail, ensure, Result};
use gptlab_nn::{causal_padding_mask, positions_from_mask, LayerNorm, Linear};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

mod cpu_step;

/// Which GELU the MLP uses: exact (erf) for models trained here, tanh for imported HF GPT-2
/// weights, whose logits only match with the approximation they were trained with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gelu {
    #[default]
    Exact,
    Tanh,
}

impl Gelu {
    fn approximate(self) -> &'static str {
        match self {
            Gelu::Exact => "none",
            Gelu::Tanh => "tanh",
        }
    }
}

/// Architecture hyper-parameters; `config.json` of every checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    pub vocab_size: i64,
    pub block_size: i64,
    pub n_layer: i64,
    pub n_head: i64,
    pub n_embd: i64,
    #[serde(default)]
    pub dropout: f64,
    /// Biases in Linears and LayerNorms (GPT-2 has them; without is ~6% faster, same quality).
    #[serde(default = "default_bias")]
    pub bias: bool,
    #[serde(default)]
    pub gelu: Gelu,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// The LM head is the token embedding (GPT-2); false gives the head its own weight
    /// (`lm_head.weight`), as models imported with untied heads have.
    #[serde(default = "default_tied")]
    pub tie_word_embeddings: bool,
}

fn default_bias() -> bool {
    true
}

fn default_tied() -> bool {
    true
}

fn default_eps() -> f64 {
    1e-5
}

/// The named presets, smallest first.
pub const PRESETS: [&str; 4] = ["nano", "micro", "mini", "gpt2"];

/// Parameter counts as the scaling literature uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ParamCounts {
    /// Every parameter (the tied head counted once).
    pub total: i64,
    /// Kaplan et al.'s N: everything but the token and position embeddings.
    pub non_embedding: i64,
}

impl GptConfig {
    /// Presets: `nano` (~0.1M params, tests), `micro` (quickstart on 2 CPU cores), `mini`
    /// (nanoGPT's Shakespeare baby GPT) and `gpt2` (124M, HF's 50257-token vocab).
    /// The small presets' vocab is a placeholder that training replaces with the tokenizer's.
    pub fn preset(name: &str) -> Result<Self> {
        let (n_layer, n_head, n_embd, block_size, vocab_size) = match name {
            "nano" => (3, 4, 48, 64, 512),
            "micro" => (4, 4, 128, 128, 1024),
            "mini" => (6, 6, 384, 256, 4096),
            "gpt2" => (12, 12, 768, 1024, 50257),
            other => bail!("unknown model preset {other:?}; presets: {}", PRESETS.join(", ")),
        };
        Ok(Self {
            vocab_size,
            block_size,
            n_layer,
            n_head,
            n_embd,
            dropout: 0.0,
            bias: true,
            gelu: if name == "gpt2" { Gelu::Tanh } else { Gelu::Exact },
            layer_norm_epsilon: 1e-5,
            tie_word_embeddings: true,
        })
    }

    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("block_size", self.block_size),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_embd", self.n_embd),
        ] {
            ensure!(v > 0, "model config: {name} must be positive, got {v}");
        }
        ensure!(
            self.n_embd % self.n_head == 0,
            "model config: n_embd ({}) must be divisible by n_head ({})",
            self.n_embd,
            self.n_head
        );
        ensure!((0.0..1.0).contains(&self.dropout), "model config: dropout must be in [0, 1), got {}", self.dropout);
        Ok(())
    }

    /// GPT-2's init for projections into the residual stream: 0.02 / sqrt(2 * n_layer), so the
    /// stream's variance does not grow with depth.
    fn residual_init_std(&self) -> f64 {
        0.02 / (2.0 * self.n_layer as f64).sqrt()
    }

    pub fn head_dim(&self) -> i64 {
        self.n_embd / self.n_head
    }

    pub fn param_counts(&self) -> ParamCounts {
        let c = self.n_embd;
        let b = self.bias as i64;
        let ln = c + b * c;
        let per_layer = 2 * ln + (c * 3 * c + b * 3 * c) + (c * c + b * c) // ln_1, ln_2, c_attn, attn.c_proj
            + (c * 4 * c + b * 4 * c) + (4 * c * c + b * c); // c_fc, mlp.c_proj
        let non_embedding = self.n_layer * per_layer + ln;
        let head = if self.tie_word_embeddings { 0 } else { self.vocab_size * c };
        let embedding = self.vocab_size * c + self.block_size * c + head;
        ParamCounts { total: non_embedding + embedding, non_embedding }
    }

    /// Training FLOPs per token at context `seq_len` (PaLM appendix B): 6N for the matmuls, with
    /// N counting the head (it is a matmul) but not `wpe` or an untied `wte` (lookups), plus
    /// attention scores.
    pub fn flops_per_token(&self, seq_len: i64) -> f64 {
        let lookups = self.block_size + if self.tie_word_embeddings { 0 } else { self.vocab_size };
        let n = (self.param_counts().total - lookups * self.n_embd) as f64;
        6.0 * n + 12.0 * (self.n_layer * self.n_head * self.head_dim() * seq_len) as f64
    }
}

/// Keys and values of the positions already processed, per layer, in buffers sized once (at
/// the first pass) and written in place: a decoding step copies its own position only, not the
/// whole past.
#[derive(Debug, Default)]
pub struct KvCache {
    /// Per layer, keys and values [B, H, capacity, D].
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Positions held.
    len: i64,
    /// Positions the buffers hold at most (None: the model's context).
    capacity: Option<i64>,
    /// What the fused CPU step writes besides the cache, sized at its first step.
    step: Option<cpu_step::StepBuffers>,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// A cache that will hold at most `positions` (prompt plus new tokens): smaller buffers than
    /// the whole context.
    pub fn with_capacity(positions: i64) -> Self {
        Self { capacity: Some(positions), ..Self::default() }
    }

    /// Number of positions already cached.
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One layer's view of the cache during a pass: its buffers, the positions they already hold,
/// and their capacity.
struct LayerCache<'a> {
    kv: &'a mut Option<(Tensor, Tensor)>,
    past: i64,
    capacity: i64,
}

#[derive(Debug)]
struct CausalSelfAttention {
    c_attn: Linear,
    c_proj: Linear,
    n_head: i64,
    dropout: f64,
}

impl CausalSelfAttention {
    fn new(p: nn::Path, cfg: &GptConfig) -> Self {
        let c = cfg.n_embd;
        Self {
            c_attn: Linear::conv1d(&p / "c_attn", c, 3 * c, 0.02, cfg.bias),
            c_proj: Linear::conv1d(&p / "c_proj", c, c, cfg.residual_init_std(), cfg.bias),
            n_head: cfg.n_head,
            dropout: cfg.dropout,
        }
    }

    /// x: [B, T, C]; `key_mask` [B, T_past + T] marks real (1) and padding (0) positions.
    fn forward(
        &self,
        x: &Tensor,
        cache: Option<LayerCache>,
        key_mask: Option<&Tensor>,
        train: bool,
        kind: Kind,
    ) -> Tensor {
        let (b, t, c) = x.size3().unwrap();
        let d = c / self.n_head;
        let qkv = self.c_attn.forward(x, kind); // [B, T, 3C]
        let qkv = qkv.view([b, t, 3, self.n_head, d]).permute([2, 0, 3, 1, 4]); // [3, B, H, T, D]
        let (q, mut k, mut v) = (qkv.get(0), qkv.get(1), qkv.get(2)); // [B, H, T, D]
        let t_past = match cache {
            Some(LayerCache { kv, past, capacity }) => {
                let (k_buf, v_buf) = kv.get_or_insert_with(|| {
                    let buf = || Tensor::zeros([b, self.n_head, capacity, d], (k.kind(), k.device()));
                    (buf(), buf()) // [B, H, capacity, D]
                });
                k_buf.narrow(2, past, t).copy_(&k);
                v_buf.narrow(2, past, t).copy_(&v);
                k = k_buf.narrow(2, 0, past + t); // [B, H, T_past + T, D]
                v = v_buf.narrow(2, 0, past + t);
                past
            }
            None => 0,
        };
        let p = if train { self.dropout } else { 0.0 };
        // SDPA's is_causal aligns the mask top-left, which is only right without a past; one new
        // token may attend to everything; several new tokens after a past, or padding, need an
        // explicit mask.
        let y = if let Some(key_mask) = key_mask {
            let mask = causal_padding_mask(key_mask, t_past, t); // [B, 1, T, T_past + T]
            Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), p, false, None::<f64>, false)
        } else if t_past == 0 {
            Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, p, true, None::<f64>, false)
        } else if t == 1 {
            Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, p, false, None::<f64>, false)
        } else {
            let total = t_past + t;
            let mask = Tensor::ones([t, total], (Kind::Bool, x.device())).tril(t_past); // [T, T_past + T]
            Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), p, false, None::<f64>, false)
        }; // [B, H, T, D]
        let y = y.transpose(1, 2).reshape([b, t, c]);
        dropout(self.c_proj.forward(&y, kind), p, train)
    }
}

#[derive(Debug)]
struct Mlp {
    c_fc: Linear,
    c_proj: Linear,
    gelu: Gelu,
    dropout: f64,
}

impl Mlp {
    fn new(p: nn::Path, cfg: &GptConfig) -> Self {
        let c = cfg.n_embd;
        Self {
            c_fc: Linear::conv1d(&p / "c_fc", c, 4 * c, 0.02, cfg.bias),
            c_proj: Linear::conv1d(&p / "c_proj", 4 * c, c, cfg.residual_init_std(), cfg.bias),
            gelu: cfg.gelu,
            dropout: cfg.dropout,
        }
    }

    fn forward(&self, x: &Tensor, train: bool, kind: Kind) -> Tensor {
        let h = self.c_fc.forward(x, kind).gelu(self.gelu.approximate()); // [B, T, 4C]
        dropout(self.c_proj.forward(&h, kind), self.dropout, train) // [B, T, C]
    }
}

#[derive(Debug)]
struct Block {
    ln_1: LayerNorm,
    attn: CausalSelfAttention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    fn new(p: nn::Path, cfg: &GptConfig) -> Self {
        let (c, eps) = (cfg.n_embd, cfg.layer_norm_epsilon);
        Self {
            ln_1: LayerNorm::new(&p / "ln_1", c, cfg.bias, eps),
            attn: CausalSelfAttention::new(&p / "attn", cfg),
            ln_2: LayerNorm::new(&p / "ln_2", c, cfg.bias, eps),
            mlp: Mlp::new(&p / "mlp", cfg),
        }
    }

    /// The residual stream stays fp32; branches compute in `kind`.
    fn forward(
        &self,
        x: &Tensor,
        cache: Option<LayerCache>,
        key_mask: Option<&Tensor>,
        train: bool,
        kind: Kind,
    ) -> Tensor {
        let x = x + self.attn.forward(&self.ln_1.forward(x), cache, key_mask, train, kind);
        &x + self.mlp.forward(&self.ln_2.forward(&x), train, kind)
    }
}

/// What the decoder reads: token ids, or embeddings that already stand in the token-embedding
/// space (the multimodal model splices projected image patches in this way).
pub enum Input<'a> {
    /// [B, T] int64
    Tokens(&'a Tensor),
    /// [B, T, C] float
    Embeddings(&'a Tensor),
}

/// The GPT decoder with its LM head (tied to `wte` unless the config unties it).
#[derive(Debug)]
pub struct Gpt {
    pub cfg: GptConfig,
    wte: Tensor,
    wpe: Tensor,
    /// The head's own weight [V, C] when untied.
    lm_head: Option<Tensor>,
    h: Vec<Block>,
    ln_f: LayerNorm,
    compute_kind: Kind,
}

impl Gpt {
    /// Builds the model's variables under `p` (use the VarStore root) with GPT-2's init.
    pub fn new(cfg: &GptConfig, p: nn::Path) -> Result<Self> {
        cfg.validate()?;
        let t = &p / "transformer";
        let init = nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        let wte = (&t / "wte").var("weight", &[cfg.vocab_size, cfg.n_embd], init);
        let wpe = (&t / "wpe").var("weight", &[cfg.block_size, cfg.n_embd], init);
        let h = (0..cfg.n_layer).map(|i| Block::new(&t / "h" / i, cfg)).collect();
        let ln_f = LayerNorm::new(&t / "ln_f", cfg.n_embd, cfg.bias, cfg.layer_norm_epsilon);
        let lm_head =
            (!cfg.tie_word_embeddings).then(|| (&p / "lm_head").var("weight", &[cfg.vocab_size, cfg.n_embd], init));
        Ok(Self { cfg: cfg.clone(), wte, wpe, lm_head, h, ln_f, compute_kind: Kind::Float })
    }

    /// Matmuls in `kind` (bf16 for mixed precision on CUDA); weights, LayerNorms, the residual
    /// stream and the loss stay fp32.
    pub fn set_compute_kind(&mut self, kind: Kind) {
        self.compute_kind = kind;
    }

    pub fn compute_kind(&self) -> Kind {
        self.compute_kind
    }

    /// For inference only: stores the blocks' Linear weights and biases in `kind` and computes
    /// in it, so a bf16 step does not cast every weight again (LayerNorms, embeddings and the
    /// residual stream stay fp32). Training needs fp32 weights: do not train after this.
    pub fn cast_linears_for_inference(&mut self, kind: Kind) {
        tch::no_grad(|| {
            for block in &mut self.h {
                for linear in
                    [&mut block.attn.c_attn, &mut block.attn.c_proj, &mut block.mlp.c_fc, &mut block.mlp.c_proj]
                {
                    for t in std::iter::once(&mut linear.weight).chain(linear.bias.as_mut()) {
                        let cast = t.to_kind(kind);
                        t.set_data(&cast);
                    }
                }
            }
        });
        self.compute_kind = kind;
    }

    pub fn device(&self) -> Device {
        self.wte.device()
    }

    /// Token embeddings for ids [B, T] -> [B, T, C]; lets callers build `Input::Embeddings`.
    pub fn embed_tokens(&self, idx: &Tensor) -> Tensor {
        Tensor::embedding(&self.wte, idx, -1, false, false)
    }

    /// Logits [B, T, V] (fp32): the LM head over [`Gpt::hidden`].
    pub fn forward(&self, input: Input, pass: Pass) -> Result<Tensor> {
        Ok(self.lm_head(&self.hidden(input, pass)?))
    }

    /// The final hidden states [B, T, C] (fp32, after `ln_f`): what reward, value and
    /// classification heads read. Positions follow whatever `pass.cache` holds, or count the
    /// real tokens of `pass.mask`; with a cache, keys and values of these positions are appended.
    pub fn hidden(&self, input: Input, pass: Pass) -> Result<Tensor> {
        let Pass { mask, pos, mut cache, train } = pass;
        let tok_emb = match input {
            Input::Tokens(idx) => self.embed_tokens(idx),
            Input::Embeddings(e) => e.to_kind(Kind::Float),
        }; // [B, T, C]
        let (b, t, c) = tok_emb.size3()?;
        ensure!(c == self.cfg.n_embd, "input embeddings have width {c}, the model expects {}", self.cfg.n_embd);
        let t_past = cache.as_ref().map_or(0, |c| c.len());
        ensure!(
            t_past + t <= self.cfg.block_size,
            "sequence of {} tokens exceeds the model's context of {}",
            t_past + t,
            self.cfg.block_size
        );
        if let Some(m) = mask {
            ensure!(
                m.size() == [b, t_past + t],
                "attention mask has shape {:?}, expected [{b}, {}] (cached plus new positions)",
                m.size(),
                t_past + t
            );
        }
        let pos = match (pos, mask) {
            (Some(p), _) => p.shallow_clone(),
            (None, Some(m)) => positions_from_mask(m, t), // [B, T]
            (None, None) => Tensor::arange_start(t_past, t_past + t, (Kind::Int64, self.device())), // [T]
        };
        let pos_emb = Tensor::embedding(&self.wpe, &pos, -1, false, false); // [T, C] or [B, T, C]
        let mut x = dropout(tok_emb + pos_emb, self.cfg.dropout, train);
        let capacity = cache.as_ref().and_then(|c| c.capacity).unwrap_or(self.cfg.block_size);
        if let Some(cache) = cache.as_deref_mut() {
            ensure!(t_past + t <= capacity, "{} positions exceed the KV cache's capacity of {capacity}", t_past + t);
            if let Some(Some((k, _))) = cache.layers.first() {
                ensure!(k.size()[0] == b, "the KV cache holds a batch of {}, not {b}", k.size()[0]);
            }
            cache.layers.resize_with(self.h.len(), || None);
        }
        for (i, block) in self.h.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| LayerCache { kv: &mut c.layers[i], past: t_past, capacity });
            x = block.forward(&x, slot, mask, train, self.compute_kind);
        }
        if let Some(cache) = cache {
            cache.len = t_past + t;
        }
        Ok(self.ln_f.forward(&x))
    }

    /// The LM head: hidden states [B, T, C] -> logits [B, T, V] (fp32).
    pub fn lm_head(&self, h: &Tensor) -> Tensor {
        let kind = self.compute_kind;
        let w = self.lm_head.as_ref().unwrap_or(&self.wte);
        if kind == Kind::Float {
            return h.linear(w, None::<Tensor>);
        }
        h.to_kind(kind).linear(&w.to_kind(kind), None::<Tensor>).to_kind(Kind::Float)
    }

    /// Mean next-token cross-entropy of `idx` [B, T] against `targets` [B, T] over the
    /// positions whose target is not [`IGNORE_INDEX`] (PyTorch's `ignore_index`, HF's label
    /// masking): SFT and VLM answers train on their answer tokens only.
    pub fn loss(&self, idx: &Tensor, targets: &Tensor, train: bool) -> Result<Tensor> {
        let logits = self.forward(Input::Tokens(idx), Pass { train, ..Default::default() })?;
        Ok(lm_loss(&logits, targets))
    }
}

/// Dropout, or `x` itself without a call where it would do nothing (inference, p = 0): a
/// decoding step is hundreds of small ops, each a dispatch.
fn dropout(x: Tensor, p: f64, train: bool) -> Tensor {
    if train && p > 0.0 {
        x.dropout(p, train)
    } else {
        x
    }
}

/// Targets with this value are left out of the loss and of its mean.
pub const IGNORE_INDEX: i64 = -100;

/// Mean cross-entropy of `logits` [B, T, V] against `targets` [B, T] over the positions whose
/// target is not [`IGNORE_INDEX`].
pub fn lm_loss(logits: &Tensor, targets: &Tensor) -> Tensor {
    let v = logits.size()[2];
    // nll_loss's default ignore_index is -100: ignored positions count in neither sum nor mean.
    logits.reshape([-1, v]).cross_entropy_for_logits(&targets.reshape([-1]))
}

/// The optional parts of a forward pass. `Pass::default()` is an inference pass over whole,
/// unpadded rows.
#[derive(Default)]
pub struct Pass<'a> {
    /// [B, T_past + T]: 1 for real tokens, 0 for padding (left or right). Padded keys are never
    /// attended to and positions count real tokens only, so each row computes what it would
    /// alone.
    pub mask: Option<&'a Tensor>,
    /// Explicit positions [T] or [B, T], overriding those from the cache or mask.
    pub pos: Option<&'a Tensor>,
    /// Keys and values of earlier positions; this pass appends its own.
    pub cache: Option<&'a mut KvCache>,
    /// Dropout on.
    pub train: bool,
}
