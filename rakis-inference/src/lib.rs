//! # rakis-inference
//!
//! The inference layer of Rakis: the default [`InferenceEngine`](rakis_core::InferenceEngine)
//! ([`CandleEngine`], quantized GGUF llama-family models) and [`Embedder`](rakis_core::Embedder)
//! ([`CandleEmbedder`], BERT-family sentence models), on the CPU with candle (`cuda` / `metal`
//! features for the language model on accelerators; the embedder runs on the CPU).
//!
//! ```no_run
//! use rakis_inference::{CandleEmbedder, CandleEngine, EmbedderConfig, EngineConfig, ModelSource};
//!
//! # fn main() -> Result<(), rakis_inference::InferenceError> {
//! // From the Hugging Face hub (cached; HF_HUB_OFFLINE=1 uses the cache only) ...
//! let embedder = CandleEmbedder::load(
//!     &ModelSource::hub("sentence-transformers/all-MiniLM-L6-v2"),
//!     EmbedderConfig::new("sentence-transformers/all-MiniLM-L6-v2"),
//! )?;
//! // ... or from a local folder or file.
//! let engine = CandleEngine::load(
//!     &ModelSource::local("models/SmolLM2-135M-Instruct"),
//!     "SmolLM2-135M-Instruct.Q4_1.gguf",
//!     EngineConfig::new("smollm2-135m-instruct"),
//! )?;
//! // Then: Node::builder().engine(engine).embedder(embedder)...
//! # Ok(()) }
//! ```
//!
//! One GGUF file is enough to run a model: the tokenizer is rebuilt from the GGUF vocabulary
//! ([`tokenizer::tokenizer_from_gguf`]) and the chat template read from its metadata and rendered
//! with minijinja ([`chat::ChatTemplate`]; ChatML is the fallback when a model has none).
//!
//! On the CPU, Q4_1 and Q8_0 weights are multiplied by this crate's own kernels (AVX2 when the
//! CPU has it, a portable twin with the same bits otherwise), whose rows never depend on the
//! rows computed beside them: a prompt read in one pass gives decoding's logits bit for bit
//! ([`llama::LlamaModel::forward_rows`]), and a worker decodes the answers waiting for it
//! together ([`EngineConfig::batch`], [`llama::LlamaModel::forward_batch`]) without changing
//! any of them.
//!
//! The embedder's BERT encoder is this crate's own forward pass over candle-loaded weights: f32
//! products in register tiles (AVX2 + FMA, or a portable twin with the same bits), GELU and the
//! residuals applied as the tiles finish, attention per text over its own rows. A batch's texts
//! are laid end to end without padding, so a text embeds to the same bits alone or in any batch.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rustdoc::broken_intra_doc_links
)]

mod bert;
pub mod chat;
mod dense;
pub mod embedder;
pub mod engine;
pub mod error;
pub mod llama;
mod pool;
mod qmatmul;
pub mod source;
pub mod tokenizer;

pub use embedder::{CandleEmbedder, EmbedderConfig, Pooling};
pub use engine::{
    BatchPrompt, CandleEngine, EngineConfig, GenerationOutput, SamplingParams, TextGenerator,
    Timings, WeightFormat,
};
pub use error::InferenceError;
pub use source::{hub_offline, ModelSource};

/// Name of the default embedding model (the one in the default security frame).
pub const MINILM: &str = rakis_core::consensus::DEFAULT_EMBEDDING_MODEL;
