//! Who this node takes as a member of its mesh: the peers whose credential it checked,
//! and the mesh CA's newest revocation list.
//!
//! In an open mesh (no `--mesh-ca`) every peer is a member. In a closed mesh a peer is
//! one from the moment its [`Hello`] carried a credential for its own peer id, signed by
//! the CA and unexpired, until its connection closes, its credential expires or a
//! revocation list names it. The control plane ([`crate::control`]) asks here before it
//! takes a peer's gossip, and the data plane before it serves a pull.

use shoal_protocol::PeerId;
use shoal_protocol::membership::{
    Credential, Hello, MembershipError, MeshCa, Revocations, to_text,
};
use shoal_protocol::signed::{Signed, Verified};
use std::collections::{HashMap, HashSet};

/// Membership state of a node.
#[derive(Debug, Default)]
pub struct Members {
    /// The CA of a closed mesh, and this node's own credential.
    closed: Option<(MeshCa, Signed<Credential>)>,
    /// Connected peers whose credential checked, with its expiry (Unix seconds).
    admitted: HashMap<PeerId, u64>,
    /// The newest revocation list, and the peers it names.
    revocations: Option<Verified<Revocations>>,
    revoked: HashSet<PeerId>,
    /// Peers refused (no or bad credential) and cut (revoked, expired) so far.
    refused: u64,
    cut: u64,
}

/// What a node of a closed mesh needs, checked at start.
#[derive(Debug, Clone)]
pub struct Closed {
    /// The CA.
    pub ca: MeshCa,
    /// This node's credential.
    pub credential: Signed<Credential>,
}

impl Closed {
    /// Checks that `credential` admits `me` now.
    pub fn new(
        ca: MeshCa,
        credential: Signed<Credential>,
        me: &PeerId,
        now: u64,
    ) -> Result<Self, MembershipError> {
        ca.check_credential(&credential, me, now)?;
        Ok(Self { ca, credential })
    }
}

/// File in the data directory that keeps the newest revocation list across restarts.
pub const REVOCATIONS_FILE: &str = "revocations";

/// The membership a node starts with: open without a CA; closed with one, when its own
/// credential admits it now, with the newer of the given and the saved revocation list.
pub fn load(
    ca: Option<MeshCa>,
    credential: Option<&Signed<Credential>>,
    revocations: Option<&Signed<Revocations>>,
    saved: &std::path::Path,
    me: &PeerId,
    now: u64,
) -> Result<Members, String> {
    let (ca, credential) = match (ca, credential) {
        (None, None) => return Ok(Members::open()),
        (None, Some(_)) => return Err("--credential needs --mesh-ca".into()),
        (Some(_), None) => {
            return Err(
                "a node of a closed mesh (--mesh-ca) needs its --credential (`shoal credential`)"
                    .into(),
            );
        }
        (Some(ca), Some(c)) => (ca, c.clone()),
    };
    let closed =
        Closed::new(ca, credential, me, now).map_err(|e| format!("this node's credential: {e}"))?;
    let mut members = Members::closed(closed);
    if let Some(list) = revocations {
        members
            .take_revocations(list)
            .map_err(|e| format!("--revocations: {e}"))?;
    }
    if let Ok(text) = std::fs::read_to_string(saved) {
        match shoal_protocol::membership::from_text::<Revocations>(&text) {
            // An older saved list changes nothing; a bad one is not this mesh's.
            Ok(list) => {
                if let Err(e) = members.take_revocations(&list) {
                    tracing::warn!(path = %saved.display(), error = %e, "saved revocation list ignored");
                }
            }
            Err(e) => {
                tracing::warn!(path = %saved.display(), error = %e, "saved revocation list ignored")
            }
        }
    }
    Ok(members)
}

/// Issues a credential admitting `peer` for `ttl` from `now` (Unix seconds), signed
/// with the mesh CA's key, in its text form (what `--credential` reads).
pub fn issue_credential(
    ca: &crate::tokens::SigningKey,
    peer: PeerId,
    ttl: std::time::Duration,
    now: u64,
) -> Result<String, String> {
    let credential = Credential {
        peer,
        issued: now,
        expires: now.saturating_add(ttl.as_secs()),
    };
    let signed = Signed::sign(&ca.keypair(), &credential).map_err(|e| e.to_string())?;
    to_text(&signed).map_err(|e| e.to_string())
}

/// Issues a revocation list naming `peers` at `now` (Unix seconds; it replaces every
/// list issued before), signed with the mesh CA's key, in its text form.
pub fn issue_revocations(
    ca: &crate::tokens::SigningKey,
    peers: Vec<PeerId>,
    now: u64,
) -> Result<String, String> {
    if peers.len() > shoal_protocol::membership::MAX_REVOKED {
        return Err(format!(
            "at most {} peers per list",
            shoal_protocol::membership::MAX_REVOKED
        ));
    }
    let list = Revocations { issued: now, peers };
    let signed = Signed::sign(&ca.keypair(), &list).map_err(|e| e.to_string())?;
    to_text(&signed).map_err(|e| e.to_string())
}

