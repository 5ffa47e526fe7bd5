//! `GET /live/{stream}/info.json`: what a stream's encoder sends (protocol, codecs,
//! resolution, bitrate), for the `/watch` page and for people. The node the encoder
//! pushes into answers with it; any other node says which node that is and where to ask,
//! so a page on any node can show it. The encoder's address is operators' information:
//! it is included only where `/api/status` is open to the caller.

use super::HttpError;
use super::auth::require_bearer;
use crate::node::Shared;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};
use shoal_protocol::stream;
use std::sync::Arc;

/// `GET /live/{stream}/info.json`.
pub async fn get(
    State(node): State<Arc<Shared>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, HttpError> {
    let name = stream::Name::new(stream)
        .map_err(|e| HttpError::BadRequest(format!("invalid stream name: {e}")))?;
    if let Some(info) = node.encoders.get(&name) {
        let mut v = json!({
            "stream": name.as_str(),
            "ingest_node": node.peer_id.to_string(),
            "protocol": info.protocol,
            "codecs": info.codecs,
            "width": info.width,
            "height": info.height,
            "bitrate_bps": info.bitrate_bps,
            "encoder": info.encoder,
            "since_ms": info.since_ms,
        });
        if operator(&node, &headers) {
            v["address"] = json!(info.address.to_string());
        }
        return Ok(Json(v));
    }
    let core = node.core();
    let source = core.active_source(&name);
    let http = source
        .filter(|p| *p != node.peer_id)
        .and_then(|p| core.peers().get(&p))
        .and_then(|p| p.status.as_ref())
        .map(|s| s.http_addr);
    Ok(Json(json!({
        "stream": name.as_str(),
        "ingest_node": source.map(|p| p.to_string()),
        "info": http.map(|a| format!("http://{a}/live/{}/info.json", name.as_str())),
    })))
}

/// True if the caller may see what `/api/status` shows.
fn operator(node: &Shared, headers: &HeaderMap) -> bool {
    match &node.config.admin_token {
        None => node.config.admin_http.is_none(),
        Some(_) if node.config.public_status && node.config.admin_http.is_none() => true,
        Some(token) => require_bearer(headers, std::slice::from_ref(token), "admin").is_ok(),
    }
}
