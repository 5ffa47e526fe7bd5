//! Scenario tests of the core in virtual time.

use super::testing::*;
use super::*;
use shoal_protocol::status::IngestClaim;

mod timeout;

fn name(s: &str) -> stream::Name {
    stream::Name::new(s).unwrap()
}

fn id(s: &str, seq: u64) -> segment::Id {
    segment::Id {
        stream: name(s),
        seq,
    }
}

/// The pending actions, but for media subscriptions (`carried`'s tests cover those).
fn drain(core: &mut Core) -> Vec<Action> {
    std::iter::from_fn(|| core.poll_action())
        .filter(|a| !matches!(a, Action::Subscribe(_) | Action::Unsubscribe(_)))
        .collect()
}

#[test]
fn nearest_holder_first_and_bad_peers_avoided() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    core.handle_status(peer(1), status_holding(1, "s", 0, 9), t0);
    core.handle_status(peer(2), status_holding(1, "s", 0, 9), t0);
    core.handle_status(peer(3), status_holding(1, "s", 0, 3), t0);
    core.handle_rtt(peer(1), Duration::from_millis(40), t0);
    core.handle_rtt(peer(2), Duration::from_millis(5), t0);
    core.handle_rtt(peer(3), Duration::from_millis(1), t0);
    core.handle_announcement(announcement_by(1, "s", 5, None), t0)
        .unwrap();
    // Peer 3 is nearest but does not hold #5.
    assert_eq!(core.holders(&id("s", 5), t0), vec![peer(2), peer(1)]);
    core.handle_bad_bytes(peer(2), t0);
    assert_eq!(core.holders(&id("s", 5), t0), vec![peer(1)]);
    let later = t0 + core.config().bad_bytes_penalty + Duration::from_secs(1);
    assert_eq!(core.holders(&id("s", 5), later), vec![peer(2), peer(1)]);
}

#[test]
fn signer_counts_as_holder_before_its_status_says_so() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    core.handle_status(peer(1), status_holding(1, "other", 0, 1), t0);
    core.handle_announcement(announcement_by(1, "s", 0, None), t0)
        .unwrap();
    assert_eq!(core.holders(&id("s", 0), t0), vec![peer(1)]);
}

#[test]
fn watched_streams_are_prefetched_on_announcement() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    core.handle_announcement(announcement_by(1, "s", 0, None), t0)
        .unwrap();
    assert!(
        !drain(&mut core)
            .iter()
            .any(|a| matches!(a, Action::Prefetch(_)))
    );
    core.handle_media(&name("s"), 42, t0);
    core.handle_announcement(announcement_by(1, "s", 1, None), t0)
        .unwrap();
    assert!(drain(&mut core).contains(&Action::Prefetch(id("s", 1))));
    // After viewers leave, no more prefetching.
    core.handle_tick(t0 + Duration::from_secs(60));
    core.handle_announcement(announcement_by(1, "s", 2, None), t0)
        .unwrap();
    assert!(
        !drain(&mut core)
            .iter()
            .any(|a| matches!(a, Action::Prefetch(_)))
    );
}

#[test]
fn a_stream_asked_for_is_prefetched_from_the_live_edge_while_players_poll() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    for seq in 0..6 {
        core.handle_announcement(announcement_by(1, "s", seq, None), t0)
            .unwrap();
    }
    drain(&mut core);
    // The first player's playlist: the segments it will ask for first are pulled.
    core.admit_viewer(&name("s"), 7, false, t0);
    let prefetched: Vec<u64> = drain(&mut core)
        .into_iter()
        .filter_map(|a| match a {
            Action::Prefetch(id) => Some(id.seq),
            _ => None,
        })
        .collect();
    assert_eq!(prefetched, (6 - PREFETCH_DEPTH..6).collect::<Vec<_>>());
    // A player that only polls costs nothing after a few seconds, but keeps the stream
    // prefetched while it polls.
    let later = t0 + Duration::from_secs(10);
    core.admit_viewer(&name("s"), 7, false, later);
    core.handle_tick(later);
    assert_eq!(core.viewer_load_bps(), 0);
    core.handle_announcement(announcement_by(1, "s", 6, None), later)
        .unwrap();
    assert!(drain(&mut core).contains(&Action::Prefetch(id("s", 6))));
}

