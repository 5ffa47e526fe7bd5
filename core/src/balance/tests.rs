//! The balancer's decisions in virtual time.

use super::*;
use crate::testing::{announcement_sized, peer, status_holding};
use crate::{Config, Upload};
use shoal_protocol::status::Status;

const MBIT: u64 = 1_000_000;

fn name(s: &str) -> stream::Name {
    stream::Name::new(s).unwrap()
}

/// A node with `capacity` (no reserve) that relays stream "s" at 1 Mbit/s from peer 9
/// (ingest is not here, so it reserves nothing). A new viewer costs just its bitrate (the
/// startup surcharge has its own test).
fn node(capacity: u64, t0: Instant) -> Core {
    let config = Config {
        egress_capacity_bps: capacity,
        cpu_limit_permille: 900,
        startup_window: Duration::ZERO,
        ..Config::default()
    };
    let mut core = Core::new(peer(0), config);
    // 250,000 bytes per 2 s segment: 1 Mbit/s.
    let a = announcement_sized(9, "s", 0, None, 250_000);
    let id = a.value.id.clone();
    core.handle_announcement(a, t0).unwrap();
    core.handle_fetched(&id, peer(9), t0);
    assert_eq!(core.bitrate_bps(&name("s")), MBIT);
    assert_eq!(core.reserve_bps(), 0);
    core
}

/// Peer `n`'s status: capacity, viewer load, whether it holds "s", on HTTP port 8000+n.
fn status(n: u8, version: u64, capacity: u64, load: u64, holds: bool) -> Status {
    let mut s = status_holding(version, if holds { "s" } else { "other" }, 0, 3);
    s.http_addr = format!("127.0.0.1:{}", 8000 + n as u16).parse().unwrap();
    s.load.capacity_bps = capacity;
    s.load.viewer_load_bps = load;
    s
}

fn to(n: u8) -> Admission {
    Admission::Redirect(Target {
        peer: peer(n),
        http: Some(format!("127.0.0.1:{}", 8000 + n as u16).parse().unwrap()),
    })
}

#[test]
fn serves_while_it_has_headroom_then_redirects_then_refuses() {
    let t0 = crate::testing::t0();
    let mut core = node(2 * MBIT, t0);
    core.handle_status(peer(1), status(1, 1, 10 * MBIT, 9 * MBIT, true), t0);
    let s = name("s");
    assert_eq!(core.admit_viewer(&s, 1, false, t0), Admission::Serve);
    assert_eq!(core.admit_viewer(&s, 2, false, t0), Admission::Serve);
    assert_eq!(core.viewer_load_bps(), 2 * MBIT);
    // Full: the third goes to the peer, which has room for exactly one more.
    assert_eq!(core.admit_viewer(&s, 3, false, t0), to(1));
    assert_eq!(
        core.sessions().counts(&s).pending,
        2,
        "a redirected viewer is not counted here"
    );
    // The redirect is charged to the peer until its status catches up: no room left.
    assert!(matches!(
        core.admit_viewer(&s, 4, false, t0),
        Admission::Full { .. }
    ));
    // A redirected viewer is never redirected again: served if there is room, else 503.
    assert!(matches!(
        core.admit_viewer(&s, 5, true, t0),
        Admission::Full { .. }
    ));
    // Admitted viewers keep their node although it is full.
    assert_eq!(core.admit_viewer(&s, 1, false, t0), Admission::Serve);
    // The credit lapses; the peer's fresh status shows room again.
    let t1 = t0 + REDIRECT_CREDIT + Duration::from_millis(1);
    core.handle_status(peer(1), status(1, 2, 10 * MBIT, 8 * MBIT, true), t1);
    assert_eq!(core.admit_viewer(&s, 6, false, t1), to(1));
}

#[test]
fn no_capacity_means_no_limit() {
    let t0 = crate::testing::t0();
    let mut core = node(0, t0);
    core.handle_status(peer(1), status(1, 1, 0, 0, true), t0);
    for v in 0..1000 {
        assert_eq!(
            core.admit_viewer(&name("s"), v, false, t0),
            Admission::Serve
        );
    }
    assert_eq!(core.own_load().viewer_load_bps, 1000 * MBIT);
}

