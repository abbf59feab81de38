//! The CLIP run: contrastive training on image-caption pairs ([`train`]), the pair data it reads
//! ([`data`]: the synthetic world, captions JSONL, COCO) and its evaluation ([`eval`]: zero-shot
//! accuracy, retrieval, embeddings). The towers themselves live in `gptlab-vision`.

pub mod data;
pub mod eval;
pub mod train;

pub use train::{bench_loader, train, ClipDataSpec, ClipModelSpec, ClipTrainConfig, PairSourceKind};
