//! Mesh membership: who may join a closed mesh.
//!
//! An operator's key (the mesh CA, an ed25519 key) signs a [`Credential`] for each node's
//! peer id, with an expiry. A node of a closed mesh presents its credential in the first
//! message on every control-plane connection ([`Hello`]), and its peers check it against
//! the CA's public key alone: no call to any central service. The CA also signs
//! [`Revocations`], the peer ids cut from the mesh; the newest list travels by gossip and
//! in every `Hello`, so it reaches every node within seconds and every newcomer at once.

use crate::signed::{Signable, SignatureError, Signed, Verified};
use libp2p_identity::{PeerId, PublicKey, ed25519};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Largest encoded [`Hello`] accepted.
pub const MAX_HELLO: usize = 64 * 1024;
/// Most peer ids in one revocation list.
pub const MAX_REVOKED: usize = 1024;
/// Clock difference tolerated between the CA's host and a node, in seconds: a credential
/// issued slightly "in the future" by a fast clock is still good.
pub const CLOCK_SKEW: u64 = 300;

/// A grant to be a member of the mesh, for one peer id until an expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The node it admits.
    pub peer: PeerId,
    /// When it was issued, Unix seconds.
    pub issued: u64,
    /// When it stops admitting, Unix seconds.
    pub expires: u64,
}

impl Signable for Credential {
    const DOMAIN: &'static [u8] = b"shoal/credential/1";
}

/// Peers cut from the mesh. A list replaces every list issued before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocations {
    /// When the list was issued, Unix seconds: the newest list wins.
    pub issued: u64,
    /// The revoked peers.
    pub peers: Vec<PeerId>,
}

impl Signable for Revocations {
    const DOMAIN: &'static [u8] = b"shoal/revocations/1";
}

/// The first message each side sends on a control-plane connection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's membership credential (none in an open mesh).
    pub credential: Option<Signed<Credential>>,
    /// The newest revocation list the sender holds.
    pub revocations: Option<Signed<Revocations>>,
}

/// The mesh CA's public key: what a node needs to check credentials and revocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshCa(PeerId);

/// Why a credential or revocation list was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MembershipError {
    /// The peer presented none.
    #[error("no membership credential")]
    Missing,
    /// The signature does not check.
    #[error("bad signature: {0}")]
    Signature(#[from] SignatureError),
    /// Signed, but not by this mesh's CA.
    #[error("not signed by this mesh's CA")]
    WrongCa,
    /// Issued for another peer id.
    #[error("credential is for peer {0}")]
    WrongPeer(PeerId),
    /// Past its expiry.
    #[error("credential expired {0} s ago")]
    Expired(u64),
    /// Issued after now (beyond the tolerated clock skew).
    #[error("credential issued in the future")]
    NotYetValid,
    /// The peer is on the revocation list.
    #[error("peer revoked")]
    Revoked,
    /// A revocation list longer than [`MAX_REVOKED`].
    #[error("revocation list of {0} peers (at most {MAX_REVOKED})")]
    TooMany(usize),
}

impl MeshCa {
    /// The CA whose ed25519 public key is `key`.
    pub fn new(key: ed25519::PublicKey) -> Self {
        Self(PublicKey::from(key).to_peer_id())
    }

    /// Parses the public key as `shoal keygen` prints it: `KID:PUBLIC` or `PUBLIC`, the
    /// 32-byte key in unpadded base64url.
    pub fn parse(s: &str) -> Result<Self, String> {
        use base64::Engine;
        let public = s.rsplit_once(':').map_or(s, |(_, p)| p).trim();
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(public)
            .map_err(|e| format!("mesh CA key is not base64url: {e}"))?;
        let key = ed25519::PublicKey::try_from_bytes(&raw)
            .map_err(|e| format!("mesh CA key is not an ed25519 public key: {e}"))?;
        Ok(Self::new(key))
    }

