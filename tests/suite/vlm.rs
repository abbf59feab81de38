//! The multimodal GPT: projector shapes and the pixel shuffle by hand, HF's hidden-state
//! indexing, the `<image>` splice, the loss never on image tokens, greedy decoding over two
//! images with and without the KV cache, assembly from a CLIP and a GPT checkpoint.

use gptlab::checkpoint;
use gptlab::infer::generate::{generate_batch_with, SampleOptions};
use gptlab::models::gpt::{lm_loss, Gpt, GptConfig, Input, Pass, IGNORE_INDEX};
use gptlab::models::vlm::projector::pixel_shuffle;
use gptlab::models::vlm::{expand_placeholders, FeatureSelect, Images, ProjectorKind, Vlm, VlmConfig};
use gptlab_vision::clip::{Clip, ClipConfig};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{nn::VarStore, Device, Kind, Tensor};

use gptlab::chat::{self as chat_template, Role, Turn};
use gptlab::data::multimodal::{parse_record, LossOn};
use gptlab::synth::vlm::{write_synth_vlm, SynthVlmConfig};
use gptlab::tokenizer::Tokenizer;
use gptlab::vlm::data::VlmDataset;
use gptlab::vlm::infer::{answer_batch, chat_prompt, user_message};
use gptlab::vlm::{Stage, VlmTrainConfig};
use gptlab_vision::world::WorldConfig;

use crate::common::{persistent_tempdir, run_err, run_ok, shard_dir};

const IMAGE: i64 = 2; // gptlab's `<image>` id

fn config(projector: ProjectorKind, select: FeatureSelect) -> VlmConfig {
    let clip = ClipConfig::preset("tiny", 512, 0).unwrap(); // 32 px, 8 px patches: 4 x 4 grid, width 64, 2 layers
    VlmConfig {
        vision: clip.vision,
        text: GptConfig { block_size: 96, ..GptConfig::preset("nano").unwrap() },
        projector,
        vision_feature_layer: -2,
        select,
        image_token_id: IMAGE,
        image_mean: clip.image_mean,
        image_std: clip.image_std,
    }
}

fn vlm(projector: ProjectorKind) -> (VarStore, Vlm) {
    tch::manual_seed(11);
    let vs = VarStore::new(Device::Cpu);
    let model = Vlm::new(&config(projector, FeatureSelect::Patches), vs.root()).unwrap();
    (vs, model)
}

fn pixels(n: i64) -> Tensor {
    Tensor::randn([n, 3, 32, 32], (Kind::Float, Device::Cpu))
}

#[test]
fn projectors_give_the_tokens_their_config_says() {
    let cases = [
        (ProjectorKind::Linear, FeatureSelect::Patches, 16),
        (ProjectorKind::Mlp2xGelu, FeatureSelect::Patches, 16),
        (ProjectorKind::Mlp2xGelu, FeatureSelect::All, 17),
        (ProjectorKind::PixelShuffle { factor: 2 }, FeatureSelect::Patches, 4),
    ];
    for (kind, select, n) in cases {
        let cfg = config(kind, select);
        assert_eq!(cfg.tokens_per_image(), n, "{kind:?} {select:?}");
        let vs = VarStore::new(Device::Cpu);
        let model = Vlm::new(&cfg, vs.root()).unwrap();
        assert_eq!(model.image_tokens(Images::Pixels(&pixels(3))).unwrap().size(), [3, n, 48], "{kind:?} {select:?}");
    }
    let mut bad = config(ProjectorKind::PixelShuffle { factor: 3 }, FeatureSelect::Patches);
    assert!(bad.validate().unwrap_err().to_string().contains("must divide"));
    bad.projector = ProjectorKind::PixelShuffle { factor: 2 };
    bad.select = FeatureSelect::All;
    assert!(bad.validate().unwrap_err().to_string().contains("select = \"patches\""));
}

#[test]
fn pixel_shuffle_merges_each_block_of_patches_by_hand() {
    // A 4 x 4 grid of 1-wide patches numbered 0..16 row by row; f = 2 gives 4 tokens, the first
    // the top-left block (0, 1, 4, 5), the second the top-right block (2, 3, 6, 7).
    let x = Tensor::arange(16, (Kind::Float, Device::Cpu)).view([1, 16, 1]);
    let y = pixel_shuffle(&x, 2).unwrap();
    assert_eq!(y.size(), [1, 4, 4]);
    let rows: Vec<Vec<f32>> = (0..4).map(|i| Vec::<f32>::try_from(&y.get(0).get(i)).unwrap()).collect();
    assert_eq!(rows, [[0., 1., 4., 5.], [2., 3., 6., 7.], [8., 9., 12., 13.], [10., 11., 14., 15.]]);
}

