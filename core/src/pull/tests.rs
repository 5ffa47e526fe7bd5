//! The pull state machine, answer by answer, in virtual time.

use super::*;
use crate::Config;
use crate::testing::{announcement_by, peer, status_holding, t0};

fn seg(seq: u64) -> segment::Id {
    segment::Id {
        stream: stream::Name::new("s").unwrap(),
        seq,
    }
}

/// A core with peers 1..=n holding `s` #0..=9, peer k at k ms, and #9 announced.
fn core_with_holders(n: u8, now: Instant) -> Core {
    let mut core = Core::new(peer(0), Config::default());
    for k in 1..=n {
        core.handle_status(peer(k), status_holding(1, "s", 0, 9), now);
        core.handle_data_rtt(peer(k), Duration::from_millis(k as u64), now);
    }
    core.handle_announcement(announcement_by(1, "s", 9, None), now)
        .unwrap();
    core
}

fn asks(step: &PullStep) -> PeerId {
    match step {
        PullStep::Request { peer, .. } => *peer,
        other => panic!("expected a request, got {other:?}"),
    }
}

#[test]
fn holders_are_asked_nearest_first_until_one_delivers() {
    let t = t0();
    let mut core = core_with_holders(3, t);
    let (id, step) = core.start_pull(Pulled::Segment(seg(9)), t);
    assert_eq!(
        step,
        PullStep::Request {
            peer: peer(1),
            at: t
        }
    );
    let step = core.handle_pull_result(id, peer(1), PullResult::Failed, t);
    assert_eq!(asks(&step), peer(2));
    let step = core.handle_pull_result(id, peer(2), PullResult::Bytes, t);
    assert_eq!(step, PullStep::Done(Ok(peer(2))));
    assert_eq!(core.pulls_in_flight(), 0);
}

#[test]
fn every_holder_failing_ends_the_pull() {
    let t = t0();
    let mut core = core_with_holders(2, t);
    let (id, step) = core.start_pull(Pulled::Segment(seg(9)), t);
    let step = core.handle_pull_result(id, asks(&step), PullResult::Failed, t);
    let step = core.handle_pull_result(id, asks(&step), PullResult::Failed, t);
    assert_eq!(step, PullStep::Done(Err(PullFailed::AllFailed)));
    assert_eq!(core.pulls_in_flight(), 0);
}

#[test]
fn a_round_asks_at_most_max_attempts_holders() {
    let t = t0();
    let mut core = core_with_holders(8, t);
    let (id, mut step) = core.start_pull(Pulled::Segment(seg(9)), t);
    let mut asked = Vec::new();
    while let PullStep::Request { peer, .. } = step {
        asked.push(peer);
        step = core.handle_pull_result(id, peer, PullResult::Failed, t);
    }
    assert_eq!(
        asked,
        (1..=MAX_ATTEMPTS as u8).map(peer).collect::<Vec<_>>()
    );
}

#[test]
fn a_busy_holder_sends_the_puller_to_the_peers_it_fed() {
    let t = t0();
    let mut core = core_with_holders(2, t);
    // Peer 7 is known (it was fed #9) but its status does not list #9 yet.
    core.handle_status(peer(7), status_holding(1, "other", 0, 0), t);
    let (id, step) = core.start_pull(Pulled::Segment(seg(9)), t);
    assert_eq!(asks(&step), peer(1));
    let busy = PullResult::Busy {
        fed: vec![peer(7), peer(0)],
    };
    let step = core.handle_pull_result(id, peer(1), busy, t);
    // The fed peer first (never this node itself), then the rest of the round.
    assert_eq!(asks(&step), peer(7));
    let step = core.handle_pull_result(id, peer(7), PullResult::Bytes, t);
    assert_eq!(step, PullStep::Done(Ok(peer(7))));
}

#[test]
fn all_busy_pauses_and_starts_a_new_round_until_the_deadline() {
    let t = t0();
    let mut core = core_with_holders(1, t);
    let busy = || PullResult::Busy { fed: vec![] };
    let (id, step) = core.start_pull(Pulled::Segment(seg(9)), t);
    let step = core.handle_pull_result(id, asks(&step), busy(), t);
    assert_eq!(step, PullStep::Wait { at: t + BUSY_PAUSE });
    // Meanwhile peer 2 says it holds #9: the next round finds it.
    core.handle_status(peer(2), status_holding(1, "s", 0, 9), t);
    let later = t + BUSY_PAUSE;
    let step = core.resume_pull(id, later);
    let first = asks(&step);
    let step = core.handle_pull_result(id, first, busy(), later);
    let second = asks(&step);
    assert_ne!(first, second);
    assert_eq!(
        core.handle_pull_result(id, second, busy(), later),
        PullStep::Wait {
            at: later + BUSY_PAUSE
        }
    );
    // Past the deadline, busy holders end it.
    let late = t + BUSY_DEADLINE;
    let step = core.resume_pull(id, late);
    let step = core.handle_pull_result(id, asks(&step), busy(), late);
    let step = core.handle_pull_result(id, asks(&step), busy(), late);
    assert_eq!(step, PullStep::Done(Err(PullFailed::AllBusy)));
}

#[test]
fn bad_bytes_penalise_the_sender_for_the_next_rounds() {
    let t = t0();
    let mut core = core_with_holders(2, t);
    let (id, step) = core.start_pull(Pulled::Segment(seg(9)), t);
    assert_eq!(asks(&step), peer(1));
    let step = core.handle_pull_result(id, peer(1), PullResult::BadBytes, t);
    assert_eq!(asks(&step), peer(2));
    core.handle_pull_result(id, peer(2), PullResult::Bytes, t);
    // A new pull does not ask the penalised peer first.
    let (_, step) = core.start_pull(Pulled::Segment(seg(9)), t);
    assert_eq!(asks(&step), peer(2));
}

