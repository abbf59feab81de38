//! Scene graphs of coloured shapes and their English descriptions.
//!
//! A [`Scene`] is the single source of truth for both modalities: the text corpus describes it
//! here and a vision crate renders the same value to an image, so captions and pixels agree.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Side in pixels of random scenes. Positions and radii are relative, so a renderer may draw
/// the same scene at any resolution.
pub const SCENE_SIDE: u32 = 64;

/// Most objects a described scene holds: enough for counts and relations while the
/// description stays within a small model's context.
pub const MAX_DESCRIBED_OBJECTS: usize = 5;

/// How far apart (as a fraction of the image side) two centres must be for `left_of` or
/// `above` to hold, so that every stated relation is obvious in the image.
pub const RELATION_MARGIN: f32 = 0.1;

/// Empty space kept between objects (fraction of the shorter side) so shapes never touch.
const GAP: f32 = 0.02;

/// With overlap allowed, how far (as a fraction of the shorter side) an object's centre stays
/// outside any other object's bounding circle: enough to survive rendering, which snaps each
/// centre to a pixel centre (moving two centres up to 1.41 px closer), from 32 px images up.
const CENTRE_MARGIN: f32 = 0.05;

/// Placement attempts per object before `Scene::random` settles for fewer objects.
const PLACEMENT_TRIES: usize = 100;

/// The outline of an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Star,
    Diamond,
    Hexagon,
}

impl Shape {
    pub const ALL: [Shape; 6] =
        [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Star, Shape::Diamond, Shape::Hexagon];

    /// The English noun.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Star => "star",
            Shape::Diamond => "diamond",
            Shape::Hexagon => "hexagon",
        }
    }

    /// The English plural (every shape name takes a plain "s").
    pub fn plural(self) -> String {
        format!("{}s", self.name())
    }
}

/// The fill colour of an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Orange,
    Pink,
    Brown,
}

impl Color {
    pub const ALL: [Color; 8] =
        [Color::Red, Color::Green, Color::Blue, Color::Yellow, Color::Purple, Color::Orange, Color::Pink, Color::Brown];

    /// The English adjective.
    pub fn name(self) -> &'static str {
        match self {
            Color::Red => "red",
            Color::Green => "green",
            Color::Blue => "blue",
            Color::Yellow => "yellow",
            Color::Purple => "purple",
            Color::Orange => "orange",
            Color::Pink => "pink",
            Color::Brown => "brown",
        }
    }

    /// The colour a renderer paints, chosen so that every pair is easy to tell apart.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Color::Red => [220, 40, 40],
            Color::Green => [40, 170, 60],
            Color::Blue => [40, 80, 220],
            Color::Yellow => [240, 210, 40],
            Color::Purple => [140, 60, 190],
            Color::Orange => [245, 140, 30],
            Color::Pink => [245, 130, 190],
            Color::Brown => [130, 80, 40],
        }
    }
}

/// How big an object is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    Small,
    Medium,
    Large,
}

impl Size {
    pub const ALL: [Size; 3] = [Size::Small, Size::Medium, Size::Large];

    /// The English adjective.
    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Medium => "medium",
            Size::Large => "large",
        }
    }

    /// Radius of the object's bounding circle as a fraction of the image's shorter side.
    pub fn radius(self) -> f32 {
        match self {
            Size::Small => 0.07,
            Size::Medium => 0.11,
            Size::Large => 0.15,
        }
    }
}

/// One shape in a scene.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub shape: Shape,
    pub color: Color,
    pub size: Size,
    /// Centre, as a fraction of the width, from the left edge.
    pub x: f32,
    /// Centre, as a fraction of the height, from the top edge (y grows downward).
    pub y: f32,
}

impl Object {
    /// Whether this object is clearly left of `other` (by more than [`RELATION_MARGIN`]).
    pub fn left_of(&self, other: &Object) -> bool {
        other.x - self.x > RELATION_MARGIN
    }

    /// Whether this object is clearly above `other` (by more than [`RELATION_MARGIN`]).
    pub fn above(&self, other: &Object) -> bool {
        other.y - self.y > RELATION_MARGIN
    }

    /// "small red circle": size, colour and shape, the words every description refers by.
    pub fn noun_phrase(&self) -> String {
        format!("{} {} {}", self.size.name(), self.color.name(), self.shape.name())
    }

