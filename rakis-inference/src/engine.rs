//! `CandleEngine`: quantized GGUF llama-family models on candle, with worker threads.

use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rakis_core::consensus::sampling::{
    check, position_random, Distribution, Draw, Ending, Replay, SamplerSpec,
};
use rakis_core::{EngineError, Generation, GenerationJob, InferenceEngine, Score, ScoreJob};
use rakis_core::{FinishReason, Hash32};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;
use tokio::sync::{oneshot, Semaphore};
use tracing::{debug, info, info_span};

use crate::chat::ChatTemplate;
use crate::llama::LlamaModel;
use crate::tokenizer::{special_tokens, tokenizer_from_gguf};
use crate::{InferenceError, ModelSource};
use rakis_core::error::SharedError;

/// How weights are kept in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WeightFormat {
    /// As stored in the GGUF.
    AsStored,
    /// 4- and 5-bit block formats requantized to Q8_0 at load (135M parameters: about 145 MB,
    /// twice Q4_1's memory). Q8_0 and Q4_1 run on this crate's CPU kernels (other block
    /// formats on candle's); the stored Q4_1 decodes somewhat faster (docs/benchmarks.md).
    #[default]
    #[serde(rename = "q8_0")]
    Q8_0,
    /// Every weight dequantized to f32 at load and the model computed in f32, activations
    /// included (the block formats quantize each activation row to 8 bits). The format whose
    /// sampling another engine can replay closely: a flipped 8-bit rounding of an activation
    /// moves the logits by tenths, f32 rounding differences by thousandths
    /// (docs/consensus.md). Four bytes a parameter (135M parameters: about 540 MB).
    #[serde(rename = "f32")]
    F32,
}

/// Settings of a [`CandleEngine`] (serde; only `model_name` is required in a file).
///
/// ```
/// let c: rakis_inference::EngineConfig = toml::from_str(r#"
///     model_name = "smollm2"
///     workers = 2
///     weights = "as_stored"
/// "#).unwrap();
/// assert_eq!(c.workers, 2);
/// assert_eq!(c.queue_capacity, rakis_inference::EngineConfig::new("smollm2").queue_capacity);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// The model's name as written in requests' `accepted_models`.
    pub model_name: String,
    /// Generation workers (threads, each with its own KV cache).
    #[serde(default = "EngineConfig::default_workers")]
    pub workers: usize,
    /// Jobs that may wait for a worker; further callers wait (backpressure).
    #[serde(default = "EngineConfig::default_queue_capacity")]
    pub queue_capacity: usize,
    /// Most answers a worker decodes together: generation jobs waiting when a worker takes
    /// one join it, and each step then reads the weights once for all of them (4).
    #[serde(default = "EngineConfig::default_batch")]
    pub batch: usize,
    /// How weights are kept (`"q8_0"`, the default, or `"as_stored"`).
    #[serde(default)]
    pub weights: WeightFormat,
    /// A `tokenizer.json` to use instead of the GGUF's vocabulary.
    #[serde(default)]
    pub tokenizer_json: Option<PathBuf>,
    /// A chat template to use instead of the GGUF's.
    #[serde(default)]
    pub chat_template: Option<String>,
}

impl EngineConfig {
    /// Defaults for a model name: 1 worker, a queue of 16, batches of 4, Q8_0 weights.
    pub fn new(model_name: impl Into<String>) -> Self {
        EngineConfig {
            model_name: model_name.into(),
            workers: Self::default_workers(),
            queue_capacity: Self::default_queue_capacity(),
            batch: Self::default_batch(),
            weights: WeightFormat::default(),
            tokenizer_json: None,
            chat_template: None,
        }
    }

    fn default_workers() -> usize {
        1
    }

    fn default_batch() -> usize {
        4
    }

    fn default_queue_capacity() -> usize {
        16
    }
}

/// Longest context a model is read with (positions of the rotary tables).
pub const MAX_CONTEXT: usize = 4096;

/// Timing of one generation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timings {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Seconds spent reading the prompt.
    pub prompt_secs: f64,
    /// Generated tokens.
    pub tokens: usize,
    /// Seconds spent generating.
    pub decode_secs: f64,
}

/// Output of [`TextGenerator::generate`].
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationOutput {
    /// Generated text (special tokens removed).
    pub text: String,
    /// Generated token ids.
    pub token_ids: Vec<u32>,
    /// Why generation stopped.
    pub finish: FinishReason,
    /// Timings.
    pub timings: Timings,
}