#[test]
fn redirect_target_is_near_holding_and_not_full_or_draining() {
    let t0 = crate::testing::t0();
    let mut core = node(MBIT, t0);
    let s = name("s");
    core.admit_viewer(&s, 1, false, t0);
    // 1: near, holds, nearly full. 2: near, does not hold, empty. 3: far, holds, empty.
    // 4: nearest, draining. 5: nearest, full.
    core.handle_status(peer(1), status(1, 1, 10 * MBIT, 8 * MBIT, true), t0);
    core.handle_status(peer(2), status(2, 1, 10 * MBIT, 0, false), t0);
    core.handle_status(peer(3), status(3, 1, 10 * MBIT, 0, true), t0);
    let mut draining = status(4, 1, 10 * MBIT, 0, true);
    draining.draining = true;
    core.handle_status(peer(4), draining, t0);
    core.handle_status(peer(5), status(5, 1, 10 * MBIT, 10 * MBIT, true), t0);
    core.handle_rtt(peer(1), Duration::from_millis(2), t0);
    core.handle_rtt(peer(2), Duration::from_millis(2), t0);
    core.handle_rtt(peer(3), Duration::from_millis(80), t0);
    core.handle_rtt(peer(4), Duration::from_millis(1), t0);
    core.handle_rtt(peer(5), Duration::from_millis(1), t0);
    // Costs: 1 = 2 + 0 + 50 x 0.9 = 47; 2 = 2 + 25 + 5 = 32; 3 = 80 + 5 = 85.
    assert_eq!(core.admit_viewer(&s, 2, false, t0), to(2));
    // The same viewer asking again goes to the same node.
    assert_eq!(core.admit_viewer(&s, 2, false, t0), to(2));
    // Once peer 2 holds the stream and is as loaded as peer 1, the holder with the most
    // room wins; the far node is used only when the near ones are full.
    let t1 = t0 + REDIRECT_CREDIT;
    core.handle_status(peer(2), status(2, 2, 10 * MBIT, 9 * MBIT, true), t1);
    assert_eq!(core.admit_viewer(&s, 3, false, t1), to(1));
    assert_eq!(core.admit_viewer(&s, 4, false, t1), to(2));
    // Peer 1 has room for one more (cost 2 + 50 x 1.0 = 52 < 85); then only far 3 has.
    assert_eq!(core.admit_viewer(&s, 5, false, t1), to(1));
    assert_eq!(core.admit_viewer(&s, 6, false, t1), to(3));
}

#[test]
fn a_burst_between_statuses_spreads_over_peers() {
    let t0 = crate::testing::t0();
    let mut core = node(MBIT, t0);
    let s = name("s");
    core.admit_viewer(&s, 0, false, t0);
    for n in 1..=3 {
        core.handle_status(peer(n), status(n, 1, 4 * MBIT, 0, true), t0);
        core.handle_rtt(peer(n), Duration::from_millis(1), t0);
    }
    let mut per_peer = HashMap::new();
    for v in 1..=12 {
        match core.admit_viewer(&s, v, false, t0) {
            Admission::Redirect(t) => *per_peer.entry(t.peer).or_insert(0) += 1,
            other => panic!("viewer {v}: {other:?}"),
        }
    }
    // 12 viewers, 3 peers with room for 4 each: credits spread them evenly.
    assert_eq!(per_peer.len(), 3);
    assert!(per_peer.values().all(|&n| n == 4), "{per_peer:?}");
    assert!(matches!(
        core.admit_viewer(&s, 13, false, t0),
        Admission::Full { .. }
    ));
}

#[test]
fn draining_redirects_new_viewers_and_hands_off_admitted_ones() {
    let t0 = crate::testing::t0();
    let mut core = node(10 * MBIT, t0);
    let s = name("s");
    core.handle_status(peer(1), status(1, 1, 10 * MBIT, 0, true), t0);
    assert_eq!(core.admit_viewer(&s, 1, false, t0), Admission::Serve);
    core.start_drain(Duration::from_secs(30), t0);
    assert_eq!(core.drain(), Some(crate::drain::Drain::Draining));
    assert_eq!(core.admit_viewer(&s, 2, false, t0), to(1));
    assert_eq!(core.admit_viewer(&s, 1, false, t0), Admission::Serve);
    // A viewer redirected here by a peer that had not seen the drain yet is served.
    assert_eq!(core.admit_viewer(&s, 3, true, t0), Admission::Serve);
    // Past the deadline: hand-off.
    let later = t0 + Duration::from_secs(31);
    core.handle_status(peer(1), status(1, 2, 10 * MBIT, 0, true), later);
    core.handle_tick(later);
    assert_eq!(core.drain(), Some(crate::drain::Drain::HandOff));
    assert_eq!(core.admit_viewer(&s, 1, false, later), to(1));
    // With nowhere to go, a draining node still serves rather than refuse.
    let mut alone = node(10 * MBIT, t0);
    alone.start_drain(Duration::from_secs(30), t0);
    assert_eq!(alone.admit_viewer(&s, 1, false, t0), Admission::Serve);
}