#[test]
fn prefetches_without_a_known_holder_are_retried_when_a_peer_appears() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    // Announcements arrive (gossip) before the signer's first status: nobody to ask yet.
    for seq in 0..8 {
        core.handle_announcement(announcement_by(1, "s", seq, None), t0)
            .unwrap();
        if seq == 0 {
            core.handle_media(&name("s"), 42, t0);
        }
    }
    assert!(core.holders(&id("s", 7), t0).is_empty());
    drain(&mut core);
    core.handle_status(peer(1), status_holding(1, "s", 0, 7), t0);
    let prefetched: Vec<u64> = drain(&mut core)
        .into_iter()
        .filter_map(|a| match a {
            Action::Prefetch(id) => Some(id.seq),
            _ => None,
        })
        .collect();
    // Near the live edge only, as on announcement.
    let first = 8 - PREFETCH_DEPTH;
    assert_eq!(prefetched, (first..8).collect::<Vec<_>>());
    // A status update (not a newcomer) does not repeat them.
    core.handle_status(peer(1), status_holding(2, "s", 0, 7), t0);
    assert!(
        !drain(&mut core)
            .iter()
            .any(|a| matches!(a, Action::Prefetch(_)))
    );
}

#[test]
fn gaps_trigger_a_rate_limited_sync_with_the_signer() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    core.handle_announcement(announcement_by(1, "s", 0, None), t0)
        .unwrap();
    core.handle_announcement(announcement_by(1, "s", 3, None), t0)
        .unwrap();
    core.handle_announcement(announcement_by(1, "s", 5, None), t0)
        .unwrap();
    let syncs: Vec<_> = drain(&mut core)
        .into_iter()
        .filter(|a| matches!(a, Action::Sync { .. }))
        .collect();
    assert_eq!(
        syncs,
        vec![Action::Sync {
            stream: name("s"),
            from: peer(1)
        }]
    );
}

#[test]
fn window_bounds_memory_and_evicts() {
    let t0 = crate::testing::t0();
    let config = Config {
        window: 4,
        ..Config::default()
    };
    let mut core = Core::new(peer(0), config);
    for seq in 0..10 {
        core.handle_ingested(announcement_by(0, "s", seq, None), t0)
            .unwrap();
    }
    let evicted: Vec<_> = drain(&mut core)
        .into_iter()
        .filter_map(|a| match a {
            Action::Evict(id) => Some(id.seq),
            _ => None,
        })
        .collect();
    assert_eq!(evicted, vec![0, 1, 2, 3, 4, 5]);
    let held = core.held_streams();
    assert_eq!((held[0].first_seq, held[0].last_seq), (6, 9));
    assert!(held[0].ingest);
}

#[test]
fn status_is_periodic_and_prompt_on_change() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    core.handle_tick(t0);
    assert_eq!(drain(&mut core), vec![Action::PublishStatus]);
    core.handle_tick(t0 + Duration::from_millis(500));
    assert_eq!(drain(&mut core), vec![]);
    // A change is published after the minimum interval, not the full one.
    core.handle_ingested(announcement_by(0, "s", 0, None), t0)
        .unwrap();
    core.handle_tick(t0 + Duration::from_millis(600));
    assert_eq!(drain(&mut core), vec![Action::PublishStatus]);
    core.handle_tick(t0 + Duration::from_millis(1700));
    assert_eq!(drain(&mut core), vec![Action::PublishStatus]);
}

