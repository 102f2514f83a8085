//! Subcommands of the `sdxl` binary that need more than a few lines.

pub mod generate;
