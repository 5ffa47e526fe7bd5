//! Bearer-token checks shared by ingest (stream keys) and the admin API (admin token).

use super::HttpError;
use axum::http::{HeaderMap, header};

/// Accepts the request if it carries `Authorization: Bearer T` with `T` among `allowed`
/// (compared in constant time). `what` names the credential in error messages.
pub fn require_bearer(
    headers: &HeaderMap,
    allowed: &[String],
    what: &'static str,
) -> Result<(), HttpError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(HttpError::Unauthorized(what));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = token.is_some_and(|t| {
        allowed
            .iter()
            .any(|a| constant_time_eq(a.as_bytes(), t.as_bytes()))
    });
    if ok {
        Ok(())
    } else {
        Err(HttpError::Forbidden(what))
    }
}

/// Accepts an ingest request for `stream` if it carries `Authorization: Bearer KEY` with
/// a key [`crate::stream_keys::allows`] for that stream.
pub fn require_stream_key(
    headers: &HeaderMap,
    keys: &[String],
    stream: &str,
    what: &'static str,
) -> Result<(), HttpError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(HttpError::Unauthorized(what));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if token.is_some_and(|t| crate::stream_keys::allows(keys, stream, t)) {
        Ok(())
    } else {
        Err(HttpError::Forbidden(what))
    }
}

/// Compares the digests (blake3's `Hash` equality is constant-time): neither the
/// position of the first difference nor the secret's length shows in the timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    blake3::hash(a) == blake3::hash(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_tokens() {
        let allowed = vec!["secret".to_string()];
        let mut h = HeaderMap::new();
        assert!(matches!(
            require_bearer(&h, &allowed, "x"),
            Err(HttpError::Unauthorized(_))
        ));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer nope"),
        );
        assert!(matches!(
            require_bearer(&h, &allowed, "x"),
            Err(HttpError::Forbidden(_))
        ));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret"),
        );
        assert!(require_bearer(&h, &allowed, "x").is_ok());
        assert!(require_bearer(&h, &[], "x").is_err());
    }
}
