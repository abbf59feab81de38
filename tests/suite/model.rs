//! The GPT decoder: parameter counts and FLOPs against hand-computed values, KV-cache and
//! embedding-input equivalence with a full forward pass, padding masks, the ignore-index loss,
//! batched generation and scoring against one-by-one, loading under a prefix, bf16 on CPU.

use gptlab::checkpoint;
use gptlab::infer::generate::{generate_batch, SampleOptions};
use gptlab::infer::score::{score_batch, score_tokens};
use gptlab::models::gpt::{lm_loss, Gpt, GptConfig, Input, KvCache, Pass, IGNORE_INDEX};
use gptlab::train::optim::{AdamW, AdamWConfig};
use tch::{nn::VarStore, Device, Kind, Tensor};

fn nano() -> (VarStore, Gpt) {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let model = Gpt::new(&GptConfig::preset("nano").unwrap(), vs.root()).unwrap();
    (vs, model)
}

#[test]
fn parameter_counts_match_hand_computation() {
    // nano: V=512, T=64, C=48, L=3, biases. Per layer: ln_1 96 + c_attn 48*144+144 + c_proj
    // 48*48+48 + ln_2 96 + c_fc 48*192+192 + c_proj 192*48+48 = 28272; ln_f 96.
    let cfg = GptConfig::preset("nano").unwrap();
    let n = cfg.param_counts();
    assert_eq!(n.non_embedding, 3 * 28272 + 96);
    assert_eq!(n.total, 84912 + 512 * 48 + 64 * 48);
    let (vs, _) = nano();
    let actual: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
    assert_eq!(actual, n.total, "the formula must count what the model builds");
    // 6 * (total - wpe) + 12 * L * H * D * T = 6 * 109488 + 12 * 3 * 4 * 12 * 64
    assert_eq!(cfg.flops_per_token(64), 767520.0);
}

#[test]
fn bias_free_counts_match_the_model() {
    let mut cfg = GptConfig::preset("nano").unwrap();
    cfg.bias = false;
    let vs = VarStore::new(Device::Cpu);
    Gpt::new(&cfg, vs.root()).unwrap();
    let actual: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
    assert_eq!(actual, cfg.param_counts().total);
    // Per layer 12 C^2 + 2 C (LayerNorm gains only), plus ln_f's C.
    assert_eq!(cfg.param_counts().non_embedding, 3 * (12 * 48 * 48 + 2 * 48) + 48);
}

#[test]
fn gpt2_preset_is_124m() {
    let n = GptConfig::preset("gpt2").unwrap().param_counts();
    assert_eq!(n.total, 124_439_808, "HF GPT-2 small has 124,439,808 parameters");
}

#[test]
fn n_embd_must_divide_by_n_head() {
    let mut cfg = GptConfig::preset("nano").unwrap();
    cfg.n_embd = 50;
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("divisible"), "{err}");
}

#[test]
fn kv_cache_prefill_and_decode_equal_one_full_forward() {
    let (_vs, model) = nano();
    let ids = Tensor::randint(512, [2, 20], (Kind::Int64, Device::Cpu));
    let full = model.forward(Input::Tokens(&ids), Pass::default()).unwrap(); // [2, 20, V]
    let mut cache = KvCache::new();
    let mut pieces = vec![model
        .forward(Input::Tokens(&ids.narrow(1, 0, 12)), Pass { cache: Some(&mut cache), ..Default::default() })
        .unwrap()];
    for t in 12..17 {
        pieces.push(
            model
                .forward(Input::Tokens(&ids.narrow(1, t, 1)), Pass { cache: Some(&mut cache), ..Default::default() })
                .unwrap(),
        );
    }
    // Several new tokens after a past: the explicit-mask path.
    pieces.push(
        model
            .forward(Input::Tokens(&ids.narrow(1, 17, 3)), Pass { cache: Some(&mut cache), ..Default::default() })
            .unwrap(),
    );
    assert_eq!(cache.len(), 20);
    let cached = Tensor::cat(&pieces, 1);
    let diff = (&cached - &full).abs().max().double_value(&[]);
    assert!(diff <= 1e-5, "cached logits differ by {diff}");
    // A cache sized for fewer positions refuses more; a cache holds one batch size.
    let mut small = KvCache::with_capacity(12);
    fn pass(c: &mut KvCache) -> Pass<'_> {
        Pass { cache: Some(c), ..Default::default() }
    }
    let _ = model.forward(Input::Tokens(&ids.narrow(1, 0, 12)), pass(&mut small)).unwrap();
    let err = model.forward(Input::Tokens(&ids.narrow(1, 12, 1)), pass(&mut small)).unwrap_err().to_string();
    assert!(err.contains("capacity of 12"), "{err}");
    let err = model.forward(Input::Tokens(&ids.narrow(0, 0, 1).narrow(1, 12, 1)), pass(&mut cache)).unwrap_err();
    assert!(err.to_string().contains("batch of 2"), "{err}");
}

