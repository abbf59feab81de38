//! Special tokens shared by the tokenizer, the corpus generators and later the chat/RLHF and
//! multimodal code. They get ids 0..n in every tokenizer gptlab trains, in this order.

/// End of a document; also the generation stop token.
pub const EOT: &str = "<|endoftext|>";
/// Padding, distinct from EOT so that masks never hide a real end of text (InstructGPT pitfall).
pub const PAD: &str = "<|pad|>";
/// Placeholder that the multimodal model replaces with projected image-patch embeddings.
pub const IMAGE: &str = "<image>";
/// Chat-role markers for instruction data and RLHF.
pub const SYSTEM: &str = "<|system|>";
pub const USER: &str = "<|user|>";
pub const ASSISTANT: &str = "<|assistant|>";

/// GPT-1's fine-tuning tokens, added to a pretrained model's tokenizer (with fresh embedding
/// rows) by `gptlab finetune`: they open a sequence, separate its parts, and mark the position
/// the task head reads.
pub const START: &str = "<|start|>";
pub const DELIM: &str = "<|delim|>";
pub const EXTRACT: &str = "<|extract|>";

/// All special tokens in id order.
pub const ALL: [&str; 6] = [EOT, PAD, IMAGE, SYSTEM, USER, ASSISTANT];
