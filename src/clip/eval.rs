//! CLIP evaluation on held-out synthetic images: zero-shot classification of shape, colour and
//! count with averaged prompt templates (CLIP's recipe), and image↔text retrieval recall@K.
//! `gptlab clip eval --ckpt DIR --out DIR` writes `results.json`, confusion matrices as PNG
//! and `report.md`.

use std::path::Path;

use anyhow::{Context, Result};
use gptlab_vision::clip::Clip;
use gptlab_vision::image::RgbImage;
use gptlab_vision::render::{render_scene, RenderOptions};
use gptlab_vision::scene::{Color, Object, Scene, Shape, Size};
use gptlab_vision::transform::Preprocess;
use gptlab_vision::world::{generate_item, WorldConfig};
use plotters::prelude::*;
use plotters::style::Color as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::checkpoint;
use crate::clip::data::{encode_caption, TextSide};
use crate::report::Report;

/// A zero-shot task: class names and, per class, the prompts that describe it (phrased the way
/// the training captions speak: prompt engineering, as in the CLIP paper).
struct ZeroShotTask {
    name: &'static str,
    classes: Vec<String>,
    prompts: Vec<Vec<String>>,
}

/// Zero-shot accuracy of one attribute.
#[derive(Debug, Serialize)]
pub struct ZeroShotResult {
    pub attribute: String,
    pub accuracy: f64,
    pub chance: f64,
    pub n: usize,
    pub classes: Vec<String>,
    /// confusion[true][predicted]
    pub confusion: Vec<Vec<usize>>,
}

#[derive(Debug, Serialize)]
pub struct RetrievalResult {
    pub n: usize,
    pub image_to_text: [f64; 3],
    pub text_to_image: [f64; 3],
}

#[derive(Debug, Serialize)]
pub struct ClipEvalResults {
    pub zero_shot: Vec<ZeroShotResult>,
    /// Recall at 1, 5 and 10.
    pub retrieval: RetrievalResult,
}

const EVAL_SEED: u64 = 0x0000_e0a1_5eed;

fn normalise(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2, [-1], true)
}

struct Encoder<'a> {
    model: &'a Clip,
    text: TextSide,
    preprocess: Preprocess,
    device: Device,
}

impl Encoder<'_> {
    fn images(&self, images: &[RgbImage]) -> Result<Tensor> {
        let pixels: Vec<Tensor> = images.iter().map(|i| self.preprocess.to_tensor(i)).collect();
        let feats = tch::no_grad(|| self.model.image_features(&Tensor::stack(&pixels, 0).to_device(self.device)))?;
        Ok(normalise(&feats))
    }

    fn texts(&self, texts: &[String]) -> Result<Tensor> {
        let captions: Vec<&str> = texts.iter().map(String::as_str).collect();
        let tokens = self.text.rows(&captions)?.to_device(self.device);
        Ok(normalise(&tch::no_grad(|| self.model.text_features(&tokens))?))
    }

    /// One embedding per class: the normalised mean of its normalised template embeddings.
    fn classifier(&self, task: &ZeroShotTask) -> Result<Tensor> {
        let mut rows = Vec::new();
        for prompts in &task.prompts {
            rows.push(normalise(&self.texts(prompts)?.mean_dim(0, false, Kind::Float)));
        }
        Ok(Tensor::stack(&rows, 0)) // [C, E]
    }
}

/// Labelled images for an attribute: single objects for shape and colour, k objects for count.
fn task_images(task: &str, n: usize, side: u32, max_count: usize) -> Vec<(RgbImage, usize)> {
    let opts = RenderOptions { side, ..RenderOptions::default() };
    let mut rng = ChaCha8Rng::seed_from_u64(EVAL_SEED);
    (0..n)
        .map(|_| {
            let (scene, label) = match task {
                "count" => {
                    let k = rng.random_range(1..=max_count);
                    let mut scene = Scene::random(&mut rng, k);
                    while scene.objects.len() != k {
                        scene = Scene::random(&mut rng, k);
                    }
                    (scene, k - 1)
                }
                _ => {
                    let shape = rng.random_range(0..Shape::ALL.len());
                    let color = rng.random_range(0..Color::ALL.len());
                    let object = Object {
                        shape: Shape::ALL[shape],
                        color: Color::ALL[color],
                        size: Size::ALL[rng.random_range(0..Size::ALL.len())],
                        x: rng.random_range(0.3..0.7),
                        y: rng.random_range(0.3..0.7),
                    };
                    let label = if task == "shape" { shape } else { color };
                    (Scene { width: side, height: side, objects: vec![object] }, label)
                }
            };
            (render_scene(&scene, &opts, &mut rng), label)
        })
        .collect()
}