#[test]
fn vision_features_come_from_hfs_layer_index() {
    let (_vs, model) = vlm(ProjectorKind::Linear);
    let px = pixels(2);
    let hidden = model.vision_tower.forward(&px).unwrap().hidden_states; // embeddings + 2 layers
    assert_eq!(hidden.len(), 3);
    // -2 of three hidden states is index 1: the output of the first (penultimate) layer.
    let by_hand = model.projector.forward(&hidden[1].narrow(1, 1, 16), Kind::Float).unwrap();
    assert!(model.image_tokens(Images::Pixels(&px)).unwrap().equal(&by_hand));
}

#[test]
fn image_tokens_fill_their_placeholders_in_order_and_text_keeps_its_embeddings() {
    let (_vs, model) = vlm(ProjectorKind::Mlp2xGelu);
    let prompt = [7i64, IMAGE, 9, 10, IMAGE, 11];
    let ids = expand_placeholders(&prompt, IMAGE, 16);
    assert_eq!(ids.len(), 4 + 32);
    let px = pixels(2);
    let x = Tensor::from_slice(&ids).unsqueeze(0);
    let emb = model.embed(&x, Some(Images::Pixels(&px))).unwrap().get(0); // [36, 48]
    let tokens = model.image_tokens(Images::Pixels(&px)).unwrap(); // [2, 16, 48]
    assert!(emb.narrow(0, 1, 16).equal(&tokens.get(0)), "the first image fills the first placeholder");
    assert!(emb.narrow(0, 19, 16).equal(&tokens.get(1)), "the second image fills the second");
    let text = model.language_model.embed_tokens(&Tensor::from_slice(&[7i64, 9, 10, 11]));
    for (i, at) in [0, 17, 18, 35].into_iter().enumerate() {
        assert!(emb.get(at).equal(&text.get(i as i64)), "text position {at}");
    }
    // Counts that do not match are one-line errors.
    let err = model.embed(&x, Some(Images::Pixels(&pixels(1)))).unwrap_err().to_string();
    assert!(err.contains("32 image positions") && err.contains("1 image(s) of 16 tokens"), "{err}");
    assert!(model.embed(&x, None).unwrap_err().to_string().contains("no image was given"));
}

#[test]
fn the_loss_never_counts_image_tokens() {
    let (_vs, model) = vlm(ProjectorKind::Linear);
    let ids = expand_placeholders(&[IMAGE, 7, 8, 9], IMAGE, 16); // 16 image positions, then 3 tokens
    let x = Tensor::from_slice(&ids).unsqueeze(0);
    let px = pixels(1);
    let loss = model.loss(&x, Some(Images::Pixels(&px)), &x, false).unwrap().double_value(&[]);
    // By hand: only the predictions of 7 (after the last image token), 8 and 9 count.
    let logits = model.forward(&x, Some(Images::Pixels(&px)), Pass::default()).unwrap();
    let mut labels = vec![IGNORE_INDEX; 16];
    labels.extend([7, 8, 9]);
    let labels = Tensor::from_slice(&labels).unsqueeze(0);
    let expect = lm_loss(&logits.narrow(1, 0, 18), &labels.narrow(1, 1, 18)).double_value(&[]);
    assert!((loss - expect).abs() < 1e-6, "{loss} vs {expect}");
    let logp = logits.get(0).log_softmax(-1, Kind::Float);
    let three =
        -(logp.get(15).double_value(&[7]) + logp.get(16).double_value(&[8]) + logp.get(17).double_value(&[9])) / 3.0;
    assert!((loss - three).abs() < 1e-5, "{loss} vs {three}");
}

