//! Fetching a model's files from the Hugging Face hub into the shared cache with the `hf-hub`
//! crate (blocking ureq client).
//!
//! What `hf-hub` 0.4 does per file (read from its `api/sync.rs`): a `GET {endpoint}/{repo}/resolve/
//! {revision}/{path}` with `Range: bytes=0-0` and no redirects gives the commit (`x-repo-commit`),
//! the etag (`x-linked-etag`, else `etag`) and, after an absolute redirect to the CDN, the size
//! (`content-range`); the body then goes to `blobs/<etag>.part`, resumed with
//! `Range: bytes=<len>-` when a `.part` exists, renamed to `blobs/<etag>` only after the whole
//! body arrived, then linked from `snapshots/<commit>/<path>`, and `refs/<revision>` is written.
//!
//! What it does not do, and this module adds: honour `HF_HUB_OFFLINE` (checked against the cache
//! layout directly), `HF_HUB_CACHE` and `HF_TOKEN`, skip files already in the snapshot (its
//! `download` always transfers again), check each new blob against its etag (sha256 for LFS
//! files, the git blob sha1 otherwise) so that a resumed transfer that appended the wrong bytes
//! is removed instead of being taken as complete, and name the file in every error.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use hf_hub::api::Progress;
use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use serde::Serialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::hf_cache::{
    env_path, hf_home, hf_hub_cache, hf_snapshot_dir, missing_in_cache, repo_path,
};
use crate::registry::ModelEntry;

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
fn is_true(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

/// Progress of a download, for a caller to display.
#[derive(Debug, Clone, PartialEq)]
pub enum DownloadEvent<'a> {
    /// Already in the cache; nothing fetched.
    Cached {
        /// Path in the layout.
        file: &'a str,
        /// Its size.
        bytes: u64,
    },
    /// A transfer starts (`done` > 0 when it resumes a partial download).
    Started {
        /// Path in the layout.
        file: &'a str,
        /// Bytes already on disk.
        done: u64,
        /// Size of the file.
        total: u64,
    },
    /// Bytes of the current file on disk so far.
    Progress {
        /// Path in the layout.
        file: &'a str,
        /// Bytes on disk.
        done: u64,
        /// Size of the file.
        total: u64,
    },
    /// The file is complete and checked.
    Finished {
        /// Path in the layout.
        file: &'a str,
        /// Its size.
        bytes: u64,
    },
}

/// What happened to each file of a download.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DownloadReport {
    /// The registry id.
    pub id: String,
    /// `org/name`.
    pub repo: String,
    /// The revision asked for.
    pub revision: String,
    /// The commit it resolved to.
    pub commit: String,
    /// The layout root: `<cache>/models--org--name/snapshots/<commit>/<subfolder>`.
    pub dir: PathBuf,
    /// Files transferred (layout paths).
    pub fetched: Vec<String>,
    /// Files that were already in the cache.
    pub cached: Vec<String>,
}

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

/// Downloads every file `entry` lists (under its `subfolder`) into the hub cache of `hub`, or,
/// offline, checks that the cache holds them all. Files already in the cached snapshot of the
/// revision are not transferred again.
pub fn download_model(
    entry: &ModelEntry,
    hub: &HubSettings,
    progress: &mut dyn FnMut(DownloadEvent<'_>),
) -> Result<DownloadReport, DownloadError> {
    let repo = entry.repo.clone().ok_or_else(|| DownloadError::NoRepo {
        id: entry.id.clone(),
    })?;
    let job = Job {
        entry,
        repo: &repo,
        hub,
    };
    if hub.offline {
        return job.offline_report(progress);
    }
    let api = ApiBuilder::from_cache(Cache::new(hub.cache_dir.clone()))
        .with_endpoint(hub.endpoint.clone())
        .with_token(hub.token.clone())
        .with_progress(false)
        .with_retries(hub.max_retries)
        .with_user_agent("sdxl-backend", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| job.api_error(e, "", ""))?;
    let api_repo = api.repo(Repo::with_revision(
        repo.clone(),
        RepoType::Model,
        entry.revision.clone(),
    ));
    let mut fetched = Vec::new();
    let mut cached = Vec::new();
    // A second pass only runs when the revision moved to a new commit mid-way (files fetched
    // earlier then live in the old snapshot).
    for pass in 0..2 {
        let snapshot = hf_snapshot_dir(&hub.cache_dir, &repo, &entry.revision);
        for file in &entry.files {
            let path = repo_path(&entry.subfolder, file);
            if let Some(present) = snapshot
                .as_ref()
                .map(|s| s.join(&path))
                .filter(|p| p.is_file())
            {
                if pass == 0 {
                    let bytes = present.metadata().map_or(0, |m| m.len());
                    progress(DownloadEvent::Cached { file, bytes });
                    cached.push(file.clone());
                }
                continue;
            }
            let bytes = job.fetch(&api_repo, file, &path, progress)?;
            progress(DownloadEvent::Finished { file, bytes });
            if !fetched.contains(file) {
                fetched.push(file.clone());
            }
            cached.retain(|c| c != file);
        }
        if job.missing().is_empty() {
            break;
        }
    }
    let missing = job.missing();
    if !missing.is_empty() {
        return Err(DownloadError::Unsettled {
            id: entry.id.clone(),
            repo,
            revision: entry.revision.clone(),
            missing,
        });
    }
    job.report(fetched, cached)
}

struct Job<'a> {
    entry: &'a ModelEntry,
    repo: &'a str,
    hub: &'a HubSettings,
}

