//! What a node knows of each stream: the signed announcements in its window, which of
//! those segments it holds and where they came from, and whether the stream ended.

use shoal_protocol::PeerId;
use shoal_protocol::content::ContentId;
use shoal_protocol::segment::{Announcement, Seq, StreamEnd};
use shoal_protocol::signed::Verified;
use shoal_protocol::stream;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Segments the bitrate is measured over.
const BITRATE_SEGMENTS: usize = 8;

/// Where a held segment came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An encoder pushed it into this node.
    Ingest,
    /// Pulled over the data plane from this peer.
    Peer(PeerId),
}

/// A held segment's provenance.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    /// Where it came from.
    pub source: Source,
    /// When it arrived.
    pub at: Instant,
}

/// One segment in the window.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its verified announcement.
    pub announcement: Verified<Announcement>,
    /// Set once the bytes are in this node's store.
    pub held: Option<Held>,
    /// Peers (by [`requester_key`](super::requester_key)) this node sent the segment to.
    pub uploads: Vec<u128>,
    /// Pullers turned away at the fan-out limit (rotates the peers they are pointed at).
    pub busy_answers: usize,
    /// When its announcement arrived here.
    pub announced: Option<Instant>,
}

/// The outcome of adding an announcement.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    /// New segment. `gap` is set when earlier segments inside the window are missing.
    New {
        /// Earlier segments are missing.
        gap: bool,
    },
    /// Already known with the same content.
    Duplicate,
    /// Already known with different content: the first announcement is kept.
    Conflict,
    /// Older than the window: ignored.
    TooOld,
}

/// What fell out of the window.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    /// Segments dropped.
    pub segments: Vec<Seq>,
    /// Init segments no longer referenced by any segment in the window.
    pub inits: Vec<ContentId>,
}

/// A stream as one node sees it.
#[derive(Debug)]
pub struct StreamState {
    /// Its name.
    pub name: stream::Name,
    /// The window of segments, by sequence number.
    pub entries: BTreeMap<Seq, Entry>,
    /// Set when the stream ended.
    pub end: Option<Verified<StreamEnd>>,
    /// An encoder pushes this stream into this node.
    pub ingest_here: bool,
    /// When the newest segment's announcement arrived here.
    pub newest_at: Option<Instant>,
}

impl StreamState {
    /// An empty stream.
    pub fn new(name: stream::Name) -> Self {
        Self {
            name,
            entries: BTreeMap::new(),
            end: None,
            ingest_here: false,
            newest_at: None,
        }
    }

    /// Adds an announcement and trims the window to `window` segments.
    pub fn add(&mut self, announcement: Verified<Announcement>, window: usize) -> (Added, Evicted) {
        let seq = announcement.value.id.seq;
        if let Some(existing) = self.entries.get(&seq) {
            let same = existing.announcement.value.hash == announcement.value.hash;
            let added = if same {
                Added::Duplicate
            } else {
                Added::Conflict
            };
            return (added, Evicted::default());
        }
        if let Some(&newest) = self.entries.keys().next_back()
            && newest >= window as u64
            && seq <= newest - window as u64
        {
            return (Added::TooOld, Evicted::default());
        }
        let gap = match self.entries.range(..seq).next_back() {
            Some((&prev, _)) => prev + 1 != seq,
            None => false,
        };
        self.entries.insert(
            seq,
            Entry {
                announcement,
                held: None,
                uploads: Vec::new(),
                busy_answers: 0,
                announced: None,
            },
        );
        let evicted = self.trim(window);
        (Added::New { gap }, evicted)
    }

    fn trim(&mut self, window: usize) -> Evicted {
        let mut evicted = Evicted::default();
        let mut dropped_inits = BTreeSet::new();
        while self.entries.len() > window {
            let (seq, entry) = self.entries.pop_first().expect("non-empty");
            evicted.segments.push(seq);
            if let Some(init) = entry.announcement.value.init {
                dropped_inits.insert(init.hash);
            }
        }
        let in_use = self.inits_in_use();
        evicted.inits = dropped_inits.difference(&in_use).copied().collect();
        evicted
    }

    /// Init segments referenced by the window.
    pub fn inits_in_use(&self) -> BTreeSet<ContentId> {
        self.entries
            .values()
            .filter_map(|e| e.announcement.value.init.map(|i| i.hash))
            .collect()
    }

    /// Marks a segment as held; false if it is not in the window.
    pub fn mark_held(&mut self, seq: Seq, source: Source, now: Instant) -> bool {
        match self.entries.get_mut(&seq) {
            Some(e) => {
                e.held.get_or_insert(Held { source, at: now });
                true
            }
            None => false,
        }
    }