#[test]
fn greedy_decoding_over_two_images_is_the_same_with_and_without_the_cache() {
    let (_vs, model) = vlm(ProjectorKind::PixelShuffle { factor: 2 });
    let prompt = expand_placeholders(&[5, IMAGE, 6, 7, IMAGE, 8], IMAGE, 4);
    let px = pixels(2);
    let greedy = |kv_cache: bool, max_new_tokens: usize| {
        let opts = SampleOptions { temperature: 0.0, max_new_tokens, kv_cache, ..Default::default() };
        let embed = |ids: &Tensor| model.embed(ids, Some(Images::Pixels(&px)));
        let lm = &model.language_model;
        generate_batch_with(lm, std::slice::from_ref(&prompt), 512, None, &opts, |_, _| true, Some(&embed))
            .map(|mut r| r.remove(0))
    };
    let with = greedy(true, 20).unwrap();
    let without = greedy(false, 20).unwrap();
    assert_eq!(with.len(), 20);
    assert_eq!(with, without);
    // Another image changes the answer's logits (the decoder reads the images).
    let other = model
        .forward(&Tensor::from_slice(&prompt).unsqueeze(0), Some(Images::Pixels(&pixels(2))), Pass::default())
        .unwrap();
    let same =
        model.forward(&Tensor::from_slice(&prompt).unsqueeze(0), Some(Images::Pixels(&px)), Pass::default()).unwrap();
    assert!((other.get(0).get(-1) - same.get(0).get(-1)).abs().max().double_value(&[]) > 1e-4);
    let err = greedy(true, 90).unwrap_err().to_string();
    assert!(err.contains("exceed the context of 96"), "{err}");
}

#[test]
fn a_vlm_assembles_from_a_clip_and_a_gpt_checkpoint_and_saves_as_its_own_family() {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(3);
    let cfg = config(ProjectorKind::Mlp2xGelu, FeatureSelect::Patches);
    let clip_vs = VarStore::new(Device::Cpu);
    let clip = Clip::new(&ClipConfig::preset("tiny", 512, 0).unwrap(), clip_vs.root()).unwrap();
    checkpoint::save_model(&dir.path().join("clip"), &clip_vs, &clip.cfg, None).unwrap();
    let gpt_vs = VarStore::new(Device::Cpu);
    let gpt = Gpt::new(&cfg.text, gpt_vs.root()).unwrap();
    checkpoint::save_model(&dir.path().join("gpt"), &gpt_vs, &gpt.cfg, None).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let model = Vlm::new(&cfg, vs.root()).unwrap();
    Vlm::load_parts(&vs, &dir.path().join("clip"), &dir.path().join("gpt")).unwrap();
    let px = pixels(2);
    let ours = model.vision_tower.forward(&px).unwrap().pooled;
    assert!(ours.equal(&clip.vision_model.forward(&px).unwrap().pooled), "the tower is the CLIP's");
    let ids = Tensor::from_slice(&[5i64, 6, 7, 8]).unsqueeze(0);
    let text_only = model.forward(&ids, None, Pass::default()).unwrap();
    assert!(text_only.equal(&gpt.forward(Input::Tokens(&ids), Pass::default()).unwrap()), "the decoder is the GPT's");
    // Saved and loaded as a VLM; other commands name its family.
    let ckpt = dir.path().join("vlm");
    checkpoint::save_model(&ckpt, &vs, &cfg, None).unwrap();
    let loaded = checkpoint::load::<Vlm>(&ckpt, Device::Cpu).unwrap();
    assert_eq!(loaded.model.cfg, cfg);
    let err = checkpoint::load::<Gpt>(&ckpt, Device::Cpu).err().unwrap().to_string();
    assert!(err.ends_with("is a VLM checkpoint, not a GPT checkpoint"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Data, training, use: a tiny CLIP and a nano GPT (random weights), the synthetic multimodal
// data at 32 px, built once.

struct Fixture {
    clip: PathBuf,
    gpt: PathBuf,
    data: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let root = persistent_tempdir();
        let tok = shard_dir().parent().unwrap().join("tokenizer.json");
        tch::manual_seed(5);
        let clip_vs = VarStore::new(Device::Cpu);
        let clip_cfg = ClipConfig::preset("tiny", 64, 0).unwrap();
        Clip::new(&clip_cfg, clip_vs.root()).unwrap();
        checkpoint::save_model(&root.join("clip"), &clip_vs, &clip_cfg, None).unwrap();
        let gpt_vs = VarStore::new(Device::Cpu);
        let gpt_cfg =
            GptConfig { vocab_size: 448, block_size: 128, dropout: 0.1, ..GptConfig::preset("nano").unwrap() };
        Gpt::new(&gpt_cfg, gpt_vs.root()).unwrap();
        checkpoint::save_model(&root.join("gpt"), &gpt_vs, &gpt_cfg, Some(&tok)).unwrap();
        let data = root.join("data");
        let cfg = SynthVlmConfig {
            world: WorldConfig { side: 32, max_objects: 3, ..WorldConfig::default() },
            train_images: 24,
            eval_images: 8,
            train_pairs: 8,
            eval_pairs: 4,
            train_episodes: 8,
            eval_episodes_per_k: 2,
            max_shots: 2,
            ..SynthVlmConfig::default()
        };
        write_synth_vlm(&data, &cfg).unwrap();
        Fixture { clip: root.join("clip"), gpt: root.join("gpt"), data }
    })
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(&fixture().gpt.join("tokenizer.json")).unwrap()
}

fn stage_config(out: &Path, stage: Stage, from: Option<&Path>, max_steps: u64) -> VlmTrainConfig {
    let f = fixture();
    let model = match from {
        Some(dir) => format!("from = \"{}\"", dir.display()),
        None => format!(
            "clip = \"{}\"\ngpt = \"{}\"\nprojector = {{ kind = \"pixel_shuffle\", factor = 2 }}",
            f.clip.display(),
            f.gpt.display()
        ),
    };
    let (train, stage_name) = match stage {
        Stage::Align => ("align.jsonl", "align"),
        Stage::Instruct => ("train.jsonl", "instruct"),
    };
    let text = format!(
        r#"out_dir = "{out}"
stage = "{stage_name}"
[model]
{model}
[data]
train = "{data}/{train}"
val = "{data}/eval.jsonl"
val_records = 8
[train]
batch_size = 4
max_steps = {max_steps}
decay_steps = 4
warmup_steps = 1
lr = 1e-3
eval_interval = 2
log_interval = 1
ckpt_interval = 2
device = "cpu"
threads = 1
peak_tflops = 1.0
"#,
        out = out.display(),
        data = f.data.display(),
    );
    toml::from_str(&text).unwrap()
}

fn tensors(ckpt: &Path) -> Vec<(String, Tensor)> {
    let mut t = checkpoint::read_tensors(&ckpt.join("model.safetensors")).unwrap();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

fn same_under(a: &[(String, Tensor)], b: &[(String, Tensor)], prefix: &str) -> bool {
    let pick = |v: &[(String, Tensor)]| -> Vec<Tensor> {
        v.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(_, t)| t.shallow_clone()).collect()
    };
    let (x, y) = (pick(a), pick(b));
    assert!(!x.is_empty(), "no tensor under {prefix}");
    x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| p.equal(q))
}

