//! A scenario file run in model mode: the file's mesh, regions, capacities, streams and
//! events mapped onto a [`Model`], and the figures it returns as a JSON report.
//!
//! What maps: `nodes`, `fanout`, `regions`/`node_regions`/`rtt_ms`, `capacity_mbit`
//! (each node's upload link), each stream (pushed into its ingest node, at the
//! `[model]` bitrate and segment duration), the nodes viewers watch on (each watches
//! its stream from the start, so the node prefetches every segment), and `kill` and
//! `join`, `drain` (a drained node leaves when its core says so) and `move_ingest`
//! events, and redundant ingest (each ingest node's core elects the source). What does
//! not map yet is refused with a clear error rather than run differently from the file:
//! `restart`. Viewers themselves (their players,
//! admission, redirects) and the balancer baselines are not modelled.

use super::net::Net;
use super::{Figures, Model, StreamSpec};
use crate::bench::{ms, percentile};
use crate::scenario::file::{Mode, Scenario};
use anyhow::bail;
use serde_json::{Value, json};
use shoal_core::Config;
use std::time::{Duration, Instant};

/// Upload bandwidth of a node whose capacity the file leaves open.
const DEFAULT_UPLOAD_BPS: u64 = 1_000_000_000;

/// Runs `scenario` in model mode and returns its report.
pub fn run(scenario: &Scenario) -> anyhow::Result<Value> {
    scenario.check_for(Mode::Model)?;
    let started = Instant::now();
    let model = build(scenario)?;
    let end = Duration::from_secs(scenario.duration_s);
    let figures = model.run(end);
    Ok(report(
        scenario,
        &figures,
        segment_bytes(scenario),
        started.elapsed(),
    ))
}

/// The model of `scenario`, or why it cannot be modelled.
fn build(scenario: &Scenario) -> anyhow::Result<Model> {
    let n = scenario.nodes;
    if scenario.events.iter().any(|e| e.restart.is_some()) {
        bail!(
            "model mode does not model restart events yet (a node that comes back with \
             its identity); run it without --mode model"
        );
    }
    let late: Vec<usize> = (0..n).filter(|&i| scenario.joins_later(i)).collect();
    let mut model = Model::new(n, net(scenario), config(scenario), &late);
    let segment = Duration::from_secs_f64(scenario.model.segment_s);
    // One segment completes every segment duration, the last one before the end.
    let segments =
        ((scenario.duration_s as f64 / scenario.model.segment_s).ceil() as u64).saturating_sub(1);
    for s in &scenario.streams {
        model.add_stream(StreamSpec {
            name: s.name.clone(),
            ingest: s.ingest.clone(),
            segment_bytes: segment_bytes(scenario),
            segment,
            segments,
            start: segment,
        });
    }
    let generated = scenario.model.generated_streams;
    for k in 0..generated {
        model.add_stream(StreamSpec {
            name: generated_name(k),
            ingest: vec![k * n / generated],
            segment_bytes: segment_bytes(scenario),
            segment,
            segments,
            // Staggered over one segment duration, as independent encoders are.
            start: segment + segment.mul_f64(k as f64 / generated as f64),
        });
    }
    for (node, streams) in watched(n, generated, scenario.model.watched_per_node)
        .into_iter()
        .enumerate()
    {
        for k in streams {
            model.watch(node, &generated_name(k));
        }
    }
    for v in scenario.viewers.iter().filter(|v| v.count > 0) {
        for &node in v.nodes.iter().take(v.count) {
            model.watch(node, &v.stream);
        }
    }
    for e in &scenario.events {
        let at = Duration::from_secs_f64(e.at_s);
        if let Some(i) = e.kill {
            model.kill_at(i, at);
        }
        if let Some(i) = e.join {
            model.start_at(i, at);
        }
        if let Some(i) = e.drain {
            model.drain_at(i, at, Duration::from_secs_f64(e.drain_deadline_s));
        }
        if let (Some(stream), Some(to)) = (&e.move_ingest, e.to) {
            model.move_ingest_at(stream, to, at);
        }
    }
    Ok(model)
}

/// The name of generated stream `k`.
fn generated_name(k: usize) -> String {
    format!("gen{k}")
}

