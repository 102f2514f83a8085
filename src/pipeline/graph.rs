//! One ONNX graph of the pipeline: its session, what its inputs and outputs are, and running it
//! with float32 tensors whatever the graph's float type (fp16 graphs are converted at the edge).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use half::f16;
use ndarray::{ArrayD, ArrayViewD};
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType, ValueType};

use super::PipelineError;
use crate::runtime::{ActiveProvider, SessionOptions, create_session};

thread_local! {
    /// Time this thread spent inside `Session::run`, for the engine-overhead metric.
    static ORT_RUN_TIME: std::cell::Cell<std::time::Duration> = const { std::cell::Cell::new(std::time::Duration::ZERO) };
}

/// Returns and resets the time the calling thread spent inside ONNX Runtime's `run`.
pub fn take_ort_run_time() -> std::time::Duration {
    ORT_RUN_TIME.with(|cell| cell.replace(std::time::Duration::ZERO))
}

/// Name, element type and declared shape (-1 for symbolic dims) of a graph input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    /// The name.
    pub name: String,
    /// Element type.
    pub ty: TensorElementType,
    /// Declared shape; -1 where symbolic.
    pub shape: Vec<i64>,
}

/// An input value in float32 (converted to the graph's float type) or int64.
pub enum Input<'a> {
    /// A float tensor.
    Float(ArrayViewD<'a, f32>),
    /// An int64 tensor (token ids).
    Int(ArrayViewD<'a, i64>),
}

/// A loaded graph. `Session::run` needs `&mut`, so the session sits behind a mutex: concurrent
/// requests share one session and take turns on it.
#[derive(Debug)]
pub struct Graph {
    /// The `.onnx` file.
    pub path: PathBuf,
    /// Declared inputs.
    pub inputs: Vec<Port>,
    /// Declared outputs.
    pub outputs: Vec<Port>,
    /// Where it runs.
    pub provider: ActiveProvider,
    /// Why it is not on CUDA, when CUDA was wanted.
    pub fallback: Option<String>,
    session: Mutex<Session>,
}

fn ports(outlets: &[ort::value::Outlet]) -> Vec<Port> {
    outlets
        .iter()
        .filter_map(|outlet| match outlet.dtype() {
            ValueType::Tensor { ty, shape, .. } => Some(Port {
                name: outlet.name().to_string(),
                ty: *ty,
                shape: shape.iter().copied().collect(),
            }),
            _ => None,
        })
        .collect()
}

impl Graph {
    /// Opens `path`.
    pub fn open(path: &Path, options: &SessionOptions) -> Result<Self, PipelineError> {
        let opened = create_session(path, options)?;
        Ok(Self {
            path: path.to_path_buf(),
            inputs: ports(opened.session.inputs()),
            outputs: ports(opened.session.outputs()),
            provider: opened.provider,
            fallback: opened.fallback,
            session: Mutex::new(opened.session),
        })
    }

    /// The declared input called `name`.
    pub fn input(&self, name: &str) -> Option<&Port> {
        self.inputs.iter().find(|p| p.name == name)
    }

    /// The declared output called `name`.
    pub fn output(&self, name: &str) -> Option<&Port> {
        self.outputs.iter().find(|p| p.name == name)
    }

    /// Runs the graph and returns the requested outputs as float32, in the order asked.
    pub fn run(
        &self,
        inputs: &[(&str, Input<'_>)],
        wanted: &[&str],
    ) -> Result<Vec<ArrayD<f32>>, PipelineError> {
        let mut values: Vec<(String, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for (name, value) in inputs {
            let port = self
                .input(name)
                .ok_or_else(|| self.mismatch(format!("has no input named {name}")))?;
            let converted: SessionInputValue<'_> = match (value, port.ty) {
                (Input::Float(view), TensorElementType::Float32) => {
                    Tensor::from_array(view.to_owned())
                        .map_err(|e| self.ort_error(e))?
                        .into()
                }
                (Input::Float(view), TensorElementType::Float16) => {
                    Tensor::from_array(view.mapv(f16::from_f32))
                        .map_err(|e| self.ort_error(e))?
                        .into()
                }
                (Input::Float(view), TensorElementType::Float64) => {
                    Tensor::from_array(view.mapv(f64::from))
                        .map_err(|e| self.ort_error(e))?
                        .into()
                }
                (Input::Float(view), TensorElementType::Int64) => {
                    // Older exports take an integer timestep.
                    Tensor::from_array(view.mapv(|v| v.round() as i64))
                        .map_err(|e| self.ort_error(e))?
                        .into()
                }
                (Input::Int(view), TensorElementType::Int64) => Tensor::from_array(view.to_owned())
                    .map_err(|e| self.ort_error(e))?
                    .into(),
                (Input::Int(view), TensorElementType::Int32) => {
                    Tensor::from_array(view.mapv(|v| v as i32))
                        .map_err(|e| self.ort_error(e))?
                        .into()
                }
                (_, ty) => {
                    return Err(
                        self.mismatch(format!("input {name} has unsupported element type {ty:?}"))
                    );
                }
            };
            values.push((name.to_string(), converted));
        }
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let started = std::time::Instant::now();
        let outputs = session.run(values).map_err(|e| self.ort_error(e))?;
        ORT_RUN_TIME.with(|cell| cell.set(cell.get() + started.elapsed()));
        wanted
            .iter()
            .map(|name| {
                let value = outputs
                    .get(*name)
                    .ok_or_else(|| self.mismatch(format!("produced no output named {name}")))?;
                if let Ok(view) = value.try_extract_array::<f32>() {
                    Ok(view.to_owned())
                } else if let Ok(view) = value.try_extract_array::<f16>() {
                    Ok(view.mapv(f16::to_f32))
                } else {
                    Err(self.mismatch(format!("output {name} is not a float16/float32 tensor")))
                }
            })
            .collect()
    }

    fn mismatch(&self, message: String) -> PipelineError {
        PipelineError::Graph {
            path: self.path.clone(),
            message,
        }
    }

    fn ort_error<R>(&self, error: ort::Error<R>) -> PipelineError {
        PipelineError::Graph {
            path: self.path.clone(),
            message: format!("ONNX Runtime: {error}"),
        }
    }
}
