//! The synthetic image world as data: pictures with several captions and question-answer pairs
//! whose answers are true by construction, because picture and text come from one value.
//!
//! Three kinds of item: plain scenes of shapes, gauges to read, and scenes with one object
//! marked (a ring or an arrow) for questions about "the marked object". Item `i` of a world
//! depends only on the seed and `i` (its own ChaCha stream), so a world can be regenerated,
//! extended or split into shards without changing a single image.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context};
use image::{ImageFormat, RgbImage};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::render::{add_noise, draw_marker, render_gauge, render_scene, Gauge, MarkerKind, RenderOptions};
use crate::scene::{describe, Color, Object, Scene, Shape};

/// Most objects a world scene holds: a 3 x 3 grid's worth, which the layout can still place
/// without overlap at every size.
pub const MAX_OBJECTS: usize = 9;

/// Largest image side a world is drawn at; past it the small shapes stop being the point.
const MAX_SIDE: u32 = 4096;

/// Smallest image side: below it the smallest objects shrink under a pixel.
const MIN_SIDE: u32 = 8;

/// What an item's picture shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorldItemKind {
    Scene,
    Gauge,
    Marked,
}

/// One picture with everything known about it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorldItem {
    pub image: RgbImage,
    /// The scene drawn, for scene and marked items, with `width` and `height` set to the
    /// image's pixels.
    pub scene: Option<Scene>,
    pub gauge: Option<Gauge>,
    /// Index into `scene.objects` of the object the marker points at.
    pub marked: Option<usize>,
    /// Several phrasings of what the picture shows, for contrastive training.
    pub captions: Vec<String>,
    pub qa: Vec<QaPair>,
}

impl WorldItem {
    /// The kind follows from which fields are set, so it cannot disagree with them.
    pub fn kind(&self) -> WorldItemKind {
        match (&self.gauge, self.marked) {
            (Some(_), _) => WorldItemKind::Gauge,
            (None, Some(_)) => WorldItemKind::Marked,
            (None, None) => WorldItemKind::Scene,
        }
    }
}

/// A question about a picture and its one correct short answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QaPair {
    pub question: String,
    pub answer: String,
    /// What the question tests, so scores can be broken down: count, colour, shape, position,
    /// relation, gauge or marked.
    pub kind: String,
}

impl QaPair {
    fn new(kind: &str, question: String, answer: impl ToString) -> QaPair {
        QaPair { question, answer: answer.to_string(), kind: kind.to_string() }
    }
}

/// How a world is generated; stored in `world.json` so a world can be rebuilt exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorldConfig {
    /// Image side in pixels.
    pub side: u32,
    /// Most objects per scene (1 to [`MAX_OBJECTS`]).
    pub max_objects: usize,
    /// Standard deviation of pixel noise, in 0..255 units.
    pub noise: f32,
    /// Whether backgrounds carry a faint texture.
    pub texture: bool,
    /// Whether objects may overlap (later ones drawn on top; no object's centre is covered).
    pub overlap: bool,
    /// Share of items that are gauges.
    pub gauge_fraction: f64,
    /// Share of items that are scenes with a marked object.
    pub marked_fraction: f64,
    /// Scenes come in groups of this many consecutive indices (at most the number of shapes) that
    /// share one layout (the same objects' colours, sizes and places) and differ in every
    /// object's shape (0: off). A contrastive batch then holds captions that differ only in
    /// shape: hard negatives, without which colour and place alone tell most captions apart and
    /// shape is barely learned.
    pub shape_group: u64,
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            side: 64,
            max_objects: 6,
            noise: 0.0,
            texture: false,
            overlap: false,
            gauge_fraction: 0.15,
            marked_fraction: 0.15,
            shape_group: 0,
        }
    }
}

