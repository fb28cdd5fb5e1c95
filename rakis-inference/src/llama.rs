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
//! rows at once (cheap) and the attention of each row on its own, with the arithmetic decoding
//! uses (on the CPU, one kernel computes every (head, row) pair in a fixed order of operations;
//! elsewhere, the tensor ops of decoding, row by row). The prompt is read the same way
//! ([`LlamaModel::forward_prompt`]): every position's logits are then what single-token
//! decoding computes — the protocol's canonical numerics, which another engine (llama.cpp
//! decoding token by token) follows too, so that a verifier's logits differ from a generator's
//! only by the engines' rounding, never by how the prompt was batched (docs/consensus.md).
//!
//! The weight products of Q4_1 and Q8_0 models run on this crate's kernels
//! (`qmatmul`, behind `Projection`s; queries/keys/values and gate/up stacked), whose
//! rows are independent by construction; the weights sit behind one `Arc` and each clone keeps
//! its own caches, so several streams (clones) can be decoded in one pass
//! ([`LlamaModel::forward_batch`]), each row still the stream's own logits bit for bit.

use std::sync::Arc;

use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_transformers::quantized_nn::RmsNorm;

use crate::qmatmul::BlockMatrix;

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
    /// Queries, keys and values.
    qkv: Projection,
    wo: Projection,
    ffn_norm: RmsNorm,
    /// Gate and up.
    gate_up: Projection,
    w_down: Projection,
}

/// Keys and values of the positions read so far, `(1, n_kv_head, T, head_dim)` each, written in
/// place into buffers that grow by doubling and are kept when the cache is cleared: no copy of
/// the whole cache per token, and no allocation per request once the buffers are large enough.
/// A clone starts empty: the buffers are written in place, so they are never shared (a cloned
/// model shares its weights, not its caches).
#[derive(Debug, Default)]
struct KvCache {
    /// Buffers `(1, n_kv_head, capacity, head_dim)`.
    buffers: Option<(Tensor, Tensor)>,
    /// Positions written.
    len: usize,
}

impl Clone for KvCache {
    fn clone(&self) -> Self {
        KvCache::default()
    }
}

impl KvCache {
    /// Smallest capacity allocated, in positions.
    const MIN_CAPACITY: usize = 256;

    /// Forgets every position (the buffers stay).
    fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `k`, `v` `(1, n_kv_head, L, head_dim)` and returns views of every position.
    fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let add = k.dim(2)?;
        let need = self.len + add;
        let capacity = self
            .buffers
            .as_ref()
            .map_or(0, |(b, _)| b.dim(2).unwrap_or(0));
        if need > capacity {
            let (b, h, _, d) = k.dims4()?;
            let grown = need.next_power_of_two().max(Self::MIN_CAPACITY);
            let fresh = || Tensor::zeros((b, h, grown, d), k.dtype(), k.device());
            let (nk, nv) = (fresh()?, fresh()?);
            if let Some((ok, ov)) = &self.buffers {
                if self.len > 0 {
                    nk.slice_set(&ok.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                    nv.slice_set(&ov.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                }
            }
            self.buffers = Some((nk, nv));
        }
        let (bk, bv) = self.buffers.as_ref().expect("allocated above");
        bk.slice_set(&k.contiguous()?, 2, self.len)?;
        bv.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len = need;
        Ok((bk.narrow(2, 0, need)?, bv.narrow(2, 0, need)?))
    }
}

/// Linear layers of one input (queries, keys and values; gate and up; or a single one): on the
/// CPU, Q4_1 and Q8_0 weights go stacked into one [`BlockMatrix`] (one product for all, this
/// crate's kernels); other formats and devices keep candle's product, one a layer.
#[derive(Clone, Debug)]
enum Projection {
    Blocks {
        matrix: Arc<BlockMatrix>,
        /// Output width of each layer, in order.
        widths: Vec<usize>,
    },
    Candle(Vec<QMatMul>),
}

impl Projection {
    fn new(ts: Vec<QTensor>, dequantize: bool, device: &Device) -> Result<Self> {
        if !dequantize {
            if let Some(matrix) = BlockMatrix::from_qtensors(&ts.iter().collect::<Vec<_>>())? {
                return Ok(Projection::Blocks {
                    matrix: Arc::new(matrix),
                    widths: ts.iter().map(|t| t.shape().dims()[0]).collect(),
                });
            }
        }
        let each = ts
            .into_iter()
            .map(|t| {
                if dequantize {
                    Ok(QMatMul::Tensor(t.dequantize(device)?))
                } else {
                    QMatMul::from_qtensor(t)
                }
            })
            .collect::<Result<_>>()?;
        Ok(Projection::Candle(each))
    }

