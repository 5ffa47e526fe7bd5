//! HLS playlists: reading what an encoder PUTs, writing what viewers GET.

use shoal_protocol::segment::{Announcement, Container};
use std::fmt::Write;

/// Longest file name accepted in an encoder's playlist or an ingest URL.
pub const MAX_FILE_NAME: usize = 128;

/// Longest segment duration accepted from an encoder, in seconds. Players wait a target
/// duration between reloads; HLS encoders use 1-10 s segments.
pub const MAX_SEGMENT_SECS: f64 = 60.0;

/// One media segment listed in a media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaEntry {
    /// File name (last path component of the URI).
    pub file: String,
    /// The URI as listed (with any query string, e.g. a viewer session).
    pub uri: String,
    /// `#EXTINF` duration in milliseconds.
    pub duration_ms: u32,
    /// `#EXT-X-DISCONTINUITY` came before it.
    pub discontinuity: bool,
    /// File name of the `#EXT-X-MAP` init segment in force.
    pub init: Option<String>,
}

/// A media playlist (an encoder's, or a node's as a player reads it), as far as Shoal
/// needs it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MediaPlaylist {
    /// `#EXT-X-MEDIA-SEQUENCE`: the sequence number of the first entry (0 if absent).
    pub media_sequence: u64,
    /// Segments in order.
    pub entries: Vec<MediaEntry>,
    /// `#EXT-X-ENDLIST` was present.
    pub ended: bool,
}

/// Why an encoder playlist was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlaylistError {
    /// Not UTF-8 or no `#EXTM3U` header.
    #[error("not an HLS playlist (missing #EXTM3U)")]
    NotHls,
    /// A master playlist, or a URI naming something other than a plain file.
    #[error("unsupported playlist line: {0}")]
    Unsupported(String),
    /// A bad `#EXTINF` duration.
    #[error("bad #EXTINF duration: {0}")]
    BadDuration(String),
}

/// Checks a file name from an ingest URL or a playlist: `[A-Za-z0-9._-]`, no leading dot.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FILE_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn file_of(uri: &str) -> Result<String, PlaylistError> {
    let path = uri.split(['?', '#']).next().unwrap_or("");
    let file = path.rsplit('/').next().unwrap_or("");
    if valid_file_name(file) {
        Ok(file.to_string())
    } else {
        Err(PlaylistError::Unsupported(uri.chars().take(80).collect()))
    }
}

impl MediaPlaylist {
    /// Sequence numbers of the first and last entries (None when empty).
    pub fn seq_range(&self) -> Option<(u64, u64)> {
        let count = self.entries.len() as u64;
        (count > 0).then(|| {
            (
                self.media_sequence,
                self.media_sequence.saturating_add(count - 1),
            )
        })
    }
}

/// Parses a media playlist.
pub fn parse_media_playlist(bytes: &[u8]) -> Result<MediaPlaylist, PlaylistError> {
    let text = std::str::from_utf8(bytes).map_err(|_| PlaylistError::NotHls)?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("#EXTM3U") {
        return Err(PlaylistError::NotHls);
    }
    let mut out = MediaPlaylist::default();
    let mut pending: Option<u32> = None;
    let mut discontinuity = false;
    let mut init: Option<String> = None;
    for line in lines {
        if let Some(rest) = line.strip_prefix("#EXTINF:") {
            let secs = rest.split(',').next().unwrap_or("");
            let d: f64 = secs
                .parse()
                .map_err(|_| PlaylistError::BadDuration(secs.into()))?;
            if !(d > 0.0 && d <= MAX_SEGMENT_SECS) {
                return Err(PlaylistError::BadDuration(secs.into()));
            }
            pending = Some((d * 1000.0).round() as u32);
        } else if let Some(seq) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            out.media_sequence = seq
                .trim()
                .parse()
                .ok()
                .filter(|s| *s <= shoal_protocol::segment::MAX_SEQ)
                .ok_or_else(|| PlaylistError::Unsupported(line.chars().take(80).collect()))?;
        } else if line == "#EXT-X-DISCONTINUITY" {
            discontinuity = true;
        } else if line == "#EXT-X-ENDLIST" {
            out.ended = true;
        } else if let Some(attrs) = line.strip_prefix("#EXT-X-MAP:") {
            let uri = attribute(attrs, "URI")
                .ok_or_else(|| PlaylistError::Unsupported(line.chars().take(80).collect()))?;
            init = Some(file_of(uri)?);
        } else if line.starts_with("#EXT-X-STREAM-INF") {
            return Err(PlaylistError::Unsupported("master playlist".into()));
        } else if line.starts_with('#') {
            continue;
        } else if let Some(duration_ms) = pending.take() {
            out.entries.push(MediaEntry {
                file: file_of(line)?,
                uri: line.to_string(),
                duration_ms,
                discontinuity: std::mem::take(&mut discontinuity),
                init: init.clone(),
            });
        }
    }
    Ok(out)
}

