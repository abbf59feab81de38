//! From text to batches: corpus directories and text import, token shards on disk, the
//! resumable window sampler, and the validation-split rule every data source uses.

pub mod corpus;
pub mod multimodal;
pub mod sampler;
pub mod shards;
pub mod split;
