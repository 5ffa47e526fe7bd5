//! Node configuration: command-line flags, `SHOAL_*` environment variables and a TOML
//! file (`--config FILE`), in that order of precedence, over built-in defaults.

use crate::{hls, units};
use clap::Args;
use libp2p::Multiaddr;
use serde::Deserialize;
use shoal_protocol::membership::{self, Credential, MeshCa, Revocations};
use shoal_protocol::signed::{Signable, Signed};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// State directory (identity key).
    pub data_dir: PathBuf,
    /// HTTP listen address: viewers, ingest, admin API.
    pub http: SocketAddr,
    /// libp2p listen addresses.
    pub p2p: Vec<Multiaddr>,
    /// quinn data-plane listen address.
    pub data: SocketAddr,
    /// Peers to join through.
    pub bootstrap: Vec<Multiaddr>,
    /// Stream keys accepted for ingest (none: ingest refused).
    pub ingest_keys: Vec<String>,
    /// Keys that sign viewer tokens (none: anyone may watch).
    pub viewer_keys: Vec<crate::tokens::ViewerKey>,
    /// The CA of a closed mesh: peers need a credential it signed (none: an open mesh).
    pub mesh_ca: Option<MeshCa>,
    /// This node's membership credential (needed with [`Self::mesh_ca`]).
    pub credential: Option<Signed<Credential>>,
    /// A revocation list to start with (a newer one saved in the data directory wins).
    pub revocations: Option<Signed<Revocations>>,
    /// The IP that peers and viewers should use for this node, when listening on an
    /// unspecified address (0.0.0.0).
    pub advertise_ip: Option<IpAddr>,
    /// Core tunables.
    pub core: shoal_core::Config,
    /// Where the `/watch` page loads hls.js from.
    pub hls_js_url: String,
    /// Token for the admin API (`POST /api/drain`); none: the admin API is off. With
    /// one, `/api/status` and `/metrics` need it too, unless [`Self::public_status`].
    pub admin_token: Option<String>,
    /// `/api/status` and `/metrics` open to anyone on the viewers' listener, even with
    /// an admin token.
    pub public_status: bool,
    /// A separate listener for operators (status, metrics, admin API), e.g. on a
    /// private interface; the viewers' listener then serves none of them.
    pub admin_http: Option<SocketAddr>,
    /// How long a draining node keeps serving its admitted viewers before handing them
    /// off.
    pub drain_timeout: Duration,
    /// Bounds on HTTP connections.
    pub connections: crate::http::conns::Limits,
    /// Bounds on ingest state.
    pub ingest_limits: crate::ingest::Limits,
    /// RTMP listen address (none: no RTMP ingest).
    pub rtmp: Option<SocketAddr>,
    /// [`Self::rtmp`] was set by the operator: failing to bind it fails the start. The
    /// default address, when taken (several nodes on one host), only turns RTMP off.
    pub rtmp_explicit: bool,
    /// Bounds on RTMP connections.
    pub rtmp_limits: crate::rtmp::server::Limits,
    /// SRT ingest address, UDP (none: no SRT ingest).
    pub srt: Option<SocketAddr>,
    /// [`Self::srt`] was set by the operator (see [`Self::rtmp_explicit`]).
    pub srt_explicit: bool,
    /// Bounds on SRT connections.
    pub srt_limits: crate::srt::server::Limits,
    /// Target duration of the segments the node cuts from RTMP ingest (at the first
    /// keyframe past it).
    pub segment_duration: Duration,
    /// How the node packages the segments it cuts from RTMP ingest.
    pub segment_format: crate::media::segmenter::SegmentFormat,
}

impl NodeConfig {
    /// A configuration for tests and the simulator: everything on 127.0.0.1 with
    /// OS-chosen ports.
    pub fn loopback(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            http: "127.0.0.1:0".parse().expect("valid"),
            p2p: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("valid")],
            data: "127.0.0.1:0".parse().expect("valid"),
            bootstrap: vec![],
            ingest_keys: vec![],
            viewer_keys: vec![],
            mesh_ca: None,
            credential: None,
            revocations: None,
            advertise_ip: None,
            // Many nodes share one process (and its CPU figure) in tests and the
            // simulator: CPU must not stop them taking viewers.
            core: shoal_core::Config {
                cpu_limit_permille: 0,
                ..shoal_core::Config::default()
            },
            hls_js_url: crate::http::watch::DEFAULT_HLS_JS_URL.to_string(),
            admin_token: None,
            public_status: false,
            admin_http: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            connections: crate::http::conns::Limits::default(),
            ingest_limits: crate::ingest::Limits::default(),
            rtmp: None,
            rtmp_explicit: false,
            rtmp_limits: crate::rtmp::server::Limits::default(),
            srt: None,
            srt_explicit: false,
            srt_limits: crate::srt::server::Limits::default(),
            segment_duration: DEFAULT_SEGMENT_DURATION,
            segment_format: crate::media::segmenter::SegmentFormat::Ts,
        }
    }
}

