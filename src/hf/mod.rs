//! Hugging Face interop, one file per model family: `save_pretrained` directories in and out.
//! gptlab stores HF's own tensor names and layouts, so the work is the config mapping, HF's
//! buffers and prefixes, and tied heads.

pub mod clip;
pub mod gpt2;

pub use clip::import_clip;
pub use gpt2::{export_gpt2, import_gpt2};