impl WorldConfig {
    /// Rejects settings that would make a world empty, enormous or ill-defined.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(MIN_SIDE..=MAX_SIDE).contains(&self.side) {
            bail!("side must be between {MIN_SIDE} and {MAX_SIDE}, not {}", self.side);
        }
        if !(1..=MAX_OBJECTS).contains(&self.max_objects) {
            bail!("max_objects must be between 1 and {MAX_OBJECTS}, not {}", self.max_objects);
        }
        if !(self.noise.is_finite() && self.noise >= 0.0) {
            bail!("noise must be a finite number >= 0, not {}", self.noise);
        }
        let (gauge, marked) = (self.gauge_fraction, self.marked_fraction);
        let fraction = 0.0..=1.0;
        if !(fraction.contains(&gauge) && fraction.contains(&marked) && gauge + marked <= 1.0) {
            bail!("gauge_fraction ({gauge}) and marked_fraction ({marked}) must lie in [0, 1] and sum to at most 1");
        }
        if self.shape_group > Shape::ALL.len() as u64 {
            bail!("shape_group must be at most {} (the number of shapes), not {}", Shape::ALL.len(), self.shape_group);
        }
        Ok(())
    }

    fn render_options(&self) -> RenderOptions {
        RenderOptions { side: self.side, noise: self.noise, texture: self.texture }
    }
}

/// Item `index` of the world of `seed`: its kind, picture, captions and questions all come from
/// `ChaCha8Rng::seed_from_u64(seed)` on stream `index`, so any item can be made on its own.
/// Out-of-range settings are clamped rather than refused here; [`WorldConfig::validate`]
/// (which [`write_world`] calls) is the place that reports them.
pub fn generate_item(cfg: &WorldConfig, seed: u64, index: u64) -> WorldItem {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    let draw: f64 = rng.random();
    let group = group_scene(cfg, seed, index);
    if draw < cfg.gauge_fraction {
        gauge_item(cfg, &mut rng)
    } else if draw < cfg.gauge_fraction + cfg.marked_fraction {
        marked_item(cfg, group, &mut rng)
    } else {
        scene_item(cfg, group, &mut rng)
    }
}

/// Item `index`'s scene when `shape_group` is on: its group's shared layout, with each object
/// taking the shape at this member's place in an order of the shapes drawn per object for the
/// group, so no two members share any object's shape. Drawn from a stream of its own so that
/// worlds without groups keep their random streams.
fn group_scene(cfg: &WorldConfig, seed: u64, index: u64) -> Option<Scene> {
    (cfg.shape_group > 0).then(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5a_a9e9_9a0b);
        rng.set_stream(index / cfg.shape_group);
        let mut scene = Scene::random_placed(&mut rng, cfg.max_objects.clamp(1, MAX_OBJECTS), cfg.overlap);
        let member = (index % cfg.shape_group) as usize;
        for o in &mut scene.objects {
            let mut order = Shape::ALL;
            order.shuffle(&mut rng);
            o.shape = order[member % order.len()];
        }
        scene
    })
}

/// A scene of at least one object, sized to the image it will be drawn as: the group's scene
/// when there is one, else a random one.
fn world_scene<R: Rng + ?Sized>(cfg: &WorldConfig, group: Option<Scene>, rng: &mut R) -> Scene {
    let mut scene =
        group.unwrap_or_else(|| Scene::random_placed(rng, cfg.max_objects.clamp(1, MAX_OBJECTS), cfg.overlap));
    scene.width = cfg.side;
    scene.height = cfg.side;
    scene
}

fn scene_item<R: Rng + ?Sized>(cfg: &WorldConfig, group: Option<Scene>, rng: &mut R) -> WorldItem {
    let scene = world_scene(cfg, group, rng);
    let image = render_scene(&scene, &cfg.render_options(), rng);
    let captions = scene_captions(&scene, rng);
    let qa = scene_qa(&scene, rng);
    WorldItem { image, scene: Some(scene), gauge: None, marked: None, captions, qa }
}