/// A summary for the status API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Whether the mesh is closed (needs credentials).
    pub closed: bool,
    /// When this node's own credential expires (Unix seconds).
    pub credential_expires: Option<u64>,
    /// Peers currently admitted.
    pub admitted: usize,
    /// Issue time of the newest revocation list held (Unix seconds).
    pub revocations_issued: Option<u64>,
    /// Peers it revokes.
    pub revoked: usize,
    /// Peers refused so far (no, bad or another peer's credential).
    pub refused_total: u64,
    /// Members cut so far (revoked or expired).
    pub cut_total: u64,
}

impl Members {
    /// An open mesh: everyone is a member.
    pub fn open() -> Self {
        Self::default()
    }

    /// A closed mesh.
    pub fn closed(closed: Closed) -> Self {
        Self {
            closed: Some((closed.ca, closed.credential)),
            ..Self::default()
        }
    }

    /// Whether peers need a credential.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// What this node says first on a connection.
    pub fn hello(&self) -> Hello {
        Hello {
            credential: self.closed.as_ref().map(|(_, c)| c.clone()),
            revocations: self.revocations.as_ref().map(|r| r.envelope.clone()),
        }
    }

    /// The newest revocation list, in its text form (for saving).
    pub fn revocations_text(&self) -> Option<String> {
        self.revocations
            .as_ref()
            .and_then(|r| to_text(&r.envelope).ok())
    }

    /// Checks the credential in `peer`'s hello (take the revocation list it carries
    /// first, with [`Members::take_revocations`]: it may name the peer itself).
    pub fn on_hello(
        &mut self,
        peer: PeerId,
        hello: &Hello,
        now: u64,
    ) -> Result<(), MembershipError> {
        let Some((ca, _)) = &self.closed else {
            return Ok(());
        };
        let admitted = match &hello.credential {
            None => Err(MembershipError::Missing),
            Some(_) if self.revoked.contains(&peer) => Err(MembershipError::Revoked),
            Some(c) => ca.check_credential(c, &peer, now),
        };
        match admitted {
            Ok(c) => {
                self.admitted.insert(peer, c.expires);
                Ok(())
            }
            Err(e) => {
                self.refused += 1;
                self.admitted.remove(&peer);
                Err(e)
            }
        }
    }

    /// Takes a revocation list if it is the CA's and newer than the one held. Returns the
    /// peers it revokes that were members until now (`Ok(vec![])` for an older list).
    pub fn take_revocations(
        &mut self,
        list: &Signed<Revocations>,
    ) -> Result<Vec<PeerId>, MembershipError> {
        let Some((ca, _)) = &self.closed else {
            return Ok(Vec::new());
        };
        let list = ca.check_revocations(list)?;
        if self
            .revocations
            .as_ref()
            .is_some_and(|held| held.value.issued >= list.value.issued)
        {
            return Ok(Vec::new());
        }
        self.revoked = list.value.peers.iter().copied().collect();
        self.revocations = Some(list);
        let cut: Vec<PeerId> = self
            .admitted
            .keys()
            .filter(|p| self.revoked.contains(p))
            .copied()
            .collect();
        for p in &cut {
            self.admitted.remove(p);
        }
        self.cut += cut.len() as u64;
        Ok(cut)
    }

    /// Whether `peer`'s gossip and pulls are taken.
    pub fn allows(&self, peer: &PeerId) -> bool {
        match self.closed {
            None => true,
            Some(_) => self.admitted.contains_key(peer),
        }
    }

    /// Whether the revocation list names `peer` (it may have signed what a member
    /// relays before the list reached that member).
    pub fn is_revoked(&self, peer: &PeerId) -> bool {
        self.revoked.contains(peer)
    }

    /// `peer`'s last connection closed.
    pub fn forget(&mut self, peer: &PeerId) {
        self.admitted.remove(peer);
    }

