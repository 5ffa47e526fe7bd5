//! Which streams this node carries, and so which media shards it subscribes to.
//!
//! A stream's announcements reach only the nodes that carry it (see
//! [`shoal_protocol::gossip`]): a node carries a stream its viewers watch or asked for
//! (a playlist request, before any segment is fetched), one pushed into it by an encoder,
//! or one a peer asked it to pre-warm. The core keeps the set of [`MediaShard`]s those
//! streams fall in and tells the runtime to subscribe and unsubscribe
//! ([`Action::Subscribe`], [`Action::Unsubscribe`]) as it changes. A stream asked for
//! and then not watched stops being carried after [`Config::stream_forget`]. A node of a
//! small mesh (fewer peers than [`Config::carry_all_below`], and once past it, until
//! it shrinks below three quarters of that) subscribes to every shard:
//! there announcements cost little, and every node knows every stream before its first
//! viewer asks.
//!
//! [`Config::stream_forget`]: crate::Config::stream_forget
//! [`Config::carry_all_below`]: crate::Config::carry_all_below

use crate::{Action, Core};
use shoal_protocol::gossip::MediaShard;
use shoal_protocol::stream;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// What the core keeps about carried streams.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    /// Streams viewers asked for here, and when last.
    asked: HashMap<stream::Name, Instant>,
    /// The shards subscribed to.
    subscribed: BTreeSet<MediaShard>,
    /// The mesh counts as large: only the carried streams' shards are subscribed to.
    large: bool,
}

impl Core {
    /// A viewer asked for `stream` here (its playlist): the node carries it from now on,
    /// subscribing to its announcements at once, until the request is
    /// [`crate::Config::stream_forget`] old and no viewer watches it (viewers stop
    /// watching [`crate::Config::viewer_idle`] after their last request).
    pub fn handle_wanted(&mut self, stream: &stream::Name, now: Instant) {
        let known = self.carried.asked.contains_key(stream);
        if !known && self.carried.asked.len() >= self.config.max_streams {
            return;
        }
        self.carried.asked.insert(stream.clone(), now);
        if !self.is_subscribed(stream) {
            self.update_subscriptions();
        }
    }

    /// True if this node takes `stream`'s announcements now (its shard is subscribed
    /// to). A stream held here but not subscribed to has a stale window.
    pub fn is_subscribed(&self, stream: &stream::Name) -> bool {
        self.carried.subscribed.contains(&MediaShard::of(stream))
    }

    /// True if this node carries `stream`: watched or asked for here, pushed into it, or
    /// pre-warmed at a peer's request. (In a small mesh it takes every stream's
    /// announcements besides, see [`crate::Config::carry_all_below`].)
    pub fn carries(&self, stream: &stream::Name) -> bool {
        self.is_watched(stream)
            || self.claims.contains_key(stream)
            || self.carried.asked.contains_key(stream)
    }

    /// True if announcements of `stream` are kept here: it is carried, or the mesh is
    /// small (every stream is).
    pub(crate) fn takes_announcements_of(&self, stream: &stream::Name) -> bool {
        !self.carried.large || self.carries(stream)
    }

    /// The media shards subscribed to.
    pub fn subscribed(&self) -> &BTreeSet<MediaShard> {
        &self.carried.subscribed
    }

    /// Forgets requests older than [`crate::Config::stream_forget`] (housekeeping).
    pub(crate) fn expire_asked(&mut self, now: Instant) {
        let forget = self.config.stream_forget;
        self.carried
            .asked
            .retain(|_, at| now.saturating_duration_since(*at) <= forget);
    }