/// A scene with one object marked. The noise goes on last, over the marker too, so the marker
/// is no cleaner than the rest of the picture.
fn marked_item<R: Rng + ?Sized>(cfg: &WorldConfig, group: Option<Scene>, rng: &mut R) -> WorldItem {
    let scene = world_scene(cfg, group, rng);
    let index = rng.random_range(0..scene.objects.len());
    let object = scene.objects[index];
    let kind = MarkerKind::ALL[rng.random_range(0..MarkerKind::ALL.len())];
    let clean = RenderOptions { noise: 0.0, ..cfg.render_options() };
    let mut image = render_scene(&scene, &clean, rng);
    draw_marker(&mut image, &object, kind);
    add_noise(&mut image, cfg.noise, rng);

    let mut captions = marker_captions(&object, kind);
    captions.extend(scene_captions(&scene, rng));
    let mut qa = vec![
        QaPair::new("marked", "What is the marked object?".to_string(), object.noun_phrase()),
        QaPair::new("marked", "What colour is the marked object?".to_string(), object.color.name()),
        QaPair::new("marked", "What shape is the marked object?".to_string(), object.shape.name()),
    ];
    qa.extend(scene_qa(&scene, rng));
    WorldItem { image, scene: Some(scene), gauge: None, marked: Some(index), captions, qa }
}

fn gauge_item<R: Rng + ?Sized>(cfg: &WorldConfig, rng: &mut R) -> WorldItem {
    let gauge = Gauge::random(rng);
    let image = render_gauge(&gauge, &cfg.render_options(), rng);
    let reading = gauge.reading();
    let scale = format!("from {} to {} {}", gauge.min, gauge.max, gauge.unit);
    let captions = vec![
        format!("a gauge reading {reading}"),
        format!("A dial with a scale {scale}; the needle points at {reading}."),
        format!("The gauge shows {reading}."),
    ];
    let qa = vec![
        QaPair::new("gauge", "What does the gauge read?".to_string(), &reading),
        QaPair::new("gauge", "What is the highest value on the dial?".to_string(), gauge.max_label()),
    ];
    WorldItem { image, scene: None, gauge: Some(gauge), marked: None, captions, qa }
}

fn marker_captions(object: &Object, kind: MarkerKind) -> Vec<String> {
    let phrase = object.noun_phrase();
    match kind {
        MarkerKind::Circle => vec![format!("The {phrase} is circled in black.")],
        MarkerKind::Arrow => vec![format!("A black arrow points at the {phrase}.")],
    }
}

/// Four phrasings of one scene: `describe`'s prose, a short list by colour and shape only,
/// a count of each shape, and a list that says where each object is.
fn scene_captions<R: Rng + ?Sized>(scene: &Scene, rng: &mut R) -> Vec<String> {
    let short =
        join(scene.objects.iter().map(|o| with_article(&format!("{} {}", o.color.name(), o.shape.name()))).collect());
    let n = scene.objects.len();
    let per_shape = Shape::ALL
        .iter()
        .map(|&s| (s, scene.count_shape(s)))
        .filter(|&(_, k)| k > 0)
        .map(|(s, k)| format!("{k} {}", if k == 1 { s.name().to_string() } else { s.plural() }))
        .collect();
    let counts = format!("{n} {}: {}.", if n == 1 { "object" } else { "objects" }, join(per_shape));
    let placed = join(scene.objects.iter().map(|o| format!("a {} {}", o.noun_phrase(), o.region())).collect());
    vec![describe(scene, rng), short, counts, format!("{}.", capitalise(&placed))]
}

