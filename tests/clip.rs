//! CLIP: HF parity, open_clip's loss on a hand-computed case, the logit-scale clamp, and the
//! shapes the VLM relies on.

mod common;

use std::path::Path;

use gptlab::checkpoint;
use gptlab_vision::clip::{contrastive_loss, Clip, ClipConfig, MAX_LOGIT_SCALE};
use tch::{nn::VarStore, Device, Kind, Tensor};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/hf_clip.py");

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn tensor(v: &serde_json::Value) -> Tensor {
    fn flat(v: &serde_json::Value, out: &mut Vec<f64>, shape: &mut Vec<i64>, depth: usize) {
        match v {
            serde_json::Value::Array(items) => {
                if shape.len() == depth {
                    shape.push(items.len() as i64);
                }
                items.iter().for_each(|i| flat(i, out, shape, depth + 1));
            }
            other => out.push(other.as_f64().unwrap()),
        }
    }
    let (mut data, mut shape) = (Vec::new(), Vec::new());
    flat(v, &mut data, &mut shape, 0);
    Tensor::from_slice(&data).view(shape.as_slice())
}

#[test]
fn imported_hf_clip_matches_transformers_features() {
    let dir = tempfile::tempdir().unwrap();
    common::run_python(&[SCRIPT, "make", dir.path().to_str().unwrap()]);
    let ckpt = dir.path().join("ckpt");
    common::run_ok(&["import", "hf-clip", "--from", dir.path().to_str().unwrap(), "--out", ckpt.to_str().unwrap()]);
    let model = checkpoint::load_clip(&ckpt, Device::Cpu).unwrap().model;
    assert_eq!(model.cfg.text.eot_token_id, 5);

    let inputs = json(&dir.path().join("inputs.json"));
    let expect = json(&dir.path().join("features.json"));
    let pixels = tensor(&inputs["pixels"]).to_kind(Kind::Float);
    let ids = tensor(&inputs["ids"]).to_kind(Kind::Int64);
    let image = tch::no_grad(|| model.image_features(&pixels)).unwrap();
    let text = tch::no_grad(|| model.text_features(&ids)).unwrap();
    let diff = |a: &Tensor, b: &serde_json::Value| (a - tensor(b).to_kind(Kind::Float)).abs().max().double_value(&[]);
    assert!(diff(&image, &expect["image"]) <= 1e-4, "image features differ by {}", diff(&image, &expect["image"]));
    assert!(diff(&text, &expect["text"]) <= 1e-4, "text features differ by {}", diff(&text, &expect["text"]));
    let scale = model.logit_scale.double_value(&[]);
    assert!((scale - expect["logit_scale"].as_f64().unwrap()).abs() < 1e-6);
}

#[test]
fn contrastive_loss_matches_a_hand_computed_case() {
    // Images e1, e2; texts e1 and (1, 1) (normalised: (1, 1)/sqrt 2); scale exp(ln 2) = 2.
    let img = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
    let txt = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 1.0]).view([2, 2]);
    let loss = contrastive_loss(&img, &txt, &Tensor::from(2f32.ln())).double_value(&[]);
    let r = 2.0 / 2f64.sqrt(); // 2 * cos(45°)
    let ce = |logits: [f64; 2], label: usize| -(logits[label].exp() / (logits[0].exp() + logits[1].exp())).ln();
    // logits_per_image = [[2, r], [0, r]]; logits_per_text is its transpose [[2, 0], [r, r]].
    let image_to_text = (ce([2.0, r], 0) + ce([0.0, r], 1)) / 2.0;
    let text_to_image = (ce([2.0, 0.0], 0) + ce([r, r], 1)) / 2.0;
    let expect = (image_to_text + text_to_image) / 2.0;
    assert!((loss - expect).abs() < 1e-6, "{loss} vs {expect}");
    assert!((ce([r, r], 1) - 2f64.ln()).abs() < 1e-12);
}

