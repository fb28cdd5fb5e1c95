//! The llama-family model of [`TextGenerator`](crate::TextGenerator), written for this crate:
//! quantized GGUF weights on candle, with a forward pass that returns every position's logits
//! **bit for bit as token-by-token decoding computes them**.
//!
//! Why this exists: candle's `quantized_llama` returns only the last position, and a one-pass
//! (prompt-mode) read of prompt + answer differs from decoding by ~0.7 in the logits (median of
//! the max over the vocabulary). The weight matmuls are not the cause — each row's activations
//! are quantized to 8 bits on their own, so a row gives the same bits alone or among many — but
//! the attention is: a masked L×L product and a softmax over rows of another length round
//! differently, and one flipped 8-bit rounding of an activation spreads through every later
//! layer. [`LlamaModel::forward_rows`] therefore runs every weight matmul, norm and MLP on all
//! rows at once (cheap) and the attention one row at a time with exactly the shapes decoding
//! uses. The prompt is read the same way ([`LlamaModel::forward_prompt`]): every position's
//! logits are then what single-token decoding computes — the protocol's canonical numerics,
//! which another engine (llama.cpp decoding token by token) follows too, so that a verifier's
//! logits differ from a generator's only by the engines' rounding, never by how the prompt was
//! batched (docs/consensus.md).

use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_transformers::quantized_nn::RmsNorm;

/// The model's shape, read from the GGUF metadata.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LlamaShape {
    /// Attention heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention).
    pub n_kv_head: usize,
    /// Layers.
    pub n_layer: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Positions the rotary tables cover.
    pub context: usize,
}

#[derive(Clone, Debug)]
struct Layer {
    attn_norm: RmsNorm,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    ffn_norm: RmsNorm,
    w_gate: QMatMul,
    w_up: QMatMul,
    w_down: QMatMul,
    /// Keys and values of the positions read so far, `(1, n_kv_head, T, head_dim)` each.
    cache: Option<(Tensor, Tensor)>,
}

/// A quantized llama-family model with its own key/value cache (clones share the weights and
/// get their own cache).
#[derive(Clone, Debug)]
pub struct LlamaModel {
    embeddings: candle_nn::Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
    shape: LlamaShape,
    head_dim: usize,
}

fn rope_tables(
    head_dim: usize,
    base: f32,
    positions: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let inv: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1f32 / base.powf(i as f32 / head_dim as f32))
        .collect();
    let inv = Tensor::new(inv.as_slice(), device)?;
    let angles = Tensor::arange(0, positions as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((positions, 1))?
        .matmul(&inv.reshape((1, inv.elem_count()))?)?;
    Ok((angles.cos()?, angles.sin()?))
}