fn zero_shot(enc: &Encoder, task: &ZeroShotTask, images: &[(RgbImage, usize)]) -> Result<ZeroShotResult> {
    let classifier = enc.classifier(task)?;
    let imgs: Vec<RgbImage> = images.iter().map(|(i, _)| i.clone()).collect();
    let pred = enc.images(&imgs)?.matmul(&classifier.transpose(0, 1)).argmax(1, false); // [N]
    let pred: Vec<i64> = Vec::try_from(&pred)?;
    let k = task.classes.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for ((_, label), p) in images.iter().zip(&pred) {
        confusion[*label][*p as usize] += 1;
    }
    let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
    Ok(ZeroShotResult {
        attribute: task.name.into(),
        accuracy: correct as f64 / images.len() as f64,
        chance: 1.0 / k as f64,
        n: images.len(),
        classes: task.classes.clone(),
        confusion,
    })
}

/// Fraction of queries whose match is among the top 1, 5 and 10 by cosine similarity.
pub fn recalls(sim: &Tensor) -> Result<[f64; 3]> {
    let n = sim.size()[0];
    let diag = sim.diagonal(0, 0, 1).unsqueeze(1); // [N, 1]
    let rank = sim.gt_tensor(&diag).sum_dim_intlist(1, false, Kind::Int64); // items scored above the match
    let rank: Vec<i64> = Vec::try_from(&rank)?;
    let at = |k: i64| rank.iter().filter(|&&r| r < k).count() as f64 / n as f64;
    Ok([at(1), at(5), at(10)])
}

