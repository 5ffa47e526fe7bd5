//! Pulling segments, init segments and manifests from peers: nearest holder first, every
//! byte checked against its signed announcement, concurrent requests for the same thing
//! sharing one pull.

use crate::data::client::{DataError, Target};
use crate::metrics::add;
use crate::node::Shared;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared as SharedFuture};
use shoal_core::Rejected;
use shoal_protocol::PeerId;
use shoal_protocol::content::ContentId;
use shoal_protocol::data::Request;
use shoal_protocol::segment::{self, Announcement};
use shoal_protocol::stream;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tracing::{debug, info, warn};

/// Holders tried per round of a pull: enough to route around a bad or dead peer or two,
/// few enough that a round stays short.
const MAX_ATTEMPTS: usize = 4;
/// A pull whose holders are all at their fan-out limit waits this long and asks again:
/// by then the peers they fed hold the segment (and say so in their status).
const BUSY_PAUSE: Duration = Duration::from_millis(150);
/// How long a pull keeps going round busy holders before giving up: several segment
/// transfers deep into the fan-out tree, well under a player's patience.
const BUSY_DEADLINE: Duration = Duration::from_secs(8);

/// Why a pull failed.
#[derive(Debug, Error, Clone)]
pub enum FetchError {
    /// No announcement for it: unknown or out of the window.
    #[error("not announced")]
    NotAnnounced,
    /// No peer is known to hold it.
    #[error("no known holder")]
    NoHolder,
    /// Every holder tried failed; the last error.
    #[error("all holders failed, last: {0}")]
    AllFailed(DataError),
    /// Every holder tried is at its fan-out limit (and stayed so until the deadline).
    #[error("all holders busy")]
    AllBusy,
    /// The pull task died.
    #[error("internal: {0}")]
    Internal(String),
}

/// What is being pulled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Segment(segment::Id),
    Init(ContentId),
    Manifest(stream::Name),
}

/// A pull in flight, shareable by everyone waiting for it.
pub type Pull = SharedFuture<BoxFuture<'static, Result<Bytes, FetchError>>>;

/// Pulls in flight, shared by everyone who wants the same thing.
#[derive(Default)]
pub struct Inflight {
    pulls: Arc<Mutex<HashMap<Key, Pull>>>,
}

impl Inflight {
    /// Joins the pull for `key`, or starts it with `make` in its own task (so a viewer
    /// hanging up does not cancel a pull others wait on).
    fn join(
        &self,
        key: Key,
        make: impl FnOnce() -> BoxFuture<'static, Result<Bytes, FetchError>>,
    ) -> Pull {
        let mut pulls = self.pulls.lock().expect("poisoned");
        if let Some(pull) = pulls.get(&key) {
            return pull.clone();
        }
        let work = make();
        let map = self.pulls.clone();
        let done_key = key.clone();
        let task = tokio::spawn(async move {
            let result = work.await;
            map.lock().expect("poisoned").remove(&done_key);
            result
        });
        let pull = async move {
            task.await
                .unwrap_or_else(|e| Err(FetchError::Internal(e.to_string())))
        }
        .boxed()
        .shared();
        pulls.insert(key, pull.clone());
        pull
    }

    /// The pull of segment `id` in flight, if any, to wait on.
    pub fn segment_pull(&self, id: &segment::Id) -> Option<Pull> {
        self.pulls
            .lock()
            .expect("poisoned")
            .get(&Key::Segment(id.clone()))
            .cloned()
    }

    /// Number of pulls in flight.
    pub fn len(&self) -> usize {
        self.pulls.lock().expect("poisoned").len()
    }

    /// True if nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Shared {
    /// A segment's bytes: from the store, or pulled from the nearest holder.
    pub async fn segment(self: &Arc<Self>, id: &segment::Id) -> Result<Bytes, FetchError> {
        if let Some(bytes) = self.store.lock().expect("poisoned").segment(id) {
            return Ok(bytes);
        }
        let announcement = self
            .core
            .lock()
            .expect("poisoned")
            .announcement(id)
            .map(|v| v.value.clone())
            .ok_or(FetchError::NotAnnounced)?;
        let me = self.clone();
        let result = self
            .inflight
            .join(Key::Segment(id.clone()), || {
                async move { me.pull_segment(announcement).await }.boxed()
            })
            .await;
        self.run_actions();
        result
    }

    /// An init segment's bytes, for a segment of `stream` that references it.
    pub async fn init(
        self: &Arc<Self>,
        stream: &stream::Name,
        hash: ContentId,
    ) -> Result<Bytes, FetchError> {
        if let Some(bytes) = self.store.lock().expect("poisoned").init(&hash) {
            return Ok(bytes);
        }
        let size = {
            let core = self.core.lock().expect("poisoned");
            core.stream(stream)
                .and_then(|s| {
                    s.entries
                        .values()
                        .filter_map(|e| e.announcement.value.init)
                        .find(|i| i.hash == hash)
                })
                .map(|i| i.size)
                .ok_or(FetchError::NotAnnounced)?
        };
        let me = self.clone();
        let stream = stream.clone();
        self.inflight
            .join(Key::Init(hash), || {
                async move { me.pull_init(stream, hash, size).await }.boxed()
            })
            .await
    }

