//! `CandleEmbedder`: BERT-family sentence embeddings (weights read with candle, the encoder's
//! forward pass on this crate's kernels, then the sentence-transformers pooling).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::Config as BertConfig;
use rakis_core::{BinaryEmbedding, EmbedError, Embedder};
use serde::{Deserialize, Serialize};
use tokenizers::{Tokenizer, TruncationParams};
use tracing::{debug, info};

use crate::bert::BertEncoder;
use crate::{InferenceError, ModelSource};
use rakis_core::error::SharedError;

/// How token vectors become one sentence vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Pooling {
    /// Mean over the text's tokens.
    Mean,
    /// The first (`[CLS]`) token.
    Cls,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
}

/// Settings of a [`CandleEmbedder`] (serde; only `model_name` is required in a file).
///
/// ```
/// let c: rakis_inference::EmbedderConfig =
///     toml::from_str(r#"model_name = "all-MiniLM-L6-v2""#).unwrap();
/// assert_eq!(c, rakis_inference::EmbedderConfig::new("all-MiniLM-L6-v2"));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedderConfig {
    /// The model's name as written in security frames.
    pub model_name: String,
    /// Texts per forward pass.
    #[serde(default = "EmbedderConfig::default_batch_size")]
    pub batch_size: usize,
    /// Override of the pooling read from `1_Pooling/config.json`.
    #[serde(default)]
    pub pooling: Option<Pooling>,
    /// Override of the maximum sequence length (default: `sentence_bert_config.json`, else the
    /// model's position limit).
    #[serde(default)]
    pub max_seq_length: Option<usize>,
    /// Dimensions whose final LayerNorm weight is below this fraction of the median are dead
    /// (their value is noise) and forced to 0 in binary embeddings.
    #[serde(default = "EmbedderConfig::default_dead_dim_ratio")]
    pub dead_dim_ratio: f32,
}

impl EmbedderConfig {
    /// Defaults for a model name: batches of 32, pooling and length from the model's files.
    pub fn new(model_name: impl Into<String>) -> Self {
        EmbedderConfig {
            model_name: model_name.into(),
            batch_size: Self::default_batch_size(),
            pooling: None,
            max_seq_length: None,
            dead_dim_ratio: Self::default_dead_dim_ratio(),
        }
    }

    fn default_batch_size() -> usize {
        32
    }

    fn default_dead_dim_ratio() -> f32 {
        1e-6
    }
}

struct Inner {
    encoder: BertEncoder,
    tokenizer: Tokenizer,
    pooling: Pooling,
    normalize: bool,
    dead_dims: Vec<usize>,
    dim: usize,
    batch_size: usize,
}

/// The default [`Embedder`]: a BERT-family sentence model (all-MiniLM-L6-v2 by default) from
/// safetensors, on the CPU. Cheap to clone.
///
/// Texts are tokenized, laid end to end in batches of [`EmbedderConfig::batch_size`] (no
/// padding), encoded, pooled and normalized as sentence-transformers does. A text's embedding
/// does not depend on the texts beside it, nor on the CPU's vector width (AVX2 or not).
#[derive(Clone)]
pub struct CandleEmbedder {
    name: String,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CandleEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CandleEmbedder")
            .field("model", &self.name)
            .field("dim", &self.inner.dim)
            .field("pooling", &self.inner.pooling)
            .field("dead_dims", &self.inner.dead_dims)
            .finish()
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, InferenceError> {
    let bytes = std::fs::read(path).map_err(|e| InferenceError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| InferenceError::Config {
        file: path.display().to_string(),
        source: SharedError::new(e),
    })
}

/// Finds dead dimensions: those whose final LayerNorm weight is tiny relative to the median.
fn dead_dimensions(
    tensors: &std::collections::HashMap<String, Tensor>,
    layers: usize,
    ratio: f32,
) -> Result<Vec<usize>, InferenceError> {
    let suffixes = [
        format!("encoder.layer.{}.output.LayerNorm.weight", layers - 1),
        format!("encoder.layer.{}.output.LayerNorm.gamma", layers - 1),
    ];
    if layers == 0 {
        return Ok(Vec::new());
    }
    let Some(w) = tensors
        .iter()
        .find(|(k, _)| suffixes.iter().any(|s| k.ends_with(s.as_str())))
        .map(|(_, t)| t)
    else {
        return Ok(Vec::new());
    };
    let w: Vec<f32> = w.to_dtype(DType::F32)?.to_vec1()?;
    let mut abs: Vec<f32> = w.iter().map(|x| x.abs()).collect();
    abs.sort_by(f32::total_cmp);
    let Some(&median) = abs.get(abs.len() / 2) else {
        return Ok(Vec::new());
    };
    Ok(w.iter()
        .enumerate()
        .filter(|(_, x)| x.abs() < ratio * median)
        .map(|(i, _)| i)
        .collect())
}

impl CandleEmbedder {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `source`, plus the
    /// sentence-transformers files when present (`1_Pooling/config.json`,
    /// `sentence_bert_config.json`, `modules.json`).
    pub fn load(source: &ModelSource, config: EmbedderConfig) -> Result<Self, InferenceError> {
        let cfg_path = source.file("config.json")?;
        let bert_cfg: BertConfig = read_json(&cfg_path)?;
        let mut tokenizer = Tokenizer::from_file(source.file("tokenizer.json")?)
            .map_err(InferenceError::tokenizers)?;
        let weights = source.file("model.safetensors")?;
        let pooling = match config.pooling {
            Some(p) => p,
            None => match source.optional_file("1_Pooling/config.json")? {
                Some(p) => {
                    let pc: PoolingConfig = read_json(&p)?;
                    if pc.pooling_mode_cls_token && !pc.pooling_mode_mean_tokens {
                        Pooling::Cls
                    } else {
                        Pooling::Mean
                    }
                }
                None => Pooling::Mean,
            },
        };
        let normalize = match source.optional_file("modules.json")? {
            Some(p) => {
                let modules: Vec<ModuleEntry> = read_json(&p)?;
                modules.iter().any(|m| m.kind.ends_with("Normalize"))
            }
            None => true,
        };
        let max_len = match config.max_seq_length {
            Some(m) => m,
            None => match source.optional_file("sentence_bert_config.json")? {
                Some(p) => read_json::<SentenceBertConfig>(&p)?
                    .max_seq_length
                    .unwrap_or(bert_cfg.max_position_embeddings),
                None => bert_cfg.max_position_embeddings,
            },
        }
        .min(bert_cfg.max_position_embeddings);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(InferenceError::tokenizers)?;
        // No padding: the encoder lays a batch's texts end to end.
        tokenizer.with_padding(None);

        let tensors = candle_core::safetensors::load(&weights, &Device::Cpu)?;
        let dead_dims =
            dead_dimensions(&tensors, bert_cfg.num_hidden_layers, config.dead_dim_ratio)?;
        let encoder = BertEncoder::load(&tensors, &bert_cfg)?;
        info!(
            model = %config.model_name,
            dim = bert_cfg.hidden_size,
            ?pooling,
            normalize,
            max_len,
            ?dead_dims,
            "embedding model loaded"
        );
        Ok(CandleEmbedder {
            name: config.model_name,
            inner: Arc::new(Inner {
                encoder,
                tokenizer,
                pooling,
                normalize,
                dead_dims,
                dim: bert_cfg.hidden_size,
                batch_size: config.batch_size.max(1),
            }),
        })
    }