    /// Removes and returns the members whose credential has expired at `now`.
    pub fn expire(&mut self, now: u64) -> Vec<PeerId> {
        let expired: Vec<PeerId> = self
            .admitted
            .iter()
            .filter(|(_, expires)| **expires <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in &expired {
            self.admitted.remove(p);
        }
        self.cut += expired.len() as u64;
        expired
    }

    /// When this node's own credential expires.
    pub fn own_expiry(&self) -> Option<u64> {
        let (_, c) = self.closed.as_ref()?;
        c.verify().ok().map(|v| v.value.expires)
    }

    /// A summary for the status API.
    pub fn report(&self) -> Report {
        Report {
            closed: self.is_closed(),
            credential_expires: self.own_expiry(),
            admitted: self.admitted.len(),
            revocations_issued: self.revocations.as_ref().map(|r| r.value.issued),
            revoked: self.revoked.len(),
            refused_total: self.refused,
            cut_total: self.cut,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::identity::{Keypair, ed25519};

    struct Ca {
        key: Keypair,
        ca: MeshCa,
    }

    impl Ca {
        fn new() -> Self {
            let kp = ed25519::Keypair::generate();
            Self {
                ca: MeshCa::new(kp.public()),
                key: Keypair::from(kp),
            }
        }

        fn credential(&self, peer: PeerId, expires: u64) -> Signed<Credential> {
            let c = Credential {
                peer,
                issued: 0,
                expires,
            };
            Signed::sign(&self.key, &c).unwrap()
        }

        fn revoke(&self, issued: u64, peers: &[PeerId]) -> Signed<Revocations> {
            let r = Revocations {
                issued,
                peers: peers.to_vec(),
            };
            Signed::sign(&self.key, &r).unwrap()
        }

        fn members(&self, me: PeerId) -> Members {
            Members::closed(Closed::new(self.ca, self.credential(me, 1_000), &me, 10).unwrap())
        }
    }

    fn hello(credential: Option<Signed<Credential>>) -> Hello {
        Hello {
            credential,
            revocations: None,
        }
    }

    #[test]
    fn peers_are_members_only_with_their_own_credential_from_the_ca() {
        let ca = Ca::new();
        let mut m = ca.members(PeerId::random());
        let (good, other) = (PeerId::random(), PeerId::random());
        assert_eq!(
            m.on_hello(good, &hello(None), 10),
            Err(MembershipError::Missing)
        );
        assert!(!m.allows(&good));
        // Another peer's credential (copied from its hello) does not admit this one.
        assert!(matches!(
            m.on_hello(good, &hello(Some(ca.credential(other, 100))), 10),
            Err(MembershipError::WrongPeer(_))
        ));
        // A credential the node signed itself is not the CA's.
        let rogue = Ca::new();
        assert_eq!(
            m.on_hello(good, &hello(Some(rogue.credential(good, 100))), 10),
            Err(MembershipError::WrongCa)
        );
        assert_eq!(
            m.on_hello(good, &hello(Some(ca.credential(good, 100))), 10),
            Ok(())
        );
        assert!(m.allows(&good));
        assert!(m.expire(99).is_empty());
        assert_eq!(m.expire(100), vec![good]);
        assert!(!m.allows(&good));
        assert_eq!(m.report().refused_total, 3);
        assert_eq!(m.report().cut_total, 1);
    }

    #[test]
    fn the_newest_revocation_list_cuts_members_and_refuses_them_again() {
        let ca = Ca::new();
        let mut m = ca.members(PeerId::random());
        let (a, b) = (PeerId::random(), PeerId::random());
        for p in [a, b] {
            m.on_hello(p, &hello(Some(ca.credential(p, 100))), 10)
                .unwrap();
        }
        assert_eq!(m.take_revocations(&ca.revoke(5, &[a])), Ok(vec![a]));
        assert!(!m.allows(&a) && m.allows(&b) && m.is_revoked(&a));
        assert_eq!(
            m.on_hello(a, &hello(Some(ca.credential(a, 100))), 10),
            Err(MembershipError::Revoked)
        );
        // An older list (a replay) changes nothing; a forged one is refused.
        assert_eq!(m.take_revocations(&ca.revoke(4, &[b])), Ok(vec![]));
        assert!(m.allows(&b));
        assert_eq!(
            m.take_revocations(&Ca::new().revoke(9, &[b])),
            Err(MembershipError::WrongCa)
        );
        // A newer list that no longer names `a` readmits it.
        assert_eq!(m.take_revocations(&ca.revoke(6, &[])), Ok(vec![]));
        assert_eq!(
            m.on_hello(a, &hello(Some(ca.credential(a, 100))), 10),
            Ok(())
        );
        let mut cut = m.take_revocations(&ca.revoke(7, &[a, b])).unwrap();
        let mut both = vec![a, b];
        cut.sort();
        both.sort();
        assert_eq!(cut, both);
        assert!(!m.allows(&a) && !m.allows(&b));
        assert_eq!(m.report().revoked, 2);
    }

    #[test]
    fn an_open_mesh_admits_everyone() {
        let mut m = Members::open();
        let p = PeerId::random();
        assert_eq!(m.on_hello(p, &Hello::default(), 10), Ok(()));
        assert!(m.allows(&p) && !m.is_closed());
        assert!(m.hello().credential.is_none());
    }
}
