//! Support for Shoal's integration tests: real nodes on 127.0.0.1, a minimal HTTP/1.1
//! client, ffmpeg as the encoder, and waiting on observable state with a deadline.

pub mod fuzz;
pub mod http;
pub mod process;

use anyhow::{Context, bail};
use serde_json::Value;
use shoal_node::apparatus::Apparatus;
use shoal_node::{Node, NodeConfig};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The ingest key the test meshes accept.
pub const KEY: &str = "test-key";

/// Logs for a failing test: `RUST_LOG=shoal_node=debug cargo test ...`.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A fresh data directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "shoal-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A loopback node configuration accepting [`KEY`].
pub fn config(tag: &str) -> NodeConfig {
    let mut c = NodeConfig::loopback(temp_dir(tag));
    c.ingest_keys = vec![KEY.to_string()];
    c
}

/// Starts nodes from `configs`: the first alone, the others bootstrapping from the first
/// only, as an operator would.
pub async fn mesh(configs: Vec<NodeConfig>) -> anyhow::Result<Vec<Node>> {
    mesh_with(
        configs
            .into_iter()
            .map(|c| (c, Apparatus::default()))
            .collect(),
    )
    .await
}

/// As [`mesh`], each node with its own [`Apparatus`] (injected faults, delays).
pub async fn mesh_with(nodes_to_start: Vec<(NodeConfig, Apparatus)>) -> anyhow::Result<Vec<Node>> {
    let mut nodes: Vec<Node> = Vec::new();
    for (mut c, apparatus) in nodes_to_start {
        if let Some(first) = nodes.first() {
            c.bootstrap = first.p2p_addrs();
        }
        nodes.push(Node::start_with(c, apparatus).await?);
    }
    Ok(nodes)
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `timeout` with
/// `what` and the last observation.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("nothing observed");
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(observed) => last = observed,
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /api/status` of a node.
pub async fn status(addr: SocketAddr) -> anyhow::Result<Value> {
    let r = http::get(addr, "/api/status", &[]).await?;
    anyhow::ensure!(r.status == 200, "status returned {}", r.status);
    serde_json::from_slice(&r.body).context("status is not JSON")
}

/// Peer ids a node's status lists.
pub fn known_peers(status: &Value) -> Vec<String> {
    status["peers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["peer_id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the node at `addr` lists every peer id in `ids` as a known peer.
pub async fn wait_known(addr: SocketAddr, ids: &[&str]) -> anyhow::Result<()> {
    wait_for("peers to be known", Duration::from_secs(20), || async {
        let known = known_peers(&status(addr).await.map_err(|e| e.to_string())?);
        if ids.iter().all(|id| known.iter().any(|k| k == id)) {
            Ok(Some(()))
        } else {
            Err(format!("{addr} knows {known:?}"))
        }
    })
    .await
}

/// Parses a node's live playlist with the node's own HLS parser.
pub fn media_playlist(text: &str) -> anyhow::Result<shoal_node::hls::MediaPlaylist> {
    Ok(shoal_node::hls::parse_media_playlist(text.as_bytes())?)
}

/// The status entry of `stream`.
pub fn stream_status<'a>(status: &'a Value, stream: &str) -> Option<&'a Value> {
    status["streams"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == stream)
}

/// Bytes in each synthetic segment: with 1 s segments, a 1,638,400 bit/s stream.
pub const SYNTHETIC_SEGMENT: usize = 200 * 1024;
/// The bitrate of a synthetic stream: one [`SYNTHETIC_SEGMENT`] a second.
pub const SYNTHETIC_BITRATE: u64 = SYNTHETIC_SEGMENT as u64 * 8;

/// Two nodes that know each other (each has the other's status), and their HTTP
/// addresses.
pub async fn pair(a: NodeConfig, b: NodeConfig) -> (Vec<Node>, SocketAddr, SocketAddr) {
    let nodes = mesh(vec![a, b]).await.unwrap();
    let (a, b) = (nodes[0].http_addr(), nodes[1].http_addr());
    wait_known(a, &[&nodes[1].peer_id().to_string()])
        .await
        .unwrap();
    wait_known(b, &[&nodes[0].peer_id().to_string()])
        .await
        .unwrap();
    (nodes, a, b)
}

/// Waits until the node at `addr` reports the synthetic stream "live"'s bitrate (learned from its own
/// segments or from a peer's status) and a peer's status with its stream.
pub async fn wait_bitrate(addr: SocketAddr, peers: usize) {
    wait_for(
        "peers and the stream's bitrate",
        Duration::from_secs(20),
        || async {
            let s = status(addr).await.map_err(|e| e.to_string())?;
            let peers_seen = s["peers"].as_array().map_or(0, |a| a.len());
            let known = s["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|p| p["streams"].as_array().cloned().unwrap_or_default())
                .any(|h| h["bitrate_bps"].as_u64() == Some(SYNTHETIC_BITRATE));
            let own = stream_status(&s, "live").and_then(|x| x["bitrate_bps"].as_u64());
            if peers_seen >= peers && (known || own == Some(SYNTHETIC_BITRATE)) {
                Ok(Some(()))
            } else {
                Err(format!(
                    "peers {peers_seen}, own bitrate {own:?}, peer bitrate {known}"
                ))
            }
        },
    )
    .await
    .unwrap();
}

/// Pushes synthetic 1 s segment `seq` of [`SYNTHETIC_SEGMENT`] bytes (and a sliding
/// playlist) into `addr`, as an encoder does; panics unless both are accepted.
pub async fn push_segment(addr: SocketAddr, stream: &str, seq: u64) {
    let auth = format!("Bearer {KEY}");
    let h = [("Authorization", auth.as_str())];
    let body: Vec<u8> = (0..SYNTHETIC_SEGMENT as u64)
        .map(|i| (i ^ seq.wrapping_mul(0x9e37)) as u8)
        .collect();
    let r = http::request(
        addr,
        "PUT",
        &format!("/ingest/{stream}/seg{seq}.ts"),
        &h,
        Some(&body),
        true,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let mut playlist = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:1\n");
    for s in seq.saturating_sub(4)..=seq {
        playlist.push_str(&format!("#EXTINF:1.0,\nseg{s}.ts\n"));
    }
    let path = format!("/ingest/{stream}/index.m3u8");
    let r = http::request(addr, "PUT", &path, &h, Some(playlist.as_bytes()), false)
        .await
        .unwrap();
    assert_eq!(r.status, 201);
}

/// An ffmpeg process pushing a test pattern into a node; killed when dropped.
pub struct Encoder {
    child: Child,
}

/// The media playlist of `stream` on `addr` once it lists at least `n` segments (40 s at
/// most).
pub async fn wait_playlist(
    addr: SocketAddr,
    stream: &str,
    n: usize,
) -> shoal_node::hls::MediaPlaylist {
    let path = format!("/live/{stream}/index.m3u8");
    wait_for(
        &format!("{n} segments of {stream} on {addr}"),
        Duration::from_secs(40),
        || {
            let path = path.clone();
            async move {
                let r = http::get(addr, &path, &[])
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status != 200 {
                    return Err(format!("status {}", r.status));
                }
                let p = media_playlist(&r.text()).map_err(|e| e.to_string())?;
                Ok((p.entries.len() >= n).then_some(p))
            }
        },
    )
    .await
    .unwrap()
}

/// What ffprobe says of a media file: `(codec_name, width, height)` per stream.
pub fn ffprobe_streams(bytes: &[u8]) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let path = temp_dir("probe").with_extension("ts");
    std::fs::write(&path, bytes)?;
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "json",
        ])
        .arg(&path)
        .output()
        .context("ffprobe not found: apt-get install -y ffmpeg")?;
    let _ = std::fs::remove_file(&path);
    anyhow::ensure!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["codec_name"].as_str().unwrap_or("").to_string(),
                        s["width"].as_u64().unwrap_or(0),
                        s["height"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Segment packaging for [`Encoder::push`].
#[derive(Debug, Clone, Copy)]
pub enum Packaging {
    /// MPEG-TS segments.
    Ts,
    /// fMP4/CMAF segments with an init segment.
    Fmp4,
}

impl Encoder {
    /// Starts `ffmpeg -re` pushing `seconds` of H.264 + AAC in 1 s segments to
    /// `/ingest/{stream}/index.m3u8` on `addr`.
    pub fn push(
        addr: SocketAddr,
        stream: &str,
        seconds: u32,
        packaging: Packaging,
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-re"])
            .args([
                "-f",
                "lavfi",
                "-i",
                &format!("testsrc2=size=320x180:rate=25:duration={seconds}"),
            ])
            .args([
                "-f",
                "lavfi",
                "-i",
                &format!("sine=frequency=440:duration={seconds}"),
            ])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "25",
                "-keyint_min",
                "25",
            ])
            .args(["-sc_threshold", "0", "-c:a", "aac", "-shortest"])
            .args([
                "-f",
                "hls",
                "-hls_time",
                "1",
                "-hls_list_size",
                "5",
                "-method",
                "PUT",
            ])
            .args(["-headers", &format!("Authorization: Bearer {KEY}")]);
        if let Packaging::Fmp4 = packaging {
            cmd.args(["-hls_segment_type", "fmp4"]);
        }
        cmd.arg(format!("http://{addr}/ingest/{stream}/index.m3u8"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd
            .spawn()
            .context("ffmpeg not found: apt-get install -y ffmpeg")?;
        Ok(Self { child })
    }

    /// Starts `ffmpeg -re` publishing `seconds` of 640x360 30 fps H.264 (a keyframe every
    /// `gop` frames) + AAC over RTMP to `rtmp://{addr}/live/{stream}?key={key}`, as an
    /// encoder configured with OBS's Server and Stream Key fields does.
    pub fn push_rtmp(
        addr: SocketAddr,
        stream: &str,
        key: &str,
        seconds: u32,
        gop: u32,
    ) -> anyhow::Result<Self> {
        Self::live(
            seconds,
            gop,
            &["-f", "flv"],
            &format!("rtmp://{addr}/live/{stream}?key={key}"),
        )
    }

    /// Starts `ffmpeg -re` pushing `seconds` of 640x360 30 fps H.264 + AAC as MPEG-TS over
    /// SRT (caller mode) to `addr`, with `stream_id` as its `streamid` (e.g.
    /// `#!::r=STREAM,m=publish,s=KEY`).
    pub fn push_srt(addr: SocketAddr, stream_id: &str, seconds: u32) -> anyhow::Result<Self> {
        let url = format!("srt://{addr}?streamid={stream_id}&latency=200000");
        Self::live(seconds, 30, &["-f", "mpegts"], &url)
    }

    /// `ffmpeg -re` encoding `seconds` of a live 640x360 30 fps test pattern (H.264, a
    /// keyframe every `gop` frames) and a tone (AAC) into `format` at `url`; its stderr
    /// is kept for [`Encoder::stderr`].
    fn live(seconds: u32, gop: u32, format: &[&str], url: &str) -> anyhow::Result<Self> {
        let child = Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-re"])
            .args([
                "-f",
                "lavfi",
                "-i",
                &format!("testsrc2=size=640x360:rate=30:duration={seconds}"),
            ])
            .args([
                "-f",
                "lavfi",
                "-i",
                &format!("sine=frequency=440:duration={seconds}"),
            ])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            .args(["-g", &gop.to_string(), "-keyint_min", &gop.to_string()])
            .args([
                "-sc_threshold",
                "0",
                "-c:a",
                "aac",
                "-b:a",
                "96k",
                "-shortest",
            ])
            .args(format)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("ffmpeg not found: apt-get install -y ffmpeg")?;
        Ok(Self { child })
    }

    /// Kills the encoder at once (SIGKILL): its connection drops without a goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What ffmpeg wrote to stderr (after it exited; empty if not piped).
    pub fn stderr(&mut self) -> String {
        use std::io::Read;
        let mut s = String::new();
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// Waits for ffmpeg to exit (bounded by `timeout`); true if it exited successfully.
    pub async fn finish(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
