//! Sigma schedules, samplers and diffusers scheduler presets.
//!
//! A scheduler is built from a registry entry and the model's scheduler config for a number of
//! steps ([`build`]), and is then driven through the [`Stepper`] interface by the pipeline's
//! denoising loop. Noise comes in through a [`NoiseSource`].

pub mod config;
pub mod euler;
pub mod kinds;
pub mod ksampler;
pub mod noise;
pub mod sigmas;
pub mod spacing;
pub mod special;
pub mod stepper;
pub mod training;
pub mod vp;

pub mod ddim;
pub mod ddpm;
pub mod deis;
pub mod dpmsolver_multistep;
pub mod dpmsolver_sde;
pub mod dpmsolver_singlestep;
pub mod heun;
pub mod kdpm2;
pub mod lcm;
pub mod lms;
pub mod pndm;
pub mod unipc;

mod build;

pub use build::{Plan, build_preset, build_stepper};
pub use config::SchedulerConfig;
pub use kinds::{DiffusersClass, SamplerAlgorithm, ScheduleKind};
pub use noise::{NoiseSource, ReplayNoise};
pub use stepper::{Sample, SchedulerError, Stepper};
