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
use shoal_protocol::stream;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::hls::MediaPlaylist;

/// Files waiting for a playlist to list them. An encoder has at most one or two segments
/// in flight; 16 tolerates a burst without letting a client park unbounded data.
pub const MAX_PENDING: usize = 16;
/// Announced file names remembered, so re-listing them in the sliding playlist does not
/// announce them twice. Larger than any sane `-hls_list_size`.
const REMEMBERED: usize = 256;

/// Most streams one node ingests at once.
pub const MAX_STREAMS: usize = 256;

/// Bounds on what encoders may leave in a node.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A stream with no ingest activity for this long is forgotten (its claim lapsed
    /// long before), freeing its name.
    pub forget_after: Duration,
    /// An uploaded file that no playlist lists within this long is dropped (an encoder
    /// lists a segment right after uploading it; an fMP4 init with the first segment).
    pub unlisted_ttl: Duration,
    /// Bytes waiting for a playlist, per stream.
    pub pending_bytes: u64,
    /// Bytes waiting for a playlist, over all streams.
    pub pending_total: u64,
}

impl Limits {
    /// Defaults for segments of at most `max_segment` bytes: two such segments in flight
    /// per stream (at least 64 MiB), 512 MiB in all (at least one stream's worth).
    pub fn for_segment_size(max_segment: u64) -> Self {
        let pending_bytes = (2 * max_segment).max(64 << 20);
        Self {
            forget_after: Duration::from_secs(30),
            unlisted_ttl: Duration::from_secs(30),
            pending_bytes,
            pending_total: pending_bytes.max(512 << 20),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::for_segment_size(64 << 20)
    }
}

/// Why an upload was not kept.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Refused {
    /// This node ingests as many streams as it may.
    #[error("too many ingest streams on this node")]
    TooManyStreams,
    /// The stream's files waiting for a playlist would exceed its budget.
    #[error("uploads not yet listed by a playlist exceed {0} bytes for this stream")]
    StreamBudget(u64),
    /// All streams' files waiting for a playlist would exceed the node's budget.
    #[error("uploads not yet listed by a playlist exceed {0} bytes on this node")]
    NodeBudget(u64),
}

/// The ingest state of every stream pushed into this node.
#[derive(Debug, Default)]
pub struct Ingests {
    limits: Limits,
    streams: HashMap<stream::Name, (Assembler, Instant)>,
}

