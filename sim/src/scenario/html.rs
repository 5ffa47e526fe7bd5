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
        let _ = write!(
            out,
            "<h2>{balancer}: load per node (share of its capacity)</h2>"
        );
        match run["load"]["nodes"].as_array() {
            Some(nodes) if !nodes.is_empty() => out.push_str(&plot(nodes)),
            _ => out.push_str("<p>No capacities set: load not measured.</p>"),
        }
    }
    out.push_str("</body></html>\n");
    out
}

/// One line per node over time, the capacity as a dashed line at 100%.
fn plot(nodes: &[Value]) -> String {
    let series: Vec<Vec<Option<f64>>> = nodes
        .iter()
        .map(|n| {
            n["utilization"]
                .as_array()
                .map(|u| u.iter().map(Value::as_f64).collect())
                .unwrap_or_default()
        })
        .collect();
    let seconds = series.iter().map(Vec::len).max().unwrap_or(0).max(2);
    let x = |t: usize| MARGIN + (WIDTH - 2.0 * MARGIN) * t as f64 / (seconds - 1) as f64;
    let y = |u: f64| {
        HEIGHT - MARGIN - (HEIGHT - 2.0 * MARGIN) * u.min(MAX_UTILIZATION) / MAX_UTILIZATION
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg width=\"{WIDTH}\" height=\"{HEIGHT}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for u in [0.0, 0.5, 1.0, 1.5, 2.0, 2.5] {
        let dash = if u == 1.0 {
            " stroke-dasharray=\"6 3\""
        } else {
            ""
        };
        let colour = if u == 1.0 { "#c00" } else { "#ddd" };
        let y0 = y(u);
        let _ = write!(
            svg,
            "<line x1=\"{MARGIN}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"{colour}\"{dash}/>\
             <text x=\"4\" y=\"{:.1}\" font-size=\"10\">{:.0}%</text>",
            WIDTH - MARGIN,
            y0 + 3.0,
            u * 100.0,
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
                    {"utilization": [null, 0.5, 1.2]},
                    {"utilization": [null, 0.1, 0.2]},
                ]}},
                {"balancer": "round-robin", "viewers": {}, "mesh": {}, "load": {"nodes": []}},
            ],
        });
        let html = page(&report);
        assert!(html.contains("shoal-sim: t&lt;1&gt;"));
        assert_eq!(html.matches("<svg").count(), 1);
        assert_eq!(html.matches("<polyline").count(), 2);
        assert!(html.contains("load not measured"));
    }
}