    /// Where in a 3 x 3 grid of the image the centre falls, as a phrase ("in the top left").
    pub fn region(&self) -> &'static str {
        let third = |v: f32| ((v * 3.0) as usize).min(2);
        match (third(self.x), third(self.y)) {
            (0, 0) => "in the top left",
            (1, 0) => "at the top",
            (2, 0) => "in the top right",
            (0, 1) => "on the left",
            (1, 1) => "in the middle",
            (2, 1) => "on the right",
            (0, _) => "in the bottom left",
            (1, _) => "at the bottom",
            _ => "in the bottom right",
        }
    }
}

/// A picture as a list of objects, drawn in order (later ones on top where they overlap).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    pub width: u32,
    pub height: u32,
    pub objects: Vec<Object>,
}

impl Scene {
    /// A square scene of 1 to `max_objects` random objects that neither overlap nor leave the
    /// image; when the image fills up it holds fewer objects rather than crowding them.
    pub fn random<R: Rng + ?Sized>(rng: &mut R, max_objects: usize) -> Scene {
        Self::random_placed(rng, max_objects, false)
    }

    /// [`Scene::random`], or with `overlap` a scene whose objects may overlap one another
    /// (occlusion, as in real pictures) while no object covers another's centre, so that every
    /// object stays visible and, in images of 32 px and more, its colour can be read at its centre.
    pub fn random_placed<R: Rng + ?Sized>(rng: &mut R, max_objects: usize, overlap: bool) -> Scene {
        let mut scene = Scene { width: SCENE_SIDE, height: SCENE_SIDE, objects: Vec::new() };
        if max_objects == 0 {
            return scene;
        }
        let clash = if overlap { Scene::covers } else { Scene::overlap };
        let wanted = rng.random_range(1..=max_objects);
        for _ in 0..wanted {
            let shape = any(&Shape::ALL, rng);
            let color = any(&Color::ALL, rng);
            let size = any(&Size::ALL, rng);
            let r = size.radius();
            let placed = (0..PLACEMENT_TRIES)
                .map(|_| Object {
                    shape,
                    color,
                    size,
                    x: rng.random_range(r..1.0 - r),
                    y: rng.random_range(r..1.0 - r),
                })
                .find(|candidate| scene.objects.iter().all(|o| !clash(&scene, o, candidate)));
            match placed {
                Some(object) => scene.objects.push(object),
                None => break,
            }
        }
        scene
    }

    /// Whether two objects' bounding circles, widened by the gap, intersect (in pixels, so
    /// that non-square scenes are judged as drawn).
    pub fn overlap(&self, a: &Object, b: &Object) -> bool {
        let reach = a.size.radius() + b.size.radius() + GAP;
        self.centre_distance(a, b) < reach * self.width.min(self.height) as f32
    }

    /// Whether either object could cover the other's centre: their centres are closer than the
    /// larger bounding radius plus [`CENTRE_MARGIN`].
    fn covers(&self, a: &Object, b: &Object) -> bool {
        let reach = a.size.radius().max(b.size.radius()) + CENTRE_MARGIN;
        self.centre_distance(a, b) < reach * self.width.min(self.height) as f32
    }

    /// Distance between two objects' centres, in pixels.
    fn centre_distance(&self, a: &Object, b: &Object) -> f32 {
        let dx = (a.x - b.x) * self.width as f32;
        let dy = (a.y - b.y) * self.height as f32;
        dx.hypot(dy)
    }

    /// How many objects have this shape.
    pub fn count_shape(&self, shape: Shape) -> usize {
        self.objects.iter().filter(|o| o.shape == shape).count()
    }

    /// How many objects have this colour.
    pub fn count_color(&self, color: Color) -> usize {
        self.objects.iter().filter(|o| o.color == color).count()
    }

    /// Indices of the objects no other object shares a noun phrase with: only these can be
    /// named with "the" in a relation without ambiguity.
    fn uniquely_named(&self) -> Vec<usize> {
        let phrases: Vec<String> = self.objects.iter().map(Object::noun_phrase).collect();
        (0..phrases.len()).filter(|&i| phrases.iter().filter(|p| **p == phrases[i]).count() == 1).collect()
    }
}

/// Every object of the scene, in order: "a small red circle, a large blue square and a medium
/// green star". It is a complete account, so questions about counts are answerable from it.
pub fn list_objects(scene: &Scene) -> String {
    join_list(scene.objects.iter().map(|o| format!("a {}", o.noun_phrase())).collect())
}

