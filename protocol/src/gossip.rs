//! What travels over gossipsub. Small, signed messages only; media never does.
//!
//! Statuses and revocation lists go to every node on [`STATUS_TOPIC`]. A stream's
//! announcements and end go only to the nodes that carry it: on the topic of its
//! [`MediaShard`], one of [`MEDIA_SHARDS`] (a bounded set of topics, so a peer cannot
//! make a node track topics without end, and gossipsub's per-peer subscription limit of
//! 100 topics holds whatever the number of streams). A node subscribes to the shards of the streams
//! it carries, which the core decides ([`MediaShard::of`]).

use crate::membership::Revocations;
use crate::segment::{Announcement, StreamEnd};
use crate::signed::Signed;
use crate::status::Status;
use crate::stream;
use serde::{Deserialize, Serialize};

/// Topic for node statuses.
pub const STATUS_TOPIC: &str = "shoal/status/1";
/// Prefix of the media shards' topics: `shoal/media/2/{shard}`.
pub const MEDIA_TOPIC_PREFIX: &str = "shoal/media/2/";
/// Number of media shards: with the status topic, under gossipsub's default limit of
/// 100 topics a peer may subscribe to (and per subscription request); a node of a small
/// mesh subscribes to all of them. A node that carries a stream also receives its
/// shard-mates' announcements (about three streams a shard at 200 streams).
pub const MEDIA_SHARDS: u16 = 64;
/// Largest gossip message accepted (gossipsub's own default transmit limit).
pub const MAX_GOSSIP: usize = 64 * 1024;

/// One of the [`MEDIA_SHARDS`] media topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MediaShard(u16);

impl MediaShard {
    /// The shard `stream`'s announcements go on: from the blake3 hash of its name, the
    /// same on every node.
    pub fn of(stream: &stream::Name) -> Self {
        let hash = blake3::hash(stream.as_str().as_bytes());
        let [a, b, ..] = *hash.as_bytes();
        Self(u16::from_le_bytes([a, b]) % MEDIA_SHARDS)
    }

    /// Its gossipsub topic.
    pub fn topic(self) -> String {
        format!("{MEDIA_TOPIC_PREFIX}{}", self.0)
    }

    /// Every shard.
    pub fn all() -> impl Iterator<Item = Self> {
        (0..MEDIA_SHARDS).map(Self)
    }

    /// Its number.
    pub fn index(self) -> u16 {
        self.0
    }
}

/// A gossip message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Gossip {
    /// A node's status.
    Status(Signed<Status>),
    /// A new segment at an ingest node.
    Segment(Signed<Announcement>),
    /// A stream ended.
    End(Signed<StreamEnd>),
    /// The mesh CA's newest revocation list (closed meshes).
    Revocations(Signed<Revocations>),
}

impl Gossip {
    /// The topic this message goes on (None: a media message whose payload does not
    /// decode, which is not sent).
    pub fn topic(&self) -> Option<String> {
        match self {
            Gossip::Status(_) | Gossip::Revocations(_) => Some(STATUS_TOPIC.to_string()),
            Gossip::Segment(_) | Gossip::End(_) => self.shard().map(MediaShard::topic),
        }
    }

    /// The media shard of an announcement or an end (None for other messages). Read
    /// from the message without checking its signature ([`Signed::peek`]): for routing
    /// it; a receiver verifies before trusting anything, the topic included.
    pub fn shard(&self) -> Option<MediaShard> {
        match self {
            Gossip::Segment(s) => s.peek().ok().map(|a| MediaShard::of(&a.id.stream)),
            Gossip::End(s) => s.peek().ok().map(|e| MediaShard::of(&e.stream)),
            Gossip::Status(_) | Gossip::Revocations(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_has_one_shard_everywhere_and_streams_spread_over_them() {
        let live = stream::Name::new("live").unwrap();
        assert_eq!(MediaShard::of(&live), MediaShard::of(&live.clone()));
        assert!(
            MediaShard::of(&live)
                .topic()
                .starts_with(MEDIA_TOPIC_PREFIX)
        );
        let shards: std::collections::BTreeSet<MediaShard> = (0..200)
            .map(|k| MediaShard::of(&stream::Name::new(format!("s{k}")).unwrap()))
            .collect();
        // 200 names over 64 shards: nearly every shard is used.
        assert!(shards.len() > 56, "{} shards", shards.len());
        assert!(shards.iter().all(|s| s.index() < MEDIA_SHARDS));
        assert_eq!(MediaShard::all().count(), MEDIA_SHARDS as usize);
    }
}
