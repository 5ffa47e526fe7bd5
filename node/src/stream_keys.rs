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
}
