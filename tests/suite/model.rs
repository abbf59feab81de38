//! The GPT decoder: parameter counts and FLOPs against hand-computed values, KV-cache and
//! embedding-input equivalence with a full forward pass.

use gptlab::models::gpt::{Gpt, GptConfig, Input, KvCache, Pass};
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
