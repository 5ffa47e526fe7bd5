//! Viewing: `GET /live/{stream}/index.m3u8` and the segments it lists, on any node.

use super::conns::Conn;
use super::query::{Query, REDIRECT_MARKER};
use super::{HttpError, range, session, viewer_token};
use crate::fetch::FetchError;
use crate::hls;
use crate::metrics::add;
use crate::node::Shared;
use axum::body::HttpBody;
use axum::extract::{ConnectInfo, Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shoal_core::balance::{Admission, Target};
use shoal_core::viewers::Sid;
use shoal_protocol::content::ContentId;
use shoal_protocol::segment::{self, Container};
use shoal_protocol::stream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;

/// How long a playlist request may wait for a manifest from a peer when this node has
/// not seen the stream yet.
const SYNC_WAIT: Duration = Duration::from_secs(4);
/// HLS playlist content type (RFC 8216).
const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

/// What a file name under `/live/{stream}/` asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Wanted {
    /// `index.m3u8`.
    Playlist,
    /// `{seq}.ts` or `{seq}.m4s`, the sequence number in canonical decimal.
    Segment(segment::Seq),
    /// `init-{hash}.mp4`.
    Init(ContentId),
}

/// A request resolved against the core: what to send.
enum Resolved {
    Playlist,
    Redirect(SocketAddr),
    Full(Duration),
    Segment(segment::Id, Container),
    Init(ContentId),
}

/// Parses a file name a viewer asks for; `None` for anything else.
pub fn wanted(file: &str) -> Option<Wanted> {
    if file == "index.m3u8" {
        return Some(Wanted::Playlist);
    }

    if let Some(hex) = file
        .strip_prefix("init-")
        .and_then(|f| f.strip_suffix(".mp4"))
    {
        return ContentId::from_hex(hex).map(Wanted::Init);
    }
    let (seq, ext) = file.rsplit_once('.')?;
    // Canonical decimal only: `+5.ts` or `05.ts` are not segment 5's name.
    let canonical = !seq.is_empty()
        && seq.len() <= 20
        && seq.bytes().all(|b| b.is_ascii_digit())
        && (seq == "0" || !seq.starts_with('0'));
    if !matches!(ext, "ts" | "m4s") || !canonical {
        return None;
    }
    seq.parse().ok().map(Wanted::Segment)
}

/// The session a request carries: the one its URL names, else the one its connection
/// last carried (players reload playlists without the id, on a connection they used
/// before). The connection remembers the one its URL names.
fn carried_session(conn: Option<&Conn>, query: &Query) -> Option<Sid> {
    let from_url = query.sid.as_deref().and_then(Sid::new);
    let conn = conn?;
    let mut remembered = conn.session.lock().expect("poisoned");
    if from_url.is_some() {
        *remembered = from_url;
        return from_url;
    }
    *remembered
}

/// Checks the viewer token a request carries, if the node wants one, and puts it in
/// `query` so it goes on into segment URLs and redirects.
pub fn check_token(
    node: &Shared,
    name: &stream::Name,
    query: &mut Query,
    headers: &HeaderMap,
    ip: std::net::IpAddr,
) -> Result<(), HttpError> {
    if let Some(verifier) = &node.viewer_tokens {
        let token = viewer_token::carried(query.token.as_deref(), headers);
        if let Err(refusal) = verifier.check(token.as_deref(), name.as_str(), ip) {
            add(&node.metrics.viewer_tokens_refused, 1);
            debug!(%name, %ip, %refusal, "viewer token refused");
            return Err(viewer_token::refused(&refusal));
        }
        // Carried into the playlist's segment URLs and across redirects: players drop
        // cookies and headers on segment requests, and other nodes have other cookies.
        if let Some(token) = token {
            query.set_token(token);
        }
    }
    Ok(())
}

