//! Inference with a trained GPT: batched generation with a KV cache ([`generate`]) and
//! log-likelihood scoring ([`score`]), the primitives evaluation and RLHF build on.

pub mod generate;
pub mod score;
