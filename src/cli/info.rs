//! `sdxl info`: which ONNX Runtime was loaded, and optionally a graph's inputs and outputs.

use std::path::Path;

use anyhow::Result;
use sdxl_backend::runtime;

pub fn run(graph: Option<&Path>, json: bool) -> Result<()> {
    let info = runtime::ensure_runtime()?;
    let graph = graph.map(describe_graph).transpose()?;
    if json {
        let value = serde_json::json!({ "runtime": info, "graph": graph });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("ONNX Runtime: {}", info.dylib_path.display());
        println!("found by:     {}", info.found_by);
        println!("build:        {}", info.build_info);
        if let Some(graph) = graph {
            println!("graph:        {}", serde_json::to_string_pretty(&graph)?);
        }
    }
    Ok(())
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
