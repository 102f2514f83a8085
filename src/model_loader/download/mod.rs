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

mod error;
mod progress;
mod settings;
mod verify;

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use serde::Serialize;

pub use error::DownloadError;
pub use settings::{DEFAULT_ENDPOINT, DEFAULT_RETRIES, HubSettings};

use super::hf_cache::{hf_snapshot_dir, missing_in_cache, repo_path};
use crate::registry::ModelEntry;
use progress::ProgressAdapter;
use verify::{etag_algorithm, hash_file};

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
        let adapter = ProgressAdapter::new(file, progress);
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
