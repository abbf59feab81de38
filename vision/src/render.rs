//! Deterministic pictures of the synthetic world: scenes of coloured shapes, gauges with a
//! needle, and markers that single out one object (the visual prompts GPT-4V answers about).
//!
//! Every picture is a pure function of its inputs and the random generator, so a seed names an
//! image exactly and a data set can be regenerated instead of stored.
//!
//! Shapes are filled by sampling pixel centres (a pixel takes a shape's colour when its centre
//! lies inside the shape) rather than with imageproc's integer polygons: the geometry then
//! stays exact at any resolution, which is what lets the renderer promise that each object's
//! centre pixel shows its colour even when a small object is only a few pixels across.

use std::f32::consts::TAU;

use image::{Rgb, RgbImage};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::scene::{Object, Scene, Shape};

/// Light grey behind everything: every object colour stands out against it, and it is not
/// white, so a dial face still reads as a separate disc.
pub const BACKGROUND: [u8; 3] = [225, 225, 225];

/// Black, for markers and a gauge's markings. No [`crate::scene::Color`] is black, so a marker
/// can never be mistaken for an object.
pub const INK: [u8; 3] = [0, 0, 0];

/// The needle's red: darker than the scene red, and gauges hold no objects to confuse it with.
const NEEDLE: [u8; 3] = [200, 30, 30];

/// The dial's face: white, so ticks and digits have the most contrast.
const DIAL_FACE: [u8; 3] = [250, 250, 250];

/// Largest swing (in 0..255 units) of the background texture: enough to break up the flat
/// grey, too little to be mistaken for an object.
const TEXTURE_AMPLITUDE: f32 = 6.0;

/// The points of the star reach `r`; its inner corners `STAR_INNER * r`.
const STAR_INNER: f32 = 0.45;

/// A diamond is a rhombus this many times as wide as it is tall, so that it is never a square
/// turned by 45 degrees.
const DIAMOND_WIDTH: f32 = 0.7;

/// Most ticks a dial is drawn with; more would only blur into a grey arc.
const MAX_TICKS: u32 = 21;

/// A point in pixel coordinates (x right, y down); pixel (i, j) covers [i, i+1) x [j, j+1).
type Point = (f32, f32);

/// How a picture is drawn, separately from what it shows.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderOptions {
    /// Pixels along the longer side of the image (scenes are square unless built otherwise).
    pub side: u32,
    /// Standard deviation of per-pixel Gaussian noise in 0..255 units; 0 draws clean images.
    pub noise: f32,
    /// Whether the background carries a faint texture, so that a model cannot rely on a
    /// perfectly flat grey to find objects.
    pub texture: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions { side: 64, noise: 0.0, texture: false }
    }
}

/// Draws `scene`: each object filled in its colour at its place and size, on a light-grey
/// background. Objects keep the scene's non-overlapping layout, and each centre is snapped to
/// the middle of the pixel it falls in, so without noise the pixel under every object's centre
/// has exactly that object's colour.
pub fn render_scene<R: Rng + ?Sized>(scene: &Scene, opts: &RenderOptions, rng: &mut R) -> RgbImage {
    let (width, height) = pixel_size(scene, opts.side);
    let mut img = background(width, height, opts.texture, rng);
    for object in &scene.objects {
        let (centre, radius) = placement(object, width, height);
        fill_shape(&mut img, object.shape, centre, radius, Rgb(object.color.rgb()));
    }
    add_noise(&mut img, opts.noise, rng);
    img
}

