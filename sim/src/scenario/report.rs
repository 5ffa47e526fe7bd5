//! The scenario report as text: one line per balancer run (viewers and load), one per
//! run (mesh figures), then Shoal's nodes.

use serde_json::Value;
use std::fmt::Write;

/// Renders `report` (from [`super::run`]) for a terminal.
pub fn text(report: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scenario {}: {} nodes, {} s, events {}",
        report["scenario"], report["nodes"], report["duration_s"], report["events"]
    );
    let _ = writeln!(
        out,
        "{:<12} {:>9} {:>20} {:>12} {:>10} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "balancer",
        "served",
        "startup p50/p95/p99",
        "stalls (s)",
        "continuity",
        "redirects",
        "refused",
        "rejoins",
        "peak load",
        "over (s)",
        "max/mean"
    );
    for run in report["runs"].as_array().into_iter().flatten() {
        let v = &run["viewers"];
        let l = &run["load"];
        let f = |x: &Value| x.as_f64().map_or("-".to_string(), |x| format!("{x:.0}"));
        let pct = |x: &Value| {
            x.as_f64()
                .map_or("-".to_string(), |x| format!("{:.0}%", x * 100.0))
        };
        let _ = writeln!(
            out,
            "{:<12} {:>9} {:>20} {:>12} {:>10.3} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9}",
            run["balancer"].as_str().unwrap_or("?"),
            format!("{}/{}", v["started"], v["viewers"]),
            format!(
                "{}/{}/{} ms",
                f(&v["startup_p50_ms"]),
                f(&v["startup_p95_ms"]),
                f(&v["startup_p99_ms"])
            ),
            format!(
                "{} ({:.1})",
                v["stalls"],
                v["stalled_s"].as_f64().unwrap_or(0.0)
            ),
            v["continuity"].as_f64().unwrap_or(0.0),
            v["redirects"].to_string(),
            v["refused"].to_string(),
            v["rejoins"].to_string(),
            pct(&l["peak_utilization"]),
            l["overloaded_node_seconds"].to_string(),
            l["imbalance_max_over_mean"]
                .as_f64()
                .map_or("-".to_string(), |x| format!("{x:.2}")),
        );
    }
    let _ = writeln!(
        out,
        "{:<12} {:>22} {:>8} {:>15} {:>16} {:>15} {:>22}",
        "balancer",
        "propagation p50/p99/max",
        "reached",
        "origin uploads",
        "bytes/(N x seg)",
        "control/media",
        "pulls in region"
    );
    for run in report["runs"].as_array().into_iter().flatten() {
        let m = &run["mesh"];
        let ms = |x: &Value| x.as_f64().map_or("-".to_string(), |x| format!("{x:.0}"));
        let x2 = |x: &Value| x.as_f64().map_or("-".to_string(), |x| format!("{x:.2}"));
        let _ = writeln!(
            out,
            "{:<12} {:>22} {:>8} {:>15} {:>16} {:>15} {:>22}",
            run["balancer"].as_str().unwrap_or("?"),
            format!(
                "{}/{}/{} ms",
                ms(&m["propagation_p50_ms"]),
                ms(&m["propagation_p99_ms"]),
                ms(&m["propagation_max_ms"])
            ),
            m["nodes_reached_min"].to_string(),
            format!("{}/seg", x2(&m["origin_uploads_per_segment"])),
            format!("{}", x2(&m["inter_node_bytes_per_node_segment_bytes"])),
            m["control_bytes_per_media_byte"]
                .as_f64()
                .map_or("-".to_string(), |x| format!("{:.2}%", x * 100.0)),
            match m["pulls_within_region_share"].as_f64() {
                Some(share) => format!(
                    "{:.0}% ({} across/seg)",
                    share * 100.0,
                    x2(&m["cross_region_pulls_per_segment"])
                ),
                None => "-".to_string(),
            },
        );
    }
    for run in report["runs"].as_array().into_iter().flatten() {
        let m = &run["mesh"];
        if let (Some(bytes), Some(verified)) = (
            m["control_bytes_per_node_s"].as_f64(),
            m["verifications_per_node_s"].as_f64(),
        ) {
            let _ = writeln!(
                out,
                "{:<12} control plane {bytes:.0} B/node/s ({:.1} kbit/s) sent, {verified:.1} \
                 gossip verifications/node/s",
                run["balancer"].as_str().unwrap_or("?"),
                bytes * 8.0 / 1000.0,
            );
        }
    }
    let _ = writeln!(out, "{}", report["nodes_at_end"].as_str().unwrap_or(""));
    out
}