#[test]
fn silent_peers_are_declared_gone() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    core.handle_status(peer(1), status_holding(1, "s", 0, 1), t0);
    core.handle_tick(t0 + Duration::from_secs(3));
    assert!(!drain(&mut core).contains(&Action::PeerGone(peer(1))));
    core.handle_tick(t0 + Duration::from_secs(6));
    assert!(drain(&mut core).contains(&Action::PeerGone(peer(1))));
    assert!(core.peers().is_empty());
}

#[test]
fn behind_a_holder_of_a_watched_stream_syncs() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    core.handle_status(peer(1), status_holding(1, "s", 0, 8), t0);
    drain(&mut core);
    // A player asks for the playlist of a stream only the peer holds.
    assert_eq!(
        core.admit_viewer(&name("s"), 1, false, t0),
        balance::Admission::Serve
    );
    core.handle_status(peer(1), status_holding(2, "s", 0, 9), t0);
    assert!(drain(&mut core).contains(&Action::Sync {
        stream: name("s"),
        from: peer(1)
    }));
}

#[test]
fn oversized_and_conflicting_announcements_are_rejected() {
    let t0 = crate::testing::t0();
    let config = Config {
        max_segment_size: 2,
        ..Config::default()
    };
    let mut core = Core::new(peer(0), config);
    assert_eq!(
        core.handle_announcement(announcement_by(1, "s", 0, None), t0),
        Err(Rejected::TooLarge(3))
    );
    let mut core = Core::new(peer(0), Config::default());
    core.handle_announcement(announcement_by(1, "s", 0, None), t0)
        .unwrap();
    let mut other = announcement_by(2, "s", 0, None);
    other.value.hash = ContentId::of(b"x");
    assert_eq!(core.handle_announcement(other, t0), Err(Rejected::Conflict));
}

#[test]
fn each_segment_is_uploaded_to_at_most_fanout_peers() {
    let t0 = crate::testing::t0();
    let config = Config {
        fanout: 2,
        ..Config::default()
    };
    let mut core = Core::new(peer(0), config);
    assert_eq!(core.admit_upload(&id("s", 0), 1), Upload::NotHeld);
    core.handle_ingested(announcement_by(0, "s", 0, None), t0)
        .unwrap();
    assert_eq!(core.admit_upload(&id("s", 0), 1), Upload::Serve);
    assert_eq!(core.admit_upload(&id("s", 0), 2), Upload::Serve);
    assert_eq!(core.admit_upload(&id("s", 0), 3), Upload::Busy(vec![]));
    // A retry by a peer already served is served again.
    assert_eq!(core.admit_upload(&id("s", 0), 1), Upload::Serve);
    assert_eq!(core.uploads(&id("s", 0)), 2);
    // The count is per segment.
    core.handle_ingested(announcement_by(0, "s", 1, None), t0)
        .unwrap();
    assert_eq!(core.admit_upload(&id("s", 1), 3), Upload::Serve);
}

#[test]
fn busy_holders_are_ranked_last_for_a_while() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    core.handle_status(peer(1), status_holding(1, "s", 0, 9), t0);
    core.handle_status(peer(2), status_holding(1, "s", 0, 9), t0);
    core.handle_rtt(peer(1), Duration::from_millis(1), t0);
    core.handle_rtt(peer(2), Duration::from_millis(20), t0);
    core.handle_announcement(announcement_by(1, "s", 3, None), t0)
        .unwrap();
    assert_eq!(core.holders(&id("s", 3), t0), vec![peer(1), peer(2)]);
    core.handle_busy(peer(1), t0);
    assert_eq!(core.holders(&id("s", 3), t0), vec![peer(2), peer(1)]);
    let later = t0 + core.config().busy_backoff;
    assert_eq!(core.holders(&id("s", 3), later), vec![peer(1), peer(2)]);
}

