//! Images in: decoding (PNG, JPEG, WebP; 8/16-bit grey, RGB, RGBA) with a size limit, CLIP's
//! resize-shorter-side + centre-crop, the random resized crop of training, and conversion to a
//! normalised [3, H, W] tensor. Horizontal flips are left out on purpose: captions say left and
//! right.

use std::path::Path;

use anyhow::{anyhow, ensure, Context, Result};
use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageReader, Limits, RgbImage};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// OpenAI CLIP's normalisation, the default for every checkpoint that does not say otherwise.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_5, 0.261_302_6, 0.275_777_1];

/// Largest width or height accepted: larger files are refused before their pixels are decoded.
pub const MAX_SIDE: u32 = 8192;

/// How images become model input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Output side in pixels (the model's image_size).
    pub size: u32,
    #[serde(default = "clip_mean")]
    pub mean: [f32; 3],
    #[serde(default = "clip_std")]
    pub std: [f32; 3],
}

pub(crate) fn clip_mean() -> [f32; 3] {
    CLIP_MEAN
}

pub(crate) fn clip_std() -> [f32; 3] {
    CLIP_STD
}

impl Preprocess {
    pub fn clip(size: u32) -> Self {
        Self { size, mean: CLIP_MEAN, std: CLIP_STD }
    }

    /// Evaluation path: resize the shorter side, centre-crop, normalise.
    pub fn eval(&self, img: &DynamicImage) -> Tensor {
        self.to_tensor(&resize_center_crop(img, self.size))
    }

    /// Training path: a random resized crop, with `hflip` a horizontal flip half the time, then
    /// normalise.
    pub fn train(&self, img: &DynamicImage, hflip: bool, rng: &mut impl Rng) -> Tensor {
        let mut crop = random_resized_crop(img, self.size, (0.6, 1.0), (3.0 / 4.0, 4.0 / 3.0), rng);
        if hflip && rng.random_bool(0.5) {
            imageops::flip_horizontal_in_place(&mut crop);
        }
        self.to_tensor(&crop)
    }