#[test]
fn route_picks_the_cheapest_node_including_this_one() {
    let t0 = crate::testing::t0();
    let mut core = node(10 * MBIT, t0);
    let s = name("s");
    core.handle_status(peer(1), status(1, 1, 10 * MBIT, 0, true), t0);
    core.handle_rtt(peer(1), Duration::from_millis(1), t0);
    // Both empty and holding: this node costs 0 + 50 x 0.1, the peer 1 + 50 x 0.1.
    assert_eq!(core.route(&s, t0).unwrap().http, None);
    for v in 0..8 {
        core.admit_viewer(&s, v, false, t0);
    }
    // This node is at 90%: the empty peer is cheaper.
    assert_eq!(core.route(&s, t0).unwrap().peer, peer(1));
    core.start_drain(Duration::from_secs(30), t0);
    assert_eq!(core.route(&s, t0).unwrap().peer, peer(1));
}

#[test]
fn busy_cpu_takes_no_new_viewers() {
    let t0 = crate::testing::t0();
    let mut core = node(10 * MBIT, t0);
    let s = name("s");
    let mut hot = status(1, 1, 10 * MBIT, 0, true);
    hot.load.cpu_permille = 950;
    core.handle_status(peer(1), hot, t0);
    core.set_cpu(950);
    assert!(!core.has_headroom(&s));
    assert!(matches!(
        core.admit_viewer(&s, 1, false, t0),
        Admission::Full { .. }
    ));
}

#[test]
fn rising_demand_pre_warms_the_peers_viewers_will_be_sent_to() {
    let t0 = crate::testing::t0();
    let mut core = node(4 * MBIT, t0);
    let s = name("s");
    // 1 holds the stream and has room for 16; 2 and 3 are empty, 3 is far.
    core.handle_status(peer(1), status(1, 1, 20 * MBIT, 4 * MBIT, true), t0);
    core.handle_status(peer(2), status(2, 1, 20 * MBIT, 0, false), t0);
    core.handle_status(peer(3), status(3, 1, 20 * MBIT, 0, false), t0);
    core.handle_rtt(peer(1), Duration::from_millis(1), t0);
    core.handle_rtt(peer(2), Duration::from_millis(1), t0);
    core.handle_rtt(peer(3), Duration::from_millis(90), t0);
    // Quiet: two viewers in 5 s predict 2 + 0.4 x 10 = 6 Mbit against a 4 Mbit budget:
    // the excess of 2 fits on peer 1, the cheapest, which holds the stream already.
    core.admit_viewer(&s, 1, false, t0);
    core.admit_viewer(&s, 2, false, t0);
    core.handle_tick(t0);
    assert!(core.warm_requests().is_empty());
    // A crowd: 10 arrivals in a second predict 4 + 2.4 x 10 = 28 Mbit, 24 over budget.
    // Peer 1's room (after the viewers just sent to it) is not enough; peer 2 is next in
    // line and is asked to pre-warm; far peer 3 is not needed.
    let t1 = t0 + Duration::from_secs(1);
    for v in 10..20 {
        core.admit_viewer(&s, v, false, t1);
    }
    core.handle_tick(t1);
    let warm = core.warm_requests();
    assert_eq!(warm.len(), 1, "{warm:?}");
    assert_eq!(warm[0].stream, s);
    assert_eq!(warm[0].peers, vec![peer(2)]);

    // Peer 2's side: the request arrives in this node's status; it syncs the stream
    // and then pulls each new segment as if it had viewers.
    let mut other = Core::new(peer(2), Config::default());
    let mut asking = status(0, 5, 4 * MBIT, 4 * MBIT, true);
    asking.warm = warm;
    other.handle_status(peer(0), asking, t1);
    assert!(other.is_warm(&s));
    let actions: Vec<_> = std::iter::from_fn(|| other.poll_action()).collect();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, crate::Action::Sync { from, .. } if *from == peer(0))),
        "{actions:?}"
    );
    other
        .handle_announcement(announcement_sized(0, "s", 1, None, 1000), t1)
        .unwrap();
    let actions: Vec<_> = std::iter::from_fn(|| other.poll_action()).collect();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, crate::Action::Prefetch(_))),
        "{actions:?}"
    );
    // Not renewed: it cools down.
    other.handle_tick(t1 + other.config().warm_ttl + Duration::from_secs(1));
    assert!(!other.is_warm(&s));
}