impl Job<'_> {
    fn repo_paths(&self) -> Vec<String> {
        self.entry
            .files
            .iter()
            .map(|f| repo_path(&self.entry.subfolder, f))
            .collect()
    }

    fn missing(&self) -> Vec<String> {
        let paths = self.repo_paths();
        missing_in_cache(
            &self.hub.cache_dir,
            self.repo,
            &self.entry.revision,
            paths.iter().map(String::as_str),
        )
    }

    fn report(
        &self,
        fetched: Vec<String>,
        cached: Vec<String>,
    ) -> Result<DownloadReport, DownloadError> {
        let snapshot = hf_snapshot_dir(&self.hub.cache_dir, self.repo, &self.entry.revision)
            .ok_or_else(|| DownloadError::Unsettled {
                id: self.entry.id.clone(),
                repo: self.repo.to_string(),
                revision: self.entry.revision.clone(),
                missing: self.repo_paths(),
            })?;
        let commit = snapshot
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = if self.entry.subfolder.is_empty() {
            snapshot
        } else {
            snapshot.join(&self.entry.subfolder)
        };
        Ok(DownloadReport {
            id: self.entry.id.clone(),
            repo: self.repo.to_string(),
            revision: self.entry.revision.clone(),
            commit,
            dir,
            fetched,
            cached,
        })
    }

    fn offline_report(
        &self,
        progress: &mut dyn FnMut(DownloadEvent<'_>),
    ) -> Result<DownloadReport, DownloadError> {
        let missing = self.missing();
        if !missing.is_empty() {
            return Err(DownloadError::Offline {
                id: self.entry.id.clone(),
                origin: format!("{} at {}", self.repo, self.entry.revision),
                cache: self.hub.cache_dir.clone(),
                missing,
                total: self.entry.files.len(),
            });
        }
        let report = self.report(Vec::new(), self.entry.files.clone())?;
        for file in &self.entry.files {
            let bytes = report.dir.join(file).metadata().map_or(0, |m| m.len());
            progress(DownloadEvent::Cached { file, bytes });
        }
        Ok(report)
    }

    /// Transfers one file and checks it; returns its size.
    fn fetch(
        &self,
        api_repo: &ApiRepo,
        file: &str,
        path: &str,
        progress: &mut dyn FnMut(DownloadEvent<'_>),
    ) -> Result<u64, DownloadError> {
        let url = api_repo.url(path);
        let adapter = ProgressAdapter {
            file,
            callback: progress,
            done: 0,
            total: 0,
            started: false,
        };
        let pointer = api_repo
            .download_with_progress(path, adapter)
            .map_err(|e| self.api_error(e, path, &url))?;
        self.verify(&pointer, path)?;
        pointer
            .metadata()
            .map(|m| m.len())
            .map_err(|source| DownloadError::Io {
                path: pointer.clone(),
                source,
            })
    }

    /// Checks the blob behind `pointer` against the etag it is named by; removes both on a
    /// mismatch so that nothing incomplete stays in the snapshot.
    fn verify(&self, pointer: &Path, path: &str) -> Result<(), DownloadError> {
        let Ok(target) = std::fs::read_link(pointer) else {
            return Ok(()); // not a symlink (hf-hub renames on Windows): nothing names the etag
        };
        let blob = pointer
            .parent()
            .map_or(target.clone(), |dir| dir.join(&target));
        let Some(etag) = blob
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            return Ok(());
        };
        let Some(algorithm) = etag_algorithm(&etag) else {
            return Ok(());
        };
        let io = |source| DownloadError::Io {
            path: blob.clone(),
            source,
        };
        let actual = hash_file(&blob, algorithm).map_err(io)?;
        if actual == etag.to_ascii_lowercase() {
            return Ok(());
        }
        std::fs::remove_file(pointer).map_err(|source| DownloadError::Io {
            path: pointer.to_path_buf(),
            source,
        })?;
        std::fs::remove_file(&blob).map_err(io)?;
        Err(DownloadError::Integrity {
            id: self.entry.id.clone(),
            file: path.to_string(),
            algorithm,
            expected: etag,
            actual,
        })
    }

    fn api_error(&self, error: ApiError, file: &str, url: &str) -> DownloadError {
        let id = self.entry.id.clone();
        let transfer = |reason: String| DownloadError::Transfer {
            id: id.clone(),
            file: file.to_string(),
            url: url.to_string(),
            reason,
        };
        match error {
            ApiError::RequestError(boxed) => match *boxed {
                ureq::Error::Status(404, _) => DownloadError::NotFound {
                    id,
                    file: file.to_string(),
                    url: url.to_string(),
                },
                ureq::Error::Status(status @ (401 | 403), _) => DownloadError::Unauthorized {
                    id,
                    file: file.to_string(),
                    url: url.to_string(),
                    status,
                },
                ureq::Error::Status(status, response) => {
                    transfer(format!("HTTP {status} {}", response.status_text()))
                }
                ureq::Error::Transport(transport) => transfer(transport.to_string()),
            },
            ApiError::TooManyRetries(inner) => match self.api_error(*inner, file, url) {
                DownloadError::Transfer { reason, .. } => transfer(format!(
                    "{reason} (after {} resumed attempts)",
                    self.hub.max_retries
                )),
                other => other,
            },
            ApiError::MissingHeader(header) => transfer(format!(
                "the answer lacks the `{header}` header; is HF_ENDPOINT ({}) a Hugging Face hub?",
                self.hub.endpoint
            )),
            ApiError::LockAcquisition(lock) => transfer(format!(
                "another process holds {} (a concurrent download of the same file)",
                lock.display()
            )),
            other => transfer(other.to_string()),
        }
    }
}