/// Questions with answers read off the scene itself: counts (all objects, one colour, one
/// shape), then, where an object can be named without ambiguity, its colour, its shape, its
/// region and one clear spatial relation.
fn scene_qa<R: Rng + ?Sized>(scene: &Scene, rng: &mut R) -> Vec<QaPair> {
    let objects = &scene.objects;
    let color = pick(&Color::ALL, |c| scene.count_color(*c) > 0, rng);
    let shape = pick(&Shape::ALL, |s| scene.count_shape(*s) > 0, rng);
    let mut qa = vec![
        QaPair::new("count", "How many objects are there?".to_string(), objects.len()),
        QaPair::new("count", format!("How many {} objects are there?", color.name()), scene.count_color(color)),
        QaPair::new("count", format!("How many {} are there?", shape.plural()), scene.count_shape(shape)),
    ];

    let by_size_shape = unique(objects, |o| (o.size, o.shape));
    if let Some(o) = by_size_shape.choose(rng) {
        let question = format!("What colour is the {} {}?", o.size.name(), o.shape.name());
        qa.push(QaPair::new("colour", question, o.color.name()));
    }
    let by_size_color = unique(objects, |o| (o.size, o.color));
    if let Some(o) = by_size_color.choose(rng) {
        let question = format!("What shape is the {} {} object?", o.size.name(), o.color.name());
        qa.push(QaPair::new("shape", question, o.shape.name()));
    }
    let named = unique(objects, Object::noun_phrase);
    if let Some(o) = named.choose(rng) {
        qa.push(QaPair::new("position", format!("Where is the {}?", o.noun_phrase()), o.region()));
    }
    qa.extend(relation_question(&named, rng));
    qa
}

/// A yes/no question about one clear relation between two uniquely named objects, asked both
/// ways round at random so that "yes" and "no" are equally likely answers.
fn relation_question<R: Rng + ?Sized>(named: &[Object], rng: &mut R) -> Option<QaPair> {
    let mut pairs: Vec<(&Object, &Object)> =
        named.iter().enumerate().flat_map(|(i, a)| named[i + 1..].iter().map(move |b| (a, b))).collect();
    pairs.shuffle(rng);
    let (a, b, horizontal) = pairs.into_iter().find_map(|(a, b)| {
        let horizontal = a.left_of(b) || b.left_of(a);
        let vertical = a.above(b) || b.above(a);
        match (horizontal, vertical) {
            (true, true) => Some((a, b, rng.random_bool(0.5))),
            (false, false) => None,
            (h, _) => Some((a, b, h)),
        }
    })?;
    let (a, b) = if rng.random_bool(0.5) { (a, b) } else { (b, a) };
    let (relation, holds) = match (horizontal, rng.random_bool(0.5)) {
        (true, true) => ("to the left of", a.left_of(b)),
        (true, false) => ("to the right of", b.left_of(a)),
        (false, true) => ("above", a.above(b)),
        (false, false) => ("below", b.above(a)),
    };
    let question = format!("Is the {} {relation} the {}?", a.noun_phrase(), b.noun_phrase());
    Some(QaPair::new("relation", question, if holds { "yes" } else { "no" }))
}

/// The objects no other object shares `key` with: only these can be named with "the".
fn unique<K: PartialEq>(objects: &[Object], key: impl Fn(&Object) -> K) -> Vec<Object> {
    let keys: Vec<K> = objects.iter().map(&key).collect();
    objects
        .iter()
        .zip(&keys)
        .filter(|(_, k)| keys.iter().filter(|other| other == k).count() == 1)
        .map(|(o, _)| *o)
        .collect()
}

/// Mostly an item the scene has, so that counts are not almost always zero; sometimes any
/// item, so that zero is still a possible answer.
fn pick<T: Copy, R: Rng + ?Sized>(items: &[T], present: impl Fn(&T) -> bool, rng: &mut R) -> T {
    let found: Vec<T> = items.iter().copied().filter(|t| present(t)).collect();
    let pool = if rng.random_bool(0.7) && !found.is_empty() { &found[..] } else { items };
    pool[rng.random_range(0..pool.len())]
}

/// "a red circle", "an orange star".
fn with_article(phrase: &str) -> String {
    let vowel = phrase.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {phrase}", if vowel { "an" } else { "a" })
}

/// "a, b and c".
fn join(mut items: Vec<String>) -> String {
    match items.pop() {
        None => String::new(),
        Some(last) if items.is_empty() => last,
        Some(last) => format!("{} and {last}", items.join(", ")),
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// What a written world holds, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorldStats {
    pub images: usize,
    pub scenes: usize,
    pub gauges: usize,
    pub marked: usize,
    pub captions: usize,
    pub qa: usize,
}

/// One line of `scenes.jsonl`: everything about an image except its pixels and captions.
#[derive(Serialize)]
struct SceneRecord<'a> {
    image: &'a str,
    kind: WorldItemKind,
    scene: Option<&'a Scene>,
    gauge: Option<&'a Gauge>,
    marked: Option<usize>,
    qa: &'a [QaPair],
}

