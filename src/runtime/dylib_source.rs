// Where the ONNX Runtime shared library comes from and where it is cached.
//
// This file is compiled twice: as part of the library (`runtime::dylib_source`) and, through
// `include!`, by `build.rs`, so the build script and the run-time lookup agree on every name
// without a second copy. Keep it free of crate-internal imports.

/// One file taken out of an onnxruntime wheel.
#[derive(Debug)]
pub struct WheelFile {
    /// Path inside the wheel (a zip file).
    pub member: &'static str,
    /// File name in the cache directory.
    pub file: &'static str,
    /// Expected sha256 of the file.
    pub sha256: &'static str,
}

/// A pinned onnxruntime wheel from PyPI and the files the crate needs from it.
#[derive(Debug)]
pub struct OrtDistribution {
    /// The pip requirement, e.g. `onnxruntime==1.32.0`.
    pub requirement: &'static str,
    /// The release.
    pub version: &'static str,
    /// Interpreter version for `pip download --python-version` (the .so files do not depend on it).
    pub python_version: &'static str,
    /// Platform tag for `pip download --platform`.
    pub platform: &'static str,
    /// Directory name under the cache root.
    pub cache_subdir: &'static str,
    /// The files to extract; the first one is the library `ort` loads.
    pub files: &'static [WheelFile],
}

impl OrtDistribution {
    /// File name of the main library.
    pub fn dylib_file(&self) -> &'static str {
        self.files[0].file
    }
}

/// The CPU build: `onnxruntime==1.32.0` (34,824,680-byte library, identical in cp311 and cp312).
pub const CPU_DISTRIBUTION: OrtDistribution = OrtDistribution {
    requirement: "onnxruntime==1.32.0",
    version: "1.32.0",
    python_version: "3.12",
    platform: "manylinux_2_28_x86_64",
    cache_subdir: "onnxruntime-1.32.0",
    files: &[WheelFile {
        member: "onnxruntime/capi/libonnxruntime.so.1.32.0",
        file: "libonnxruntime.so.1.32.0",
        sha256: "6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f",
    }],
};

/// The CUDA build used with the `cuda` feature: `onnxruntime-gpu==1.31.1` (CUDA 13, cuDNN 9).
/// The CUDA provider (284 MB) must sit next to the main library, where ORT looks for it.
pub const GPU_DISTRIBUTION: OrtDistribution = OrtDistribution {
    requirement: "onnxruntime-gpu==1.31.1",
    version: "1.31.1",
    python_version: "3.12",
    platform: "manylinux_2_28_x86_64",
    cache_subdir: "onnxruntime-gpu-1.31.1",
    files: &[
        WheelFile {
            member: "onnxruntime/capi/libonnxruntime.so.1.31.1",
            file: "libonnxruntime.so.1.31.1",
            sha256: "5104254339ecadae808da771bd0b63b240f0dbd466514234905e54372435c303",
        },
        WheelFile {
            member: "onnxruntime/capi/libonnxruntime_providers_shared.so",
            file: "libonnxruntime_providers_shared.so",
            sha256: "086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d",
        },
        WheelFile {
            member: "onnxruntime/capi/libonnxruntime_providers_cuda.so",
            file: "libonnxruntime_providers_cuda.so",
            sha256: "8387867e857499e045caff5d13ac6a5de29571c801562fa2dde0e45f1f31de52",
        },
    ],
};

/// The distribution a build uses: the GPU wheel with the `cuda` feature, else the CPU wheel.
pub fn distribution(cuda: bool) -> &'static OrtDistribution {
    if cuda {
        &GPU_DISTRIBUTION
    } else {
        &CPU_DISTRIBUTION
    }
}

/// Environment variable that overrides the cache root (defaults to the user's cache dir).
pub const CACHE_DIR_ENV: &str = "SDXL_BACKEND_CACHE_DIR";

/// The directory holding a distribution's cached files:
/// `$SDXL_BACKEND_CACHE_DIR` or `<user cache dir>/sdxl-backend`, then the distribution's subdir.
pub fn ort_cache_dir(distribution: &OrtDistribution) -> Option<std::path::PathBuf> {
    let root = match std::env::var_os(CACHE_DIR_ENV) {
        Some(dir) if !dir.is_empty() => std::path::PathBuf::from(dir),
        _ => dirs::cache_dir()?.join("sdxl-backend"),
    };
    Some(root.join(distribution.cache_subdir))
}
