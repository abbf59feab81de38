//! One decoding step on the CPU in fp32 with six libtorch calls per block instead of some
//! thirty. At batch 1 a step's matrix-vector products take two thirds of its time and the
//! rest went to dispatching small operators (LayerNorms, views, cache writes, residual adds,
//! scaled-dot-product attention over one query). Here the matrix products and the GELU stay
//! libtorch calls (MKL, written into buffers sized once), and the rest runs in plain Rust over
//! the same memory: the embeddings, LayerNorms, residual stream, cache writes and attention.
//! The cache is the same [`KvCache`], so the general path and this one take turns freely.
//!
//! Shapes: B rows, C = n_embd, H = n_head, D = C / H, P = cache capacity, V = vocab_size.

use anyhow::{ensure, Context, Result};
use gptlab_nn::{LayerNorm, Linear};
use tch::{Device, Kind, Tensor};

use super::{Gpt, Input, KvCache, Pass};

/// The buffers one step writes, sized at the first step of a cache.
#[derive(Debug)]
pub(super) struct StepBuffers {
    /// The residual stream [B, C].
    x: Vec<f32>,
    /// Attention scores of one head over the cached positions [P].
    scores: Vec<f32>,
    /// A LayerNorm's output, the input of the next matrix product [B, C].
    normed: Tensor,
    /// q, k and v of the new position [B, 3C].
    qkv: Tensor,
    /// The heads' attention outputs, concatenated [B, C].
    attended: Tensor,
    /// A branch's output into the residual stream [B, C].
    branch: Tensor,
    /// The MLP's hidden layer [B, 4C].
    hidden: Tensor,
}

impl StepBuffers {
    fn new(b: i64, c: i64, capacity: i64) -> Self {
        let buf = |width: i64| Tensor::zeros([b, width], (Kind::Float, Device::Cpu));
        Self {
            x: vec![0.0; (b * c) as usize],
            scores: vec![0.0; capacity as usize],
            normed: buf(c),
            qkv: buf(3 * c),
            attended: buf(c),
            branch: buf(c),
            hidden: buf(4 * c),
        }
    }
}

/// Whether `t` is a contiguous CPU fp32 tensor, whose values Rust can read in place.
fn host_f32(t: &Tensor) -> bool {
    t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous()
}

/// The values of a contiguous CPU fp32 tensor ([`Gpt::cpu_step_applies`] checks the model's).
fn values(t: &Tensor) -> &[f32] {
    assert!(host_f32(t), "a contiguous CPU fp32 tensor");
    // SAFETY: such a tensor holds numel() f32 values from data_ptr(); the slice borrows `t`,
    // which keeps the storage alive.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel()) }
}

/// The values of a contiguous CPU fp32 tensor, to write.
fn values_mut(t: &mut Tensor) -> &mut [f32] {
    assert!(host_f32(t), "a contiguous CPU fp32 tensor");
    // SAFETY: as in `values`; the buffers written here (the step's own and the cache's) are
    // not viewed by any other tensor while the slice lives.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel()) }
}

/// Σ f(i) over i < n, in 16 independent partial sums: the compiler vectorises it, where one
/// running float sum must stay in order and cannot be.
#[inline(always)]
fn lane_sum(n: usize, f: impl Fn(usize) -> f32) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let whole = n / LANES * LANES;
    for i in (0..whole).step_by(LANES) {
        for (j, a) in acc.iter_mut().enumerate() {
            *a += f(i + j);
        }
    }
    acc.iter().sum::<f32>() + (whole..n).map(f).sum::<f32>()
}

/// The dot product of two equally long slices.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    lane_sum(a.len().min(b.len()), |i| a[i] * b[i])
}

/// `out = LayerNorm(x)` row by row, as `torch.layer_norm` computes it (biased variance).
fn layer_norm(x: &[f32], ln: &LayerNorm, out: &mut [f32]) {
    let (w, b) = (values(&ln.weight), ln.bias.as_ref().map(values));
    let c = w.len();
    for (x, out) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
        let mean = lane_sum(c, |i| x[i]) / c as f32;
        let var = lane_sum(c, |i| (x[i] - mean) * (x[i] - mean)) / c as f32;
        let inv = 1.0 / (var + ln.eps() as f32).sqrt();
        for (k, (o, v)) in out.iter_mut().zip(x).enumerate() {
            *o = (v - mean) * inv * w[k] + b.map_or(0.0, |b| b[k]);
        }
    }
}

