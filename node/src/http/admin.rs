//! Operators' endpoints: `GET /api/status` (JSON) and `GET /metrics` (Prometheus).

use crate::core::streams::Source;
use crate::node::Shared;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

/// `GET /api/status`: the node, its peers, and its streams with the provenance of every
/// segment.
pub async fn status(State(node): State<Arc<Shared>>) -> Json<Value> {
    let now = Instant::now();
    let core = node.core.lock().expect("poisoned");
    let peers: Vec<Value> = core
        .peers()
        .known()
        .map(|(id, p)| {
            let s = p.status.as_ref().expect("known peers have a status");
            json!({
                "peer_id": id.to_string(),
                "rtt_ms": p.rtt.map(|r| r.as_secs_f64() * 1000.0),
                "connected": p.connected,
                "last_seen_ms": now.saturating_duration_since(p.last_seen).as_millis() as u64,
                "http_addr": s.http_addr.to_string(),
                "data_addr": s.data_addr.to_string(),
                "penalised": p.is_penalised(now),
                "bad_bytes": p.bad_bytes,
                "load": {
                    "egress_bps": s.load.egress_bps,
                    "viewers": s.load.viewers,
                },
                "streams": s.streams.iter().map(|h| json!({
                    "name": h.name.as_str(),
                    "first_seq": h.first_seq,
                    "last_seq": h.last_seq,
                    "ingest": h.ingest,
                    "ended": h.ended,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let streams: Vec<Value> = core
        .streams()
        .map(|s| {
            let segments: Vec<Value> = s
                .entries
                .iter()
                .map(|(seq, e)| {
                    let a = &e.announcement.value;
                    let (source, via) = match e.held.map(|h| h.source) {
                        Some(Source::Ingest) => (json!("ingest"), json!("ingest")),
                        Some(Source::Peer(p)) => (json!(p.to_string()), json!("data-plane")),
                        None => (Value::Null, Value::Null),
                    };
                    json!({
                        "seq": seq,
                        "size": a.size,
                        "duration_ms": a.duration_ms,
                        "hash": a.hash.to_hex(),
                        "origin": e.announcement.signer.to_string(),
                        "held": e.held.is_some(),
                        "uploads": e.uploads.len(),
                        "source": source,
                        "via": via,
                    })
                })
                .collect();
            let held = s.held_range();
            json!({
                "name": s.name.as_str(),
                "ingest": s.ingest_here,
                "ended": s.ended(),
                "first_seq": s.entries.keys().next(),
                "last_seq": s.newest(),
                "held_first_seq": held.map(|h| h.0),
                "held_last_seq": held.map(|h| h.1),
                "viewers": core.viewer_count(&s.name),
                "source": core.active_source(&s.name).map(|p| p.to_string()),
                "segments": segments,
            })
        })
        .collect();
    let store = node.store.lock().expect("poisoned");
    let counters: serde_json::Map<String, Value> = node
        .metrics
        .all()
        .into_iter()
        .map(|(name, _, v)| (name.trim_start_matches("shoal_").to_string(), json!(v)))
        .collect();
    Json(json!({
        "peer_id": node.peer_id.to_string(),
        "uptime_s": node.started.elapsed().as_secs(),
        "listen": {
            "http": node.http_addr.to_string(),
            "data": node.data_addr.to_string(),
            "p2p": node.p2p_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        },
        "cert_fingerprint": node.fingerprint.to_hex(),
        "ingesting": core.ingest_claims().iter().map(|c| json!({
            "name": c.name.as_str(),
            "since": c.since,
            "active": core.active_source(&c.name) == Some(node.peer_id),
        })).collect::<Vec<_>>(),
        "peers": peers,
        "streams": streams,
        "store": { "segments": store.segment_count(), "bytes": store.bytes() },
        "inflight_pulls": node.inflight.len(),
        "counters": counters,
    }))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(node): State<Arc<Shared>>) -> Response {
    let (peers, streams, viewers) = {
        let core = node.core.lock().expect("poisoned");
        (
            core.peers().len() as u64,
            core.streams().count() as u64,
            core.total_viewers() as u64,
        )
    };
    let (stored, bytes) = {
        let s = node.store.lock().expect("poisoned");
        (s.segment_count() as u64, s.bytes() as u64)
    };
    let text = node.metrics.render(&[
        ("shoal_peers", "Peers with a live status", peers),
        ("shoal_streams", "Streams known", streams),
        ("shoal_viewers", "Current viewers", viewers),
        ("shoal_store_segments", "Segments held", stored),
        ("shoal_store_bytes", "Bytes held", bytes),
    ]);
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