#[test]
fn chat_records_encode_as_the_template_with_the_loss_on_answers_only() {
    let dir = fixture().data.join("images/train");
    let image = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let record = serde_json::json!({"images": [image], "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "<image>\nWhat colour is it?"},
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": "And its shape?"},
        {"role": "assistant", "content": "a star"}]});
    let record = parse_record(&record, Path::new("/")).unwrap();
    let tok = tokenizer();
    let turns = [
        Turn::new(Role::System, "Be brief."),
        Turn::new(Role::User, "<image>\nWhat colour is it?"),
        Turn::new(Role::Assistant, "red"),
        Turn::new(Role::User, "And its shape?"),
        Turn::new(Role::Assistant, "a star"),
    ];
    let whole: Vec<i64> = tok.encode(&chat_template::render(&turns)).unwrap().into_iter().map(i64::from).collect();
    let ex = record.encode(&tok, LossOn::Assistant).unwrap();
    assert_eq!(ex.ids, whole, "turn-by-turn encoding equals encoding the rendered conversation");
    assert_eq!(ex.images, vec![image]);
    let trained: Vec<u32> = ex.ids.iter().zip(&ex.trained).filter(|(_, t)| **t).map(|(&i, _)| i as u32).collect();
    assert_eq!(tok.decode(&trained).unwrap(), "red<|endoftext|>a star<|endoftext|>");
    let all = record.encode(&tok, LossOn::All).unwrap();
    let image_id = tok.token_to_id("<image>").unwrap() as i64;
    assert!(all.ids.iter().zip(&all.trained).all(|(&id, &t)| t == (id != image_id)));
    // An interleaved record trains on every text token, in segment order.
    let seg = serde_json::json!({"segments": [{"text": "A dial"}, {"tokens": [5, 6]}, {"text": " again"}]});
    let ex = parse_record(&seg, Path::new("/")).unwrap().encode(&tok, LossOn::Assistant).unwrap();
    let mut expect: Vec<i64> = tok.encode("A dial").unwrap().into_iter().map(i64::from).collect();
    expect.extend([5, 6]);
    expect.extend(tok.encode(" again").unwrap().into_iter().map(i64::from));
    assert_eq!(ex.ids, expect);
    assert!(ex.trained.iter().all(|&t| t));
    let bad = serde_json::json!({"segments": [{"tokens": [100000]}]});
    let err = parse_record(&bad, Path::new("/")).unwrap().encode(&tok, LossOn::All).unwrap_err().to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
}