    /// Dimensions found dead at load (forced to 0 in binary embeddings).
    pub fn dead_dims(&self) -> &[usize] {
        &self.inner.dead_dims
    }

    /// The pooling in use.
    pub fn pooling(&self) -> Pooling {
        self.inner.pooling
    }

    /// Token ids of one text as the model sees them (special tokens included, truncated).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, InferenceError> {
        Ok(self
            .inner
            .tokenizer
            .encode(text, true)
            .map_err(InferenceError::tokenizers)?
            .get_ids()
            .to_vec())
    }

    /// Float embeddings on the calling thread, in batches of
    /// [`EmbedderConfig::batch_size`] texts. A text's embedding is the same bits alone or in
    /// any batch (the encoder computes each text's rows independently of the others').
    pub fn embed_sync(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, InferenceError> {
        let inner = &self.inner;
        let enc = inner
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(InferenceError::tokenizers)?;
        let mut out = Vec::with_capacity(texts.len());
        for chunk in enc.chunks(inner.batch_size) {
            let ids: Vec<&[u32]> = chunk.iter().map(|e| e.get_ids()).collect();
            let hidden = inner.encoder.forward(&ids)?;
            let mut rows = hidden.chunks_exact(inner.dim);
            for text in &ids {
                let mut rows = rows.by_ref().take(text.len());
                let mut pooled = vec![0f32; inner.dim];
                match inner.pooling {
                    Pooling::Cls => {
                        if let Some(first) = rows.next() {
                            pooled.copy_from_slice(first);
                        }
                        rows.for_each(drop);
                    }
                    Pooling::Mean => {
                        for row in rows {
                            for (p, v) in pooled.iter_mut().zip(row) {
                                *p += v;
                            }
                        }
                        let count = text.len().max(1) as f32;
                        pooled.iter_mut().for_each(|p| *p /= count);
                    }
                }
                if inner.normalize {
                    // As sentence-transformers' `Normalize`: `v / max(|v|, 1e-12)`.
                    let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                    pooled.iter_mut().for_each(|p| *p /= norm);
                }
                out.push(pooled);
            }
        }
        debug!(texts = texts.len(), "embedded");
        Ok(out)
    }

    /// Binary embeddings on the calling thread, dead dimensions masked.
    pub fn embed_binary_sync(&self, texts: &[String]) -> Result<Vec<BinaryEmbedding>, EmbedError> {
        self.embed_sync(texts)?
            .iter()
            .map(|v| {
                let mut b = BinaryEmbedding::quantize(v)?;
                b.mask_dims(&self.inner.dead_dims)?;
                Ok(b)
            })
            .collect()
    }
}

#[async_trait]
impl Embedder for CandleEmbedder {
    fn model(&self) -> String {
        self.name.clone()
    }

    fn dim(&self) -> u32 {
        self.inner.dim as u32
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Err(EmbedError::Empty);
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.embed_sync(&texts).map_err(EmbedError::from))
            .await
            .map_err(|e| EmbedError::Other(SharedError::new(e)))?
    }

    async fn embed_binary(&self, texts: Vec<String>) -> Result<Vec<BinaryEmbedding>, EmbedError> {
        if texts.is_empty() {
            return Err(EmbedError::Empty);
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.embed_binary_sync(&texts))
            .await
            .map_err(|e| EmbedError::Other(SharedError::new(e)))?
    }
}