    /// Brings this node's announcements for `stream` up to date from a holder's
    /// manifest (`from` first, then the best holders).
    pub async fn sync(
        self: &Arc<Self>,
        stream: &stream::Name,
        from: Option<PeerId>,
    ) -> Result<(), FetchError> {
        let me = self.clone();
        let name = stream.clone();
        self.inflight
            .join(Key::Manifest(stream.clone()), || {
                async move { me.pull_manifest(name, from).await.map(|_| Bytes::new()) }.boxed()
            })
            .await
            .map(|_| ())
    }

    /// Opens the data-plane connection to `peer` and records its RTT.
    pub async fn probe(&self, peer: PeerId) -> Result<(), FetchError> {
        let target = self.target(&peer).ok_or(FetchError::NoHolder)?;
        let rtt = self
            .client
            .connect(target)
            .await
            .map_err(FetchError::AllFailed)?;
        self.core
            .lock()
            .expect("poisoned")
            .handle_data_rtt(peer, rtt, Instant::now());
        Ok(())
    }

    /// Feeds the RTTs of the open data-plane connections to the core.
    pub fn refresh_rtts(&self) {
        let rtts = self.client.rtts();
        let now = Instant::now();
        let mut core = self.core.lock().expect("poisoned");
        for (peer, rtt) in rtts {
            core.handle_data_rtt(peer, rtt, now);
        }
    }

    fn target(&self, peer: &PeerId) -> Option<Target> {
        let core = self.core.lock().expect("poisoned");
        let status = core.peers().get(peer)?.status.as_ref()?;
        Some(Target {
            peer: *peer,
            addr: status.data_addr,
            fingerprint: status.cert_fingerprint,
        })
    }

    async fn pull_segment(self: Arc<Self>, a: Announcement) -> Result<Bytes, FetchError> {
        let request = Request::Segment {
            stream: a.id.stream.clone(),
            seq: a.id.seq,
        };
        // A nearer peer pulling the same segment from afar: join its pull.
        let leader = self
            .core
            .lock()
            .expect("poisoned")
            .relay_leader(&a.id, Instant::now());
        let through_leader = match leader {
            Some((peer, wait)) => {
                tokio::time::sleep(wait).await;
                self.pull_verified(&[peer], &request, a.size, a.hash, &a.id.to_string())
                    .await
                    .ok()
            }
            None => None,
        };
        let (bytes, from) = match through_leader {
            Some(found) => found,
            None => self.pull_from_holders(&a, &request).await?,
        };
        self.store
            .lock()
            .expect("poisoned")
            .put_segment(a.id.clone(), bytes.clone());
        let kept = self
            .core
            .lock()
            .expect("poisoned")
            .handle_fetched(&a.id, from, Instant::now());
        if !kept {
            self.store.lock().expect("poisoned").evict_segment(&a.id);
        }
        debug!(segment = %a.id, %from, size = a.size, "segment pulled");
        if let Some(init) = a.init {
            // A viewer of this segment will ask for its init next.
            let me = self.clone();
            let stream = a.id.stream.clone();
            tokio::spawn(async move { me.init(&stream, init.hash).await });
        }
        Ok(bytes)
    }

    /// Pulls a segment from its holders, nearest first; while all are busy, tries again
    /// until [`BUSY_DEADLINE`].
    async fn pull_from_holders(
        &self,
        a: &Announcement,
        request: &Request,
    ) -> Result<(Bytes, PeerId), FetchError> {
        let deadline = Instant::now() + BUSY_DEADLINE;
        loop {
            let holders = self
                .core
                .lock()
                .expect("poisoned")
                .holders(&a.id, Instant::now());
            if holders.is_empty() {
                return Err(FetchError::NoHolder);
            }
            match self
                .pull_verified(&holders, request, a.size, a.hash, &a.id.to_string())
                .await
            {
                Err(FetchError::AllBusy) if Instant::now() < deadline => {
                    tokio::time::sleep(BUSY_PAUSE).await;
                }
                result => return result,
            }
        }
    }

    async fn pull_init(
        self: Arc<Self>,
        stream: stream::Name,
        hash: ContentId,
        size: u64,
    ) -> Result<Bytes, FetchError> {
        let holders = self
            .core
            .lock()
            .expect("poisoned")
            .stream_holders(&stream, Instant::now());
        if holders.is_empty() {
            return Err(FetchError::NoHolder);
        }
        let request = Request::Init {
            stream: stream.clone(),
            hash,
        };
        let (bytes, _) = self
            .pull_verified(&holders, &request, size, hash, &format!("{stream} init"))
            .await?;
        self.store
            .lock()
            .expect("poisoned")
            .put_init(hash, bytes.clone());
        Ok(bytes)
    }

