//! Counters for the admin API and Prometheus.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters of one node.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Segments accepted from encoders.
    pub ingest_segments: AtomicU64,
    /// Bytes accepted from encoders.
    pub ingest_bytes: AtomicU64,
    /// Ingest requests refused (auth, size, format).
    pub ingest_rejected: AtomicU64,
    /// RTMP connections accepted (past the handshake).
    pub rtmp_connections: AtomicU64,
    /// RTMP publishes refused for their stream key.
    pub rtmp_key_refused: AtomicU64,
    /// RTMP connections cut for bad input (protocol errors, limits, timeouts).
    pub rtmp_cut: AtomicU64,
    /// SRT connections accepted.
    pub srt_connections: AtomicU64,
    /// SRT callers refused for their key.
    pub srt_key_refused: AtomicU64,
    /// SRT connections dropped (silence, bitrate, errors).
    pub srt_cut: AtomicU64,
    /// Encoder media the segmenter could not use (no keyframe in time, segment too
    /// large, unsupported codec).
    pub ingest_media_errors: AtomicU64,
    /// Segments pulled from peers and verified.
    pub fetch_ok: AtomicU64,
    /// Pulls whose bytes did not match the signed announcement.
    pub fetch_bad_bytes: AtomicU64,
    /// Pulls that failed otherwise (not found, transport).
    pub fetch_failed: AtomicU64,
    /// Pulls refused by a holder at its fan-out limit (then retried elsewhere).
    pub fetch_busy: AtomicU64,
    /// Segments from an encoder not announced because another node is the stream's
    /// active source (redundant ingest, standby).
    pub ingest_standby: AtomicU64,
    /// Media bytes received from peers.
    pub data_bytes_in: AtomicU64,
    /// Media bytes sent to peers.
    pub data_bytes_out: AtomicU64,
    /// Bytes sent to viewers over HTTP.
    pub http_bytes_out: AtomicU64,
    /// Viewer requests (playlists and segments).
    pub viewer_requests: AtomicU64,
    /// Viewers served here on their first playlist request.
    pub viewers_admitted: AtomicU64,
    /// Viewers redirected to a peer (load, drain or hand-off).
    pub viewers_redirected: AtomicU64,
    /// Viewers refused with 503: no node had room.
    pub viewers_refused: AtomicU64,
    /// Viewer requests refused for their token (401 or 403).
    pub viewer_tokens_refused: AtomicU64,
    /// Data-plane requests refused: the client is not a member of this closed mesh.
    pub data_refused_non_member: AtomicU64,
    /// Gossip messages published.
    pub gossip_published: AtomicU64,
    /// Bytes of gossip published.
    pub gossip_bytes: AtomicU64,
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// Egress bytes so far (viewers and peers).
    pub fn egress_bytes(&self) -> u64 {
        self.http_bytes_out.load(Ordering::Relaxed) + self.data_bytes_out.load(Ordering::Relaxed)
    }

    /// Viewer requests so far.
    pub fn viewer_requests(&self) -> u64 {
        self.viewer_requests.load(Ordering::Relaxed)
    }

    /// All counters as (name, help, value).
    pub fn all(&self) -> Vec<(&'static str, &'static str, u64)> {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            (
                "shoal_ingest_segments_total",
                "Segments accepted from encoders",
                l(&self.ingest_segments),
            ),
            (
                "shoal_ingest_bytes_total",
                "Bytes accepted from encoders",
                l(&self.ingest_bytes),
            ),
            (
                "shoal_ingest_rejected_total",
                "Ingest requests refused",
                l(&self.ingest_rejected),
            ),
            (
                "shoal_rtmp_connections_total",
                "RTMP connections past the handshake",
                l(&self.rtmp_connections),
            ),
            (
                "shoal_rtmp_key_refused_total",
                "RTMP publishes refused for their stream key",
                l(&self.rtmp_key_refused),
            ),
            (
                "shoal_rtmp_cut_total",
                "RTMP connections cut for bad input, limits or timeouts",
                l(&self.rtmp_cut),
            ),
            (
                "shoal_srt_connections_total",
                "SRT connections accepted",
                l(&self.srt_connections),
            ),
            (
                "shoal_srt_key_refused_total",
                "SRT callers refused for their key",
                l(&self.srt_key_refused),
            ),
            (
                "shoal_srt_cut_total",
                "SRT connections dropped for silence, bitrate or errors",
                l(&self.srt_cut),
            ),
            (
                "shoal_ingest_media_errors_total",
                "Encoder media the segmenter could not use",
                l(&self.ingest_media_errors),
            ),
            (
                "shoal_fetch_ok_total",
                "Segments pulled from peers and verified",
                l(&self.fetch_ok),
            ),
            (
                "shoal_fetch_bad_bytes_total",
                "Pulls whose bytes failed blake3 verification",
                l(&self.fetch_bad_bytes),
            ),
            (
                "shoal_fetch_failed_total",
                "Pulls that failed for other reasons",
                l(&self.fetch_failed),
            ),
            (
                "shoal_fetch_busy_total",
                "Pulls refused by a holder at its fan-out limit",
                l(&self.fetch_busy),
            ),
            (
                "shoal_ingest_standby_total",
                "Ingested segments held back: another node is the active source",
                l(&self.ingest_standby),
            ),
            (
                "shoal_data_bytes_in_total",
                "Media bytes received from peers",
                l(&self.data_bytes_in),
            ),
            (
                "shoal_data_bytes_out_total",
                "Media bytes sent to peers",
                l(&self.data_bytes_out),
            ),
            (
                "shoal_http_bytes_out_total",
                "Bytes sent to viewers",
                l(&self.http_bytes_out),
            ),
            (
                "shoal_viewer_requests_total",
                "Viewer playlist and segment requests",
                l(&self.viewer_requests),
            ),
            (
                "shoal_viewers_admitted_total",
                "Viewers served here on their first playlist request",
                l(&self.viewers_admitted),
            ),
            (
                "shoal_viewers_redirected_total",
                "Viewers redirected to a peer",
                l(&self.viewers_redirected),
            ),
            (
                "shoal_viewers_refused_total",
                "Viewers refused: no node had room",
                l(&self.viewers_refused),
            ),
            (
                "shoal_viewer_tokens_refused_total",
                "Viewer requests refused for a missing, expired or invalid token",
                l(&self.viewer_tokens_refused),
            ),
            (
                "shoal_data_refused_non_member_total",
                "Data-plane pulls refused: the client is not a member of this closed mesh",
                l(&self.data_refused_non_member),
            ),
            (
                "shoal_gossip_published_total",
                "Gossip messages published",
                l(&self.gossip_published),
            ),
            (
                "shoal_gossip_bytes_total",
                "Gossip bytes published",
                l(&self.gossip_bytes),
            ),
        ]
    }

    /// Prometheus text exposition, with `gauges` appended.
    pub fn render(&self, counters: &[(&str, &str, u64)], gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        for (name, help, value) in self.all().iter().chain(counters) {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}