    /// [3, H, W] float: (pixel / 255 - mean) / std per channel.
    pub fn to_tensor(&self, img: &RgbImage) -> Tensor {
        let (w, h) = img.dimensions();
        let mut data = vec![0f32; 3 * (w * h) as usize];
        let plane = (w * h) as usize;
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                data[c * plane + i] = (p[c] as f32 / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        Tensor::from_slice(&data).view([3, h as i64, w as i64])
    }
}

/// Decodes an image file, refusing empty files, unknown formats, truncated data and images over
/// [`MAX_SIDE`] with an error that names the file.
pub fn load_image(path: &Path) -> Result<DynamicImage> {
    let mut reader = ImageReader::open(path)
        .with_context(|| format!("cannot open image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match (&e, image::image_dimensions(path)) {
        (image::ImageError::Limits(_), Ok((w, h))) => {
            anyhow!("image {} is {w}x{h} pixels, over the limit of {MAX_SIDE} pixels a side", path.display())
        }
        _ => anyhow!("cannot decode image {}: {e}", path.display()),
    })?;
    ensure!(img.width() > 0 && img.height() > 0, "image {} is empty", path.display());
    Ok(img)
}

/// Scales the shorter side to `size` (bicubic, as CLIP) and crops the centre `size` × `size`.
pub fn resize_center_crop(img: &DynamicImage, size: u32) -> RgbImage {
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    let scale = size as f64 / w.min(h) as f64;
    let (nw, nh) = (((w as f64 * scale).round() as u32).max(size), ((h as f64 * scale).round() as u32).max(size));
    let resized = if (nw, nh) == (w, h) { rgb } else { imageops::resize(&rgb, nw, nh, FilterType::CatmullRom) };
    imageops::crop_imm(&resized, (nw - size) / 2, (nh - size) / 2, size, size).to_image()
}

/// torchvision's RandomResizedCrop: a crop covering a random fraction `scale` of the area with a
/// random aspect ratio in `ratio` (log-uniform), resized to `size`; falls back to the centre crop
/// when ten draws do not fit.
pub fn random_resized_crop(
    img: &DynamicImage,
    size: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut impl Rng,
) -> RgbImage {
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    let area = (w * h) as f64;
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..=scale.1);
        let aspect = rng.random_range(ratio.0.ln()..=ratio.1.ln()).exp();
        let cw = (target * aspect).sqrt().round() as u32;
        let ch = (target / aspect).sqrt().round() as u32;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let x = rng.random_range(0..=w - cw);
            let y = rng.random_range(0..=h - ch);
            let crop = imageops::crop_imm(&rgb, x, y, cw, ch).to_image();
            return imageops::resize(&crop, size, size, FilterType::CatmullRom);
        }
    }
    resize_center_crop(&DynamicImage::ImageRgb8(rgb), size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgb, Rgba};
    use rand::SeedableRng;

    #[test]
    fn normalisation_values_on_a_known_image() {
        let img = RgbImage::from_fn(2, 1, |x, _| if x == 0 { Rgb([255, 0, 128]) } else { Rgb([0, 255, 51]) });
        let t = Preprocess::clip(2).to_tensor(&img);
        assert_eq!(t.size(), [3, 1, 2]);
        let v = |c: i64, x: i64| t.double_value(&[c, 0, x]) as f32;
        let expect = |p: f32, c: usize| (p / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        assert!((v(0, 0) - expect(255.0, 0)).abs() < 1e-6);
        assert!((v(1, 0) - expect(0.0, 1)).abs() < 1e-6);
        assert!((v(2, 0) - expect(128.0, 2)).abs() < 1e-6);
        assert!((v(2, 1) - expect(51.0, 2)).abs() < 1e-6);
    }

    #[test]
    fn centre_crop_keeps_the_middle_of_the_longer_side() {
        // 4 × 2, shorter side already 2: no resampling, columns 1 and 2 remain.
        let img = RgbImage::from_fn(4, 2, |x, _| Rgb([x as u8 * 10, 0, 0]));
        let out = resize_center_crop(&DynamicImage::ImageRgb8(img), 2);
        assert_eq!(out.dimensions(), (2, 2));
        assert_eq!(out.get_pixel(0, 0)[0], 10);
        assert_eq!(out.get_pixel(1, 1)[0], 20);
        // Larger images are scaled so the shorter side fits.
        let big = DynamicImage::ImageRgb8(RgbImage::new(100, 50));
        assert_eq!(resize_center_crop(&big, 32).dimensions(), (32, 32));
    }

    #[test]
    fn grey_16_bit_and_rgba_images_become_rgb() {
        let grey: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_pixel(3, 3, Luma([65535]));
        let out = resize_center_crop(&DynamicImage::ImageLuma16(grey), 3);
        assert_eq!(out.get_pixel(1, 1), &Rgb([255, 255, 255]));
        let rgba: ImageBuffer<Rgba<u8>, Vec<u8>> = ImageBuffer::from_pixel(3, 3, Rgba([10, 20, 30, 0]));
        assert_eq!(resize_center_crop(&DynamicImage::ImageRgba8(rgba), 3).get_pixel(0, 0), &Rgb([10, 20, 30]));
    }

    #[test]
    fn random_resized_crop_is_seeded_and_sized() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(50, 40, |x, y| Rgb([x as u8, y as u8, 0])));
        let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut b = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let ca = random_resized_crop(&img, 16, (0.5, 1.0), (0.75, 1.333), &mut a);
        assert_eq!(ca.dimensions(), (16, 16));
        assert_eq!(ca, random_resized_crop(&img, 16, (0.5, 1.0), (0.75, 1.333), &mut b));
    }

    #[test]
    fn bad_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.png");
        std::fs::write(&text, "not an image").unwrap();
        assert!(load_image(&text).unwrap_err().to_string().contains("notes.png"));
        let png = dir.path().join("cut.png");
        RgbImage::new(16, 16).save(&png).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        std::fs::write(&png, &bytes[..bytes.len() / 2]).unwrap();
        assert!(load_image(&png).unwrap_err().to_string().contains("cannot decode image"));
        let empty = dir.path().join("empty.jpg");
        std::fs::write(&empty, b"").unwrap();
        assert!(load_image(&empty).is_err());
        assert!(load_image(&dir.path().join("missing.png")).unwrap_err().to_string().contains("cannot open"));
        let ok = dir.path().join("ok.png");
        RgbImage::from_pixel(5, 7, Rgb([1, 2, 3])).save(&ok).unwrap();
        assert_eq!(load_image(&ok).unwrap().to_rgb8().dimensions(), (5, 7));
    }

    #[test]
    fn every_format_and_depth_decodes_to_the_same_rgb() {
        use image::{GrayImage, ImageBuffer, Luma, LumaA, Rgba};
        let dir = tempfile::tempdir().unwrap();
        let rgb = RgbImage::from_pixel(6, 4, Rgb([200, 100, 50]));
        let rgba = image::RgbaImage::from_pixel(6, 4, Rgba([200, 100, 50, 255]));
        let rgb16: ImageBuffer<Rgb<u16>, Vec<u16>> =
            ImageBuffer::from_pixel(6, 4, Rgb([200 * 257, 100 * 257, 50 * 257]));
        let rgba16: ImageBuffer<Rgba<u16>, Vec<u16>> =
            ImageBuffer::from_pixel(6, 4, Rgba([200 * 257, 100 * 257, 50 * 257, 65535]));
        let files = [
            ("rgb.png", DynamicImage::ImageRgb8(rgb.clone())),
            ("rgba.png", DynamicImage::ImageRgba8(rgba.clone())),
            ("rgb16.png", DynamicImage::ImageRgb16(rgb16)),
            ("rgba16.png", DynamicImage::ImageRgba16(rgba16)),
            ("rgb.jpg", DynamicImage::ImageRgb8(rgb)),
            ("rgba.webp", DynamicImage::ImageRgba8(rgba)),
        ];
        for (name, img) in files {
            let path = dir.path().join(name);
            img.save(&path).unwrap();
            let back = load_image(&path).unwrap().to_rgb8();
            assert_eq!(back.dimensions(), (6, 4), "{name}");
            let tolerance = if name.ends_with(".jpg") { 6 } else { 0 };
            for (got, want) in back.get_pixel(2, 2).0.iter().zip([200u8, 100, 50]) {
                assert!(got.abs_diff(want) <= tolerance, "{name}: {:?}", back.get_pixel(2, 2));
            }
        }
        let greys = [
            ("grey.png", DynamicImage::ImageLuma8(GrayImage::from_pixel(3, 3, Luma([90])))),
            ("grey16.png", DynamicImage::ImageLuma16(ImageBuffer::from_pixel(3, 3, Luma([90 * 257])))),
            ("greya.png", DynamicImage::ImageLumaA8(ImageBuffer::from_pixel(3, 3, LumaA([90, 255])))),
            ("grey.jpg", DynamicImage::ImageLuma8(GrayImage::from_pixel(3, 3, Luma([90])))),
        ];
        for (name, img) in greys {
            let path = dir.path().join(name);
            img.save(&path).unwrap();
            let back = load_image(&path).unwrap().to_rgb8();
            assert!(back.get_pixel(1, 1).0.iter().all(|v| v.abs_diff(90) <= 2), "{name}: {:?}", back.get_pixel(1, 1));
        }
    }

    #[test]
    fn horizontal_flips_happen_only_when_asked_and_then_half_the_time() {
        let mut img = RgbImage::from_pixel(16, 16, Rgb([255, 0, 0]));
        (8..16).for_each(|x| (0..16).for_each(|y| img.put_pixel(x, y, Rgb([0, 0, 255]))));
        let img = DynamicImage::ImageRgb8(img);
        let pre = Preprocess::clip(8);
        let left_is_red = |t: &Tensor| t.double_value(&[0, 4, 0]) > t.double_value(&[2, 4, 0]);
        let flipped = |hflip: bool| {
            (0..40)
                .filter(|&s| !left_is_red(&pre.train(&img, hflip, &mut rand_chacha::ChaCha8Rng::seed_from_u64(s))))
                .count()
        };
        assert_eq!(flipped(false), 0, "no flip unless asked");
        let n = flipped(true);
        assert!((10..=30).contains(&n), "{n} of 40 flipped");
    }

    #[test]
    fn zero_sized_images_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        // A PNG header that declares a 0 x 0 image.
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend([0, 0, 0, 0, 0, 0, 0, 0, 8, 2, 0, 0, 0, 0, 0, 0, 0]);
        let path = dir.path().join("zero.png");
        std::fs::write(&path, png).unwrap();
        assert!(load_image(&path).unwrap_err().to_string().contains("zero.png"));
    }

    #[test]
    fn oversized_images_are_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("wide.png");
        image::GrayImage::new(MAX_SIDE + 1, 1).save(&big).unwrap();
        assert!(load_image(&big).unwrap_err().to_string().contains("wide.png"));
    }
}