#[test]
fn align_trains_the_projector_alone_and_instruct_the_decoder_too() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    let align = stage_config(&dir.path().join("align"), Stage::Align, None, 3);
    gptlab::vlm::train(&align, false).unwrap();
    let after = tensors(&dir.path().join("align/checkpoint"));
    let rename = |v: Vec<(String, Tensor)>, from: &str, to: &str| -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> =
            v.into_iter().filter_map(|(n, t)| n.strip_prefix(from).map(|r| (format!("{to}{r}"), t))).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let clip = rename(tensors(&f.clip), "vision_model.", "vision_tower.vision_model.");
    let gpt = rename(tensors(&f.gpt), "transformer.", "language_model.transformer.");
    assert!(same_under(&after, &clip, "vision_tower."), "align leaves the vision tower as the CLIP's");
    assert!(same_under(&after, &gpt, "language_model."), "align leaves the decoder as the GPT's");
    let instruct =
        stage_config(&dir.path().join("instruct"), Stage::Instruct, Some(&dir.path().join("align/checkpoint")), 2);
    gptlab::vlm::train(&instruct, false).unwrap();
    let later = tensors(&dir.path().join("instruct/checkpoint"));
    assert!(same_under(&later, &after, "vision_tower."), "instruct keeps the tower frozen by default");
    assert!(!same_under(&later, &after, "language_model."), "instruct trains the decoder");
    assert!(!same_under(&later, &after, "multi_modal_projector."), "and the projector");
    let metrics = std::fs::read_to_string(dir.path().join("instruct/metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"examples\":8") && metrics.contains("val_loss"), "{metrics}");
}

#[test]
fn two_vlm_ranks_train_like_one_process() {
    // From a dropout-free copy of the GPT (a rank's rows draw other dropout masks); each rank's
    // records hold other numbers of trained tokens, which the loss weighs.
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    let gpt = dir.path().join("gpt");
    std::fs::create_dir_all(&gpt).unwrap();
    for entry in std::fs::read_dir(&f.gpt).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, gpt.join(path.file_name().unwrap())).unwrap();
    }
    let config = std::fs::read_to_string(gpt.join("config.json")).unwrap();
    std::fs::write(gpt.join("config.json"), config.replace("\"dropout\": 0.1", "\"dropout\": 0.0")).unwrap();
    let write = |name: &str| {
        let out = dir.path().join(name);
        let text = toml::to_string(&stage_config(&out, Stage::Instruct, None, 4)).unwrap();
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text.replace(f.gpt.to_str().unwrap(), gpt.to_str().unwrap())).unwrap();
        path.to_str().unwrap().to_string()
    };
    run_ok(&["vlm", "train", "--config", &write("one")]);
    run_ok(&["launch", "--nproc", "2", "--", "vlm", "train", "--config", &write("two")]);
    crate::dist::assert_runs_match(&dir.path().join("one"), &dir.path().join("two"), 1e-5);
}

#[test]
fn both_stages_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for (stage, from) in [(Stage::Align, None), (Stage::Instruct, Some(dir.path().join("align-straight/checkpoint")))] {
        let name = if stage == Stage::Align { "align" } else { "instruct" };
        let straight = dir.path().join(format!("{name}-straight"));
        let split = dir.path().join(format!("{name}-split"));
        // In a process of its own: the torch RNG behind dropout is global, and other tests share it.
        let train = |out: &Path, steps: u64, resume: bool| {
            let path = out.with_extension(format!("{steps}.toml"));
            std::fs::write(&path, toml::to_string(&stage_config(out, stage, from.as_deref(), steps)).unwrap()).unwrap();
            let mut args = vec!["vlm", "train", "--config", path.to_str().unwrap()];
            if resume {
                args.push("--resume");
            }
            run_ok(&args);
        };
        train(&straight, 4, false);
        train(&split, 2, false);
        train(&split, 4, true);
        let (a, b) = (tensors(&straight.join("checkpoint")), tensors(&split.join("checkpoint")));
        assert_eq!(a.len(), b.len());
        for ((name_a, x), (_, y)) in a.iter().zip(&b) {
            assert!(x.equal(y), "{name}: {name_a} differs after a resume");
        }
        let losses = |d: &Path| -> Vec<f64> {
            gptlab::jsonl::read_jsonl(&d.join("metrics.jsonl"))
                .unwrap()
                .iter()
                .filter(|r| r["step"].as_u64().unwrap() > 2)
                .filter_map(|r| r["train_loss"].as_f64())
                .collect()
        };
        assert_eq!(losses(&straight), losses(&split), "{name}: losses after the resume");
    }
}

