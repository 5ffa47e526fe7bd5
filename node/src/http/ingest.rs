//! Ingest: `PUT /ingest/{stream}/{file}` with `Authorization: Bearer KEY`, exactly as
//! `ffmpeg -f hls -method PUT` sends it (chunked bodies, `Connection: close`, long-open
//! init uploads, `DELETE` of old segments, persistent connections).

use super::{HttpError, read_body};
use crate::hls::{self, parse_media_playlist};
use crate::ingest::{Refused, container_of};
use crate::metrics::add;
use crate::node::{Shared, unix_millis};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use shoal_protocol::stream;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Largest encoder playlist accepted.
pub const MAX_PLAYLIST: u64 = 256 * 1024;
/// How long one upload may take. ffmpeg keeps an fMP4 init PUT open until the first
/// media segment is complete, so this must exceed the longest segment duration.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);

impl From<Refused> for HttpError {
    fn from(e: Refused) -> Self {
        match e {
            Refused::TooManyStreams => {
                HttpError::Unavailable("too many ingest streams on this node")
            }
            budget => HttpError::InsufficientStorage(budget.to_string()),
        }
    }
}

/// Checks the bearer key against the keys accepted for `stream`.
fn authorize(node: &Shared, headers: &HeaderMap, stream: &str) -> Result<(), HttpError> {
    super::auth::require_stream_key(
        headers,
        &node.config.ingest_keys,
        stream,
        "ingest needs Authorization: Bearer KEY with an accepted stream key",
    )
}

/// Checks the stream and file names of an ingest path.
pub fn validate(stream: &str, file: &str) -> Result<stream::Name, HttpError> {
    let name = stream::Name::new(stream)
        .map_err(|e| HttpError::BadRequest(format!("invalid stream name: {e}")))?;
    if !hls::valid_file_name(file) {
        return Err(HttpError::BadRequest(
            "invalid file name: use [A-Za-z0-9._-], at most 128 characters".into(),
        ));
    }
    Ok(name)
}

/// `PUT` (or `POST`) of a playlist, segment or init segment.
pub async fn put(
    State(node): State<Arc<Shared>>,
    Path((stream, file)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, HttpError> {
    let result = put_inner(&node, &stream, &file, &headers, body).await;
    if let Err(e) = &result {
        add(&node.metrics.ingest_rejected, 1);
        warn!(%stream, %file, error = %e, "ingest refused");
    }
    result
}

async fn put_inner(
    node: &Arc<Shared>,
    stream: &str,
    file: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<StatusCode, HttpError> {
    authorize(node, headers, stream)?;
    let name = validate(stream, file)?;
    let is_playlist = file.ends_with(".m3u8");
    if !is_playlist && container_of(file).is_none() && !file.ends_with(".mp4") {
        return Err(HttpError::Unsupported(
            "ingest takes .m3u8 playlists, .ts and .m4s segments and .mp4 init segments",
        ));
    }
    let limit = if is_playlist {
        MAX_PLAYLIST
    } else {
        node.config.core.max_segment_size
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(HttpError::TooLarge(limit));
    }
    let bytes = read_body(body, limit, UPLOAD_TIMEOUT).await?;
    let now = Instant::now();
    let mut ingest = node.ingest.lock().expect("poisoned");
    if !is_playlist {
        let size = bytes.len();
        if let Some(dropped) = ingest.put(&name, file.to_string(), bytes, now)? {
            warn!(stream = %name, %dropped, "segment never listed in a playlist; dropped");
        }
        drop(ingest);
        node.core()
            .handle_ingest_activity(&name, unix_millis(), now);
        debug!(stream = %name, %file, size, "upload received");
        return Ok(StatusCode::CREATED);
    }
    let assembler = ingest.stream(&name, now)?;
    node.core()
        .handle_ingest_activity(&name, unix_millis(), now);
    let playlist = parse_media_playlist(&bytes)
        .map_err(|e| HttpError::BadRequest(format!("playlist: {e}")))?;
    let assembled = assembler.on_playlist(&playlist, node.next_seq(&name));
    crate::announce::deliver(node, &name, assembled.ready, assembled.ended)
        .map_err(|e| HttpError::BadRequest(e.to_string()))?;
    drop(ingest);
    Ok(StatusCode::CREATED)
}

/// `DELETE` of an old segment (`-hls_flags delete_segments`). The mesh keeps its own
/// window, so this only frees a segment that was never announced.
pub async fn delete(
    State(node): State<Arc<Shared>>,
    Path((stream, file)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, HttpError> {
    authorize(&node, &headers, &stream)?;
    let name = validate(&stream, &file)?;
    // ffmpeg sends an (empty, chunked) body: read it so the connection stays usable.
    read_body(body, 1024, UPLOAD_TIMEOUT).await?;
    if let Some(a) = node.ingest.lock().expect("poisoned").get_mut(&name) {
        a.delete(&file);
    }
    Ok(StatusCode::NO_CONTENT)
}
