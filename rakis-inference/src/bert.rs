//! A BERT encoder on the CPU with this crate's kernels ([`crate::dense`]): the forward pass of
//! [`CandleEmbedder`](crate::CandleEmbedder).
//!
//! The texts of a batch are not padded: their token rows are laid end to end, the products run
//! on all of them at once, and attention runs for each text (and head) over its own rows. So no
//! work is spent on padding, and — every output of a product being one fixed chain of
//! operations — a text's hidden states are the same bits alone or in any batch.
//!
//! Per layer: one product for queries, keys and values together (their weights stacked),
//! attention, the output product with the residual added as its tiles finish, layer norm, the
//! intermediate product with GELU applied as its tiles finish, the output product with the
//! residual, layer norm. Buffers are allocated once a batch and reused by every layer.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use candle_transformers::models::bert::{Config as BertConfig, HiddenAct};

use crate::dense::{self, sum_lanes, Epilogue, Kernel, Linear, Packed};
use crate::InferenceError;

/// A layer norm's scale and shift.
#[derive(Clone, Debug)]
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// One encoder layer's weights.
#[derive(Clone, Debug)]
struct Layer {
    /// Queries, keys and values stacked: `(3 · hidden, hidden)`.
    qkv: Linear,
    /// Attention output: `(hidden, hidden)`.
    out: Linear,
    out_norm: Norm,
    /// Intermediate: `(intermediate, hidden)`.
    up: Linear,
    /// Output: `(hidden, intermediate)`.
    down: Linear,
    down_norm: Norm,
}

/// A BERT encoder's weights (f32), ready for [`BertEncoder::forward`].
#[derive(Clone)]
pub(crate) struct BertEncoder {
    kernel: Kernel,
    hidden: usize,
    heads: usize,
    eps: f32,
    act: Epilogue<'static>,
    vocab: usize,
    max_positions: usize,
    /// `(vocab, hidden)`.
    word: Vec<f32>,
    /// `(max_positions, hidden)`.
    position: Vec<f32>,
    /// Token type 0's row (every text is one segment).
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
}

impl std::fmt::Debug for BertEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEncoder")
            .field("kernel", &self.kernel)
            .field("hidden", &self.hidden)
            .field("heads", &self.heads)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

/// The tensors of one model file by name, read as f32 vectors of checked shapes.
struct Tensors<'a> {
    map: &'a HashMap<String, Tensor>,
    prefix: String,
}

impl Tensors<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, InferenceError> {
        let full = format!("{}{name}", self.prefix);
        let t = self
            .map
            .get(&full)
            .ok_or_else(|| InferenceError::Weights(format!("no tensor {full}")))?;
        if t.dims() != shape {
            return Err(InferenceError::Weights(format!(
                "{full} is {:?}, expected {shape:?}",
                t.dims()
            )));
        }
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
    }

    /// A layer norm under `name` (`weight`/`bias`, or the older `gamma`/`beta`).
    fn norm(&self, name: &str, size: usize) -> Result<Norm, InferenceError> {
        let has = |n: &str| self.map.contains_key(&format!("{}{name}.{n}", self.prefix));
        let (w, b) = if !has("weight") && has("gamma") {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(Norm {
            weight: self.get(&format!("{name}.{w}"), &[size])?,
            bias: self.get(&format!("{name}.{b}"), &[size])?,
        })
    }

    fn linear(
        &self,
        name: &str,
        n: usize,
        k: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), InferenceError> {
        Ok((
            self.get(&format!("{name}.weight"), &[n, k])?,
            self.get(&format!("{name}.bias"), &[n])?,
        ))
    }
}

