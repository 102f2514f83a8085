//! Per-file facts about a checkpoint: which files, which component each belongs to, how many
//! bytes are on disk. External-data files (`model.onnx_data`, `model.onnx.data`) next to a graph
//! are counted even when the registry entry does not list them.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::search::{SearchRoot, locate};
use crate::registry::ModelEntry;

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileDetail {
    /// Path relative to the layout root, `/`-separated.
    pub path: String,
    /// The first path segment (`unet`, `tokenizer_2`, ...), or `root` for top-level files.
    pub component: String,
    /// Size on disk (symlinks followed); `None` when the file is not there.
    pub bytes: Option<u64>,
}

/// A model's files and where they are (`sdxl models show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelDetails {
    /// The registry id (or the directory for an ad-hoc checkpoint).
    pub id: String,
    /// Whether a complete copy exists.
    pub downloaded: bool,
    /// The complete copy, else the first partial copy met, else `None`.
    pub path: Option<PathBuf>,
    /// Every listed file, then discovered external-data files.
    pub files: Vec<FileDetail>,
    /// Sum of the sizes on disk; `None` when no file is on disk.
    pub total_bytes: Option<u64>,
}

/// `unet/model.onnx` -> `unet`; `model_index.json` -> `root`.
pub fn component_of(path: &str) -> &str {
    match path.split_once('/') {
        Some((first, _)) => first,
        None => "root",
    }
}

/// Whether `name` is an ONNX external-data file (Optimum writes `model.onnx_data`, Olive and
/// `onnx.save(..., save_as_external_data=True)` commonly `model.onnx.data`).
pub fn is_external_data(name: &str) -> bool {
    name.ends_with(".onnx_data") || name.ends_with(".onnx.data")
}

/// Details of `listed` files under `dir` (sizes `None` without a directory), plus external-data
/// files found beside any listed `.onnx` graph.
pub fn checkpoint_file_details(dir: Option<&Path>, listed: &[String]) -> Vec<FileDetail> {
    let detail = |path: &str| FileDetail {
        path: path.to_string(),
        component: component_of(path).to_string(),
        bytes: dir.and_then(|d| std::fs::metadata(d.join(path)).ok().map(|m| m.len())),
    };
    let mut files: Vec<FileDetail> = listed.iter().map(|p| detail(p)).collect();
    let Some(dir) = dir else {
        return files;
    };
    let mut extra = Vec::new();
    for graph in listed.iter().filter(|p| p.ends_with(".onnx")) {
        let parent = graph.rsplit_once('/').map_or("", |(parent, _)| parent);
        let Ok(entries) = std::fs::read_dir(dir.join(parent)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if parent.is_empty() {
                name.clone()
            } else {
                format!("{parent}/{name}")
            };
            if is_external_data(&name) && !listed.contains(&path) && !extra.contains(&path) {
                extra.push(path);
            }
        }
    }
    extra.sort();
    files.extend(extra.iter().map(|p| detail(p)));
    files
}

/// Details of the registry entry, searched in `roots` then the bundled copy.
pub fn model_details(entry: &ModelEntry, roots: &[SearchRoot]) -> ModelDetails {
    let located = locate(entry, roots);
    let downloaded = located.found.is_some();
    let path = located
        .found
        .or_else(|| located.incomplete.first().map(|copy| copy.dir.clone()));
    let files = checkpoint_file_details(path.as_deref(), &entry.files);
    details(entry.id.clone(), downloaded, path, files)
}

/// Details of an ad-hoc checkpoint directory: every regular file under it (symlinks followed,
/// hidden entries skipped), complete when it has the files every SDXL layout needs.
pub fn directory_details(dir: &Path) -> ModelDetails {
    let mut listed = Vec::new();
    walk(dir, "", &mut listed);
    listed.sort();
    let files = checkpoint_file_details(Some(dir), &listed);
    let downloaded = super::search::missing_files(dir, super::search::REQUIRED_FILES).is_empty();
    details(
        dir.display().to_string(),
        downloaded,
        Some(dir.to_path_buf()),
        files,
    )
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let relative = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        if path.is_dir() {
            walk(&path, &relative, out);
        } else if path.is_file() {
            out.push(relative);
        }
    }
}

fn details(
    id: String,
    downloaded: bool,
    path: Option<PathBuf>,
    files: Vec<FileDetail>,
) -> ModelDetails {
    let sizes: Vec<u64> = files.iter().filter_map(|f| f.bytes).collect();
    let total_bytes = (!sizes.is_empty()).then(|| sizes.iter().sum());
    ModelDetails {
        id,
        downloaded,
        path,
        files,
        total_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_first_segments() {
        assert_eq!(component_of("unet/model.onnx_data"), "unet");
        assert_eq!(component_of("model_index.json"), "root");
    }

    #[test]
    fn external_data_beside_a_graph_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("unet")).unwrap();
        std::fs::write(dir.path().join("unet/model.onnx"), [0u8; 3]).unwrap();
        std::fs::write(dir.path().join("unet/model.onnx_data"), [0u8; 5]).unwrap();
        let listed = vec![
            "unet/model.onnx".to_string(),
            "model_index.json".to_string(),
        ];
        let files = checkpoint_file_details(Some(dir.path()), &listed);
        let paths: Vec<_> = files.iter().map(|f| (f.path.as_str(), f.bytes)).collect();
        assert_eq!(
            paths,
            [
                ("unet/model.onnx", Some(3)),
                ("model_index.json", None),
                ("unet/model.onnx_data", Some(5))
            ]
        );
    }
}
