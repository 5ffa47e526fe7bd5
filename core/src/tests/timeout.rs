//! `Core::poll_timeout`: a driver that ticks only when the core asks still publishes,
//! expires and notices changes on time.

use super::*;

/// Ticks `core` at each time it asks for until `end`; returns the tick times and the
/// actions with the time they came out.
fn run_until(core: &mut Core, end: Instant) -> (Vec<Instant>, Vec<(Instant, Action)>) {
    let (mut ticks, mut actions) = (Vec::new(), Vec::new());
    while let Some(at) = core.poll_timeout() {
        if at > end {
            break;
        }
        core.handle_tick(at);
        ticks.push(at);
        actions.extend(drain(core).into_iter().map(|a| (at, a)));
    }
    (ticks, actions)
}

#[test]
fn the_first_tick_is_at_once_then_about_twice_a_second() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    assert_eq!(core.poll_timeout(), None, "never ticked: tick now");
    core.handle_tick(t0);
    assert_eq!(drain(&mut core), vec![Action::PublishStatus]);
    let (ticks, actions) = run_until(&mut core, t0 + Duration::from_secs(10));
    // Status every second and housekeeping every second fall together: ten ticks in ten
    // seconds, not a hundred.
    assert_eq!(ticks.len(), 10, "{ticks:?}");
    let published = actions
        .iter()
        .filter(|(_, a)| *a == Action::PublishStatus)
        .count();
    assert_eq!(published, 10);
}

#[test]
fn a_change_brings_the_next_status_forward_and_says_so_once() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    core.handle_tick(t0);
    drain(&mut core);
    assert!(!core.take_wake());
    assert_eq!(core.poll_timeout(), Some(t0 + HOUSEKEEPING));
    // A first viewer: load peers balance on, so the status goes out promptly.
    core.handle_announcement(announcement_by(1, "s", 0, None), t0)
        .unwrap();
    core.handle_media(&name("s"), 7, t0 + Duration::from_millis(50));
    assert!(core.take_wake(), "the deadline moved");
    drain(&mut core);
    assert!(!core.take_wake(), "told once, and no action left");
    let due = t0 + core.config().status_min_interval;
    assert_eq!(core.poll_timeout(), Some(due));
    core.handle_tick(due);
    assert!(drain(&mut core).contains(&Action::PublishStatus));
    // The same viewer again changes nothing.
    core.handle_media(&name("s"), 7, due);
    assert!(!core.take_wake());
    // Actions left to carry out wake the driver too.
    core.handle_announcement(announcement_by(1, "s", 1, None), due)
        .unwrap();
    assert!(core.take_wake(), "a prefetch to start");
}

#[test]
fn a_silent_peer_is_declared_gone_just_after_its_timeout() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    core.handle_tick(t0);
    let heard = t0 + Duration::from_millis(300);
    core.handle_status(peer(1), status_holding(1, "s", 0, 3), heard);
    drain(&mut core);
    let (_, actions) = run_until(&mut core, t0 + Duration::from_secs(10));
    let gone: Vec<Instant> = actions
        .iter()
        .filter(|(_, a)| *a == Action::PeerGone(peer(1)))
        .map(|(t, _)| *t)
        .collect();
    let timeout = core.config().peer_timeout;
    assert_eq!(gone.len(), 1, "{actions:?}");
    assert!(
        gone[0] > heard + timeout && gone[0] < heard + timeout + Duration::from_millis(1),
        "gone {:?} after it was heard",
        gone[0] - heard
    );
}

#[test]
fn an_ingest_claim_lapses_on_time() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    core.handle_tick(t0);
    let s = name("s");
    core.handle_ingest_activity(&s, 1, t0);
    assert!(core.claims.contains_key(&s));
    let idle = core.config().ingest_idle;
    run_until(&mut core, t0 + idle);
    assert!(core.claims.contains_key(&s), "not before its time");
    let (ticks, _) = run_until(&mut core, t0 + idle + Duration::from_millis(1));
    assert!(!core.claims.contains_key(&s));
    assert!(
        ticks
            .iter()
            .all(|t| *t <= t0 + idle + Duration::from_millis(1))
    );
}

#[test]
fn a_new_holder_says_so_at_once_and_each_further_segment_waits_for_the_periodic_status() {
    let t0 = crate::testing::t0();
    let mut core = Core::new(peer(0), Config::default());
    core.handle_tick(t0);
    drain(&mut core);
    for seq in 0..3 {
        core.handle_announcement(announcement_by(1, "s", seq, None), t0)
            .unwrap();
    }
    drain(&mut core);
    core.take_wake();
    // The first segment held of the stream: peers learn promptly that it carries it.
    assert!(core.handle_fetched(&id("s", 0), peer(1), t0));
    let due = t0 + core.config().status_min_interval;
    assert_eq!(core.poll_timeout(), Some(due));
    core.handle_tick(due);
    assert!(drain(&mut core).contains(&Action::PublishStatus));
    // Further segments ride on the next periodic status, a second later.
    assert!(core.handle_fetched(&id("s", 1), peer(1), due));
    assert!(core.handle_fetched(&id("s", 2), peer(1), due));
    assert_eq!(core.poll_timeout(), Some(t0 + HOUSEKEEPING));
    core.handle_tick(t0 + HOUSEKEEPING);
    assert!(!drain(&mut core).contains(&Action::PublishStatus));
    core.handle_tick(due + core.config().status_interval);
    assert!(drain(&mut core).contains(&Action::PublishStatus));
    assert_eq!(core.held_streams()[0].last_seq, 2);
}
