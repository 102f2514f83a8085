//! Fetches `libonnxruntime.so` from the pinned PyPI wheel into the user's cache directory.
//!
//! ort's own `download-binaries` reaches a CDN that is not always reachable, so the crate uses
//! `load-dynamic` and this script instead: `pip download` of `onnxruntime==1.32.0` with a pinned
//! interpreter version and platform, extraction of the one shared library, a sha256 check, and an
//! atomic rename into the cache (outside `target/`, so `cargo clean` does not force a download).
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
    let dir = ort_cache_dir().ok_or("no user cache directory (set SDXL_BACKEND_CACHE_DIR)")?;
    let dylib = dir.join(ORT_DYLIB_FILE);
    if dylib.is_file() && sha256_of(&dylib).as_deref() == Ok(ORT_DYLIB_SHA256) {
        return Ok(());
    }
    if std::env::var("CARGO_NET_OFFLINE").is_ok_and(|v| v == "true")
        || std::env::var_os("SDXL_SKIP_ORT_DOWNLOAD").is_some()
    {
        return Err(format!(
            "offline build and no verified copy at {}",
            dylib.display()
        ));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let staging = dir.join(format!(".download-{}", std::process::id()));
    let result = download_and_install(&staging, &dylib);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn download_and_install(staging: &Path, dylib: &Path) -> Result<(), String> {
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
        .args([
            "--python-version",
            ORT_WHEEL_PYTHON_VERSION,
            "--platform",
            ORT_WHEEL_PLATFORM,
        ])
        .arg(ORT_WHEEL_REQUIREMENT)
        .arg("-d")
        .arg(staging)
        .status()
        .map_err(|e| format!("cannot run `{python} -m pip` ({e}); install Python 3 with pip"))?;
    if !status.success() {
        return Err(format!(
            "`pip download {ORT_WHEEL_REQUIREMENT}` failed ({status})"
        ));
    }
    let wheel = find_wheel(staging)?;
    let extracted = staging.join(ORT_DYLIB_FILE);
    // The wheel is a zip file; Python's zipfile is already required for pip, so use it.
    let status = Command::new(&python)
        .args([
            "-c",
            "import sys, zipfile; open(sys.argv[3], 'wb').write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))",
        ])
        .arg(&wheel)
        .arg(ORT_WHEEL_MEMBER)
        .arg(&extracted)
        .status()
        .map_err(|e| format!("cannot run {python} to unzip the wheel: {e}"))?;
    if !status.success() {
        return Err(format!(
            "{ORT_WHEEL_MEMBER} not found in {}",
            wheel.display()
        ));
    }
    let digest = sha256_of(&extracted)?;
    if digest != ORT_DYLIB_SHA256 {
        return Err(format!(
            "sha256 mismatch for {ORT_WHEEL_MEMBER}: expected {ORT_DYLIB_SHA256}, got {digest}"
        ));
    }
    // Same filesystem, so the rename is atomic: the cache never holds a partial library.
    std::fs::rename(&extracted, dylib)
        .map_err(|e| format!("cannot move the library into {}: {e}", dylib.display()))
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
