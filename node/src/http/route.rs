//! `GET /route/{stream}`: the best node for a new viewer, for a DNS or HTTP front end.
//! JSON by default; `?redirect=1` answers with the `302` itself.

use super::HttpError;
use super::live::{full, redirect, viewer_url};
use super::query::Query;
use crate::metrics::add;
use crate::node::Shared;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shoal_core::balance::RETRY_AFTER;
use shoal_protocol::stream;
use std::sync::Arc;
use std::time::Instant;

/// `GET /route/{stream}[?redirect=1]`.
pub async fn get(
    State(node): State<Arc<Shared>>,
    Path(stream): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, HttpError> {
    let name = stream::Name::new(stream)
        .map_err(|e| HttpError::BadRequest(format!("invalid stream name: {e}")))?;
    let mut query = Query::parse(raw.as_deref())?;
    let as_redirect = query.rest.iter().any(|(k, v)| k == "redirect" && v == "1");
    query.rest.retain(|(k, _)| k != "redirect");
    let chosen = {
        let mut core = node.core();
        let now = Instant::now();
        if core.stream(&name).is_none() && core.stream_holders(&name, now).is_empty() {
            return Err(HttpError::NotFound("unknown stream"));
        }
        core.route(&name, now)
    };
    let Some(target) = chosen else {
        add(&node.metrics.viewers_refused, 1);
        return Ok(full(RETRY_AFTER));
    };
    let addr = target
        .http
        .unwrap_or_else(|| node.advertised(node.http_addr));
    let url = viewer_url(addr, &name, &query);
    if as_redirect {
        return Ok(redirect(&url));
    }
    Ok(Json(json!({
        "stream": name.as_str(),
        "url": url,
        "node": target.peer.to_string(),
        "http_addr": addr.to_string(),
        "local": target.http.is_none(),
    }))
    .into_response())
}
