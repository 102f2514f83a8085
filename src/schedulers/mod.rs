//! Sigma schedules, samplers and diffusers scheduler presets.

pub mod config;
pub mod kinds;

pub use config::SchedulerConfig;
pub use kinds::{DiffusersClass, SamplerAlgorithm, ScheduleKind};
