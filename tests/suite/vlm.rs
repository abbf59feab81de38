//! The multimodal GPT: projector shapes and the pixel shuffle by hand, HF's hidden-state
//! indexing, the `<image>` splice, the loss never on image tokens, greedy decoding over two
//! images with and without the KV cache, assembly from a CLIP and a GPT checkpoint.

use gptlab::checkpoint;
use gptlab::infer::generate::{generate_batch_with, SampleOptions};
use gptlab::models::gpt::{lm_loss, Gpt, GptConfig, Input, Pass, IGNORE_INDEX};
use gptlab::models::vlm::projector::pixel_shuffle;
use gptlab::models::vlm::{expand_placeholders, FeatureSelect, Images, ProjectorKind, Vlm, VlmConfig};
use gptlab_vision::clip::{Clip, ClipConfig};
use tch::{nn::VarStore, Device, Kind, Tensor};

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
