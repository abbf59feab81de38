//! The multimodal GPT at work: training its two stages on image-text records, answering and
//! scoring with it, and evaluating it on the synthetic world. The model itself is
//! [`crate::models::vlm`].

pub mod data;
pub mod eval;
pub mod infer;
pub mod train;

pub use train::{train, Stage, VlmTrainConfig};
