//! gptlab-vision: pixels and image models. The synthetic image world, image I/O and
//! transforms, and the ViT/CLIP towers; it never trains and never reads foreign checkpoint
//! formats (training, evaluation, HF interop and the CLI live in the `gptlab` crate). The scene
//! graph lives here because both the renderer (pixels) and gptlab's text corpus use it.

pub mod clip;
pub mod render;
pub mod scene;
pub mod transform;
pub mod world;

/// The image crate gptlab-vision works with, for callers that handle its images.
pub use image;
