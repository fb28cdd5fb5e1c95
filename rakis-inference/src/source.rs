//! Where model files come from: a local directory or file, or the Hugging Face hub.

use std::path::{Path, PathBuf};

use crate::InferenceError;
use rakis_core::error::SharedError;

/// A source of model files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A local directory (files are looked up inside it) or a single file.
    Local(PathBuf),
    /// A repository on the Hugging Face hub (feature `hub`).
    Hub {
        /// Repository id, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
        repo: String,
        /// Revision (branch, tag or commit); `None` = `main`.
        revision: Option<String>,
        /// Cache directory; `None` = the hub's default (`HF_HOME`).
        cache_dir: Option<PathBuf>,
    },
}

impl ModelSource {
    /// A local directory or file.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        ModelSource::Local(path.into())
    }

    /// A hub repository at `main`, default cache.
    pub fn hub(repo: impl Into<String>) -> Self {
        ModelSource::Hub {
            repo: repo.into(),
            revision: None,
            cache_dir: None,
        }
    }

    /// Path of `file` from this source, downloading it (with a progress bar) when it comes from
    /// the hub and is not cached. With `HF_HUB_OFFLINE=1` only the cache is used.
    ///
    /// For a `Local` source naming a file, that file is returned whatever `file` is.
    pub fn file(&self, file: &str) -> Result<PathBuf, InferenceError> {
        match self {
            ModelSource::Local(p) => {
                let path = if p.is_file() { p.clone() } else { p.join(file) };
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(InferenceError::MissingFile(path.display().to_string()))
                }
            }
            ModelSource::Hub {
                repo,
                revision,
                cache_dir,
            } => hub_file(repo, revision.as_deref(), cache_dir.as_deref(), file),
        }
    }

    /// Like [`ModelSource::file`], but `Ok(None)` when the file does not exist (optional files).
    pub fn optional_file(&self, file: &str) -> Result<Option<PathBuf>, InferenceError> {
        match self.file(file) {
            Ok(p) => Ok(Some(p)),
            Err(InferenceError::MissingFile(_)) => Ok(None),
            Err(InferenceError::HubOffline { .. }) => Ok(None),
            // The hub client reports a missing file as an HTTP 404.
            Err(InferenceError::Hub { source, .. }) if source.to_string().contains("404") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Whether `HF_HUB_OFFLINE` asks for offline mode.
pub fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes" | "on"))
        .unwrap_or(false)
}

#[cfg(feature = "hub")]
fn hub_file(
    repo: &str,
    revision: Option<&str>,
    cache_dir: Option<&Path>,
    file: &str,
) -> Result<PathBuf, InferenceError> {
    use hf_hub::{Repo, RepoType};
    let hf_repo = match revision {
        Some(r) => Repo::with_revision(repo.to_string(), RepoType::Model, r.to_string()),
        None => Repo::new(repo.to_string(), RepoType::Model),
    };
    let cache = match cache_dir {
        Some(d) => hf_hub::Cache::new(d.to_path_buf()),
        None => hf_hub::Cache::from_env(),
    };
    if let Some(p) = cache.repo(hf_repo.clone()).get(file) {
        return Ok(p);
    }
    if hub_offline() {
        return Err(InferenceError::HubOffline {
            file: format!("{repo}/{file}"),
        });
    }
    tracing::info!(repo, file, "downloading from the Hugging Face hub");
    let mut builder = hf_hub::api::sync::ApiBuilder::from_env().with_progress(true);
    if let Some(d) = cache_dir {
        builder = builder.with_cache_dir(d.to_path_buf());
    }
    let hub_error = |e| InferenceError::Hub {
        file: format!("{repo}/{file}"),
        source: SharedError::new(e),
    };
    let api = builder.build().map_err(hub_error)?;
    api.repo(hf_repo).get(file).map_err(hub_error)
}

#[cfg(not(feature = "hub"))]
fn hub_file(
    repo: &str,
    _revision: Option<&str>,
    _cache_dir: Option<&Path>,
    file: &str,
) -> Result<PathBuf, InferenceError> {
    Err(InferenceError::Hub {
        file: format!("{repo}/{file}"),
        source: SharedError::msg("rakis-inference was built without the `hub` feature"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_sources_resolve_files_or_fail_typed() {
        let dir = std::env::temp_dir().join(format!("rakis-src-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.json"), "{}").unwrap();
        let s = ModelSource::local(&dir);
        assert_eq!(s.file("a.json").unwrap(), dir.join("a.json"));
        assert!(matches!(
            s.file("b.json"),
            Err(InferenceError::MissingFile(_))
        ));
        assert_eq!(s.optional_file("b.json").unwrap(), None);
        let f = ModelSource::local(dir.join("a.json"));
        assert_eq!(f.file("anything").unwrap(), dir.join("a.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(feature = "hub")]
    #[test]
    fn offline_hub_without_cache_is_a_typed_error() {
        let dir = std::env::temp_dir().join(format!("rakis-hub-{}", std::process::id()));
        // SAFETY-free: set_var is only unsafe in edition 2024; this crate is 2021.
        std::env::set_var("HF_HUB_OFFLINE", "1");
        let s = ModelSource::Hub {
            repo: "sentence-transformers/all-MiniLM-L6-v2".into(),
            revision: None,
            cache_dir: Some(dir),
        };
        let err = s.file("config.json").unwrap_err();
        assert!(matches!(&err, InferenceError::HubOffline { .. }), "{err}");
    }
}