/// A loaded model with its tokenizer and chat template: synchronous generation on the calling
/// thread. Cloning shares the weights and gives the clone its own KV cache.
#[derive(Clone)]
pub struct TextGenerator {
    model: LlamaModel,
    /// Further streams of the same weights, for answers generated together.
    spares: Spares,
    tokenizer: Arc<Tokenizer>,
    template: Arc<ChatTemplate>,
    stop_tokens: Vec<u32>,
    context: usize,
    weights: rakis_core::ModelWeights,
}

/// SHA-256 of a file, read in chunks.
fn file_sha256(path: &Path) -> Result<rakis_core::Hash32, InferenceError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| InferenceError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(rakis_core::Hash32(hasher.finalize().into()))
}

impl std::fmt::Debug for TextGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextGenerator")
            .field("context", &self.context)
            .field("stop_tokens", &self.stop_tokens)
            .finish()
    }
}

fn open(path: &Path) -> Result<std::fs::File, InferenceError> {
    std::fs::File::open(path).map_err(|e| InferenceError::io(path, e))
}

/// Rewrites a GGUF in memory with 4/5-bit block tensors requantized to Q8_0.
fn requantize_q8<R: Read + Seek>(
    ct: &gguf_file::Content,
    reader: &mut R,
) -> Result<Vec<u8>, InferenceError> {
    let device = Device::Cpu;
    let mut names: Vec<&String> = ct.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    for name in names {
        let qt = ct.tensor(reader, name, &device)?;
        let convertible = matches!(
            qt.dtype(),
            GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
        ) && qt.shape().dims().last().is_some_and(|d| d % 32 == 0);
        let qt = if convertible {
            QTensor::quantize(&qt.dequantize(&device)?, GgmlDType::Q8_0)?
        } else {
            qt
        };
        tensors.push((name.clone(), qt));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> =
        ct.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &refs)?;
    Ok(out.into_inner())
}

