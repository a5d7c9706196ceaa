//! tidewire's own time per tool call: the fixture's `add` called over stdio by a
//! bare rmcp client, then through tidewire's tool layer (name lookup, argument
//! parsing and schema check, timeout, result bound) on the same kind of server,
//! interleaved in rounds so both see the same machine. Prints p50/p99 of each and
//! the difference, as a Markdown table.
//!
//! `cargo bench -p tidewire-mcp-fixture --bench tool_call`

use std::time::{Duration, Instant};

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::json;
use tidewire::config::{McpServerConfig, ToolsConfig};
use tidewire::retrieval::NoDocuments;
use tidewire::tools::{ToolContext, Toolbox};

const ROUNDS: usize = 20;
const CALLS_PER_ROUND: usize = 250;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let program = env!("CARGO_BIN_EXE_tidewire-mcp-fixture");

    // A bare client.
    let mut command = tokio::process::Command::new(program);
    command.kill_on_drop(true);
    let (transport, _) = TokioChildProcess::builder(command)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let direct = ().serve(transport).await?;

    // tidewire's tool layer, with its own server process.
    let config = ToolsConfig {
        mcp: vec![McpServerConfig {
            name: "fixture".into(),
            command: Some(program.into()),
            args: Vec::new(),
            env: Default::default(),
            url: None,
            headers: Default::default(),
            tools: None,
            timeout: None,
        }],
        ..ToolsConfig::default()
    };
    let toolbox = Toolbox::from_config(&config, std::sync::Arc::new(NoDocuments))?;
    let started = Instant::now();
    while !toolbox.available().contains_key("add") {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the fixture server did not list its tools".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let set = toolbox
        .select(None)
        .map_err(|name| format!("no tool {name}"))?;
    let context = ToolContext::default();

    let mut bare = Vec::new();
    let mut through = Vec::new();
    for round in 0..ROUNDS {
        for i in 0..CALLS_PER_ROUND {
            let mut arguments = serde_json::Map::new();
            arguments.insert("a".into(), json!(i));
            arguments.insert("b".into(), json!(round));
            let at = Instant::now();
            let result = direct
                .call_tool(CallToolRequestParams::new("add").with_arguments(arguments))
                .await?;
            bare.push(at.elapsed());
            assert!(result.structured_content.is_some());

            let arguments = format!(r#"{{"a": {i}, "b": {round}}}"#);
            let at = Instant::now();
            let (_, call) = set.call("add", &arguments, &context);
            let result = call.await.map_err(|e| e.message)?;
            through.push(at.elapsed());
            assert_eq!(result["sum"], json!((i + round) as f64));
        }
    }
    // The first round warms both up.
    let bare = &mut bare[CALLS_PER_ROUND..];
    let through = &mut through[CALLS_PER_ROUND..];
    bare.sort();
    through.sort();
    let (b50, b99) = (percentile(bare, 0.5), percentile(bare, 0.99));
    let (t50, t99) = (percentile(through, 0.5), percentile(through, 0.99));
    // Markdown, for BENCHMARKS.md (bench/run.sh collects it).
    println!(
        "| `add` over stdio, {} calls each, interleaved | p50 | p99 |",
        bare.len()
    );
    println!("|---|---|---|");
    println!(
        "| a bare rmcp client | {:.1} µs | {:.1} µs |",
        micros(b50),
        micros(b99)
    );
    println!(
        "| through tidewire's tool layer | {:.1} µs | {:.1} µs |",
        micros(t50),
        micros(t99)
    );
    println!(
        "| **tidewire's own time per call** | **{:+.1} µs** | **{:+.1} µs** |",
        micros(t50) - micros(b50),
        micros(t99) - micros(b99)
    );
    toolbox.close().await;
    Ok(())
}