impl LlamaModel {
    /// Reads the model from a GGUF file's content (`general.architecture` = `llama`; the
    /// caller checks it), keeping the weights as stored.
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
    ) -> Result<Self> {
        Self::read(ct, reader, device, false)
    }

    /// Reads the model with every weight dequantized to f32: the matmuls then run in f32
    /// throughout, with no 8-bit quantization of the activations (see the module docs for why
    /// that matters to a verifier on another engine). Four bytes a parameter.
    pub fn from_gguf_dequantized<R: std::io::Read + std::io::Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
    ) -> Result<Self> {
        Self::read(ct, reader, device, true)
    }

    fn read<R: std::io::Read + std::io::Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
        dequantize: bool,
    ) -> Result<Self> {
        let matmul = |t: QTensor| -> Result<QMatMul> {
            if dequantize {
                Ok(QMatMul::Tensor(t.dequantize(device)?))
            } else {
                QMatMul::from_qtensor(t)
            }
        };
        let md = |key: &str| {
            ct.metadata
                .get(key)
                .ok_or_else(|| candle_core::Error::Msg(format!("GGUF metadata {key} missing")))
        };
        let n_head = md("llama.attention.head_count")?.to_u32()? as usize;
        let n_kv_head = md("llama.attention.head_count_kv")?.to_u32()? as usize;
        let n_layer = md("llama.block_count")?.to_u32()? as usize;
        let n_embd = md("llama.embedding_length")?.to_u32()? as usize;
        let rope_dim = md("llama.rope.dimension_count")?.to_u32()? as usize;
        let eps = f64::from(md("llama.attention.layer_norm_rms_epsilon")?.to_f32()?);
        let base = md("llama.rope.freq_base")
            .and_then(|v| v.to_f32())
            .unwrap_or(10_000.0);
        let context = md("llama.context_length")
            .and_then(|v| v.to_u32())
            .map_or(4096, |c| c as usize)
            .min(crate::engine::MAX_CONTEXT);
        if n_head == 0
            || n_kv_head == 0
            || !n_head.is_multiple_of(n_kv_head)
            || !n_embd.is_multiple_of(n_head)
        {
            candle_core::bail!("inconsistent heads: {n_head} / {n_kv_head} / {n_embd}");
        }
        let mut tensor = |name: &str| -> Result<QTensor> { ct.tensor(reader, name, device) };
        let embd_q = tensor("token_embd.weight")?;
        let embeddings = candle_nn::Embedding::new(embd_q.dequantize(device)?, n_embd);
        let norm = RmsNorm::from_qtensor(tensor("output_norm.weight")?, eps)?;
        let output = match tensor("output.weight") {
            Ok(t) => matmul(t)?,
            // Tied embeddings.
            Err(_) => matmul(embd_q)?,
        };
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let mut w = |part: &str| tensor(&format!("blk.{i}.{part}.weight"));
            layers.push(Layer {
                attn_norm: RmsNorm::from_qtensor(w("attn_norm")?, eps)?,
                wq: matmul(w("attn_q")?)?,
                wk: matmul(w("attn_k")?)?,
                wv: matmul(w("attn_v")?)?,
                wo: matmul(w("attn_output")?)?,
                ffn_norm: RmsNorm::from_qtensor(w("ffn_norm")?, eps)?,
                w_gate: matmul(w("ffn_gate")?)?,
                w_up: matmul(w("ffn_up")?)?,
                w_down: matmul(w("ffn_down")?)?,
                cache: None,
            });
        }
        let (cos, sin) = rope_tables(rope_dim, base, context, device)?;
        Ok(LlamaModel {
            embeddings,
            layers,
            norm,
            output,
            cos,
            sin,
            shape: LlamaShape {
                n_head,
                n_kv_head,
                n_layer,
                n_embd,
                context,
            },
            head_dim: n_embd / n_head,
        })
    }

    /// The model's shape.
    pub fn shape(&self) -> LlamaShape {
        self.shape
    }

    /// Forgets every position read.
    pub fn clear_cache(&mut self) {
        for l in &mut self.layers {
            l.cache = None;
        }
    }

    /// Positions in the cache.
    pub fn cached(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.cache.as_ref())
            .map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    /// Reads `ids` at positions `index_pos..` (as [`forward_rows`](Self::forward_rows)) and
    /// returns the logits of the last position only, `(vocab,)`.
    pub fn forward_prompt(&mut self, ids: &[u32], index_pos: usize) -> Result<Tensor> {
        let hidden = self.run(ids, index_pos)?;
        let last = hidden.i((.., ids.len() - 1, ..))?;
        self.output.forward(&last)?.squeeze(0)
    }

    /// Reads `ids` at positions `index_pos..` and returns every position's logits,
    /// `(ids.len(), vocab)`: row `r` is bit for bit what decoding token `r` after the cached
    /// positions gives (the attention runs one row at a time as decoding runs it).
    pub fn forward_rows(&mut self, ids: &[u32], index_pos: usize) -> Result<Tensor> {
        let hidden = self.run(ids, index_pos)?;
        self.output.forward(&hidden)?.squeeze(0)
    }

    /// The final hidden states of `ids` (normalised), `(1, L, n_embd)`.
    fn run(&mut self, ids: &[u32], index_pos: usize) -> Result<Tensor> {
        if ids.is_empty() {
            candle_core::bail!("no tokens to read");
        }
        if index_pos + ids.len() > self.shape.context {
            candle_core::bail!(
                "{} positions exceed the context of {}",
                index_pos + ids.len(),
                self.shape.context
            );
        }
        let device = self.cos.device().clone();
        let input = Tensor::new(ids, &device)?.unsqueeze(0)?;
        let len = ids.len();
        let mut x = self.embeddings.forward(&input)?;
        let (cos, sin) = (
            self.cos.narrow(0, index_pos, len)?,
            self.sin.narrow(0, index_pos, len)?,
        );
        let shape = self.shape;
        let head_dim = self.head_dim;
        for layer in &mut self.layers {
            let residual = x.clone();
            let h = layer.attn_norm.forward(&x)?;
            let q = layer
                .wq
                .forward(&h)?
                .reshape((1, len, shape.n_head, head_dim))?
                .transpose(1, 2)?
                .contiguous()?;
            let k = layer
                .wk
                .forward(&h)?
                .reshape((1, len, shape.n_kv_head, head_dim))?
                .transpose(1, 2)?
                .contiguous()?;
            let v = layer
                .wv
                .forward(&h)?
                .reshape((1, len, shape.n_kv_head, head_dim))?
                .transpose(1, 2)?
                .contiguous()?;
            let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?;
            let (k, v) = match (&layer.cache, index_pos) {
                (Some((kc, vc)), p) if p > 0 => {
                    (Tensor::cat(&[kc, &k], 2)?, Tensor::cat(&[vc, &v], 2)?)
                }
                _ => (k, v),
            };
            layer.cache = Some((k.clone(), v.clone()));
            let y = match len {
                1 => attend(&q, &k, &v, shape, head_dim)?,
                _ => {
                    let mut rows = Vec::with_capacity(len);
                    for r in 0..len {
                        let upto = index_pos + r + 1;
                        let qr = q.narrow(2, r, 1)?.contiguous()?;
                        let kr = k.narrow(2, 0, upto)?.contiguous()?;
                        let vr = v.narrow(2, 0, upto)?.contiguous()?;
                        rows.push(attend(&qr, &kr, &vr, shape, head_dim)?);
                    }
                    Tensor::cat(&rows, 2)?
                }
            };
            let y = y.transpose(1, 2)?.reshape((1, len, shape.n_embd))?;
            let x_attn = (layer.wo.forward(&y)? + residual)?;
            let residual = x_attn.clone();
            let h = layer.ffn_norm.forward(&x_attn)?;
            let gate = candle_nn::ops::silu(&layer.w_gate.forward(&h)?)?;
            let up = layer.w_up.forward(&h)?;
            x = (layer.w_down.forward(&(gate * up)?)? + residual)?;
        }
        self.norm.forward(&x)
    }
}

/// Scaled dot-product attention of `q` `(1, H, L, d)` over `k`, `v` `(1, H_kv, T, d)`.
fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    shape: LlamaShape,
    head_dim: usize,
) -> Result<Tensor> {
    let rep = shape.n_head / shape.n_kv_head;
    let k = candle_transformers::utils::repeat_kv(k.clone(), rep)?;
    let v = candle_transformers::utils::repeat_kv(v.clone(), rep)?;
    let att = (q.matmul(&k.t()?)? / (head_dim as f64).sqrt())?;
    let att = candle_nn::ops::softmax_last_dim(&att)?;
    att.matmul(&v.contiguous()?)
}