#[test]
fn the_earliest_live_ingest_claim_is_followed_and_the_standby_takes_over() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    let s = name("s");
    assert_eq!(core.active_source(&s), None);
    // This node's encoder started at 2000 ms; peer 1's at 1000 ms.
    core.handle_ingest_activity(&s, 2000, t0);
    assert_eq!(core.active_source(&s), Some(peer(0)));
    let mut st = status_holding(1, "other", 0, 0);
    st.ingesting = vec![IngestClaim {
        name: s.clone(),
        since: 1000,
    }];
    core.handle_status(peer(1), st, t0);
    assert_eq!(core.active_source(&s), Some(peer(1)));
    assert_eq!(core.ingest_claims().len(), 1);
    // Peer 1 goes silent: after the peer timeout this node is the source.
    core.handle_ingest_activity(&s, 9999, t0 + Duration::from_secs(4));
    core.handle_tick(t0 + Duration::from_secs(4));
    assert_eq!(core.active_source(&s), Some(peer(0)));
    // This node's own claim lapses when its encoder stops.
    core.handle_tick(t0 + Duration::from_secs(30));
    assert_eq!(core.active_source(&s), None);
    assert!(core.ingest_claims().is_empty());
}

#[test]
fn last_signer_tells_a_source_switch() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    core.handle_announcement(announcement_by(1, "s", 0, None), t0)
        .unwrap();
    assert_eq!(core.last_signer(&name("s")), Some(peer(1)));
    core.handle_ingested(announcement_by(0, "s", 1, None), t0)
        .unwrap();
    assert_eq!(core.last_signer(&name("s")), Some(peer(0)));
}

#[test]
fn busy_answers_name_the_fed_peers_in_rotation() {
    let t0 = crate::testing::t0();
    let config = Config {
        fanout: 2,
        ..Config::default()
    };
    let mut core = Core::new(peer(0), config);
    let mut keys = Vec::new();
    for n in 1..=3u8 {
        let mut st = status_holding(1, "other", 0, 0);
        st.data_addr = format!("127.0.0.{n}:4000").parse().unwrap();
        keys.push(requester_key(st.data_addr));
        core.handle_status(peer(n), st, t0);
    }
    core.handle_ingested(announcement_by(0, "s", 0, None), t0)
        .unwrap();
    assert_eq!(core.admit_upload(&id("s", 0), keys[0]), Upload::Serve);
    assert_eq!(core.admit_upload(&id("s", 0), keys[1]), Upload::Serve);
    let Upload::Busy(first) = core.admit_upload(&id("s", 0), keys[2]) else {
        panic!("expected busy");
    };
    let Upload::Busy(second) = core.admit_upload(&id("s", 0), keys[2]) else {
        panic!("expected busy");
    };
    let mut sorted = first.clone();
    sorted.sort();
    let mut expected = vec![peer(1), peer(2)];
    expected.sort();
    assert_eq!(sorted, expected);
    assert_ne!(
        first[0], second[0],
        "turned-away pullers are spread over the fed peers"
    );
}

#[test]
fn the_data_planes_rtt_ranks_a_peer_over_the_pings() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    core.handle_status(peer(1), status_holding(1, "s", 0, 9), t0);
    core.handle_status(peer(2), status_holding(1, "s", 0, 9), t0);
    // The new peers are probed over the data plane.
    let probes: Vec<Action> = drain(&mut core)
        .into_iter()
        .filter(|a| matches!(a, Action::Probe(_)))
        .collect();
    assert_eq!(probes, vec![Action::Probe(peer(1)), Action::Probe(peer(2))]);
    // Up to a bound: with MAX_PROBED peers measured, a newcomer is ranked by ping.
    let mut big = Core::new(peer(0), Config::default());
    for n in 1..=MAX_PROBED as u8 {
        big.handle_status(peer(n), status_holding(1, "s", 0, 9), t0);
        big.handle_data_rtt(peer(n), Duration::from_millis(5), t0);
    }
    drain(&mut big);
    big.handle_status(peer(200), status_holding(1, "s", 0, 9), t0);
    assert!(!drain(&mut big).contains(&Action::Probe(peer(200))));
    core.handle_announcement(announcement_by(1, "s", 5, None), t0)
        .unwrap();
    // By ping, 1 is nearer; the media path says 2 is.
    core.handle_rtt(peer(1), Duration::from_millis(1), t0);
    core.handle_rtt(peer(2), Duration::from_millis(2), t0);
    assert_eq!(core.holders(&id("s", 5), t0), vec![peer(1), peer(2)]);
    core.handle_data_rtt(peer(1), Duration::from_millis(80), t0);
    core.handle_data_rtt(peer(2), Duration::from_millis(10), t0);
    // A later ping does not override the data plane's figure.
    core.handle_rtt(peer(1), Duration::from_millis(1), t0);
    assert_eq!(core.holders(&id("s", 5), t0), vec![peer(2), peer(1)]);
}

