//! The fixture MCP server on stdin and stdout.

use std::sync::Arc;

use rmcp::ServiceExt;
use tidewire_mcp_fixture::{Fixture, Record};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let record = Arc::new(Record::from_env());
    record.note("started");
    let running = Fixture::new(record).serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}
