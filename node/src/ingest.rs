//! Turning what an encoder PUTs into segments ready to announce.
//!
//! ffmpeg's HLS muxer PUTs each segment when it is complete, then the playlist that lists
//! it (FIELD-NOTES). Segment files wait here until a playlist gives their duration and
//! order; then each becomes a [`Ready`] segment with the mesh-wide sequence number the
//! node assigns. An fMP4 init segment (`#EXT-X-MAP`) is kept by name and hashed once.
//! Pure logic: the HTTP handler feeds it and carries out the result.

use bytes::Bytes;
use shoal_protocol::content::ContentId;
use shoal_protocol::segment::{Container, InitRef, Seq};
use std::collections::{HashMap, VecDeque};

use crate::hls::MediaPlaylist;

/// Files waiting for a playlist to list them. An encoder has at most one or two segments
/// in flight; 16 tolerates a burst without letting a client park unbounded data.
pub const MAX_PENDING: usize = 16;
/// Announced file names remembered, so re-listing them in the sliding playlist does not
/// announce them twice. Larger than any sane `-hls_list_size`.
const REMEMBERED: usize = 256;

/// A segment ready to be announced.
#[derive(Debug, Clone)]
pub struct Ready {
    /// Its mesh-wide sequence number.
    pub seq: Seq,
    /// The encoder's file name.
    pub file: String,
    /// Its bytes.
    pub bytes: Bytes,
    /// Duration in ms.
    pub duration_ms: u32,
    /// Packaging.
    pub container: Container,
    /// The init segment it needs, with its bytes.
    pub init: Option<(InitRef, Bytes)>,
    /// A discontinuity precedes it.
    pub discontinuity: bool,
}

/// What a playlist PUT produced.
#[derive(Debug, Default)]
pub struct Assembled {
    /// Segments to announce, in order.
    pub ready: Vec<Ready>,
    /// The encoder ended the stream; the last segment is the last of `ready` or earlier.
    pub ended: bool,
}

/// The ingest state of one stream on this node.
#[derive(Debug, Default)]
pub struct Assembler {
    pending: HashMap<String, Bytes>,
    order: VecDeque<String>,
    inits: HashMap<String, (InitRef, Bytes)>,
    announced: VecDeque<String>,
    restarted: bool,
    /// This node took the stream over from a source that stalled: it keeps leading while
    /// it feeds the stream, even before the old source's claim lapses.
    pub took_over: bool,
}

/// The container a segment file name implies, if it is a media segment.
pub fn container_of(file: &str) -> Option<Container> {
    match file.rsplit_once('.')?.1 {
        "ts" => Some(Container::Ts),
        "m4s" => Some(Container::Fmp4),
        _ => None,
    }
}

impl Assembler {
    /// Receives a file (segment or init). Returns the name of a file dropped to make room.
    pub fn put(&mut self, file: String, bytes: Bytes) -> Option<String> {
        if let Some(i) = self.announced.iter().position(|f| f == &file) {
            // The encoder reuses a name it used before: it restarted. What follows is new
            // media, after a discontinuity.
            self.announced.remove(i);
            self.restarted = true;
        }
        self.inits.remove(&file);
        if self.pending.insert(file.clone(), bytes).is_none() {
            self.order.push_back(file);
        }
        if self.order.len() > MAX_PENDING {
            let dropped = self.order.pop_front()?;
            self.pending.remove(&dropped);
            return Some(dropped);
        }
        None
    }

    /// The encoder deleted a file (`-hls_flags delete_segments`).
    pub fn delete(&mut self, file: &str) {
        if self.pending.remove(file).is_some() {
            self.order.retain(|f| f != file);
        }
    }

    /// Resolves a playlist. `mesh_next` is the next sequence number the mesh expects for
    /// this stream (newest known + 1): numbering always continues the mesh's, so a stream
    /// moved or failed over to this node keeps counting.
    pub fn on_playlist(&mut self, playlist: &MediaPlaylist, mesh_next: Seq) -> Assembled {
        let mut out = Assembled {
            ended: playlist.ended,
            ..Assembled::default()
        };
        let mut next = mesh_next;
        for entry in &playlist.entries {
            if !self.pending.contains_key(&entry.file) {
                continue; // announced already, or never received
            }
            let Some(container) = container_of(&entry.file) else {
                continue;
            };
            let init = match &entry.init {
                Some(name) => match self.init(name) {
                    Some(init) => Some(init),
                    // The init upload is still open: wait for a later playlist.
                    None => break,
                },
                None => None,
            };
            let bytes = self.pending.remove(&entry.file).expect("checked");
            self.order.retain(|f| f != &entry.file);
            let seq = next;
            next += 1;
            self.announced.push_back(entry.file.clone());
            if self.announced.len() > REMEMBERED {
                self.announced.pop_front();
            }
            out.ready.push(Ready {
                seq,
                file: entry.file.clone(),
                bytes,
                duration_ms: entry.duration_ms,
                container,
                init,
                discontinuity: entry.discontinuity || std::mem::take(&mut self.restarted),
            });
        }
        if out.ended {
            out.ended = self.pending.is_empty() || out.ready.is_empty();
        }
        out
    }