/// How long a draining node serves its admitted viewers by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default target duration of segments cut from RTMP ingest.
pub const DEFAULT_SEGMENT_DURATION: Duration = Duration::from_secs(2);
/// Default share of the egress capacity kept for ingest and relaying.
pub const DEFAULT_INGEST_RESERVE: &str = "20%";

/// `shoal run` flags. Each may also come from the environment or the config file.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// TOML file with any of the settings below (keys as the long flags, with `_`).
    #[arg(long, env = "SHOAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// The node's state directory; its identity key is created there on first start.
    #[arg(long, env = "SHOAL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP address for viewers, ingest and the admin API [default: 0.0.0.0:8080].
    #[arg(long, env = "SHOAL_HTTP")]
    pub http: Option<SocketAddr>,
    /// libp2p listen multiaddr (repeatable) [default: /ip4/0.0.0.0/udp/4001/quic-v1].
    #[arg(long, env = "SHOAL_P2P", value_delimiter = ',')]
    pub p2p: Vec<Multiaddr>,
    /// quinn data-plane UDP address [default: 0.0.0.0:4002].
    #[arg(long, env = "SHOAL_DATA")]
    pub data: Option<SocketAddr>,
    /// A peer to join through, ending in /p2p/PEERID (repeatable).
    #[arg(long, env = "SHOAL_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<Multiaddr>,
    /// A stream key accepted for ingest (repeatable).
    #[arg(long, env = "SHOAL_INGEST_KEY", value_delimiter = ',')]
    pub ingest_key: Vec<String>,
    /// A public key whose viewer tokens are accepted, as `KID:PUBLIC` (`shoal keygen`
    /// prints it); repeatable, so keys rotate. With one, playlists and media need a
    /// token (`?token=`, `Authorization: Bearer`, or the `shoal_token` cookie).
    #[arg(long, env = "SHOAL_VIEWER_KEY", value_delimiter = ',')]
    pub viewer_key: Vec<crate::tokens::ViewerKey>,
    /// Close the mesh: only nodes with a membership credential signed by this key
    /// (`KID:PUBLIC` or `PUBLIC` as `shoal keygen` prints it) may join; peers without
    /// one are disconnected and their gossip and pulls refused.
    #[arg(long, env = "SHOAL_MESH_CA")]
    pub mesh_ca: Option<String>,
    /// This node's membership credential (a file written by `shoal credential`).
    #[arg(long, env = "SHOAL_CREDENTIAL")]
    pub credential: Option<PathBuf>,
    /// A revocation list to start with (a file written by `shoal revoke`).
    #[arg(long, env = "SHOAL_REVOCATIONS")]
    pub revocations: Option<PathBuf>,
    /// IP that peers and viewers use to reach this node when it listens on 0.0.0.0.
    #[arg(long, env = "SHOAL_ADVERTISE_IP")]
    pub advertise_ip: Option<IpAddr>,
    /// Segments kept per stream [default: 32].
    #[arg(long, env = "SHOAL_WINDOW")]
    pub window: Option<usize>,
    /// Segments listed in a live playlist [default: 6].
    #[arg(long, env = "SHOAL_PLAYLIST_LEN")]
    pub playlist_len: Option<usize>,
    /// Largest accepted segment in bytes [default: 67108864].
    #[arg(long, env = "SHOAL_MAX_SEGMENT_SIZE")]
    pub max_segment_size: Option<u64>,
    /// Seconds without a status before a peer counts as gone [default: 5].
    #[arg(long, env = "SHOAL_PEER_TIMEOUT")]
    pub peer_timeout: Option<u64>,
    /// Peers this node sends each segment to directly; others are pointed at those it fed
    /// [default: 4].
    #[arg(long, env = "SHOAL_FANOUT")]
    pub fanout: Option<usize>,
    /// Egress this node may send, e.g. 500mbit, 2gbit; viewers beyond it are redirected
    /// to peers [default: no limit].
    #[arg(long, env = "SHOAL_EGRESS_CAPACITY", value_parser = units::parse_rate)]
    pub egress_capacity: Option<u64>,
    /// Share of the egress capacity kept for ingest and relaying to peers, as a
    /// percentage (20%) or a rate (100mbit) [default: 20%].
    #[arg(long, env = "SHOAL_INGEST_RESERVE", value_parser = units::Share::parse)]
    pub ingest_reserve: Option<units::Share>,
    /// Above this CPU use (percent of all cores) the node takes no new viewers; 0 turns
    /// the check off [default: 90].
    #[arg(long, env = "SHOAL_CPU_LIMIT")]
    pub cpu_limit: Option<u16>,
    /// Token for the admin API (POST /api/drain); without it the admin API is off.
    /// With it, /api/status and /metrics need it too (`Authorization: Bearer`) unless
    /// --public-status.
    #[arg(long, env = "SHOAL_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Serve /api/status and /metrics to anyone even with --admin-token.
    #[arg(long, env = "SHOAL_PUBLIC_STATUS")]
    pub public_status: bool,
    /// A separate HTTP address for operators: /api/status and /metrics (open there) and
    /// the admin API (still needing --admin-token); the viewers' address then serves
    /// none of them.
    #[arg(long, env = "SHOAL_ADMIN_HTTP")]
    pub admin_http: Option<SocketAddr>,
    /// Seconds a draining node keeps serving its viewers before handing them off
    /// [default: 30].
    #[arg(long, env = "SHOAL_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<u64>,
    /// URL the /watch player page loads hls.js from [default: jsdelivr CDN].
    #[arg(long, env = "SHOAL_HLS_JS_URL")]
    pub hls_js_url: Option<String>,
    /// Most HTTP connections open at once; past it idle ones give way to new ones
    /// [default: 32768, at most the open-file limit allows].
    #[arg(long, env = "SHOAL_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most HTTP connections from one client address [default: 4096].
    #[arg(long, env = "SHOAL_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Seconds after which a stream with no ingest activity and no viewers is forgotten
    /// here, freeing its name [default: 30].
    #[arg(long, env = "SHOAL_INGEST_FORGET")]
    pub ingest_forget: Option<u64>,
    /// Bytes of uploaded files not yet listed by a playlist, per stream
    /// [default: 2 x max segment size, at least 64 MiB].
    #[arg(long, env = "SHOAL_INGEST_PENDING_BYTES")]
    pub ingest_pending_bytes: Option<u64>,
    /// Bytes of uploaded files not yet listed, over all streams [default: 512 MiB].
    #[arg(long, env = "SHOAL_INGEST_PENDING_TOTAL")]
    pub ingest_pending_total: Option<u64>,
    /// RTMP ingest address (OBS: Server rtmp://NODE/live, Stream Key STREAM?key=KEY), or
    /// `off` [default: 0.0.0.0:1935].
    #[arg(long, env = "SHOAL_RTMP")]
    pub rtmp: Option<String>,
    /// SRT ingest address (UDP; callers send streamid=#!::r=STREAM,m=publish,s=KEY), or
    /// `off` [default: 0.0.0.0:9000].
    #[arg(long, env = "SHOAL_SRT")]
    pub srt: Option<String>,
    /// Target segment duration for RTMP ingest, in seconds (segments are cut at the
    /// first keyframe past it) [default: 2].
    #[arg(long, env = "SHOAL_SEGMENT_DURATION")]
    pub segment_duration: Option<f64>,
    /// Packaging of the segments cut from RTMP ingest: `ts` (MPEG-TS) or `fmp4`
    /// (fragmented MP4 / CMAF with an init segment) [default: ts].
    #[arg(long, env = "SHOAL_SEGMENT_FORMAT")]
    pub segment_format: Option<crate::media::segmenter::SegmentFormat>,
    /// Highest bitrate one encoder connection may send, e.g. 50mbit; above it the
    /// connection is cut [default: 100mbit].
    #[arg(long, env = "SHOAL_INGEST_MAX_BITRATE", value_parser = units::parse_rate)]
    pub ingest_max_bitrate: Option<u64>,
}