impl Ingests {
    /// Empty, with these bounds.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            streams: HashMap::new(),
        }
    }

    /// The assembler of `name`, created if there is room; marks ingest activity.
    pub fn stream(&mut self, name: &stream::Name, now: Instant) -> Result<&mut Assembler, Refused> {
        if !self.streams.contains_key(name) && self.streams.len() >= MAX_STREAMS {
            return Err(Refused::TooManyStreams);
        }
        let (assembler, last) = self
            .streams
            .entry(name.clone())
            .or_insert_with(|| (Assembler::default(), now));
        *last = now;
        Ok(assembler)
    }

    /// The assembler of `name`, if it exists.
    pub fn get_mut(&mut self, name: &stream::Name) -> Option<&mut Assembler> {
        self.streams.get_mut(name).map(|(a, _)| a)
    }

    /// Receives a file for `name`, within the byte budgets. Returns the name of a file
    /// dropped to make room.
    pub fn put(
        &mut self,
        name: &stream::Name,
        file: String,
        bytes: Bytes,
        now: Instant,
    ) -> Result<Option<String>, Refused> {
        let total = self.pending_bytes();
        let limits = self.limits;
        let assembler = self.stream(name, now)?;
        let replaced = assembler
            .pending
            .get(&file)
            .map_or(0, |(b, _)| b.len() as u64);
        let len = bytes.len() as u64;
        if assembler.pending_bytes() as u64 - replaced + len > limits.pending_bytes {
            return Err(Refused::StreamBudget(limits.pending_bytes));
        }
        if total - replaced + len > limits.pending_total {
            return Err(Refused::NodeBudget(limits.pending_total));
        }
        Ok(assembler.put(file, bytes, now))
    }

    /// Drops files unlisted for too long and forgets streams idle for too long. Returns
    /// the streams forgotten.
    pub fn expire(&mut self, now: Instant) -> Vec<stream::Name> {
        let limits = self.limits;
        let mut forgotten = Vec::new();
        self.streams.retain(|name, (assembler, last)| {
            assembler.expire(limits.unlisted_ttl, now);
            let keep = now.saturating_duration_since(*last) <= limits.forget_after;
            if !keep {
                forgotten.push(name.clone());
            }
            keep
        });
        forgotten
    }

    /// Bytes waiting for a playlist, over all streams.
    pub fn pending_bytes(&self) -> u64 {
        self.streams
            .values()
            .map(|(a, _)| a.pending_bytes() as u64)
            .sum()
    }

    /// Streams with ingest state here.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// True if no stream has ingest state here.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

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
    /// Uploaded files waiting for a playlist, with when they arrived.
    pending: HashMap<String, (Bytes, Instant)>,
    order: VecDeque<String>,
    inits: HashMap<String, (InitRef, Bytes)>,
    announced: VecDeque<String>,
    restarted: bool,
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
    pub fn put(&mut self, file: String, bytes: Bytes, now: Instant) -> Option<String> {
        if let Some(i) = self.announced.iter().position(|f| f == &file) {
            // The encoder reuses a name it used before: it restarted. What follows is new
            // media, after a discontinuity.
            self.announced.remove(i);
            self.restarted = true;
        }
        self.inits.remove(&file);
        if self.pending.insert(file.clone(), (bytes, now)).is_none() {
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
            let (bytes, _) = self.pending.remove(&entry.file).expect("checked");
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
            // The stream ends once every file the last playlist lists went out; files it
            // never listed are strays and do not hold the end back.
            out.ended = playlist
                .entries
                .iter()
                .all(|e| !self.pending.contains_key(&e.file));
            if out.ended {
                self.pending.clear();
                self.order.clear();
            }
        }
        out
    }

    /// Drops files that waited for a playlist for longer than `ttl`.
    pub fn expire(&mut self, ttl: Duration, now: Instant) {
        let before = self.pending.len();
        self.pending
            .retain(|_, (_, at)| now.saturating_duration_since(*at) <= ttl);
        if self.pending.len() != before {
            let pending = &self.pending;
            self.order.retain(|f| pending.contains_key(f));
        }
        if self.pending.is_empty() {
            self.pending.shrink_to_fit();
        }
    }

    fn init(&mut self, name: &str) -> Option<(InitRef, Bytes)> {
        if let Some((bytes, _)) = self.pending.remove(name) {
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
        self.pending.values().map(|(b, _)| b.len()).sum()
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
        a.put(
            "index0.ts".into(),
            Bytes::from_static(b"zero"),
            Instant::now(),
        );
        let out = a.on_playlist(&playlist("#EXTM3U\n#EXTINF:2.0,\nindex0.ts\n"), 0);
        assert_eq!(out.ready.len(), 1);
        assert_eq!(out.ready[0].seq, 0);
        assert_eq!(out.ready[0].container, Container::Ts);
        a.put(
            "index1.ts".into(),
            Bytes::from_static(b"one"),
            Instant::now(),
        );
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
        a.put(
            "index0.ts".into(),
            Bytes::from_static(b"zero"),
            Instant::now(),
        );
        let out = a.on_playlist(&playlist("#EXTM3U\n#EXTINF:2.0,\nindex0.ts\n"), 41);
        assert_eq!(out.ready[0].seq, 41);
    }

    #[test]
    fn fmp4_waits_for_its_init() {
        let mut a = Assembler::default();
        let text = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.0,\nindex0.m4s\n";
        a.put(
            "index0.m4s".into(),
            Bytes::from_static(b"media"),
            Instant::now(),
        );
        assert!(a.on_playlist(&playlist(text), 0).ready.is_empty());
        a.put(
            "init.mp4".into(),
            Bytes::from_static(b"init"),
            Instant::now(),
        );
        let out = a.on_playlist(&playlist(text), 0);
        let (init, bytes) = out.ready[0].init.clone().unwrap();
        assert_eq!(init.hash, ContentId::of(b"init"));
        assert_eq!(&bytes[..], b"init");
        // The init stays available for later segments.
        a.put(
            "index1.m4s".into(),
            Bytes::from_static(b"media1"),
            Instant::now(),
        );
        let text2 = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.0,\nindex1.m4s\n";
        assert!(a.on_playlist(&playlist(text2), 0).ready[0].init.is_some());
    }

    #[test]
    fn encoder_restart_is_a_discontinuity() {
        let mut a = Assembler::default();
        let text = "#EXTM3U\n#EXTINF:2.0,\nindex0.ts\n";
        a.put("index0.ts".into(), Bytes::from_static(b"a"), Instant::now());
        a.on_playlist(&playlist(text), 0);
        a.put("index0.ts".into(), Bytes::from_static(b"b"), Instant::now());
        let out = a.on_playlist(&playlist(text), 1);
        assert_eq!(out.ready[0].seq, 1);
        assert!(out.ready[0].discontinuity);
    }

    #[test]
    fn pending_is_bounded_and_deletes_free() {
        let mut a = Assembler::default();
        for i in 0..MAX_PENDING {
            let put = a.put(format!("{i}.ts"), Bytes::from_static(b"x"), Instant::now());
            assert_eq!(put, None);
        }
        assert_eq!(
            a.put("late.ts".into(), Bytes::from_static(b"x"), Instant::now()),
            Some("0.ts".into())
        );
        a.delete("1.ts");
        assert_eq!(a.pending_bytes(), MAX_PENDING - 1);
    }

    #[test]
    fn a_stray_file_does_not_hold_the_end_back_and_unlisted_files_expire() {
        let mut a = Assembler::default();
        let t0 = Instant::now();
        a.put("stray.ts".into(), Bytes::from_static(b"s"), t0);
        a.put("index0.ts".into(), Bytes::from_static(b"a"), t0);
        let out = a.on_playlist(
            &playlist("#EXTM3U\n#EXTINF:2.0,\nindex0.ts\n#EXT-X-ENDLIST\n"),
            0,
        );
        assert!(out.ended);
        assert_eq!(a.pending_bytes(), 0);
        a.put("late.ts".into(), Bytes::from_static(b"late"), t0);
        a.expire(Duration::from_secs(30), t0 + Duration::from_secs(10));
        assert_eq!(a.pending_bytes(), 4);
        a.expire(Duration::from_secs(30), t0 + Duration::from_secs(31));
        assert_eq!(a.pending_bytes(), 0);
    }

    #[test]
    fn budgets_and_forgetting() {
        let limits = Limits {
            forget_after: Duration::from_secs(30),
            unlisted_ttl: Duration::from_secs(30),
            pending_bytes: 10,
            pending_total: 15,
        };
        let mut ingests = Ingests::new(limits);
        let t0 = Instant::now();
        let (s1, s2) = (
            stream::Name::new("a").unwrap(),
            stream::Name::new("b").unwrap(),
        );
        let bytes = |n: usize| Bytes::from(vec![0u8; n]);
        assert_eq!(ingests.put(&s1, "0.ts".into(), bytes(8), t0), Ok(None));
        assert_eq!(
            ingests.put(&s1, "1.ts".into(), bytes(8), t0),
            Err(Refused::StreamBudget(10))
        );
        // Replacing a file counts its new size only.
        assert_eq!(ingests.put(&s1, "0.ts".into(), bytes(9), t0), Ok(None));
        assert_eq!(
            ingests.put(&s2, "0.ts".into(), bytes(7), t0),
            Err(Refused::NodeBudget(15))
        );
        assert_eq!(ingests.pending_bytes(), 9);
        for i in 0..(MAX_STREAMS - 2) {
            let name = stream::Name::new(format!("s{i}")).unwrap();
            ingests.stream(&name, t0).unwrap();
        }
        let fresh = stream::Name::new("fresh").unwrap();
        assert_eq!(
            ingests.stream(&fresh, t0).err(),
            Some(Refused::TooManyStreams)
        );
        // Idle streams are forgotten, and their names are free again.
        let later = t0 + Duration::from_secs(31);
        assert_eq!(ingests.expire(later).len(), MAX_STREAMS);
        assert!(ingests.stream(&fresh, later).is_ok());
        assert_eq!(ingests.pending_bytes(), 0);
    }

    #[test]
    fn end_of_stream() {
        let mut a = Assembler::default();
        a.put("index0.ts".into(), Bytes::from_static(b"a"), Instant::now());
        let out = a.on_playlist(
            &playlist("#EXTM3U\n#EXTINF:2.0,\nindex0.ts\n#EXT-X-ENDLIST\n"),
            0,
        );
        assert!(out.ended);
    }
}