/// For each of `n` nodes, the `per_node` distinct generated streams (of `streams`) its
/// viewers watch: drawn with Zipf(1) popularity (stream `k` weighs `1 / (k + 1)`) from
/// a fixed pseudo-random sequence per node, so a size always gives the same draw.
fn watched(n: usize, streams: usize, per_node: usize) -> Vec<Vec<usize>> {
    let weights: Vec<f64> = (0..streams).map(|k| 1.0 / (k + 1) as f64).collect();
    let total: f64 = weights.iter().sum();
    (0..n)
        .map(|node| {
            let mut state = node as u64 ^ 0x5eed_5eed_5eed_5eed;
            let mut chosen: Vec<usize> = Vec::with_capacity(per_node);
            while chosen.len() < per_node {
                let mut x = splitmix(&mut state) as f64 / u64::MAX as f64 * total;
                let k = weights
                    .iter()
                    .position(|w| {
                        x -= w;
                        x <= 0.0
                    })
                    .unwrap_or(streams - 1);
                if !chosen.contains(&k) {
                    chosen.push(k);
                }
            }
            chosen
        })
        .collect()
}

/// splitmix64: a small, fixed pseudo-random sequence (not for secrets).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The scenario's network: its regions and RTTs (one region at 1 ms if it has none),
/// and its capacities as upload links.
fn net(scenario: &Scenario) -> Net {
    let n = scenario.nodes;
    let upload: Vec<u64> = if scenario.capacity_mbit.is_empty() {
        vec![DEFAULT_UPLOAD_BPS]
    } else {
        (0..scenario.capacity_mbit.len())
            .map(|i| scenario.capacity_bps(i))
            .collect()
    };
    if scenario.regions.is_empty() {
        return Net::lan(n, &upload);
    }
    let region: Vec<usize> = (0..n).map(|i| scenario.region_of(i).unwrap_or(0)).collect();
    let rtt = scenario
        .rtt_ms
        .iter()
        .map(|row| {
            row.iter()
                .map(|ms| Duration::from_secs_f64(ms / 1000.0))
                .collect()
        })
        .collect();
    Net::new(n, &region, rtt, &upload)
}

fn config(scenario: &Scenario) -> Config {
    let mut config = Config::default();
    if let Some(fanout) = scenario.fanout {
        config.fanout = fanout.max(1);
    }
    config
}

/// Bytes in one segment of a stream at the model's bitrate.
fn segment_bytes(scenario: &Scenario) -> u64 {
    (scenario.model.bitrate_kbit * 1000.0 / 8.0 * scenario.model.segment_s) as u64
}

/// The report: propagation, the origin's uploads, copies between nodes and regions,
/// and the control plane's cost per node.
fn report(scenario: &Scenario, f: &Figures, segment_bytes: u64, wall: Duration) -> Value {
    let per_segment = |total: u64| {
        if f.segments == 0 {
            0.0
        } else {
            total as f64 / f.segments as f64
        }
    };
    let node_seconds = (scenario.nodes as f64 * scenario.duration_s as f64).max(1.0);
    let uploads: Vec<u32> = f.origin_uploads.values().copied().collect();
    let propagation_ms: Vec<f64> = f.propagation.iter().map(|d| ms(*d)).collect();
    let spread = |v: &[Duration]| {
        let ms: Vec<f64> = v.iter().map(|d| ms(*d)).collect();
        json!({
            "count": ms.len(),
            "p50": percentile(&ms, 50.0),
            "p99": percentile(&ms, 99.0),
            "max": percentile(&ms, 100.0),
        })
    };
    let by_kind: serde_json::Map<String, Value> = f
        .control_by_kind
        .iter()
        .map(|(kind, (bytes, count))| {
            (
                kind.to_string(),
                json!({
                    "bytes_per_node_s": *bytes as f64 / node_seconds,
                    "messages_per_node_s": *count as f64 / node_seconds,
                }),
            )
        })
        .collect();
    json!({
        "mode": "model",
        "scenario": scenario.name,
        "nodes": scenario.nodes,
        "duration_s": scenario.duration_s,
        "streams": scenario.streams.len() + scenario.model.generated_streams,
        "segment_bytes": segment_bytes,
        "segments": f.segments,
        "propagation_ms": {
            "count": f.propagation.len(),
            "p50": percentile(&propagation_ms, 50.0),
            "p99": percentile(&propagation_ms, 99.0),
            "max": percentile(&propagation_ms, 100.0),
        },
        "missed": f.missed.len(),
        "origin_uploads_per_segment": {
            "mean": per_segment(uploads.iter().map(|&u| u64::from(u)).sum()),
            "max": uploads.iter().max().copied().unwrap_or(0),
        },
        "copies_per_segment": per_segment(f.transfers),
        "cross_region_copies": cross_region(f),
        "busy_answers": f.busy,
        "failed_pulls": f.failed_pulls,
        "media_bytes": f.media_bytes,
        "control": {
            "bytes_per_node_s": f.control_bytes as f64 / node_seconds,
            "wire_bytes_per_node_s": f.control_wire_bytes as f64 / node_seconds,
            "bytes_per_media_byte": if f.media_bytes == 0 { 0.0 } else { f.control_bytes as f64 / f.media_bytes as f64 },
            "verifications_per_node_s": f.verifications as f64 / node_seconds,
            "by_kind": by_kind,
        },
        "first_segment_known_ms": spread(&f.first_known),
        "detection_ms": spread(&f.detection),
        "undetected": f.undetected,
        "false_gone": f.false_gone,
        "source_switches": f.switches.iter().map(|(s, t, node)| json!({"stream": scenario.streams[*s].name, "at_s": t.as_secs_f64(), "to": node})).collect::<Vec<_>>(),
        "held_back": f.held_back,
        "drained": f.left.iter().map(|(i, t)| json!({"node": i, "left_at_s": t.as_secs_f64()})).collect::<Vec<_>>(),
        "model_events": f.events,
        "wall_s": wall.as_secs_f64(),
    })
}