impl TextGenerator {
    /// Loads a GGUF file (and optional tokenizer/template overrides) on the CPU.
    pub fn load(
        gguf: &Path,
        weights: WeightFormat,
        tokenizer_json: Option<&Path>,
        chat_template: Option<&str>,
    ) -> Result<Self, InferenceError> {
        let started = Instant::now();
        let mut file = open(gguf)?;
        let ct = gguf_file::Content::read(&mut file).map_err(|e| InferenceError::Config {
            file: gguf.display().to_string(),
            source: SharedError::new(e),
        })?;
        let arch = ct
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            return Err(InferenceError::UnsupportedArchitecture(arch));
        }
        let tokenizer = match tokenizer_json {
            Some(p) => Tokenizer::from_file(p).map_err(InferenceError::tokenizers)?,
            None => tokenizer_from_gguf(&ct)?,
        };
        let special = special_tokens(&ct);
        let gguf_template = ct
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned();
        let template_src = chat_template.map(str::to_string).or(gguf_template);
        let template = ChatTemplate::new(
            template_src.as_deref(),
            special.bos_text.as_deref().unwrap_or(""),
            special.eos_text.as_deref().unwrap_or(""),
        )?;
        let mut stop_tokens: Vec<u32> = special.eos.into_iter().collect();
        for t in [
            "<|im_end|>",
            "<|eot_id|>",
            "<|end_of_text|>",
            "<|endoftext|>",
            "</s>",
        ] {
            if let Some(id) = tokenizer.token_to_id(t) {
                if !stop_tokens.contains(&id) {
                    stop_tokens.push(id);
                }
            }
        }
        let context = ct
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .map(|c| (c as usize).min(MAX_CONTEXT))
            .unwrap_or(MAX_CONTEXT);
        let device = Device::Cpu;
        // The model's identity in the protocol: the file's hash and how its weights are kept.
        let quantization = match weights {
            WeightFormat::Q8_0 => "Q8_0".to_string(),
            WeightFormat::F32 => "F32".to_string(),
            WeightFormat::AsStored => ct
                .tensor_infos
                .get("blk.0.attn_q.weight")
                .map(|t| format!("{:?}", t.ggml_dtype))
                .unwrap_or_else(|| "as stored".into()),
        };
        let weights_id = rakis_core::ModelWeights {
            sha256: file_sha256(gguf)?,
            quantization,
        };
        let model = match weights {
            WeightFormat::AsStored => LlamaModel::from_gguf(&ct, &mut file, &device)?,
            WeightFormat::F32 => LlamaModel::from_gguf_dequantized(&ct, &mut file, &device)?,
            WeightFormat::Q8_0 => {
                let bytes = requantize_q8(&ct, &mut file)?;
                let mut cursor = Cursor::new(bytes);
                let ct2 = gguf_file::Content::read(&mut cursor)?;
                LlamaModel::from_gguf(&ct2, &mut cursor, &device)?
            }
        };
        info!(
            file = %gguf.display(),
            ?weights,
            context,
            template_from_model = template.from_model,
            secs = started.elapsed().as_secs_f32(),
            "model loaded"
        );
        Ok(TextGenerator {
            model,
            spares: Spares::default(),
            tokenizer: Arc::new(tokenizer),
            template: Arc::new(template),
            stop_tokens,
            context,
            weights: weights_id,
        })
    }

    /// The weights this generator runs with (SHA-256 of the GGUF file, quantization).
    pub fn weights(&self) -> &rakis_core::ModelWeights {
        &self.weights
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Context length in tokens.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Renders the chat template for `messages`.
    pub fn render(&self, messages: &[rakis_core::ChatMessage]) -> Result<String, InferenceError> {
        self.template.render(messages)
    }

    /// Tokenizes a rendered prompt (special tokens in the text are recognised).
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>, InferenceError> {
        Ok(self
            .tokenizer
            .encode(prompt, false)
            .map_err(InferenceError::tokenizers)?
            .get_ids()
            .to_vec())
    }

    /// Clears the KV cache and reads a prompt in one forward pass; returns the logits of the
    /// next token.
    pub fn forward_prompt(&mut self, ids: &[u32]) -> Result<Tensor, InferenceError> {
        self.model.clear_cache();
        Ok(self.model.forward_prompt(ids, 0)?)
    }

    /// Feeds one token at position `pos` (after the prompt and earlier tokens); returns the
    /// logits of the next token.
    pub fn forward_token(&mut self, token: u32, pos: usize) -> Result<Tensor, InferenceError> {
        Ok(self.model.forward_rows(&[token], pos)?.squeeze(0)?)
    }

    /// Feeds one token to each of several generators (clones of one: they share its weights),
    /// at the position after what each has read, in one pass that reads the weights once for
    /// all; returns the logits after each, `(generators, vocab)`, bit for bit what
    /// [`forward_token`](Self::forward_token) gives each alone ([`LlamaModel::forward_batch`]).
    pub fn forward_batch(
        generators: &mut [&mut TextGenerator],
        tokens: &[u32],
    ) -> Result<Tensor, InferenceError> {
        let mut streams: Vec<&mut LlamaModel> =
            generators.iter_mut().map(|g| &mut g.model).collect();
        Ok(LlamaModel::forward_batch(&mut streams, tokens)?)
    }

    /// Feeds `tokens` at positions `pos..` in one pass; returns the logits after each,
    /// `(tokens.len(), vocab)`, bit for bit what [`forward_token`](Self::forward_token) gives
    /// token by token (see [`crate::llama`]).
    pub fn forward_rows(&mut self, tokens: &[u32], pos: usize) -> Result<Tensor, InferenceError> {
        Ok(self.model.forward_rows(tokens, pos)?)
    }

    /// Generates from chat messages. `deadline_ms` (wall clock, ms since the epoch) and
    /// `cancelled` are checked between tokens.
    pub fn generate(
        &mut self,
        messages: &[rakis_core::ChatMessage],
        sampling: SamplingParams,
        deadline_ms: Option<u64>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<GenerationOutput, InferenceError> {
        let ids = self.chat_ids(messages)?;
        self.generate_ids(&ids, sampling, deadline_ms, cancelled)
    }

    /// Chat messages rendered with the template and encoded (an all-blank chat is refused).
    fn chat_ids(&self, messages: &[rakis_core::ChatMessage]) -> Result<Vec<u32>, InferenceError> {
        if messages.iter().all(|m| m.content.trim().is_empty()) {
            return Err(InferenceError::InvalidPrompt("empty prompt".into()));
        }
        self.encode(&self.render(messages)?)
    }

    /// Replays a committer's sampling of `answer` (token ids, without the stop token) after
    /// `prompt` under `sampling` (its spec, seed and token limit): one pass over the answer
    /// ([`forward_rows`](Self::forward_rows), the generator's logits bit for bit on the same
    /// engine), each position's claimed token checked against the canonical sampler with the
    /// position's random number, and the end against `ending`.
    pub fn replay_ids(
        &mut self,
        prompt: &[u32],
        answer: &[u32],
        sampling: SamplingParams,
        ending: Ending,
    ) -> Result<Replay, InferenceError> {
        if prompt.is_empty() {
            return Err(InferenceError::InvalidPrompt("no prompt tokens".into()));
        }
        if prompt.len() + answer.len() >= self.context {
            return Err(InferenceError::PromptTooLong {
                tokens: prompt.len() + answer.len(),
                context: self.context,
            });
        }
        let spec = sampling.spec();
        let row = |t: &Tensor| -> Result<Vec<f32>, InferenceError> {
            Ok(t.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?)
        };
        let first = self.forward_prompt(prompt)?;
        // An id past the vocabulary cannot have been drawn (and cannot be read).
        let vocab = first.dim(0)?;
        if let Some(k) = answer.iter().position(|&t| t as usize >= vocab) {
            let mut replay = Replay::default();
            replay.record(k as u32, Draw::Outside);
            return Ok(replay);
        }
        let rows = if answer.is_empty() {
            None
        } else {
            Some(self.forward_rows(answer, prompt.len())?)
        };
        let logits_at = |k: usize| -> Result<Vec<f32>, InferenceError> {
            match (k, &rows) {
                (0, _) => row(&first),
                (k, Some(rows)) => row(&rows.get(k - 1)?),
                (_, None) => unreachable!("only position 0 without answer rows"),
            }
        };
        // Each position's check builds the distribution of its logits over the whole
        // vocabulary: the positions are spread over the threads, a few at a time (each holds a
        // copy of its logits).
        const AT_ONCE: usize = 16;
        let parallel = crate::pool::threads() > 1;
        let mut replay = Replay::default();
        for (c, chunk) in answer.chunks(AT_ONCE).enumerate() {
            let mut positions: Vec<(u32, f64, Vec<f32>, Draw)> = chunk
                .iter()
                .enumerate()
                .map(|(i, &token)| {
                    let k = c * AT_ONCE + i;
                    let u = position_random(&sampling.seed, k as u32);
                    Ok((token, u, logits_at(k)?, Draw::Outside))
                })
                .collect::<Result<_, InferenceError>>()?;
            crate::pool::for_each(parallel, &mut positions, |(token, u, logits, draw)| {
                *draw = check(logits, spec, *u, *token);
            });
            for (i, (_, _, _, draw)) in positions.into_iter().enumerate() {
                replay.record((c * AT_ONCE + i) as u32, draw);
            }
        }
        replay.end = match ending {
            Ending::Stop => {
                let k = answer.len();
                let logits = logits_at(k)?;
                let u = position_random(&sampling.seed, k as u32);
                let d = Distribution::new(&logits, spec);
                let best = self
                    .stop_tokens
                    .iter()
                    .map(|&t| d.check(&logits, u, t))
                    .min_by(|a, b| draw_rank(a).total_cmp(&draw_rank(b)));
                Some(best.unwrap_or(Draw::Outside))
            }
            Ending::Limit
                if answer.len() >= sampling.max_tokens
                    || prompt.len() + answer.len() >= self.context =>
            {
                None
            }
            // Claims the limit short of it.
            Ending::Limit => Some(Draw::Outside),
        };
        Ok(replay)
    }

    /// [`replay_ids`](Self::replay_ids) from chat messages.
    pub fn replay(
        &mut self,
        messages: &[rakis_core::ChatMessage],
        answer: &[u32],
        sampling: SamplingParams,
        ending: Ending,
    ) -> Result<Replay, InferenceError> {
        let prompt = self.render(messages)?;
        let ids = self.encode(&prompt)?;
        self.replay_ids(&ids, answer, sampling, ending)
    }

    /// The second check of one reveal ([`InferenceEngine::score`] without the queue or the
    /// deadline): [`replay`](Self::replay) of the job's ids, and whether its text is their
    /// decoding.
    pub fn score(&mut self, job: &ScoreJob) -> Result<Score, InferenceError> {
        let sampling = SamplingParams {
            temperature: job.temperature,
            top_p: job.top_p,
            seed: job.seed,
            max_tokens: job.max_tokens as usize,
        };
        let mut r = self.replay(&job.messages, &job.token_ids, sampling, job.ending)?;
        // The text must be the ids' decoding (ids past the vocabulary are already out).
        if r.outside.is_empty() {
            r.text_mismatch = self.decode(&job.token_ids)? != job.text;
        }
        Ok(r)
    }

    /// A generation job ([`InferenceEngine::generate`] without the queue), checking its
    /// deadline (when `deadline` is set) and `cancelled` between tokens.
    pub fn run_job(
        &mut self,
        job: &GenerationJob,
        deadline: bool,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Generation, InferenceError> {
        let prompt = self.prompt_for(job, deadline)?;
        let out = self.generate_ids(&prompt.ids, prompt.sampling, prompt.deadline_ms, cancelled)?;
        Ok(generation(job, out))
    }

    /// A generation job's prompt: its messages rendered and encoded, its sampling, and its
    /// deadline when `deadline` is set.
    pub fn prompt_for(
        &self,
        job: &GenerationJob,
        deadline: bool,
    ) -> Result<BatchPrompt, InferenceError> {
        Ok(BatchPrompt {
            ids: self.chat_ids(&job.messages)?,
            sampling: SamplingParams {
                temperature: job.temperature,
                top_p: job.top_p,
                seed: job.seed,
                max_tokens: job.max_tokens as usize,
            },
            deadline_ms: deadline.then_some(job.deadline_ms),
        })
    }

    /// The ids that stop generation (end of turn, end of text).
    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop_tokens
    }

    /// Decodes token ids to text (special tokens removed), as generation does.
    pub fn decode(&self, ids: &[u32]) -> Result<String, InferenceError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(InferenceError::tokenizers)
    }

    /// Generates from prompt token ids.
    pub fn generate_ids(
        &mut self,
        ids: &[u32],
        sampling: SamplingParams,
        deadline_ms: Option<u64>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<GenerationOutput, InferenceError> {
        let prompt = BatchPrompt {
            ids: ids.to_vec(),
            sampling,
            deadline_ms,
        };
        let mut result = None;
        self.generate_batch(&[prompt], &|_| cancelled(), &mut |_, r| result = Some(r));
        result.unwrap_or_else(|| Err(InferenceError::InvalidPrompt("no answer".into())))
    }

    /// Generates several answers together: each prompt is read on its own stream (a clone of
    /// the model's cache), then every step decodes one token of each unfinished answer in one
    /// pass ([`LlamaModel::forward_batch`]: the weights are read once for all of them). Each
    /// answer is what [`generate_ids`](Self::generate_ids) gives alone — bit for bit in the
    /// block formats, and in f32 as well (the f32 products then run row by row). `done(i, r)`
    /// receives prompt `i`'s answer as soon as it is finished; `cancelled(i)` and each prompt's
    /// deadline are checked between tokens. The answers are the same; their times are not:
    /// every prompt is read before decoding starts and a step of several streams takes longer
    /// than one, so an answer near its deadline can miss it in a batch where alone it would not.
    pub fn generate_batch(
        &mut self,
        prompts: &[BatchPrompt],
        cancelled: &dyn Fn(usize) -> bool,
        done: &mut dyn FnMut(usize, Result<GenerationOutput, InferenceError>),
    ) {
        let TextGenerator {
            model,
            spares,
            tokenizer,
            stop_tokens,
            context,
            ..
        } = self;
        while spares.0.len() + 1 < prompts.len() {
            spares.0.push(model.clone());
        }
        let mut models: Vec<&mut LlamaModel> = std::iter::once(model)
            .chain(spares.0.iter_mut())
            .take(prompts.len())
            .collect();
        // Prompts read one by one; the answers then decoded together.
        let mut active: Vec<Decoding> = Vec::with_capacity(prompts.len());
        for (i, (p, m)) in prompts.iter().zip(models.iter_mut()).enumerate() {
            match Decoding::start(i, p, m, *context) {
                Ok(d) => active.push(d),
                Err(e) => done(i, Err(e)),
            }
        }
        let decode_start = Instant::now();
        while !active.is_empty() {
            let mut tokens = Vec::with_capacity(active.len());
            let mut still = Vec::with_capacity(active.len());
            for mut d in active.drain(..) {
                match d.step(stop_tokens, *context, cancelled(d.index)) {
                    Ok(Some(next)) => {
                        tokens.push(next);
                        still.push(d);
                    }
                    Ok(None) => {
                        let index = d.index;
                        done(index, d.finish(tokenizer, decode_start));
                    }
                    Err(e) => done(d.index, Err(e)),
                }
            }
            if still.is_empty() {
                break;
            }
            let mut batch: Vec<&mut LlamaModel> = models
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| still.iter().any(|d| d.index == *i))
                .map(|(_, m)| &mut **m)
                .collect();
            match LlamaModel::forward_batch(&mut batch, &tokens) {
                Ok(rows) => {
                    for (b, d) in still.iter_mut().enumerate() {
                        d.logits = rows.get(b);
                    }
                    active = still;
                }
                Err(e) => {
                    // Every unfinished answer fails with the step (the first with its source).
                    let msg = e.to_string();
                    let mut first = Some(e);
                    for d in still {
                        let e = first
                            .take()
                            .unwrap_or_else(|| candle_core::Error::Msg(msg.clone()));
                        done(d.index, Err(e.into()));
                    }
                }
            }
        }
    }
}