#[test]
fn far_holders_are_reached_through_the_nearby_leader() {
    let t0 = crate::testing::t0();
    // Two siblings near each other, the origin (peer 1) far from both.
    let (low, high) = if peer(2) < peer(5) { (2, 5) } else { (5, 2) };
    let sibling = |me: u8, other: u8, carries: &str| {
        let mut core = Core::new(peer(me), Config::default());
        core.handle_status(peer(1), status_holding(1, "s", 0, 9), t0);
        core.handle_status(peer(other), status_holding(1, carries, 0, 8), t0);
        core.handle_announcement(announcement_by(1, "s", 9, None), t0)
            .unwrap();
        core.handle_data_rtt(peer(1), Duration::from_millis(120), t0);
        core.handle_data_rtt(peer(other), Duration::from_millis(1), t0);
        core
    };
    let id9 = id("s", 9);
    // The higher id waits briefly, then joins the lower one's pull.
    assert_eq!(
        sibling(high, low, "s").relay_leader(&id9, t0),
        Some((peer(low), Duration::from_millis(12)))
    );
    // The lower id leads: it pulls from afar itself.
    assert_eq!(sibling(low, high, "s").relay_leader(&id9, t0), None);
    // A near peer that does not carry the stream is no leader.
    assert_eq!(sibling(high, low, "x").relay_leader(&id9, t0), None);
    // A near origin is pulled from directly.
    let mut near = sibling(high, low, "s");
    near.handle_data_rtt(peer(1), Duration::from_millis(2), t0);
    assert_eq!(near.relay_leader(&id9, t0), None);
}

#[test]
fn a_stream_with_no_new_segment_for_two_durations_is_stalled() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    assert!(!core.source_stalled(&name("s"), t0));
    core.handle_announcement(announcement_by(1, "s", 0, None), t0)
        .unwrap();
    // 2 s segments: patience is 2 x 2 s + 1 s.
    assert!(!core.source_stalled(&name("s"), t0 + Duration::from_secs(5)));
    assert!(core.source_stalled(&name("s"), t0 + Duration::from_millis(5001)));
    // A new segment (not a late old one) resets it.
    let t1 = t0 + Duration::from_secs(6);
    core.handle_announcement(announcement_by(1, "s", 1, None), t1)
        .unwrap();
    assert!(!core.source_stalled(&name("s"), t1 + Duration::from_secs(1)));
    core.handle_announcement(
        announcement_by(1, "s", 0, None),
        t1 + Duration::from_secs(9),
    )
    .ok();
    assert!(core.source_stalled(&name("s"), t1 + Duration::from_secs(6)));
}

#[test]
fn sequence_numbers_beyond_the_bound_are_refused() {
    // A peer signs what it likes: an announcement at the top of the number space must
    // not overflow the arithmetic on it (the next number, the prefetch edge).
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    core.handle_media(&name("s"), 42, t0);
    for seq in [u64::MAX, u64::MAX - 1, segment::MAX_SEQ + 1] {
        assert_eq!(
            core.handle_announcement(announcement_by(1, "s", seq, None), t0),
            Err(Rejected::SeqOutOfRange(seq))
        );
    }
    core.handle_announcement(announcement_by(1, "s", segment::MAX_SEQ, None), t0)
        .unwrap();
    drain(&mut core);
    core.handle_tick(t0 + Duration::from_secs(1));
}
