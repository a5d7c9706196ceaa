//! Command-line parsing and the subcommands of the `tidewire` binary.

mod bench;
mod chat;
mod ingest;
mod keys;
mod serve;
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
    /// Runs the server (SQLite in the data directory; with no model configured, the
    /// offline extractive backend answers from the documents).
    #[command(after_help = serve::ENVIRONMENT_HELP)]
    Serve(serve::ServeArgs),
    /// Asks a question and streams the answer (interactive without a question).
    Chat(chat::ChatArgs),
    /// Sends files and folders (Markdown, text, HTML, PDF) to a running server's
    /// documents, for its answers to draw on.
    Ingest(ingest::IngestArgs),
    /// API keys: create, list, revoke (for `[auth] api_keys = true`).
    Keys(keys::KeysArgs),
    /// Load generator: streams against any SSE URL, with the server's CPU and memory.
    Bench(bench::BenchArgs),
    /// Prints the effective configuration as TOML, after file, environment and flags.
    #[command(after_help = serve::ENVIRONMENT_HELP)]
    Config(serve::ServeArgs),
    /// Server-Sent Events tools: decode or encode a byte stream.
    #[command(subcommand)]
    Sse(sse::SseCommand),
}

/// Parses the command line and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::serve(&args),
        Command::Config(args) => serve::print_config(&args),
        Command::Chat(args) => chat::chat(args),
        Command::Ingest(args) => ingest::ingest(args),
        Command::Keys(args) => keys::keys(args),
        Command::Bench(args) => bench::bench(args),
        Command::Sse(command) => sse::run(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tidewire: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each said once. Many errors (the
/// library's and their dependencies') already write their cause into their own
/// message and also return it as their source, so `{:#}` would repeat it.
pub fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}
