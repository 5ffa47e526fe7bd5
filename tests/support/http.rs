//! A minimal HTTP/1.1 client for tests: one request per connection, bodies by
//! Content-Length or until close. Enough to see exactly what a node answers.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest a test request may take.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends a request with optional body (sent with Content-Length unless `chunked`).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    chunked: bool,
) -> anyhow::Result<Response> {
    tokio::time::timeout(TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        match (body, chunked) {
            (Some(_), true) => head.push_str("Transfer-Encoding: chunked\r\n"),
            (Some(b), false) => head.push_str(&format!("Content-Length: {}\r\n", b.len())),
            (None, _) => {}
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        if let Some(b) = body {
            if chunked {
                for chunk in b.chunks(32 * 1024) {
                    stream
                        .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                        .await?;
                    // The server may answer early (413) and close: stop writing then.
                    if stream.write_all(chunk).await.is_err() {
                        break;
                    }
                    let _ = stream.write_all(b"\r\n").await;
                }
                let _ = stream.write_all(b"0\r\n\r\n").await;
            } else {
                let _ = stream.write_all(b).await;
            }
        }
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw).await;
        parse(&raw)
    })
    .await
    .context("http request timed out")?
}

/// `GET` with extra headers.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Response> {
    request(addr, "GET", path, headers, None, false).await
}

fn parse(raw: &[u8]) -> anyhow::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no response head")?;
    let head = std::str::from_utf8(&raw[..end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("empty response")?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    if let Some(len) = headers.iter().find(|(n, _)| n == "content-length") {
        let len: usize = len.1.parse()?;
        if len != body.len() {
            bail!("content-length {len} but {} bytes", body.len());
        }
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end])?.trim(), 16)?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).context("short chunk")?);
        data = &data[size + 2..];
    }
}

/// One keep-alive connection, as a player holds: requests in turn on the same socket.
/// Responses must carry Content-Length (a node's playlists and segments do).
pub struct KeepAlive {
    addr: SocketAddr,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl KeepAlive {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<KeepAlive> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        Ok(KeepAlive {
            addr,
            stream,
            buf: Vec::new(),
        })
    }

    /// `GET path` on this connection.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Response> {
        tokio::time::timeout(TIMEOUT, self.get_inner(path))
            .await
            .context("http request timed out")?
    }

    async fn get_inner(&mut self, path: &str) -> anyhow::Result<Response> {
        let head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        self.stream.write_all(head.as_bytes()).await?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end])?.to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .context("keep-alive response without content-length")?
                    .trim()
                    .parse()?;
                if self.buf.len() >= end + 4 + len {
                    let raw: Vec<u8> = self.buf.drain(..end + 4 + len).collect();
                    if self.buf.is_empty() {
                        // An idle connection holds no buffer.
                        self.buf = Vec::new();
                    }
                    return parse(&raw);
                }
            }
            // Read straight into the buffer: thousands of these may wait at once.
            self.buf.reserve(16 * 1024);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed");
            }
        }
    }
}
