//! The Hugging Face hub cache, read directly so that offline checks need no network and no
//! client: the layout Python's huggingface_hub and the `hf-hub` crate share,
//!
//! ```text
//! <cache>/models--org--name/blobs/<etag>                      file contents (etag = sha256 for LFS files)
//! <cache>/models--org--name/snapshots/<commit>/<path>         relative symlink to ../../blobs/<etag>
//! <cache>/models--org--name/refs/<revision>                   the commit a branch or tag points to
//! ```

use std::path::{Path, PathBuf};

/// `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` (huggingface_hub's
/// rule, also on macOS and Windows).
pub fn hf_home() -> Option<PathBuf> {
    env_path("HF_HOME").or_else(|| {
        env_path("XDG_CACHE_HOME")
            .or_else(|| dirs::home_dir().map(|home| home.join(".cache")))
            .map(|cache| cache.join("huggingface"))
    })
}

/// The hub cache: `$HF_HUB_CACHE`, else `<hf_home>/hub`.
pub fn hf_hub_cache() -> Option<PathBuf> {
    env_path("HF_HUB_CACHE").or_else(|| hf_home().map(|home| home.join("hub")))
}

/// A non-empty environment variable as a path.
pub(crate) fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `models--org--name`: the folder of a model repo inside the cache.
pub fn repo_folder_name(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// The commit `revision` resolves to in the cache: the content of `refs/<revision>` for a branch
/// or tag, or the revision itself when a snapshot of that name exists (a commit hash).
pub fn cached_commit(cache: &Path, repo: &str, revision: &str) -> Option<String> {
    let repo_dir = cache.join(repo_folder_name(repo));
    match std::fs::read_to_string(repo_dir.join("refs").join(revision)) {
        Ok(text) => Some(text.trim().to_string()).filter(|c| !c.is_empty()),
        Err(_) => repo_dir
            .join("snapshots")
            .join(revision)
            .is_dir()
            .then(|| revision.to_string()),
    }
}

/// `models--org--name/snapshots/<commit>` for `revision` in a hub cache, if it exists.
pub fn hf_snapshot_dir(cache: &Path, repo: &str, revision: &str) -> Option<PathBuf> {
    let commit = cached_commit(cache, repo, revision)?;
    let snapshot = cache
        .join(repo_folder_name(repo))
        .join("snapshots")
        .join(commit);
    snapshot.is_dir().then_some(snapshot)
}

/// `path` inside the repo for a file of the layout in `subfolder`.
pub fn repo_path(subfolder: &str, file: &str) -> String {
    if subfolder.is_empty() {
        file.to_string()
    } else {
        format!("{subfolder}/{file}")
    }
}

/// The files of `repo_paths` that the cached snapshot of `revision` lacks (all of them when the
/// revision is not in the cache). A dangling symlink counts as missing.
pub fn missing_in_cache<'a>(
    cache: &Path,
    repo: &str,
    revision: &str,
    repo_paths: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let snapshot = hf_snapshot_dir(cache, repo, revision);
    repo_paths
        .into_iter()
        .filter(|path| {
            snapshot
                .as_ref()
                .is_none_or(|dir| !dir.join(path).is_file())
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_resolves_through_refs_and_commit_directly() {
        let cache = tempfile::tempdir().unwrap();
        let repo_dir = cache.path().join("models--org--name");
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::create_dir_all(repo_dir.join("snapshots").join("abc123")).unwrap();
        std::fs::write(repo_dir.join("refs").join("main"), "abc123").unwrap();
        let expected = repo_dir.join("snapshots").join("abc123");
        assert_eq!(
            hf_snapshot_dir(cache.path(), "org/name", "main"),
            Some(expected.clone())
        );
        assert_eq!(
            hf_snapshot_dir(cache.path(), "org/name", "abc123"),
            Some(expected)
        );
        assert_eq!(hf_snapshot_dir(cache.path(), "org/name", "dev"), None);
        assert_eq!(
            missing_in_cache(cache.path(), "org/name", "main", ["a.json"]),
            ["a.json"]
        );
    }

    #[test]
    fn subfolder_is_prefixed() {
        assert_eq!(repo_path("", "unet/model.onnx"), "unet/model.onnx");
        assert_eq!(repo_path("onnx", "unet/model.onnx"), "onnx/unet/model.onnx");
    }
}
