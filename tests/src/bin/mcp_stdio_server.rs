//! The test MCP server ([`switchboard_tests::mcp_server::ToolServer`]) over stdin/stdout, for
//! the MCP client's stdio tests.
//!
//! Usage: `mcp-stdio-server [--slow-start-ms N] [--pid-file PATH]`. `--slow-start-ms` delays the
//! answer to `initialize`; `--pid-file` writes the process id there, so a test can check the
//! process is gone after the client stops it. Exits when stdin closes.

#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::{Context as _, bail};
use rmcp::ServiceExt as _;
use switchboard_tests::mcp_server::{Behaviour, ToolServer};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut behaviour = Behaviour::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--slow-start-ms" => {
                let ms: u64 = args
                    .next()
                    .context("--slow-start-ms needs a value")?
                    .parse()
                    .context("--slow-start-ms")?;
                behaviour.slow_start = Duration::from_millis(ms);
            }
            "--pid-file" => {
                let path = args.next().context("--pid-file needs a path")?;
                std::fs::write(&path, std::process::id().to_string())
                    .with_context(|| format!("writing {path}"))?;
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    let service = ToolServer::new(behaviour)
        .serve(rmcp::transport::stdio())
        .await
        .context("serving MCP on stdio")?;
    let _ = service.waiting().await;
    // Tokio's stdin reader thread would keep the process alive: leave at once.
    std::process::exit(0)
}
