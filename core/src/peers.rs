//! The peer table: who is in the mesh, how to reach them, how near they are, and who
//! misbehaved.

use shoal_protocol::PeerId;
use shoal_protocol::segment::{self, Seq};
use shoal_protocol::status::Status;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// RTT assumed for a peer that has not been measured yet: far enough that any measured
/// peer is preferred, near enough that it is still used when it is the only holder.
const UNKNOWN_RTT: Duration = Duration::from_millis(500);

/// What we know of one peer.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its latest verified status, if any arrived.
    pub status: Option<Status>,
    /// Latest round-trip time measured by libp2p ping (the control plane).
    pub rtt: Option<Duration>,
    /// Latest round-trip time of the QUIC data-plane connection, which carries the media:
    /// when known, it ranks the peer rather than the ping.
    pub data_rtt: Option<Duration>,
    /// When we last heard from it (status, or a successful exchange).
    pub last_seen: Instant,
    /// Avoid it for fetches until then (it sent bad bytes).
    pub penalised_until: Option<Instant>,
    /// How many times it sent bytes that did not match their announcement.
    pub bad_bytes: u32,
    /// A control-plane connection to it is open.
    pub connected: bool,
    /// It answered "busy" (fan-out limit reached): rank it last until then.
    pub busy_until: Option<Instant>,
}

impl Peer {
    fn new(now: Instant) -> Self {
        Self {
            status: None,
            rtt: None,
            data_rtt: None,
            last_seen: now,
            penalised_until: None,
            bad_bytes: 0,
            connected: false,
            busy_until: None,
        }
    }

    /// True if its status says it holds `seq` of `stream`.
    pub fn holds(&self, id: &segment::Id) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.streams
                .iter()
                .any(|h| h.name == id.stream && (h.first_seq..=h.last_seq).contains(&id.seq))
        })
    }

    /// The newest segment of `stream` it claims to hold.
    pub fn newest(&self, stream: &shoal_protocol::stream::Name) -> Option<Seq> {
        self.status
            .as_ref()?
            .streams
            .iter()
            .find(|h| &h.name == stream)
            .map(|h| h.last_seq)
    }

    /// Whether it is being avoided at `now`.
    pub fn is_penalised(&self, now: Instant) -> bool {
        self.penalised_until.is_some_and(|t| now < t)
    }

    /// Whether it recently said it is at its fan-out limit.
    pub fn is_busy(&self, now: Instant) -> bool {
        self.busy_until.is_some_and(|t| now < t)
    }

    /// RTT used for ranking.
    pub fn rank_rtt(&self) -> Duration {
        self.data_rtt.or(self.rtt).unwrap_or(UNKNOWN_RTT)
    }
}

/// All peers, keyed by id.
#[derive(Debug, Default)]
pub struct PeerTable {
    peers: HashMap<PeerId, Peer>,
}

/// Outcome of offering a status to the table.
#[derive(Debug, PartialEq, Eq)]
pub enum StatusUpdate {
    /// First status from this peer.
    New,
    /// A newer status replaced the old one.
    Updated,
    /// Older than or equal to what we have: ignored.
    Stale,
}

impl PeerTable {
    /// Records a verified status from `peer`.
    pub fn on_status(&mut self, peer: PeerId, status: Status, now: Instant) -> StatusUpdate {
        let entry = self.peers.entry(peer).or_insert_with(|| Peer::new(now));
        let outcome = match &entry.status {
            None => StatusUpdate::New,
            Some(old) if status.version > old.version => StatusUpdate::Updated,
            Some(_) => return StatusUpdate::Stale,
        };
        entry.status = Some(status);
        entry.last_seen = now;
        outcome
    }

    /// Records a measured RTT.
    pub fn on_rtt(&mut self, peer: PeerId, rtt: Duration, now: Instant) {
        let entry = self.peers.entry(peer).or_insert_with(|| Peer::new(now));
        entry.rtt = Some(rtt);
    }

    /// Records the RTT of the data-plane connection to `peer`.
    pub fn on_data_rtt(&mut self, peer: PeerId, rtt: Duration, now: Instant) {
        let entry = self.peers.entry(peer).or_insert_with(|| Peer::new(now));
        entry.data_rtt = Some(rtt);
    }

    /// Records a control-plane connection opening or closing.
    pub fn on_connection(&mut self, peer: PeerId, connected: bool, now: Instant) {
        let entry = self.peers.entry(peer).or_insert_with(|| Peer::new(now));
        entry.connected = connected;
        if connected {
            entry.last_seen = now;
        }
    }

    /// Penalises a peer that sent bytes not matching their announcement. Repeat offenders
    /// are avoided for longer (doubling, capped at 16x `base`).
    pub fn on_bad_bytes(&mut self, peer: PeerId, base: Duration, now: Instant) {
        let entry = self.peers.entry(peer).or_insert_with(|| Peer::new(now));
        entry.bad_bytes += 1;
        let factor = 1u32 << (entry.bad_bytes - 1).min(4);
        entry.penalised_until = Some(now + base * factor);
    }

