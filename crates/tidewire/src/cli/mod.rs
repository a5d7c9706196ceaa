//! Command-line parsing and the subcommands of the `tidewire` binary.

mod sse;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tidewire: a streaming gateway for AI chat.
#[derive(Debug, Parser)]
#[command(name = "tidewire", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Server-Sent Events tools: decode or encode a byte stream.
    #[command(subcommand)]
    Sse(sse::SseCommand),
}

/// Parses the command line and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sse(command) => sse::run(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tidewire: {error:#}");
            ExitCode::FAILURE
        }
    }
}