    fn init(&mut self, name: &str) -> Option<(InitRef, Bytes)> {
        if let Some(bytes) = self.pending.remove(name) {
            self.order.retain(|f| f != name);
            let r = InitRef {
                hash: ContentId::of(&bytes),
                size: bytes.len() as u64,
            };
            self.inits.insert(name.to_string(), (r, bytes));
        }
        self.inits.get(name).cloned()
    }

    /// Bytes waiting in this assembler.
    pub fn pending_bytes(&self) -> usize {
        self.pending.values().map(Bytes::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::parse_media_playlist;

    fn playlist(text: &str) -> MediaPlaylist {
        parse_media_playlist(text.as_bytes()).unwrap()
    }

    #[test]
    fn segments_wait_for_the_playlist_and_are_numbered_once() {
        let mut a = Assembler::default();
        a.put("index0.ts".into(), Bytes::from_static(b"zero"));
        let out = a.on_playlist(&playlist("#EXTM3U\n#EXTINF:2.0,\nindex0.ts\n"), 0);
        assert_eq!(out.ready.len(), 1);
        assert_eq!(out.ready[0].seq, 0);
        assert_eq!(out.ready[0].container, Container::Ts);
        a.put("index1.ts".into(), Bytes::from_static(b"one"));
        // The node passes the mesh's newest + 1.
        let out = a.on_playlist(
            &playlist("#EXTM3U\n#EXTINF:2.0,\nindex0.ts\n#EXTINF:2.0,\nindex1.ts\n"),
            1,
        );
        assert_eq!(out.ready.len(), 1);
        assert_eq!(out.ready[0].seq, 1);
        assert_eq!(&out.ready[0].bytes[..], b"one");
    }

    #[test]
    fn continues_the_mesh_numbering() {
        let mut a = Assembler::default();
        a.put("index0.ts".into(), Bytes::from_static(b"zero"));
        let out = a.on_playlist(&playlist("#EXTM3U\n#EXTINF:2.0,\nindex0.ts\n"), 41);
        assert_eq!(out.ready[0].seq, 41);
    }

    #[test]
    fn fmp4_waits_for_its_init() {
        let mut a = Assembler::default();
        let text = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.0,\nindex0.m4s\n";
        a.put("index0.m4s".into(), Bytes::from_static(b"media"));
        assert!(a.on_playlist(&playlist(text), 0).ready.is_empty());
        a.put("init.mp4".into(), Bytes::from_static(b"init"));
        let out = a.on_playlist(&playlist(text), 0);
        let (init, bytes) = out.ready[0].init.clone().unwrap();
        assert_eq!(init.hash, ContentId::of(b"init"));
        assert_eq!(&bytes[..], b"init");
        // The init stays available for later segments.
        a.put("index1.m4s".into(), Bytes::from_static(b"media1"));
        let text2 = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.0,\nindex1.m4s\n";
        assert!(a.on_playlist(&playlist(text2), 0).ready[0].init.is_some());
    }

    #[test]
    fn encoder_restart_is_a_discontinuity() {
        let mut a = Assembler::default();
        let text = "#EXTM3U\n#EXTINF:2.0,\nindex0.ts\n";
        a.put("index0.ts".into(), Bytes::from_static(b"a"));
        a.on_playlist(&playlist(text), 0);
        a.put("index0.ts".into(), Bytes::from_static(b"b"));
        let out = a.on_playlist(&playlist(text), 1);
        assert_eq!(out.ready[0].seq, 1);
        assert!(out.ready[0].discontinuity);
    }

    #[test]
    fn pending_is_bounded_and_deletes_free() {
        let mut a = Assembler::default();
        for i in 0..MAX_PENDING {
            assert_eq!(a.put(format!("{i}.ts"), Bytes::from_static(b"x")), None);
        }
        assert_eq!(
            a.put("late.ts".into(), Bytes::from_static(b"x")),
            Some("0.ts".into())
        );
        a.delete("1.ts");
        assert_eq!(a.pending_bytes(), MAX_PENDING - 1);
    }

    #[test]
    fn end_of_stream() {
        let mut a = Assembler::default();
        a.put("index0.ts".into(), Bytes::from_static(b"a"));
        let out = a.on_playlist(
            &playlist("#EXTM3U\n#EXTINF:2.0,\nindex0.ts\n#EXT-X-ENDLIST\n"),
            0,
        );
        assert!(out.ended);
    }
}