/// `GET /live/{stream}/{file}`.
pub async fn get(
    State(node): State<Arc<Shared>>,
    Path((stream, file)): Path<(String, String)>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    conn: Option<Extension<Arc<Conn>>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let name = stream::Name::new(stream)
        .map_err(|e| HttpError::BadRequest(format!("invalid stream name: {e}")))?;
    let what = wanted(&file).ok_or(HttpError::NotFound("no such file"))?;
    let mut query = Query::parse(raw.as_deref())?;
    check_token(&node, &name, &mut query, &headers, client.ip())?;
    let conn = conn.as_ref().map(|c| &*c.0);
    let carried = carried_session(conn, &query);
    // Requests of players that open a connection for each are told apart from requests
    // of players that keep one (see `core::viewers`).
    let opened_connection = conn.is_none_or(|c| c.requests() <= 1);
    let ip = client.ip();
    add(&node.metrics.viewer_requests, 1);
    // One core lock per request: admit or count the viewer, resolve a segment's
    // container.
    let resolved = {
        let mut core = node.core();
        let now = Instant::now();
        match what {
            Wanted::Playlist => {
                let known =
                    core.stream(&name).is_some() || !core.stream_holders(&name, now).is_empty();
                if !known {
                    // Nothing to count or balance: a stream nobody has is not tracked.
                    return Err(HttpError::NotFound("unknown stream"));
                }
                // A player without a session continues an anonymous one of its address
                // or is given a new one, carried in the URLs of the playlist.
                let sid = carried.unwrap_or_else(|| {
                    core.sessions()
                        .adopt(&name, session::addr_key(ip), now)
                        .unwrap_or_else(|| node.session_ids.mint())
                });
                if let Some(conn) = conn {
                    *conn.session.lock().expect("poisoned") = Some(sid);
                }
                query.set_sid(sid.as_str().to_string());
                let viewer = session::viewer(ip, Some(sid), opened_connection);
                match core.admit_viewer(&name, viewer, query.redirected, now) {
                    Admission::Serve => Resolved::Playlist,
                    Admission::Redirect(Target { http: Some(to), .. }) => Resolved::Redirect(to),
                    Admission::Redirect(Target { http: None, .. }) => Resolved::Playlist,
                    Admission::Full { retry_after } => Resolved::Full(retry_after),
                }
            }
            Wanted::Init(hash) => {
                core.handle_media(&name, session::viewer(ip, carried, opened_connection), now);
                Resolved::Init(hash)
            }
            Wanted::Segment(seq) => {
                // Segment requests are never bounced: a viewer that got the playlist
                // here keeps this node.
                core.handle_media(&name, session::viewer(ip, carried, opened_connection), now);
                let id = segment::Id {
                    stream: name.clone(),
                    seq,
                };
                let container = core
                    .announcement(&id)
                    .map(|a| a.value.container)
                    .ok_or(HttpError::NotFound("segment not in this stream's window"))?;
                Resolved::Segment(id, container)
            }
        }
    };
    let response = match resolved {
        Resolved::Playlist => playlist(&node, &name, &query.media_params()).await?,
        Resolved::Redirect(to) => {
            add(&node.metrics.viewers_redirected, 1);
            debug!(%name, %to, "viewer redirected");
            return Ok(redirect(&viewer_url(to, &name, &query)));
        }
        Resolved::Full(retry_after) => {
            add(&node.metrics.viewers_refused, 1);
            return Ok(full(retry_after));
        }
        Resolved::Segment(id, container) => {
            if !file.ends_with(container.extension()) {
                return Err(HttpError::NotFound("no such segment"));
            }
            let bytes = node.segment(&id).await.map_err(unavailable)?;
            range::respond(
                &headers,
                bytes,
                container.content_type(),
                "public, max-age=3600",
            )
        }
        Resolved::Init(hash) => {
            let bytes = node.init(&name, hash).await.map_err(unavailable)?;
            range::respond(&headers, bytes, "video/mp4", "public, max-age=3600")
        }
    };
    if let Some(n) = response.body().size_hint().exact() {
        add(&node.metrics.http_bytes_out, n);
    }
    Ok(response)
}

/// The playlist URL of `stream` at `to`, carrying the redirect marker and the viewer's
/// other query parameters (e.g. a session or a token).
pub(super) fn viewer_url(to: SocketAddr, stream: &stream::Name, query: &Query) -> String {
    let mut url = format!("http://{to}/live/{stream}/index.m3u8?{REDIRECT_MARKER}=1");
    let rest = query.carried();
    if !rest.is_empty() {
        url.push('&');
        url.push_str(&rest);
    }
    url
}

/// A `302` to `location`, never cached.
pub(super) fn redirect(location: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A `503` with `Retry-After`: no node has room for one more viewer.
pub(super) fn full(retry_after: Duration) -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        "no node in the mesh has room for another viewer; retry later\n",
    )
        .into_response();
    let secs = retry_after.as_secs().max(1).to_string();
    if let Ok(v) = HeaderValue::from_str(&secs) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

fn unavailable(e: FetchError) -> HttpError {
    match e {
        FetchError::NotAnnounced => HttpError::NotFound("not in this stream's window"),
        other => {
            debug!(error = %other, "segment unavailable");
            HttpError::BadGateway(format!("segment unavailable from the mesh: {other}"))
        }
    }
}

fn render(node: &Shared, name: &stream::Name, params: &str) -> Option<String> {
    let mut core = node.core();
    // A viewer asks for a stream this node does not take announcements of (a large
    // mesh): carry it from now on; a window it still holds is stale, so the playlist
    // comes after a sync from a holder (the caller's path for unknown streams).
    if !core.is_subscribed(name) {
        core.handle_wanted(name, Instant::now());
        return None;
    }
    let stream = core.stream(name)?;
    let segments = stream.playlist(core.config().playlist_len);
    if segments.is_empty() {
        return None;
    }
    let ended = stream.ended() && segments.last().map(|a| a.id.seq) == stream.newest();
    Some(hls::render_live(&segments, ended, params))
}

async fn playlist(
    node: &Arc<Shared>,
    name: &stream::Name,
    params: &str,
) -> Result<Response, HttpError> {
    let text = match render(node, name, params) {
        Some(text) => text,
        None => {
            let holders = node.core().stream_holders(name, Instant::now());
            if holders.is_empty() {
                return Err(HttpError::NotFound("unknown stream"));
            }
            node.core().handle_wanted(name, Instant::now());
            let _ = tokio::time::timeout(SYNC_WAIT, node.sync(name, None)).await;
            render(node, name, params).ok_or(HttpError::NotFound("unknown stream"))?
        }
    };
    let mut response = text.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PLAYLIST_TYPE),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(wanted("index.m3u8"), Some(Wanted::Playlist));
        assert_eq!(wanted("12.ts"), Some(Wanted::Segment(12)));
        assert_eq!(wanted("12.m4s"), Some(Wanted::Segment(12)));
        let h = ContentId::of(b"x");
        assert_eq!(
            wanted(&format!("init-{}.mp4", h.to_hex())),
            Some(Wanted::Init(h))
        );
        assert_eq!(wanted("init-zz.mp4"), None);
        assert_eq!(wanted("x.ts"), None);
        assert_eq!(wanted(".ts"), None);
        assert_eq!(wanted("99999999999999999999999.ts"), None);
        assert_eq!(wanted("1.mp3"), None);
        assert_eq!(wanted("+5.ts"), None);
        assert_eq!(wanted("05.ts"), None);
        assert_eq!(wanted("0.ts"), Some(Wanted::Segment(0)));
        assert_eq!(wanted("-1.ts"), None);
    }
}
