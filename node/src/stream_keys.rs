//! Stream keys: who may push a stream into the node, whatever the protocol (HTTP PUT's
//! bearer token, RTMP's `?key=`). A key is accepted for every stream, or, written as
//! `STREAM=KEY`, for that stream only.

use shoal_protocol::stream;

/// True if `presented` is a key accepted for `stream` among `keys`. Comparison is
/// constant-time in the secret. A configured key reads as `STREAM=KEY` when the part
/// before the first `=` is a valid stream name and a non-empty key follows that does not
/// start with `=` (so base64 keys ending in `=` padding stay keys for every stream).
pub fn allows(keys: &[String], stream: &str, presented: &str) -> bool {
    keys.iter().any(|k| match per_stream(k) {
        Some((s, key)) => s == stream && same(key, presented),
        None => same(k, presented),
    })
}

/// The stream and key of a per-stream key.
fn per_stream(k: &str) -> Option<(&str, &str)> {
    let (s, key) = k.split_once('=')?;
    (stream::Name::new(s).is_ok() && !key.is_empty() && !key.starts_with('=')).then_some((s, key))
}

/// Splits a publishing name as encoders send it (`STREAM?key=KEY`: OBS's "Stream
/// Key", the end of ffmpeg's RTMP URL, SRT's plain stream id) into the stream and the
/// key (empty if none).
pub fn split(publish_name: &str) -> (&str, &str) {
    let (stream, query) = publish_name.split_once('?').unwrap_or((publish_name, ""));
    let key = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("key="))
        .unwrap_or("");
    (stream, key)
}

/// Why a push was not let in; each protocol maps it to its own refusal.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeyRefusal {
    /// The stream name is not valid.
    #[error("invalid stream name {0:?}: {1}")]
    BadName(String, String),
    /// No key came with the push.
    #[error("a stream key is needed: use STREAM?key=KEY")]
    NoKey,
    /// The key is not accepted for this stream.
    #[error("the key is not accepted for stream {0}")]
    WrongKey(String),
}

/// Checks a push of `stream` with `key` against `keys`: the stream's name if it may go on.
pub fn check(keys: &[String], stream: &str, key: &str) -> Result<stream::Name, KeyRefusal> {
    let name = stream::Name::new(stream)
        .map_err(|e| KeyRefusal::BadName(stream.to_string(), e.to_string()))?;
    if key.is_empty() {
        return Err(KeyRefusal::NoKey);
    }
    if !allows(keys, stream, key) {
        return Err(KeyRefusal::WrongKey(stream.to_string()));
    }
    Ok(name)
}

/// Compares digests (blake3's `Hash` equality is constant-time): neither the position of
/// the first difference nor the secret's length shows in the timing.
fn same(a: &str, b: &str) -> bool {
    blake3::hash(a.as_bytes()) == blake3::hash(b.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_and_per_stream_keys() {
        let keys = vec![
            "all".to_string(),
            "cam1=one".to_string(),
            "b64pad==".to_string(),
        ];
        assert!(allows(&keys, "anything", "all"));
        assert!(allows(&keys, "cam1", "one"));
        assert!(
            !allows(&keys, "cam2", "one"),
            "a per-stream key is for its stream only"
        );
        assert!(!allows(&keys, "cam1", "cam1=one"));
        assert!(
            allows(&keys, "x", "b64pad=="),
            "padding is not a stream separator"
        );
        assert!(!allows(&keys, "x", ""));
        assert!(!allows(&[], "x", "all"), "no keys: no ingest");
    }

    #[test]
    fn publishing_names_and_their_check() {
        assert_eq!(split("cam?key=k1"), ("cam", "k1"));
        assert_eq!(split("cam?foo=1&key=k2"), ("cam", "k2"));
        assert_eq!(split("cam"), ("cam", ""));
        let keys = vec!["k".to_string()];
        assert_eq!(check(&keys, "cam", "k").unwrap().as_str(), "cam");
        assert_eq!(check(&keys, "cam", ""), Err(KeyRefusal::NoKey));
        assert_eq!(
            check(&keys, "cam", "x"),
            Err(KeyRefusal::WrongKey("cam".into()))
        );
        assert!(matches!(
            check(&keys, "../x", "k"),
            Err(KeyRefusal::BadName(..))
        ));
    }
}
