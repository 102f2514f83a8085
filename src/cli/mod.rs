//! The subcommands of the `sdxl` binary, one module each; `main.rs` only parses and dispatches.

pub mod generate;
pub mod info;
pub mod models;
pub mod schedulers;
pub mod serve;
pub mod table;
