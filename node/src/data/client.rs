//! The data-plane client: one QUIC connection per peer, one stream per request.

use bytes::{Bytes, BytesMut};
use shoal_protocol::PeerId;
use shoal_protocol::codec;
use shoal_protocol::content::ContentId;
use shoal_protocol::data::{self, Request, Response};
use shoal_protocol::segment::{Announcement, StreamEnd};
use shoal_protocol::signed::Signed;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use thiserror::Error;

/// How long one request may take, connection set-up included. A 4 MB segment takes
/// well under a second on any link fit to relay it; 10 s means the peer is stuck.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes hashed at a time while a body arrives: 64 of blake3's 1 KiB chunks, enough for
/// its widest SIMD batch.
const HASH_BATCH: usize = 64 * 1024;

/// Why a data-plane request failed.
#[derive(Debug, Error, Clone)]
pub enum DataError {
    /// Could not set up a connection.
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, String),
    /// The connection or stream failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The peer answered something that breaks the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer sent more bytes than the request allows.
    #[error("response of {0} bytes exceeds the limit of {1}")]
    TooLarge(u64, u64),
    /// The peer does not have it.
    #[error("not found at peer")]
    NotFound,
    /// The peer is at its fan-out limit; it named the peers it fed.
    #[error("peer busy")]
    Busy(Vec<PeerId>),
    /// The peer reported an error.
    #[error("peer error: {0}")]
    Remote(String),
    /// Took longer than [`REQUEST_TIMEOUT`].
    #[error("timed out")]
    Timeout,
}

/// A stream's manifest: its signed announcements, oldest first, and its end if it ended.
pub type Manifest = (Vec<Signed<Announcement>>, Option<Signed<StreamEnd>>);

/// Where and how to reach a peer's data plane (from its verified status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The peer.
    pub peer: PeerId,
    /// Its data-plane address.
    pub addr: SocketAddr,
    /// Its certificate fingerprint.
    pub fingerprint: ContentId,
}

/// A data-plane client.
pub struct Client {
    endpoint: quinn::Endpoint,
    /// The certificate presented to peers (the server's own).
    identity: std::sync::Arc<super::tls::Identity>,
    connections: Mutex<HashMap<PeerId, (Target, quinn::Connection)>>,
}

impl Client {
    /// A client sending from `endpoint` (normally the node's own data endpoint) and
    /// presenting `identity` (normally the node's own certificate).
    pub fn new(endpoint: quinn::Endpoint, identity: std::sync::Arc<super::tls::Identity>) -> Self {
        Self {
            endpoint,
            identity,
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// Fetches bytes (a segment or init) of at most `max_size` bytes, with their blake3
    /// hash, computed as the chunks arrive (overlapping hashing with the transfer).
    pub async fn fetch_bytes(
        &self,
        target: Target,
        request: &Request,
        max_size: u64,
    ) -> Result<(Bytes, ContentId), DataError> {
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            let (header, mut recv) = self.exchange(target, request).await?;
            let size = match header {
                Response::Bytes { size } if size > max_size => {
                    return Err(DataError::TooLarge(size, max_size));
                }
                Response::Bytes { size } => size,
                other => return Err(unexpected(other)),
            };
            let mut body = BytesMut::with_capacity(size as usize);
            let mut hasher = blake3::Hasher::new();
            let mut hashed = 0;
            while let Some(chunk) = recv
                .read_chunk(usize::MAX, true)
                .await
                .map_err(|e| DataError::Transport(e.to_string()))?
            {
                if (body.len() + chunk.bytes.len()) as u64 > size {
                    return Err(DataError::Protocol(format!(
                        "sent more than the {size} bytes announced"
                    )));
                }
                body.extend_from_slice(&chunk.bytes);
                // Hash while the rest arrives, in batches large enough for blake3's SIMD
                // (per-packet updates would forfeit it).
                if body.len() - hashed >= HASH_BATCH {
                    hasher.update(&body[hashed..]);
                    hashed = body.len();
                }
            }
            hasher.update(&body[hashed..]);
            if body.len() as u64 != size {
                return Err(DataError::Protocol(format!(
                    "announced {size} bytes, sent {}",
                    body.len()
                )));
            }
            Ok((body.freeze(), ContentId(*hasher.finalize().as_bytes())))
        })
        .await
        .map_err(|_| DataError::Timeout)?
    }

