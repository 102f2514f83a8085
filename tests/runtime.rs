//! ONNX Runtime through the crate's loader: the library is found, the environment is created
//! once per process, and sessions run.

mod common;

use ndarray::Array1;
use ort::value::TensorRef;
use sdxl_backend::runtime::{
    ActiveProvider, DevicePreference, SessionOptions, create_session, ensure_runtime,
};

#[test]
fn trivial_graph_runs_on_cpu() {
    let info = ensure_runtime().expect("ONNX Runtime is available (cached by build.rs)");
    assert!(info.dylib_path.is_file());
    let options = SessionOptions {
        device: DevicePreference::Cpu,
        ..Default::default()
    };
    let mut opened = create_session(&common::fixture("trivial/add_one.onnx"), &options).unwrap();
    assert_eq!(opened.provider, ActiveProvider::Cpu);
    assert!(opened.fallback.is_none());
    let x = Array1::from(vec![1.0_f32, 2.0, -3.5]);
    let outputs = opened
        .session
        .run(ort::inputs![TensorRef::from_array_view(&x).unwrap()])
        .unwrap();
    let y = outputs["y"].try_extract_array::<f32>().unwrap();
    assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![2.0, 3.0, -2.5]);
}

#[test]
fn environment_is_shared_by_threads() {
    let handles: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| ensure_runtime().map(|info| info.dylib_path.clone())))
        .collect();
    let paths: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert!(paths.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn auto_device_uses_cuda_or_reports_why_not() {
    let opened = create_session(
        &common::fixture("trivial/add_one.onnx"),
        &SessionOptions::default(),
    )
    .unwrap();
    match (cfg!(feature = "cuda"), opened.provider) {
        // A GPU machine: nothing fell back.
        (true, ActiveProvider::Cuda) => assert!(opened.fallback.is_none()),
        // CUDA wanted but unavailable: the fallback is reported, not silent.
        (true, ActiveProvider::Cpu) => {
            assert!(opened.fallback.is_some_and(|reason| !reason.is_empty()))
        }
        // A CPU-only build never tries CUDA, so nothing fell back.
        (false, provider) => {
            assert_eq!(provider, ActiveProvider::Cpu);
            assert!(opened.fallback.is_none());
        }
    }
}

#[test]
fn strict_cuda_without_cuda_is_an_error() {
    let options = SessionOptions {
        device: DevicePreference::CudaStrict,
        ..Default::default()
    };
    match create_session(&common::fixture("trivial/add_one.onnx"), &options) {
        Ok(opened) => assert_eq!(
            opened.provider,
            ActiveProvider::Cuda,
            "strict CUDA never falls back"
        ),
        Err(error) => assert!(error.to_string().contains("CUDA"), "{error}"),
    }
}

#[test]
fn missing_graph_names_the_file() {
    let error = create_session(
        std::path::Path::new("/nonexistent/unet/model.onnx"),
        &SessionOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("/nonexistent/unet/model.onnx"), "{error}");
}