impl BertEncoder {
    /// The encoder of a BERT checkpoint's tensors (names as Hugging Face writes them, with or
    /// without a `bert.` or `{model_type}.` prefix).
    pub(crate) fn load(
        tensors: &HashMap<String, Tensor>,
        cfg: &BertConfig,
    ) -> Result<BertEncoder, InferenceError> {
        let hidden = cfg.hidden_size;
        let heads = cfg.num_attention_heads;
        if heads == 0 || hidden == 0 || !hidden.is_multiple_of(heads) {
            return Err(InferenceError::Weights(format!(
                "hidden size {hidden} is not a multiple of {heads} attention heads"
            )));
        }
        if cfg.type_vocab_size == 0 || cfg.intermediate_size == 0 {
            return Err(InferenceError::Weights(
                "no token types or no intermediate width".into(),
            ));
        }
        // RoBERTa-family models load with the same names but count positions from the padding
        // id: reading them as BERT would embed every text wrongly.
        if let Some(other) = cfg.model_type.as_deref().filter(|t| *t != "bert") {
            return Err(InferenceError::Weights(format!(
                "model type {other:?} (this encoder runs BERT)"
            )));
        }
        let word_name = "embeddings.word_embeddings.weight";
        let prefix = ["".to_string(), "bert.".to_string()]
            .into_iter()
            .chain(cfg.model_type.as_ref().map(|t| format!("{t}.")))
            .find(|p| tensors.contains_key(&format!("{p}{word_name}")))
            .ok_or_else(|| InferenceError::Weights(format!("no tensor {word_name}")))?;
        let t = Tensors {
            map: tensors,
            prefix,
        };
        let inter = cfg.intermediate_size;
        let act = match cfg.hidden_act {
            HiddenAct::Gelu => Epilogue::Gelu,
            HiddenAct::GeluApproximate => Epilogue::GeluTanh,
            HiddenAct::Relu => Epilogue::Relu,
        };
        let token_types = t.get(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab_size, hidden],
        )?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let (qw, qb) = t.linear(&format!("{p}.attention.self.query"), hidden, hidden)?;
            let (kw, kb) = t.linear(&format!("{p}.attention.self.key"), hidden, hidden)?;
            let (vw, vb) = t.linear(&format!("{p}.attention.self.value"), hidden, hidden)?;
            let qkv_w = [qw, kw, vw].concat();
            let qkv_b = [qb, kb, vb].concat();
            let (ow, ob) = t.linear(&format!("{p}.attention.output.dense"), hidden, hidden)?;
            let (uw, ub) = t.linear(&format!("{p}.intermediate.dense"), inter, hidden)?;
            let (dw, db) = t.linear(&format!("{p}.output.dense"), hidden, inter)?;
            layers.push(Layer {
                qkv: Linear::new(&qkv_w, Some(&qkv_b), 3 * hidden, hidden),
                out: Linear::new(&ow, Some(&ob), hidden, hidden),
                out_norm: t.norm(&format!("{p}.attention.output.LayerNorm"), hidden)?,
                up: Linear::new(&uw, Some(&ub), inter, hidden),
                down: Linear::new(&dw, Some(&db), hidden, inter),
                down_norm: t.norm(&format!("{p}.output.LayerNorm"), hidden)?,
            });
        }
        Ok(BertEncoder {
            kernel: Kernel::detect(),
            hidden,
            heads,
            eps: cfg.layer_norm_eps as f32,
            act,
            vocab: cfg.vocab_size,
            max_positions: cfg.max_position_embeddings,
            word: t.get(
                "embeddings.word_embeddings.weight",
                &[cfg.vocab_size, hidden],
            )?,
            position: t.get(
                "embeddings.position_embeddings.weight",
                &[cfg.max_position_embeddings, hidden],
            )?,
            token_type: token_types[..hidden].to_vec(),
            embed_norm: t.norm("embeddings.LayerNorm", hidden)?,
            layers,
        })
    }

    /// The same encoder computing with the portable kernel (tests: same bits as AVX2).
    #[cfg(test)]
    pub(crate) fn portable(mut self) -> BertEncoder {
        self.kernel = Kernel::Portable;
        self
    }

    /// The last layer's hidden states of each text's tokens, texts end to end (`(Σ len,
    /// hidden)`). A text of no tokens has no rows.
    pub(crate) fn forward(&self, texts: &[&[u32]]) -> Result<Vec<f32>, InferenceError> {
        let h = self.hidden;
        for ids in texts {
            if ids.len() > self.max_positions {
                return Err(InferenceError::InvalidText(format!(
                    "a text of {} tokens, over the model's {} positions",
                    ids.len(),
                    self.max_positions
                )));
            }
            if let Some(id) = ids.iter().find(|&&id| id as usize >= self.vocab) {
                return Err(InferenceError::InvalidText(format!(
                    "token id {id} outside the vocabulary of {}",
                    self.vocab
                )));
            }
        }
        let m: usize = texts.iter().map(|t| t.len()).sum();
        let mut x = vec![0f32; m * h];
        let mut row = 0;
        for ids in texts {
            for (pos, &id) in ids.iter().enumerate() {
                let out = &mut x[row * h..][..h];
                let word = &self.word[id as usize * h..][..h];
                let position = &self.position[pos * h..][..h];
                for c in 0..h {
                    out[c] = (word[c] + self.token_type[c]) + position[c];
                }
                row += 1;
            }
        }
        self.layer_norm(&mut x, &self.embed_norm);
        let inter = self.layers.first().map_or(0, |l| l.up.outputs());
        let mut qkv = vec![0f32; m * 3 * h];
        let mut ctx = vec![0f32; m * h];
        let mut mid = vec![0f32; m * h];
        let mut up = vec![0f32; m * inter];
        for layer in &self.layers {
            layer
                .qkv
                .forward(self.kernel, &x, m, Epilogue::None, &mut qkv);
            self.attention(texts, &qkv, &mut ctx);
            layer
                .out
                .forward(self.kernel, &ctx, m, Epilogue::Residual(&x), &mut mid);
            self.layer_norm(&mut mid, &layer.out_norm);
            layer.up.forward(self.kernel, &mid, m, self.act, &mut up);
            layer
                .down
                .forward(self.kernel, &up, m, Epilogue::Residual(&mid), &mut x);
            self.layer_norm(&mut x, &layer.down_norm);
        }
        Ok(x)
    }

    /// Self-attention of every text over its own rows, head by head (one task a text and
    /// head): `ctx` gets each head's output in its columns.
    fn attention(&self, texts: &[&[u32]], qkv: &[f32], ctx: &mut [f32]) {
        let (h, heads) = (self.hidden, self.heads);
        let d = h / heads;
        let mut tasks = Vec::with_capacity(texts.len() * heads);
        let mut row0 = 0;
        for ids in texts {
            for head in 0..heads {
                tasks.push((row0, ids.len(), head, Vec::new()));
            }
            row0 += ids.len();
        }
        let m = row0;
        let parallel = crate::pool::threads() > 1 && tasks.len() > 1 && m * m * h >= 1 << 16;
        let kernel = self.kernel;
        crate::pool::for_each(parallel, &mut tasks, |(row0, len, head, out)| {
            let rows = &qkv[*row0 * 3 * h..][..*len * 3 * h];
            *out = attend(kernel, rows, *len, h, d, *head);
        });
        for (row0, len, head, out) in &tasks {
            for (i, o) in out.chunks_exact(d).enumerate().take(*len) {
                ctx[(row0 + i) * h + head * d..][..d].copy_from_slice(o);
            }
        }
    }

    /// Layer norm of every row, in place.
    fn layer_norm(&self, x: &mut [f32], norm: &Norm) {
        let (h, eps) = (self.hidden, self.eps);
        dense::with_kernel(self.kernel, || {
            for row in x.chunks_exact_mut(h) {
                layer_norm_row(row, norm, eps)
            }
        })
    }
}

