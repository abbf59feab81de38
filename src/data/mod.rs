//! From corpus to batches: token shards on disk and the resumable window sampler.

pub mod sampler;
pub mod shards;