/// Adds independent Gaussian noise of standard deviation `std` to every channel of every pixel.
/// Public so that a caller that draws on top of a clean picture (a marker, say) can add the
/// noise last, over everything. A `std` that is not positive leaves the image untouched.
pub fn add_noise<R: Rng + ?Sized>(img: &mut RgbImage, std: f32, rng: &mut R) {
    if std.is_nan() || std <= 0.0 {
        return;
    }
    for pair in img.chunks_mut(2) {
        let (z0, z1) = gaussian_pair(rng);
        for (value, z) in pair.iter_mut().zip([z0, z1]) {
            *value = (*value as f32 + z * std).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// Two independent standard normal samples (Box-Muller), since rand alone has no normal law.
fn gaussian_pair<R: Rng + ?Sized>(rng: &mut R) -> (f32, f32) {
    let u1 = 1.0 - rng.random::<f32>();
    let u2 = rng.random::<f32>();
    let r = (-2.0 * u1.ln()).sqrt();
    (r * (TAU * u2).cos(), r * (TAU * u2).sin())
}

/// Image size for a scene: the longer side gets `side` pixels and the other keeps the scene's
/// aspect ratio (so a bad aspect ratio can never ask for a huge image).
fn pixel_size(scene: &Scene, side: u32) -> (u32, u32) {
    let longer = scene.width.max(scene.height);
    if longer == 0 {
        return (side, side);
    }
    let scale = |n: u32| ((side as u64 * n as u64 / longer as u64) as u32).max(1);
    (scale(scene.width), scale(scene.height))
}

/// An object's centre (snapped to a pixel's middle) and radius, in pixels.
fn placement(object: &Object, width: u32, height: u32) -> (Point, f32) {
    let snap = |fraction: f32, n: u32| (fraction * n as f32).floor() + 0.5;
    let centre = (snap(object.x, width), snap(object.y, height));
    (centre, object.size.radius() * width.min(height) as f32)
}

/// The background: flat grey, or grey crossed by two faint waves of random direction,
/// frequency and phase, like the grain of paper.
fn background<R: Rng + ?Sized>(width: u32, height: u32, texture: bool, rng: &mut R) -> RgbImage {
    let mut img = RgbImage::from_pixel(width, height, Rgb(BACKGROUND));
    if !texture {
        return img;
    }
    let longer = width.max(height).max(1) as f32;
    let waves: Vec<(f32, f32, f32)> = (0..2)
        .map(|_| {
            let direction = rng.random_range(0.0..TAU);
            let frequency = rng.random_range(2.0..6.0) * TAU / longer;
            let phase = rng.random_range(0.0..TAU);
            (direction.cos() * frequency, direction.sin() * frequency, phase)
        })
        .collect();
    for (x, y, pixel) in img.enumerate_pixels_mut() {
        let wave: f32 = waves.iter().map(|(fx, fy, phase)| (fx * x as f32 + fy * y as f32 + phase).sin()).sum();
        let shift = wave / waves.len() as f32 * TEXTURE_AMPLITUDE;
        for channel in pixel.0.iter_mut() {
            *channel = (*channel as f32 + shift).round().clamp(0.0, 255.0) as u8;
        }
    }
    img
}

/// Fills one shape inscribed in the circle of `radius` around `centre`, so that every shape
/// stays inside the bounding circle the scene's layout keeps apart from the others.
fn fill_shape(img: &mut RgbImage, shape: Shape, centre: Point, radius: f32, color: Rgb<u8>) {
    let (cx, cy) = centre;
    let corners = match shape {
        Shape::Circle => return fill_disc(img, centre, radius, color),
        Shape::Square => regular(centre, radius, 4, 45.0),
        Shape::Triangle => regular(centre, radius, 3, -90.0),
        Shape::Hexagon => regular(centre, radius, 6, 0.0),
        Shape::Diamond => {
            let half_width = radius * DIAMOND_WIDTH;
            vec![(cx, cy - radius), (cx + half_width, cy), (cx, cy + radius), (cx - half_width, cy)]
        }
        Shape::Star => (0..10)
            .map(|i| {
                let reach = if i % 2 == 0 { radius } else { radius * STAR_INNER };
                polar(centre, reach, -90.0 + 36.0 * i as f32)
            })
            .collect(),
    };
    fill_polygon(img, &corners, color);
}

/// `n` corners evenly spaced around a circle, the first at `start_deg` (clockwise from the
/// positive x axis, since y grows downward).
fn regular(centre: Point, radius: f32, n: usize, start_deg: f32) -> Vec<Point> {
    (0..n).map(|i| polar(centre, radius, start_deg + 360.0 * i as f32 / n as f32)).collect()
}

fn polar((cx, cy): Point, radius: f32, degrees: f32) -> Point {
    let angle = degrees.to_radians();
    (cx + radius * angle.cos(), cy + radius * angle.sin())
}

/// Paints every pixel between `lo` and `hi` whose centre satisfies `contains`; the box is
/// clipped to the image, so shapes may hang over the edge.
fn paint_where(img: &mut RgbImage, lo: Point, hi: Point, color: Rgb<u8>, contains: impl Fn(Point) -> bool) {
    let (width, height) = img.dimensions();
    let span = |a: f32, b: f32, n: u32| (a.floor().max(0.0) as u32, (b.ceil().max(0.0) as u32).min(n));
    let (x0, x1) = span(lo.0, hi.0, width);
    let (y0, y1) = span(lo.1, hi.1, height);
    for y in y0..y1 {
        for x in x0..x1 {
            if contains((x as f32 + 0.5, y as f32 + 0.5)) {
                img.put_pixel(x, y, color);
            }
        }
    }
}

fn fill_disc(img: &mut RgbImage, centre: Point, radius: f32, color: Rgb<u8>) {
    fill_ring(img, centre, 0.0, radius, color);
}

/// Fills the annulus between radii `inner` and `outer` (a disc when `inner` is 0).
fn fill_ring(img: &mut RgbImage, (cx, cy): Point, inner: f32, outer: f32, color: Rgb<u8>) {
    paint_where(img, (cx - outer, cy - outer), (cx + outer, cy + outer), color, |(x, y)| {
        let d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
        d2 >= inner * inner && d2 <= outer * outer
    });
}

fn fill_polygon(img: &mut RgbImage, corners: &[Point], color: Rgb<u8>) {
    let lo = corners.iter().fold((f32::INFINITY, f32::INFINITY), |(x, y), p| (x.min(p.0), y.min(p.1)));
    let hi = corners.iter().fold((f32::NEG_INFINITY, f32::NEG_INFINITY), |(x, y), p| (x.max(p.0), y.max(p.1)));
    paint_where(img, lo, hi, color, |p| inside(corners, p));
}

/// Even-odd rule: a point is inside when a ray from it crosses the outline an odd number of
/// times. Works for the star, which is not convex.
fn inside(corners: &[Point], (px, py): Point) -> bool {
    let crossings = corners
        .iter()
        .zip(corners.iter().cycle().skip(1))
        .filter(|((ax, ay), (bx, by))| (*ay > py) != (*by > py) && px < ax + (bx - ax) * (py - ay) / (by - ay))
        .count();
    crossings % 2 == 1
}

/// The four corners of a straight stroke of `width` pixels from `a` to `b`.
fn stroke(a: Point, b: Point, width: f32) -> [Point; 4] {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let length = (dx * dx + dy * dy).sqrt().max(f32::EPSILON);
    let (nx, ny) = (-dy / length * width / 2.0, dx / length * width / 2.0);
    [(a.0 + nx, a.1 + ny), (b.0 + nx, b.1 + ny), (b.0 - nx, b.1 - ny), (a.0 - nx, a.1 - ny)]
}

/// A dial instrument: a needle over a labelled 270-degree scale. `value` is the true reading,
/// which is what a model should read off the picture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gauge {
    pub min: f32,
    pub max: f32,
    pub value: f32,
    /// Written in the font's letters (uppercased on the dial), e.g. "km/h" or "C" for Celsius.
    pub unit: String,
    /// Labelled ticks from `min` to `max`, both ends included.
    pub ticks: u32,
}

/// The instruments `Gauge::random` imitates: range, unit and a tick count that puts every
/// label on a round number.
const GAUGE_KINDS: [(f32, f32, &str, u32); 7] = [
    (0.0, 100.0, "km/h", 6),
    (0.0, 8.0, "bar", 9),
    (-20.0, 40.0, "C", 7),
    (0.0, 240.0, "mph", 7),
    (0.0, 60.0, "psi", 7),
    (0.0, 100.0, "%", 6),
    (0.0, 12.0, "V", 7),
];

impl Gauge {
    /// A gauge of a random kind showing a random value in its range, rounded to the precision
    /// [`Gauge::reading`] states, so the reading is exactly what is drawn.
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> Gauge {
        let (min, max, unit, ticks) = GAUGE_KINDS[rng.random_range(0..GAUGE_KINDS.len())];
        let mut gauge = Gauge { min, max, value: rng.random_range(min..=max), unit: unit.to_string(), ticks };
        gauge.value = round_to(gauge.value, gauge.decimals());
        gauge
    }

    /// The reading as a person would say it: "42 km/h", "3.5 bar".
    pub fn reading(&self) -> String {
        format!("{} {}", format_number(self.value, self.decimals()), self.unit)
    }

    /// The largest labelled value as it is printed on the dial.
    pub fn max_label(&self) -> String {
        format_number(self.max, self.label_decimals())
    }

    /// Digits after the point in a reading: tenths on short scales, where one unit spans a
    /// wide slice of the arc, whole units otherwise.
    fn decimals(&self) -> usize {
        if (self.max - self.min).abs() <= 20.0 {
            1
        } else {
            0
        }
    }

    /// Labels are whole numbers when every tick falls on one, tenths otherwise.
    fn label_decimals(&self) -> usize {
        let whole = |v: f32| (v - v.round()).abs() < 1e-3;
        if whole(self.min) && whole(self.tick_step()) {
            0
        } else {
            1
        }
    }

    fn tick_count(&self) -> u32 {
        self.ticks.clamp(2, MAX_TICKS)
    }

    fn tick_step(&self) -> f32 {
        (self.max - self.min) / (self.tick_count() - 1) as f32
    }

    /// Where `value` lies along the scale, 0 at `min` and 1 at `max`; off-scale values pin the
    /// needle to the end stop as a real gauge does.
    fn fraction(&self, value: f32) -> f32 {
        let t = (value - self.min) / (self.max - self.min);
        if t.is_finite() {
            t.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// `value` rounded to `decimals` places, never negative zero (which would print as "-0").
fn round_to(value: f32, decimals: usize) -> f32 {
    let scale = 10f32.powi(decimals as i32);
    (value * scale).round() / scale + 0.0
}

fn format_number(value: f32, decimals: usize) -> String {
    format!("{:.*}", decimals, round_to(value, decimals))
}

/// Draws `gauge` as a square image of `opts.side` pixels: a round dial with major ticks (labelled
/// in the built-in font) and minor ticks between them over a 270-degree arc, the unit below the
/// centre, and a red needle at `gauge.value`.
pub fn render_gauge<R: Rng + ?Sized>(gauge: &Gauge, opts: &RenderOptions, rng: &mut R) -> RgbImage {
    draw_gauge(gauge, true, opts, rng)
}

/// The same dial with neither tick labels nor unit: only someone told the scale (by worked
/// examples, in an in-context episode) can read it.
pub fn render_unlabelled_gauge<R: Rng + ?Sized>(gauge: &Gauge, opts: &RenderOptions, rng: &mut R) -> RgbImage {
    draw_gauge(gauge, false, opts, rng)
}

fn draw_gauge<R: Rng + ?Sized>(gauge: &Gauge, labelled: bool, opts: &RenderOptions, rng: &mut R) -> RgbImage {
    let side = opts.side;
    let mut img = background(side, side, opts.texture, rng);
    let centre = (side as f32 / 2.0, side as f32 / 2.0);
    let radius = side as f32 * 0.44;
    let line = (side as f32 / 48.0).max(1.2);
    let scale = (side / 64).max(1);
    fill_disc(&mut img, centre, radius, Rgb(DIAL_FACE));
    fill_ring(&mut img, centre, radius - line, radius, Rgb(INK));

    let ticks = gauge.tick_count();
    for i in 0..ticks {
        let t = i as f32 / (ticks - 1) as f32;
        tick(&mut img, centre, radius, 0.78, t, line);
        if i + 1 < ticks {
            tick(&mut img, centre, radius, 0.87, t + 0.5 / (ticks - 1) as f32, line * 0.75);
        }
        if labelled {
            let label = format_number(gauge.min + gauge.tick_step() * i as f32, gauge.label_decimals());
            draw_text_centred(&mut img, &label, dial_point(centre, radius * 0.6, t), scale, Rgb(INK));
        }
    }
    if labelled {
        let unit_at = (centre.0, centre.1 + radius * 0.7);
        draw_text_centred(&mut img, &gauge.unit.to_uppercase(), unit_at, scale, Rgb(INK));
    }

    let t = gauge.fraction(gauge.value);
    let tip = dial_point(centre, radius * 0.8, t);
    // Half a turn is two thirds of the 270-degree arc: the tail points straight back.
    let tail = dial_point(centre, radius * 0.12, t + 2.0 / 3.0);
    let [a, _, _, d] = stroke(centre, tip, (side as f32 / 16.0).max(2.0));
    fill_polygon(&mut img, &[tip, a, tail, d], Rgb(NEEDLE));
    fill_disc(&mut img, centre, (side as f32 / 24.0).max(1.5), Rgb(NEEDLE));
    add_noise(&mut img, opts.noise, rng);
    img
}

/// One tick at fraction `t` of the arc, from `from` times the radius out to the dial's rim.
fn tick(img: &mut RgbImage, centre: Point, radius: f32, from: f32, t: f32, width: f32) {
    let inner = dial_point(centre, radius * from, t);
    let outer = dial_point(centre, radius * 0.95, t);
    fill_polygon(img, &stroke(inner, outer, width), Rgb(INK));
}

/// The point at fraction `t` along the dial's arc, which runs clockwise through 270 degrees
/// from the lower left (t = 0) over the top to the lower right (t = 1).
fn dial_point((cx, cy): Point, radius: f32, t: f32) -> Point {
    let angle = (-135.0 + 270.0 * t).to_radians();
    (cx + radius * angle.sin(), cy - radius * angle.cos())
}

/// Width and height in pixels of a glyph cell of the built-in font, before scaling.
const GLYPH: (u32, u32) = (3, 5);

/// The built-in 3 x 5 bitmap font: one byte per row, top first, bit 2 the left pixel. It covers
/// what dials print (digits, sign, point) and the letters and signs of the units gauges use;
/// lowercase letters are drawn as capitals.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c.to_ascii_uppercase() {
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b001, 0b010, 0b010],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        '-' => [0b000, 0b000, 0b111, 0b000, 0b000],
        '.' => [0b000, 0b000, 0b000, 0b000, 0b010],
        '/' => [0b001, 0b001, 0b010, 0b100, 0b100],
        '%' => [0b101, 0b001, 0b010, 0b100, 0b101],
        ' ' => [0; 5],
        'A' => [0b010, 0b101, 0b111, 0b101, 0b101],
        'B' => [0b110, 0b101, 0b110, 0b101, 0b110],
        'C' => [0b011, 0b100, 0b100, 0b100, 0b011],
        'H' => [0b101, 0b101, 0b111, 0b101, 0b101],
        'I' => [0b111, 0b010, 0b010, 0b010, 0b111],
        'K' => [0b101, 0b101, 0b110, 0b101, 0b101],
        'M' => [0b101, 0b111, 0b111, 0b101, 0b101],
        'P' => [0b110, 0b101, 0b110, 0b100, 0b100],
        'R' => [0b110, 0b101, 0b110, 0b101, 0b101],
        'S' => [0b011, 0b100, 0b010, 0b001, 0b110],
        'V' => [0b101, 0b101, 0b101, 0b101, 0b010],
        _ => return None,
    })
}

/// Size in pixels of `text` in the built-in font at `scale`: glyphs one scaled pixel apart.
pub fn text_size(text: &str, scale: u32) -> (u32, u32) {
    let n = text.chars().count() as u32;
    ((n * (GLYPH.0 + 1)).saturating_sub(1) * scale, GLYPH.1 * scale)
}

/// Writes `text` in the built-in font with its top-left corner at (`x`, `y`), each font pixel
/// a `scale` x `scale` block. Characters the font lacks leave a blank cell, and pixels off the
/// image are skipped, so any text can be drawn anywhere.
pub fn draw_text(img: &mut RgbImage, text: &str, (x, y): (i64, i64), scale: u32, color: Rgb<u8>) {
    let (width, height) = img.dimensions();
    let scale = scale as i64;
    for (k, c) in text.chars().enumerate() {
        let Some(rows) = glyph(c) else { continue };
        let left = x + k as i64 * (GLYPH.0 as i64 + 1) * scale;
        for (row, bits) in rows.iter().enumerate() {
            for col in 0..GLYPH.0 as i64 {
                if (bits >> (GLYPH.0 as i64 - 1 - col)) & 1 == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (left + col * scale + dx, y + row as i64 * scale + dy);
                        if (0..width as i64).contains(&px) && (0..height as i64).contains(&py) {
                            img.put_pixel(px as u32, py as u32, color);
                        }
                    }
                }
            }
        }
    }
}