/// One head's attention over one text's rows (`rows` is `(len, 3 · hidden)`: queries, keys,
/// values): `softmax(q·kᵀ / √d) · v`, `(len, d)`. Both products run in the tile kernel (the
/// head's keys and values packed as its weights): each score and each output one chain of
/// fused multiply-adds.
fn attend(kernel: Kernel, rows: &[f32], len: usize, h: usize, d: usize, head: usize) -> Vec<f32> {
    if len == 0 {
        return Vec::new();
    }
    let scale = 1.0 / (d as f32).sqrt();
    let keys = Packed::from_rows(&rows[h + head * d..], 3 * h, len, d);
    let mut scores = vec![0f32; len * len];
    keys.product(kernel, &rows[head * d..], 3 * h, len, &mut scores, len);
    dense::with_kernel(kernel, || {
        for row in scores.chunks_exact_mut(len) {
            softmax(row, scale);
        }
    });
    let values = Packed::from_columns(&rows[2 * h + head * d..], 3 * h, d, len);
    let mut out = vec![0f32; len * d];
    values.product(kernel, &scores, len, len, &mut out, d);
    out
}

/// `softmax(scale · x)` in place.
#[inline(always)]
fn softmax(x: &mut [f32], scale: f32) {
    let mut max = f32::NEG_INFINITY;
    for v in x.iter_mut() {
        *v *= scale;
        max = max.max(*v);
    }
    for v in x.iter_mut() {
        *v = dense::exp(*v - max);
    }
    let sum = sum(x);
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// `Σ x` in eight lanes, then [`sum_lanes`].
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (chunks, rest) = x.as_chunks::<8>();
    for c in chunks {
        for l in 0..8 {
            lanes[l] += c[l];
        }
    }
    for (l, v) in rest.iter().enumerate() {
        lanes[l] += v;
    }
    sum_lanes(lanes)
}

