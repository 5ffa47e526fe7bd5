//! Viewer session ids: minted by the edge for a player that brings none, carried in the
//! URLs it hands out (`?sid=`), and turned into the keys the core counts viewers by.
//!
//! An id is 20 hex characters (80 bits) of a keyed hash of a counter: unguessable and
//! unique without coordination. Any node accepts any well-formed id, so a session keeps
//! its id through redirects to other nodes; what one address can do with invented ids is
//! bounded by the core (`core::viewers`).

use shoal_core::viewers::{Sid, Viewer};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shortest session id accepted (ids minted here are 20 characters; players and front
/// ends may bring their own).
pub const MIN_LEN: usize = 1;
/// Longest session id accepted.
pub const MAX_LEN: usize = 32;

/// True if `sid` is a well-formed session id: 1-32 of `[A-Za-z0-9_-]`.
pub fn valid(sid: &str) -> bool {
    (MIN_LEN..=MAX_LEN).contains(&sid.len())
        && sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// Mints session ids.
#[derive(Debug)]
pub struct Minter {
    key: [u8; 32],
    counter: AtomicU64,
}

impl Minter {
    /// A minter keyed with `seed` (secret material private to this node).
    pub fn new(seed: &[u8]) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut h = blake3::Hasher::new_derive_key("shoal viewer session ids v1");
        h.update(seed);
        h.update(&started.to_le_bytes());
        h.update(&std::process::id().to_le_bytes());
        Self {
            key: *h.finalize().as_bytes(),
            counter: AtomicU64::new(0),
        }
    }

    /// A fresh session id.
    pub fn mint(&self) -> Sid {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let hash = blake3::keyed_hash(&self.key, &n.to_le_bytes());
        Sid::new(&hex::encode(&hash.as_bytes()[..10])).expect("20 hex characters")
    }
}

/// The core's key for a client address.
pub fn addr_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The viewer a request comes from: its session when it carries one, else its address.
/// `opened_connection`: the request was the first on its connection.
pub fn viewer(ip: IpAddr, sid: Option<Sid>, opened_connection: bool) -> Viewer {
    let addr = addr_key(ip);
    let session = sid.map_or(addr, |sid| {
        let hash = blake3::derive_key("shoal viewer session key v1", sid.as_str().as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&hash[..16]);
        // Never equal to an address key by accident of the hash.
        u128::from_le_bytes(key) | 1 << 127
    });
    Viewer {
        session,
        addr,
        sid,
        opened_connection,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_are_valid_and_distinct() {
        let m = Minter::new(b"seed");
        let a = m.mint();
        let b = m.mint();
        assert!(valid(a.as_str()) && valid(b.as_str()), "{a:?} {b:?}");
        assert_ne!(a, b);
        assert_ne!(Minter::new(b"other").mint(), a);
    }

    #[test]
    fn validity() {
        assert!(valid("abcdEFGH_-12"));
        assert!(!valid(""));
        assert!(!valid(&"a".repeat(MAX_LEN + 1)));
        assert!(!valid("abcdefgh%0a"));
        assert!(!valid("abcdefgh\n"));
    }

    #[test]
    fn viewers_share_an_address_but_not_a_session() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let sid = |s| Sid::new(s);
        let a = viewer(ip, sid("aaaaaaaaaa"), false);
        let b = viewer(ip, sid("bbbbbbbbbb"), false);
        assert_eq!(a.addr, b.addr);
        assert_ne!(a.session, b.session);
        let bare = viewer(ip, None, false);
        assert_eq!(bare.session, bare.addr);
        // The same session on another node (another address seen) keeps its key.
        let elsewhere = viewer("10.0.0.2".parse().unwrap(), sid("aaaaaaaaaa"), true);
        assert_eq!(elsewhere.session, a.session);
    }
}
