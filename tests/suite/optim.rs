//! AdamW, clipping and the learning-rate schedule against hand-computed values.

use gptlab::train::optim::{AdamW, AdamWConfig, ParamGroup};
use gptlab::train::schedule::LrSchedule;
use tch::{nn::VarStore, Device, Kind, Tensor};

#[test]
fn adamw_first_steps_match_hand_computation() {
    let vs = VarStore::new(Device::Cpu);
    let root = vs.root();
    let w = root.var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0, 0.5, 3.0]).view([2, 2]));
    let b = root.var_copy("b", &Tensor::from_slice(&[0.5f32, -0.5]));
    let cfg = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let mut opt = AdamW::new(&vs, cfg, &[]).unwrap();
    // loss = sum(w * g_w) + sum(b * g_b) gives gradients g_w and g_b exactly.
    let g_w = Tensor::from_slice(&[0.1f32, -0.2, 0.3, 0.0]).view([2, 2]);
    let g_b = Tensor::from_slice(&[1.0f32, 2.0]);
    let loss = (&w * &g_w).sum(Kind::Float) + (&b * &g_b).sum(Kind::Float);
    loss.backward();
    opt.step(0.01);
    // Step 1: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps) = lr * sign(g)
    // (0 where g = 0); decay multiplies w (2-D) by 1 - lr * wd = 0.999, not b (1-D).
    let w1: Vec<f32> = Vec::try_from(&w.flatten(0, -1)).unwrap();
    let expect_w = [1.0 * 0.999 - 0.01, -2.0 * 0.999 + 0.01, 0.5 * 0.999 - 0.01, 3.0 * 0.999];
    for (a, e) in w1.iter().zip(expect_w) {
        assert!((*a as f64 - e).abs() < 1e-6, "w {a} vs {e}");
    }
    let b1: Vec<f32> = Vec::try_from(&b).unwrap();
    for (a, e) in b1.iter().zip([0.5 - 0.01, -0.5 - 0.01]) {
        assert!((*a as f64 - e).abs() < 1e-6, "b {a} vs {e}");
    }
    // Step 2 with gradient g' = (2, 2) on b: m = 0.9 g + 0.1 g', v = 0.95 g^2 + 0.05 g'^2,
    // m_hat = m / (1 - 0.81), v_hat = v / (1 - 0.9025).
    opt.zero_grad();
    let loss = (&b * Tensor::from_slice(&[2.0f32, 2.0])).sum(Kind::Float);
    loss.backward();
    opt.step(0.01);
    let b2: Vec<f32> = Vec::try_from(&b).unwrap();
    for (i, (g, g2)) in [(1.0f64, 2.0f64), (2.0, 2.0)].into_iter().enumerate() {
        let m_hat = (0.9 * 0.1 * g + 0.1 * g2) / (1.0 - 0.81);
        let v_hat = (0.95 * 0.05 * g * g + 0.05 * g2 * g2) / (1.0 - 0.9025);
        let expect = b1[i] as f64 - 0.01 * m_hat / (v_hat.sqrt() + 1e-8);
        assert!((b2[i] as f64 - expect).abs() < 1e-6, "b[{i}] {} vs {expect}", b2[i]);
    }
    assert_eq!(opt.steps, 2);
}

#[test]
fn gradient_clipping_scales_to_the_max_norm() {
    let vs = VarStore::new(Device::Cpu);
    let w = vs.root().var_copy("w", &Tensor::zeros([2], (Kind::Float, Device::Cpu)));
    let mut opt = AdamW::new(&vs, AdamWConfig::default(), &[]).unwrap();
    (&w * Tensor::from_slice(&[3.0f32, 4.0])).sum(Kind::Float).backward();
    let norm = opt.clip_grad_norm(1.0).double_value(&[]);
    assert!((norm - 5.0).abs() < 1e-6, "pre-clip norm {norm}");
    let g: Vec<f32> = Vec::try_from(&w.grad()).unwrap();
    assert!((g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5, "{g:?}");
}

#[test]
fn optimizer_state_round_trips() {
    let vs = VarStore::new(Device::Cpu);
    let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32, 2.0]));
    let mut opt = AdamW::new(&vs, AdamWConfig::default(), &[]).unwrap();
    (&w * &w).sum(Kind::Float).backward();
    opt.step(0.1);
    let saved = opt.state_tensors();
    let mut other = AdamW::new(&vs, AdamWConfig::default(), &[]).unwrap();
    other.load_state(saved.iter().map(|(n, t)| (n.clone(), t.copy())).collect(), opt.steps).unwrap();
    for ((n1, a), (n2, b)) in saved.iter().zip(other.state_tensors()) {
        assert_eq!(n1, &n2);
        assert!(a.equal(&b));
    }
    let err = other.load_state(vec![], 1).unwrap_err().to_string();
    assert!(err.contains("lacks"), "{err}");
}