/// A varied English description of `scene`: a complete listing of its objects, then some
/// spatial relations and counts in several phrasings (counts sometimes as "Q: ... A: n" lines),
/// so the text pins down the picture.
pub fn describe<R: Rng + ?Sized>(scene: &Scene, rng: &mut R) -> String {
    if scene.objects.is_empty() {
        return "The picture is empty.".to_string();
    }
    let mut prose = vec![listing(scene, rng)];
    let relations = rng.random_range(0..=2);
    prose.extend(relation_sentences(scene, relations, rng));
    let mut questions = Vec::new();
    let mut counted = Vec::new();
    for _ in 0..rng.random_range(0..=2) {
        let fact = count_fact(scene, rng);
        if counted.contains(&fact) {
            continue;
        }
        let n = fact.n;
        match rng.random_range(0..3) {
            0 => prose.push(format!("There {} {} {}.", be(n), number(n), fact.noun())),
            1 => prose.push(format!("The number of {} is {n}.", fact.plural)),
            _ => questions.push(format!("Q: How many {} are there? A: {n}", fact.plural)),
        }
        counted.push(fact);
    }
    let mut text = prose.join(" ");
    for question in questions {
        text.push('\n');
        text.push_str(&question);
    }
    text
}

/// The opening sentence: every object, sometimes with where it lies.
fn listing<R: Rng + ?Sized>(scene: &Scene, rng: &mut R) -> String {
    let with_regions = rng.random_bool(0.5);
    let items = scene
        .objects
        .iter()
        .map(|o| match with_regions {
            true => format!("a {} {}", o.noun_phrase(), o.region()),
            false => format!("a {}", o.noun_phrase()),
        })
        .collect();
    let list = join_list(items);
    let n = scene.objects.len();
    match rng.random_range(0..4) {
        0 if n == 1 => format!("There is one object: {list}."),
        0 => format!("There are {n} objects: {list}."),
        1 => format!("The picture shows {list}."),
        2 => format!("In this image you can see {list}."),
        _ => format!("{}.", capitalise(&list)),
    }
}

/// Up to `k` true spatial relations, each about a different pair of uniquely named objects
/// that are clearly apart.
fn relation_sentences<R: Rng + ?Sized>(scene: &Scene, k: usize, rng: &mut R) -> Vec<String> {
    let named = scene.uniquely_named();
    let mut pairs: Vec<(usize, usize)> =
        named.iter().flat_map(|&i| named.iter().map(move |&j| (i, j))).filter(|(i, j)| i != j).collect();
    pairs.shuffle(rng);
    let mut stated: Vec<(usize, usize)> = Vec::new();
    let mut sentences = Vec::new();
    for (i, j) in pairs {
        if sentences.len() == k {
            break;
        }
        if stated.contains(&(j, i)) {
            continue;
        }
        if let Some(sentence) = relation_sentence(&scene.objects[i], &scene.objects[j], rng) {
            sentences.push(sentence);
            stated.push((i, j));
        }
    }
    sentences
}

/// One relation that holds between `a` and `b`, in one of several phrasings.
fn relation_sentence<R: Rng + ?Sized>(a: &Object, b: &Object, rng: &mut R) -> Option<String> {
    let mut relations = Vec::new();
    if a.left_of(b) {
        relations.push("to the left of");
    }
    if b.left_of(a) {
        relations.push("to the right of");
    }
    if a.above(b) {
        relations.push("above");
    }
    if b.above(a) {
        relations.push("below");
    }
    let relation = relations.choose(rng)?;
    let (a, b) = (a.noun_phrase(), b.noun_phrase());
    Some(match rng.random_range(0..3) {
        0 => format!("The {a} is {relation} the {b}."),
        1 => format!("{} the {b} is the {a}.", capitalise(relation)),
        _ => format!("You can see the {a} {relation} the {b}."),
    })
}

/// How many objects of one colour or one shape the scene has.
#[derive(PartialEq)]
struct CountFact {
    singular: String,
    plural: String,
    n: usize,
}

impl CountFact {
    fn noun(&self) -> &str {
        if self.n == 1 {
            &self.singular
        } else {
            &self.plural
        }
    }
}

/// A count of a colour or a shape, mostly one the scene has, sometimes one it lacks.
fn count_fact<R: Rng + ?Sized>(scene: &Scene, rng: &mut R) -> CountFact {
    let present = rng.random_bool(0.8);
    if rng.random_bool(0.5) {
        let color = pick(&Color::ALL, present, |c| scene.count_color(*c) > 0, rng);
        CountFact {
            singular: format!("{} object", color.name()),
            plural: format!("{} objects", color.name()),
            n: scene.count_color(color),
        }
    } else {
        let shape = pick(&Shape::ALL, present, |s| scene.count_shape(*s) > 0, rng);
        CountFact { singular: shape.name().to_string(), plural: shape.plural(), n: scene.count_shape(shape) }
    }
}

