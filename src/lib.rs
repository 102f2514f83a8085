//! # sdxl-backend
//!
//! Stable Diffusion XL on ONNX Runtime: the five exported SDXL graphs of the Hugging Face
//! Optimum layout, schedulers equal to diffusers and k-diffusion, defined in TOML.
//!
//! The registries are data: `schedulers.toml` and `models.toml`, embedded at build time and
//! layered with user files.
//!
//! ```
//! let schedulers = sdxl_backend::get_available_schedulers()?;
//! assert!(schedulers.iter().any(|preset| preset.name == "euler"));
//! let samplers = sdxl_backend::get_available_samplers()?;
//! let euler_a = samplers.iter().find(|s| s.name == "euler_ancestral").unwrap();
//! assert!(euler_a.stochastic);
//! # Ok::<(), sdxl_backend::Error>(())
//! ```

pub mod error;
pub mod model_loader;
pub mod npy;
pub mod output;
pub mod pipeline;
pub mod registry;
pub mod rng;
pub mod runtime;
pub mod schedulers;

pub use error::{Error, Result};
pub use registry::{
    Registries, get_available_samplers, get_available_schedulers, get_available_schedules,
    get_model_checkpoint_map,
};
