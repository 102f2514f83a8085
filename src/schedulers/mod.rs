//! Sigma schedules, samplers and diffusers scheduler presets.
//!
//! A scheduler is built from a registry entry and the model's scheduler config for a number of
//! steps ([`build`]), and is then driven through the [`Stepper`] interface by the pipeline's
//! denoising loop. Noise comes in through a [`NoiseSource`].

pub mod config;
pub mod euler;
pub mod kinds;
pub mod noise;
pub mod spacing;
pub mod special;
pub mod stepper;
pub mod training;

mod build;

pub use build::{Plan, build_preset, build_stepper};
pub use config::SchedulerConfig;
pub use kinds::{DiffusersClass, SamplerAlgorithm, ScheduleKind};
pub use noise::{NoiseSource, ReplayNoise};
pub use stepper::{Sample, SchedulerError, Stepper};
