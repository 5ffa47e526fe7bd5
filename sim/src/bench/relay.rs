//! Relay throughput: Shoal's whole pull path against plain quinn, same build, same run.

use super::{KEY, payload, percentile};
use crate::cluster::Cluster;
use crate::http::push_segment;
use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use shoal_node::data::tls;
use shoal_protocol::stream;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Runs `rounds` A/B pairs: each moves `segments` segments of `size` bytes with
/// `concurrency` transfers in flight, once through Shoal (node B pulls from node A:
/// request, QUIC, blake3 check, cache) and once through a bare quinn endpoint pair using
/// the same TLS and transport settings.
pub async fn run(
    rounds: usize,
    segments: usize,
    size: usize,
    concurrency: usize,
) -> anyhow::Result<Value> {
    let cluster = Cluster::start(2, KEY, |_, c| c.core.window = segments.max(32)).await?;
    let live: Vec<&shoal_node::Node> = cluster.live().collect();
    let (a, b) = (live[0], live[1]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.summary().peers < 1 || a.summary().peers < 1 {
        if Instant::now() > deadline {
            bail!("the two nodes did not find each other");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let raw = RawQuinn::start(size).await?;
    let mut shoal_mb_s = Vec::new();
    let mut quinn_mb_s = Vec::new();
    for round in 0..rounds {
        // Shoal: fresh stream each round so nothing is cached on B.
        let name = format!("relay{round}");
        for seq in 0..segments {
            let bytes = payload(size, (round * segments + seq) as u64);
            push_segment(a.http_addr(), KEY, &name, &format!("s{seq}.ts"), &bytes).await?;
        }
        let stream = stream::Name::new(name.as_str()).expect("valid");
        let wait = Instant::now() + Duration::from_secs(20);
        while (0..segments as u64).any(|s| b.segment_info(&stream, s).is_none()) {
            if Instant::now() > wait {
                bail!("node B never learned of {name}'s segments");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let start = Instant::now();
        let results: Vec<_> = futures::stream::iter(0..segments as u64)
            .map(|seq| b.fetch_segment(&stream, seq))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let elapsed = start.elapsed();
        for r in results {
            let bytes = r.context("shoal pull")?;
            anyhow::ensure!(bytes.len() == size);
        }
        shoal_mb_s.push((segments * size) as f64 / elapsed.as_secs_f64() / 1e6);

        let start = Instant::now();
        raw.transfer(segments, concurrency).await?;
        quinn_mb_s.push((segments * size) as f64 / start.elapsed().as_secs_f64() / 1e6);
    }
    cluster.stop().await;
    let shoal = percentile(&shoal_mb_s, 50.0);
    let quinn = percentile(&quinn_mb_s, 50.0);
    Ok(json!({
        "bench": "relay",
        "segment_bytes": size,
        "segments_per_round": segments,
        "concurrency": concurrency,
        "shoal_mb_s": shoal_mb_s,
        "quinn_mb_s": quinn_mb_s,
        "shoal_median_mb_s": shoal,
        "quinn_median_mb_s": quinn,
        "ratio": shoal / quinn,
    }))
}

/// A bare quinn server that answers every bidirectional stream with `size` bytes, and a
/// client connected to it.
struct RawQuinn {
    client: quinn::Endpoint,
    conn: quinn::Connection,
    size: usize,
    _server: quinn::Endpoint,
}

impl RawQuinn {
    async fn start(size: usize) -> anyhow::Result<Self> {
        let identity = tls::generate()?;
        let server =
            quinn::Endpoint::server(tls::server_config(&identity)?, "127.0.0.1:0".parse()?)?;
        let addr: SocketAddr = server.local_addr()?;
        let body = Bytes::from(payload(size, 7));
        let accept = server.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accept.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let body = body.clone();
                        tokio::spawn(async move {
                            if recv.read_to_end(64).await.is_ok()
                                && send.write_chunk(body).await.is_ok()
                            {
                                let _ = send.finish();
                                let _ = send.stopped().await;
                            }
                        });
                    }
                });
            }
        });
        let client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let conn = client
            .connect_with(
                tls::client_config(identity.fingerprint, &identity)?,
                addr,
                tls::SERVER_NAME,
            )?
            .await?;
        Ok(Self {
            client,
            conn,
            size,
            _server: server,
        })
    }

    async fn transfer(&self, count: usize, concurrency: usize) -> anyhow::Result<()> {
        let results: Vec<anyhow::Result<usize>> = futures::stream::iter(0..count)
            .map(|_| async {
                let (mut send, mut recv) = self.conn.open_bi().await?;
                send.write_all(b"get").await?;
                send.finish()?;
                Ok(recv.read_to_end(self.size + 1).await?.len())
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for r in results {
            anyhow::ensure!(r? == self.size, "short raw transfer");
        }
        let _ = &self.client;
        Ok(())
    }
}
