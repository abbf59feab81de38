//! HF GPT-2 interop against `transformers` itself: imported weights give HF's logits, and
//! exported checkpoints load in `GPT2LMHeadModel` with gptlab's logits.

use crate::common;

use std::path::Path;

use crate::common::{run_ok, run_python};
use gptlab::checkpoint;
use gptlab::models::gpt::{Gelu, Gpt, GptConfig, Input, Pass};
use tch::{nn::VarStore, Device, Kind, Tensor};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/hf_gpt2.py");

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn logits(model: &Gpt, ids: &[Vec<i64>]) -> Tensor {
    let flat: Vec<i64> = ids.concat();
    let x = Tensor::from_slice(&flat).view([ids.len() as i64, -1]);
    tch::no_grad(|| model.forward(Input::Tokens(&x), Pass::default())).unwrap()
}

fn max_diff(a: &Tensor, b: &[Vec<Vec<f64>>]) -> f64 {
    let flat: Vec<f64> = b.iter().flatten().flatten().copied().collect();
    let b = Tensor::from_slice(&flat).view(a.size().as_slice()).to_kind(Kind::Float);
    (a - b).abs().max().double_value(&[])
}

#[test]
fn imported_hf_gpt2_matches_transformers_logits() {
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    run_python(&[SCRIPT, "make", hf.to_str().unwrap()]);
    // Importing over the HF directory itself (or any non-checkpoint) is refused, not a wipe.
    let err = common::run_err(&["import", "hf-gpt2", "--from", hf.to_str().unwrap(), "--out", hf.to_str().unwrap()]);
    assert!(err.contains("it is or holds the input"), "{err}");
    assert!(hf.join("model.safetensors").exists());
    let ckpt = dir.path().join("ckpt");
    run_ok(&["import", "hf-gpt2", "--from", hf.to_str().unwrap(), "--out", ckpt.to_str().unwrap()]);
    let loaded = checkpoint::load::<gptlab::models::gpt::Gpt>(&ckpt, Device::Cpu).unwrap();
    assert_eq!(loaded.model.cfg.gelu, Gelu::Tanh, "HF GPT-2 uses gelu_new");
    let ids: Vec<Vec<i64>> = read_json(&hf.join("ids.json"));
    let reference: Vec<Vec<Vec<f64>>> = read_json(&hf.join("logits.json"));
    let diff = max_diff(&logits(&loaded.model, &ids), &reference);
    assert!(diff <= 1e-4, "logits differ from transformers by {diff}");
}

#[test]
fn exported_checkpoint_loads_in_transformers_with_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    // A bias-free, exact-GELU model exercises the zero biases and the "gelu" activation.
    let cfg = GptConfig {
        vocab_size: 64,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        dropout: 0.0,
        bias: false,
        gelu: Gelu::Exact,
        layer_norm_epsilon: 1e-5,
    };
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    let model = Gpt::new(&cfg, vs.root()).unwrap();
    let ckpt = dir.path().join("ckpt");
    checkpoint::save_model(&ckpt, &vs, &cfg, None).unwrap();
    let hf = dir.path().join("hf");
    run_ok(&["export", "hf-gpt2", "--ckpt", ckpt.to_str().unwrap(), "--out", hf.to_str().unwrap()]);
    let ids: Vec<Vec<i64>> = vec![(0..10).collect(), (20..30).collect()];
    let ids_path = dir.path().join("ids.json");
    std::fs::write(&ids_path, serde_json::to_string(&ids).unwrap()).unwrap();
    let out = dir.path().join("logits.json");
    run_python(&[SCRIPT, "logits", hf.to_str().unwrap(), ids_path.to_str().unwrap(), out.to_str().unwrap()]);
    let hf_logits: Vec<Vec<Vec<f64>>> = read_json(&out);
    let diff = max_diff(&logits(&model, &ids), &hf_logits);
    assert!(diff <= 1e-4, "transformers' logits differ by {diff}");
}