    /// Checks that `signed` is this CA's credential for `peer`, valid at `now` (Unix
    /// seconds).
    pub fn check_credential(
        &self,
        signed: &Signed<Credential>,
        peer: &PeerId,
        now: u64,
    ) -> Result<Credential, MembershipError> {
        let v = self.verify(signed)?;
        let c = v.value;
        if c.peer != *peer {
            return Err(MembershipError::WrongPeer(c.peer));
        }
        if c.issued > now.saturating_add(CLOCK_SKEW) {
            return Err(MembershipError::NotYetValid);
        }
        if c.expires <= now {
            return Err(MembershipError::Expired(now - c.expires));
        }
        Ok(c)
    }

    /// Checks that `signed` is a revocation list of this CA.
    pub fn check_revocations(
        &self,
        signed: &Signed<Revocations>,
    ) -> Result<Verified<Revocations>, MembershipError> {
        let v = self.verify(signed)?;
        if v.value.peers.len() > MAX_REVOKED {
            return Err(MembershipError::TooMany(v.value.peers.len()));
        }
        Ok(v)
    }

    fn verify<T: Signable>(&self, signed: &Signed<T>) -> Result<Verified<T>, MembershipError> {
        let v = signed.verify()?;
        if v.signer != self.0 {
            return Err(MembershipError::WrongCa);
        }
        Ok(v)
    }
}

/// Text form of a signed credential or revocation list, as files and the admin API
/// carry them: one line of unpadded base64url of the encoded envelope.
pub fn to_text<T: Signable>(signed: &Signed<T>) -> Result<String, crate::codec::CodecError> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crate::codec::encode(signed)?))
}

/// Reads the text form written by [`to_text`] (surrounding whitespace ignored).
pub fn from_text<T: Signable>(text: &str) -> Result<Signed<T>, String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim())
        .map_err(|e| format!("not base64url: {e}"))?;
    crate::codec::decode_limited(&raw, MAX_HELLO).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;

    fn new_ca() -> (Keypair, MeshCa) {
        let kp = ed25519::Keypair::generate();
        let ca = MeshCa::new(kp.public());
        (Keypair::from(kp), ca)
    }

    #[test]
    fn a_credential_admits_its_peer_only_until_it_expires() {
        let (key, ca) = new_ca();
        let peer = PeerId::random();
        let cred = Credential {
            peer,
            issued: 1_000,
            expires: 2_000,
        };
        let signed = Signed::sign(&key, &cred).unwrap();
        assert_eq!(ca.check_credential(&signed, &peer, 1_500), Ok(cred.clone()));
        assert_eq!(
            ca.check_credential(&signed, &peer, 2_000),
            Err(MembershipError::Expired(0))
        );
        assert_eq!(
            ca.check_credential(&signed, &PeerId::random(), 1_500)
                .unwrap_err(),
            MembershipError::WrongPeer(peer)
        );
        assert_eq!(
            ca.check_credential(&signed, &peer, 500),
            Err(MembershipError::NotYetValid)
        );
        // Another CA's credential, or the node signing its own, is not good.
        let (_, other) = new_ca();
        assert_eq!(
            other.check_credential(&signed, &peer, 1_500),
            Err(MembershipError::WrongCa)
        );
        let text = to_text(&signed).unwrap();
        let back: Signed<Credential> = from_text(&format!("{text}\n")).unwrap();
        assert_eq!(ca.check_credential(&back, &peer, 1_500), Ok(cred));
    }

    #[test]
    fn revocation_lists_are_bounded_and_the_cas_own() {
        let (key, ca) = new_ca();
        let list = Revocations {
            issued: 5,
            peers: vec![PeerId::random(); MAX_REVOKED + 1],
        };
        let signed = Signed::sign(&key, &list).unwrap();
        assert_eq!(
            ca.check_revocations(&signed).unwrap_err(),
            MembershipError::TooMany(MAX_REVOKED + 1)
        );
        let (other_key, _) = new_ca();
        let forged = Signed::sign(
            &other_key,
            &Revocations {
                issued: 6,
                peers: vec![],
            },
        )
        .unwrap();
        assert_eq!(
            ca.check_revocations(&forged).unwrap_err(),
            MembershipError::WrongCa
        );
        assert!(MeshCa::parse("kid:not-a-key").is_err());
    }
}
