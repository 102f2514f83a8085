//! Fetches the ONNX Runtime shared library from a pinned PyPI wheel into the user's cache.
//!
//! ort's own `download-binaries` reaches a CDN that is not always reachable, so the crate uses
//! `load-dynamic` and this script instead: `pip download` of `onnxruntime==1.32.0` (or
//! `onnxruntime-gpu==1.31.1` with the `cuda` feature) with a pinned interpreter version and
//! platform, extraction of the shared libraries, a sha256 check of each, and an atomic rename
//! into the cache (outside `target/`, so `cargo clean` does not force a download).
//!
//! The script never fails the build: with no network, no Python or an unsupported target it
//! prints a warning, the crate still compiles, and the program reports at run time how to provide
//! the library.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

include!("src/runtime/dylib_source.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/runtime/dylib_source.rs");
    println!("cargo:rerun-if-env-changed={CACHE_DIR_ENV}");
    println!("cargo:rerun-if-env-changed=CARGO_NET_OFFLINE");
    println!("cargo:rerun-if-env-changed=SDXL_SKIP_ORT_DOWNLOAD");
    if let Err(reason) = ensure_cached_dylib() {
        println!("cargo:warning=ONNX Runtime library not fetched: {reason}");
        println!(
            "cargo:warning=the build continues; at run time set ORT_DYLIB_PATH to a libonnxruntime.so >= 1.31, or rebuild with network access"
        );
    }
}

fn ensure_cached_dylib() -> Result<(), String> {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if target_os != "linux" || target_arch != "x86_64" {
        return Err(format!(
            "the pinned wheel is for linux x86_64, this build targets {target_os} {target_arch}"
        ));
    }
    let distribution = distribution(std::env::var_os("CARGO_FEATURE_CUDA").is_some());
    let dir = ort_cache_dir(distribution)
        .ok_or("no user cache directory (set SDXL_BACKEND_CACHE_DIR)")?;
    let cached = |file: &WheelFile| {
        let path = dir.join(file.file);
        path.is_file() && sha256_of(&path).as_deref() == Ok(file.sha256)
    };
    if distribution.files.iter().all(cached) {
        return Ok(());
    }
    if std::env::var("CARGO_NET_OFFLINE").is_ok_and(|v| v == "true")
        || std::env::var_os("SDXL_SKIP_ORT_DOWNLOAD").is_some()
    {
        return Err(format!(
            "offline build and no verified copy in {}",
            dir.display()
        ));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let staging = dir.join(format!(".download-{}", std::process::id()));
    let result = download_and_install(distribution, &staging, &dir);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn download_and_install(
    distribution: &OrtDistribution,
    staging: &Path,
    dir: &Path,
) -> Result<(), String> {
    std::fs::create_dir_all(staging)
        .map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
        ])
        .args([
            "--disable-pip-version-check",
            "--retries",
            "1",
            "--timeout",
            "20",
        ])
        .args(["--python-version", distribution.python_version])
        .args(["--platform", distribution.platform])
        .arg(distribution.requirement)
        .arg("-d")
        .arg(staging)
        .status()
        .map_err(|e| format!("cannot run `{python} -m pip` ({e}); install Python 3 with pip"))?;
    if !status.success() {
        return Err(format!(
            "`pip download {}` failed ({status})",
            distribution.requirement
        ));
    }
    let wheel = find_wheel(staging)?;
    for file in distribution.files {
        let extracted = staging.join(file.file);
        // The wheel is a zip file; Python's zipfile is already required for pip, so use it.
        let status = Command::new(&python)
            .arg("-c")
            .arg("import sys, zipfile; open(sys.argv[3], 'wb').write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))")
            .arg(&wheel)
            .arg(file.member)
            .arg(&extracted)
            .status()
            .map_err(|e| format!("cannot run {python} to unzip the wheel: {e}"))?;
        if !status.success() {
            return Err(format!("{} not found in {}", file.member, wheel.display()));
        }
        let digest = sha256_of(&extracted)?;
        if digest != file.sha256 {
            return Err(format!(
                "sha256 mismatch for {}: expected {}, got {digest}",
                file.member, file.sha256
            ));
        }
        // Same filesystem, so the rename is atomic: the cache never holds a partial library.
        std::fs::rename(&extracted, dir.join(file.file))
            .map_err(|e| format!("cannot move {} into {}: {e}", file.file, dir.display()))?;
    }
    Ok(())
}

fn find_wheel(dir: &Path) -> Result<PathBuf, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .ok_or_else(|| format!("pip left no wheel in {}", dir.display()))
}

fn sha256_of(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