/// The [`Generation`] answering `job`, logged.
fn generation(job: &GenerationJob, o: GenerationOutput) -> Generation {
    let t = o.timings;
    info!(
        prompt_tokens = t.prompt_tokens,
        tokens = t.tokens,
        prompt_tps = t.prompt_tokens as f64 / t.prompt_secs.max(1e-9),
        decode_tps = t.tokens as f64 / t.decode_secs.max(1e-9),
        "generated"
    );
    Generation {
        text: o.text,
        model: job.model.clone(),
        prompt_tokens: t.prompt_tokens as u32,
        tokens: t.tokens as u32,
        token_ids: o.token_ids,
        tokens_per_sec: (t.tokens as f64 / t.decode_secs.max(1e-9)) as f32,
        finish: o.finish,
    }
}

/// A prompt of [`TextGenerator::generate_batch`].
#[derive(Clone, Debug, PartialEq)]
pub struct BatchPrompt {
    /// Prompt token ids.
    pub ids: Vec<u32>,
    /// Sampling settings (the seed fixes the answer).
    pub sampling: SamplingParams,
    /// Wall-clock deadline, ms since the epoch.
    pub deadline_ms: Option<u64>,
}

/// Streams kept between batches (a clone of a generator starts without any).
#[derive(Default)]
struct Spares(Vec<LlamaModel>);

