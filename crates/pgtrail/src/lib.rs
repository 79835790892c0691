//! The `pgtrail` command line, as a library so tests and other tools can
//! drive it. The binary (`main.rs`) only parses arguments and calls [`run`].
//!
//! Layout: [`cli`] declares the arguments (clap derive; doc comments are the
//! help text), [`config`] layers file → environment → flags, [`commands`]
//! holds one module per verb plus the dispatch, [`output`] prints tables,
//! JSON and JSON Lines.

pub mod cli;
pub mod commands;
pub mod config;
mod describe;
pub mod doctor;
mod filters;
pub mod output;

pub use commands::{run, Invocation};

/// Exit statuses shared by every command.
pub mod exit {
    use std::process::ExitCode;

    /// Everything went well.
    pub fn ok() -> ExitCode {
        ExitCode::SUCCESS
    }

    /// A check ran and found a problem (e.g. `verify` found tampering).
    pub fn check_failed() -> ExitCode {
        ExitCode::from(1)
    }

    /// The command could not do its job.
    pub fn error() -> ExitCode {
        ExitCode::from(2)
    }
}