    /// First and last held sequence numbers.
    pub fn held_range(&self) -> Option<(Seq, Seq)> {
        let mut held = self
            .entries
            .iter()
            .filter(|(_, e)| e.held.is_some())
            .map(|(s, _)| *s);
        let first = held.next()?;
        let last = held.next_back().unwrap_or(first);
        Some((first, last))
    }

    /// The stream's bitrate in bits per second, measured over its newest segments
    /// (`None` until a segment with a duration is known).
    pub fn bitrate_bps(&self) -> Option<u64> {
        let (bytes, ms) =
            self.entries
                .values()
                .rev()
                .take(BITRATE_SEGMENTS)
                .fold((0u64, 0u64), |(b, d), e| {
                    let a = &e.announcement.value;
                    (b + a.size, d + u64::from(a.duration_ms))
                });
        (ms > 0).then(|| bytes.saturating_mul(8000) / ms)
    }

    /// Newest announced sequence number.
    pub fn newest(&self) -> Option<Seq> {
        self.entries.keys().next_back().copied()
    }

    /// The segments a live playlist lists: at most `len` of the newest, contiguous (HLS
    /// numbers segments by position, so a hole would renumber everything after it).
    pub fn playlist(&self, len: usize) -> Vec<&Announcement> {
        let mut out: Vec<&Announcement> = Vec::with_capacity(len);
        let mut expect: Option<Seq> = None;
        for (&seq, e) in self.entries.iter().rev() {
            if out.len() == len || expect.is_some_and(|x| x != seq) {
                break;
            }
            out.push(&e.announcement.value);
            expect = seq.checked_sub(1);
            if expect.is_none() {
                break;
            }
        }
        out.reverse();
        out
    }

    /// True if the stream ended and the end covers the newest segment.
    pub fn ended(&self) -> bool {
        match (&self.end, self.newest()) {
            (Some(end), Some(newest)) => end.value.last_seq >= newest,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::announcement;

    #[test]
    fn window_trims_oldest_and_frees_unused_inits() {
        let mut s = StreamState::new(stream::Name::new("a").unwrap());
        for seq in 0..5 {
            let (added, ev) = s.add(announcement("a", seq, Some(seq / 3)), 3);
            assert_eq!(added, Added::New { gap: false });
            if seq < 3 {
                assert!(ev.segments.is_empty());
            }
        }
        assert_eq!(s.entries.keys().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
        // Seq 5 evicts 2, the last user of init 0.
        let (_, ev) = s.add(announcement("a", 5, Some(1)), 3);
        assert_eq!(ev.segments, vec![2]);
        assert_eq!(ev.inits.len(), 1);
    }

    #[test]
    fn duplicates_conflicts_and_old() {
        let mut s = StreamState::new(stream::Name::new("a").unwrap());
        s.add(announcement("a", 10, None), 4);
        assert_eq!(s.add(announcement("a", 10, None), 4).0, Added::Duplicate);
        let mut other = announcement("a", 10, None);
        other.value.hash = ContentId::of(b"other");
        assert_eq!(s.add(other, 4).0, Added::Conflict);
        assert_eq!(s.add(announcement("a", 6, None), 4).0, Added::TooOld);
        assert_eq!(
            s.add(announcement("a", 12, None), 4).0,
            Added::New { gap: true }
        );
    }

    #[test]
    fn playlist_is_the_contiguous_tail() {
        let mut s = StreamState::new(stream::Name::new("a").unwrap());
        for seq in [0, 1, 2, 4, 5, 6] {
            s.add(announcement("a", seq, None), 10);
        }
        let seqs: Vec<_> = s.playlist(6).iter().map(|a| a.id.seq).collect();
        assert_eq!(seqs, vec![4, 5, 6]);
        let seqs: Vec<_> = s.playlist(2).iter().map(|a| a.id.seq).collect();
        assert_eq!(seqs, vec![5, 6]);
        s.add(announcement("a", 3, None), 10);
        let seqs: Vec<_> = s.playlist(6).iter().map(|a| a.id.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn held_range_and_provenance() {
        let mut s = StreamState::new(stream::Name::new("a").unwrap());
        let now = crate::testing::t0();
        for seq in 0..4 {
            s.add(announcement("a", seq, None), 10);
        }
        assert_eq!(s.held_range(), None);
        assert!(s.mark_held(1, Source::Ingest, now));
        assert!(s.mark_held(3, Source::Ingest, now));
        assert!(!s.mark_held(9, Source::Ingest, now));
        assert_eq!(s.held_range(), Some((1, 3)));
    }
}
