//! Source election between nodes with encoders of one stream.

use super::*;
use crate::Config;
use crate::testing::{announcement_by, keypair, peer, status_holding, t0};
use shoal_protocol::segment::{self, Announcement, Container};
use shoal_protocol::signed::Signed;
use shoal_protocol::status::IngestClaim;
use std::time::Duration;

fn name() -> stream::Name {
    stream::Name::new("s").unwrap()
}

/// A status of peer `n`'s, claiming `s` since `since` (Unix ms).
fn claiming(version: u64, since: u64) -> shoal_protocol::status::Status {
    let mut st = status_holding(version, "other", 0, 0);
    st.ingesting = vec![IngestClaim {
        name: name(),
        since,
    }];
    st
}

/// This node (test node 0) ingests `s`#`seq` itself.
fn ingest_own(core: &mut Core, seq: u64, now: Instant) {
    let a = Announcement {
        id: segment::Id {
            stream: name(),
            seq,
        },
        duration_ms: 2000,
        size: 10,
        hash: shoal_protocol::content::ContentId::of(&seq.to_le_bytes()),
        container: Container::Ts,
        init: None,
        discontinuity: false,
        ingested_at: 0,
    };
    let v = Signed::sign(&keypair(0), &a).unwrap().verify().unwrap();
    core.handle_ingested(v, now).unwrap();
}

#[test]
fn a_lone_encoder_leads_from_its_first_segment() {
    let t0 = t0();
    let mut core = Core::new(peer(0), Config::default());
    core.handle_ingest_activity(&name(), 1000, t0);
    assert_eq!(core.ingest_role(&name(), t0), Role::Lead { after: None });
    ingest_own(&mut core, 0, t0);
    assert_eq!(core.ingest_role(&name(), t0), Role::Lead { after: None });
}

#[test]
fn a_redundant_encoder_stands_by_and_takes_over_when_the_leader_stalls() {
    let t0 = t0();
    let mut core = Core::new(peer(0), Config::default());
    // Peer 1's encoder began first and feeds the stream.
    core.handle_status(peer(1), claiming(1, 1000), t0);
    core.handle_announcement(announcement_by(1, "s", 0, None), t0)
        .unwrap();
    core.handle_ingest_activity(&name(), 2000, t0);
    assert_eq!(
        core.ingest_role(&name(), t0),
        Role::Standby {
            following: Some(peer(1))
        }
    );
    // Peer 1 still gossips its claim, but its segments stop: after 2 x 2 s + 1 s this
    // node takes over, with a discontinuity after peer 1.
    let t1 = t0 + Duration::from_millis(5001);
    core.handle_status(peer(1), claiming(2, 1000), t1);
    core.handle_ingest_activity(&name(), 2000, t1);
    assert_eq!(
        core.ingest_role(&name(), t1),
        Role::Lead {
            after: Some(peer(1))
        }
    );
    ingest_own(&mut core, 1, t1);
    // It keeps leading while it feeds, though peer 1's older claim still stands.
    let t2 = t1 + Duration::from_secs(2);
    core.handle_status(peer(1), claiming(3, 1000), t2);
    assert_eq!(core.ingest_role(&name(), t2), Role::Lead { after: None });
}

#[test]
fn the_earliest_claim_leads_again_when_the_node_that_took_over_is_gone() {
    let t0 = t0();
    let mut core = Core::new(peer(0), Config::default());
    // This node's claim is the earliest, but peer 1 took over and signs the stream.
    core.handle_ingest_activity(&name(), 1000, t0);
    core.handle_status(peer(1), claiming(1, 2000), t0);
    core.handle_announcement(announcement_by(1, "s", 0, None), t0)
        .unwrap();
    assert_eq!(
        core.ingest_role(&name(), t0),
        Role::Standby {
            following: Some(peer(1))
        }
    );
    // Peer 1 falls silent and is declared gone: this node leads again at once (its own
    // claim is the earliest), before the stream would count as stalled.
    let t1 = t0 + Duration::from_millis(3100);
    core.handle_ingest_activity(&name(), 1000, t1);
    core.handle_tick(t1);
    assert!(core.peers().get(&peer(1)).is_none());
    assert_eq!(
        core.ingest_role(&name(), t1),
        Role::Lead {
            after: Some(peer(1))
        }
    );
}

#[test]
fn an_encoder_moved_to_a_node_without_the_streams_window_fetches_it_first() {
    let t0 = t0();
    let config = Config {
        carry_all_below: 0,
        ..Config::default()
    };
    let mut core = Core::new(peer(0), config);
    core.handle_tick(t0);
    // A large mesh: peer 1 held `s` up to #9; this node never carried it.
    core.handle_status(peer(1), status_holding(1, "s", 0, 9), t0);
    std::iter::from_fn(|| core.poll_action()).for_each(drop);
    core.handle_ingest_activity(&name(), 1000, t0);
    // Its window first: hold the encoder's segment back and sync from the holder.
    assert_eq!(
        core.ingest_role(&name(), t0),
        Role::Standby {
            following: Some(peer(1))
        }
    );
    let actions: Vec<crate::Action> = std::iter::from_fn(|| core.poll_action()).collect();
    assert!(
        actions.contains(&crate::Action::Sync {
            stream: name(),
            from: peer(1)
        }),
        "{actions:?}"
    );
    // The manifest lands (the node carries the stream: its claim); the old source has
    // since gone, so this node takes over after a discontinuity, numbering from #10.
    for seq in 0..10 {
        core.handle_announcement(announcement_by(1, "s", seq, None), t0)
            .unwrap();
    }
    let later = t0 + Duration::from_secs(10);
    core.handle_tick(later);
    assert_eq!(
        core.ingest_role(&name(), later),
        Role::Lead {
            after: Some(peer(1))
        }
    );
    assert_eq!(core.stream(&name()).and_then(|s| s.newest()), Some(9));
}