    /// Tries `holders` in order until one returns bytes matching `hash` and `size`.
    async fn pull_verified(
        &self,
        holders: &[PeerId],
        request: &Request,
        size: u64,
        hash: ContentId,
        what: &str,
    ) -> Result<(Bytes, PeerId), FetchError> {
        let mut last = FetchError::NoHolder;
        let mut busy = false;
        let mut queue: VecDeque<PeerId> = holders.iter().take(MAX_ATTEMPTS).copied().collect();
        let mut tried: Vec<PeerId> = Vec::new();
        while let Some(peer) = queue.pop_front() {
            if tried.contains(&peer) || tried.len() >= 2 * MAX_ATTEMPTS {
                continue;
            }
            tried.push(peer);
            let Some(target) = self.target(&peer) else {
                continue;
            };
            match self.client.fetch_bytes(target, request, size).await {
                Ok((bytes, got)) if bytes.len() as u64 == size && got == hash => {
                    add(&self.metrics.fetch_ok, 1);
                    add(&self.metrics.data_bytes_in, size);
                    if let Some(rtt) = self.client.rtt(&peer) {
                        self.core.lock().expect("poisoned").handle_data_rtt(
                            peer,
                            rtt,
                            Instant::now(),
                        );
                    }
                    return Ok((bytes, peer));
                }
                Ok(_) => {
                    add(&self.metrics.fetch_bad_bytes, 1);
                    warn!(%what, %peer, "bytes do not match the signed announcement; peer penalised");
                    self.core
                        .lock()
                        .expect("poisoned")
                        .handle_bad_bytes(peer, Instant::now());
                    last = FetchError::AllFailed(DataError::Protocol("bad bytes".into()));
                }
                Err(DataError::Busy(fed)) => {
                    add(&self.metrics.fetch_busy, 1);
                    busy = true;
                    let now = Instant::now();
                    let mut core = self.core.lock().expect("poisoned");
                    core.handle_busy(peer, now);
                    // Ask the peers it fed next: they hold the segment or will serve it
                    // the moment their own pull lands.
                    for p in fed.into_iter().rev() {
                        let usable = p != self.peer_id
                            && !tried.contains(&p)
                            && core.peers().get(&p).is_some_and(|x| !x.is_penalised(now));
                        if usable {
                            queue.push_front(p);
                        }
                    }
                }
                Err(e) => {
                    add(&self.metrics.fetch_failed, 1);
                    debug!(%what, %peer, error = %e, "pull failed, trying next holder");
                    last = FetchError::AllFailed(e);
                }
            }
        }
        Err(if busy { FetchError::AllBusy } else { last })
    }

    async fn pull_manifest(
        self: Arc<Self>,
        stream: stream::Name,
        from: Option<PeerId>,
    ) -> Result<(), FetchError> {
        let mut candidates: Vec<PeerId> = from.into_iter().collect();
        for p in self
            .core
            .lock()
            .expect("poisoned")
            .stream_holders(&stream, Instant::now())
        {
            if !candidates.contains(&p) {
                candidates.push(p);
            }
        }
        let mut last = FetchError::NoHolder;
        let request = Request::Manifest {
            stream: stream.clone(),
        };
        for peer in candidates.iter().take(MAX_ATTEMPTS) {
            let Some(target) = self.target(peer) else {
                continue;
            };
            match self.client.fetch_manifest(target, &request).await {
                Ok((announcements, end)) => {
                    let now = Instant::now();
                    let mut added = 0;
                    let mut core = self.core.lock().expect("poisoned");
                    for signed in announcements {
                        match signed.verify() {
                            Ok(v) if v.value.id.stream == stream => {
                                match core.handle_announcement(v, now) {
                                    Ok(()) => added += 1,
                                    Err(Rejected::Duplicate) => {}
                                    Err(e) => debug!(%peer, error = %e, "manifest entry refused"),
                                }
                            }
                            Ok(_) => warn!(%peer, "manifest entry for another stream"),
                            Err(e) => warn!(%peer, error = %e, "manifest entry with bad signature"),
                        }
                    }
                    if let Some(Ok(end)) = end.map(|e| e.verify())
                        && end.value.stream == stream
                    {
                        core.handle_end(end);
                    }
                    drop(core);
                    info!(%stream, %peer, added, "synced manifest");
                    self.run_actions();
                    return Ok(());
                }
                Err(e) => {
                    debug!(%stream, %peer, error = %e, "manifest pull failed");
                    last = FetchError::AllFailed(e);
                }
            }
        }
        Err(last)
    }
}
