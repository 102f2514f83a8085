//! Where and how to reach the hub: endpoint, cache, token, offline mode.

use std::path::PathBuf;

use crate::model_loader::hf_cache::{env_path, hf_home, hf_hub_cache};

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Resumed attempts per file after a broken transfer (with backoff) before giving up.
pub const DEFAULT_RETRIES: usize = 3;

/// Where and how to reach the hub. [`HubSettings::from_env`] reads the variables Python's
/// huggingface_hub reads; tests build it explicitly.
#[derive(Clone)]
pub struct HubSettings {
    /// Base URL (`HF_ENDPOINT`, default `https://huggingface.co`), without a trailing `/`.
    pub endpoint: String,
    /// The hub cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Bearer token (`HF_TOKEN`, else the file `HF_TOKEN_PATH` or `HF_HOME/token`).
    pub token: Option<String>,
    /// Never touch the network (`HF_HUB_OFFLINE=1`): only the cache answers.
    pub offline: bool,
    /// Resumed attempts per file after a broken transfer.
    pub max_retries: usize,
}

impl std::fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSettings")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl HubSettings {
    /// The public hub, online, no token, caching in `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            cache_dir: cache_dir.into(),
            token: None,
            offline: false,
            max_retries: DEFAULT_RETRIES,
        }
    }

    /// From `HF_ENDPOINT`, `HF_HUB_CACHE` / `HF_HOME`, `HF_TOKEN` / `HF_TOKEN_PATH` and
    /// `HF_HUB_OFFLINE`, with huggingface_hub's defaults.
    pub fn from_env() -> Self {
        let cache_dir = hf_hub_cache().unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"));
        let token = std::env::var("HF_TOKEN")
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .or_else(|| {
                let path =
                    env_path("HF_TOKEN_PATH").or_else(|| hf_home().map(|h| h.join("token")))?;
                let text = std::fs::read_to_string(path).ok()?;
                Some(text.trim().to_string()).filter(|t| !t.is_empty())
            });
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        Self {
            endpoint: endpoint.trim().trim_end_matches('/').to_string(),
            cache_dir,
            token,
            offline: std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| is_true(&v)),
            max_retries: DEFAULT_RETRIES,
        }
    }
}

/// huggingface_hub's `_is_true`: 1, ON, YES, TRUE in any case.
pub(super) fn is_true(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_values_follow_huggingface_hub() {
        for yes in ["1", "true", "YES", "on"] {
            assert!(is_true(yes));
        }
        for no in ["0", "", "false", "no"] {
            assert!(!is_true(no));
        }
    }
}
