//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod mock_hub;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The crate root (where Cargo.toml is).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A path under `tests/fixtures`.
pub fn fixture(relative: &str) -> PathBuf {
    repo_root().join("tests").join("fixtures").join(relative)
}

/// An empty directory for this test process: the `sdxl` binary runs with its Hugging Face cache,
/// user data dir and working directory there, so what the user has downloaded never changes a
/// test's outcome.
pub fn isolated_home() -> &'static Path {
    static HOME: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

/// Runs the `sdxl` binary with `args` and extra environment variables, isolated from the
/// user's registries, models and caches (but not from the cached ONNX Runtime library).
pub fn sdxl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let home = isolated_home();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sdxl"));
    command
        .args(args)
        .current_dir(home)
        .env_remove("SDXL_SCHEDULERS_TOML")
        .env_remove("SDXL_MODELS_TOML")
        .env_remove("SDXL_MODELS_DIR")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_HOME", home.join("hf"))
        .env("XDG_DATA_HOME", home.join("data"));
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the sdxl binary runs")
}

/// stdout as UTF-8.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// stderr as UTF-8.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes `text` to a new temporary file named `name` and returns its directory and path.
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write temp file");
    (dir, path)
}
