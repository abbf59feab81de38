//! CLIP: HF parity, open_clip's loss on a hand-computed case, the logit-scale clamp, and the
//! shapes the VLM relies on.

use crate::common;

use std::path::Path;

use gptlab::checkpoint;
use gptlab::clip::data::encode_caption;
use gptlab::clip::data::TextSide;
use gptlab::tokenizer::Tokenizer;
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
    let preprocessor = dir.path().join("preprocessor_config.json");
    std::fs::write(&preprocessor, r#"{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.0, 0.25, 0.25]}"#).unwrap();
    let err = common::run_err(&[
        "import",
        "hf-clip",
        "--from",
        dir.path().to_str().unwrap(),
        "--out",
        ckpt.to_str().unwrap(),
    ]);
    assert!(err.contains("preprocessor_config.json") && err.contains("image_std positive"), "{err}");
    std::fs::write(
        &preprocessor,
        r#"{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "crop_size": 30}"#,
    )
    .unwrap();
    common::run_ok(&["import", "hf-clip", "--from", dir.path().to_str().unwrap(), "--out", ckpt.to_str().unwrap()]);
    let model = checkpoint::load::<Clip>(&ckpt, Device::Cpu).unwrap().model;
    assert_eq!(model.cfg.text.eot_token_id, 5);
    let pre = model.cfg.preprocess();
    assert_eq!((pre.mean, pre.std), ([0.5; 3], [0.25; 3]), "the checkpoint keeps the model's normalisation");

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
    assert_eq!(out.hidden_states.len(), 3, "the embedding output, then one per layer");
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
fn caption_rows_pad_to_the_longest_caption_and_keep_every_feature() {
    let dir = tempfile::tempdir().unwrap();
    let captions = ["a red circle", "There is 1 object: a small blue star in the top left.", "1 object: 1 square."];
    let tokenizer = Tokenizer::train(captions.iter().cycle().take(30), 280, &dir.path().join("tok.json")).unwrap();
    let longest = captions.iter().map(|c| tokenizer.encode(c).unwrap().len()).max().unwrap() as i64;
    let eot = tokenizer.eot() as i64;
    let full: Vec<i64> = captions.iter().flat_map(|c| encode_caption(&tokenizer, c, 64).unwrap()).collect();
    let side = TextSide { tokenizer, context: 64 };
    let rows = side.rows(&captions).unwrap();
    assert_eq!(rows.size(), [3, longest + 1], "padded to the longest caption and its end-of-text");
    assert_eq!(rows.int64_value(&[1, longest]), eot);

    let vs = VarStore::new(Device::Cpu);
    let mut cfg = ClipConfig::preset("tiny", 280, eot).unwrap();
    cfg.text.context_length = 64;
    let model = Clip::new(&cfg, vs.root()).unwrap();
    let trimmed = model.text_features(&rows).unwrap();
    let padded = model.text_features(&Tensor::from_slice(&full).view([3, 64])).unwrap();
    assert!(trimmed.allclose(&padded, 1e-5, 1e-5, false), "dynamic padding changes no feature");
    // A caption longer than the context is cut, and still ends with end-of-text.
    let long = ["a red circle and a blue star and a green square and a pink hexagon"; 2];
    let short = TextSide { tokenizer: side.tokenizer, context: 6 }.rows(&long).unwrap();
    assert_eq!(short.size(), [2, 6]);
    assert_eq!(short.int64_value(&[0, 5]), eot);
}

#[test]
fn clip_checkpoints_round_trip_and_are_never_confused_with_gpt() {
    let dir = tempfile::tempdir().unwrap();
    let vs = VarStore::new(Device::Cpu);
    let cfg = ClipConfig::preset("tiny", 64, 0).unwrap();
    let model = Clip::new(&cfg, vs.root()).unwrap();
    let ckpt = dir.path().join("clip");
    checkpoint::save_model(&ckpt, &vs, &cfg, None).unwrap();
    assert!(checkpoint::is_checkpoint(&ckpt));
    let loaded = checkpoint::load::<Clip>(&ckpt, Device::Cpu).unwrap();
    assert_eq!(loaded.model.cfg, cfg);
    let pixels = Tensor::randn([1, 3, 32, 32], (Kind::Float, Device::Cpu));
    let (a, b) = (model.image_features(&pixels).unwrap(), loaded.model.image_features(&pixels).unwrap());
    assert!(a.equal(&b));
    let err = checkpoint::load::<gptlab::models::gpt::Gpt>(&ckpt, Device::Cpu).err().unwrap().to_string();
    assert!(err.ends_with("is a CLIP checkpoint, not a GPT checkpoint"), "{err}");
    // Saving over itself is fine (a checkpoint); over another directory it is refused.
    checkpoint::save_model(&ckpt, &vs, &cfg, None).unwrap();
    let other = dir.path().join("photos");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("cat.jpg"), b"...").unwrap();
    let err = checkpoint::save_model(&other, &vs, &cfg, None).unwrap_err().to_string();
    assert!(err.contains("not a gptlab checkpoint"), "{err}");
}

