//! The SRT `streamid` a caller sends, read as Shoal's stream, mode and key: SRT's
//! access-control syntax (`#!::r=STREAM,m=publish,s=KEY`, keys in any order) or the plain
//! form (`STREAM?key=KEY`, as RTMP's stream key).

/// What a caller asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The stream (`r=`, the resource).
    pub stream: String,
    /// The key (`s=`, the session id; or `?key=`).
    pub key: String,
    /// True for `m=publish` (or no mode given); false for `m=request` and the like.
    pub publish: bool,
}

/// Longest stream id SRT allows (512 characters).
pub const MAX_LEN: usize = 512;

/// Reads a stream id; None if it names no stream.
pub fn parse(id: &str) -> Option<Request> {
    if id.len() > MAX_LEN {
        return None;
    }
    if let Some(list) = id.strip_prefix("#!::") {
        let mut request = Request {
            stream: String::new(),
            key: String::new(),
            publish: true,
        };
        for entry in list.split(',') {
            let (k, v) = entry.split_once('=')?;
            match k.trim() {
                "r" => request.stream = v.trim().to_string(),
                "s" => request.key = v.trim().to_string(),
                "m" => request.publish = v.trim() == "publish",
                _ => {} // u=, h=, t= and custom keys: not Shoal's concern
            }
        }
        return (!request.stream.is_empty()).then_some(request);
    }
    let (stream, key) = crate::stream_keys::split(id);
    (!stream.is_empty()).then(|| Request {
        stream: stream.to_string(),
        key: key.to_string(),
        publish: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_syntaxes() {
        assert_eq!(
            parse("#!::r=cam,m=publish,s=k1"),
            Some(Request {
                stream: "cam".into(),
                key: "k1".into(),
                publish: true
            })
        );
        assert_eq!(
            parse("#!::s=k1,r=cam").map(|r| r.stream),
            Some("cam".into())
        );
        assert!(!parse("#!::r=cam,m=request").unwrap().publish);
        assert_eq!(parse("cam?key=k1").map(|r| r.key), Some("k1".into()));
        assert_eq!(parse("cam").map(|r| r.key), Some(String::new()));
        assert_eq!(parse("#!::m=publish"), None);
        assert_eq!(parse("#!::garbage"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse(&"a".repeat(600)), None);
    }
}
