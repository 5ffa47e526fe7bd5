//! Operators' endpoints: `GET /api/status` (JSON), `GET /metrics` (Prometheus), and
//! with the admin token `POST /api/drain` and `POST /api/revocations` (a closed mesh's
//! revocation list, as `shoal revoke` writes it: applied here and gossiped).
//!
//! Who may read status and metrics: on a listener of their own (`--admin-http`, for a
//! private interface) anyone who reaches it; on the viewers' listener, anyone if the
//! node has no admin token or runs with `--public-status`, else only requests bearing
//! the admin token. The admin API always needs the token.

use super::HttpError;
use super::auth::require_bearer;
use crate::node::Shared;
use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use shoal_core::balance::viewer_budget;
use shoal_core::streams::Source;
use shoal_protocol::status::Load;
use std::sync::Arc;
use std::time::Instant;

/// The operators' endpoints.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/status", get(status))
        .route("/api/drain", post(drain))
        .route("/api/revocations", post(revocations))
        .route("/metrics", get(metrics))
}

/// Guards the operators' endpoints on the viewers' listener: gone from it when they have
/// a listener of their own; status and metrics need the admin token when the node has
/// one, unless it runs with `--public-status`.
pub async fn on_viewer_listener(
    State(node): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    if node.config.admin_http.is_some() {
        return HttpError::NotFound("served on the operators' listener (--admin-http)")
            .into_response();
    }
    let drain = request.uri().path() == "/api/drain";
    if let (false, false, Some(token)) =
        (drain, node.config.public_status, &node.config.admin_token)
        && let Err(e) = require_bearer(
            request.headers(),
            std::slice::from_ref(token),
            "status and metrics need Authorization: Bearer ADMIN_TOKEN (or --public-status)",
        )
    {
        return e.into_response();
    }
    next.run(request).await
}