#[test]
fn the_fused_cpu_decoding_step_equals_the_general_forward_pass() {
    use gptlab::models::gpt::Gelu;
    for (bias, gelu, tied, rows) in
        [(true, Gelu::Exact, true, 1), (false, Gelu::Tanh, false, 2), (true, Gelu::Tanh, true, 3)]
    {
        tch::manual_seed(1);
        let vs = VarStore::new(Device::Cpu);
        let cfg = GptConfig { bias, gelu, tie_word_embeddings: tied, ..GptConfig::preset("nano").unwrap() };
        let model = Gpt::new(&cfg, vs.root()).unwrap();
        let ids = Tensor::randint(512, [rows, 14], (Kind::Int64, Device::Cpu));
        let full = model.forward(Input::Tokens(&ids), Pass::default()).unwrap(); // [B, 14, V]
        let mut cache = KvCache::with_capacity(14);
        let _ = model
            .forward(Input::Tokens(&ids.narrow(1, 0, 8)), Pass { cache: Some(&mut cache), ..Default::default() })
            .unwrap();
        for t in 8..14 {
            let col = Vec::<i64>::try_from(&ids.select(1, t)).unwrap();
            // Every other step through the general pass: both write the same cache.
            let logits = if t == 11 {
                model
                    .forward(
                        Input::Tokens(&ids.narrow(1, t, 1)),
                        Pass { cache: Some(&mut cache), ..Default::default() },
                    )
                    .unwrap()
                    .select(1, 0)
            } else {
                model.decode_step(&col, &mut cache).unwrap()
            }; // [B, V]
            let diff = (&logits - full.select(1, t)).abs().max().double_value(&[]);
            assert!(diff <= 1e-4, "bias {bias}, {gelu:?}, tied {tied}, {rows} rows, position {t}: differs by {diff}");
        }
        assert_eq!(cache.len(), 14);
        // A full cache refuses another step, as the general pass does.
        let err = model.decode_step(&vec![0; rows as usize], &mut cache).unwrap_err().to_string();
        assert!(err.contains("capacity of 14"), "{err}");
        let err = model.decode_step(&[512], &mut KvCache::new()).unwrap_err().to_string();
        assert!(err.contains("outside the vocabulary"), "{err}");
    }
}

#[test]
fn embeddings_input_equals_token_input() {
    let (_vs, model) = nano();
    let ids = Tensor::randint(512, [1, 10], (Kind::Int64, Device::Cpu));
    let a = model.forward(Input::Tokens(&ids), Pass::default()).unwrap();
    let emb = model.embed_tokens(&ids);
    let b = model.forward(Input::Embeddings(&emb), Pass::default()).unwrap();
    assert_eq!(a.size(), b.size());
    assert!((&a - &b).abs().max().double_value(&[]) == 0.0);
    // Explicit position ids equal to the defaults change nothing; shifted ones do.
    let pos = Tensor::arange(10, (Kind::Int64, Device::Cpu));
    let c = model.forward(Input::Tokens(&ids), Pass { pos: Some(&pos), ..Default::default() }).unwrap();
    assert!((&a - &c).abs().max().double_value(&[]) == 0.0);
    let d = model.forward(Input::Tokens(&ids), Pass { pos: Some(&(pos + 3)), ..Default::default() }).unwrap();
    assert!((&a - &d).abs().max().double_value(&[]) > 1e-4);
}