/// `world.json`: enough to regenerate the world exactly, and what it holds.
#[derive(Serialize)]
struct Manifest<'a> {
    config: &'a WorldConfig,
    seed: u64,
    n: usize,
    stats: &'a WorldStats,
}

/// Writes items `0..n` of the world of `seed` under `dir`: `images/NNNNNN.png`,
/// `captions.jsonl` (one line per caption), `scenes.jsonl` (one line per image, with its scene
/// or gauge, marked object and questions) and `world.json` (config, seed, n and counts).
pub fn write_world(dir: &Path, cfg: &WorldConfig, n: usize, seed: u64) -> anyhow::Result<WorldStats> {
    cfg.validate()?;
    let images = dir.join("images");
    fs::create_dir_all(&images).with_context(|| format!("cannot create {}", images.display()))?;
    let mut captions = create(&dir.join("captions.jsonl"))?;
    let mut scenes = create(&dir.join("scenes.jsonl"))?;
    let mut stats = WorldStats::default();
    for i in 0..n {
        let item = generate_item(cfg, seed, i as u64);
        let name = format!("images/{i:06}.png");
        let path = dir.join(&name);
        item.image
            .save_with_format(&path, ImageFormat::Png)
            .with_context(|| format!("cannot write {}", path.display()))?;
        for caption in &item.captions {
            let line = serde_json::json!({ "image": name, "caption": caption });
            writeln!(captions, "{line}").context("cannot write captions.jsonl")?;
        }
        let record = SceneRecord {
            image: &name,
            kind: item.kind(),
            scene: item.scene.as_ref(),
            gauge: item.gauge.as_ref(),
            marked: item.marked,
            qa: &item.qa,
        };
        writeln!(scenes, "{}", serde_json::to_string(&record)?).context("cannot write scenes.jsonl")?;
        stats.count(&item);
    }
    captions.flush().context("cannot write captions.jsonl")?;
    scenes.flush().context("cannot write scenes.jsonl")?;
    let manifest = Manifest { config: cfg, seed, n, stats: &stats };
    let path = dir.join("world.json");
    fs::write(&path, serde_json::to_string_pretty(&manifest)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(stats)
}

impl WorldStats {
    fn count(&mut self, item: &WorldItem) {
        self.images += 1;
        match item.kind() {
            WorldItemKind::Scene => self.scenes += 1,
            WorldItemKind::Gauge => self.gauges += 1,
            WorldItemKind::Marked => self.marked += 1,
        }
        self.captions += item.captions.len();
        self.qa += item.qa.len();
    }
}

fn create(path: &Path) -> anyhow::Result<BufWriter<File>> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(BufWriter::new(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn small() -> WorldConfig {
        WorldConfig { side: 32, ..WorldConfig::default() }
    }

    fn png(img: &RgbImage) -> Vec<u8> {
        let mut bytes = Cursor::new(Vec::new());
        img.write_to(&mut bytes, ImageFormat::Png).unwrap();
        bytes.into_inner()
    }

    fn answer<'a>(item: &'a WorldItem, question: &str) -> Option<&'a str> {
        item.qa.iter().find(|q| q.question == question).map(|q| q.answer.as_str())
    }

    #[test]
    fn same_seed_same_png_bytes() {
        let cfg = WorldConfig { noise: 5.0, texture: true, ..small() };
        for index in 0..10 {
            let a = generate_item(&cfg, 11, index);
            let b = generate_item(&cfg, 11, index);
            assert_eq!(png(&a.image), png(&b.image));
            assert_eq!((a.captions, a.qa), (b.captions, b.qa));
        }
    }

    #[test]
    fn different_seeds_or_indices_differ() {
        let cfg = small();
        assert_ne!(generate_item(&cfg, 1, 0).image, generate_item(&cfg, 2, 0).image);
        assert_ne!(generate_item(&cfg, 1, 0).image, generate_item(&cfg, 1, 1).image);
    }

    #[test]
    fn kinds_follow_the_configured_fractions() {
        let all_gauges = WorldConfig { gauge_fraction: 1.0, marked_fraction: 0.0, ..small() };
        let all_marked = WorldConfig { gauge_fraction: 0.0, marked_fraction: 1.0, ..small() };
        let plain = WorldConfig { gauge_fraction: 0.0, marked_fraction: 0.0, ..small() };
        for i in 0..5 {
            assert_eq!(generate_item(&all_gauges, 0, i).kind(), WorldItemKind::Gauge);
            assert_eq!(generate_item(&all_marked, 0, i).kind(), WorldItemKind::Marked);
            assert_eq!(generate_item(&plain, 0, i).kind(), WorldItemKind::Scene);
        }
        let kinds: Vec<WorldItemKind> = (0..200).map(|i| generate_item(&small(), 3, i).kind()).collect();
        for kind in [WorldItemKind::Scene, WorldItemKind::Gauge, WorldItemKind::Marked] {
            assert!(kinds.contains(&kind), "no {kind:?} in 200 items");
        }
    }

    #[test]
    fn scene_answers_agree_with_the_scene() {
        let cfg = WorldConfig { max_objects: MAX_OBJECTS, gauge_fraction: 0.0, ..small() };
        let mut kinds_seen = Vec::new();
        for i in 0..200 {
            let item = generate_item(&cfg, 5, i);
            let scene = item.scene.as_ref().expect("scene items carry their scene");
            assert!((1..=MAX_OBJECTS).contains(&scene.objects.len()));
            assert!(item.captions.len() >= 3 && item.captions.iter().all(|c| !c.is_empty()));
            assert_eq!(answer(&item, "How many objects are there?"), Some(scene.objects.len().to_string().as_str()));
            for color in Color::ALL {
                let asked = answer(&item, &format!("How many {} objects are there?", color.name()));
                assert!(asked.is_none_or(|a| a == scene.count_color(color).to_string()));
            }
            for shape in Shape::ALL {
                let asked = answer(&item, &format!("How many {} are there?", shape.plural()));
                assert!(asked.is_none_or(|a| a == scene.count_shape(shape).to_string()));
            }
            for o in &scene.objects {
                let asked = answer(&item, &format!("What colour is the {} {}?", o.size.name(), o.shape.name()));
                assert!(asked.is_none_or(|a| a == o.color.name()));
                let asked = answer(&item, &format!("What shape is the {} {} object?", o.size.name(), o.color.name()));
                assert!(asked.is_none_or(|a| a == o.shape.name()));
                let asked = answer(&item, &format!("Where is the {}?", o.noun_phrase()));
                assert!(asked.is_none_or(|a| a == o.region()));
                for p in &scene.objects {
                    let (a, b) = (o.noun_phrase(), p.noun_phrase());
                    for (relation, holds) in [
                        ("to the left of", o.left_of(p)),
                        ("to the right of", p.left_of(o)),
                        ("above", o.above(p)),
                        ("below", p.above(o)),
                    ] {
                        let asked = answer(&item, &format!("Is the {a} {relation} the {b}?"));
                        assert!(asked.is_none_or(|ans| ans == if holds { "yes" } else { "no" }));
                    }
                }
            }
            if let Some(index) = item.marked {
                let o = &scene.objects[index];
                assert_eq!(answer(&item, "What is the marked object?"), Some(o.noun_phrase().as_str()));
                assert_eq!(answer(&item, "What colour is the marked object?"), Some(o.color.name()));
            }
            kinds_seen.extend(item.qa.iter().map(|q| q.kind.clone()));
        }
        for kind in ["count", "colour", "shape", "position", "relation", "marked"] {
            assert!(kinds_seen.iter().any(|k| k == kind), "no {kind} question in 200 items");
        }
    }

    #[test]
    fn relation_answers_are_both_yes_and_no() {
        let answers: Vec<String> = (0..200)
            .flat_map(|i| generate_item(&small(), 9, i).qa)
            .filter(|q| q.kind == "relation")
            .map(|q| q.answer)
            .collect();
        assert!(answers.iter().any(|a| a == "yes") && answers.iter().any(|a| a == "no"));
    }

    #[test]
    fn gauge_items_state_their_reading() {
        let cfg = WorldConfig { gauge_fraction: 1.0, marked_fraction: 0.0, ..small() };
        for i in 0..20 {
            let item = generate_item(&cfg, 2, i);
            let gauge = item.gauge.as_ref().expect("gauge items carry their gauge");
            assert!(gauge.min <= gauge.value && gauge.value <= gauge.max);
            assert_eq!(answer(&item, "What does the gauge read?"), Some(gauge.reading().as_str()));
            assert_eq!(item.captions[0], format!("a gauge reading {}", gauge.reading()));
            assert!(item.scene.is_none() && item.marked.is_none());
        }
    }

    #[test]
    fn marked_items_show_the_marker_and_keep_the_object() {
        let cfg = WorldConfig { gauge_fraction: 0.0, marked_fraction: 1.0, ..small() };
        for i in 0..20 {
            let item = generate_item(&cfg, 4, i);
            let scene = item.scene.as_ref().unwrap();
            let o = &scene.objects[item.marked.unwrap()];
            let (x, y) = ((o.x * 32.0) as u32, (o.y * 32.0) as u32);
            assert_eq!(item.image.get_pixel(x, y).0, o.color.rgb());
            assert!(item.image.pixels().any(|p| p.0 == crate::render::INK));
            assert!(item.captions[0].contains(&o.noun_phrase()));
        }
    }

    #[test]
    fn short_captions_take_the_right_article() {
        let o = |color| Object { shape: Shape::Star, color, size: crate::scene::Size::Small, x: 0.2, y: 0.2 };
        let scene =
            Scene { width: 32, height: 32, objects: vec![o(Color::Orange), Object { x: 0.8, ..o(Color::Red) }] };
        let captions = scene_captions(&scene, &mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(captions[1], "an orange star and a red star");
        assert_eq!(captions[2], "2 objects: 2 stars.");
        assert_eq!(captions[3], "A small orange star in the top left and a small red star in the top right.");
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let cfg: WorldConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, WorldConfig::default());
        assert_eq!((cfg.side, cfg.max_objects, cfg.noise, cfg.texture), (64, 6, 0.0, false));
        assert_eq!((cfg.gauge_fraction, cfg.marked_fraction), (0.15, 0.15));
        assert!(serde_json::from_str::<WorldConfig>(r#"{"sides": 32}"#).is_err());
        assert!(cfg.validate().is_ok());
        for bad in [
            WorldConfig { side: 0, ..WorldConfig::default() },
            WorldConfig { max_objects: 10, ..WorldConfig::default() },
            WorldConfig { max_objects: 0, ..WorldConfig::default() },
            WorldConfig { noise: f32::NAN, ..WorldConfig::default() },
            WorldConfig { gauge_fraction: 0.6, marked_fraction: 0.6, ..WorldConfig::default() },
            WorldConfig { gauge_fraction: -0.1, ..WorldConfig::default() },
            WorldConfig { shape_group: 7, ..WorldConfig::default() },
        ] {
            let err = bad.validate().unwrap_err().to_string();
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn unchecked_configs_still_generate() {
        let cfg = WorldConfig { side: 1, max_objects: 100, noise: -3.0, gauge_fraction: 2.0, ..WorldConfig::default() };
        assert_eq!(generate_item(&cfg, 0, 0).image.dimensions(), (1, 1));
        let cfg = WorldConfig { max_objects: 0, gauge_fraction: 0.0, marked_fraction: 1.0, ..small() };
        assert_eq!(generate_item(&cfg, 0, 0).scene.unwrap().objects.len(), 1);
    }

    #[test]
    fn write_world_writes_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = small();
        let n = 12;
        let stats = write_world(dir.path(), &cfg, n, 7).unwrap();
        assert_eq!(stats.images, n);
        assert_eq!(stats.scenes + stats.gauges + stats.marked, n);

        let image = image::open(dir.path().join("images/000011.png")).unwrap().to_rgb8();
        assert_eq!(image, generate_item(&cfg, 7, 11).image);
        assert_eq!(fs::read_dir(dir.path().join("images")).unwrap().count(), n);

        let lines = |name: &str| -> Vec<serde_json::Value> {
            let text = fs::read_to_string(dir.path().join(name)).unwrap();
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
        };
        let captions = lines("captions.jsonl");
        assert_eq!(captions.len(), stats.captions);
        assert!(captions
            .iter()
            .all(|c| c["caption"].is_string() && c["image"].as_str().unwrap().starts_with("images/")));

        let scenes = lines("scenes.jsonl");
        assert_eq!(scenes.len(), n);
        assert_eq!(scenes[0]["image"], "images/000000.png");
        for record in &scenes {
            let kind = record["kind"].as_str().unwrap();
            assert!(["scene", "gauge", "marked"].contains(&kind));
            assert_eq!(record["gauge"].is_null(), kind != "gauge");
            assert_eq!(record["scene"].is_null(), kind == "gauge");
            assert_eq!(record["marked"].is_null(), kind != "marked");
            assert!(!record["qa"].as_array().unwrap().is_empty());
        }
        assert_eq!(scenes.iter().map(|r| r["qa"].as_array().unwrap().len()).sum::<usize>(), stats.qa);

        let world: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.path().join("world.json")).unwrap()).unwrap();
        assert_eq!((world["seed"].as_u64(), world["n"].as_u64()), (Some(7), Some(n as u64)));
        let config: WorldConfig = serde_json::from_value(world["config"].clone()).unwrap();
        assert_eq!(config, cfg);
    }

    #[test]
    fn write_world_refuses_a_bad_config() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WorldConfig { max_objects: 12, ..small() };
        assert!(write_world(dir.path(), &cfg, 1, 0).is_err());
        assert!(!dir.path().join("images").exists());
    }
}

