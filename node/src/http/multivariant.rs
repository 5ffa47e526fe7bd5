//! `GET /live/{stream}/master.m3u8`: a multivariant playlist naming the stream's one
//! variant with its bandwidth, codecs and resolution, for players that want one (Apple's
//! rules ask for `CODECS` and `RESOLUTION`; AVPlayer picks decoders by them). It points
//! at `index.m3u8`, where a player becomes a viewer. The codecs come from the encoder on
//! the node it pushes into, or, on any other node, from a segment the node holds.

use super::HttpError;
use super::query::Query;
use crate::media::probe::{Probed, probe_ts};
use crate::node::Shared;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use shoal_protocol::segment::{self, Container};
use shoal_protocol::stream;
use std::net::SocketAddr;
use std::sync::Arc;

/// `GET /live/{stream}/master.m3u8`.
pub async fn get(
    State(node): State<Arc<Shared>>,
    Path(stream): Path<String>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let name = stream::Name::new(stream)
        .map_err(|e| HttpError::BadRequest(format!("invalid stream name: {e}")))?;
    let mut query = Query::parse(raw.as_deref())?;
    super::live::check_token(&node, &name, &mut query, &headers, client.ip())?;
    respond(&node, &name, &query)
}

/// Answers a multivariant playlist request for `name`.
fn respond(node: &Shared, name: &stream::Name, query: &Query) -> Result<Response, HttpError> {
    let (bandwidth, held) = {
        let core = node.core();
        let state = core
            .stream(name)
            .ok_or(HttpError::NotFound("unknown stream"))?;
        let held = state
            .held_range()
            .map(|(_, last)| segment::Id {
                stream: name.clone(),
                seq: last,
            })
            .filter(|id| {
                core.announcement(id)
                    .is_some_and(|a| a.value.container == Container::Ts)
            });
        (state.bitrate_bps(), held)
    };
    let probed = match node.encoders.get(name) {
        Some(e) if !e.codecs.is_empty() => Some(Probed {
            codecs: e.codecs,
            resolution: (e.width > 0).then_some((e.width, e.height)),
        }),
        _ => held
            .and_then(|id| node.store.lock().expect("poisoned").segment(&id))
            .and_then(|bytes| probe_ts(&bytes)),
    };
    let text = crate::hls::render_multivariant(
        bandwidth.unwrap_or(0),
        probed.as_ref().map(|p| p.codecs.as_slice()).unwrap_or(&[]),
        probed.as_ref().and_then(|p| p.resolution),
        &variant_uri(query),
    );
    let mut response = text.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.apple.mpegurl"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// `index.m3u8`, with the viewer's token if it came with one.
fn variant_uri(query: &Query) -> String {
    match &query.token {
        Some(t) => format!("index.m3u8?token={t}"),
        None => "index.m3u8".to_string(),
    }
}
