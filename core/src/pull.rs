//! Pulls as state machines: which peer to ask for a segment, an init segment or a
//! manifest, in what order, and what to do with each answer.
//!
//! The driver starts a pull with [`Core::start_pull`] and carries out the [`PullStep`]s it
//! is given: send the request to a peer (not before a given time), wait, or stop. It
//! reports every answer with [`Core::handle_pull_result`] and the end of a wait with
//! [`Core::resume_pull`]. The core decides everything else:
//!
//! - a segment far from every holder is first asked of the nearby relay leader (see
//!   [`Core::relay_leader`]), after letting it start;
//! - holders are tried nearest first, at most [`MAX_ATTEMPTS`] per round;
//! - a holder at its fan-out limit answers busy and names the peers it fed: they are
//!   asked next (they hold the segment, or will the moment their own pull lands);
//! - while every holder is busy, a segment pull pauses [`BUSY_PAUSE`] and starts a new
//!   round (statuses will have named new holders by then), until [`BUSY_DEADLINE`];
//! - a holder that sends bytes not matching the signed announcement is penalised and
//!   avoided.
//!
//! The driver checks the bytes (size and blake3 against the announcement) and records
//! the data plane's RTT; the core never sees bytes.

use crate::{Core, MAX_PULLS};
use shoal_protocol::PeerId;
use shoal_protocol::content::ContentId;
use shoal_protocol::segment;
use shoal_protocol::stream;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Holders tried per round of a pull: enough to route around a bad or dead peer or two,
/// few enough that a round stays short.
pub const MAX_ATTEMPTS: usize = 4;
/// A pull whose holders are all at their fan-out limit waits this long and asks again:
/// by then the peers they fed hold the segment (and say so in their status).
pub const BUSY_PAUSE: Duration = Duration::from_millis(150);
/// How long a pull keeps going round busy holders before giving up: several segment
/// transfers deep into the fan-out tree, well under a player's patience.
pub const BUSY_DEADLINE: Duration = Duration::from_secs(8);

/// Names one pull of this core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PullId(u64);

/// What a pull fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pulled {
    /// A media segment.
    Segment(segment::Id),
    /// An init segment of a stream, by content hash.
    Init {
        /// The stream that references it.
        stream: stream::Name,
        /// Its hash.
        hash: ContentId,
    },
    /// A stream's manifest (its window of signed announcements).
    Manifest {
        /// The stream.
        stream: stream::Name,
        /// The peer to ask first (the one that showed this node is behind).
        from: Option<PeerId>,
    },
}

/// What the driver does next for a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullStep {
    /// Send the pull's request to `peer`, not before `at`, and report its answer with
    /// [`Core::handle_pull_result`].
    Request {
        /// The peer to ask.
        peer: PeerId,
        /// When to ask (later than now while a nearer peer's pull is given a head start).
        at: Instant,
    },
    /// Ask nobody for now: call [`Core::resume_pull`] at `at`.
    Wait {
        /// When to resume.
        at: Instant,
    },
    /// The pull is over: the bytes came from this peer, or it failed.
    Done(Result<PeerId, PullFailed>),
}

/// A peer's answer to a pull's request, as the driver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullResult {
    /// The bytes, checked against the announcement.
    Bytes,
    /// At its fan-out limit; it fed these peers.
    Busy {
        /// The peers it sent the segment to.
        fed: Vec<PeerId>,
    },
    /// Bytes that do not match the signed announcement.
    BadBytes,
    /// No answer, an error, or a closed connection.
    Failed,
}

/// Why a pull ended without bytes.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum PullFailed {
    /// No announcement for the segment: unknown or out of the window.
    #[error("not announced")]
    NotAnnounced,
    /// No peer is known to hold it.
    #[error("no known holder")]
    NoHolder,
    /// Every holder asked failed or sent bad bytes.
    #[error("every holder asked failed")]
    AllFailed,
    /// Every holder asked is at its fan-out limit, until the deadline.
    #[error("all holders busy")]
    AllBusy,
    /// Too many pulls in flight on this node.
    #[error("too many pulls in flight")]
    Overloaded,
    /// The pull is not (or no longer) known: cancelled or finished.
    #[error("no such pull")]
    Unknown,
}

/// The pulls in flight.
#[derive(Debug, Default)]
pub(crate) struct Pulls {
    next: u64,
    active: HashMap<PullId, Pull>,
}

#[derive(Debug)]
struct Pull {
    what: Pulled,
    /// Set while the relay leader is asked, before the first round.
    leader: Option<PeerId>,
    /// Until when busy holders are asked round after round.
    deadline: Instant,
    queue: VecDeque<PeerId>,
    tried: Vec<PeerId>,
    busy: bool,
    failed: bool,
}

impl Core {
    /// Starts pulling `what`; carry out the step returned.
    pub fn start_pull(&mut self, what: Pulled, now: Instant) -> (PullId, PullStep) {
        let id = PullId(self.pulls.next);
        self.pulls.next += 1;
        if self.pulls.active.len() >= MAX_PULLS {
            return (id, PullStep::Done(Err(PullFailed::Overloaded)));
        }
        if let Pulled::Segment(seg) = &what
            && self.announcement(seg).is_none()
        {
            return (id, PullStep::Done(Err(PullFailed::NotAnnounced)));
        }
        let leader = match &what {
            Pulled::Segment(seg) => self.relay_leader(seg, now),
            _ => None,
        };
        let pull = Pull {
            what,
            leader: leader.map(|(peer, _)| peer),
            deadline: now + BUSY_DEADLINE,
            queue: VecDeque::new(),
            tried: Vec::new(),
            busy: false,
            failed: false,
        };
        self.pulls.active.insert(id, pull);
        let step = match leader {
            Some((peer, wait)) => PullStep::Request {
                peer,
                at: now + wait,
            },
            None => self.start_round(id, now),
        };
        (id, step)
    }