#[cfg(test)]
mod shape_group_tests {
    use super::*;

    #[test]
    fn a_shape_group_shares_its_layout_and_varies_shapes() {
        let cfg = WorldConfig { shape_group: 4, gauge_fraction: 0.0, marked_fraction: 0.0, ..WorldConfig::default() };
        let scenes: Vec<Scene> = (0..16).map(|i| generate_item(&cfg, 3, i).scene.unwrap()).collect();
        let layout = |s: &Scene| s.objects.iter().map(|o| (o.color, o.size, o.x, o.y)).collect::<Vec<_>>();
        for group in scenes.chunks(4) {
            assert!(group.iter().all(|s| layout(s) == layout(&group[0])), "one layout per group");
            for (a, b) in group.iter().enumerate().flat_map(|(i, a)| group[i + 1..].iter().map(move |b| (a, b))) {
                assert!(
                    a.objects.iter().zip(&b.objects).all(|(x, y)| x.shape != y.shape),
                    "every object's shape differs"
                );
            }
        }
        assert_ne!(layout(&scenes[0]), layout(&scenes[4]), "groups differ");
    }

    #[test]
    fn a_group_of_six_single_objects_shows_every_shape_once() {
        let cfg = WorldConfig {
            shape_group: 6,
            max_objects: 1,
            gauge_fraction: 0.0,
            marked_fraction: 0.0,
            ..WorldConfig::default()
        };
        for group in 0..5 {
            let mut shapes: Vec<Shape> =
                (group * 6..group * 6 + 6).map(|i| generate_item(&cfg, 9, i).scene.unwrap().objects[0].shape).collect();
            shapes.sort_by_key(|s| s.name());
            let mut all = Shape::ALL.to_vec();
            all.sort_by_key(|s| s.name());
            assert_eq!(shapes, all);
        }
    }
}
