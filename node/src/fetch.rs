//! Pulling segments, init segments and manifests from peers, as the core's pull state
//! machines direct (`shoal_core::pull`: whom to ask, when, and what an answer changes):
//! every byte checked against its signed announcement, concurrent requests for the same
//! thing sharing one pull.

use crate::data::client::{DataError, Manifest, Target};
use crate::metrics::add;
use crate::node::Shared;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared as SharedFuture};
use shoal_core::pull::{PullFailed, PullId, PullResult, PullStep, Pulled};
use shoal_core::{Core, Rejected};
use shoal_protocol::PeerId;
use shoal_protocol::content::ContentId;
use shoal_protocol::data::Request;
use shoal_protocol::segment::{self, Announcement};
use shoal_protocol::stream;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use thiserror::Error;
use tracing::{debug, info, warn};

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
    /// Too many pulls in flight on this node.
    #[error("too many pulls in flight")]
    Overloaded,
    /// The pull task died.
    #[error("internal: {0}")]
    Internal(String),
}

impl FetchError {
    /// The core's verdict on a pull, with the last error a peer gave.
    fn from_pull(failed: PullFailed, last: Option<DataError>) -> Self {
        match failed {
            PullFailed::NotAnnounced => Self::NotAnnounced,
            PullFailed::NoHolder => Self::NoHolder,
            PullFailed::AllBusy => Self::AllBusy,
            PullFailed::Overloaded => Self::Overloaded,
            PullFailed::AllFailed => Self::AllFailed(
                last.unwrap_or_else(|| DataError::Protocol("bytes did not match".into())),
            ),
            PullFailed::Unknown => Self::Internal("the core forgot the pull".into()),
        }
    }
}

/// What a pull must bring back.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Bytes of this size and hash.
    Bytes(u64, ContentId),
    /// A manifest (its entries are verified one by one).
    Manifest,
}

/// What a peer sent.
enum Fetched {
    Bytes(Bytes),
    Manifest(Manifest),
}