pub fn write_clip_config(dir: &Path, max_steps: u64) -> std::path::PathBuf {
    let text = format!(
        r#"out_dir = "{out}"
[model]
preset = "tiny"
[data]
vocab_size = 300
val_pairs = 4
[data.world]
side = 32
max_objects = 3
[train]
batch_size = 4
max_steps = {max_steps}
decay_steps = 4
warmup_steps = 1
eval_interval = 2
eval_batches = 1
log_interval = 1
ckpt_interval = 2
device = "cpu"
threads = 1
peak_tflops = 1.0
"#,
        out = dir.join("run").display()
    );
    let path = dir.join(format!("clip_{max_steps}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn clip_training_resumes_exactly() {
    let (straight, split) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    common::run_ok(&["clip", "train", "--config", write_clip_config(straight.path(), 4).to_str().unwrap()]);
    common::run_ok(&["clip", "train", "--config", write_clip_config(split.path(), 2).to_str().unwrap()]);
    common::run_ok(&["clip", "train", "--config", write_clip_config(split.path(), 4).to_str().unwrap(), "--resume"]);
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let read = |d: &Path| {
            let mut t = Tensor::read_safetensors(d.join("run/checkpoint").join(file)).unwrap();
            t.sort_by(|a, b| a.0.cmp(&b.0));
            t
        };
        for ((na, a), (nb, b)) in read(straight.path()).iter().zip(read(split.path()).iter()) {
            assert_eq!(na, nb);
            let d = (a - b).abs().max().double_value(&[]);
            assert!(d <= 1e-6, "{file}: {na} differs by {d}");
        }
    }
    let ckpt = checkpoint::load::<Clip>(&straight.path().join("run/checkpoint"), Device::Cpu).unwrap();
    let scale = ckpt.model.logit_scale.double_value(&[]);
    assert!((0.0..=MAX_LOGIT_SCALE).contains(&scale));
    let metrics = gptlab::jsonl::read_jsonl(&straight.path().join("run/metrics.jsonl")).unwrap();
    assert_eq!(metrics.last().unwrap()["pairs"].as_u64(), Some(16));
    let logged = metrics.last().unwrap()["logit_scale"].as_f64().unwrap();
    assert!((logged.ln() - scale).abs() < 1e-5, "the metrics log exp(logit_scale)");
    assert!(straight.path().join("run/loss.png").exists());

    // The image size and the world's side must agree.
    let bad = write_clip_config(tempfile::tempdir().unwrap().keep().as_path(), 4);
    std::fs::write(&bad, std::fs::read_to_string(&bad).unwrap().replace("side = 32", "side = 48")).unwrap();
    assert!(common::run_err(&["clip", "train", "--config", bad.to_str().unwrap()])
        .contains("must equal the model's image size"));
}

#[test]
fn clip_eval_writes_results_and_report() {
    let dir = tempfile::tempdir().unwrap();
    common::run_ok(&["clip", "train", "--config", write_clip_config(dir.path(), 2).to_str().unwrap()]);
    let out = dir.path().join("eval");
    let ckpt = dir.path().join("run/checkpoint");
    common::run_ok(&["clip", "eval", "--ckpt", ckpt.to_str().unwrap(), "--out", out.to_str().unwrap(), "--n", "12"]);
    let r = json(&out.join("results.json"));
    let zs = r["zero_shot"].as_array().unwrap();
    let attrs: Vec<&str> = zs.iter().map(|z| z["attribute"].as_str().unwrap()).collect();
    assert_eq!(attrs, ["shape", "colour", "count"]);
    for z in zs {
        let k = z["classes"].as_array().unwrap().len() as f64;
        assert!((z["chance"].as_f64().unwrap() - 1.0 / k).abs() < 1e-12);
        let total: u64 = z["confusion"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap())
            .map(|c| c.as_u64().unwrap())
            .sum();
        assert_eq!(total, 12, "every image lands in the confusion matrix once");
        // The accuracy is the confusion matrix's diagonal share.
        let rows = z["confusion"].as_array().unwrap();
        let correct: u64 = rows.iter().enumerate().map(|(i, r)| r[i].as_u64().unwrap()).sum();
        assert_eq!(z["accuracy"].as_f64().unwrap(), correct as f64 / 12.0);
        assert!(out.join(format!("confusion_{}.png", z["attribute"].as_str().unwrap())).exists());
    }
    let recall = r["retrieval"]["image_to_text"].as_array().unwrap();
    let (r1, r10) = (recall[0].as_f64().unwrap(), recall[2].as_f64().unwrap());
    assert!(r1 <= r10 && r10 <= 1.0);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| shape |"));
    for grid in ["retrieval_image_to_text.png", "retrieval_text_to_image.png"] {
        assert!(report.contains(&format!("]({grid})")), "the report embeds {grid}");
        let img = gptlab_vision::transform::load_image(&out.join(grid)).unwrap();
        assert!(img.width() >= 600 && img.height() > 40 + 6 * 96, "{grid}: one row per query");
    }
}

#[test]
fn recall_counts_ranks_by_hand() {
    // Query 0's match is best, query 1's match is third of three.
    let sim = Tensor::from_slice(&[0.9f32, 0.1, 0.2, 0.5, 0.1, 0.7, 0.3, 0.2, 0.8]).view([3, 3]);
    let r = gptlab::clip::eval::recalls(&sim).unwrap();
    assert!((r[0] - 2.0 / 3.0).abs() < 1e-12, "{r:?}"); // queries 0 and 2 rank their match first
    assert_eq!(r[1], 1.0);
}

#[test]
fn clip_embed_matches_the_model_and_skips_nothing_silently() {
    let dir = tempfile::tempdir().unwrap();
    common::run_ok(&["clip", "train", "--config", write_clip_config(dir.path(), 2).to_str().unwrap()]);
    let ckpt = dir.path().join("run/checkpoint");
    let img = dir.path().join("img.png");
    gptlab_vision::image::RgbImage::from_pixel(40, 32, gptlab_vision::image::Rgb([200, 30, 30])).save(&img).unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"image\": \"img.png\"}\n{\"text\": \"a red circle\"}\n").unwrap();
    let out = common::run_ok(&["clip", "embed", "--ckpt", ckpt.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    let loaded = checkpoint::load::<Clip>(&ckpt, Device::Cpu).unwrap();
    let pre = gptlab_vision::transform::Preprocess::clip(32);
    let pixels = pre.eval(&gptlab_vision::transform::load_image(&img).unwrap()).unsqueeze(0);
    let expect = loaded.model.image_features(&pixels).unwrap();
    assert!((tensor(&lines[0]["embedding"]).to_kind(Kind::Float) - expect.get(0)).abs().max().double_value(&[]) < 1e-5);
    assert_eq!(lines[1]["embedding"].as_array().unwrap().len(), 64);
    // A tokens line with the caption's ids and end-of-text embeds like the caption itself.
    let tok = Tokenizer::from_file(&ckpt.join(checkpoint::TOKENIZER_FILE)).unwrap();
    let mut ids = tok.encode("a red circle").unwrap();
    ids.push(tok.eot());
    std::fs::write(&input, format!("{{\"tokens\": {ids:?}}}\n")).unwrap();
    let out = common::run_ok(&["clip", "embed", "--ckpt", ckpt.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    let from_ids: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let d = (tensor(&from_ids["embedding"]) - tensor(&lines[1]["embedding"])).abs().max().double_value(&[]);
    assert!(d < 1e-5, "tokens and text lines differ by {d}");
    for bad in [format!("[{}, 99999]", tok.eot()), format!("[-3, {}]", tok.eot())] {
        std::fs::write(&input, format!("{{\"tokens\": {bad}}}\n")).unwrap();
        let err =
            common::run_err(&["clip", "embed", "--ckpt", ckpt.to_str().unwrap(), "--input", input.to_str().unwrap()]);
        assert!(err.contains("record 1") && err.contains("token ids must lie in"), "{err}");
    }
    // Without the checkpoint's tokenizer, token ids still embed; text says what is missing.
    std::fs::remove_file(ckpt.join(checkpoint::TOKENIZER_FILE)).unwrap();
    std::fs::write(&input, format!("{{\"tokens\": {ids:?}}}\n")).unwrap();
    let out = common::run_ok(&["clip", "embed", "--ckpt", ckpt.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    let no_tok: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(no_tok["embedding"], from_ids["embedding"]);
    std::fs::write(&input, "{\"text\": \"a red circle\"}\n").unwrap();
    let err = common::run_err(&["clip", "embed", "--ckpt", ckpt.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    assert!(err.contains("record 1") && err.contains("tokenizer.json"), "{err}");
    std::fs::write(&input, "{\"image\": \"missing.png\"}\n").unwrap();
    let err = common::run_err(&["clip", "embed", "--ckpt", ckpt.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    assert!(err.contains("record 1") && err.contains("missing.png"), "{err}");
}

#[test]
fn clip_trains_on_an_image_folder_and_skips_images_that_do_not_decode() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("folder");
    common::run_ok(&[
        "data",
        "synth-images",
        "--out",
        data.to_str().unwrap(),
        "--n",
        "12",
        "--seed",
        "2",
        "--side",
        "40",
    ]);
    // Break half the images: garbage, a truncated PNG, an empty file.
    for (i, name) in ["000000", "000002", "000004", "000006", "000008", "000010"].iter().enumerate() {
        let path = data.join(format!("images/{name}.png"));
        match i % 3 {
            0 => std::fs::write(&path, b"not an image").unwrap(),
            1 => {
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
            }
            _ => std::fs::write(&path, b"").unwrap(),
        }
    }
    let cfg = write_clip_config(dir.path(), 3);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[data]\n",
        &format!(
            "[data]\nsource = \"captions\"\ncaptions = \"{}\"\nval_fraction = 0.4\n",
            data.join("captions.jsonl").display()
        ),
    );
    std::fs::write(&cfg, text).unwrap();
    let out = common::gptlab(&["clip", "train", "--config", cfg.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: skipping an image") && stderr.contains(".png"), "{stderr}");
    let metrics = gptlab::jsonl::read_jsonl(&dir.path().join("run/metrics.jsonl")).unwrap();
    assert!(metrics.last().unwrap()["skipped_images"].as_u64().unwrap() > 0);
    // A captions file with a missing field is a configuration error, named by file and line.
    std::fs::write(data.join("captions.jsonl"), "{\"image\": \"images/000001.png\"}\n").unwrap();
    let fresh = write_clip_config(tempfile::tempdir().unwrap().keep().as_path(), 3);
    let text = std::fs::read_to_string(&fresh).unwrap().replace(
        "[data]\n",
        &format!("[data]\nsource = \"captions\"\ncaptions = \"{}\"\n", data.join("captions.jsonl").display()),
    );
    std::fs::write(&fresh, text).unwrap();
    assert!(common::run_err(&["clip", "train", "--config", fresh.to_str().unwrap()]).contains("captions.jsonl:1"));
}

#[test]
fn coco_captions_pair_each_caption_with_its_image() {
    let dir = tempfile::tempdir().unwrap();
    let ann = dir.path().join("captions_val.json");
    std::fs::write(
        &ann,
        r#"{"images": [{"id": 7, "file_name": "a.jpg"}, {"id": 9, "file_name": "b.jpg"}],
            "annotations": [{"image_id": 7, "caption": " A dog. "}, {"image_id": 9, "caption": "A cat."},
                            {"image_id": 7, "caption": "A brown dog."}]}"#,
    )
    .unwrap();
    let pairs = gptlab::clip::data::read_coco(&ann, Path::new("/imgs")).unwrap();
    assert_eq!(pairs.len(), 3);
    assert_eq!(pairs[0].image, Path::new("/imgs/a.jpg"));
    assert_eq!(pairs[0].caption, "A dog.");
    assert_eq!(pairs[2].image, Path::new("/imgs/a.jpg"));
    std::fs::write(&ann, r#"{"images": [], "annotations": [{"image_id": 1, "caption": "x"}]}"#).unwrap();
    assert!(gptlab::clip::data::read_coco(&ann, Path::new("/imgs")).unwrap_err().to_string().contains("image id 1"));
}

#[test]
fn clip_trains_on_coco_captions_skips_missing_files_and_counts_skips_across_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("coco");
    let args = ["data", "synth-images", "--out", data.to_str().unwrap(), "--n", "12", "--seed", "3", "--side", "40"];
    common::run_ok(&args);
    // COCO captions for the rendered images; then half the image files go missing.
    let lines = gptlab::jsonl::read_jsonl(&data.join("captions.jsonl")).unwrap();
    let mut files: Vec<&str> = lines.iter().map(|l| l["image"].as_str().unwrap()).collect();
    files.dedup();
    let images: Vec<serde_json::Value> =
        files.iter().enumerate().map(|(id, f)| serde_json::json!({"id": id, "file_name": f})).collect();
    let annotations: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| {
            let id = files.iter().position(|f| *f == l["image"].as_str().unwrap()).unwrap();
            serde_json::json!({"image_id": id, "caption": l["caption"]})
        })
        .collect();
    let ann = data.join("captions_train.json");
    std::fs::write(&ann, serde_json::json!({"images": images, "annotations": annotations}).to_string()).unwrap();
    for f in files.iter().step_by(2) {
        std::fs::remove_file(data.join(f)).unwrap();
    }
    let coco = |max_steps| {
        let cfg = write_clip_config(dir.path(), max_steps);
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            "[data]\n",
            &format!(
                "[data]\nsource = \"coco\"\ncoco_annotations = \"{}\"\ncoco_images = \"{}\"\nval_fraction = 0.4\nhflip = true\n",
                ann.display(),
                data.display()
            ),
        );
        std::fs::write(&cfg, text).unwrap();
        cfg
    };
    let out = common::gptlab(&["clip", "train", "--config", coco(2).to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: skipping an image") && stderr.contains("cannot open"), "{stderr}");
    let skipped = |step: u64| {
        let metrics = gptlab::jsonl::read_jsonl(&dir.path().join("run/metrics.jsonl")).unwrap();
        metrics.iter().rev().find(|r| r["step"] == step).unwrap()["skipped_images"].as_u64().unwrap()
    };
    let before = skipped(2);
    assert!(before > 0);
    common::run_ok(&["clip", "train", "--config", coco(4).to_str().unwrap(), "--resume"]);
    assert!(skipped(3) >= before, "the count goes on from the checkpoint's, not from 0");
}

#[test]
fn loader_benchmark_reports_both_rates() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_clip_config(dir.path(), 2);
    let out = common::run_ok(&["bench", "clip-loader", "--config", cfg.to_str().unwrap(), "--batches", "2"]);
    let b: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    for key in ["loader_images_per_s", "train_images_per_s", "ratio"] {
        assert!(b[key].as_f64().unwrap() > 0.0, "{key} in {b}");
    }
    assert!(!dir.path().join("run").exists(), "the benchmark writes nothing into out_dir");
}

#[test]
fn flops_per_step_count_the_caption_positions_each_batch_is_padded_to() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("folder");
    common::run_ok(&["data", "synth-images", "--out", data.to_str().unwrap(), "--n", "24", "--side", "32"]);
    // Every caption the same short text, so every batch is padded to its length plus end-of-text.
    let caption = "a red circle";
    let lines: String = (0..24)
        .map(|i| serde_json::json!({ "image": format!("images/{i:06}.png"), "caption": caption }).to_string() + "\n")
        .collect();
    std::fs::write(data.join("captions.jsonl"), lines).unwrap();
    let cfg = write_clip_config(dir.path(), 3);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[data]\n",
        &format!(
            "[data]\nsource = \"captions\"\ncaptions = \"{}\"\nval_fraction = 0.5\n",
            data.join("captions.jsonl").display()
        ),
    );
    std::fs::write(&cfg, text).unwrap();
    common::run_ok(&["clip", "train", "--config", cfg.to_str().unwrap()]);
    let tok = Tokenizer::from_file(&dir.path().join("run/checkpoint").join(checkpoint::TOKENIZER_FILE)).unwrap();
    let positions = tok.encode(caption).unwrap().len() as f64 + 1.0;
    assert!(positions < 32.0, "shorter than the 32-token context, or the test shows nothing");
    // tiny: both towers 2 layers of width 64 (12 L W^2 parameters each); 17 image positions
    // (4 x 4 patches and the class token); 6 FLOPs per parameter and position; 4 pairs a step.
    let tower = 12.0 * 2.0 * 64.0 * 64.0;
    let expect = 4.0 * 6.0 * tower * (17.0 + positions);
    for r in gptlab::jsonl::read_jsonl(&dir.path().join("run/metrics.jsonl")).unwrap() {
        assert_eq!(r["flops_per_step"].as_f64(), Some(expect), "{r}");
    }
}

#[test]
fn clip_in_bf16_tracks_fp32_and_keeps_fp32_weights() {
    tch::manual_seed(5);
    let vs = VarStore::new(Device::Cpu);
    let cfg = ClipConfig::preset("tiny", 300, 0).unwrap();
    let mut model = Clip::new(&cfg, vs.root()).unwrap();
    let pixels = Tensor::randn([6, 3, 32, 32], (Kind::Float, Device::Cpu));
    let words = Tensor::randint_low(1, 300, [6, 9], (Kind::Int64, Device::Cpu));
    let tokens = Tensor::cat(&[words, Tensor::zeros([6, 1], (Kind::Int64, Device::Cpu))], 1);
    let fp32 = model.loss(&pixels, &tokens).unwrap().double_value(&[]);
    let features = model.image_features(&pixels).unwrap();
    model.set_compute_kind(Kind::BFloat16);
    let features_bf16 = model.image_features(&pixels).unwrap();
    assert_eq!(features_bf16.kind(), Kind::Float, "features come back in fp32");
    let cos = Tensor::cosine_similarity(&features, &features_bf16, 1, 1e-8).min().double_value(&[]);
    assert!(cos > 0.99, "bf16 image features drift from fp32: cosine {cos}");
    let loss = model.loss(&pixels, &tokens).unwrap();
    let bf16 = loss.double_value(&[]);
    assert!((bf16 - fp32).abs() < 0.02 * fp32, "bf16 loss {bf16} vs fp32 {fp32}");
    loss.backward();
    let grads_finite = vs.trainable_variables().iter().all(|v| v.grad().isfinite().all().int64_value(&[]) == 1);
    assert!(grads_finite && vs.variables().values().all(|v| v.kind() == Kind::Float));
}
