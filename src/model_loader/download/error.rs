//! What can go wrong downloading a model; every variant names the model and the file.

use std::path::PathBuf;

/// Errors downloading a model.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The entry has no hub repo (a bundled-only model).
    #[error("model \"{id}\" has no `repo` in models.toml, so there is nothing to download")]
    NoRepo {
        /// The id.
        id: String,
    },
    /// Offline mode and the cache lacks files.
    #[error(
        "HF_HUB_OFFLINE is set and the Hugging Face cache {} lacks {} of the {total} files of model \"{id}\" ({origin}): {}; unset HF_HUB_OFFLINE and run `sdxl models download {id}`",
        cache.display(),
        missing.len(),
        missing.join(", ")
    )]
    Offline {
        /// The id.
        id: String,
        /// `org/name at revision`.
        origin: String,
        /// The cache searched.
        cache: PathBuf,
        /// Repo paths not in the cached snapshot.
        missing: Vec<String>,
        /// Files the entry lists.
        total: usize,
    },
    /// The hub has no such file (404).
    #[error(
        "file \"{file}\" of model \"{id}\" was not found on the hub: {url} answered 404; check `repo`, `revision`, `subfolder` and `files` of the entry in models.toml"
    )]
    NotFound {
        /// The id.
        id: String,
        /// Path in the repo.
        file: String,
        /// The URL asked.
        url: String,
    },
    /// 401/403: private, gated or nonexistent repo.
    #[error(
        "the hub refused file \"{file}\" of model \"{id}\" ({url}: HTTP {status}): the repo may be gated, private or misspelled; accept its licence on the hub and set HF_TOKEN to a token with access"
    )]
    Unauthorized {
        /// The id.
        id: String,
        /// Path in the repo.
        file: String,
        /// The URL asked.
        url: String,
        /// 401 or 403.
        status: u16,
    },
    /// Any other transfer failure; a partial `.part` file stays and the next run resumes it.
    #[error(
        "downloading file \"{file}\" of model \"{id}\" from {url} failed: {reason}; run the download again to resume"
    )]
    Transfer {
        /// The id.
        id: String,
        /// Path in the repo.
        file: String,
        /// The URL asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The downloaded bytes do not match the hub's etag; the blob was removed.
    #[error(
        "file \"{file}\" of model \"{id}\" is corrupt after download ({algorithm} {actual}, the hub says {expected}); it was removed, run the download again"
    )]
    Integrity {
        /// The id.
        id: String,
        /// Path in the repo.
        file: String,
        /// `sha256` or `git-sha1`.
        algorithm: &'static str,
        /// The hub's etag.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// The revision moved while downloading and files are still missing from its snapshot.
    #[error(
        "model \"{id}\": {repo} at {revision} changed during the download and its snapshot still lacks {}; run the download again",
        missing.join(", ")
    )]
    Unsettled {
        /// The id.
        id: String,
        /// `org/name`.
        repo: String,
        /// The revision.
        revision: String,
        /// Repo paths missing.
        missing: Vec<String>,
    },
    /// A local file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}