#[test]
fn unknown_segments_and_holders_end_at_once() {
    let t = t0();
    let mut core = core_with_holders(1, t);
    let (_, step) = core.start_pull(Pulled::Segment(seg(3)), t);
    assert_eq!(step, PullStep::Done(Err(PullFailed::NotAnnounced)));
    let mut lonely = Core::new(peer(0), Config::default());
    lonely
        .handle_announcement(announcement_by(1, "s", 9, None), t)
        .unwrap();
    // The signer counts as a holder, but without its status its address is unknown.
    let (_, step) = lonely.start_pull(Pulled::Segment(seg(9)), t);
    assert_eq!(step, PullStep::Done(Err(PullFailed::NoHolder)));
    assert_eq!(lonely.pulls_in_flight(), 0);
}

#[test]
fn a_manifest_is_asked_of_the_named_peer_first() {
    let t = t0();
    let mut core = core_with_holders(3, t);
    let what = Pulled::Manifest {
        stream: stream::Name::new("s").unwrap(),
        from: Some(peer(3)),
    };
    let (id, step) = core.start_pull(what, t);
    assert_eq!(asks(&step), peer(3));
    let step = core.handle_pull_result(id, peer(3), PullResult::Failed, t);
    assert!(matches!(step, PullStep::Request { .. }));
}

#[test]
fn an_init_pull_does_not_wait_for_busy_holders() {
    let t = t0();
    let mut core = core_with_holders(1, t);
    let what = Pulled::Init {
        stream: stream::Name::new("s").unwrap(),
        hash: ContentId::of(b"init"),
    };
    let (id, step) = core.start_pull(what, t);
    let step = core.handle_pull_result(id, asks(&step), PullResult::Busy { fed: vec![] }, t);
    assert_eq!(step, PullStep::Done(Err(PullFailed::AllBusy)));
}

#[test]
fn a_far_segment_is_asked_of_the_nearby_leader_first() {
    let t = t0();
    // Origin peer 1 far away; a sibling near, carrying the stream, with a lower id.
    let (low, high) = if peer(2) < peer(5) { (2, 5) } else { (5, 2) };
    let mut core = Core::new(peer(high), Config::default());
    core.handle_status(peer(1), status_holding(1, "s", 0, 9), t);
    core.handle_status(peer(low), status_holding(1, "s", 0, 8), t);
    core.handle_announcement(announcement_by(1, "s", 9, None), t)
        .unwrap();
    core.handle_data_rtt(peer(1), Duration::from_millis(120), t);
    core.handle_data_rtt(peer(low), Duration::from_millis(1), t);
    let (id, step) = core.start_pull(Pulled::Segment(seg(9)), t);
    let PullStep::Request { peer: leader, at } = step else {
        panic!("expected the leader to be asked");
    };
    assert_eq!(leader, peer(low));
    assert!(at > t, "the leader is given a head start");
    // The leader did not deliver: the far holder.
    let step = core.handle_pull_result(id, leader, PullResult::Failed, at);
    assert_eq!(asks(&step), peer(1));
}

#[test]
fn cancelled_and_unknown_pulls_are_told_so() {
    let t = t0();
    let mut core = core_with_holders(1, t);
    let (id, _) = core.start_pull(Pulled::Segment(seg(9)), t);
    core.cancel_pull(id);
    assert_eq!(core.pulls_in_flight(), 0);
    assert_eq!(
        core.handle_pull_result(id, peer(1), PullResult::Bytes, t),
        PullStep::Done(Err(PullFailed::Unknown))
    );
    assert_eq!(
        core.resume_pull(id, t),
        PullStep::Done(Err(PullFailed::Unknown))
    );
}

#[test]
fn pulls_in_flight_are_bounded() {
    let t = t0();
    let mut core = core_with_holders(1, t);
    for _ in 0..MAX_PULLS {
        let (_, step) = core.start_pull(Pulled::Segment(seg(9)), t);
        assert!(matches!(step, PullStep::Request { .. }));
    }
    let (_, step) = core.start_pull(Pulled::Segment(seg(9)), t);
    assert_eq!(step, PullStep::Done(Err(PullFailed::Overloaded)));
}

#[test]
fn a_busy_leader_sends_the_puller_to_the_peers_it_fed_not_afar() {
    let t = t0();
    let (low, high) = if peer(2) < peer(5) { (2, 5) } else { (5, 2) };
    let mut core = Core::new(peer(high), Config::default());
    core.handle_status(peer(1), status_holding(1, "s", 0, 9), t);
    core.handle_status(peer(low), status_holding(1, "s", 0, 8), t);
    core.handle_status(peer(7), status_holding(1, "s", 0, 8), t);
    core.handle_announcement(announcement_by(1, "s", 9, None), t)
        .unwrap();
    core.handle_data_rtt(peer(1), Duration::from_millis(120), t);
    core.handle_data_rtt(peer(low), Duration::from_millis(1), t);
    core.handle_data_rtt(peer(7), Duration::from_millis(1), t);
    let (id, step) = core.start_pull(Pulled::Segment(seg(9)), t);
    let leader = asks(&step);
    assert_eq!(leader, peer(low));
    let busy = PullResult::Busy { fed: vec![peer(7)] };
    let step = core.handle_pull_result(id, leader, busy, t);
    assert_eq!(
        asks(&step),
        peer(7),
        "the near fed peer, not the far origin"
    );
    let step = core.handle_pull_result(id, peer(7), PullResult::Failed, t);
    assert_eq!(asks(&step), peer(1), "then the holders");
}
