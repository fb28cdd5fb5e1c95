//! Paths of the test models and fixtures.
#![allow(dead_code)]

use std::path::PathBuf;

/// The directory of the test models: `RAKIS_MODELS_DIR`, or `.cache/models` at the workspace
/// root (filled by `scripts/fetch-models.sh`).
pub fn default_models_dir() -> PathBuf {
    match std::env::var_os("RAKIS_MODELS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/models"),
    }
}

/// The models directory, checked to hold the test models.
pub fn models_dir() -> PathBuf {
    let d = default_models_dir();
    assert!(
        d.join("all-MiniLM-L6-v2/model.safetensors").is_file()
            && d.join("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
                .is_file(),
        "test models missing in {}: run scripts/fetch-models.sh",
        d.display()
    );
    d
}

/// all-MiniLM-L6-v2.
pub fn minilm_dir() -> PathBuf {
    models_dir().join("all-MiniLM-L6-v2")
}

/// SmolLM2 GGUF file.
pub fn smollm_gguf() -> PathBuf {
    models_dir().join("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// A reference fixture of `tests/fixtures` (how each was produced: `tests/fixtures/README.md`).
pub fn fixture(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {} unreadable: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}
