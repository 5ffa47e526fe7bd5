//! A minimal HTTP/1.1 client for the simulator: one request per connection, timed.

use anyhow::{Context, bail};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Largest response read (a segment is at most a few MB).
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// A response with its timing.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body (everything after the head).
    pub body: Vec<u8>,
    /// Time from sending the request to the first byte of the answer.
    pub first_byte: Duration,
    /// Time from sending the request to the end of the answer.
    pub total: Duration,
}

async fn exchange(
    from: Option<IpAddr>,
    addr: SocketAddr,
    request: &[u8],
    body: &[u8],
) -> anyhow::Result<Response> {
    let mut stream = match from {
        None => TcpStream::connect(addr).await?,
        Some(ip) => {
            let socket = match ip {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await?
        }
    };
    stream.set_nodelay(true)?;
    let start = Instant::now();
    stream.write_all(request).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut first_byte = None;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        first_byte.get_or_insert_with(|| start.elapsed());
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_RESPONSE {
            bail!("response over {MAX_RESPONSE} bytes");
        }
    }
    let total = start.elapsed();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no response head")?;
    let head = std::str::from_utf8(&raw[..end])?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
        first_byte: first_byte.unwrap_or(total),
        total,
    })
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits `http://HOST:PORT/path` into an address and a path (IP hosts only: the
/// simulator talks to nodes on loopback).
pub fn parse_url(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = host
        .parse()
        .with_context(|| format!("{url}: host must be IP:PORT"))?;
    Ok((addr, format!("/{path}")))
}

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Response> {
    get_from(None, addr, path).await
}

/// `GET path` from source address `from` (e.g. one of 127.0.0.0/8, so that each
/// simulated viewer has its own IP as real viewers do).
pub async fn get_from(
    from: Option<IpAddr>,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<Response> {
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    exchange(from, addr, head.as_bytes(), &[]).await
}

/// `PUT path` with a bearer key; fails unless the answer is 2xx.
pub async fn put(addr: SocketAddr, path: &str, key: &str, body: &[u8]) -> anyhow::Result<()> {
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let r = exchange(None, addr, head.as_bytes(), body).await?;
    if !(200..300).contains(&r.status) {
        bail!(
            "PUT {path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body).trim()
        );
    }
    Ok(())
}

/// Pushes one segment and a playlist listing just it, as an encoder would.
pub async fn push_segment(
    addr: SocketAddr,
    key: &str,
    stream: &str,
    file: &str,
    bytes: &[u8],
) -> anyhow::Result<()> {
    put(addr, &format!("/ingest/{stream}/{file}"), key, bytes).await?;
    let playlist = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{file}\n");
    put(
        addr,
        &format!("/ingest/{stream}/index.m3u8"),
        key,
        playlist.as_bytes(),
    )
    .await
}