    /// `peer` answered pull `id` with `result`; carry out the step returned.
    pub fn handle_pull_result(
        &mut self,
        id: PullId,
        peer: PeerId,
        result: PullResult,
        now: Instant,
    ) -> PullStep {
        let Some(pull) = self.pulls.active.get_mut(&id) else {
            return PullStep::Done(Err(PullFailed::Unknown));
        };
        if result == PullResult::Bytes {
            self.pulls.active.remove(&id);
            return PullStep::Done(Ok(peer));
        }
        if pull.leader.take().is_some() {
            // The leader did not deliver: the holders, as if there were no leader (but
            // the peers a busy leader fed come first, and the leader is not asked again).
            self.fill_round(id, now);
        }
        let Some(pull) = self.pulls.active.get_mut(&id) else {
            return PullStep::Done(Err(PullFailed::Unknown));
        };
        if !pull.tried.contains(&peer) {
            pull.tried.push(peer);
        }
        match result {
            PullResult::Bytes => unreachable!("handled above"),
            PullResult::BadBytes => {
                pull.failed = true;
                self.handle_bad_bytes(peer, now);
            }
            PullResult::Failed => pull.failed = true,
            PullResult::Busy { fed } => {
                pull.busy = true;
                // Ask the peers it fed next: they hold the segment, or will the moment
                // their own pull lands.
                for p in fed.into_iter().rev() {
                    let usable = p != self.me
                        && !pull.tried.contains(&p)
                        && self.peers.get(&p).is_some_and(|x| !x.is_penalised(now));
                    if usable {
                        pull.queue.push_front(p);
                    }
                }
                self.handle_busy(peer, now);
            }
        }
        self.next_request(id, now)
    }

    /// A pull's wait is over; carry out the step returned.
    pub fn resume_pull(&mut self, id: PullId, now: Instant) -> PullStep {
        if !self.pulls.active.contains_key(&id) {
            return PullStep::Done(Err(PullFailed::Unknown));
        }
        self.start_round(id, now)
    }

    /// The driver gave up on pull `id` (e.g. its task ended): forget it.
    pub fn cancel_pull(&mut self, id: PullId) {
        self.pulls.active.remove(&id);
    }

    /// Pulls in flight.
    pub fn pulls_in_flight(&self) -> usize {
        self.pulls.active.len()
    }

    /// A new round: the current holders, best first.
    fn start_round(&mut self, id: PullId, now: Instant) -> PullStep {
        self.fill_round(id, now);
        self.next_request(id, now)
    }

    /// Queues the current holders of the pull's object, best first, for a new round.
    fn fill_round(&mut self, id: PullId, now: Instant) {
        let Some(what) = self.pulls.active.get(&id).map(|p| p.what.clone()) else {
            return;
        };
        let mut holders = match &what {
            Pulled::Segment(seg) => self.holders(seg, now),
            Pulled::Init { stream, .. } => self.stream_holders(stream, now),
            Pulled::Manifest { stream, from } => {
                let mut candidates: Vec<PeerId> = from.iter().copied().collect();
                for p in self.stream_holders(stream, now) {
                    if !candidates.contains(&p) {
                        candidates.push(p);
                    }
                }
                candidates
            }
        };
        holders.retain(|p| self.reachable(p));
        holders.truncate(MAX_ATTEMPTS);
        if let Some(pull) = self.pulls.active.get_mut(&id) {
            pull.queue = holders.into();
            pull.tried.clear();
            pull.busy = false;
        }
    }

    /// The next peer of the round, or the end of it.
    fn next_request(&mut self, id: PullId, now: Instant) -> PullStep {
        let Some(pull) = self.pulls.active.get_mut(&id) else {
            return PullStep::Done(Err(PullFailed::Unknown));
        };
        while let Some(peer) = pull.queue.pop_front() {
            if pull.tried.contains(&peer) || pull.tried.len() >= 2 * MAX_ATTEMPTS {
                continue;
            }
            if self.peers.get(&peer).is_none_or(|p| p.status.is_none()) {
                continue;
            }
            pull.tried.push(peer);
            return PullStep::Request { peer, at: now };
        }
        // Only segments are worth waiting for: busy holders are feeding the tree.
        let waits = matches!(pull.what, Pulled::Segment(_));
        if pull.busy && waits && now < pull.deadline {
            return PullStep::Wait {
                at: now + BUSY_PAUSE,
            };
        }
        let failure = if pull.busy {
            PullFailed::AllBusy
        } else if pull.failed {
            PullFailed::AllFailed
        } else {
            PullFailed::NoHolder
        };
        self.pulls.active.remove(&id);
        PullStep::Done(Err(failure))
    }

    /// True if the driver can reach `peer`'s data plane: its status names the address.
    fn reachable(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.status.is_some())
    }
}

#[cfg(test)]
mod tests;
