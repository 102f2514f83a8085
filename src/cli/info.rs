//! `sdxl info`: which ONNX Runtime was loaded, and optionally a graph's inputs and outputs.

use std::path::Path;

use anyhow::Result;
use sdxl_backend::runtime;

pub fn run(graph: Option<&Path>, json: bool) -> Result<()> {
    let info = runtime::ensure_runtime()?;
    let graph = graph.map(describe_graph).transpose()?;
    let providers = available_providers();
    let memory = sdxl_backend::memory::track_vram_usage();
    let device = if memory.gpu.is_some() && cfg!(feature = "cuda") {
        "cuda"
    } else {
        "cpu"
    };
    if json {
        let value = serde_json::json!({
            "runtime": info,
            "cuda_feature": cfg!(feature = "cuda"),
            "providers": providers,
            "device": device,
            "memory": memory,
            "graph": graph,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("ONNX Runtime: {}", info.dylib_path.display());
        println!("found by:     {}", info.found_by);
        println!("build:        {}", info.build_info);
        println!(
            "providers:    {} (this build: {})",
            providers.join(", "),
            if cfg!(feature = "cuda") {
                "cuda feature on"
            } else {
                "CPU only"
            }
        );
        println!("device:       {device}");
        let mib = |b: Option<u64>| {
            b.map_or("?".to_string(), |b| {
                format!("{:.1} MiB", b as f64 / 1048576.0)
            })
        };
        println!(
            "memory:       resident {}, peak {}",
            mib(memory.process_resident_bytes),
            mib(memory.process_peak_resident_bytes)
        );
        if let Some(gpu) = &memory.gpu {
            println!(
                "gpu {}:        {:.0} MiB used of {:.0} MiB",
                gpu.index,
                gpu.used_bytes as f64 / 1048576.0,
                gpu.total_bytes as f64 / 1048576.0
            );
        }
        if let Some(graph) = graph {
            println!("graph:        {}", serde_json::to_string_pretty(&graph)?);
        }
    }
    Ok(())
}

/// Execution providers the loaded ONNX Runtime library was built with (of those the crate uses).
fn available_providers() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut providers = vec!["CPU"];
    #[cfg(feature = "cuda")]
    {
        use ort::ep::ExecutionProvider;
        if ort::ep::CUDA::is_available().unwrap_or(false) {
            providers.push("CUDA");
        }
    }
    providers
}

/// Opens `path` on the default device and lists its inputs and outputs with their types.
fn describe_graph(path: &Path) -> Result<serde_json::Value> {
    let opened = runtime::create_session(path, &runtime::SessionOptions::default())?;
    let outlets = |outlets: &[ort::value::Outlet]| -> Vec<serde_json::Value> {
        outlets
            .iter()
            .map(|o| serde_json::json!({ "name": o.name(), "type": o.dtype().to_string() }))
            .collect()
    };
    Ok(serde_json::json!({
        "path": path,
        "provider": opened.provider,
        "fallback": opened.fallback,
        "inputs": outlets(opened.session.inputs()),
        "outputs": outlets(opened.session.outputs()),
    }))
}
