//! Tokens whose signature already checked out, so a player's next request with the same
//! token costs a hash and a lookup instead of an Ed25519 verification.
//!
//! A player sends the same token with every playlist reload and segment: without this,
//! each request pays a signature check (about three times a playlist answer's own cost,
//! see BENCHMARKS.md). Entries are keyed by the blake3 of the whole token text, so only
//! the exact bytes that verified are accepted from here (a token with any byte changed,
//! its signature included, is verified afresh). Only tokens that verified are kept, so
//! junk cannot fill it; expiry, stream and address are still checked on every request.
//! Bounded: when full, expired entries go, and if none did, all go (the next requests
//! verify again).

use super::Claims;
use std::collections::HashMap;
use std::sync::Mutex;

/// Tokens kept: about 100 bytes each.
pub const CAPACITY: usize = 8192;

/// The key of a token in the cache.
pub type TokenHash = [u8; 32];

/// Verified tokens' claims, by the hash of their text.
#[derive(Debug, Default)]
pub struct Seen {
    map: Mutex<HashMap<TokenHash, Claims>>,
}

impl Seen {
    /// The key of `token`.
    pub fn hash(token: &str) -> TokenHash {
        *blake3::hash(token.as_bytes()).as_bytes()
    }

    /// `judge` applied to the claims of a token seen verified, if it is here (no copy of
    /// the claims: this runs on every viewer request).
    pub fn judge<R>(&self, key: &TokenHash, judge: impl FnOnce(&Claims) -> R) -> Option<R> {
        self.map.lock().expect("not poisoned").get(key).map(judge)
    }

    /// Keeps the claims of a token that verified; `now_unix` and `leeway` decide which
    /// entries have expired when room is needed.
    pub fn insert(&self, key: TokenHash, claims: Claims, now_unix: u64, leeway: u64) {
        let mut map = self.map.lock().expect("not poisoned");
        if map.len() >= CAPACITY {
            map.retain(|_, c| c.exp.saturating_add(leeway) > now_unix);
            if map.len() >= CAPACITY {
                map.clear();
            }
        }
        map.insert(key, claims);
    }

    /// Tokens kept.
    pub fn len(&self) -> usize {
        self.map.lock().expect("not poisoned").len()
    }
}
