//! Serving bytes with HTTP range support (`Range: bytes=...`, one range).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;

/// A parsed single byte range, inclusive.
#[derive(Debug, PartialEq, Eq)]
pub enum Range {
    /// No usable Range header: send everything.
    Full,
    /// Send `start..=end`.
    Part(u64, u64),
    /// The range lies outside the content.
    Unsatisfiable,
}

/// Parses a `Range` header against content of `len` bytes. Malformed or multi-range
/// headers are ignored (RFC 9110 allows serving the whole representation).
pub fn parse(value: Option<&str>, len: u64) -> Range {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Range::Full;
    };
    if spec.contains(',') {
        return Range::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Range::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        (false, true) => a.parse::<u64>().ok().map(|s| (s, len.saturating_sub(1))),
        (false, false) => match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => Some((s, e.min(len.saturating_sub(1)))),
            _ => None,
        },
        (true, false) => match b.parse::<u64>() {
            // A suffix of zero bytes selects nothing (RFC 9110 section 14.1.3).
            Ok(0) => return Range::Unsatisfiable,
            Ok(n) => Some((len.saturating_sub(n), len.saturating_sub(1))),
            Err(_) => None,
        },
        (true, true) => None,
    };
    match range {
        None => Range::Full,
        Some((s, _)) if s >= len => Range::Unsatisfiable,
        Some((s, e)) => Range::Part(s, e),
    }
}

/// A response carrying `bytes` (or the requested range of them).
pub fn respond(
    headers: &HeaderMap,
    bytes: Bytes,
    content_type: &'static str,
    cache_control: &'static str,
) -> Response {
    let len = bytes.len() as u64;
    let range = parse(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        len,
    );
    let (status, body, content_range) = match range {
        Range::Full => (StatusCode::OK, bytes, None),
        Range::Part(s, e) => (
            StatusCode::PARTIAL_CONTENT,
            bytes.slice(s as usize..=e as usize),
            Some(format!("bytes {s}-{e}/{len}")),
        ),
        Range::Unsatisfiable => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            Bytes::new(),
            Some(format!("bytes */{len}")),
        ),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(cr) = content_range {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&cr).expect("ascii"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse(None, 10), Range::Full);
        assert_eq!(parse(Some("bytes=0-"), 10), Range::Part(0, 9));
        assert_eq!(parse(Some("bytes=2-4"), 10), Range::Part(2, 4));
        assert_eq!(parse(Some("bytes=2-40"), 10), Range::Part(2, 9));
        assert_eq!(parse(Some("bytes=-3"), 10), Range::Part(7, 9));
        assert_eq!(parse(Some("bytes=-30"), 10), Range::Part(0, 9));
        assert_eq!(parse(Some("bytes=10-"), 10), Range::Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-1,3-4"), 10), Range::Full);
        assert_eq!(parse(Some("bytes=5-2"), 10), Range::Full);
        assert_eq!(parse(Some("items=0-1"), 10), Range::Full);
        assert_eq!(parse(Some("bytes=x-"), 10), Range::Full);
        assert_eq!(parse(Some("bytes=0-"), 0), Range::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 10), Range::Unsatisfiable);
    }
}
