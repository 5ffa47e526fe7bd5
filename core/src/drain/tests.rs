//! Drain's phases in virtual time, ticked only when the core asks.

use super::*;
use crate::Config;
use crate::testing::{announcement_by, peer, t0};
use shoal_protocol::stream;

fn name() -> stream::Name {
    stream::Name::new("s").unwrap()
}

/// A core with stream `s` and one viewer watching it at `t0`.
fn watched(t0: Instant) -> Core {
    let mut core = Core::new(peer(0), Config::default());
    core.handle_tick(t0);
    core.handle_announcement(announcement_by(1, "s", 0, None), t0)
        .unwrap();
    core.handle_media(&name(), 7, t0);
    assert_eq!(core.total_viewers(), 1);
    core
}

/// Ticks at each time the core asks for up to `end`, the viewer fetching every
/// `every` until `viewer_until`; returns the drain actions with their times.
fn run(
    core: &mut Core,
    end: Instant,
    every: Duration,
    viewer_until: Instant,
    start: Instant,
) -> Vec<(Instant, Action)> {
    let mut out = Vec::new();
    let mut next_request = start + every;
    while let Some(at) = core.poll_timeout() {
        let requesting = next_request <= viewer_until;
        let at = if requesting { at.min(next_request) } else { at };
        if at > end {
            break;
        }
        if requesting && at == next_request {
            core.handle_media(&name(), 7, at);
            next_request += every;
        } else {
            core.handle_tick(at);
        }
        out.extend(
            std::iter::from_fn(|| core.poll_action())
                .filter(|a| matches!(a, Action::Drain(_) | Action::Leave))
                .map(|a| (at, a)),
        );
    }
    out
}

#[test]
fn serves_until_the_deadline_hands_off_then_leaves_once_viewers_are_quiet() {
    let t0 = t0();
    let mut core = watched(t0);
    core.start_drain(Duration::from_secs(10), t0);
    assert_eq!(core.drain(), Some(Drain::Draining));
    // The viewer keeps fetching every 2 s until t0 + 20 s.
    let seen = run(
        &mut core,
        t0 + Duration::from_secs(60),
        Duration::from_secs(2),
        t0 + Duration::from_secs(20),
        t0,
    );
    let at = |a: Action| seen.iter().find(|(_, x)| *x == a).map(|(t, _)| *t - t0);
    assert_eq!(
        at(Action::Drain(Drain::HandOff)),
        Some(Duration::from_secs(10))
    );
    // Last request at 20 s, quiet for 3 s.
    assert_eq!(at(Action::Leave), Some(Duration::from_secs(23)));
    assert_eq!(
        seen.iter().filter(|(_, a)| *a == Action::Leave).count(),
        1,
        "leave is said once"
    );
}

#[test]
fn a_node_without_viewers_hands_off_at_once_and_leaves_after_the_quiet_time() {
    let t0 = t0();
    let mut core = Core::new(peer(0), Config::default());
    core.handle_tick(t0);
    core.start_drain(Duration::from_secs(30), t0);
    assert!(std::iter::from_fn(|| core.poll_action()).any(|a| a == Action::Drain(Drain::Draining)));
    let seen = run(
        &mut core,
        t0 + Duration::from_secs(60),
        Duration::from_secs(1),
        t0,
        t0,
    );
    let hand_off = seen[0].0 - t0;
    assert_eq!(seen[0].1, Action::Drain(Drain::HandOff));
    assert!(hand_off <= Duration::from_millis(200), "{hand_off:?}");
    assert_eq!(seen[1], (seen[0].0 + HAND_OFF_QUIET, Action::Leave));
}

#[test]
fn a_viewer_that_never_goes_quiet_holds_the_node_at_most_the_hand_off_limit() {
    let t0 = t0();
    let mut core = watched(t0);
    core.start_drain(Duration::from_secs(5), t0);
    let seen = run(
        &mut core,
        t0 + Duration::from_secs(120),
        Duration::from_secs(1),
        t0 + Duration::from_secs(120),
        t0,
    );
    let leave = seen.iter().find(|(_, a)| *a == Action::Leave).unwrap().0 - t0;
    assert_eq!(leave, Duration::from_secs(5) + HAND_OFF_MAX);
}

#[test]
fn a_second_drain_request_can_only_bring_the_hand_off_forward() {
    let t0 = t0();
    let mut core = watched(t0);
    core.start_drain(Duration::from_secs(10), t0);
    core.start_drain(Duration::from_secs(100), t0 + Duration::from_secs(1));
    assert_eq!(core.drain_deadline(), Some(t0 + Duration::from_secs(10)));
    // The operator's API asked first with the default deadline; the owner drains with a
    // shorter one.
    core.start_drain(Duration::from_secs(1), t0 + Duration::from_secs(2));
    assert_eq!(core.drain_deadline(), Some(t0 + Duration::from_secs(3)));
    let actions: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::Drain(_)))
            .count(),
        1,
        "one phase change: {actions:?}"
    );
}
