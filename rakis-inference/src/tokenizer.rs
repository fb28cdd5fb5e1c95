//! A `tokenizers::Tokenizer` built from GGUF metadata (byte-level BPE), so that one GGUF file
//! is enough to run a model.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::json;
use tokenizers::Tokenizer;

use crate::InferenceError;
use rakis_core::error::SharedError;

/// GGUF token type of control (special) tokens.
const TOKEN_TYPE_CONTROL: i32 = 3;
/// GGUF token type of user-defined (added) tokens.
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// The GPT-2 pre-tokenizer split (also used by the byte-level pre-tokenizer itself).
const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3 pre-tokenizer split.
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2 pre-tokenizer split.
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn md<'a>(ct: &'a Content, key: &str) -> Option<&'a Value> {
    ct.metadata.get(key)
}

fn md_str(ct: &Content, key: &str) -> Option<String> {
    md(ct, key).and_then(|v| v.to_string().ok()).cloned()
}

fn md_strings(ct: &Content, key: &str) -> Result<Vec<String>, InferenceError> {
    let v = md(ct, key)
        .ok_or_else(|| InferenceError::tokenizer(format!("GGUF has no {key}")))?
        .to_vec()
        .map_err(|e| InferenceError::tokenizer(format!("{key}: {e}")))?;
    v.iter()
        .map(|x| {
            x.to_string()
                .cloned()
                .map_err(|e| InferenceError::tokenizer(format!("{key}: {e}")))
        })
        .collect()
}

/// Special token ids read from the GGUF.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning of sequence.
    pub bos: Option<u32>,
    /// End of sequence.
    pub eos: Option<u32>,
    /// Whether the model expects BOS prepended.
    pub add_bos: bool,
    /// Text of the BOS token.
    pub bos_text: Option<String>,
    /// Text of the EOS token.
    pub eos_text: Option<String>,
}

/// Reads the special tokens of a GGUF.
pub fn special_tokens(ct: &Content) -> SpecialTokens {
    let id = |k: &str| md(ct, k).and_then(|v| v.to_u32().ok());
    let tokens = md_strings(ct, "tokenizer.ggml.tokens").unwrap_or_default();
    let text = |i: Option<u32>| i.and_then(|i| tokens.get(i as usize).cloned());
    let bos = id("tokenizer.ggml.bos_token_id");
    let eos = id("tokenizer.ggml.eos_token_id");
    SpecialTokens {
        bos,
        eos,
        add_bos: md(ct, "tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false),
        bos_text: text(bos),
        eos_text: text(eos),
    }
}

/// Builds a byte-level BPE tokenizer from `tokenizer.ggml.*` metadata.
///
/// Supported: `tokenizer.ggml.model = "gpt2"` with the pre-tokenizers `default`/`gpt2`,
/// `smollm`/`starcoder`/`refact`/`codeshell` (digits split individually), `llama-bpe`/`llama3`
/// and `qwen2`. SentencePiece (`llama`) vocabularies need a `tokenizer.json`.
pub fn tokenizer_from_gguf(ct: &Content) -> Result<Tokenizer, InferenceError> {
    let model = md_str(ct, "tokenizer.ggml.model").unwrap_or_default();
    if model != "gpt2" {
        return Err(InferenceError::tokenizer(format!(
            "GGUF tokenizer model {model:?} is not byte-level BPE; pass a tokenizer.json"
        )));
    }
    let tokens = md_strings(ct, "tokenizer.ggml.tokens")?;
    let merges = md_strings(ct, "tokenizer.ggml.merges")?;
    let types: Vec<i32> = match md(ct, "tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| InferenceError::Tokenizer(SharedError::new(e)))?
            .iter()
            .map(|x| x.to_i32().unwrap_or(1))
            .collect(),
        None => vec![1; tokens.len()],
    };
    let pre = md_str(ct, "tokenizer.ggml.pre").unwrap_or_else(|| "default".into());
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    let pre_tokenizer = match pre.as_str() {
        "default" | "gpt2" | "gpt-2" => byte_level(true),
        "smollm" | "starcoder" | "refact" | "codeshell" => json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]
        }),
        "llama-bpe" | "llama3" | "llama-v3" => json!({
            "type": "Sequence", "pretokenizers": [split(LLAMA3_PATTERN), byte_level(false)]
        }),
        "qwen2" => json!({
            "type": "Sequence", "pretokenizers": [split(QWEN2_PATTERN), byte_level(false)]
        }),
        other => {
            return Err(InferenceError::tokenizer(format!(
                "unsupported GGUF pre-tokenizer {other:?}"
            )))
        }
    };
    let _ = GPT2_PATTERN; // documented: the byte-level pre-tokenizer's own split.

    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, t) in tokens.iter().enumerate() {
        if let Some(prev) = seen.insert(t.as_str(), i) {
            return Err(InferenceError::tokenizer(format!(
                "duplicate token {t:?} at {prev} and {i}"
            )));
        }
        vocab.insert(t.clone(), json!(i));
        let ty = types.get(i).copied().unwrap_or(1);
        if ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED {
            added.push(json!({
                "id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": ty == TOKEN_TYPE_CONTROL
            }));
        }
    }
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges
        }
    });
    spec.to_string()
        .parse::<Tokenizer>()
        .map_err(InferenceError::tokenizers)
}