/// A random item satisfying `present` when `want_present`, otherwise any item; falls back to
/// any item when none satisfies it.
fn pick<T: Copy, R: Rng + ?Sized>(items: &[T], want_present: bool, present: impl Fn(&T) -> bool, rng: &mut R) -> T {
    let matching: Vec<T> = items.iter().copied().filter(|t| present(t)).collect();
    if want_present && !matching.is_empty() {
        any(&matching, rng)
    } else {
        any(items, rng)
    }
}

fn be(n: usize) -> &'static str {
    if n == 1 {
        "is"
    } else {
        "are"
    }
}

fn number(n: usize) -> String {
    if n == 0 {
        "no".to_string()
    } else {
        n.to_string()
    }
}

/// "a, b and c".
pub fn join_list(mut items: Vec<String>) -> String {
    match items.len() {
        0 => String::new(),
        1 => items.remove(0),
        _ => {
            let last = items.pop().unwrap_or_default();
            format!("{} and {last}", items.join(", "))
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn any<T: Copy, R: Rng + ?Sized>(items: &[T], rng: &mut R) -> T {
    items[rng.random_range(0..items.len())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn object(shape: Shape, color: Color, x: f32, y: f32) -> Object {
        Object { shape, color, size: Size::Small, x, y }
    }

    fn hand_built() -> Scene {
        Scene {
            width: 64,
            height: 64,
            objects: vec![
                object(Shape::Circle, Color::Red, 0.2, 0.2),
                object(Shape::Square, Color::Blue, 0.8, 0.25),
                object(Shape::Circle, Color::Blue, 0.5, 0.8),
            ],
        }
    }

    #[test]
    fn relations_follow_geometry_with_a_margin() {
        let s = hand_built();
        let [circle, square, low] = [&s.objects[0], &s.objects[1], &s.objects[2]];
        assert!(circle.left_of(square) && !square.left_of(circle));
        assert!(circle.above(low) && square.above(low) && !low.above(circle));
        // 0.05 apart vertically is within the margin: neither is above the other.
        assert!(!circle.above(square) && !square.above(circle));
        assert_eq!(circle.region(), "in the top left");
        assert_eq!(low.region(), "at the bottom");
    }

    #[test]
    fn counts_by_shape_and_colour() {
        let s = hand_built();
        assert_eq!(s.count_shape(Shape::Circle), 2);
        assert_eq!(s.count_shape(Shape::Star), 0);
        assert_eq!(s.count_color(Color::Blue), 2);
        assert_eq!(s.count_color(Color::Red), 1);
        assert_eq!(list_objects(&s), "a small red circle, a small blue square and a small blue circle");
    }

    #[test]
    fn random_scenes_stay_inside_and_never_overlap() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let s = Scene::random(&mut rng, 8);
            assert!(!s.objects.is_empty() && s.objects.len() <= 8);
            for (i, a) in s.objects.iter().enumerate() {
                let r = a.size.radius();
                assert!(a.x >= r && a.x <= 1.0 - r && a.y >= r && a.y <= 1.0 - r);
                for b in &s.objects[i + 1..] {
                    assert!(!s.overlap(a, b));
                }
            }
        }
    }

    #[test]
    fn descriptions_state_only_true_counts() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..200 {
            let s = Scene::random(&mut rng, MAX_DESCRIBED_OBJECTS);
            let text = describe(&s, &mut rng);
            assert!(text.len() < 600, "{text}");
            for color in Color::ALL {
                let claim = format!("How many {} objects are there? A: ", color.name());
                if let Some(at) = text.find(&claim) {
                    let n: usize = text[at + claim.len()..]
                        .split_whitespace()
                        .next()
                        .and_then(|w| w.parse().ok())
                        .expect("a count follows");
                    assert_eq!(n, s.count_color(color), "{text}");
                }
            }
        }
    }

    #[test]
    fn scene_round_trips_through_json_with_lowercase_names() {
        let s = hand_built();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"shape\":\"circle\"") && json.contains("\"color\":\"red\""));
        assert_eq!(serde_json::from_str::<Scene>(&json).unwrap(), s);
    }
}