/// The config file: the same settings as [`RunArgs`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    http: Option<SocketAddr>,
    #[serde(default)]
    p2p: Vec<String>,
    data: Option<SocketAddr>,
    #[serde(default)]
    bootstrap: Vec<String>,
    #[serde(default)]
    ingest_key: Vec<String>,
    #[serde(default)]
    viewer_key: Vec<String>,
    mesh_ca: Option<String>,
    credential: Option<PathBuf>,
    revocations: Option<PathBuf>,
    advertise_ip: Option<IpAddr>,
    window: Option<usize>,
    playlist_len: Option<usize>,
    max_segment_size: Option<u64>,
    peer_timeout: Option<u64>,
    fanout: Option<usize>,
    hls_js_url: Option<String>,
    egress_capacity: Option<String>,
    ingest_reserve: Option<String>,
    cpu_limit: Option<u16>,
    admin_token: Option<String>,
    public_status: Option<bool>,
    admin_http: Option<SocketAddr>,
    drain_timeout: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    ingest_forget: Option<u64>,
    ingest_pending_bytes: Option<u64>,
    ingest_pending_total: Option<u64>,
    rtmp: Option<String>,
    srt: Option<String>,
    segment_duration: Option<f64>,
    segment_format: Option<String>,
    ingest_max_bitrate: Option<String>,
}