/// Class names sit at the centres of the matrix's cells.
fn segment_name(names: &[String], v: &SegmentValue<usize>) -> String {
    match v {
        SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

fn confusion_plot(r: &ZeroShotResult, stem: &Path) -> Result<()> {
    crate::plot::ensure_font();
    let k = r.classes.len();
    let draw = |root: DrawingArea<BitMapBackend, plotters::coord::Shift>| -> Result<()> {
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{}: zero-shot confusion (acc {:.2})", r.attribute, r.accuracy), ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(60)
            .y_label_area_size(80)
            .build_cartesian_2d((0..k - 1).into_segmented(), (0..k - 1).into_segmented()) // k cells each way
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let names = r.classes.clone();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted")
            .y_desc("true")
            .x_labels(k)
            .y_labels(k)
            .x_label_formatter(&|v| segment_name(&names, v))
            .y_label_formatter(&|v| segment_name(&names, v))
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let max = r.confusion.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
        chart
            .draw_series(r.confusion.iter().enumerate().flat_map(|(t, row)| {
                row.iter().enumerate().map(move |(p, &c)| {
                    let v = 1.0 - c as f64 / max;
                    let shade = RGBColor((255.0 * v) as u8, (255.0 * v) as u8, 255);
                    let corner = |a, b| (SegmentValue::Exact(a), SegmentValue::Exact(b));
                    Rectangle::new([corner(p, t), corner(p + 1, t + 1)], shade.filled())
                })
            }))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(())
    };
    let png = stem.with_extension("png");
    draw(BitMapBackend::new(&png, (560, 520)).into_drawing_area())
}

/// Runs every evaluation and writes `results.json`, confusion PNGs and `report.md` to `out`.
pub fn evaluate(ckpt: &Path, out: &Path, device: Device, n: usize) -> Result<ClipEvalResults> {
    anyhow::ensure!(n >= 2, "--n must be at least 2 images per task, got {n}");
    let loaded = checkpoint::load::<Clip>(ckpt, device)?;
    let tok = loaded.tokenizer()?;
    let model = &loaded.model;
    let side = model.cfg.vision.image_size as u32;
    let text = TextSide { tokenizer: tok, context: model.cfg.text.context_length as usize };
    let enc = Encoder { model, text, preprocess: model.cfg.preprocess(), device };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    let max_count = 4;
    let shape_names: Vec<&str> = Shape::ALL.iter().map(|s| s.name()).collect();
    let tasks = [
        ZeroShotTask {
            name: "shape",
            classes: shape_names.iter().map(|s| s.to_string()).collect(),
            prompts: Shape::ALL
                .iter()
                .map(|s| {
                    let mut p =
                        vec![format!("1 object: 1 {}.", s.name()), format!("The number of {} is 1.", s.plural())];
                    p.extend(Color::ALL.iter().map(|c| format!("a {} {}", c.name(), s.name())));
                    p
                })
                .collect(),
        },
        ZeroShotTask {
            name: "colour",
            classes: Color::ALL.iter().map(|c| c.name().to_string()).collect(),
            prompts: Color::ALL
                .iter()
                .map(|c| {
                    let mut p = vec![format!("There is 1 {} object.", c.name())];
                    p.extend(shape_names.iter().map(|s| format!("a {} {s}", c.name())));
                    p
                })
                .collect(),
        },
        ZeroShotTask {
            name: "count",
            classes: (1..=max_count).map(|k| k.to_string()).collect(),
            prompts: (1..=max_count)
                .map(|k| {
                    let noun = if k == 1 { "1 object".to_string() } else { format!("{k} objects") };
                    vec![format!("{noun}."), format!("There are {noun}."), format!("The picture shows {noun}.")]
                })
                .collect(),
        },
    ];
    let mut zero_shot_results = Vec::new();
    for task in &tasks {
        let images = task_images(task.name, n, side, max_count);
        let r = zero_shot(&enc, task, &images)?;
        confusion_plot(&r, &out.join(format!("confusion_{}", task.name)))?;
        zero_shot_results.push(r);
    }

    let world = WorldConfig { side, gauge_fraction: 0.0, marked_fraction: 0.0, ..WorldConfig::default() };
    let items: Vec<_> = (0..n as u64).map(|i| generate_item(&world, EVAL_SEED, i)).collect();
    let images: Vec<RgbImage> = items.iter().map(|i| i.image.clone()).collect();
    let captions: Vec<String> = items.iter().map(|i| i.captions[1].clone()).collect();
    let sim = enc.images(&images)?.matmul(&enc.texts(&captions)?.transpose(0, 1)); // [N images, N texts]
    let retrieval = RetrievalResult { n, image_to_text: recalls(&sim)?, text_to_image: recalls(&sim.transpose(0, 1))? };
    let sim: Vec<Vec<f32>> = Vec::try_from(&sim.to_kind(Kind::Float).to_device(Device::Cpu))?;
    image_to_text_grid(&sim, &images, &captions, &out.join("retrieval_image_to_text.png"))?;
    let sim_t: Vec<Vec<f32>> = (0..sim.len()).map(|t| sim.iter().map(|row| row[t]).collect()).collect();
    text_to_image_grid(&sim_t, &images, &captions, &out.join("retrieval_text_to_image.png"))?;
    let results = ClipEvalResults { zero_shot: zero_shot_results, retrieval };
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&results)?)?;
    write_report(ckpt, out, &results)?;
    Ok(results)
}

/// Example queries shown in the retrieval grids, and matches shown per query.
const GRID_QUERIES: usize = 6;
const GRID_TOP: usize = 4;
const THUMB: u32 = 96;
const HIT: RGBColor = RGBColor(30, 150, 50);
const MISS: RGBColor = RGBColor(200, 40, 40);

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Indices of the `k` highest scores, best first.
fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order.truncate(k);
    order
}

