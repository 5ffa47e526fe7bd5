//! The scenario report as a self-contained HTML page: the text tables, and for each
//! balancer run a plot of every node's load against its capacity over time (inline SVG,
//! nothing to fetch).

use serde_json::Value;
use std::fmt::Write;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 240.0;
const MARGIN: f64 = 40.0;
/// The plot's top, as a share of capacity.
const MAX_UTILIZATION: f64 = 2.5;

/// Renders `report` (from [`super::run`]) as an HTML page.
pub fn page(report: &Value) -> String {
    let mut out = String::new();
    let name = escape(report["scenario"].as_str().unwrap_or("scenario"));
    let _ = write!(
        out,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>shoal-sim: {name}</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:60em}}\
         pre{{background:#f6f6f6;padding:1em;overflow-x:auto}}\
         svg{{background:#fff;border:1px solid #ccc}}</style></head><body>\
         <h1>shoal-sim: {name}</h1><pre>{}</pre>",
        escape(&super::report::text(report))
    );
    for run in report["runs"].as_array().into_iter().flatten() {
        let balancer = escape(run["balancer"].as_str().unwrap_or("?"));
        let nodes = run["load"]["nodes"].as_array().cloned().unwrap_or_default();
        let capacities = nodes
            .iter()
            .any(|n| n["capacity_mbit"].as_f64() > Some(0.0));
        if nodes.is_empty() {
            out.push_str("<p>Load not recorded.</p>");
        } else if capacities {
            let _ = write!(
                out,
                "<h2>{balancer}: load per node (share of its capacity)</h2>"
            );
            out.push_str(&plot(&nodes, "utilization", MAX_UTILIZATION, true));
        } else {
            let _ = write!(out, "<h2>{balancer}: egress per node (Mbit/s)</h2>");
            let top = nodes
                .iter()
                .flat_map(|n| n["egress_mbit"].as_array().cloned().unwrap_or_default())
                .filter_map(|v| v.as_f64())
                .fold(1.0, f64::max);
            out.push_str(&plot(&nodes, "egress_mbit", top * 1.1, false));
        }
    }
    out.push_str("</body></html>\n");
    out
}

/// One line per node over time of `field`, from 0 to `top`; with `capacity`, values are
/// shares of capacity and 100% is a dashed line.
fn plot(nodes: &[Value], field: &str, top: f64, capacity: bool) -> String {
    let series: Vec<Vec<Option<f64>>> = nodes
        .iter()
        .map(|n| {
            n[field]
                .as_array()
                .map(|u| u.iter().map(Value::as_f64).collect())
                .unwrap_or_default()
        })
        .collect();
    let seconds = series.iter().map(Vec::len).max().unwrap_or(0).max(2);
    let x = |t: usize| MARGIN + (WIDTH - 2.0 * MARGIN) * t as f64 / (seconds - 1) as f64;
    let y = |u: f64| HEIGHT - MARGIN - (HEIGHT - 2.0 * MARGIN) * u.min(top) / top;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg width=\"{WIDTH}\" height=\"{HEIGHT}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for k in 0..=5 {
        // With capacities the third line is 100%, dashed.
        let limit = capacity && k == 2;
        let u = if limit { 1.0 } else { top * k as f64 / 5.0 };
        let dash = if limit {
            " stroke-dasharray=\"6 3\""
        } else {
            ""
        };
        let colour = if limit { "#c00" } else { "#ddd" };
        let label = if capacity {
            format!("{:.0}%", u * 100.0)
        } else {
            format!("{u:.1}")
        };
        let y0 = y(u);
        let _ = write!(
            svg,
            "<line x1=\"{MARGIN}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"{colour}\"{dash}/>\
             <text x=\"4\" y=\"{:.1}\" font-size=\"10\">{label}</text>",
            WIDTH - MARGIN,
            y0 + 3.0,
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" font-size=\"10\">{} s</text>",
        WIDTH - MARGIN - 20.0,
        HEIGHT - 10.0,
        seconds - 1
    );
    for (i, s) in series.iter().enumerate() {
        let hue = (i * 360 / series.len().max(1)) % 360;
        let points: Vec<String> = s
            .iter()
            .enumerate()
            .filter_map(|(t, u)| u.map(|u| format!("{:.1},{:.1}", x(t), y(u))))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"hsl({hue},70%,45%)\" stroke-width=\"1.5\" points=\"{}\">\
             <title>node{i}</title></polyline>",
            points.join(" ")
        );
    }
    svg.push_str("</svg>");
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_page_with_one_plot_per_run() {
        let report = json!({
            "scenario": "t<1>", "nodes": 2, "duration_s": 3, "events": [],
            "runs": [
                {"balancer": "shoal", "viewers": {}, "mesh": {}, "load": {"nodes": [
                    {"capacity_mbit": 4.0, "utilization": [null, 0.5, 1.2]},
                    {"capacity_mbit": 4.0, "utilization": [null, 0.1, 0.2]},
                ]}},
                {"balancer": "round-robin", "viewers": {}, "mesh": {}, "load": {"nodes": []}},
                {"balancer": "flat", "viewers": {}, "mesh": {}, "load": {"nodes": [
                    {"capacity_mbit": 0.0, "utilization": [null, null], "egress_mbit": [null, 3.5]},
                ]}},
            ],
        });
        let html = page(&report);
        assert!(html.contains("shoal-sim: t&lt;1&gt;"));
        assert_eq!(html.matches("<svg").count(), 2);
        assert_eq!(html.matches("<polyline").count(), 3);
        assert!(html.contains("Load not recorded"));
        assert!(html.contains("shoal: load per node (share of its capacity)"));
        assert!(html.contains("flat: egress per node (Mbit/s)"));
    }
}
