//! This node's status: what it holds, ingests and carries, and where to reach it.

use crate::Core;
use shoal_protocol::content::ContentId;
use shoal_protocol::status::{self, Status};
use shoal_protocol::time::UnixMillis;
use std::net::SocketAddr;

/// What only the driver knows of its node: its addresses, its certificate, and the
/// status's version and issue time.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Grows with every status (see [`Status::version`]).
    pub version: u64,
    /// The wall clock now.
    pub issued_at: UnixMillis,
    /// The data plane's advertised address.
    pub data_addr: SocketAddr,
    /// blake3 of the data plane's certificate.
    pub cert_fingerprint: ContentId,
    /// The HTTP edge's advertised address.
    pub http_addr: SocketAddr,
    /// libp2p addresses to dial the node at.
    pub p2p_addrs: Vec<String>,
}

impl Core {
    /// The status to sign and publish now (on [`crate::Action::PublishStatus`]): the
    /// core's view of held streams, ingest claims, load, drain and pre-warm requests,
    /// with the driver's `facts`, each list within the protocol's bounds.
    pub fn status(&self, facts: Facts) -> Status {
        Status {
            version: facts.version,
            issued_at: facts.issued_at,
            data_addr: facts.data_addr,
            cert_fingerprint: facts.cert_fingerprint,
            http_addr: facts.http_addr,
            p2p_addrs: facts
                .p2p_addrs
                .into_iter()
                .filter(|a| a.len() <= status::MAX_ADDR_LEN)
                .take(status::MAX_P2P_ADDRS)
                .collect(),
            streams: self.held_streams(),
            ingesting: self.ingest_claims(),
            load: self.own_load(),
            draining: self.drain().is_some(),
            warm: self.warm_requests(),
        }
    }
}