#[test]
fn sequences_longer_than_the_context_are_rejected() {
    let (_vs, model) = nano();
    let ids = Tensor::zeros([1, 65], (Kind::Int64, Device::Cpu));
    let err = model.forward(Input::Tokens(&ids), Pass::default()).unwrap_err().to_string();
    assert!(err.contains("exceeds the model's context of 64"), "{err}");
}

#[test]
fn init_follows_gpt2_with_scaled_residual_projections() {
    tch::manual_seed(1);
    let vs = VarStore::new(Device::Cpu);
    let cfg = GptConfig::preset("mini").unwrap(); // 6 layers, C = 384: large matrices, tight estimates
    Gpt::new(&cfg, vs.root()).unwrap();
    let vars = vs.variables();
    let std = |name: &str| vars[name].std(true).double_value(&[]);
    let residual = 0.02 / (2.0 * 6.0f64).sqrt();
    for (name, expect) in [
        ("transformer.wte.weight", 0.02),
        ("transformer.h.0.attn.c_attn.weight", 0.02),
        ("transformer.h.3.mlp.c_fc.weight", 0.02),
        ("transformer.h.0.attn.c_proj.weight", residual),
        ("transformer.h.5.mlp.c_proj.weight", residual),
    ] {
        let s = std(name);
        assert!((s - expect).abs() < 0.03 * expect, "{name}: std {s}, expected {expect}");
    }
    assert_eq!(vars["transformer.h.0.attn.c_attn.bias"].abs().sum(Kind::Float).double_value(&[]), 0.0);
    assert_eq!(vars["transformer.ln_f.weight"].mean(Kind::Float).double_value(&[]), 1.0);
}

/// Rows of 7, 4 and 1 tokens.
fn ragged() -> Vec<Vec<i64>> {
    tch::manual_seed(3);
    [7, 4, 1]
        .iter()
        .map(|&n| Vec::<i64>::try_from(&Tensor::randint(512, [n], (Kind::Int64, Device::Cpu))).unwrap())
        .collect()
}

/// `rows` padded to the longest with id 0 on the left or right, and their 1/0 mask.
fn padded(rows: &[Vec<i64>], left: bool) -> (Tensor, Tensor) {
    let width = rows.iter().map(|r| r.len()).max().unwrap();
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for r in rows {
        let pad = width - r.len();
        let (ids_row, mask_row): (Vec<i64>, Vec<i64>) = if left {
            (
                std::iter::repeat_n(0, pad).chain(r.iter().copied()).collect(),
                std::iter::repeat_n(0, pad).chain(std::iter::repeat_n(1, r.len())).collect(),
            )
        } else {
            (
                r.iter().copied().chain(std::iter::repeat_n(0, pad)).collect(),
                std::iter::repeat_n(1, r.len()).chain(std::iter::repeat_n(0, pad)).collect(),
            )
        };
        ids.extend(ids_row);
        mask.extend(mask_row);
    }
    let shape = [rows.len() as i64, width as i64];
    (Tensor::from_slice(&ids).view(shape), Tensor::from_slice(&mask).view(shape))
}

#[test]
fn a_masked_batch_computes_each_row_as_if_alone() {
    let (_vs, model) = nano();
    let rows = ragged();
    for left in [true, false] {
        let (ids, mask) = padded(&rows, left);
        let width = ids.size()[1];
        let batch = model.forward(Input::Tokens(&ids), Pass { mask: Some(&mask), ..Default::default() }).unwrap();
        for (i, r) in rows.iter().enumerate() {
            let alone = model.forward(Input::Tokens(&Tensor::from_slice(r).unsqueeze(0)), Pass::default()).unwrap();
            let n = r.len() as i64;
            let start = if left { width - n } else { 0 };
            let mine = batch.get(i as i64).narrow(0, start, n);
            let diff = (mine - alone.get(0)).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "row {i} ({} padding) differs by {diff}", if left { "left" } else { "right" });
        }
    }
}