#[test]
fn a_batch_of_prompts_with_different_images_answers_as_each_would_alone() {
    let f = fixture();
    let tok = tokenizer();
    let cfg = config(ProjectorKind::PixelShuffle { factor: 2 }, FeatureSelect::Patches);
    let cfg = VlmConfig {
        text: GptConfig { vocab_size: 448, block_size: 128, ..cfg.text },
        image_token_id: tok.token_to_id("<image>").unwrap() as i64,
        ..cfg
    };
    tch::manual_seed(9);
    let vs = VarStore::new(Device::Cpu);
    let model = Vlm::new(&cfg, vs.root()).unwrap();
    let img = |i: usize| f.data.join(format!("images/train/{i:06}.png"));
    let prompts = [
        chat_prompt(&tok, &[user_message("How many objects?", &[img(1)]).unwrap()]).unwrap(),
        chat_prompt(&tok, &[user_message("<image> or <image>, which has more stars?", &[img(2), img(3)]).unwrap()])
            .unwrap(),
        chat_prompt(&tok, &[user_message("no picture here, a longer question than the others", &[]).unwrap()]).unwrap(),
    ];
    assert_eq!(prompts.iter().map(|p| p.images.len()).collect::<Vec<_>>(), [1, 2, 0]);
    let opts = SampleOptions { temperature: 0.0, max_new_tokens: 6, ..Default::default() };
    let together = answer_batch(&model, &tok, &prompts, &opts).unwrap();
    for (p, answer) in prompts.iter().zip(&together) {
        assert_eq!(&answer_batch(&model, &tok, std::slice::from_ref(p), &opts).unwrap()[0], answer);
    }
    let err = user_message("<image> <image>", &[img(1)]).unwrap_err().to_string();
    assert!(err.contains("2 <image> placeholder(s) but 1 image(s)"), "{err}");
}

#[test]
fn records_that_do_not_fit_or_do_not_decode_are_one_line_errors() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer();
    let cfg: VlmConfig = {
        let base = config(ProjectorKind::Mlp2xGelu, FeatureSelect::Patches); // 16 tokens per image
        VlmConfig { text: GptConfig { vocab_size: 448, block_size: 40, ..base.text }, ..base }
    };
    let img = f.data.join("images/train/000001.png");
    let three = serde_json::json!({"images": [img, img, img], "messages": [
        {"role": "user", "content": "<image><image><image> Which?"}, {"role": "assistant", "content": "the first"}]});
    let path = dir.path().join("long.jsonl");
    std::fs::write(&path, format!("{three}\n")).unwrap();
    let err = VlmDataset::load(&path, None, &tok, &cfg, LossOn::Assistant, None, false).err().unwrap().to_string();
    assert!(err.contains("long.jsonl:1") && err.contains("exceed the decoder's context of 40"), "{err}");
    let kept = VlmDataset::load(&path, None, &tok, &cfg, LossOn::Assistant, None, true).unwrap();
    assert!(kept.examples.is_empty(), "skip_too_long leaves the record out");
    std::fs::write(dir.path().join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let broken = serde_json::json!({"segments": [{"image": "broken.png"}, {"text": "x"}]});
    std::fs::write(&path, format!("{broken}\n")).unwrap();
    let err = format!("{:#}", VlmDataset::load(&path, None, &tok, &cfg, LossOn::Assistant, None, false).err().unwrap());
    assert!(err.contains("cannot decode image") && err.contains("broken.png"), "{err}");
    let unknown = "out_dir = \"x\"\nstage = \"align\"\n[model]\nprojector = { kind = \"conv\" }\n[data]\ntrain = \"a\"\nval = \"b\"\n";
    let err = toml::from_str::<VlmTrainConfig>(unknown).unwrap_err().to_string();
    assert!(err.contains("unknown variant `conv`"), "{err}");
}