    /// Each layer's output for `x` `(1, L, k)`: `(1, L, n_i)`. With `alone`, each row gives
    /// the bits it gives alone: candle's f32 product sums a row in another order among
    /// several rows, so it then runs row by row (the block products always do).
    fn forward_parts(&self, x: &Tensor, alone: bool) -> Result<Vec<Tensor>> {
        match self {
            Projection::Candle(each) if alone && x.dim(1)? > 1 => each
                .iter()
                .map(|w| {
                    let rows = (0..x.dim(1)?)
                        .map(|r| w.forward(&x.narrow(1, r, 1)?))
                        .collect::<Result<Vec<_>>>()?;
                    Tensor::cat(&rows, 1)
                })
                .collect(),
            Projection::Candle(each) => each.iter().map(|w| w.forward(x)).collect(),
            Projection::Blocks { matrix, widths } => {
                let (b, len, k) = x.dims3()?;
                if b != 1 || k != matrix.cols() {
                    candle_core::bail!(
                        "input (1, L, {}) expected, got {:?}",
                        matrix.cols(),
                        x.dims()
                    );
                }
                let input = x.flatten_all()?.to_vec1::<f32>()?;
                let out = matrix.matmul(&input, len);
                let all = Tensor::from_vec(out, (1, len, matrix.rows()), x.device())?;
                if widths.len() == 1 {
                    return Ok(vec![all]);
                }
                let mut offset = 0;
                widths
                    .iter()
                    .map(|&n| {
                        let part = all.narrow(2, offset, n);
                        offset += n;
                        part
                    })
                    .collect()
            }
        }
    }