#[test]
fn hidden_states_feed_the_tied_head() {
    let (_vs, model) = nano();
    let ids = Tensor::randint(512, [2, 9], (Kind::Int64, Device::Cpu));
    let h = model.hidden(Input::Tokens(&ids), Pass::default()).unwrap();
    assert_eq!(h.size(), [2, 9, 48]);
    // After ln_f with unit gain and zero bias: every position has mean 0 and variance 1.
    assert!(h.mean_dim(-1, false, Kind::Float).abs().max().double_value(&[]) < 1e-5);
    let logits = model.forward(Input::Tokens(&ids), Pass::default()).unwrap();
    assert!(model.lm_head(&h).equal(&logits));
}

#[test]
fn ignored_targets_leave_the_loss_and_its_mean() {
    // V = 3, two positions counted, one ignored. Logits rows: (0, 0, 0) -> CE of target 1 is
    // ln 3; (ln 2, 0, 0) with target 0 -> -ln(2 / 4) = ln 2; the third (target -100) is dropped.
    let logits = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 2f32.ln(), 0.0, 0.0, 5.0, -5.0, 1.0]).view([1, 3, 3]);
    let targets = Tensor::from_slice(&[1i64, 0, IGNORE_INDEX]).view([1, 3]);
    let loss = lm_loss(&logits, &targets).double_value(&[]);
    let expect = (3f64.ln() + 2f64.ln()) / 2.0;
    assert!((loss - expect).abs() < 1e-6, "{loss} vs {expect}");
}

#[test]
fn batched_greedy_generation_equals_one_prompt_at_a_time() {
    let (_vs, model) = nano();
    // Ragged prompts run padded and masked; prompts of one length run unmasked, through the
    // fused CPU step.
    let equal: Vec<Vec<i64>> = ragged().iter().map(|p| p.iter().cycle().take(6).copied().collect()).collect();
    let opts = SampleOptions { temperature: 0.0, max_new_tokens: 70, ..SampleOptions::default() };
    // Row 1 stops early (its 5th token); the others run past the 64-token context, so the
    // batch also slides its cache. Token 17 ends a row when it is sampled (an "end of text").
    let stop = |row: usize, new: &[i64]| !(row == 1 && new.len() == 5);
    for (prompts, kv_cache) in [(ragged(), true), (ragged(), false), (equal, true)] {
        let opts = SampleOptions { kv_cache, ..opts.clone() };
        let batch = generate_batch(&model, &prompts, 512, Some(17), &opts, stop).unwrap();
        for (i, p) in prompts.iter().enumerate() {
            let alone =
                generate_batch(&model, std::slice::from_ref(p), 512, Some(17), &opts, |_, new| stop(i, new)).unwrap();
            assert_eq!(batch[i], alone[0], "row {i} with kv_cache = {kv_cache}");
        }
        assert_eq!(batch[1].len(), 5);
        assert!(batch[0].len() > 60 || batch[0].last() == Some(&17), "row 0 ran {} tokens", batch[0].len());
    }
}

#[test]
fn batched_sampling_gives_each_row_its_own_tokens() {
    // (Seeded reproducibility is tested through the CLI: tests in this binary share libtorch's
    // global generator across threads.)
    let (_vs, model) = nano();
    let prompts = vec![vec![5i64, 6, 7]; 3];
    let opts = SampleOptions { temperature: 1.0, max_new_tokens: 12, seed: 4, ..SampleOptions::default() };
    let out = generate_batch(&model, &prompts, 512, None, &opts, |_, _| true).unwrap();
    assert!(out.iter().all(|r| r.len() == 12));
    assert!(out[0] != out[1] || out[1] != out[2], "three samples of one prompt all equal: {out:?}");
}