/// Copies between regions: of each stream's first segment (cold: no peer in a far region
/// carries the stream yet, so there is no relay leader), and per later segment.
fn cross_region(f: &Figures) -> Value {
    let (first, later): (Vec<_>, Vec<_>) =
        f.cross_region.iter().partition(|((_, seq), _)| *seq == 0);
    let sum = |v: &[(&(usize, u64), &u32)]| v.iter().map(|(_, c)| u64::from(**c)).sum::<u64>();
    let streams_first = f
        .origin_uploads
        .keys()
        .filter(|(_, seq)| *seq == 0)
        .count()
        .max(1);
    let later_segments = (f.segments as usize).saturating_sub(streams_first).max(1);
    json!({
        "first_segment": sum(&first) as f64 / streams_first as f64,
        "per_later_segment": sum(&later) as f64 / later_segments as f64,
        "max": f.cross_region.values().max().copied().unwrap_or(0),
    })
}

/// The report as text.
pub fn text(report: &Value) -> String {
    let p = &report["propagation_ms"];
    let c = &report["control"];
    let o = &report["origin_uploads_per_segment"];
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    format!(
        "scenario {} (model mode): {} nodes, {} s, {} stream(s), {} segments of {} B\n\
         propagation ms   p50 {:.1}  p99 {:.1}  max {:.1}  ({} copies, {} missed)\n\
         per segment      origin uploads mean {:.2} max {}  copies {:.1}\n\
         cross-region     {:.1} copies of a stream's first segment, {:.2} per later segment\n\
         pulls            {} busy answers, {} failed\n\
         control plane    {:.0} B/node/s ({:.1} kbit/s)  {:.4} B per media byte  {:.1} verifications/node/s\n\
         control wire     {:.0} B/node/s ({:.1} kbit/s) estimated with gossipsub's copies and IHAVEs\n\
         control by kind  {}\n\
         new stream       first segment known at its watchers in p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms\n\
         node loss        detected in p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms  ({} detections, {} undetected, {} false)\n\
         sources          {} switch(es) {}, {} segments held back by standby encoders\n\
         drained          {}\n\
         model            {} events in {:.2} s wall\n",
        report["scenario"].as_str().unwrap_or("?"),
        report["nodes"],
        report["duration_s"],
        report["streams"],
        report["segments"],
        report["segment_bytes"],
        num(&p["p50"]),
        num(&p["p99"]),
        num(&p["max"]),
        p["count"],
        report["missed"],
        num(&o["mean"]),
        o["max"],
        num(&report["copies_per_segment"]),
        num(&report["cross_region_copies"]["first_segment"]),
        num(&report["cross_region_copies"]["per_later_segment"]),
        report["busy_answers"],
        report["failed_pulls"],
        num(&c["bytes_per_node_s"]),
        num(&c["bytes_per_node_s"]) * 8.0 / 1000.0,
        num(&c["bytes_per_media_byte"]),
        num(&c["verifications_per_node_s"]),
        num(&c["wire_bytes_per_node_s"]),
        num(&c["wire_bytes_per_node_s"]) * 8.0 / 1000.0,
        c["by_kind"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!(
                "{k} {:.0} B/node/s {:.1} msg/node/s",
                num(&v["bytes_per_node_s"]),
                num(&v["messages_per_node_s"])
            ))
            .collect::<Vec<_>>()
            .join(", "),
        num(&report["first_segment_known_ms"]["p50"]),
        num(&report["first_segment_known_ms"]["p99"]),
        num(&report["first_segment_known_ms"]["max"]),
        num(&report["detection_ms"]["p50"]),
        num(&report["detection_ms"]["p99"]),
        num(&report["detection_ms"]["max"]),
        report["detection_ms"]["count"],
        report["undetected"],
        report["false_gone"],
        report["source_switches"].as_array().map_or(0, Vec::len),
        list(&report["source_switches"], "to", "at_s"),
        report["held_back"],
        match list(&report["drained"], "node", "left_at_s") {
            l if l.is_empty() => "none".to_string(),
            l => format!("node(s) left at {l}"),
        },
        report["model_events"],
        num(&report["wall_s"]),
    )
}