impl Clone for Spares {
    fn clone(&self) -> Self {
        Spares::default()
    }
}

/// One answer being generated.
struct Decoding {
    /// Its prompt's index.
    index: usize,
    prompt_tokens: usize,
    sampling: SamplingParams,
    spec: SamplerSpec,
    deadline_ms: Option<u64>,
    /// The logits of the next token (a `Result`: a failed row is an error of this answer).
    logits: candle_core::Result<Tensor>,
    out: Vec<u32>,
    finish: Option<FinishReason>,
    prompt_secs: f64,
}

impl Decoding {
    /// Reads the prompt on `model` (its cache cleared first).
    fn start(
        index: usize,
        p: &BatchPrompt,
        model: &mut LlamaModel,
        context: usize,
    ) -> Result<Decoding, InferenceError> {
        if p.ids.is_empty() {
            return Err(InferenceError::InvalidPrompt("no prompt tokens".into()));
        }
        if p.ids.len() >= context {
            return Err(InferenceError::PromptTooLong {
                tokens: p.ids.len(),
                context,
            });
        }
        let t0 = Instant::now();
        model.clear_cache();
        let logits = Ok(model.forward_prompt(&p.ids, 0)?);
        Ok(Decoding {
            index,
            prompt_tokens: p.ids.len(),
            sampling: p.sampling,
            spec: p.sampling.spec(),
            deadline_ms: p.deadline_ms,
            logits,
            out: Vec::new(),
            finish: None,
            prompt_secs: t0.elapsed().as_secs_f64(),
        })
    }