    /// Subscribes to the shards of the streams carried now and unsubscribes from the
    /// others.
    pub(crate) fn update_subscriptions(&mut self) {
        let carried = self
            .carried
            .asked
            .keys()
            .chain(self.claims.keys())
            .chain(self.sessions.all().map(|(name, _)| name))
            .chain(self.balance.warm_streams());
        // With hysteresis: a mesh hovering around the threshold (peers coming and going)
        // does not make every node subscribe to and leave every shard each time.
        let peers = self.peers.len();
        let below = self.config.carry_all_below;
        if peers >= below {
            self.carried.large = true;
        } else if peers < below - below / 4 {
            self.carried.large = false;
        }
        let wanted: BTreeSet<MediaShard> = if self.carried.large {
            carried.map(MediaShard::of).collect()
        } else {
            MediaShard::all().collect()
        };
        let current = &self.carried.subscribed;
        let new: Vec<MediaShard> = wanted.difference(current).copied().collect();
        let old: Vec<MediaShard> = current.difference(&wanted).copied().collect();
        self.actions.extend(new.into_iter().map(Action::Subscribe));
        self.actions
            .extend(old.into_iter().map(Action::Unsubscribe));
        self.carried.subscribed = wanted;
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::{Action, Config, Core};
    use shoal_protocol::gossip::MediaShard;
    use shoal_protocol::status::WarmRequest;
    use shoal_protocol::stream;
    use std::time::Duration;

    fn name(s: &str) -> stream::Name {
        stream::Name::new(s).unwrap()
    }

    /// A core that takes only the announcements of the streams it carries, however small
    /// the mesh.
    fn only_carried() -> Config {
        Config {
            carry_all_below: 0,
            ..Config::default()
        }
    }

    /// The subscription changes among the pending actions.
    fn changes(core: &mut Core) -> Vec<Action> {
        std::iter::from_fn(|| core.poll_action())
            .filter(|a| matches!(a, Action::Subscribe(_) | Action::Unsubscribe(_)))
            .collect()
    }

    /// Ticks every housekeeping interval for `d`.
    fn pass(core: &mut Core, from: std::time::Instant, d: Duration) -> std::time::Instant {
        let mut t = from;
        while t < from + d {
            t += crate::HOUSEKEEPING;
            core.handle_tick(t);
        }
        t
    }

    #[test]
    fn a_stream_asked_for_is_carried_until_forgotten() {
        let t0 = t0();
        let mut core = Core::new(peer(0), only_carried());
        let a = name("a");
        assert!(core.subscribed().is_empty() && !core.carries(&a));
        core.handle_wanted(&a, t0);
        assert_eq!(changes(&mut core), [Action::Subscribe(MediaShard::of(&a))]);
        assert!(core.carries(&a));
        // Asked again: already subscribed, nothing new.
        core.handle_wanted(&a, t0 + Duration::from_secs(1));
        assert_eq!(changes(&mut core), []);
        // Neither asked for nor watched: dropped after `stream_forget`.
        let forget = core.config().stream_forget;
        pass(&mut core, t0, forget + Duration::from_secs(3));
        assert_eq!(
            changes(&mut core),
            [Action::Unsubscribe(MediaShard::of(&a))]
        );
        assert!(!core.carries(&a) && core.subscribed().is_empty());
    }

    #[test]
    fn watched_ingested_and_prewarmed_streams_are_carried() {
        let t0 = t0();
        let mut core = Core::new(peer(0), only_carried());
        let (watched, pushed, warm) = (name("watched"), name("pushed"), name("warm"));
        let shards = [&watched, &pushed, &warm].map(MediaShard::of);
        assert!(shards[0] != shards[1] && shards[1] != shards[2] && shards[0] != shards[2]);

        // Watched: a viewer fetches its media, and keeps it carried past the request's
        // lifetime while it keeps watching.
        core.handle_announcement(announcement_by(1, "watched", 0, None), t0)
            .unwrap();
        core.handle_media(&watched, 7u128, t0);
        // Pushed into this node by an encoder.
        core.handle_ingest_activity(&pushed, 1, t0);
        // A peer asks this node to pre-warm.
        let mut status = status_holding(1, "warm", 0, 3);
        status.warm = vec![WarmRequest {
            stream: warm.clone(),
            peers: vec![peer(0)],
        }];
        core.handle_status(peer(1), status, t0);
        let subscribed: Vec<Action> = changes(&mut core);
        assert_eq!(subscribed.len(), 3, "{subscribed:?}");
        for s in &shards {
            assert!(core.subscribed().contains(s));
        }
        let mut t = t0;
        for _ in 0..40 {
            t += Duration::from_secs(1);
            core.handle_media(&watched, 7u128, t);
            core.handle_ingest_activity(&pushed, 1, t);
            core.handle_tick(t);
        }
        // The pre-warm request lapsed; the others are still carried.
        assert_eq!(changes(&mut core), [Action::Unsubscribe(shards[2])]);
        assert!(core.carries(&watched) && core.carries(&pushed) && !core.carries(&warm));
    }

    #[test]
    fn asking_for_streams_is_bounded() {
        let t0 = t0();
        let config = Config {
            max_streams: 4,
            ..only_carried()
        };
        let mut core = Core::new(peer(0), config);
        for k in 0..100 {
            core.handle_wanted(&name(&format!("s{k}")), t0);
        }
        let carried = (0..100)
            .filter(|k| core.carries(&name(&format!("s{k}"))))
            .count();
        assert_eq!(carried, 4);
        assert!(core.subscribed().len() <= 4);
    }

    #[test]
    fn a_small_mesh_carries_every_stream_and_a_large_one_only_its_own() {
        let t0 = t0();
        let config = Config {
            carry_all_below: 4,
            ..Config::default()
        };
        let mut core = Core::new(peer(0), config);
        core.handle_tick(t0);
        assert_eq!(core.subscribed().len(), MediaShard::all().count());
        changes(&mut core);
        let watched = name("watched");
        core.handle_wanted(&watched, t0);
        for p in 1..=4 {
            core.handle_status(peer(p), status_holding(1, "x", 0, 1), t0);
        }
        pass(&mut core, t0, crate::HOUSEKEEPING);
        // Four peers known: only the stream asked for stays.
        let dropped = changes(&mut core);
        assert_eq!(dropped.len(), MediaShard::all().count() - 1);
        assert!(dropped.iter().all(|a| matches!(a, Action::Unsubscribe(_))));
        assert_eq!(
            core.subscribed().iter().copied().collect::<Vec<_>>(),
            [MediaShard::of(&watched)]
        );
        // One peer gone (3 of 4 known): still large, no flapping.
        let t = t0 + crate::HOUSEKEEPING * 2;
        for p in 1..=3 {
            core.handle_status(peer(p), status_holding(2, "x", 0, 1), t);
        }
        core.peers.remove(&peer(3));
        pass(&mut core, t, crate::HOUSEKEEPING);
        assert_eq!(changes(&mut core), []);
        // A shard-mate's announcement is not kept in a large mesh; the carried
        // stream's is.
        let mate = (0..1000)
            .map(|k| name(&format!("m{k}")))
            .find(|n| MediaShard::of(n) == MediaShard::of(&watched) && *n != watched)
            .expect("a name in the same shard");
        let taken = |core: &mut Core, s: &stream::Name| {
            core.handle_announcement(announcement_by(1, s.as_str(), 0, None), t)
        };
        assert_eq!(taken(&mut core, &mate), Err(crate::Rejected::NotCarried));
        assert_eq!(taken(&mut core, &watched), Ok(()));
        // Down to one peer: small again, every shard.
        core.peers.remove(&peer(2));
        pass(&mut core, t + crate::HOUSEKEEPING, crate::HOUSEKEEPING);
        assert_eq!(changes(&mut core).len(), MediaShard::all().count() - 1);
    }
}
