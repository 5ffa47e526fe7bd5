//! The query string of viewer URLs: the redirect marker, an optional session id, and
//! whatever else the viewer brought (kept on redirects, e.g. tokens).

use super::HttpError;

/// The query parameter that marks a redirected viewer: it is served unless the node is
/// truly full, so redirects never chain.
pub const REDIRECT_MARKER: &str = "redirected";
/// The optional session parameter: viewers sharing an IP count apart.
pub const SESSION: &str = "sid";
/// The optional viewer token parameter (see `crate::tokens`).
pub const TOKEN: &str = "token";
/// Longest query string accepted.
pub const MAX_QUERY: usize = 2048;
/// Most parameters accepted.
pub const MAX_PARAMS: usize = 16;

/// A parsed viewer query.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// The redirect marker was present.
    pub redirected: bool,
    /// The session id, if any.
    pub sid: Option<String>,
    /// The viewer token, if any (unchecked).
    pub token: Option<String>,
    /// Every other parameter, raw, in order (including `sid`).
    pub rest: Vec<(String, String)>,
}

impl Query {
    /// Sets the session id (replacing any).
    pub fn set_sid(&mut self, sid: String) {
        self.rest.retain(|(k, _)| k != SESSION);
        self.rest.insert(0, (SESSION.to_string(), sid.clone()));
        self.sid = Some(sid);
    }

    /// Sets the viewer token (replacing any), so it travels with redirects.
    pub fn set_token(&mut self, token: String) {
        self.rest.retain(|(k, _)| k != TOKEN);
        self.rest.push((TOKEN.to_string(), token.clone()));
        self.token = Some(token);
    }

    /// The parameters a playlist puts on its segment URLs: the session and the token,
    /// as a query string without `?` (empty if neither).
    pub fn media_params(&self) -> String {
        let mut out = String::new();
        for (k, v) in [(SESSION, &self.sid), (TOKEN, &self.token)] {
            if let Some(v) = v {
                if !out.is_empty() {
                    out.push('&');
                }
                out.push_str(k);
                out.push('=');
                out.push_str(v);
            }
        }
        out
    }

    /// The parameters carried on to the next URL (everything but the redirect marker),
    /// as a query string without `?`.
    pub fn carried(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.rest {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(k);
            if !v.is_empty() {
                out.push('=');
                out.push_str(v);
            }
        }
        out
    }

    /// Parses a raw query string (without `?`).
    pub fn parse(raw: Option<&str>) -> Result<Query, HttpError> {
        let mut q = Query::default();
        let Some(raw) = raw.filter(|r| !r.is_empty()) else {
            return Ok(q);
        };
        if raw.len() > MAX_QUERY {
            return Err(HttpError::BadRequest(format!(
                "query string over {MAX_QUERY} bytes"
            )));
        }
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            if q.rest.len() >= MAX_PARAMS {
                return Err(HttpError::BadRequest(format!(
                    "more than {MAX_PARAMS} query parameters"
                )));
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == REDIRECT_MARKER {
                q.redirected = true;
                continue;
            }
            if k == SESSION {
                // A malformed id is dropped (the node mints a new one), never echoed.
                if !super::session::valid(v) {
                    continue;
                }
                q.sid = Some(v.to_string());
            }
            if k == TOKEN {
                q.token = Some(v.to_string());
            }
            q.rest.push((k.to_string(), v.to_string()));
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_marker_session_and_rest() {
        let q = Query::parse(Some("redirected=1&sid=abcdefgh&token=x")).unwrap();
        assert!(q.redirected);
        assert_eq!(q.sid.as_deref(), Some("abcdefgh"));
        assert_eq!(q.rest.len(), 2);
        assert_eq!(q.carried(), "sid=abcdefgh&token=x");
        // A malformed session id is dropped.
        let q = Query::parse(Some("sid=a%0d%0a&x=1")).unwrap();
        assert_eq!(q.sid, None);
        assert_eq!(q.carried(), "x=1");
        let mut q = Query::parse(Some("sid=abcdefgh")).unwrap();
        q.set_sid("zzzzzzzzzz".into());
        assert_eq!(q.carried(), "sid=zzzzzzzzzz");
        assert_eq!(Query::parse(None).unwrap(), Query::default());
        assert!(Query::parse(Some(&"a".repeat(MAX_QUERY + 1))).is_err());
        assert!(Query::parse(Some(&"a=1&".repeat(MAX_PARAMS + 1))).is_err());
    }
}