/// `out = x @ W` (GPT-2's `[in, out]` weights) into `out`'s memory: one libtorch call, a plain
/// GEMV. The bias is left to the caller, which adds it in a loop it makes anyway (`addmm`
/// would first copy the bias into `out`, one more kernel).
fn matmul_into(linear: &Linear, x: &Tensor, out: &Tensor) -> Result<()> {
    // The returned handle is `out` itself.
    let _ = x.f_mm_out(out, &linear.weight)?;
    Ok(())
}

/// `out[row] += bias` for each row (nothing without a bias).
fn add_bias(linear: &Linear, out: &mut [f32]) {
    if let Some(b) = &linear.bias {
        let b = values(b);
        out.chunks_exact_mut(b.len()).for_each(|row| row.iter_mut().zip(b).for_each(|(o, b)| *o += b));
    }
}

/// `x += y (+ bias)`, a branch's output into the residual stream.
fn add_branch(x: &mut [f32], y: &[f32], linear: &Linear) {
    match linear.bias.as_ref().map(values) {
        Some(b) => x
            .chunks_exact_mut(b.len())
            .zip(y.chunks_exact(b.len()))
            .for_each(|(x, y)| x.iter_mut().zip(y.iter().zip(b)).for_each(|(x, (y, b))| *x += y + b)),
        None => x.iter_mut().zip(y).for_each(|(x, y)| *x += y),
    }
}

/// One head's attention for the new position of one row: its key and value written to the
/// cache at `past`, then softmax(q·Kᵀ / √D) V over positions 0..=past into `out` [D].
/// `keys` and `values` are the head's cache rows [P, D].
fn attend_head(q: &[f32], keys: &[f32], vals: &[f32], scores: &mut [f32], out: &mut [f32]) {
    let d = q.len();
    let scale = 1.0 / (d as f32).sqrt();
    for (s, k) in scores.iter_mut().zip(keys.chunks_exact(d)) {
        *s = dot(q, k) * scale;
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        total += *s;
    }
    out.fill(0.0);
    for (s, v) in scores.iter().zip(vals.chunks_exact(d)) {
        let p = s / total;
        for (o, v) in out.iter_mut().zip(v) {
            *o += p * v;
        }
    }
}

impl Gpt {
    /// Whether the weights suit the fused step: fp32 matmuls, and every tensor it reads in Rust
    /// (embeddings, LayerNorms, biases) a contiguous CPU fp32 tensor.
    fn weights_suit_cpu_step(&self) -> bool {
        let ln = |l: &LayerNorm| host_f32(&l.weight) && l.bias.as_ref().is_none_or(host_f32);
        let linear = |l: &Linear| l.weight.kind() == Kind::Float && l.bias.as_ref().is_none_or(host_f32);
        host_f32(&self.wte)
            && host_f32(&self.wpe)
            && ln(&self.ln_f)
            && self.h.iter().all(|b| {
                ln(&b.ln_1)
                    && ln(&b.ln_2)
                    && [&b.attn.c_attn, &b.attn.c_proj, &b.mlp.c_fc, &b.mlp.c_proj].into_iter().all(linear)
            })
    }

    /// Whether [`Gpt::decode_step`] can take the fused CPU path: weights that suit it (checked
    /// at a cache's first fused step, which sizes its buffers), and a cache that already holds a
    /// prefix (its buffers exist) with room for one more position.
    fn cpu_step_applies(&self, rows: usize, cache: &KvCache) -> bool {
        self.compute_kind == Kind::Float
            && (cache.step.is_some() || self.weights_suit_cpu_step())
            && cache.layers.len() == self.h.len()
            && cache.layers.iter().all(|kv| {
                kv.as_ref().is_some_and(|(k, _)| {
                    k.kind() == Kind::Float && k.size()[0] == rows as i64 && k.size()[2] > cache.len
                })
            })
    }