    /// Fetches a stream's manifest.
    pub async fn fetch_manifest(
        &self,
        target: Target,
        request: &Request,
    ) -> Result<Manifest, DataError> {
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            let (header, _) = self.exchange(target, request).await?;
            match header {
                Response::Manifest { announcements, end } => Ok((announcements, end)),
                other => Err(unexpected(other)),
            }
        })
        .await
        .map_err(|_| DataError::Timeout)?
    }

    /// The measured RTT of the connection to `peer`, if one is open.
    pub fn rtt(&self, peer: &PeerId) -> Option<Duration> {
        let conns = self.connections.lock().expect("poisoned");
        conns.get(peer).map(|(_, c)| c.rtt())
    }

    /// The measured RTTs of every open connection.
    pub fn rtts(&self) -> Vec<(PeerId, Duration)> {
        let conns = self.connections.lock().expect("poisoned");
        conns
            .iter()
            .filter(|(_, (_, c))| c.close_reason().is_none())
            .map(|(peer, (_, c))| (*peer, c.rtt()))
            .collect()
    }

    /// Opens (or reuses) the connection to `target` and returns its measured RTT.
    pub async fn connect(&self, target: Target) -> Result<Duration, DataError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.connection(target))
            .await
            .map_err(|_| DataError::Timeout)?
            .map(|c| c.rtt())
    }

    /// Closes and forgets the connection to `peer`.
    pub fn forget(&self, peer: &PeerId) {
        if let Some((_, c)) = self.connections.lock().expect("poisoned").remove(peer) {
            c.close(quinn::VarInt::from_u32(0), b"peer gone");
        }
    }

    async fn exchange(
        &self,
        target: Target,
        request: &Request,
    ) -> Result<(Response, quinn::RecvStream), DataError> {
        let conn = self.connection(target).await?;
        let (mut send, mut recv) = match conn.open_bi().await {
            Ok(s) => s,
            Err(e) => {
                self.drop_if_same(&target.peer, &conn);
                return Err(DataError::Transport(e.to_string()));
            }
        };
        let frame =
            data::frame(&codec::encode(request).map_err(|e| DataError::Protocol(e.to_string()))?);
        send.write_all(&frame)
            .await
            .map_err(|e| DataError::Transport(e.to_string()))?;
        send.finish()
            .map_err(|e| DataError::Transport(e.to_string()))?;
        let mut len = [0u8; 4];
        recv.read_exact(&mut len)
            .await
            .map_err(|e| DataError::Transport(e.to_string()))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > data::MAX_RESPONSE_HEADER {
            return Err(DataError::TooLarge(
                len as u64,
                data::MAX_RESPONSE_HEADER as u64,
            ));
        }
        let mut header = vec![0u8; len];
        recv.read_exact(&mut header)
            .await
            .map_err(|e| DataError::Transport(e.to_string()))?;
        let response = codec::decode_limited(&header, data::MAX_RESPONSE_HEADER)
            .map_err(|e| DataError::Protocol(e.to_string()))?;
        Ok((response, recv))
    }

    async fn connection(&self, target: Target) -> Result<quinn::Connection, DataError> {
        {
            let conns = self.connections.lock().expect("poisoned");
            if let Some((t, c)) = conns.get(&target.peer)
                && *t == target
                && c.close_reason().is_none()
            {
                return Ok(c.clone());
            }
        }
        let config = super::tls::client_config(target.fingerprint, &self.identity)
            .map_err(|e| DataError::Connect(target.addr, e.to_string()))?;
        let conn = self
            .endpoint
            .connect_with(config, target.addr, super::tls::SERVER_NAME)
            .map_err(|e| DataError::Connect(target.addr, e.to_string()))?
            .await
            .map_err(|e| DataError::Connect(target.addr, e.to_string()))?;
        self.connections
            .lock()
            .expect("poisoned")
            .insert(target.peer, (target, conn.clone()));
        Ok(conn)
    }

    fn drop_if_same(&self, peer: &PeerId, conn: &quinn::Connection) {
        let mut conns = self.connections.lock().expect("poisoned");
        if conns
            .get(peer)
            .is_some_and(|(_, c)| c.stable_id() == conn.stable_id())
        {
            conns.remove(peer);
        }
    }
}

fn unexpected(response: Response) -> DataError {
    match response {
        Response::NotFound => DataError::NotFound,
        Response::Busy { fed } => DataError::Busy(
            fed.iter()
                .take(data::MAX_HINTS)
                .filter_map(|b| PeerId::from_bytes(b).ok())
                .collect(),
        ),
        Response::Error(e) => DataError::Remote(e.chars().take(200).collect()),
        other => DataError::Protocol(format!("unexpected response {other:?}")),
    }
}
