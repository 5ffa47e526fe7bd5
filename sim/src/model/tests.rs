//! The mesh's logic across many cores, in virtual time: no sockets, no sleeps.

use super::*;
use crate::bench::{ms, percentile};

const MB: u64 = 1_000_000;
const GBIT: u64 = 1_000_000_000;

fn config(fanout: usize) -> Config {
    Config {
        fanout,
        ..Config::default()
    }
}

fn live(origin: usize, segments: u64, bytes: u64) -> StreamSpec {
    StreamSpec {
        name: "live".into(),
        ingest: vec![origin],
        segment_bytes: bytes,
        segment: Duration::from_secs(2),
        segments,
        start: Duration::from_secs(3),
    }
}

/// `n` nodes on a LAN, all watching one stream ingested at node 0.
fn lan_mesh(n: usize, fanout: usize, segments: u64, bytes: u64) -> Model {
    let mut model = Model::new(n, Net::lan(n, &[GBIT]), config(fanout), &[]);
    model.add_stream(live(0, segments, bytes));
    for i in 1..n {
        model.watch(i, "live");
    }
    model
}

#[test]
fn every_segment_reaches_every_node_through_a_bounded_tree() {
    let f = lan_mesh(25, 4, 8, MB / 2).run(Duration::from_secs(30));
    assert!(f.missed.is_empty(), "missed: {:?}", f.missed);
    assert_eq!(
        f.propagation.len(),
        8 * 24,
        "each of 24 nodes pulls each segment once"
    );
    // The origin uploads each segment to at most its fan-out.
    assert_eq!(f.origin_uploads.len(), 8);
    assert!(
        f.origin_uploads.values().all(|&u| (1..=4).contains(&u)),
        "{:?}",
        f.origin_uploads
    );
    // 0.5 MB at 1 Gbit/s is 4 ms a transfer; a 25-node tree with fan-out 4 is 2-3 levels
    // deep, and a holder sends up to 4 copies one after another.
    let samples: Vec<f64> = f.propagation.iter().map(|d| ms(*d)).collect();
    let (p50, max) = (percentile(&samples, 50.0), percentile(&samples, 100.0));
    assert!(p50 < 60.0, "p50 {p50} ms");
    assert!(max < 500.0, "max {max} ms");
}

#[test]
fn a_chain_of_fanout_one_reaches_everyone_through_busy_answers() {
    let f = lan_mesh(10, 1, 6, MB / 5).run(Duration::from_secs(30));
    assert!(f.missed.is_empty(), "missed: {:?}", f.missed);
    assert!(
        f.origin_uploads.values().all(|&u| u == 1),
        "{:?}",
        f.origin_uploads
    );
    assert!(
        f.busy > 0,
        "holders at their limit answer busy and name the fed peers"
    );
    assert_eq!(
        f.transfers,
        6 * 9,
        "each node gets each segment exactly once"
    );
}

#[test]
fn a_dead_relay_is_routed_around() {
    let mut model = lan_mesh(12, 2, 14, MB / 5);
    // Kill two relays mid-stream; the others keep getting every later segment.
    model.kill_at(3, Duration::from_secs(12));
    model.kill_at(4, Duration::from_secs(12));
    let f = model.run(Duration::from_secs(45));
    assert!(f.missed.is_empty(), "missed: {:?}", f.missed);
    // Segments made after the kill still went from the origin to at most 2 peers.
    assert!(
        f.origin_uploads.values().all(|&u| u <= 2),
        "{:?}",
        f.origin_uploads
    );
}

#[test]
fn a_node_that_joins_late_gets_the_segments_made_after() {
    let mut model = Model::new(6, Net::lan(6, &[GBIT]), config(4), &[5]);
    model.add_stream(live(0, 10, MB / 5));
    for i in 1..6 {
        model.watch(i, "live");
    }
    model.start_at(5, Duration::from_secs(10));
    let f = model.run(Duration::from_secs(35));
    assert!(f.missed.is_empty(), "missed: {:?}", f.missed);
}

#[test]
fn far_regions_get_one_long_haul_copy_per_segment_through_a_leader() {
    // Two regions 120 ms apart, 6 nodes each; the origin is in region 0.
    let rtt = vec![
        vec![Duration::from_millis(1), Duration::from_millis(120)],
        vec![Duration::from_millis(120), Duration::from_millis(1)],
    ];
    let net = Net::new(12, &[0, 1], rtt, &[GBIT]);
    let mut model = Model::new(12, net, config(4), &[]);
    model.add_stream(live(0, 8, MB / 2));
    for i in 1..12 {
        model.watch(i, "live");
    }
    let f = model.run(Duration::from_secs(30));
    assert!(f.missed.is_empty(), "missed: {:?}", f.missed);
    // Without leaders each of region 1's 6 nodes would cross. The first segment does,
    // as nobody in region 1 carries the stream yet; after it, one copy per segment
    // crosses and region 1 feeds itself.
    assert_eq!(f.cross_region.len(), 8);
    for (&(_, seq), &copies) in &f.cross_region {
        if seq > 0 {
            assert_eq!(copies, 1, "segment {seq}: {:?}", f.cross_region);
        }
    }
}

#[test]
fn the_same_spec_gives_the_same_figures() {
    let a = lan_mesh(15, 3, 6, MB / 4).run(Duration::from_secs(20));
    let b = lan_mesh(15, 3, 6, MB / 4).run(Duration::from_secs(20));
    assert_eq!(a.propagation, b.propagation);
    assert_eq!(a.origin_uploads, b.origin_uploads);
    assert_eq!(a.control_bytes, b.control_bytes);
}

#[test]
fn announcements_reach_only_the_nodes_that_carry_their_stream() {
    let n = 20;
    let scoped = Config {
        carry_all_below: 0,
        ..config(4)
    };
    let mut model = Model::new(n, Net::lan(n, &[GBIT]), scoped, &[]);
    let (a, b) = (
        stream::Name::new("a").unwrap(),
        stream::Name::new("b").unwrap(),
    );
    assert_ne!(MediaShard::of(&a), MediaShard::of(&b));
    for (name, origin) in [("a", 0), ("b", 10)] {
        model.add_stream(StreamSpec {
            name: name.into(),
            ..live(origin, 6, MB / 10)
        });
        for i in origin + 1..origin + 6 {
            model.watch(i, name);
        }
    }
    let f = model.run(Duration::from_secs(30));
    assert!(f.missed.is_empty(), "missed: {:?}", f.missed);
    // Each of the 12 segments is announced to its stream's five watchers only (its
    // ingest node sends it); the nine nodes that watch nothing hear none.
    let (_, messages) = f.control_by_kind["announcement"];
    assert_eq!(messages, 12 * 5);
    // Statuses still go to everyone (19 receivers each).
    let (_, statuses) = f.control_by_kind["status"];
    assert_eq!(statuses % 19, 0);
}

#[test]
fn a_killed_node_is_declared_gone_by_every_peer_within_its_timeout() {
    let mut model = lan_mesh(10, 4, 10, MB / 10);
    model.kill_at(5, Duration::from_secs(10));
    let f = model.run(Duration::from_secs(30));
    assert_eq!(f.detection.len(), 9, "the 9 other nodes each notice");
    let timeout = Config::default().peer_timeout;
    // At most the timeout, plus the housekeeping that checks it, after the last status.
    assert!(
        f.detection
            .iter()
            .all(|d| *d <= timeout + shoal_core::HOUSEKEEPING),
        "{:?}",
        f.detection
    );
    assert_eq!((f.undetected, f.false_gone), (0, 0));
}