/// A listen address setting: the default when unset, none for `off`.
fn listen_or_off(
    setting: Option<&str>,
    default: &str,
    what: &str,
) -> anyhow::Result<Option<SocketAddr>> {
    match setting {
        None => Ok(Some(default.parse().expect("valid default"))),
        Some("off") => Ok(None),
        Some(addr) => addr
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{what} address {addr:?}: {e}")),
    }
}

/// Reads a signed credential or revocation list from the file at `path`, if given.
fn read_signed<T: Signable>(
    path: Option<PathBuf>,
    what: &str,
) -> anyhow::Result<Option<Signed<T>>> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))?;
    membership::from_text(&text)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))
}

fn multiaddrs(list: &[String]) -> anyhow::Result<Vec<Multiaddr>> {
    list.iter()
        .map(|s| {
            s.parse()
                .map_err(|e| anyhow::anyhow!("bad multiaddr {s:?}: {e}"))
        })
        .collect()
}

fn first_nonempty<T>(a: Vec<T>, b: Vec<T>) -> Vec<T> {
    if a.is_empty() { b } else { a }
}

impl RunArgs {
    /// Resolves flags, environment, file and defaults into a [`NodeConfig`].
    pub fn resolve(self) -> anyhow::Result<NodeConfig> {
        let file: FileConfig = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
                toml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let defaults = shoal_core::Config::default();
        let capacity = match self.egress_capacity {
            Some(c) => c,
            None => file
                .egress_capacity
                .as_deref()
                .map(units::parse_rate)
                .transpose()
                .map_err(|e| anyhow::anyhow!("egress_capacity: {e}"))?
                .unwrap_or(0),
        };
        let reserve = match self.ingest_reserve {
            Some(r) => r,
            None => units::Share::parse(
                file.ingest_reserve
                    .as_deref()
                    .unwrap_or(DEFAULT_INGEST_RESERVE),
            )
            .map_err(|e| anyhow::anyhow!("ingest_reserve: {e}"))?,
        };
        let cpu_limit = self.cpu_limit.or(file.cpu_limit).unwrap_or(90);
        anyhow::ensure!(cpu_limit <= 100, "cpu_limit must be a percentage (0-100)");
        let mut core = shoal_core::Config {
            egress_capacity_bps: capacity,
            ingest_reserve_bps: reserve.of(capacity),
            cpu_limit_permille: cpu_limit * 10,
            window: self
                .window
                .or(file.window)
                .unwrap_or(defaults.window)
                .max(2),
            playlist_len: self
                .playlist_len
                .or(file.playlist_len)
                .unwrap_or(defaults.playlist_len)
                .max(1),
            max_segment_size: self
                .max_segment_size
                .or(file.max_segment_size)
                .unwrap_or(defaults.max_segment_size),
            peer_timeout: self
                .peer_timeout
                .or(file.peer_timeout)
                .map(Duration::from_secs)
                .unwrap_or(defaults.peer_timeout),
            fanout: self
                .fanout
                .or(file.fanout)
                .unwrap_or(defaults.fanout)
                .max(1),
            ..defaults
        };
        anyhow::ensure!(
            core.playlist_len <= core.window,
            "playlist_len ({}) must not exceed window ({})",
            core.playlist_len,
            core.window
        );
        let conn_defaults = crate::http::conns::Limits::default();
        let connections = crate::http::conns::Limits {
            max: self
                .max_connections
                .or(file.max_connections)
                .unwrap_or(conn_defaults.max)
                .max(1),
            per_addr: self
                .max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(conn_defaults.per_addr)
                .max(1),
            ..conn_defaults
        };
        let ingest_defaults = crate::ingest::Limits::for_segment_size(core.max_segment_size);
        let ingest_limits = crate::ingest::Limits {
            forget_after: self
                .ingest_forget
                .or(file.ingest_forget)
                .map_or(ingest_defaults.forget_after, Duration::from_secs),
            pending_bytes: self
                .ingest_pending_bytes
                .or(file.ingest_pending_bytes)
                .unwrap_or(ingest_defaults.pending_bytes),
            pending_total: self
                .ingest_pending_total
                .or(file.ingest_pending_total)
                .unwrap_or(ingest_defaults.pending_total),
            ..ingest_defaults
        };
        core.stream_forget = ingest_limits.forget_after;
        let rtmp_setting = self.rtmp.or(file.rtmp);
        let rtmp_explicit = rtmp_setting.is_some();
        let rtmp = listen_or_off(rtmp_setting.as_deref(), "0.0.0.0:1935", "rtmp")?;
        let srt_setting = self.srt.or(file.srt);
        let srt_explicit = srt_setting.is_some();
        let srt = listen_or_off(srt_setting.as_deref(), "0.0.0.0:9000", "srt")?;
        let segment_duration = match self.segment_duration.or(file.segment_duration) {
            None => DEFAULT_SEGMENT_DURATION,
            Some(s) if (0.1..=hls::MAX_SEGMENT_SECS).contains(&s) => Duration::from_secs_f64(s),
            Some(s) => anyhow::bail!(
                "segment_duration {s} out of range (0.1 to {} s)",
                hls::MAX_SEGMENT_SECS
            ),
        };
        let segment_format = match (self.segment_format, file.segment_format) {
            (Some(f), _) => f,
            (None, Some(s)) => s
                .parse()
                .map_err(|e| anyhow::anyhow!("segment_format in the config file: {e}"))?,
            (None, None) => crate::media::segmenter::SegmentFormat::Ts,
        };
        let max_bitrate = match (self.ingest_max_bitrate, file.ingest_max_bitrate) {
            (Some(b), _) => Some(b),
            (None, Some(s)) => Some(
                units::parse_rate(&s)
                    .map_err(|e| anyhow::anyhow!("ingest_max_bitrate in the config file: {e}"))?,
            ),
            (None, None) => None,
        };
        let srt_defaults = crate::srt::server::Limits::default();
        let srt_limits = crate::srt::server::Limits {
            max_bitrate: max_bitrate.unwrap_or(srt_defaults.max_bitrate).max(1),
            ..srt_defaults
        };
        let rtmp_defaults = crate::rtmp::server::Limits::default();
        let rtmp_limits = crate::rtmp::server::Limits {
            max_bitrate: max_bitrate.unwrap_or(rtmp_defaults.max_bitrate).max(1),
            ..rtmp_defaults
        };
        let mut p2p = first_nonempty(self.p2p, multiaddrs(&file.p2p)?);
        if p2p.is_empty() {
            p2p.push("/ip4/0.0.0.0/udp/4001/quic-v1".parse()?);
        }
        Ok(NodeConfig {
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("shoal-data")),
            http: self
                .http
                .or(file.http)
                .unwrap_or_else(|| "0.0.0.0:8080".parse().expect("valid")),
            p2p,
            data: self
                .data
                .or(file.data)
                .unwrap_or_else(|| "0.0.0.0:4002".parse().expect("valid")),
            bootstrap: first_nonempty(self.bootstrap, multiaddrs(&file.bootstrap)?),
            ingest_keys: first_nonempty(self.ingest_key, file.ingest_key),
            viewer_keys: first_nonempty(
                self.viewer_key,
                file.viewer_key
                    .iter()
                    .map(|k| k.parse())
                    .collect::<Result<_, String>>()
                    .map_err(|e| anyhow::anyhow!("viewer_key in the config file: {e}"))?,
            ),
            mesh_ca: self
                .mesh_ca
                .or(file.mesh_ca)
                .map(|k| MeshCa::parse(&k))
                .transpose()
                .map_err(anyhow::Error::msg)?,
            credential: read_signed(self.credential.or(file.credential), "credential")?,
            revocations: read_signed(self.revocations.or(file.revocations), "revocation list")?,
            advertise_ip: self.advertise_ip.or(file.advertise_ip),
            core,
            hls_js_url: self
                .hls_js_url
                .or(file.hls_js_url)
                .unwrap_or_else(|| crate::http::watch::DEFAULT_HLS_JS_URL.to_string()),
            admin_token: self
                .admin_token
                .or(file.admin_token)
                .filter(|t| !t.is_empty()),
            public_status: self.public_status || file.public_status.unwrap_or(false),
            admin_http: self.admin_http.or(file.admin_http),
            drain_timeout: self
                .drain_timeout
                .or(file.drain_timeout)
                .map_or(DEFAULT_DRAIN_TIMEOUT, Duration::from_secs),
            connections,
            ingest_limits,
            rtmp,
            rtmp_explicit,
            rtmp_limits,
            srt,
            srt_explicit,
            srt_limits,
            segment_duration,
            segment_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("shoal-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("shoal.toml");
        std::fs::write(
            &file,
            "http = \"127.0.0.1:9000\"\ndata = \"127.0.0.1:9001\"\nwindow = 10\ningest_key = [\"k\"]\nbootstrap = [\"/ip4/127.0.0.1/udp/1/quic-v1/p2p/12D3KooWB1uxrm92W8S1ueTVKjVMxH2mEfbH7gXWopYMzpuEj5UK\"]\n",
        )
        .unwrap();
        let args = RunArgs {
            config: Some(file.clone()),
            http: Some("127.0.0.1:7000".parse().unwrap()),
            ..RunArgs::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.http.port(), 7000);
        assert_eq!(c.data.port(), 9001);
        assert_eq!(c.core.window, 10);
        assert_eq!(c.ingest_keys, vec!["k".to_string()]);
        assert_eq!(c.bootstrap.len(), 1);
        assert_eq!(c.p2p[0].to_string(), "/ip4/0.0.0.0/udp/4001/quic-v1");
        assert!(!c.public_status && c.admin_http.is_none());

        std::fs::write(
            &file,
            "admin_token = \"t\"\npublic_status = true\nadmin_http = \"127.0.0.1:9090\"\n",
        )
        .unwrap();
        let c = RunArgs {
            config: Some(file.clone()),
            ..RunArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("t"));
        assert!(c.public_status);
        assert_eq!(c.admin_http, Some("127.0.0.1:9090".parse().unwrap()));

        std::fs::write(&file, "htp = 1\n").unwrap();
        let err = RunArgs {
            config: Some(file),
            ..RunArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn segment_format_from_flag_or_file() {
        use crate::media::segmenter::SegmentFormat;
        let dir = std::env::temp_dir().join(format!("shoal-cfg-fmt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("shoal.toml");
        let resolve = |contents: &str, flag: Option<SegmentFormat>| {
            std::fs::write(&file, contents).unwrap();
            RunArgs {
                config: Some(file.clone()),
                segment_format: flag,
                ..RunArgs::default()
            }
            .resolve()
        };
        assert_eq!(resolve("", None).unwrap().segment_format, SegmentFormat::Ts);
        let c = resolve("segment_format = \"fmp4\"\n", None).unwrap();
        assert_eq!(c.segment_format, SegmentFormat::Fmp4);
        let c = resolve("segment_format = \"fmp4\"\n", Some(SegmentFormat::Ts)).unwrap();
        assert_eq!(c.segment_format, SegmentFormat::Ts);
        assert!(resolve("segment_format = \"mp5\"\n", None).is_err());
        assert_eq!("FMP4".parse(), Ok(SegmentFormat::Fmp4));
        assert_eq!(SegmentFormat::Fmp4.to_string(), "fmp4");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