/// Which hash an etag is: 64 hex digits = sha256 of the content (LFS files), 40 = the git blob
/// sha1 (`sha1("blob <len>\0" + content)`, regular files).
fn etag_algorithm(etag: &str) -> Option<&'static str> {
    if !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match etag.len() {
        64 => Some("sha256"),
        40 => Some("git-sha1"),
        _ => None,
    }
}

fn hash_file(path: &Path, algorithm: &str) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut buffer = vec![0u8; 1 << 20];
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    if algorithm == "sha256" {
        let mut hasher = Sha256::new();
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                return Ok(hex(&hasher.finalize()));
            }
            hasher.update(&buffer[..n]);
        }
    }
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {}\0", file.metadata()?.len()).as_bytes());
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buffer[..n]);
    }
}

/// Bridges hf-hub's progress calls to [`DownloadEvent`]s. hf-hub calls `init` before the first
/// and before every resumed attempt, then `update(offset)` with the bytes already on disk.
struct ProgressAdapter<'a, 'b> {
    file: &'a str,
    callback: &'b mut dyn FnMut(DownloadEvent<'_>),
    done: u64,
    total: u64,
    started: bool,
}

impl Progress for ProgressAdapter<'_, '_> {
    fn init(&mut self, size: usize, _filename: &str) {
        self.total = size as u64;
        self.done = 0;
    }

    fn update(&mut self, size: usize) {
        self.done += size as u64;
        if !self.started {
            self.started = true;
            (self.callback)(DownloadEvent::Started {
                file: self.file,
                done: self.done,
                total: self.total,
            });
        } else {
            (self.callback)(DownloadEvent::Progress {
                file: self.file,
                done: self.done,
                total: self.total,
            });
        }
    }

    fn finish(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_name_their_hash() {
        assert_eq!(etag_algorithm(&"a".repeat(64)), Some("sha256"));
        assert_eq!(etag_algorithm(&"0".repeat(40)), Some("git-sha1"));
        assert_eq!(etag_algorithm("W/abc"), None);
    }

    #[test]
    fn git_blob_sha1_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "hello\n").unwrap();
        assert_eq!(
            hash_file(&path, "git-sha1").unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

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
