//! Unload returns memory: alone in its own test binary (so no other test's allocations share
//! the process), load the tiny model, generate, unload, and compare resident memory with the
//! level before `init_backend`.
//!
//! Margin: 16 MiB. Loading the tiny model (29 MB of graphs) and generating adds ~70 MiB of
//! resident memory (52.9 -> 122 MiB); after unload (sessions dropped, then glibc's free heap
//! trimmed) resident memory measured 52.3-52.9 MiB in most runs and 64.1 MiB at worst over
//! repeated runs: what may stay is allocator slack, not the model, and three load/unload cycles
//! do not accumulate.

use sdxl_backend::memory::process_memory;
use sdxl_backend::runtime::{DevicePreference, SessionOptions, ensure_runtime};
use sdxl_backend::{BackendConfig, GenerateRequest, SdxlBackend};

const MARGIN: u64 = 16 << 20;

fn resident() -> u64 {
    process_memory().0.expect("/proc/self/status is readable")
}

#[test]
fn resident_memory_returns_after_unload() {
    // The process-wide runtime is created once and kept: measure from after its creation.
    ensure_runtime().unwrap();
    let backend = SdxlBackend::new(BackendConfig::default()).unwrap();
    let options = SessionOptions {
        device: DevicePreference::Cpu,
        intra_threads: Some(1),
        ..Default::default()
    };
    let request = GenerateRequest {
        prompt: "a boat".into(),
        seed: Some(3),
        steps: Some(2),
        ..Default::default()
    };
    // One warm-up cycle, so one-time initialisation inside ONNX Runtime is not counted as a leak.
    backend.init_backend("tiny-sdxl", options.clone()).unwrap();
    backend.generate(&request).unwrap();
    backend.unload_backend();

    let before = resident();
    let mut loaded = 0;
    for _ in 0..3 {
        backend.init_backend("tiny-sdxl", options.clone()).unwrap();
        backend.generate(&request).unwrap();
        loaded = loaded.max(resident());
        backend.unload_backend();
    }
    let after = resident();
    eprintln!(
        "resident: before init {:.1} MiB, loaded {:.1} MiB, after unload {:.1} MiB",
        before as f64 / 1048576.0,
        loaded as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    assert!(
        loaded > before + 3 * MARGIN,
        "loading the model is visible in RSS"
    );
    assert!(
        after <= before + MARGIN,
        "after unload RSS is {after}, more than {MARGIN} over {before}"
    );
}
