//! Shoal's wire vocabulary: everything two nodes say to each other, and nothing that
//! touches a socket or a clock.
//!
//! - [`stream`] and [`content`] name things: validated stream names and blake3 content ids.
//! - [`segment`] describes media: a segment's identity and its signed [`segment::Announcement`].
//! - [`status`] is what a node gossips about itself (addresses, streams held, load).
//! - [`signed`] wraps any of these in an ed25519 signature made with the node's libp2p
//!   identity, so a message can be relayed by anyone and still be checked.
//! - [`gossip`] is the envelope carried by gossipsub; [`data`] is the request/response
//!   vocabulary of the QUIC data plane.
//! - [`codec`] is the one place where bytes become values: bincode 2 in serde mode, with a
//!   version byte and a hard size limit.

pub mod codec;
pub mod content;
pub mod data;
pub mod gossip;
pub mod membership;
pub mod segment;
pub mod signed;
pub mod status;
pub mod stream;
pub mod time;

pub use libp2p_identity as identity;
pub use libp2p_identity::PeerId;
