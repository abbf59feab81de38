//! gptlab-vision: everything on the CLIP side, images in and embeddings out. The scene graph
//! lives here because both the renderer (pixels) and gptlab's text corpus (descriptions) use it.

pub mod clip;
pub mod hf_clip;
pub mod render;
pub mod scene;
pub mod transform;
pub mod world;

/// The image crate gptlab-vision works with, for callers that handle its images.
pub use image;
