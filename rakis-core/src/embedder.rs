//! The [`Embedder`] part: embeds texts with a sentence model, for commitments and
//! re-embedding checks.
//!
//! Implementations: `rakis_inference::CandleEmbedder` (BERT-family sentence models) and, for
//! tests, [`HashEmbedder`](crate::testing::HashEmbedder) (feature `test-utils`).

use async_trait::async_trait;

use crate::error::SharedError;
use crate::{BinaryEmbedding, ConsensusError};

/// Embeds texts with a sentence model.
///
/// Implemented for `&T`, `Arc<T>` and `Box<T>` of any embedder.
#[async_trait]
#[auto_impl::auto_impl(&, Box, Arc)]
pub trait Embedder: Send + Sync {
    /// The model's name, as written in security frames.
    fn model(&self) -> String;
    /// Embedding dimension.
    fn dim(&self) -> u32;
    /// Float embeddings, one per text.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// Binary embeddings, one per text. The default quantizes [`Embedder::embed`]; models with
    /// dead dimensions override it to mask them.
    async fn embed_binary(&self, texts: Vec<String>) -> Result<Vec<BinaryEmbedding>, EmbedError> {
        self.embed(texts)
            .await?
            .iter()
            .map(|v| BinaryEmbedding::quantize(v).map_err(EmbedError::from))
            .collect()
    }
}

/// Errors of an [`Embedder`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// Empty input.
    #[error("nothing to embed")]
    Empty,
    /// The model produced an unusable vector.
    #[error("embedding: {0}")]
    Consensus(#[from] ConsensusError),
    /// Any other failure of the embedder (its own error as the source).
    #[error("embedder: {0}")]
    Other(#[source] SharedError),
}