/// `[node N at T s, ...]` from a list of objects with a node field and a time field.
fn list(v: &Value, node: &str, at: &str) -> String {
    let items: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| format!("node {} at {:.1} s", x[node], x[at].as_f64().unwrap_or(0.0)))
        .collect();
    if items.is_empty() {
        String::new()
    } else {
        format!("[{}]", items.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(extra: &str) -> Scenario {
        Scenario::parse(&format!(
            "name='m'\nnodes=30\nduration_s=30\nfanout=3\n{extra}\n\
             [[streams]]\nname='live'\ningest=[0]\n\
             [[viewers]]\nstream='live'\nnodes={}\ncount=100\n",
            format_args!("{:?}", (1..30).collect::<Vec<_>>())
        ))
        .unwrap()
    }

    #[test]
    fn a_scenario_file_runs_in_model_mode_and_reports() {
        let r = run(&scenario("")).unwrap();
        assert_eq!(r["missed"], 0);
        assert_eq!(r["segments"], 14);
        // Each of 29 watching nodes gets each segment once; the origin sends at most 3.
        assert_eq!(r["propagation_ms"]["count"], 14 * 29);
        assert!(r["origin_uploads_per_segment"]["max"].as_u64().unwrap() <= 3);
        assert!(r["control"]["verifications_per_node_s"].as_f64().unwrap() > 0.0);
        assert!(text(&r).contains("model mode"));
    }

    #[test]
    fn what_the_model_cannot_run_is_refused_not_run_differently() {
        let restart = scenario("[[events]]\nat_s=5.0\nrestart=2");
        assert!(run(&restart).unwrap_err().to_string().contains("restart"));
        let mut huge = scenario("");
        huge.nodes = 30_000;
        assert!(run(&huge).is_err());
    }

    #[test]
    fn a_drained_relay_leaves_and_the_others_keep_every_segment() {
        let r = run(&scenario(
            "[[events]]\nat_s=8.0\ndrain=1\ndrain_deadline_s=4.0",
        ))
        .unwrap();
        // Node 1's viewer is served until the deadline (12 s), then redirected away;
        // quiet for 3 s, the node leaves.
        let left = r["drained"][0]["left_at_s"].as_f64().unwrap();
        assert_eq!(r["drained"][0]["node"], 1);
        assert!((14.9..=16.1).contains(&left), "left at {left} s");
        assert_eq!(r["missed"], 0, "node 1 is not owed what came after it left");
    }

    #[test]
    fn a_redundant_encoder_takes_over_when_the_followed_source_dies() {
        let mut s = scenario("[[events]]\nat_s=11.0\nkill=0");
        s.streams[0].ingest = vec![0, 1];
        let r = run(&s).unwrap();
        // Node 1 held its segments back while node 0 led, then took over once node 0
        // was declared gone (3 s of silence) or the stream stalled (2 x 2 s + 1 s),
        // whichever came first.
        assert!(r["held_back"].as_u64().unwrap() >= 4, "{}", r["held_back"]);
        let switch = &r["source_switches"][0];
        assert_eq!(switch["to"], 1);
        let at = switch["at_s"].as_f64().unwrap();
        assert!((13.0..=17.0).contains(&at), "switched at {at} s");
        assert_eq!(r["missed"], 0);
    }

    #[test]
    fn a_moved_encoder_is_followed_by_the_mesh() {
        let r = run(&scenario("[[events]]\nat_s=11.0\nmove_ingest='live'\nto=5")).unwrap();
        assert_eq!(r["source_switches"][0]["to"], 5);
        assert_eq!(r["missed"], 0);
    }

    #[test]
    fn a_slow_origin_link_slows_propagation() {
        let fast = run(&scenario("[model]\nbitrate_kbit=4000\n")).unwrap();
        let slow = run(&scenario(
            "capacity_mbit=[20]\n[model]\nbitrate_kbit=4000\n",
        ))
        .unwrap();
        let p50 = |r: &Value| r["propagation_ms"]["p50"].as_f64().unwrap();
        // 1 MB segments: 8 ms a copy at 1 Gbit/s, 400 ms at 20 Mbit/s.
        assert!(
            p50(&slow) > 10.0 * p50(&fast),
            "{} vs {}",
            p50(&slow),
            p50(&fast)
        );
        assert_eq!(slow["missed"], 0);
    }
}
