//! `shoal drain`: asks a running node to drain over its admin API, optionally waiting
//! until it has left.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest answer read from the node.
const MAX_ANSWER: u64 = 64 * 1024;
/// How long `--wait` waits for the node to exit.
const WAIT_LIMIT: Duration = Duration::from_secs(600);

/// Sends `POST /api/drain` to `http`; with `wait`, returns once the node stops answering.
pub async fn request(http: SocketAddr, token: &str, wait: bool) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(http)
        .await
        .with_context(|| format!("connecting to {http}"))?;
    let request = format!(
        "POST /api/drain HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream
        .take(MAX_ANSWER)
        .read_to_string(&mut answer)
        .await
        .context("reading the node's answer")?;
    let status = answer.split_whitespace().nth(1).unwrap_or("");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").trim();
    if status != "202" {
        bail!("the node refused to drain ({status}): {body}");
    }
    println!("{body}");
    if wait {
        let started = Instant::now();
        while TcpStream::connect(http).await.is_ok() {
            if started.elapsed() > WAIT_LIMIT {
                bail!("the node still answers after {WAIT_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        println!("drained: {http} no longer answers");
    }
    Ok(())
}
