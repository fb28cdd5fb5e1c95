//! # rakis-inference
//!
//! The inference layer of Rakis: the default [`InferenceEngine`](rakis_core::InferenceEngine)
//! (candle, quantized GGUF llama-family models) and [`Embedder`](rakis_core::Embedder)
//! (candle BERT-family sentence models). **Not implemented yet** (tracked in issue 4); until
//! then use the test parts of `rakis-core` (`test-utils` feature).
