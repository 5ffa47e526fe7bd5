//! Helpers for the core's unit tests: deterministic identities, statuses and
//! announcements.

use shoal_protocol::PeerId;
use shoal_protocol::content::ContentId;
use shoal_protocol::identity::Keypair;
use shoal_protocol::segment::{self, Announcement, Container, InitRef};
use shoal_protocol::signed::{Signed, Verified};
use shoal_protocol::status::{Load, Status, StreamHeld};
use shoal_protocol::stream;

/// A deterministic keypair for test node `n`.
pub fn keypair(n: u8) -> Keypair {
    let mut seed = [0u8; 32];
    seed[0] = n;
    seed[1] = 0x5a;
    Keypair::ed25519_from_bytes(seed).expect("valid seed")
}

/// The peer id of test node `n`.
pub fn peer(n: u8) -> PeerId {
    keypair(n).public().to_peer_id()
}

/// A status (version `version`) holding `first..=last` of `stream`.
pub fn status_holding(version: u64, stream: &str, first: u64, last: u64) -> Status {
    Status {
        version,
        issued_at: 0,
        data_addr: "127.0.0.1:1".parse().unwrap(),
        cert_fingerprint: ContentId::of(b"cert"),
        http_addr: "127.0.0.1:2".parse().unwrap(),
        p2p_addrs: vec![],
        streams: vec![StreamHeld {
            name: stream::Name::new(stream).unwrap(),
            first_seq: first,
            last_seq: last,
            ingest: false,
            ended: false,
            viewers: 0,
            bitrate_bps: 0,
        }],
        ingesting: vec![],
        load: Load::default(),
        draining: false,
        warm: vec![],
    }
}

/// An announcement of `stream`#`seq` signed by test node `signer`.
pub fn announcement_by(
    signer: u8,
    stream: &str,
    seq: u64,
    init: Option<u64>,
) -> Verified<Announcement> {
    let size = format!("{stream}/{seq}").len() as u64;
    announcement_sized(signer, stream, seq, init, size)
}

/// An announcement of a 2 s segment of `size` bytes (`size` x 4 bits per second).
pub fn announcement_sized(
    signer: u8,
    stream: &str,
    seq: u64,
    init: Option<u64>,
    size: u64,
) -> Verified<Announcement> {
    let bytes = format!("{stream}/{seq}");
    let a = Announcement {
        id: segment::Id {
            stream: stream::Name::new(stream).unwrap(),
            seq,
        },
        duration_ms: 2000,
        size,
        hash: ContentId::of(bytes.as_bytes()),
        container: if init.is_some() {
            Container::Fmp4
        } else {
            Container::Ts
        },
        init: init.map(|i| InitRef {
            hash: ContentId::of(&i.to_le_bytes()),
            size: 8,
        }),
        discontinuity: false,
        ingested_at: 0,
    };
    Signed::sign(&keypair(signer), &a)
        .unwrap()
        .verify()
        .unwrap()
}

/// An announcement signed by test node 100.
pub fn announcement(stream: &str, seq: u64, init: Option<u64>) -> Verified<Announcement> {
    announcement_by(100, stream, seq, init)
}

/// The epoch of a test: tests run in virtual time from here, the only clock reading in
/// the crate.
#[allow(clippy::disallowed_methods)]
pub fn t0() -> std::time::Instant {
    std::time::Instant::now()
}
