//! Scene graphs and their English descriptions. The types live in `gptlab-vision`, which renders
//! the same scenes to pixels; they are re-exported here where the text corpus uses them.

pub use gptlab_vision::scene::*;
