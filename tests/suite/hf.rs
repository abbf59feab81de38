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
        tie_word_embeddings: true,
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

const LLAVA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/hf_llava.py");

/// Logits of a VLM for `inputs.json` (pixels of the images, ids with each image token repeated).
fn vlm_logits(model: &gptlab::models::vlm::Vlm, inputs: &Path) -> Tensor {
    #[derive(serde::Deserialize)]
    struct Inputs {
        pixels: Vec<Vec<Vec<Vec<f64>>>>,
        ids: Vec<Vec<i64>>,
    }
    let inputs: Inputs = read_json(inputs);
    let flat: Vec<f32> = inputs.pixels.iter().flatten().flatten().flatten().map(|&v| v as f32).collect();
    let n = inputs.pixels.len() as i64;
    let side = inputs.pixels[0][0].len() as i64;
    let pixels = Tensor::from_slice(&flat).view([n, 3, side, side]);
    let ids = Tensor::from_slice(&inputs.ids.concat()).view([inputs.ids.len() as i64, -1]);
    let images = Some(gptlab::models::vlm::Images::Pixels(&pixels));
    tch::no_grad(|| model.forward(&ids, images, Pass::default())).unwrap()
}

#[test]
fn hf_llava_imports_and_exports_with_transformers_logits() {
    use gptlab::models::vlm::{FeatureSelect, ProjectorKind, Vlm, VlmConfig};
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    run_python(&[LLAVA, "make", hf.to_str().unwrap()]);
    // In: a random tiny LLaVA (untied head, two images in one sequence) gives transformers' logits.
    let ckpt = dir.path().join("imported");
    run_ok(&["import", "hf-llava", "--from", hf.to_str().unwrap(), "--out", ckpt.to_str().unwrap()]);
    let loaded = checkpoint::load::<Vlm>(&ckpt, Device::Cpu).unwrap();
    let cfg = &loaded.model.cfg;
    assert!(!cfg.text.tie_word_embeddings, "the head differs from wte: imported untied");
    assert_eq!(
        (cfg.projector, cfg.select, cfg.vision_feature_layer),
        (ProjectorKind::Mlp2xGelu, FeatureSelect::Patches, -2)
    );
    assert_eq!(cfg.image_mean, gptlab_vision::transform::CLIP_MEAN, "no preprocessor_config.json: OpenAI CLIP's");
    let reference: Vec<Vec<Vec<f64>>> = read_json(&hf.join("logits.json"));
    let diff = max_diff(&vlm_logits(&loaded.model, &hf.join("inputs.json")), &reference);
    assert!(diff <= 1e-4, "imported LLaVA logits differ from transformers by {diff}");

    // Out: a gptlab VLM (tied, bias-free decoder; every vision token, the last layer) loads in
    // transformers with gptlab's logits.
    let clip = gptlab_vision::clip::ClipConfig::preset("tiny", 64, 0).unwrap();
    let vlm_cfg = VlmConfig {
        vision: clip.vision,
        text: GptConfig {
            vocab_size: 100,
            block_size: 64,
            bias: false,
            gelu: Gelu::Exact,
            ..GptConfig::preset("nano").unwrap()
        },
        projector: ProjectorKind::Mlp2xGelu,
        vision_feature_layer: -1,
        select: FeatureSelect::All,
        image_token_id: 7,
        image_mean: [0.5, 0.4, 0.3],
        image_std: [0.2, 0.3, 0.4],
    };
    tch::manual_seed(4);
    let vs = VarStore::new(Device::Cpu);
    let ours = Vlm::new(&vlm_cfg, vs.root()).unwrap();
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            if name.contains("norm") || name.contains("ln_") || name.ends_with("bias") {
                let _ = t.g_add_(&(t.randn_like() * 0.1));
            }
        }
    });
    let ours_ckpt = dir.path().join("ours");
    checkpoint::save_model(&ours_ckpt, &vs, &vlm_cfg, None).unwrap();
    let exported = dir.path().join("exported");
    run_ok(&["export", "hf-llava", "--ckpt", ours_ckpt.to_str().unwrap(), "--out", exported.to_str().unwrap()]);
    let mut ids = vec![1i64, 2];
    ids.extend([7; 17]);
    ids.extend([3, 4]);
    ids.extend([7; 17]);
    ids.push(5);
    let pixels = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let px: Vec<Vec<Vec<Vec<f64>>>> = (0..2)
        .map(|i| {
            (0..3)
                .map(|c| {
                    (0..32)
                        .map(|y| Vec::<f64>::try_from(&pixels.get(i).get(c).get(y).to_kind(Kind::Double)).unwrap())
                        .collect()
                })
                .collect()
        })
        .collect();
    let inputs = dir.path().join("inputs.json");
    std::fs::write(&inputs, serde_json::json!({"pixels": px, "ids": [ids]}).to_string()).unwrap();
    let out = dir.path().join("hf_logits.json");
    run_python(&[LLAVA, "logits", exported.to_str().unwrap(), inputs.to_str().unwrap(), out.to_str().unwrap()]);
    let theirs: Vec<Vec<Vec<f64>>> = read_json(&out);
    let diff = max_diff(&vlm_logits(&ours, &inputs), &theirs);
    assert!(diff <= 1e-4, "exported LLaVA logits in transformers differ from gptlab's by {diff}");
    let pre: serde_json::Value = read_json(&exported.join("preprocessor_config.json"));
    assert_eq!(pre["image_std"][2].as_f64().unwrap() as f32, 0.4);
    // A round trip keeps the model, normalisation included.
    let back = dir.path().join("back");
    run_ok(&["import", "hf-llava", "--from", exported.to_str().unwrap(), "--out", back.to_str().unwrap()]);
    let again = checkpoint::load::<Vlm>(&back, Device::Cpu).unwrap();
    assert_eq!(again.model.cfg.image_std, vlm_cfg.image_std);
    assert!(again.model.cfg.text.tie_word_embeddings, "an exported tied head imports tied");
    // Parts that do not fit each other (a vision width the projector was not built for) are a
    // one-line error naming the tensor.
    let mut cfg: serde_json::Value = read_json(&exported.join("config.json"));
    cfg["vision_config"]["hidden_size"] = 96.into();
    cfg["vision_config"]["intermediate_size"] = 384.into();
    let misfit = dir.path().join("misfit");
    std::fs::create_dir(&misfit).unwrap();
    std::fs::write(misfit.join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(exported.join("model.safetensors"), misfit.join("model.safetensors")).unwrap();
    let err = common::run_err(&[
        "import",
        "hf-llava",
        "--from",
        misfit.to_str().unwrap(),
        "--out",
        dir.path().join("m").to_str().unwrap(),
    ]);
    assert!(err.contains("multi_modal_projector.linear_1.weight has shape"), "{err}");
    // Only the projector HF LLaVA has exports.
    let shuffle =
        VlmConfig { projector: ProjectorKind::PixelShuffle { factor: 2 }, select: FeatureSelect::Patches, ..vlm_cfg };
    let vs = VarStore::new(Device::Cpu);
    Vlm::new(&shuffle, vs.root()).unwrap();
    let shuffled = dir.path().join("shuffled");
    checkpoint::save_model(&shuffled, &vs, &shuffle, None).unwrap();
    let err = common::run_err(&[
        "export",
        "hf-llava",
        "--ckpt",
        shuffled.to_str().unwrap(),
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(err.contains("only mlp2x_gelu projectors export"), "{err}");
}