fn draw_text_centred(img: &mut RgbImage, text: &str, (cx, cy): Point, scale: u32, color: Rgb<u8>) {
    let (w, h) = text_size(text, scale);
    let corner = ((cx - w as f32 / 2.0).round() as i64, (cy - h as f32 / 2.0).round() as i64);
    draw_text(img, text, corner, scale, color);
}

/// How a visual prompt singles out an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkerKind {
    /// A ring drawn just outside the object.
    Circle,
    /// An arrow pointing at the object from the side facing the image's middle.
    Arrow,
}

impl MarkerKind {
    pub const ALL: [MarkerKind; 2] = [MarkerKind::Circle, MarkerKind::Arrow];

    /// The English noun, as captions name the marker.
    pub fn name(self) -> &'static str {
        match self {
            MarkerKind::Circle => "circle",
            MarkerKind::Arrow => "arrow",
        }
    }
}

/// Marks `object` on an image rendered from its scene, in [`INK`], which no object is painted
/// in. The marker stays outside the object's bounding circle, so the object itself (and its
/// centre pixel) is left as drawn. Geometry comes from the image's own size, so the marker
/// lands on the object whatever resolution the scene was rendered at.
pub fn draw_marker(img: &mut RgbImage, object: &Object, kind: MarkerKind) {
    let (width, height) = img.dimensions();
    let (centre, radius) = placement(object, width, height);
    let unit = width.min(height) as f32;
    let gap = (unit * 0.03).max(1.0);
    let line = (unit / 32.0).max(1.5);
    match kind {
        MarkerKind::Circle => fill_ring(img, centre, radius + gap, radius + gap + line, Rgb(INK)),
        MarkerKind::Arrow => {
            let to_middle = (width as f32 / 2.0 - centre.0, height as f32 / 2.0 - centre.1);
            let length = (to_middle.0 * to_middle.0 + to_middle.1 * to_middle.1).sqrt();
            let (dx, dy) = if length < 1.0 {
                (0.5f32.sqrt(), 0.5f32.sqrt())
            } else {
                (to_middle.0 / length, to_middle.1 / length)
            };
            let along = |d: f32| (centre.0 + dx * d, centre.1 + dy * d);
            let head = (unit * 0.08).max(3.0);
            let shaft = (unit * 0.15).max(4.0);
            let tip = along(radius + gap);
            let [a, _, _, d] = stroke(along(radius + gap + head), tip, head * 1.2);
            fill_polygon(img, &[tip, a, d], Rgb(INK));
            fill_polygon(
                img,
                &stroke(along(radius + gap + head * 0.5), along(radius + gap + head + shaft), line),
                Rgb(INK),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::{Color, Size};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    fn single(shape: Shape, color: Color, size: Size, x: f32, y: f32) -> Scene {
        Scene { width: 64, height: 64, objects: vec![Object { shape, color, size, x, y }] }
    }

    fn at(img: &RgbImage, object: &Object) -> [u8; 3] {
        let (w, h) = img.dimensions();
        img.get_pixel((object.x * w as f32) as u32, (object.y * h as f32) as u32).0
    }

    #[test]
    fn same_seed_draws_identical_bytes() {
        let opts = RenderOptions { side: 32, noise: 8.0, texture: true };
        let scene = Scene::random(&mut rng(1), 9);
        let a = render_scene(&scene, &opts, &mut rng(2));
        let b = render_scene(&scene, &opts, &mut rng(2));
        let c = render_scene(&scene, &opts, &mut rng(3));
        assert_eq!(a.as_raw(), b.as_raw());
        assert_ne!(a.as_raw(), c.as_raw());
    }

    #[test]
    fn every_object_centre_shows_its_colour() {
        let mut r = rng(4);
        for side in [16, 32, 64] {
            for texture in [false, true] {
                let opts = RenderOptions { side, noise: 0.0, texture };
                for _ in 0..100 {
                    let scene = Scene::random(&mut r, 9);
                    let img = render_scene(&scene, &opts, &mut r);
                    assert_eq!(img.dimensions(), (side, side));
                    for object in &scene.objects {
                        assert_eq!(at(&img, object), object.color.rgb(), "{object:?} at side {side}");
                    }
                }
            }
        }
    }

    #[test]
    fn overlapping_scenes_overlap_and_still_show_every_centre() {
        let mut r = rng(7);
        let mut scenes_with_overlap = 0;
        for side in [32, 64] {
            let opts = RenderOptions { side, ..RenderOptions::default() };
            for _ in 0..500 {
                let scene = Scene::random_placed(&mut r, 9, true);
                let o = &scene.objects;
                scenes_with_overlap +=
                    o.iter().enumerate().any(|(i, a)| o[i + 1..].iter().any(|b| scene.overlap(a, b))) as usize;
                let img = render_scene(&scene, &opts, &mut r);
                for object in o {
                    assert_eq!(at(&img, object), object.color.rgb(), "{object:?} at side {side}");
                }
            }
        }
        assert!(scenes_with_overlap > 250, "only {scenes_with_overlap} of 1000 scenes overlap");
    }

    #[test]
    fn shapes_stay_inside_their_bounding_circles() {
        let mut r = rng(5);
        let opts = RenderOptions { side: 64, ..RenderOptions::default() };
        for _ in 0..50 {
            let scene = Scene::random(&mut r, 9);
            let img = render_scene(&scene, &opts, &mut r);
            for (x, y, pixel) in img.enumerate_pixels() {
                if pixel.0 == BACKGROUND {
                    continue;
                }
                let p = (x as f32 + 0.5, y as f32 + 0.5);
                let owner = scene.objects.iter().find(|o| {
                    let ((cx, cy), radius) = placement(o, 64, 64);
                    (p.0 - cx).hypot(p.1 - cy) <= radius + 1e-3 && o.color.rgb() == pixel.0
                });
                assert!(owner.is_some(), "stray pixel at ({x}, {y})");
            }
        }
    }

    #[test]
    fn shapes_are_told_apart_by_their_pixels() {
        let opts = RenderOptions::default();
        let masks: Vec<Vec<bool>> = Shape::ALL
            .iter()
            .map(|&shape| {
                let img = render_scene(&single(shape, Color::Red, Size::Large, 0.5, 0.5), &opts, &mut rng(0));
                img.pixels().map(|p| p.0 == Color::Red.rgb()).collect()
            })
            .collect();
        for i in 0..masks.len() {
            for j in i + 1..masks.len() {
                assert_ne!(masks[i], masks[j], "{:?} and {:?} look alike", Shape::ALL[i], Shape::ALL[j]);
            }
        }
    }

    #[test]
    fn noise_changes_pixels_deterministically() {
        let scene = Scene::random(&mut rng(6), 5);
        let clean = render_scene(&scene, &RenderOptions { side: 32, ..RenderOptions::default() }, &mut rng(7));
        let noisy = RenderOptions { side: 32, noise: 10.0, texture: false };
        let a = render_scene(&scene, &noisy, &mut rng(7));
        let b = render_scene(&scene, &noisy, &mut rng(7));
        assert_eq!(a.as_raw(), b.as_raw());
        let changed = clean.as_raw().iter().zip(a.as_raw()).filter(|(x, y)| x != y).count();
        assert!(changed > clean.as_raw().len() / 2, "only {changed} values changed");
    }

    #[test]
    fn non_square_and_degenerate_scenes_render_without_panicking() {
        let mut scene = single(Shape::Star, Color::Blue, Size::Medium, 0.5, 0.5);
        scene.width = 128;
        assert_eq!(render_scene(&scene, &RenderOptions::default(), &mut rng(0)).dimensions(), (64, 32));
        scene.objects[0].x = f32::NAN;
        scene.objects[0].y = 7.0;
        scene.width = 0;
        let img = render_scene(&scene, &RenderOptions::default(), &mut rng(0));
        assert!(img.pixels().all(|p| p.0 == BACKGROUND));
    }

    #[test]
    fn gauge_needle_follows_the_value() {
        let opts = RenderOptions { side: 64, ..RenderOptions::default() };
        let low = Gauge { min: 0.0, max: 100.0, value: 20.0, unit: "km/h".into(), ticks: 6 };
        let high = Gauge { value: 75.0, ..low.clone() };
        let a = render_gauge(&low, &opts, &mut rng(0));
        let b = render_gauge(&high, &opts, &mut rng(0));
        assert_ne!(a.as_raw(), b.as_raw());
        let needle = |img: &RgbImage, t: f32| {
            let (x, y) = dial_point((32.0, 32.0), 64.0 * 0.44 * 0.3, t);
            img.get_pixel(x as u32, y as u32).0
        };
        assert_eq!(needle(&a, 0.2), NEEDLE);
        assert_ne!(needle(&b, 0.2), NEEDLE);
        assert_eq!(needle(&b, 0.75), NEEDLE);
    }

    #[test]
    fn an_unlabelled_gauge_differs_from_the_labelled_one_only_in_ink_of_its_labels() {
        let opts = RenderOptions { side: 64, ..RenderOptions::default() };
        let g = Gauge { min: 0.0, max: 100.0, value: 40.0, unit: "km/h".into(), ticks: 6 };
        let labelled = render_gauge(&g, &opts, &mut rng(0));
        let bare = render_unlabelled_gauge(&g, &opts, &mut rng(0));
        let differ: Vec<_> = labelled.pixels().zip(bare.pixels()).filter(|(a, b)| a != b).collect();
        assert!(!differ.is_empty(), "the labels must be gone");
        assert!(differ.iter().all(|(a, b)| a.0 == INK && b.0 == DIAL_FACE), "only label ink is removed");
        let other_scale = Gauge { min: 0.0, max: 50.0, value: 20.0, ..g.clone() }; // the needle at the same place
        assert_eq!(render_unlabelled_gauge(&other_scale, &opts, &mut rng(0)).as_raw(), bare.as_raw());
    }

    #[test]
    fn random_gauges_read_inside_their_range() {
        let mut r = rng(8);
        for _ in 0..500 {
            let g = Gauge::random(&mut r);
            assert!(g.min <= g.value && g.value <= g.max, "{g:?}");
            assert!(!g.reading().starts_with("-0 "), "{}", g.reading());
            assert!(g.reading().ends_with(&g.unit));
            let labels: Vec<String> =
                (0..g.ticks).map(|i| format_number(g.min + g.tick_step() * i as f32, g.label_decimals())).collect();
            assert!(labels.iter().all(|l| l.chars().all(|c| glyph(c).is_some())), "{labels:?}");
            assert!(g.unit.chars().all(|c| glyph(c).is_some()), "{}", g.unit);
        }
        let bar = Gauge { min: 0.0, max: 8.0, value: 3.5, unit: "bar".into(), ticks: 9 };
        assert_eq!(bar.reading(), "3.5 bar");
        assert_eq!(bar.max_label(), "8");
        assert_eq!(Gauge { min: -20.0, max: 40.0, value: -0.3, unit: "C".into(), ticks: 7 }.reading(), "0 C");
    }

    #[test]
    fn degenerate_gauges_render_without_panicking() {
        let opts = RenderOptions { side: 32, ..RenderOptions::default() };
        for g in [
            Gauge { min: 5.0, max: 5.0, value: 5.0, unit: String::new(), ticks: 0 },
            Gauge { min: 0.0, max: 1.0, value: f32::NAN, unit: "wéird ☃".into(), ticks: u32::MAX },
            Gauge { min: 10.0, max: 0.0, value: 50.0, unit: "x".into(), ticks: 3 },
        ] {
            assert_eq!(render_gauge(&g, &opts, &mut rng(0)).dimensions(), (32, 32));
        }
    }

    #[test]
    fn font_draws_digits_with_their_own_ink() {
        let ink = |text: &str| {
            let mut img = RgbImage::from_pixel(20, 10, Rgb(BACKGROUND));
            draw_text(&mut img, text, (1, 1), 1, Rgb(INK));
            img.pixels().filter(|p| p.0 == INK).count()
        };
        assert!(ink("8") > ink("1") && ink("1") > 0);
        let digits: Vec<[u8; 5]> = ('0'..='9').map(|c| glyph(c).expect("every digit has a glyph")).collect();
        for i in 0..digits.len() {
            assert!(digits[i + 1..].iter().all(|g| *g != digits[i]), "digit {i} is ambiguous");
        }
        assert_eq!(ink("-1.5"), ink("-") + ink("1") + ink(".") + ink("5"));
        assert_eq!(ink("?"), 0);
        assert_eq!(text_size("240", 2), (22, 10));
        let mut img = RgbImage::new(4, 4);
        draw_text(&mut img, "88", (-3, 2), 3, Rgb(INK));
    }

    #[test]
    fn marker_ink_is_no_object_colour() {
        for color in Color::ALL {
            assert_ne!(color.rgb(), INK, "{color:?}");
        }
        assert_ne!(BACKGROUND, INK);
    }

    #[test]
    fn markers_surround_the_object_and_leave_it_visible() {
        for (x, y) in [(0.2, 0.2), (0.5, 0.5), (0.85, 0.6)] {
            let scene = single(Shape::Triangle, Color::Green, Size::Medium, x, y);
            let object = &scene.objects[0];
            let plain = render_scene(&scene, &RenderOptions::default(), &mut rng(0));
            for kind in MarkerKind::ALL {
                let mut img = plain.clone();
                draw_marker(&mut img, object, kind);
                let inked = img.pixels().filter(|p| p.0 == INK).count();
                assert!(inked > 10, "{kind:?} at ({x}, {y}) drew {inked} pixels");
                let covered = plain.pixels().zip(img.pixels()).filter(|(a, b)| a.0 == object.color.rgb() && a != b);
                assert_eq!(covered.count(), 0, "{kind:?} hides part of the object");
                assert_eq!(at(&img, object), object.color.rgb());
            }
        }
    }
}
