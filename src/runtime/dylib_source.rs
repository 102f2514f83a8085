// Where the ONNX Runtime shared library comes from and where it is cached.
//
// This file is compiled twice: as part of the library (`runtime::dylib_source`) and, through
// `include!`, by `build.rs`, so the build script and the run-time lookup agree on every name
// without a second copy. Keep it free of crate-internal imports.

/// The onnxruntime release the project pins (its `libonnxruntime.so` comes from the PyPI wheel).
pub const ORT_VERSION: &str = "1.32.0";
/// The pip requirement that provides the library.
pub const ORT_WHEEL_REQUIREMENT: &str = "onnxruntime==1.32.0";
/// Interpreter version passed to `pip download --python-version` (the .so is identical for cp311/cp312).
pub const ORT_WHEEL_PYTHON_VERSION: &str = "3.12";
/// Platform tag passed to `pip download --platform`.
pub const ORT_WHEEL_PLATFORM: &str = "manylinux_2_28_x86_64";
/// Path of the library inside the wheel.
pub const ORT_WHEEL_MEMBER: &str = "onnxruntime/capi/libonnxruntime.so.1.32.0";
/// File name of the cached library.
pub const ORT_DYLIB_FILE: &str = "libonnxruntime.so.1.32.0";
/// sha256 of `libonnxruntime.so.1.32.0` (34,824,680 bytes) in the cp311 and cp312 wheels.
pub const ORT_DYLIB_SHA256: &str =
    "6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f";
/// Environment variable that overrides the cache root (defaults to the user's cache dir).
pub const CACHE_DIR_ENV: &str = "SDXL_BACKEND_CACHE_DIR";

/// The directory holding the cached ONNX Runtime library:
/// `$SDXL_BACKEND_CACHE_DIR` or `<user cache dir>/sdxl-backend`, then `onnxruntime-<version>`.
pub fn ort_cache_dir() -> Option<std::path::PathBuf> {
    let root = match std::env::var_os(CACHE_DIR_ENV) {
        Some(dir) if !dir.is_empty() => std::path::PathBuf::from(dir),
        _ => dirs::cache_dir()?.join("sdxl-backend"),
    };
    Some(root.join(format!("onnxruntime-{ORT_VERSION}")))
}