/// `GET /api/status`: the node, its peers, and its streams with the provenance of every
/// segment.
pub async fn status(State(node): State<Arc<Shared>>) -> Json<Value> {
    let now = Instant::now();
    // Lock order: ingest before core.
    let pending_ingest = node.ingest.lock().expect("poisoned").pending_bytes();
    let core = node.core();
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
                "load": load_json(&s.load),
                "draining": s.draining,
                "streams": s.streams.iter().map(|h| json!({
                    "name": h.name.as_str(),
                    "first_seq": h.first_seq,
                    "last_seq": h.last_seq,
                    "ingest": h.ingest,
                    "ended": h.ended,
                    "viewers": h.viewers,
                    "bitrate_bps": h.bitrate_bps,
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
                "bitrate_bps": s.bitrate_bps(),
                "warm": core.is_warm(&s.name),
                "carried": core.carries(&s.name),
                "source": core.active_source(&s.name).map(|p| p.to_string()),
                "encoder": node.encoders.get(&s.name),
                "segments": segments,
            })
        })
        .collect();
    let media_shards: Vec<u16> = core.subscribed().iter().map(|s| s.index()).collect();
    let store = node.store.lock().expect("poisoned");
    let mut counters: serde_json::Map<String, Value> = node
        .metrics
        .all()
        .into_iter()
        .map(|(name, _, v)| (name.trim_start_matches("shoal_").to_string(), json!(v)))
        .collect();
    let (control_out, control_in) = node.control.wire_bytes();
    counters.insert("control_bytes_out_total".into(), json!(control_out));
    counters.insert("control_bytes_in_total".into(), json!(control_in));
    let ((rejected, bans), struck) = node.control.misbehaviour();
    counters.insert("gossip_rejected_total".into(), json!(rejected));
    counters.insert("peers_banned_total".into(), json!(bans));
    let misbehaving: Vec<Value> = struck
        .iter()
        .take(32)
        .map(|r| {
            json!({
                "peer_id": r.peer.to_string(),
                "gossip_rejected": r.rejected,
                "banned_for_ms": r.banned_until
                    .map(|u| u.saturating_duration_since(now).as_millis() as u64),
            })
        })
        .collect();
    Json(json!({
        "peer_id": node.peer_id.to_string(),
        "uptime_s": node.started.elapsed().as_secs(),
        "listen": {
            "http": node.http_addr.to_string(),
            "data": node.data_addr.to_string(),
            "rtmp": node.rtmp_addr.map(|a| a.to_string()),
            "srt": node.srt_addr.lock().expect("poisoned").map(|a| a.to_string()),
            "p2p": node.p2p_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        },
        "cert_fingerprint": node.fingerprint.to_hex(),
        "media_shards": media_shards,
        "connections": {
            "open": node.conns.open(),
            "shed": node.conns.shed_total(),
        },
        "resident_bytes": crate::memory::resident_bytes(),
        "misbehaving_peers": misbehaving,
        "membership": node.control.membership(),
        "ingest_pending_bytes": pending_ingest,
        "sessions": core.sessions().len(),
        "load": load_json(&Load {
            egress_bps: node.last_egress_bps().0,
            ..core.own_load()
        }),
        "draining": core.drain().map(|d| format!("{d:?}").to_lowercase()),
        "prewarm_requests": core.warm_requests().iter().map(|w| json!({
            "stream": w.stream.as_str(),
            "peers": w.peers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "ingesting": core.ingest_claims().iter().map(|c| {
            let encoder = node.encoders.get(&c.name);
            json!({
                "name": c.name.as_str(),
                "since": c.since,
                "active": core.active_source(&c.name) == Some(node.peer_id),
                "protocol": encoder.as_ref().map_or("hls-put", |e| e.protocol),
                "encoder": encoder,
            })
        }).collect::<Vec<_>>(),
        "peers": peers,
        "streams": streams,
        "store": { "segments": store.segment_count(), "bytes": store.bytes() },
        "inflight_pulls": node.inflight.len(),
        "counters": counters,
    }))
}

fn load_json(load: &Load) -> Value {
    json!({
        "capacity_bps": load.capacity_bps,
        "reserve_bps": load.reserve_bps,
        "viewer_budget_bps": viewer_budget(load),
        "viewer_load_bps": load.viewer_load_bps,
        "egress_bps": load.egress_bps,
        "relay_bps": load.relay_bps,
        "viewers": load.viewers,
        "cpu_permille": load.cpu_permille,
    })
}

/// `POST /api/drain` with `Authorization: Bearer ADMIN_TOKEN`: the node starts draining
/// at once (new viewers are redirected) and its owner drains and stops it.
pub async fn drain(
    State(node): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    require_admin(&node, &headers)?;
    node.core()
        .start_drain(node.config.drain_timeout, std::time::Instant::now());
    node.publish_status();
    node.drain_requested.notify_one();
    tracing::info!("drain requested over the admin API");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "draining": true, "peer_id": node.peer_id.to_string() })),
    )
        .into_response())
}

/// The admin API needs the admin token; without one configured it is off.
fn require_admin(node: &Shared, headers: &HeaderMap) -> Result<(), HttpError> {
    let Some(token) = &node.config.admin_token else {
        return Err(HttpError::Forbidden(
            "the admin API is off: start the node with --admin-token",
        ));
    };
    require_bearer(
        headers,
        std::slice::from_ref(token),
        "the admin API needs Authorization: Bearer ADMIN_TOKEN",
    )
}

/// Largest revocation list accepted in its text form.
const MAX_REVOCATIONS_BODY: usize = 128 * 1024;