#[test]
fn the_vlm_commands_train_answer_score_chat_and_evaluate_from_the_command_line() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let align = stage_config(&dir.path().join("align"), Stage::Align, None, 2);
    let path = dir.path().join("align.toml");
    std::fs::write(&path, toml::to_string(&align).unwrap()).unwrap();
    let out = run_ok(&["vlm", "train", "--config", path.to_str().unwrap()]);
    assert!(out.contains("trained VLM 2 steps"), "{out}");
    let ckpt = dir.path().join("align/checkpoint");
    let ckpt = ckpt.to_str().unwrap();
    let img = f.data.join("images/eval/000001.png");
    let img = img.to_str().unwrap();
    run_ok(&["vlm", "ask", "--ckpt", ckpt, "--image", img, "--max-new-tokens", "4", "What colour is it?"]);
    let err = run_err(&["vlm", "ask", "--ckpt", ckpt, "--image", "/nonexistent.png", "What?"]);
    assert!(err.contains("/nonexistent.png does not exist"), "{err}");
    let err = run_err(&["vlm", "ask", "--ckpt", ckpt, "--image", img, "--max-new-tokens", "120", "What?"]);
    assert!(err.contains("exceed the context of 128"), "{err}");
    let err = run_err(&["vlm", "ask", "--ckpt", f.gpt.to_str().unwrap(), "What?"]);
    assert!(err.contains("is a GPT checkpoint, not a VLM checkpoint"), "{err}");
    // Scoring: one log-probability per text token after the first, images skipped.
    let input = dir.path().join("score.jsonl");
    let record =
        serde_json::json!({"segments": [{"image": img}, {"text": "a red"}, {"image": img}, {"text": " star"}]});
    std::fs::write(&input, format!("{record}\n")).unwrap();
    let scored = run_ok(&["vlm", "score", "--ckpt", ckpt, "--input", input.to_str().unwrap()]);
    let line: serde_json::Value = serde_json::from_str(scored.trim()).unwrap();
    let tok = tokenizer();
    let text_tokens = tok.encode("a red").unwrap().len() + tok.encode(" star").unwrap().len();
    assert_eq!(line["token_logprobs"].as_array().unwrap().len(), text_tokens - 1);
    // The chat REPL reads piped stdin.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gptlab"))
        .args(["vlm", "chat", "--ckpt", ckpt, "--max-new-tokens", "3"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    let script = format!("/image {img}\nWhat is it?\n/image /missing.png\n/reset\nAnd now?\n/quit\nnever read\n");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("(attached") && stdout.contains("(no such image: /missing.png)"), "{stdout}");
    assert!(stdout.contains("(history cleared)"), "{stdout}");
    // Evaluation writes results shaped as documented.
    let eval_dir = dir.path().join("eval");
    let data = f.data.join("eval.jsonl");
    run_ok(&[
        "vlm",
        "eval",
        "--ckpt",
        ckpt,
        "--out",
        eval_dir.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "2",
    ]);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval_dir.join("results.json")).unwrap()).unwrap();
    for key in ["accuracy", "text_only_accuracy", "chance", "n"] {
        assert!(r["overall"][key].is_number(), "overall.{key}: {r}");
        assert!(r["types"]["colour"][key].is_number(), "types.colour.{key}: {r}");
    }
    let chance = r["types"]["relation"]["chance"].as_f64().unwrap();
    assert!(chance == 0.5 || chance == 1.0, "yes or no: {chance}");
    assert!(r["gauge_kshot"]["0"].is_number() && r["gauge_kshot"]["2"].is_number(), "{r}");
    let on_scale = r["gauge_kshot_scale"]["2"].as_f64().unwrap();
    assert!(on_scale >= r["gauge_kshot"]["2"].as_f64().unwrap(), "a right answer is on the scale: {r}");
    let report = std::fs::read_to_string(eval_dir.join("report.md")).unwrap();
    for png in ["accuracy_by_type.png", "gauge_kshot.png", "examples.png"] {
        assert!(report.contains(png), "{png} in the report");
        gptlab_vision::image::open(eval_dir.join(png)).unwrap();
    }
}