/// Tells the core a pull is over if its driver is dropped before the end.
struct CancelOnDrop<'a> {
    core: &'a Mutex<Core>,
    id: Option<PullId>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take()
            && let Ok(mut core) = self.core.lock()
        {
            core.cancel_pull(id);
        }
    }
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
            .core()
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
            let core = self.core();
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
        self.core().handle_data_rtt(peer, rtt, Instant::now());
        Ok(())
    }

    /// Feeds the RTTs of the open data-plane connections to the core.
    pub fn refresh_rtts(&self) {
        let rtts = self.client.rtts();
        let now = Instant::now();
        let mut core = self.core();
        for (peer, rtt) in rtts {
            core.handle_data_rtt(peer, rtt, now);
        }
    }

    fn target(&self, peer: &PeerId) -> Option<Target> {
        let core = self.core();
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
        let expect = Expect::Bytes(a.size, a.hash);
        let what = Pulled::Segment(a.id.clone());
        let (fetched, from) = self.drive_pull(what, &request, expect).await?;
        let Fetched::Bytes(bytes) = fetched else {
            return Err(FetchError::Internal("a manifest for a segment".into()));
        };
        self.store
            .lock()
            .expect("poisoned")
            .put_segment(a.id.clone(), bytes.clone());
        let kept = self.core().handle_fetched(&a.id, from, Instant::now());
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

    async fn pull_init(
        self: Arc<Self>,
        stream: stream::Name,
        hash: ContentId,
        size: u64,
    ) -> Result<Bytes, FetchError> {
        let request = Request::Init {
            stream: stream.clone(),
            hash,
        };
        let what = Pulled::Init { stream, hash };
        let (fetched, _) = self
            .drive_pull(what, &request, Expect::Bytes(size, hash))
            .await?;
        let Fetched::Bytes(bytes) = fetched else {
            return Err(FetchError::Internal(
                "a manifest for an init segment".into(),
            ));
        };
        self.store
            .lock()
            .expect("poisoned")
            .put_init(hash, bytes.clone());
        Ok(bytes)
    }

    async fn pull_manifest(
        self: Arc<Self>,
        stream: stream::Name,
        from: Option<PeerId>,
    ) -> Result<(), FetchError> {
        let request = Request::Manifest {
            stream: stream.clone(),
        };
        let what = Pulled::Manifest {
            stream: stream.clone(),
            from,
        };
        let (fetched, peer) = self.drive_pull(what, &request, Expect::Manifest).await?;
        let Fetched::Manifest((announcements, end)) = fetched else {
            return Err(FetchError::Internal("bytes for a manifest".into()));
        };
        let now = Instant::now();
        let mut added = 0;
        let mut core = self.core();
        for signed in announcements {
            match signed.verify() {
                Ok(v) if v.value.id.stream == stream => match core.handle_announcement(v, now) {
                    Ok(()) => added += 1,
                    Err(Rejected::Duplicate) => {}
                    Err(e) => debug!(%peer, error = %e, "manifest entry refused"),
                },
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
        Ok(())
    }

    /// Carries out a pull as the core directs it (see `shoal_core::pull`): asks the peers
    /// it names, when it says, and reports every answer.
    async fn drive_pull(
        &self,
        what: Pulled,
        request: &Request,
        expect: Expect,
    ) -> Result<(Fetched, PeerId), FetchError> {
        let (id, mut step) = self.core().start_pull(what, Instant::now());
        // If this future is dropped mid-pull, the core forgets the pull.
        let mut guard = CancelOnDrop {
            core: &self.core,
            id: Some(id),
        };
        let mut fetched = None;
        let mut last_error = None;
        loop {
            step = match step {
                PullStep::Request { peer, at } => {
                    tokio::time::sleep_until(at.into()).await;
                    let result = match self.target(&peer) {
                        Some(target) => {
                            let (result, got) = self.ask(target, request, expect).await;
                            if let Some(got) = got {
                                fetched = Some(got);
                            }
                            if let Err(e) = &result {
                                last_error = Some(e.clone());
                            }
                            result.unwrap_or(PullResult::Failed)
                        }
                        None => PullResult::Failed,
                    };
                    self.core()
                        .handle_pull_result(id, peer, result, Instant::now())
                }
                PullStep::Wait { at } => {
                    tokio::time::sleep_until(at.into()).await;
                    self.core().resume_pull(id, Instant::now())
                }
                PullStep::Done(result) => {
                    guard.id = None;
                    return match result {
                        Ok(peer) => fetched
                            .map(|f| (f, peer))
                            .ok_or_else(|| FetchError::Internal("done without bytes".into())),
                        Err(failed) => Err(FetchError::from_pull(failed, last_error)),
                    };
                }
            };
        }
    }

    /// Sends `request` to one peer: its answer for the core (an error if the peer
    /// failed), and what it sent if it is good.
    async fn ask(
        &self,
        target: Target,
        request: &Request,
        expect: Expect,
    ) -> (Result<PullResult, DataError>, Option<Fetched>) {
        let peer = target.peer;
        let answer = match expect {
            Expect::Bytes(size, hash) => match self.client.fetch_bytes(target, request, size).await
            {
                Ok((bytes, got)) if bytes.len() as u64 == size && got == hash => {
                    add(&self.metrics.data_bytes_in, size);
                    Ok(Fetched::Bytes(bytes))
                }
                Ok(_) => {
                    add(&self.metrics.fetch_bad_bytes, 1);
                    warn!(?request, %peer, "bytes do not match the signed announcement; peer penalised");
                    return (Ok(PullResult::BadBytes), None);
                }
                Err(e) => Err(e),
            },
            Expect::Manifest => self
                .client
                .fetch_manifest(target, request)
                .await
                .map(Fetched::Manifest),
        };
        match answer {
            Ok(fetched) => {
                add(&self.metrics.fetch_ok, 1);
                if let Some(rtt) = self.client.rtt(&peer) {
                    self.core().handle_data_rtt(peer, rtt, Instant::now());
                }
                (Ok(PullResult::Bytes), Some(fetched))
            }
            Err(DataError::Busy(fed)) => {
                add(&self.metrics.fetch_busy, 1);
                (Ok(PullResult::Busy { fed }), None)
            }
            Err(e) => {
                add(&self.metrics.fetch_failed, 1);
                debug!(?request, %peer, error = %e, "pull failed, trying the next holder");
                (Err(e), None)
            }
        }
    }
}