/// `POST /api/revocations`: takes the mesh CA's revocation list (the text `shoal revoke`
/// prints). A newer list than the one held is applied at once (members it names are
/// cut) and gossiped to the mesh; an older one changes nothing.
pub async fn revocations(
    State(node): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, HttpError> {
    require_admin(&node, &headers)?;
    if body.len() > MAX_REVOCATIONS_BODY {
        return Err(HttpError::BadRequest(format!(
            "a revocation list is at most {MAX_REVOCATIONS_BODY} bytes"
        )));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| HttpError::BadRequest("the revocation list is not text".into()))?;
    let list = shoal_protocol::membership::from_text(text)
        .map_err(|e| HttpError::BadRequest(format!("not a revocation list: {e}")))?;
    if !node.control.membership_closed() {
        return Err(HttpError::BadRequest(
            "this mesh is open (no --mesh-ca): there is nothing to revoke".into(),
        ));
    }
    let newer = node
        .control
        .revoke(list)
        .map_err(|e| HttpError::BadRequest(format!("revocation list refused: {e}")))?;
    let report = node.control.membership();
    tracing::info!(
        newer,
        revoked = report.revoked,
        "revocation list posted over the admin API"
    );
    Ok(Json(json!({
        "applied": newer,
        "issued": report.revocations_issued,
        "revoked": report.revoked,
    }))
    .into_response())
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(node): State<Arc<Shared>>) -> Response {
    let (peers, streams, viewers, load, draining) = {
        let core = node.core();
        (
            core.peers().len() as u64,
            core.streams().count() as u64,
            core.total_viewers() as u64,
            core.own_load(),
            core.drain().is_some() as u64,
        )
    };
    let (stored, bytes) = {
        let s = node.store.lock().expect("poisoned");
        (s.segment_count() as u64, s.bytes() as u64)
    };
    let (control_out, control_in) = node.control.wire_bytes();
    let ((rejected, bans), _) = node.control.misbehaviour();
    let membership = node.control.membership();
    let pending_ingest = node.ingest.lock().expect("poisoned").pending_bytes();
    let counters = [
        (
            "shoal_gossip_rejected_total",
            "Gossip messages that failed verification (forged, malformed, out of bounds)",
            rejected,
        ),
        (
            "shoal_peers_banned_total",
            "Peers banned for sending gossip that fails verification",
            bans,
        ),
        (
            "shoal_members_refused_total",
            "Peers refused: no, bad or another peer's membership credential (closed mesh)",
            membership.refused_total,
        ),
        (
            "shoal_members_cut_total",
            "Members cut from the mesh: revoked or credential expired",
            membership.cut_total,
        ),
        (
            "shoal_http_connections_shed_total",
            "HTTP connections closed to make room for new ones",
            node.conns.shed_total(),
        ),
        (
            "shoal_control_bytes_out_total",
            "Control-plane (libp2p) bytes sent on the wire",
            control_out,
        ),
        (
            "shoal_control_bytes_in_total",
            "Control-plane (libp2p) bytes received on the wire",
            control_in,
        ),
        (
            "shoal_viewer_token_signature_checks_total",
            "Viewer token signatures checked (a token seen before is not checked again)",
            node.viewer_tokens
                .as_ref()
                .map_or(0, |v| v.signature_checks()),
        ),
    ];
    let text = node.metrics.render(
        &counters,
        &[
            ("shoal_peers", "Peers with a live status", peers),
            ("shoal_streams", "Streams known", streams),
            ("shoal_viewers", "Current viewers", viewers),
            (
                "shoal_viewer_tokens_remembered",
                "Viewer tokens remembered as verified",
                node.viewer_tokens
                    .as_ref()
                    .map_or(0, |v| v.remembered() as u64),
            ),
            (
                "shoal_viewer_load_bps",
                "Viewers x stream bitrate, bits per second",
                load.viewer_load_bps,
            ),
            (
                "shoal_egress_capacity_bps",
                "Configured egress capacity (0: none)",
                load.capacity_bps,
            ),
            (
                "shoal_cpu_permille",
                "CPU use, permille of all cores",
                u64::from(load.cpu_permille),
            ),
            ("shoal_draining", "1 while the node drains", draining),
            ("shoal_store_segments", "Segments held", stored),
            ("shoal_store_bytes", "Bytes held", bytes),
            (
                "shoal_ingest_pending_bytes",
                "Uploaded bytes not yet listed by a playlist",
                pending_ingest,
            ),
            (
                "shoal_http_connections",
                "HTTP connections open",
                node.conns.open() as u64,
            ),
            (
                "shoal_resident_bytes",
                "Resident memory of the process",
                crate::memory::resident_bytes().unwrap_or(0),
            ),
        ],
    );
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