/// Draws `img` scaled (nearest neighbour) to a THUMB-sized square at (x, y), framed in `frame`.
fn thumbnail(area: &Area, img: &RgbImage, (x, y): (i32, i32), frame: Option<RGBColor>) -> Result<()> {
    let err = |e| anyhow::anyhow!("{e:?}");
    let (w, h) = img.dimensions();
    for ty in 0..THUMB {
        for tx in 0..THUMB {
            let p = img.get_pixel(tx * w / THUMB, ty * h / THUMB).0;
            area.draw_pixel((x + tx as i32, y + ty as i32), &RGBColor(p[0], p[1], p[2])).map_err(err)?;
        }
    }
    if let Some(c) = frame {
        let t = THUMB as i32;
        area.draw(&Rectangle::new([(x - 3, y - 3), (x + t + 2, y + t + 2)], c.stroke_width(3))).map_err(err)?;
    }
    Ok(())
}

/// One row per query image: the picture, then its best-scoring captions, the right one in green.
fn image_to_text_grid(sim: &[Vec<f32>], images: &[RgbImage], captions: &[String], png: &Path) -> Result<()> {
    crate::plot::ensure_font();
    let err = |e| anyhow::anyhow!("{e:?}");
    let row_h = THUMB + 16;
    let rows = GRID_QUERIES.min(images.len());
    let root = BitMapBackend::new(png, (900, 40 + row_h * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let title = "image → text: top captions per image (green = the image's own caption)";
    root.draw_text(title, &("sans-serif", 16).into_text_style(&root), (10, 10)).map_err(err)?;
    for (q, scores) in sim.iter().take(rows).enumerate() {
        let y = 40 + (q as u32 * row_h) as i32;
        thumbnail(&root, &images[q], (10, y), None)?;
        for (rank, &t) in top_k(scores, GRID_TOP).iter().enumerate() {
            let colour = if t == q { HIT } else { MISS };
            let line = format!("{}. {}  ({:.2})", rank + 1, captions[t], scores[t]);
            let style = ("sans-serif", 14).into_text_style(&root).color(&colour);
            root.draw_text(&line, &style, (10 + THUMB as i32 + 16, y + 8 + 22 * rank as i32)).map_err(err)?;
        }
    }
    root.present().map_err(err)
}

/// One row per query caption: the caption, then its best-scoring images, the right one framed
/// in green and the others in red.
fn text_to_image_grid(sim: &[Vec<f32>], images: &[RgbImage], captions: &[String], png: &Path) -> Result<()> {
    crate::plot::ensure_font();
    let err = |e| anyhow::anyhow!("{e:?}");
    let row_h = THUMB + 40;
    let rows = GRID_QUERIES.min(captions.len());
    let width = 20 + (THUMB + 16) * GRID_TOP as u32;
    let root = BitMapBackend::new(png, (width.max(600), 40 + row_h * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let title = "text → image: top images per caption (green frame = its own image)";
    root.draw_text(title, &("sans-serif", 16).into_text_style(&root), (10, 10)).map_err(err)?;
    for (q, scores) in sim.iter().take(rows).enumerate() {
        let y = 40 + (q as u32 * row_h) as i32;
        let query = format!("\u{201c}{}\u{201d}", captions[q]);
        root.draw_text(&query, &("sans-serif", 14).into_text_style(&root), (10, y)).map_err(err)?;
        for (rank, &i) in top_k(scores, GRID_TOP).iter().enumerate() {
            let x = 13 + (rank as u32 * (THUMB + 16)) as i32;
            thumbnail(&root, &images[i], (x, y + 24), Some(if i == q { HIT } else { MISS }))?;
        }
    }
    root.present().map_err(err)
}

fn write_report(ckpt: &Path, out: &Path, r: &ClipEvalResults) -> Result<()> {
    let mut rep = Report::new("CLIP evaluation on held-out synthetic images");
    rep.paragraph(&format!(
        "Checkpoint `{}`. Zero-shot: each class is the normalised mean of its prompt-template \
         embeddings; an image is assigned the class of highest cosine similarity. Images are \
         rendered from a seed no training run uses.",
        ckpt.display()
    ));
    rep.heading("Zero-shot classification");
    let rows: Vec<Vec<String>> = r
        .zero_shot
        .iter()
        .map(|z| vec![z.attribute.clone(), format!("{:.3}", z.accuracy), format!("{:.3}", z.chance), z.n.to_string()])
        .collect();
    rep.table(&["attribute", "accuracy", "chance", "images"], &rows);
    for z in &r.zero_shot {
        rep.image(&format!("{} confusion matrix", z.attribute), &format!("confusion_{}.png", z.attribute));
    }
    rep.heading("Retrieval");
    let pct = |v: [f64; 3]| v.iter().map(|x| format!("{:.3}", x)).collect::<Vec<_>>();
    let mut i2t = vec!["image → text".to_string()];
    i2t.extend(pct(r.retrieval.image_to_text));
    let mut t2i = vec!["text → image".to_string()];
    t2i.extend(pct(r.retrieval.text_to_image));
    rep.table(&["direction", "R@1", "R@5", "R@10"], &[i2t, t2i]);
    rep.paragraph(&format!("{} image-caption pairs; chance R@1 = {:.3}.", r.retrieval.n, 1.0 / r.retrieval.n as f64));
    rep.paragraph("Example retrievals: the first held-out queries, with their best-scoring matches.");
    rep.image("image-to-text retrievals", "retrieval_image_to_text.png");
    rep.image("text-to-image retrievals", "retrieval_text_to_image.png");
    rep.write(&out.join("report.md"))
}

/// `gptlab clip embed`: the projected feature (before normalisation, as HF's
/// `get_image_features` / `get_text_features`) of each input line: `{"image": path}` (relative
/// to the input file), `{"text": ...}` or `{"tokens": [ids]}`.
pub fn embed_file(ckpt: &Path, input: &Path, device: Device) -> Result<Vec<Vec<f32>>> {
    let loaded = checkpoint::load::<Clip>(ckpt, device)?;
    // Only text lines need the tokenizer: a checkpoint without one still embeds images and ids.
    let tok = loaded.tokenizer();
    let model = &loaded.model;
    let preprocess = model.cfg.preprocess();
    let ctx = model.cfg.text.context_length as usize;
    let base = input.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, rec) in crate::jsonl::read_jsonl(input)?.iter().enumerate() {
        let at = || format!("{}: record {}", input.display(), i + 1);
        let given: Vec<&str> = ["image", "text", "tokens"].into_iter().filter(|k| rec.get(*k).is_some()).collect();
        anyhow::ensure!(given.len() <= 1, "{}: has {}; give one of them", at(), given.join(" and "));
        let feature = if let Some(path) = rec.get("image").and_then(|v| v.as_str()) {
            let img = gptlab_vision::transform::load_image(&base.join(path)).with_context(at)?;
            let pixels = preprocess.eval(&img).unsqueeze(0).to_device(device);
            tch::no_grad(|| model.image_features(&pixels))?
        } else {
            let ids: Vec<i64> = if let Some(text) = rec.get("text").and_then(|v| v.as_str()) {
                let tok = tok.as_ref().map_err(|e| anyhow::anyhow!("{}: {e:#}", at()))?;
                let ids = encode_caption(tok, text, ctx)?;
                let full = tok.encode(text)?.len() + 1;
                if full > ctx {
                    eprintln!(
                        "warning: {}: the text has {full} tokens with end-of-text; the model reads the first {ctx}",
                        at()
                    );
                }
                ids
            } else if let Some(ids) = rec.get("tokens").and_then(|v| v.as_array()) {
                anyhow::ensure!(!ids.is_empty(), "{}: \"tokens\" is empty", at());
                crate::infer::score::token_ids(ids).with_context(at)?
            } else {
                anyhow::bail!("{}: expected \"image\", \"text\" or \"tokens\"", at());
            };
            let tokens = Tensor::from_slice(&ids).unsqueeze(0).to_device(device);
            tch::no_grad(|| model.text_features(&tokens)).with_context(at)?
        };
        out.push(Vec::<f32>::try_from(&feature.get(0).to_kind(Kind::Float).to_device(Device::Cpu))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_best_first() {
        assert_eq!(top_k(&[0.1, 0.9, -0.2, 0.5], 3), [1, 3, 0]);
        assert_eq!(top_k(&[0.3, 0.2], 4), [0, 1], "k larger than the list");
    }
}