    /// The output of a single layer (`alone` as in [`forward_parts`](Self::forward_parts)).
    fn forward(&self, x: &Tensor, alone: bool) -> Result<Tensor> {
        let mut parts = self.forward_parts(x, alone)?;
        match parts.len() {
            1 => Ok(parts.remove(0)),
            n => candle_core::bail!("{n} layers where one was expected"),
        }
    }
}

/// A quantized llama-family model with its own key/value cache: clones share the weights and
/// start with an empty cache of their own (one clone a stream of tokens; several streams are
/// decoded together by [`LlamaModel::forward_batch`]).
#[derive(Clone, Debug)]
pub struct LlamaModel {
    weights: Arc<Weights>,
    /// One cache a layer.
    caches: Vec<KvCache>,
}

/// The weights and rotary tables, shared by every clone of a model.
#[derive(Debug)]
struct Weights {
    embeddings: candle_nn::Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: Projection,
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
        let project = |ts: Vec<QTensor>| Projection::new(ts, dequantize, device);
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
            Ok(t) => project(vec![t])?,
            // Tied embeddings.
            Err(_) => project(vec![embd_q])?,
        };
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let mut w = |part: &str| tensor(&format!("blk.{i}.{part}.weight"));
            layers.push(Layer {
                attn_norm: RmsNorm::from_qtensor(w("attn_norm")?, eps)?,
                qkv: project(vec![w("attn_q")?, w("attn_k")?, w("attn_v")?])?,
                wo: project(vec![w("attn_output")?])?,
                ffn_norm: RmsNorm::from_qtensor(w("ffn_norm")?, eps)?,
                gate_up: project(vec![w("ffn_gate")?, w("ffn_up")?])?,
                w_down: project(vec![w("ffn_down")?])?,
            });
        }
        let (cos, sin) = rope_tables(rope_dim, base, context, device)?;
        Ok(LlamaModel {
            weights: Arc::new(Weights {
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
            }),
            caches: (0..n_layer).map(|_| KvCache::default()).collect(),
        })
    }

    /// The model's shape.
    pub fn shape(&self) -> LlamaShape {
        self.weights.shape
    }

    /// Forgets every position read.
    pub fn clear_cache(&mut self) {
        for c in &mut self.caches {
            c.clear();
        }
    }

    /// Positions in the cache.
    pub fn cached(&self) -> usize {
        self.caches.first().map_or(0, |c| c.len)
    }

    /// Reads `ids` at positions `index_pos..` (as [`forward_rows`](Self::forward_rows)) and
    /// returns the logits of the last position only, `(vocab,)`.
    pub fn forward_prompt(&mut self, ids: &[u32], index_pos: usize) -> Result<Tensor> {
        let hidden = self.run(ids, index_pos)?;
        let last = hidden.i((.., ids.len() - 1..))?;
        self.weights
            .output
            .forward(&last, false)?
            .squeeze(0)?
            .squeeze(0)
    }

    /// Reads `ids` at positions `index_pos..` and returns every position's logits,
    /// `(ids.len(), vocab)`: row `r` is bit for bit what decoding token `r` after the cached
    /// positions gives (the attention runs one row at a time as decoding runs it).
    pub fn forward_rows(&mut self, ids: &[u32], index_pos: usize) -> Result<Tensor> {
        let hidden = self.run(ids, index_pos)?;
        self.weights.output.forward(&hidden, false)?.squeeze(0)
    }

    /// Decodes one token for each of several streams in one pass: `tokens[b]` goes at the
    /// position after what `streams[b]` has cached. The streams are clones of one model (they
    /// share its weights); the weight products run on every stream's row at once (the weights
    /// are read once for all, which is what a decoding step costs), the attention of each
    /// stream over its own cache. Row `b` of the result, `(streams, vocab)`, is bit for bit
    /// what `streams[b].forward_rows(&[tokens[b]], streams[b].cached())` gives alone.
    pub fn forward_batch(streams: &mut [&mut LlamaModel], tokens: &[u32]) -> Result<Tensor> {
        let Some(first) = streams.first() else {
            candle_core::bail!("no stream to decode");
        };
        if tokens.len() != streams.len() {
            candle_core::bail!("{} tokens for {} streams", tokens.len(), streams.len());
        }
        let w = first.weights.clone();
        if streams.iter().any(|s| !Arc::ptr_eq(&s.weights, &w)) {
            candle_core::bail!("streams of different models decoded together");
        }
        let positions: Vec<u32> = streams.iter().map(|s| s.cached() as u32).collect();
        if let Some(p) = positions.iter().find(|&&p| p as usize >= w.shape.context) {
            candle_core::bail!("position {p} beyond the context of {}", w.shape.context);
        }
        let device = w.cos.device().clone();
        let x = w
            .embeddings
            .forward(&Tensor::new(tokens, &device)?.unsqueeze(0)?)?;
        let at = Tensor::new(positions.as_slice(), &device)?;
        let (cos, sin) = (w.cos.index_select(&at, 0)?, w.sin.index_select(&at, 0)?);
        let hidden = w.pass(x, &cos, &sin, true, |li, q, k, v| {
            let mut rows = Vec::with_capacity(streams.len());
            for (b, stream) in streams.iter_mut().enumerate() {
                let one = |t: &Tensor| t.narrow(2, b, 1)?.contiguous();
                let (k, v) = stream.caches[li].append(&one(&k)?, &one(&v)?)?;
                rows.push(attend_rows(&w, &one(&q)?, &k, &v, positions[b] as usize)?);
            }
            Tensor::cat(&rows, 2)
        })?;
        w.output.forward(&hidden, true)?.squeeze(0)
    }

    /// The final hidden states of `ids` (normalised), `(1, L, n_embd)`.
    fn run(&mut self, ids: &[u32], index_pos: usize) -> Result<Tensor> {
        let w = self.weights.clone();
        if ids.is_empty() {
            candle_core::bail!("no tokens to read");
        }
        if index_pos + ids.len() > w.shape.context {
            candle_core::bail!(
                "{} positions exceed the context of {}",
                index_pos + ids.len(),
                w.shape.context
            );
        }
        if index_pos != 0 && index_pos != self.cached() {
            candle_core::bail!(
                "reading from position {index_pos} with {} positions cached",
                self.cached()
            );
        }
        let device = w.cos.device().clone();
        let input = Tensor::new(ids, &device)?.unsqueeze(0)?;
        let len = ids.len();
        let x = w.embeddings.forward(&input)?;
        let (cos, sin) = (
            w.cos.narrow(0, index_pos, len)?,
            w.sin.narrow(0, index_pos, len)?,
        );
        let caches = &mut self.caches;
        w.pass(x, &cos, &sin, false, |li, q, k, v| {
            if index_pos == 0 {
                caches[li].clear();
            }
            let (k, v) = caches[li].append(&k, &v)?;
            attend_rows(&w, &q, &k, &v, index_pos)
        })
    }
}