    /// Draws the next token from the logits: `Some(token)` to feed, `None` when finished.
    fn step(
        &mut self,
        stop_tokens: &[u32],
        context: usize,
        cancelled: bool,
    ) -> Result<Option<u32>, InferenceError> {
        let logits = std::mem::replace(
            &mut self.logits,
            Err(candle_core::Error::Msg("used".into())),
        )?;
        let row = logits.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        let u = position_random(&self.sampling.seed, self.out.len() as u32);
        let Some(next) = Distribution::new(&row, self.spec).sample(u) else {
            return Err(InferenceError::InvalidPrompt(
                "the model gave no finite logit".into(),
            ));
        };
        if stop_tokens.contains(&next) {
            self.finish = Some(FinishReason::Eos);
            return Ok(None);
        }
        self.out.push(next);
        if self.out.len() >= self.sampling.max_tokens
            || self.prompt_tokens + self.out.len() >= context
        {
            self.finish = Some(FinishReason::MaxTokens);
            return Ok(None);
        }
        let past_deadline = self.deadline_ms.is_some_and(|d| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|n| n.as_millis() as u64 > d)
                .unwrap_or(false)
        });
        if past_deadline || cancelled {
            return Err(InferenceError::DeadlineExceeded);
        }
        Ok(Some(next))
    }

    /// The finished answer (its batch began decoding at `decode_start`).
    fn finish(
        self,
        tokenizer: &Tokenizer,
        decode_start: Instant,
    ) -> Result<GenerationOutput, InferenceError> {
        let text = tokenizer
            .decode(&self.out, true)
            .map_err(InferenceError::tokenizers)?;
        Ok(GenerationOutput {
            text,
            finish: self.finish.unwrap_or(FinishReason::MaxTokens),
            timings: Timings {
                prompt_tokens: self.prompt_tokens,
                prompt_secs: self.prompt_secs,
                tokens: self.out.len(),
                decode_secs: decode_start.elapsed().as_secs_f64(),
            },
            token_ids: self.out,
        })
    }
}