/// Reads `NAME="value"` or `NAME=value` from an attribute list.
fn attribute<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = attrs;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], quoted[end + 1..].trim_start_matches(','))
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v, n),
                None => (after, ""),
            }
        };
        if key.trim() == name {
            return Some(value);
        }
        rest = next;
    }
    None
}

/// File name under which a segment is served to viewers.
pub fn segment_file(a: &Announcement) -> String {
    format!("{}.{}", a.id.seq, a.container.extension())
}

/// File name under which an init segment is served to viewers.
pub fn init_file(hash: &shoal_protocol::content::ContentId) -> String {
    format!("init-{}.mp4", hash.to_hex())
}

/// Renders the live media playlist for `segments` (contiguous, oldest first). Every node
/// renders the same media sequence for the same segments, so a viewer can move between
/// nodes. Segment and init URLs carry `params` (the viewer's session and token, e.g.
/// `sid=...&token=...`): relative URLs lose the playlist's own query string.
pub fn render_live(segments: &[&Announcement], ended: bool, params: &str) -> String {
    let suffix = if params.is_empty() {
        String::new()
    } else {
        format!("?{params}")
    };
    let target = segments
        .iter()
        .map(|a| a.duration_ms.div_ceil(1000))
        .max()
        .unwrap_or(2)
        .max(1);
    let fmp4 = segments.iter().any(|a| a.container == Container::Fmp4);
    let mut out = String::with_capacity(128 + segments.len() * 48);
    out.push_str("#EXTM3U\n");
    let _ = writeln!(out, "#EXT-X-VERSION:{}", if fmp4 { 7 } else { 3 });
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    let _ = writeln!(
        out,
        "#EXT-X-MEDIA-SEQUENCE:{}",
        segments.first().map_or(0, |a| a.id.seq)
    );
    let mut init = None;
    for (i, a) in segments.iter().enumerate() {
        if i > 0 && a.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if let Some(map) = a.init
            && a.init != init
        {
            init = a.init;
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}{suffix}\"", init_file(&map.hash));
        }
        let _ = writeln!(
            out,
            "#EXTINF:{}.{:03},\n{}{suffix}",
            a.duration_ms / 1000,
            a.duration_ms % 1000,
            segment_file(a)
        );
    }
    if ended {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// Renders a multivariant playlist with one variant at `uri`: `BANDWIDTH` is the
/// stream's measured bitrate with a tenth added for its peaks, `CODECS` and `RESOLUTION`
/// are given when known. `#EXT-X-INDEPENDENT-SEGMENTS`: every segment starts with a
/// keyframe (the node's segmenter cuts at them; ffmpeg's HLS muxer does too).
pub fn render_multivariant(
    bitrate_bps: u64,
    codecs: &[String],
    resolution: Option<(u32, u32)>,
    uri: &str,
) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let peak = bitrate_bps.saturating_add(bitrate_bps / 10).max(1);
    let _ = write!(
        out,
        "#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={}",
        bitrate_bps.max(1)
    );
    // Codec strings are the node's own ([a-z0-9.]), never an encoder's text.
    let safe = |c: &String| c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
    if !codecs.is_empty() && codecs.iter().all(safe) {
        let _ = write!(out, ",CODECS=\"{}\"", codecs.join(","));
    }
    if let Some((w, h)) = resolution {
        let _ = write!(out, ",RESOLUTION={w}x{h}");
    }
    let _ = writeln!(out, "\n{uri}");
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn multivariant_names_what_is_known() {
        let codecs = vec!["avc1.64001f".to_string(), "mp4a.40.2".to_string()];
        let text = render_multivariant(1_000_000, &codecs, Some((1280, 720)), "index.m3u8");
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:BANDWIDTH=1100000,AVERAGE-BANDWIDTH=1000000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720\nindex.m3u8\n"
        );
        // Unknown codecs are left out rather than guessed; odd text is never written.
        let odd = vec!["avc1\",X".to_string()];
        let text = render_multivariant(0, &odd, None, "index.m3u8");
        assert!(
            !text.contains("CODECS") && text.contains("BANDWIDTH=1,"),
            "{text}"
        );
    }
    use super::*;

    const FFMPEG_TS: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:3\n#EXTINF:2.000000,\nindex3.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:1.960000,\nhttp://h/ingest/s/index4.ts?x=1\n#EXT-X-ENDLIST\n";
    const FFMPEG_FMP4: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.000000,\nindex0.m4s\n";

    #[test]
    fn parses_ffmpeg_ts_playlists() {
        let p = parse_media_playlist(FFMPEG_TS.as_bytes()).unwrap();
        assert!(p.ended);
        assert_eq!(p.entries.len(), 2);
        assert_eq!(p.media_sequence, 3);
        assert_eq!(p.seq_range(), Some((3, 4)));
        assert_eq!(p.entries[0].file, "index3.ts");
        assert_eq!(p.entries[0].duration_ms, 2000);
        assert!(!p.entries[0].discontinuity);
        assert_eq!(p.entries[1].file, "index4.ts");
        assert_eq!(p.entries[1].duration_ms, 1960);
        assert!(p.entries[1].discontinuity);
    }

    #[test]
    fn parses_fmp4_map() {
        let p = parse_media_playlist(FFMPEG_FMP4.as_bytes()).unwrap();
        assert_eq!(p.entries[0].init.as_deref(), Some("init.mp4"));
        assert_eq!(p.seq_range(), Some((0, 0)));
        assert!(!p.ended);
    }

    #[test]
    fn rejects_junk() {
        assert_eq!(parse_media_playlist(b"hello"), Err(PlaylistError::NotHls));
        assert_eq!(
            parse_media_playlist(&[0xff, 0xfe]),
            Err(PlaylistError::NotHls)
        );
        assert!(matches!(
            parse_media_playlist(b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:x\n"),
            Err(PlaylistError::Unsupported(_))
        ));
        // A sequence number at the top of the range: refused, not overflowed.
        assert!(matches!(
            parse_media_playlist(
                b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:18446744073709551615\n\
                  #EXTINF:2,\na.ts\n#EXTINF:2,\nb.ts\n"
            ),
            Err(PlaylistError::Unsupported(_))
        ));
        assert_eq!(
            parse_media_playlist(b"#EXTM3U\n").unwrap().seq_range(),
            None
        );
        assert!(matches!(
            parse_media_playlist(b"#EXTM3U\n#EXTINF:abc,\nx.ts\n"),
            Err(PlaylistError::BadDuration(_))
        ));
        // Only the last path component is used as a key.
        let p = parse_media_playlist(b"#EXTM3U\n#EXTINF:2,\n../../etc/passwd\n").unwrap();
        assert_eq!(p.entries[0].file, "passwd");
        assert!(matches!(
            parse_media_playlist(b"#EXTM3U\n#EXTINF:2,\n..\n"),
            Err(PlaylistError::Unsupported(_))
        ));
        assert!(valid_file_name("index0.ts"));
        assert!(!valid_file_name(".hidden"));
        assert!(!valid_file_name("a/b"));
    }

    #[test]
    fn attributes() {
        assert_eq!(
            attribute("URI=\"a.mp4\",BYTERANGE=\"1@0\"", "URI"),
            Some("a.mp4")
        );
        assert_eq!(
            attribute("BYTERANGE=\"1@0\",URI=\"b.mp4\"", "URI"),
            Some("b.mp4")
        );
        assert_eq!(attribute("X=1,URI=c.mp4", "URI"), Some("c.mp4"));
        assert_eq!(attribute("X=1", "URI"), None);
    }
}
