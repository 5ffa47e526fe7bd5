//! Viewer tokens at the edge: where a request's token is found, and what a refusal
//! answers (see [`crate::tokens`]).

use super::HttpError;
use crate::tokens::Refusal;
use axum::http::{HeaderMap, header};

/// The cookie a browser page may carry a viewer token in.
pub const COOKIE: &str = "shoal_token";

/// The token a request carries: in its query (`?token=`, parsed by the caller), else
/// `Authorization: Bearer`, else the [`COOKIE`] cookie.
pub fn carried(query_token: Option<&str>, headers: &HeaderMap) -> Option<String> {
    if let Some(t) = query_token {
        return Some(t.to_string());
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(t) = bearer {
        return Some(t.to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The HTTP answer to a refused token: 401 when there is none, 403 otherwise.
pub fn refused(refusal: &Refusal) -> HttpError {
    match refusal {
        Refusal::Missing => HttpError::Unauthorized("a viewer token is required"),
        Refusal::Expired => HttpError::Forbidden("the viewer token has expired"),
        Refusal::WrongStream => HttpError::Forbidden("the viewer token is for another stream"),
        Refusal::WrongAddress => {
            HttpError::Forbidden("the viewer token is for another client address")
        }
        Refusal::Invalid(_) => HttpError::Forbidden("invalid viewer token"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn query_then_bearer_then_cookie() {
        let mut h = HeaderMap::new();
        assert_eq!(carried(None, &h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; shoal_token=c.c.c"),
        );
        assert_eq!(carried(None, &h).as_deref(), Some("c.c.c"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer b.b.b"),
        );
        assert_eq!(carried(None, &h).as_deref(), Some("b.b.b"));
        assert_eq!(carried(Some("q.q.q"), &h).as_deref(), Some("q.q.q"));
    }
}
