//! Putting ingested segments into the mesh, whatever protocol brought them (HTTP PUT,
//! RTMP): the core's source election decides whether this node's encoder leads; a
//! leading node signs, stores and gossips each segment, and the stream's end.

use crate::ingest::Ready;
use crate::metrics::add;
use crate::node::{Shared, unix_millis};
use shoal_core::ingest_source::Role;
use shoal_protocol::gossip::Gossip;
use shoal_protocol::segment::{self, Announcement, StreamEnd};
use shoal_protocol::signed::Signed;
use shoal_protocol::stream;
use std::sync::Arc;
use std::time::Instant;
use tracing::{debug, info, warn};

/// Why an ingested segment did not go out.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// The announcement could not be signed.
    #[error("signing: {0}")]
    Signing(String),
    /// The core refused it (e.g. larger than the mesh's segment limit).
    #[error("segment refused: {0}")]
    Refused(String),
}

/// What became of segments handed to [`deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// This node leads the stream: they were announced.
    Announced,
    /// Another node's encoder leads: they were held back.
    Standby,
}

/// Hands an encoder's finished segments (and its end, if `ended`) to the mesh. Numbering
/// is the caller's (it continues the mesh's); a stream that moved to this node gets a
/// discontinuity before its first segment here.
pub fn deliver(
    node: &Arc<Shared>,
    name: &stream::Name,
    ready: Vec<Ready>,
    ended: bool,
) -> Result<Delivered, AnnounceError> {
    let after = match node.core().ingest_role(name, Instant::now()) {
        Role::Lead { after } => after,
        Role::Standby { following } => {
            if !ready.is_empty() {
                add(&node.metrics.ingest_standby, ready.len() as u64);
                debug!(stream = %name, ?following, "standby ingest: segments held back");
            }
            return Ok(Delivered::Standby);
        }
    };
    // Segments from a new source (moved or failed-over ingest) follow a discontinuity.
    let mut switched = after.is_some();
    if switched {
        info!(stream = %name, previous = ?after, "this node is now the stream's source");
    }
    let last = ready.last().map(|r| r.seq);
    for mut segment in ready {
        segment.discontinuity |= std::mem::take(&mut switched);
        announce(node, name, segment)?;
    }
    if ended {
        end_stream(node, name, last);
    }
    node.run_actions();
    Ok(Delivered::Announced)
}

/// Signs, stores and gossips one ingested segment.
fn announce(node: &Arc<Shared>, name: &stream::Name, ready: Ready) -> Result<(), AnnounceError> {
    let size = ready.bytes.len() as u64;
    let announcement = Announcement {
        id: segment::Id {
            stream: name.clone(),
            seq: ready.seq,
        },
        duration_ms: ready.duration_ms,
        size,
        hash: shoal_protocol::content::ContentId::of(&ready.bytes),
        container: ready.container,
        init: ready.init.as_ref().map(|(r, _)| *r),
        discontinuity: ready.discontinuity,
        ingested_at: unix_millis(),
    };
    let signed = Signed::sign(&node.keypair, &announcement)
        .map_err(|e| AnnounceError::Signing(e.to_string()))?;
    let verified = signed
        .verify()
        .map_err(|e| AnnounceError::Signing(e.to_string()))?;
    {
        let mut store = node.store.lock().expect("poisoned");
        if let Some((init, bytes)) = ready.init {
            store.put_init(init.hash, bytes);
        }
        store.put_segment(announcement.id.clone(), ready.bytes);
    }
    node.core()
        .handle_ingested(verified, Instant::now())
        .map_err(|e| AnnounceError::Refused(e.to_string()))?;
    add(&node.metrics.ingest_segments, 1);
    add(&node.metrics.ingest_bytes, size);
    info!(
        segment = %announcement.id,
        file = %ready.file,
        size,
        duration_ms = ready.duration_ms,
        hash = %announcement.hash.short(),
        "ingested"
    );
    node.publish(Gossip::Segment(signed));
    Ok(())
}

/// Signs and gossips the end of `name`, after `last` (or the newest segment known).
fn end_stream(node: &Arc<Shared>, name: &stream::Name, last: Option<segment::Seq>) {
    let Some(last_seq) = last.or_else(|| node.next_seq(name).checked_sub(1)) else {
        return;
    };
    let end = StreamEnd {
        stream: name.clone(),
        last_seq,
    };
    match Signed::sign(&node.keypair, &end).and_then(|s| s.verify()) {
        Ok(verified) => {
            let envelope = verified.envelope.clone();
            node.core().handle_end(verified);
            info!(stream = %name, last_seq, "stream ended by encoder");
            node.publish(Gossip::End(envelope));
        }
        Err(e) => warn!(error = %e, "cannot sign stream end"),
    }
}