    /// Logits [B, V] (fp32) of one new token per row (`ids`, one per row) after the positions
    /// `cache` holds, whose keys and values it appends. Rows are unpadded (no attention mask).
    /// On the CPU in fp32 it runs fused (see the module); elsewhere it is one general forward
    /// pass.
    pub fn decode_step(&self, ids: &[i64], cache: &mut KvCache) -> Result<Tensor> {
        let (b, cfg) = (ids.len() as i64, &self.cfg);
        ensure!(b > 0, "a decoding step needs at least one row");
        if let Some(bad) = ids.iter().find(|&&t| t < 0 || t >= cfg.vocab_size) {
            anyhow::bail!("token id {bad} is outside the vocabulary (0..{})", cfg.vocab_size);
        }
        if !self.cpu_step_applies(ids.len(), cache) {
            let x = Tensor::from_slice(ids).to_device(self.device()).view([b, 1]); // [B, 1]
            let pass = Pass { cache: Some(cache), ..Default::default() };
            return Ok(self.forward(Input::Tokens(&x), pass)?.select(1, 0)); // [B, V]
        }
        tch::no_grad(|| self.fused_step(ids, cache))
    }

    /// [`Gpt::decode_step`]'s fused path.
    fn fused_step(&self, ids: &[i64], cache: &mut KvCache) -> Result<Tensor> {
        let (b, cfg) = (ids.len() as i64, &self.cfg);
        let (c, h) = (cfg.n_embd as usize, cfg.n_head as usize);
        let d = c / h;
        let past = cache.len as usize;
        ensure!(
            past < cfg.block_size as usize,
            "sequence of {} tokens exceeds the model's context of {}",
            past + 1,
            cfg.block_size
        );
        let capacity = cache.layers[0].as_ref().map(|(k, _)| k.size()[2]).context("an empty KV cache")?;
        let bufs = cache.step.get_or_insert_with(|| StepBuffers::new(b, cfg.n_embd, capacity));
        let (wte, wpe) = (values(&self.wte), values(&self.wpe));
        for (x, &id) in bufs.x.chunks_exact_mut(c).zip(ids) {
            let (tok, pos) = (&wte[id as usize * c..][..c], &wpe[past * c..][..c]);
            x.iter_mut().zip(tok.iter().zip(pos)).for_each(|(x, (t, p))| *x = t + p);
        }
        let cap = capacity as usize;
        for (block, kv) in self.h.iter().zip(cache.layers.iter_mut()) {
            let (k_buf, v_buf) = kv.as_mut().context("an empty KV cache layer")?;
            layer_norm(&bufs.x, &block.ln_1, values_mut(&mut bufs.normed));
            matmul_into(&block.attn.c_attn, &bufs.normed, &bufs.qkv)?; // [B, 3C]
            add_bias(&block.attn.c_attn, values_mut(&mut bufs.qkv));
            let (qkv, keys, vals) = (values(&bufs.qkv), values_mut(k_buf), values_mut(v_buf));
            let attended = values_mut(&mut bufs.attended);
            for row in 0..ids.len() {
                let qkv = &qkv[row * 3 * c..][..3 * c];
                for head in 0..h {
                    // This head's cache rows [P, D]; the new position goes in row `past`.
                    let at = (row * h + head) * cap * d;
                    let (keys, vals) = (&mut keys[at..][..(past + 1) * d], &mut vals[at..][..(past + 1) * d]);
                    keys[past * d..].copy_from_slice(&qkv[c + head * d..][..d]);
                    vals[past * d..].copy_from_slice(&qkv[2 * c + head * d..][..d]);
                    let out = &mut attended[row * c + head * d..][..d];
                    attend_head(&qkv[head * d..][..d], keys, vals, &mut bufs.scores[..past + 1], out);
                }
            }
            matmul_into(&block.attn.c_proj, &bufs.attended, &bufs.branch)?;
            add_branch(&mut bufs.x, values(&bufs.branch), &block.attn.c_proj);
            layer_norm(&bufs.x, &block.ln_2, values_mut(&mut bufs.normed));
            matmul_into(&block.mlp.c_fc, &bufs.normed, &bufs.hidden)?; // [B, 4C]
            add_bias(&block.mlp.c_fc, values_mut(&mut bufs.hidden));
            let _ = bufs.hidden.f_gelu_(block.mlp.gelu.approximate())?;
            matmul_into(&block.mlp.c_proj, &bufs.hidden, &bufs.branch)?;
            add_branch(&mut bufs.x, values(&bufs.branch), &block.mlp.c_proj);
        }
        cache.len += 1;
        layer_norm(&bufs.x, &self.ln_f, values_mut(&mut bufs.normed));
        let head = self.lm_head.as_ref().unwrap_or(&self.wte); // [V, C]
        Ok(bufs.normed.f_mm(&head.f_tr()?)?) // [B, V]
    }
}