#[test]
fn a_new_viewer_costs_twice_its_bitrate_while_it_fills_its_buffer() {
    let t0 = crate::testing::t0();
    let mut core = node(4 * MBIT, t0);
    core.config.startup_window = Duration::from_secs(5);
    let s = name("s");
    assert_eq!(core.admit_viewer(&s, 1, false, t0), Admission::Serve);
    assert_eq!(core.viewer_load_bps(), 2 * MBIT, "pending: about to start");
    core.handle_media(&s, 1, t0);
    assert_eq!(
        core.viewer_load_bps(),
        2 * MBIT,
        "watching, filling its buffer"
    );
    assert_eq!(core.admit_viewer(&s, 2, false, t0), Admission::Serve);
    core.handle_media(&s, 2, t0);
    assert_eq!(core.viewer_load_bps(), 4 * MBIT);
    // Full while both start...
    assert!(matches!(
        core.admit_viewer(&s, 3, false, t0),
        Admission::Full { .. }
    ));
    // ...room for two more once they play steadily.
    let t1 = t0 + Duration::from_secs(6);
    core.handle_tick(t1);
    assert_eq!(core.viewer_load_bps(), 2 * MBIT);
    assert_eq!(core.admit_viewer(&s, 3, false, t1), Admission::Serve);
}

#[test]
fn measured_egress_beyond_the_model_takes_no_new_viewers() {
    let t0 = crate::testing::t0();
    let mut core = node(4 * MBIT, t0);
    // Peer 1's model says empty but it is measured sending all it may; peer 3 has room.
    let mut busy = status(1, 1, 10 * MBIT, 0, true);
    busy.load.egress_bps = 10 * MBIT;
    core.handle_status(peer(1), busy, t0);
    core.handle_status(peer(3), status(3, 1, 10 * MBIT, 8 * MBIT, true), t0);
    let s = name("s");
    assert_eq!(core.admit_viewer(&s, 1, false, t0), Admission::Serve);
    // The model says 1 of 4 Mbit, but the viewer is measured taking 4 (fetching ahead):
    // smoothed over a few seconds, that fills the node.
    let mut t = t0;
    for _ in 0..10 {
        t += Duration::from_secs(1);
        core.observe_egress(4 * MBIT, 0, t);
    }
    assert_eq!(core.viewer_load_bps(), MBIT);
    assert!(viewer_use(&core.own_load()) > 3 * MBIT);
    assert_eq!(core.admit_viewer(&s, 2, false, t), to(3));
    // Full as measured is full for a redirected viewer too.
    assert!(matches!(
        core.admit_viewer(&s, 3, true, t),
        Admission::Full { .. }
    ));
    // Relaying is the reserve's business: 2 Mbit measured, half of it to peers, leaves
    // the viewers' use as the model says, and room for more.
    for _ in 0..10 {
        t += Duration::from_secs(1);
        core.observe_egress(2 * MBIT, MBIT, t);
    }
    assert!(viewer_use(&core.own_load()) < MBIT + MBIT / 20);
    assert_eq!(core.admit_viewer(&s, 4, false, t), Admission::Serve);
}

#[test]
fn past_capacity_only_its_own_ingest_is_relayed() {
    let t0 = crate::testing::t0();
    let mut core = node(4 * MBIT, t0);
    // "i" is ingested here; "s" is relayed (from peer 9).
    let ingested = announcement_sized(0, "i", 0, None, 125_000);
    let i0 = ingested.value.id.clone();
    core.handle_ingested(ingested, t0).unwrap();
    let s0 = shoal_protocol::segment::Id {
        stream: name("s"),
        seq: 0,
    };
    // Ingest takes one copy's worth of egress whatever the configured reserve.
    assert_eq!(core.reserve_bps(), MBIT / 2);
    assert_eq!(viewer_budget(&core.own_load()), Some(4 * MBIT - MBIT / 2));
    assert_eq!(core.admit_upload(&s0, 7), Upload::Serve);
    let mut t = t0;
    for _ in 0..10 {
        t += Duration::from_secs(1);
        core.observe_egress(5 * MBIT, MBIT, t);
    }
    assert!(core.over_capacity());
    // The peer already fed is served again (a retry); a new one is turned away from the
    // relayed stream but still gets the stream ingested here.
    assert_eq!(core.admit_upload(&s0, 7), Upload::Serve);
    assert!(matches!(core.admit_upload(&s0, 8), Upload::Busy(_)));
    assert_eq!(core.admit_upload(&i0, 8), Upload::Serve);
}