#[test]
fn lr_schedule_warmup_cosine_floor() {
    let s = LrSchedule { lr: 1e-3, min_lr: 1e-4, warmup_steps: 10, decay_steps: 110 };
    let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    close(s.at(0), 1e-3 * 1.0 / 11.0); // (it + 1) / (warmup + 1)
    close(s.at(9), 1e-3 * 10.0 / 11.0);
    close(s.at(10), 1e-3); // cosine starts at the peak
    close(s.at(60), 1e-4 + 0.5 * (1e-3 - 1e-4)); // halfway: cos(pi/2) = 0
    close(s.at(35), 1e-4 + 0.5 * (1.0 + (std::f64::consts::PI * 0.25).cos()) * 9e-4);
    close(s.at(110), 1e-4);
    close(s.at(500), 1e-4);
}

/// Three tensors in three groups: a frozen embedding, a projector at 10x the learning rate
/// with its own decay, and the rest at the schedule's rate.
fn grouped() -> (VarStore, [Tensor; 3], AdamW) {
    let vs = VarStore::new(Device::Cpu);
    let root = vs.root();
    let frozen = (&root / "vision_tower").var_copy("w", &Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]));
    let fast = (&root / "projector").var_copy("w", &Tensor::from_slice(&[1.0f32, -1.0, 0.5, 0.25]).view([2, 2]));
    let base = (&root / "decoder").var_copy("w", &Tensor::from_slice(&[1.0f32, -1.0, 0.5, 0.25]).view([2, 2]));
    let groups = [
        ParamGroup { prefix: "vision_tower.".into(), lr_scale: 1.0, weight_decay: None, frozen: true },
        ParamGroup { prefix: "projector.".into(), lr_scale: 10.0, weight_decay: Some(0.0), frozen: false },
    ];
    let cfg = AdamWConfig { weight_decay: 0.1, ..AdamWConfig::default() };
    let opt = AdamW::new(&vs, cfg, &groups).unwrap();
    (vs, [frozen, fast, base], opt)
}

#[test]
fn frozen_groups_get_no_gradient_no_state_and_stay_bitwise_unchanged() {
    let (_vs, [frozen, fast, base], mut opt) = grouped();
    let before = frozen.copy();
    assert!(!frozen.requires_grad(), "a frozen parameter must not require gradients");
    for _ in 0..3 {
        let loss = (&frozen * &fast).sum(Kind::Float) + (&frozen * &base).square().sum(Kind::Float);
        loss.backward();
        assert!(!frozen.grad().defined(), "no gradient reaches a frozen parameter");
        let _ = opt.clip_grad_norm(1.0);
        opt.step(1e-2);
        opt.zero_grad();
    }
    assert!(frozen.equal(&before), "the frozen parameter changed");
    let names: Vec<String> = opt.state_tensors().into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().all(|n| !n.contains("vision_tower")), "{names:?}");
    assert_eq!(names.len(), 4, "moments for the two trained tensors only: {names:?}");
}

#[test]
fn group_learning_rates_and_decay_are_applied() {
    let (_vs, [_, fast, base], mut opt) = grouped();
    let (fast0, base0) = (fast.copy(), base.copy());
    // Gradient g = (1, -2, 3, 0.5) on both: Adam's first update is lr * sign(g).
    let g = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5]).view([2, 2]);
    ((&fast * &g).sum(Kind::Float) + (&base * &g).sum(Kind::Float)).backward();
    let lr = 1e-3;
    opt.step(lr);
    let sign = g.sign();
    // projector: lr_scale 10, weight decay 0 -> p - 10 lr sign(g).
    let expect_fast = &fast0 - &sign * (10.0 * lr);
    // decoder: the defaults -> p (1 - lr wd) - lr sign(g).
    let expect_base = &base0 * (1.0 - lr * 0.1) - &sign * lr;
    assert!((&fast - expect_fast).abs().max().double_value(&[]) < 1e-6);
    assert!((&base - expect_base).abs().max().double_value(&[]) < 1e-6);
}

#[test]
fn a_group_that_matches_nothing_is_an_error() {
    let vs = VarStore::new(Device::Cpu);
    let _ = (vs.root() / "decoder").var("w", &[2], tch::nn::Init::Const(0.0));
    let groups = [ParamGroup { prefix: "visoin_tower.".into(), lr_scale: 1.0, weight_decay: None, frozen: true }];
    let err = AdamW::new(&vs, AdamWConfig::default(), &groups).err().unwrap().to_string();
    assert!(err.contains("matches no parameter"), "{err}");
}
