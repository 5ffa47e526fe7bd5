//! Which node's encoder feeds a stream: source election for redundant and moved ingest.
//!
//! Every node an encoder pushes into claims the stream; the claim and when it began go
//! out in the node's status. The earliest live claim leads: its segments go to the mesh,
//! and a redundant encoder's node stands by, holding its segments back. A node takes
//! the stream over at once, without waiting for the leader's claim to lapse, when the
//! stream has stalled (no new segment for twice a segment's duration plus a second: the
//! encoder moved here, or the leader failed) or when the node that signed its newest
//! segment is gone; a node that took over keeps leading while it feeds, though an older
//! claim may still stand. Segments from a new source follow a discontinuity.

use crate::Core;
use shoal_protocol::PeerId;
use shoal_protocol::stream;
use std::time::Instant;

/// What a node does with the segments its encoder just delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Announce them. `after`: the stream's previous source, if it now switches to this
    /// node (the first segment is then a discontinuity).
    Lead {
        /// The previous source, if this is a switch.
        after: Option<PeerId>,
    },
    /// Hold them back: another node leads.
    Standby {
        /// The node that feeds the stream (the earliest claim's, or the one that took
        /// over from this node's), if known.
        following: Option<PeerId>,
    },
}

impl Core {
    /// Whether this node's encoder leads `stream` now (see the module docs). Call it with
    /// each delivery, after [`Core::handle_ingest_activity`].
    pub fn ingest_role(&mut self, stream: &stream::Name, now: Instant) -> Role {
        let me = self.me;
        // An encoder moved (or failed over) to a node of a large mesh that did not carry
        // the stream: its window (sequence numbers, the last source) is at the peers
        // that hold it. Fetch it first, holding segments back meanwhile, so the stream
        // continues with the mesh's numbering after a discontinuity.
        if !self.streams.contains_key(stream)
            && let Some(&holder) = self.stream_holders(stream, now).first()
        {
            self.sync(stream.clone(), holder, now);
            return Role::Standby {
                following: Some(holder),
            };
        }
        let claimed = self.active_source(stream);
        let last_signer = self.last_signer(stream);
        let stalled = self.source_stalled(stream, now);
        let signer_gone = last_signer.is_some_and(|s| s != me && self.peers.get(&s).is_none());
        let feeding = last_signer == Some(me);
        let took_over = self.claims.get(stream).is_some_and(|c| c.took_over);
        let leads = stalled
            || if claimed == Some(me) {
                last_signer.is_none() || feeding || signer_gone
            } else {
                took_over && feeding
            };
        if let Some(claim) = self.claims.get_mut(stream) {
            claim.took_over = leads && claimed != Some(me);
        }
        if leads {
            Role::Lead {
                after: last_signer.filter(|s| *s != me),
            }
        } else {
            let following = if claimed == Some(me) {
                last_signer
            } else {
                claimed
            };
            Role::Standby { following }
        }
    }
}

#[cfg(test)]
mod tests;