/// Sampling settings: the protocol's canonical sampler ([`rakis_core::consensus::sampling`])
/// with the random numbers of `seed`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    /// Temperature; `<= 0` = greedy.
    pub temperature: f32,
    /// Nucleus mass; `>= 1` = no nucleus cut.
    pub top_p: f32,
    /// The sampling seed (a committer's VRF output for the request).
    pub seed: Hash32,
    /// Token limit.
    pub max_tokens: usize,
}

impl SamplingParams {
    /// Greedy decoding of at most `max_tokens`.
    pub fn greedy(max_tokens: usize) -> Self {
        SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            seed: Hash32([0; 32]),
            max_tokens,
        }
    }

    /// The canonical sampler's settings.
    pub fn spec(&self) -> SamplerSpec {
        SamplerSpec {
            temperature: self.temperature,
            top_p: self.top_p,
        }
    }
}

enum Job {
    Generate {
        job: GenerationJob,
        reply: oneshot::Sender<Result<Generation, EngineError>>,
    },
    Score {
        job: ScoreJob,
        reply: oneshot::Sender<Result<Score, EngineError>>,
    },
}

/// The default [`InferenceEngine`]: a GGUF model served by worker threads, each with its own
/// KV cache, fed from a bounded queue.
pub struct CandleEngine {
    model_name: String,
    workers: usize,
    weights: rakis_core::ModelWeights,
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    slots: Arc<Semaphore>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for CandleEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CandleEngine")
            .field("model", &self.model_name)
            .field("workers", &self.workers)
            .finish()
    }
}

impl CandleEngine {
    /// Loads the GGUF `file` from `source` and starts the workers.
    pub fn load(
        source: &ModelSource,
        file: &str,
        config: EngineConfig,
    ) -> Result<Self, InferenceError> {
        let path = source.file(file)?;
        let generator = TextGenerator::load(
            &path,
            config.weights,
            config.tokenizer_json.as_deref(),
            config.chat_template.as_deref(),
        )?;
        Ok(Self::from_generator(generator, config))
    }

    /// Starts workers around an already loaded model.
    pub fn from_generator(generator: TextGenerator, config: EngineConfig) -> Self {
        let workers = config.workers.max(1);
        let batch = config.batch.max(1);
        let weights = generator.weights().clone();
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..workers)
            .map(|i| {
                let rx = rx.clone();
                let mut generator = generator.clone();
                std::thread::Builder::new()
                    .name(format!("rakis-llm-{i}"))
                    .spawn(move || worker(i, &mut generator, &rx, batch))
                    .expect("spawning a worker thread")
            })
            .collect();
        CandleEngine {
            model_name: config.model_name,
            workers,
            weights,
            queue: Mutex::new(Some(tx)),
            slots: Arc::new(Semaphore::new(workers + config.queue_capacity)),
            threads: Mutex::new(threads),
        }
    }
}

fn worker(
    index: usize,
    generator: &mut TextGenerator,
    rx: &Mutex<mpsc::Receiver<Job>>,
    batch: usize,
) {
    loop {
        let next = rx.lock().map(|r| r.recv());
        let Ok(Ok(job)) = next else {
            debug!(worker = index, "worker stops");
            return;
        };
        let mut generate = Vec::new();
        let mut score = Vec::new();
        let take = |job, generate: &mut Vec<_>, score: &mut Vec<_>| match job {
            Job::Generate { job, reply } => generate.push((job, reply)),
            Job::Score { job, reply } => score.push((job, reply)),
        };
        take(job, &mut generate, &mut score);
        // Generation jobs already waiting are decoded together with this one (the weights are
        // read once a step for all of them). Only if the queue is free: another worker may be
        // holding it while it waits for a job, and waiting here for that lock would hold this
        // job until a new one arrives. A replay taken first runs alone (replays have the
        // reveal window to meet); replays met on the way run before the generation.
        let rx = if generate.is_empty() {
            None
        } else {
            rx.try_lock().ok()
        };
        if let Some(rx) = rx {
            let mut pulled = 1;
            while pulled < 2 * batch {
                let Ok(job) = rx.try_recv() else { break };
                take(job, &mut generate, &mut score);
                pulled += 1;
                if generate.len() >= batch {
                    break;
                }
            }
        }
        for (job, reply) in score {
            score_job(index, generator, job, reply);
        }
        generate_jobs(index, generator, generate);
    }
}