    /// Records that `peer` refused a pull because it serves enough peers already.
    pub fn on_busy(&mut self, peer: PeerId, backoff: Duration, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.busy_until = Some(now + backoff);
        }
    }

    /// Removes peers with no status for `timeout` (and not connected) and returns them.
    pub fn expire(&mut self, timeout: Duration, now: Instant) -> Vec<PeerId> {
        let dead: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_seen) > timeout)
            .filter(|(_, p)| p.status.is_some() || !p.connected)
            .map(|(id, _)| *id)
            .collect();
        for id in &dead {
            self.peers.remove(id);
        }
        dead
    }

    /// When the first peer [`PeerTable::expire`] would remove times out (it goes once
    /// the time is past).
    pub fn next_expiry(&self, timeout: Duration) -> Option<Instant> {
        self.peers
            .values()
            .filter(|p| p.status.is_some() || !p.connected)
            .map(|p| p.last_seen + timeout)
            .min()
    }

    /// Removes `peer` at once (cut from the mesh); true if it was known.
    pub fn remove(&mut self, peer: &PeerId) -> bool {
        self.peers.remove(peer).is_some()
    }

    /// A peer by id.
    pub fn get(&self, peer: &PeerId) -> Option<&Peer> {
        self.peers.get(peer)
    }

    /// Peers that have sent a status.
    pub fn known(&self) -> impl Iterator<Item = (&PeerId, &Peer)> {
        self.peers.iter().filter(|(_, p)| p.status.is_some())
    }

    /// Number of peers with a status.
    pub fn len(&self) -> usize {
        self.known().count()
    }

    /// True if no peer has sent a status.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{peer, status_holding};

    #[test]
    fn newer_status_wins_and_stale_is_ignored() {
        let mut t = PeerTable::default();
        let now = crate::testing::t0();
        let p = peer(1);
        assert_eq!(
            t.on_status(p, status_holding(2, "a", 0, 5), now),
            StatusUpdate::New
        );
        assert_eq!(
            t.on_status(p, status_holding(1, "a", 0, 9), now),
            StatusUpdate::Stale
        );
        assert_eq!(t.get(&p).unwrap().newest(&"a".parse_name()), Some(5));
        assert_eq!(
            t.on_status(p, status_holding(3, "a", 0, 9), now),
            StatusUpdate::Updated
        );
        assert_eq!(t.get(&p).unwrap().newest(&"a".parse_name()), Some(9));
    }

    #[test]
    fn silent_peers_expire() {
        let mut t = PeerTable::default();
        let t0 = crate::testing::t0();
        t.on_status(peer(1), status_holding(1, "a", 0, 1), t0);
        t.on_status(
            peer(2),
            status_holding(1, "a", 0, 1),
            t0 + Duration::from_secs(4),
        );
        let dead = t.expire(Duration::from_secs(5), t0 + Duration::from_secs(6));
        assert_eq!(dead, vec![peer(1)]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn replayed_statuses_do_not_keep_a_silent_peer_alive() {
        // A peer's signed statuses can be recorded and sent again by anyone: a replay
        // (same or older version) changes nothing, not even when it was last heard of.
        let mut t = PeerTable::default();
        let t0 = crate::testing::t0();
        t.on_status(peer(1), status_holding(2, "a", 0, 5), t0);
        for (i, version) in [2, 1, 2].into_iter().enumerate() {
            let at = t0 + Duration::from_secs(2 + i as u64);
            assert_eq!(
                t.on_status(peer(1), status_holding(version, "a", 0, 1), at),
                StatusUpdate::Stale
            );
        }
        assert_eq!(t.get(&peer(1)).unwrap().newest(&"a".parse_name()), Some(5));
        let dead = t.expire(Duration::from_secs(5), t0 + Duration::from_secs(6));
        assert_eq!(dead, vec![peer(1)]);
    }

    #[test]
    fn penalty_grows_for_repeat_offenders() {
        let mut t = PeerTable::default();
        let t0 = crate::testing::t0();
        let base = Duration::from_secs(10);
        t.on_bad_bytes(peer(1), base, t0);
        assert!(
            t.get(&peer(1))
                .unwrap()
                .is_penalised(t0 + Duration::from_secs(9))
        );
        assert!(
            !t.get(&peer(1))
                .unwrap()
                .is_penalised(t0 + Duration::from_secs(11))
        );
        t.on_bad_bytes(peer(1), base, t0);
        assert!(
            t.get(&peer(1))
                .unwrap()
                .is_penalised(t0 + Duration::from_secs(19))
        );
    }

    trait ParseName {
        fn parse_name(&self) -> shoal_protocol::stream::Name;
    }
    impl ParseName for &str {
        fn parse_name(&self) -> shoal_protocol::stream::Name {
            shoal_protocol::stream::Name::new(*self).unwrap()
        }
    }
}