#[test]
fn batched_scoring_equals_scoring_one_by_one() {
    let (_vs, model) = nano();
    let mut seqs = ragged();
    seqs.push(Vec::<i64>::try_from(&Tensor::randint(512, [150], (Kind::Int64, Device::Cpu))).unwrap()); // rolling windows
    let batched = score_batch(&model, &seqs, 3).unwrap();
    for (s, b) in seqs.iter().zip(&batched) {
        let alone = score_tokens(&model, s).unwrap();
        assert_eq!(alone.token_logprobs.len(), s.len() - 1);
        assert_eq!(b.token_logprobs.len(), alone.token_logprobs.len());
        for (x, y) in b.token_logprobs.iter().zip(&alone.token_logprobs) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }
}

#[test]
fn a_model_assembles_from_a_checkpoint_under_another_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, model) = nano();
    checkpoint::save_model(&dir.path().join("gpt"), &vs, &model.cfg, None).unwrap();
    // The same GPT as the language model inside a larger model, beside a part of its own.
    tch::manual_seed(9);
    let big = VarStore::new(Device::Cpu);
    let inner = Gpt::new(&model.cfg, big.root() / "language_model").unwrap();
    let projector = (big.root() / "multi_modal_projector").var("weight", &[4, 4], tch::nn::Init::Const(0.5));
    let n = checkpoint::load_prefixed(&big, &dir.path().join("gpt"), "transformer.", "language_model.transformer.")
        .unwrap();
    assert_eq!(n, vs.variables().len());
    let ids = Tensor::randint(512, [1, 8], (Kind::Int64, Device::Cpu));
    let (a, b) = (
        model.forward(Input::Tokens(&ids), Pass::default()).unwrap(),
        inner.forward(Input::Tokens(&ids), Pass::default()).unwrap(),
    );
    assert!(a.equal(&b), "the loaded part computes what the checkpoint did");
    assert_eq!(projector.mean(Kind::Float).double_value(&[]), 0.5, "other parts are untouched");
    // A prefix the checkpoint lacks, or a part it does not fill, is a clear error.
    let err = checkpoint::load_prefixed(&big, &dir.path().join("gpt"), "vision_model.", "language_model.").unwrap_err();
    assert!(err.to_string().contains("no tensor under"), "{err}");
    let err =
        checkpoint::load_prefixed(&big, &dir.path().join("gpt"), "transformer.h.0.", "language_model.transformer.")
            .unwrap_err();
    assert!(err.to_string().contains("lacks tensor"), "{err}");
}

#[test]
fn a_bf16_training_step_on_cpu_tracks_fp32() {
    let (vs, mut model) = nano();
    let ids = Tensor::randint(512, [4, 33], (Kind::Int64, Device::Cpu));
    let (x, y) = (ids.narrow(1, 0, 32), ids.narrow(1, 1, 32));
    let fp32 = model.loss(&x, &y, false).unwrap().double_value(&[]);
    model.set_compute_kind(Kind::BFloat16);
    let mut opt = AdamW::new(&vs, AdamWConfig::default(), &[]).unwrap();
    let loss = model.loss(&x, &y, true).unwrap();
    assert_eq!(loss.kind(), Kind::Float, "the loss is computed in fp32");
    let bf16 = loss.double_value(&[]);
    assert!((bf16 - fp32).abs() < 0.01 * fp32, "bf16 loss {bf16} vs fp32 {fp32}");
    loss.backward();
    let _ = opt.clip_grad_norm(1.0);
    opt.step(1e-2);
    assert!(vs.variables().values().all(|v| v.kind() == Kind::Float), "master weights stay fp32");
    let after = model.loss(&x, &y, false).unwrap().double_value(&[]);
    assert!(after < bf16, "a step lowers the loss: {bf16} -> {after}");
}