fn score_job(
    index: usize,
    generator: &mut TextGenerator,
    job: ScoreJob,
    reply: oneshot::Sender<Result<Score, EngineError>>,
) {
    let span = info_span!("score", request = %job.request_id.short(), worker = index);
    let _e = span.enter();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|n| n.as_millis() as u64)
        .unwrap_or(0);
    if now > job.deadline_ms || reply.is_closed() {
        let _ = reply.send(Err(EngineError::DeadlineExceeded));
        return;
    }
    let started = Instant::now();
    let result = generator
        .score(&job)
        .inspect(|r| {
            debug!(
                tokens = r.tokens,
                same = r.same,
                near = r.near.len(),
                outside = r.outside.len(),
                secs = started.elapsed().as_secs_f32(),
                "replayed"
            )
        })
        .map_err(EngineError::from);
    let _ = reply.send(result);
}

fn generate_jobs(
    index: usize,
    generator: &mut TextGenerator,
    jobs: Vec<(
        GenerationJob,
        oneshot::Sender<Result<Generation, EngineError>>,
    )>,
) {
    if jobs.is_empty() {
        return;
    }
    let span = info_span!("generate", worker = index, answers = jobs.len());
    let _e = span.enter();
    let mut prompts = Vec::with_capacity(jobs.len());
    let mut ready = Vec::with_capacity(jobs.len());
    let mut replies = Vec::with_capacity(jobs.len());
    for (job, reply) in jobs {
        match generator.prompt_for(&job, true) {
            Ok(p) => {
                prompts.push(p);
                ready.push(job);
                replies.push(std::cell::RefCell::new(Some(reply)));
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }
    generator.generate_batch(
        &prompts,
        // A caller that stopped waiting cancels its answer.
        &|i| replies[i].borrow().as_ref().is_none_or(|r| r.is_closed()),
        &mut |i, result| {
            let job = &ready[i];
            let span = info_span!("answer", request = %job.request_id.short());
            let _e = span.enter();
            let result = result
                .map(|o| generation(job, o))
                .map_err(EngineError::from);
            if let Some(reply) = replies[i].borrow_mut().take() {
                let _ = reply.send(result);
            }
        },
    );
}

impl Drop for CandleEngine {
    fn drop(&mut self) {
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
        if let Ok(mut threads) = self.threads.lock() {
            for t in threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}

#[async_trait]
impl InferenceEngine for CandleEngine {
    fn models(&self) -> Vec<String> {
        vec![self.model_name.clone()]
    }

    fn workers(&self) -> usize {
        self.workers
    }

    fn weights(&self, model: &str) -> Option<rakis_core::ModelWeights> {
        (model == self.model_name).then(|| self.weights.clone())
    }

    async fn generate(&self, job: GenerationJob) -> Result<Generation, EngineError> {
        if job.model != self.model_name {
            return Err(EngineError::UnknownModel(job.model));
        }
        let (reply, rx) = oneshot::channel();
        self.run(Job::Generate { job, reply }, rx).await
    }

    /// One pass over the answer on a worker (the generator's logits bit for bit when the
    /// weights and build are the committer's; see [`crate::llama`]).
    async fn score(&self, job: ScoreJob) -> Result<Score, EngineError> {
        if job.model != self.model_name {
            return Err(EngineError::UnknownModel(job.model));
        }
        let (reply, rx) = oneshot::channel();
        self.run(Job::Score { job, reply }, rx).await
    }
}

impl CandleEngine {
    /// Queues `job` for a worker (waiting for a slot: backpressure) and waits for its answer.
    async fn run<T>(
        &self,
        job: Job,
        rx: oneshot::Receiver<Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        let stopped = || EngineError::Other(SharedError::new(InferenceError::Stopped));
        let _permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| stopped())?;
        {
            let q = self.queue.lock().map_err(|_| stopped())?;
            let tx = q.as_ref().ok_or_else(stopped)?;
            tx.send(job).map_err(|_| stopped())?;
        }
        rx.await.map_err(|_| stopped())?
    }
}

/// Orders draws from best to worst (for picking the best stop token).
fn draw_rank(d: &Draw) -> f64 {
    match *d {
        Draw::Same => -1.0,
        Draw::Near { distance } => distance,
        Draw::Outside => f64::INFINITY,
    }
}