impl Weights {
    /// Every layer over the hidden rows `x` `(1, L, n_embd)`, row `r` rotated by row `r` of
    /// `cos`, `sin`; `attend(layer, q, k, v)` gives the attention of the rotated queries
    /// `(1, H, L, d)` given this step's keys and values `(1, H_kv, L, d)`, as `(1, H, L, d)`.
    /// With `alone`, every row's products give the bits they give alone (rows of several
    /// streams). Returns the final hidden rows, normalised.
    fn pass(
        &self,
        mut x: Tensor,
        cos: &Tensor,
        sin: &Tensor,
        alone: bool,
        mut attend: impl FnMut(usize, Tensor, Tensor, Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (shape, head_dim) = (self.shape, self.head_dim);
        let len = x.dim(1)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let residual = x.clone();
            let h = layer.attn_norm.forward(&x)?;
            let [q, k, v] = <[Tensor; 3]>::try_from(layer.qkv.forward_parts(&h, alone)?)
                .map_err(|_| candle_core::Error::Msg("three projections expected".into()))?;
            let heads = |t: Tensor, n: usize| -> Result<Tensor> {
                t.reshape((1, len, n, head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = candle_nn::rotary_emb::rope_i(&heads(q, shape.n_head)?, cos, sin)?;
            let k = candle_nn::rotary_emb::rope_i(&heads(k, shape.n_kv_head)?, cos, sin)?;
            let v = heads(v, shape.n_kv_head)?;
            let y = attend(li, q, k, v)?;
            let y = y.transpose(1, 2)?.reshape((1, len, shape.n_embd))?;
            let x_attn = (layer.wo.forward(&y, alone)? + residual)?;
            let residual = x_attn.clone();
            let h = layer.ffn_norm.forward(&x_attn)?;
            let [gate, up] = <[Tensor; 2]>::try_from(layer.gate_up.forward_parts(&h, alone)?)
                .map_err(|_| candle_core::Error::Msg("two projections expected".into()))?;
            let gate = candle_nn::ops::silu(&gate)?;
            x = (layer.w_down.forward(&(gate * up)?, alone)? + residual)?;
        }
        self.norm.forward(&x)
    }
}

/// Causal attention of query rows `q` `(1, H, L, d)` (row `r` at position `index_pos + r`) over
/// the cached keys and values `k`, `v` `(1, H_kv, T, d)`: the CPU kernel, or elsewhere the
/// tensor ops of decoding row by row.
fn attend_rows(
    w: &Weights,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    index_pos: usize,
) -> Result<Tensor> {
    let (shape, head_dim) = (w.shape, w.head_dim);
    if q.device().is_cpu() && q.dtype() == DType::F32 {
        return attend_causal_cpu(q, k, v, index_pos, shape, head_dim);
    }
    let len = q.dim(2)?;
    if len == 1 {
        return attend(q, k, v, shape, head_dim);
    }
    let mut rows = Vec::with_capacity(len);
    for r in 0..len {
        let upto = index_pos + r + 1;
        let qr = q.narrow(2, r, 1)?.contiguous()?;
        let kr = k.narrow(2, 0, upto)?.contiguous()?;
        let vr = v.narrow(2, 0, upto)?.contiguous()?;
        rows.push(attend(&qr, &kr, &vr, shape, head_dim)?);
    }
    Tensor::cat(&rows, 2)
}

/// Causal scaled dot-product attention on the CPU: query row `r` of `q` `(1, H, L, d)` (position
/// `index_pos + r`) over the first `index_pos + r + 1` keys and values of `k`, `v`
/// `(1, H_kv, T, d)`, for every head and row in one pass, returned as `(1, H, L, d)`.
///
/// Each (head, row) is computed alone with one fixed order of operations (dot products in eight
/// lanes, the max, `exp(s - max)`, their sum, then the weighted sum of values position by
/// position), so a row gives the same bits whether it is decoded alone or read among many: what
/// makes [`LlamaModel::forward_rows`] decoding's logits bit for bit, without a separate set of
/// small tensor ops per row (which made reading a prompt as slow as decoding it). Grouped-query
/// heads read their shared key/value head in place (no repeated copy).
fn attend_causal_cpu(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    index_pos: usize,
    shape: LlamaShape,
    head_dim: usize,
) -> Result<Tensor> {
    let (_, n_head, len, d) = q.dims4()?;
    let (_, n_kv, total, _) = k.dims4()?;
    if d != head_dim || n_head != shape.n_head || n_kv != shape.n_kv_head || total < index_pos + len
    {
        candle_core::bail!("attention shapes do not match the model");
    }
    let rep = n_head / n_kv;
    let scale = 1f32 / (head_dim as f32).sqrt();
    // Keys and values are read in place from the cache's buffer (a view of its first `total`
    // positions): rows of `d` contiguous numbers, heads `head_stride` apart.
    let rows_in_place =
        |t: &Tensor| t.stride()[3] == 1 && t.stride()[2] == d && t.stride()[1] == k.stride()[1];
    let (k, v) = if rows_in_place(k) && rows_in_place(v) {
        (k.clone(), v.clone())
    } else {
        (k.contiguous()?, v.contiguous()?)
    };
    let head_stride = k.stride()[1];
    let q = q.contiguous()?;
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (
        candle_core::Storage::Cpu(qs),
        candle_core::Storage::Cpu(ks),
        candle_core::Storage::Cpu(vs),
    ) = (&*qs, &*ks, &*vs)
    else {
        candle_core::bail!("CPU attention on tensors of another device");
    };
    let q = &qs.as_slice::<f32>()?[ql.start_offset()..][..n_head * len * d];
    let span = (n_kv - 1) * head_stride + total * d;
    let k = &ks.as_slice::<f32>()?[kl.start_offset()..][..span];
    let v = &vs.as_slice::<f32>()?[vl.start_offset()..][..span];
    let mut out = vec![0f32; n_head * len * d];
    let one = |(item, o): (usize, &mut [f32])| {
        let (h, r) = (item / len, item % len);
        let upto = index_pos + r + 1;
        let qr = &q[item * d..][..d];
        let kv = h / rep;
        let keys = &k[kv * head_stride..];
        let values = &v[kv * head_stride..];
        let mut scores: Vec<f32> = (0..upto)
            .map(|t| dot(qr, &keys[t * d..][..d]) * scale)
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = crate::dense::exp(*s - max);
            sum += *s;
        }
        for (t, s) in scores.iter().enumerate() {
            let p = s / sum;
            for (o, x) in o.iter_mut().zip(&values[t * d..][..d]) {
                *o += p * x;
            }
        }
    };
    // Threads only where there is work enough to pay for them (decoding a short context is
    // a few microseconds of arithmetic); candle's pool, whose threads are awake between the
    // products. The rows run inside an AVX2 function where the CPU has it (the compiler may
    // then vectorise them; the operations, so the bits, are the same).
    let parallel = n_head * len * (index_pos + len) >= PARALLEL_ATTENTION_WORK;
    let kernel = crate::dense::Kernel::detect();
    let mut rows: Vec<(usize, &mut [f32])> = out.chunks_mut(d).enumerate().collect();
    crate::pool::for_each(parallel, &mut rows, |(item, o)| {
        crate::dense::with_kernel(kernel, || one((*item, o)))
    });
    Tensor::from_vec(out, (1, n_head, len, d), &Device::Cpu)
}

/// Query rows × keys above which [`attend_causal_cpu`] spreads its rows over threads.
const PARALLEL_ATTENTION_WORK: usize = 4_096;

/// A dot product in eight lanes (vectorised), summed in one fixed order.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks_a = a.chunks_exact(8);
    let mut chunks_b = b.chunks_exact(8);
    for (x, y) in (&mut chunks_a).zip(&mut chunks_b) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let mut sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for (x, y) in chunks_a.remainder().iter().zip(chunks_b.remainder()) {
        sum += x * y;
    }
    sum
}

/// Scaled dot-product attention of `q` `(1, H, L, d)` over `k`, `v` `(1, H_kv, T, d)` (devices
/// other than the CPU).
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
