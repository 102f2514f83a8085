//! # sdxl-backend
//!
//! Stable Diffusion XL on ONNX Runtime: the five exported SDXL graphs of the Hugging Face
//! Optimum layout, schedulers equal to diffusers and k-diffusion, defined in TOML.
//!
//! The registries are data: `schedulers.toml` and `models.toml`, embedded at build time and
//! layered with user files.
//!
//! Embedding it: load a model, generate, unload.
//!
//! ```
//! use sdxl_backend::{BackendConfig, GenerateRequest, SdxlBackend};
//! use sdxl_backend::runtime::SessionOptions;
//!
//! let backend = SdxlBackend::new(BackendConfig::default())?;
//! backend.init_backend("tiny-sdxl", SessionOptions::default())?; // the bundled test model
//! let request = GenerateRequest {
//!     prompt: "a photo of an astronaut riding a horse".into(),
//!     seed: Some(42),
//!     steps: Some(4),
//!     ..Default::default()
//! };
//! let result = backend.generate(&request)?;
//! assert_eq!(result.images.len(), 1);
//! assert_eq!((result.images[0].width, result.images[0].height), (64, 64));
//! assert!(result.infotext.contains("Seed: 42"));
//! backend.unload_backend();
//! assert!(backend.generate(&request).is_err()); // nothing loaded any more
//! # Ok::<(), sdxl_backend::Error>(())
//! ```
//!
//! The registries alone:
//!
//! ```
//! let schedulers = sdxl_backend::get_available_schedulers()?;
//! assert!(schedulers.iter().any(|preset| preset.name == "euler"));
//! let samplers = sdxl_backend::get_available_samplers()?;
//! let euler_a = samplers.iter().find(|s| s.name == "euler_ancestral").unwrap();
//! assert!(euler_a.stochastic);
//! # Ok::<(), sdxl_backend::Error>(())
//! ```

// Nothing reachable from user input may panic: no unwrap/expect in library code.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod backend;
pub mod error;
pub mod memory;
pub mod model_loader;
pub mod npy;
pub mod output;
pub mod pipeline;
pub mod registry;
pub mod rng;
pub mod runtime;
pub mod schedulers;
pub mod server;

pub use backend::{
    BackendConfig, CancellationToken, GenerateRequest, GenerateResult, Progress, SdxlBackend,
};
pub use error::{Error, Result};
pub use registry::{
    Registries, get_available_samplers, get_available_schedulers, get_available_schedules,
    get_model_checkpoint_map,
};