/// `(x - mean) / √(var + eps) · weight + bias`, the variance over the row (biased, as
/// PyTorch's).
#[inline(always)]
fn layer_norm_row(row: &mut [f32], norm: &Norm, eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    for v in row.iter_mut() {
        *v -= mean;
    }
    let mut lanes = [0f32; 8];
    let (chunks, rest) = row.as_chunks::<8>();
    for c in chunks {
        for l in 0..8 {
            lanes[l] = c[l].mul_add(c[l], lanes[l]);
        }
    }
    for (l, v) in rest.iter().enumerate() {
        lanes[l] = v.mul_add(*v, lanes[l]);
    }
    let inv = 1.0 / (sum_lanes(lanes) / n + eps).sqrt();
    for ((v, w), b) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
        *v = (*v * inv).mul_add(*w, *b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarBuilder;
    use candle_transformers::models::bert::BertModel;

    fn config(act: &str) -> BertConfig {
        serde_json::from_value(config_json(act)).unwrap()
    }

    fn config_json(act: &str) -> serde_json::Value {
        serde_json::json!({
            "vocab_size": 50,
            "hidden_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 80,
            "hidden_act": act,
            "hidden_dropout_prob": 0.0,
            "max_position_embeddings": 64,
            "type_vocab_size": 2,
            "initializer_range": 0.02,
            "layer_norm_eps": 1e-12,
            "pad_token_id": 0,
            "model_type": "bert"
        })
    }

    /// Random weights of `cfg`'s shapes, named as Hugging Face writes them (`prefix` before
    /// every name; the layer norms of layer 0 in the older `gamma`/`beta` names).
    fn weights(cfg: &BertConfig, prefix: &str) -> HashMap<String, Tensor> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let dev = Device::Cpu;
        let mut map = HashMap::new();
        let mut put = |name: String, shape: &[usize], scale: f64, offset: f64| {
            let t = Tensor::randn(0f32, 1f32, shape, &dev)
                .unwrap()
                .affine(scale, offset)
                .unwrap();
            map.insert(format!("{prefix}{name}"), t);
        };
        put(
            "embeddings.word_embeddings.weight".into(),
            &[cfg.vocab_size, h],
            0.5,
            0.0,
        );
        put(
            "embeddings.position_embeddings.weight".into(),
            &[cfg.max_position_embeddings, h],
            0.5,
            0.0,
        );
        put(
            "embeddings.token_type_embeddings.weight".into(),
            &[cfg.type_vocab_size, h],
            0.5,
            0.0,
        );
        put("embeddings.LayerNorm.weight".into(), &[h], 0.1, 1.0);
        put("embeddings.LayerNorm.bias".into(), &[h], 0.1, 0.0);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let (w, b) = if l == 0 {
                ("gamma", "beta")
            } else {
                ("weight", "bias")
            };
            for (name, n, k) in [
                ("attention.self.query", h, h),
                ("attention.self.key", h, h),
                ("attention.self.value", h, h),
                ("attention.output.dense", h, h),
                ("intermediate.dense", i, h),
                ("output.dense", h, i),
            ] {
                put(
                    format!("{p}.{name}.weight"),
                    &[n, k],
                    1.0 / (k as f64).sqrt(),
                    0.0,
                );
                put(format!("{p}.{name}.bias"), &[n], 0.1, 0.0);
            }
            for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
                put(format!("{p}.{name}.{w}"), &[h], 0.1, 1.0);
                put(format!("{p}.{name}.{b}"), &[h], 0.1, 0.0);
            }
        }
        map
    }

    fn texts() -> Vec<Vec<u32>> {
        [1usize, 2, 7, 13, 30, 64]
            .iter()
            .map(|&len| (0..len).map(|t| ((t * 7 + len) % 50) as u32).collect())
            .collect()
    }

    fn candle(model: &BertModel, ids: &[u32]) -> Vec<f32> {
        let ids = Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let types = ids.zeros_like().unwrap();
        model
            .forward(&ids, &types, None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    /// The encoder is candle-transformers' `BertModel` (the reference it replaces) within f32
    /// rounding, for each activation, with and without a name prefix.
    #[test]
    fn the_encoder_is_candles_bert() {
        for (act, prefix) in [("gelu", ""), ("geluapproximate", "bert."), ("relu", "")] {
            let cfg = config(act);
            let map = weights(&cfg, prefix);
            let ours = BertEncoder::load(&map, &cfg).unwrap();
            let vb = VarBuilder::from_tensors(map, DType::F32, &Device::Cpu);
            let theirs = BertModel::load(vb, &cfg).unwrap();
            for ids in texts() {
                let got = ours.forward(&[&ids]).unwrap();
                let want = candle(&theirs, &ids);
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 2e-4,
                        "{act}, {} tokens: {g} vs {w}",
                        ids.len()
                    );
                }
            }
        }
    }

    /// A text's hidden states are the same bits alone or among others, and with the portable
    /// kernel as with AVX2.
    #[test]
    fn a_text_is_the_same_bits_alone_among_others_and_in_either_kernel() {
        let cfg = config("gelu");
        let encoder = BertEncoder::load(&weights(&cfg, ""), &cfg).unwrap();
        let portable = encoder.clone().portable();
        let texts = texts();
        let all: Vec<&[u32]> = texts.iter().map(|t| t.as_slice()).collect();
        let together = encoder.forward(&all).unwrap();
        assert_eq!(bits(&portable.forward(&all).unwrap()), bits(&together));
        let mut row = 0;
        for ids in &texts {
            let alone = encoder.forward(&[ids]).unwrap();
            assert_eq!(bits(&alone), bits(&together[row * 48..][..ids.len() * 48]));
            row += ids.len();
        }
    }

    /// Ids outside the vocabulary and texts longer than the positions are errors, not panics;
    /// missing or misshapen tensors are load errors.
    #[test]
    fn bad_input_and_bad_weights_are_errors() {
        let cfg = config("gelu");
        let map = weights(&cfg, "");
        let encoder = BertEncoder::load(&map, &cfg).unwrap();
        assert!(matches!(
            encoder.forward(&[&[3, 50]]),
            Err(InferenceError::InvalidText(_))
        ));
        let long = vec![1u32; 65];
        assert!(matches!(
            encoder.forward(&[&long]),
            Err(InferenceError::InvalidText(_))
        ));
        assert!(encoder.forward(&[]).unwrap().is_empty());
        // A text of no tokens has no rows, beside others or alone.
        assert!(encoder.forward(&[&[]]).unwrap().is_empty());
        assert_eq!(encoder.forward(&[&[], &[1, 2], &[]]).unwrap().len(), 2 * 48);
        for (field, value) in [
            ("model_type", serde_json::json!("roberta")),
            ("intermediate_size", serde_json::json!(0)),
            ("type_vocab_size", serde_json::json!(0)),
            ("num_attention_heads", serde_json::json!(5)),
        ] {
            let mut json = config_json("gelu");
            json[field] = value;
            let bad: BertConfig = serde_json::from_value(json).unwrap();
            let loaded = BertEncoder::load(&map, &bad);
            assert!(matches!(loaded, Err(InferenceError::Weights(_))), "{field}");
        }
        let mut missing = map.clone();
        missing.remove("encoder.layer.1.output.dense.bias");
        assert!(matches!(
            BertEncoder::load(&missing, &cfg),
            Err(InferenceError::Weights(_))
        ));
        let mut misshapen = map;
        misshapen.insert(
            "encoder.layer.1.output.dense.weight".into(),
            Tensor::zeros((48, 48), DType::F32, &Device::Cpu).unwrap(),
        );
        assert!(matches!(
            BertEncoder::load(&misshapen, &cfg),
            Err(InferenceError::Weights(_))
        ));
    }
}