#[test]
fn logit_scale_starts_at_ln_1_over_0_07_and_is_clamped_to_ln_100() {
    let vs = VarStore::new(Device::Cpu);
    let mut model = Clip::new(&ClipConfig::preset("tiny", 64, 0).unwrap(), vs.root()).unwrap();
    assert!((model.logit_scale.double_value(&[]) - (1.0f64 / 0.07).ln()).abs() < 1e-6);
    tch::no_grad(|| model.logit_scale.copy_(&Tensor::from(7.0f32)));
    model.clamp_logit_scale();
    assert!((model.logit_scale.double_value(&[]) - 100f64.ln()).abs() < 1e-6);
    assert!((MAX_LOGIT_SCALE - 100f64.ln()).abs() < 1e-12);
    tch::no_grad(|| model.logit_scale.copy_(&Tensor::from(-1.0f32)));
    model.clamp_logit_scale();
    assert_eq!(model.logit_scale.double_value(&[]), 0.0);
}

#[test]
fn towers_give_the_shapes_the_vlm_needs() {
    let vs = VarStore::new(Device::Cpu);
    let cfg = ClipConfig::preset("tiny", 64, 0).unwrap(); // 32 px, 8 px patches: 16 patches + class
    let model = Clip::new(&cfg, vs.root()).unwrap();
    let pixels = Tensor::randn([3, 3, 32, 32], (Kind::Float, Device::Cpu));
    let out = model.vision_model.forward(&pixels).unwrap();
    assert_eq!(out.pooled.size(), [3, 64]);
    assert_eq!(out.hidden_states.len(), 2);
    assert_eq!(out.hidden_states[0].size(), [3, 17, 64]);
    assert_eq!(model.image_features(&pixels).unwrap().size(), [3, 64]);
    let tokens = Tensor::from_slice(&[5i64, 6, 0, 1, 7, 0, 1, 1]).view([2, 4]);
    assert_eq!(model.text_features(&tokens).unwrap().size(), [2, 64]);
    let err = model.text_features(&Tensor::from_slice(&[5i64, 6]).view([1, 2])).unwrap_err().to_string();
    assert!(err.contains("end-of-text"), "{err}");
    let err = model.image_features(&Tensor::zeros([1, 3, 40, 40], (Kind::Float, Device::Cpu))).unwrap_err().to_string();
    assert!(err.contains("image_size"), "{err}");
    // Padding after the end-of-text token does not change the pooled text feature.
    let a = model.text_features(&Tensor::from_slice(&[5i64, 6, 0, 1]).view([1, 4])).unwrap();
    let b = model.text_features(&Tensor::from_slice(&[5i64, 6, 0, 9]).view([1, 4])).unwrap();
    assert!(a.allclose(&b, 1e-6, 1e-6, false));
}

#[test]
fn clip_checkpoints_round_trip_and_are_never_confused_with_gpt() {
    let dir = tempfile::tempdir().unwrap();
    let vs = VarStore::new(Device::Cpu);
    let cfg = ClipConfig::preset("tiny", 64, 0).unwrap();
    let model = Clip::new(&cfg, vs.root()).unwrap();
    let ckpt = dir.path().join("clip");
    checkpoint::save(&ckpt, &vs, &cfg, None, None).unwrap();
    assert!(checkpoint::is_checkpoint(&ckpt));
    let loaded = checkpoint::load_clip(&ckpt, Device::Cpu).unwrap();
    assert_eq!(loaded.model.cfg, cfg);
    let pixels = Tensor::randn([1, 3, 32, 32], (Kind::Float, Device::Cpu));
    let (a, b) = (model.image_features(&pixels).unwrap(), loaded.model.image_features(&pixels).unwrap());
    assert!(a.equal(&b));
    let err = checkpoint::load_model(&ckpt, Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("invalid"), "{err}");
    // Saving over itself is fine (a checkpoint); over another directory it is refused.
    checkpoint::save(&ckpt, &vs, &cfg, None, None).unwrap();
    let other = dir.path().join("photos");
    std::fs::create_dir_all(&other).unwrap();
    let err = checkpoint::save(&other, &vs, &cfg, None, None).unwrap_err().to_string();
    assert!(err.contains("not a gptlab checkpoint"), "{err}");
}
