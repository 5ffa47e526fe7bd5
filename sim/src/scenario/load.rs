//! Load over time: each node's egress sampled once a second, turned into utilisation of
//! its nominal capacity, overload and imbalance figures.

use serde_json::{Value, json};

/// Egress is averaged over this many one-second samples before it is compared with
/// capacity: segments go out in bursts, one per segment period (2 s for the built-in
/// clip), so the window holds a whole number of periods. A 5 s window held two or three
/// bursts depending on phase and swung by +-20% around the true rate.
pub const AVERAGE_S: usize = 6;
/// Imbalance is measured only while the mesh carries at least this utilisation on
/// average (an idle mesh has no meaningful max/mean).
const BUSY_MEAN: f64 = 0.05;
/// Without capacities, imbalance is measured on egress rates while the mean node sends at
/// least this much (bits per second).
const BUSY_RATE_BPS: f64 = 100_000.0;

/// One node at one second.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Total egress bytes so far (viewers and peers); `None` when the node is gone.
    pub egress_bytes: Option<u64>,
    /// Its viewers x bitrate, bits per second.
    pub viewer_load_bps: u64,
    /// Its viewers.
    pub viewers: usize,
}

/// Samples of every node, second by second.
#[derive(Debug, Default)]
pub struct Recorder {
    capacity: Vec<u64>,
    seconds: Vec<Vec<Sample>>,
}

impl Recorder {
    /// A recorder for nodes with nominal `capacity` (bps; 0: none).
    pub fn new(capacity: Vec<u64>) -> Self {
        Self {
            capacity,
            seconds: Vec::new(),
        }
    }

    /// Adds one second's samples (one per node, by index).
    pub fn push(&mut self, samples: Vec<Sample>) {
        self.seconds.push(samples);
    }

    /// Egress of node `i` at second `t`, bits per second (None before two samples).
    fn egress_bps(&self, t: usize, i: usize) -> Option<f64> {
        let now = self.seconds.get(t)?.get(i)?.egress_bytes?;
        let before = self.seconds.get(t.checked_sub(1)?)?.get(i)?.egress_bytes?;
        Some(now.saturating_sub(before) as f64 * 8.0)
    }

    /// Egress of node `i` at second `t`, bits per second, averaged over [`AVERAGE_S`]
    /// seconds.
    fn rate(&self, t: usize, i: usize) -> Option<f64> {
        let window: Vec<f64> = (t.saturating_sub(AVERAGE_S - 1)..=t)
            .filter_map(|s| self.egress_bps(s, i))
            .collect();
        (!window.is_empty()).then(|| window.iter().sum::<f64>() / window.len() as f64)
    }

    /// Utilisation of node `i` at second `t`: egress averaged over [`AVERAGE_S`] seconds
    /// divided by capacity.
    pub fn utilization(&self, t: usize, i: usize) -> Option<f64> {
        let cap = *self.capacity.get(i)?;
        if cap == 0 {
            return None;
        }
        Some(self.rate(t, i)? / cap as f64)
    }

    /// The largest value of `field` node `i` reached.
    fn peak(&self, i: usize, field: impl Fn(&Sample) -> usize) -> usize {
        self.seconds
            .iter()
            .filter_map(|s| s.get(i))
            .map(field)
            .max()
            .unwrap_or(0)
    }

    /// The current utilisation of the busiest node and the mean over nodes.
    pub fn latest(&self) -> Option<(f64, f64)> {
        let t = self.seconds.len().checked_sub(1)?;
        let utils: Vec<f64> = (0..self.capacity.len())
            .filter_map(|i| self.utilization(t, i))
            .collect();
        if utils.is_empty() {
            return None;
        }
        let max = utils.iter().cloned().fold(0.0, f64::max);
        Some((max, utils.iter().sum::<f64>() / utils.len() as f64))
    }

    /// The figures as JSON: per node capacity, peak utilisation and seconds over
    /// capacity; overall peak, overloaded node-seconds, max/mean imbalance; and the
    /// per-second utilisation series for plots.
    pub fn figures(&self) -> Value {
        let n = self.capacity.len();
        let mut nodes = Vec::new();
        let mut overloaded = 0usize;
        let mut peak: f64 = 0.0;
        for i in 0..n {
            let series: Vec<Option<f64>> = (0..self.seconds.len())
                .map(|t| self.utilization(t, i))
                .collect();
            let node_peak = series.iter().flatten().cloned().fold(0.0, f64::max);
            let over = series.iter().flatten().filter(|u| **u > 1.0).count();
            let peak_model = self.peak(i, |s| s.viewer_load_bps as usize);
            let peak_viewers = self.peak(i, |s| s.viewers);
            overloaded += over;
            peak = peak.max(node_peak);
            nodes.push(json!({
                "node": i,
                "capacity_mbit": self.capacity[i] as f64 / 1e6,
                "peak_utilization": node_peak,
                "seconds_over_capacity": over,
                "peak_viewer_load_mbit": peak_model as f64 / 1e6,
                "peak_viewers": peak_viewers,
                "utilization": series.iter().map(|u| u.map(|v| (v * 1000.0).round() / 1000.0)).collect::<Vec<_>>(),
                "egress_mbit": (0..self.seconds.len())
                    .map(|t| self.rate(t, i).map(|r| (r / 1e3).round() / 1e3))
                    .collect::<Vec<_>>(),
            }));
        }
        // Imbalance: of utilisation when capacities are set, else of egress rates.
        let measured = self.capacity.iter().any(|c| *c > 0);
        let (value, busy): (&dyn Fn(usize, usize) -> Option<f64>, f64) = if measured {
            (&|t, i| self.utilization(t, i), BUSY_MEAN)
        } else {
            (&|t, i| self.rate(t, i), BUSY_RATE_BPS)
        };
        let mut ratios = Vec::new();
        for t in 0..self.seconds.len() {
            let values: Vec<f64> = (0..n).filter_map(|i| value(t, i)).collect();
            if values.is_empty() {
                continue;
            }
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            if mean >= busy {
                ratios.push(values.iter().cloned().fold(0.0, f64::max) / mean);
            }
        }
        let mean_ratio = if ratios.is_empty() {
            None
        } else {
            Some(ratios.iter().sum::<f64>() / ratios.len() as f64)
        };
        json!({
            "peak_utilization": measured.then_some(peak),
            "overloaded_node_seconds": overloaded,
            "imbalance_max_over_mean": mean_ratio,
            "imbalance_worst": ratios.iter().cloned().fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r)))),
            "nodes": nodes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(bytes: u64) -> Sample {
        Sample {
            egress_bytes: Some(bytes),
            ..Sample::default()
        }
    }

    #[test]
    fn utilization_overload_and_imbalance() {
        // Two nodes of 8 Mbit: node 0 sends 1 MB/s (8 Mbit, 100%), node 1 0.25 MB/s.
        let mut r = Recorder::new(vec![8_000_000, 8_000_000]);
        for t in 0..10u64 {
            r.push(vec![s(t * 1_000_000), s(t * 250_000)]);
        }
        assert_eq!(r.utilization(5, 0), Some(1.0));
        assert_eq!(r.utilization(5, 1), Some(0.25));
        let f = r.figures();
        assert_eq!(f["overloaded_node_seconds"], 0);
        let imbalance = f["imbalance_max_over_mean"].as_f64().unwrap();
        assert!((imbalance - 1.6).abs() < 1e-9, "{imbalance}");
        // Twice as much on node 0 for the last seconds: over capacity.
        let mut r = Recorder::new(vec![8_000_000]);
        for t in 0..10u64 {
            r.push(vec![s(t * 2_000_000)]);
        }
        assert_eq!(r.figures()["overloaded_node_seconds"], 9);
        // No capacities: imbalance of egress rates (1 MB/s against 0.25 MB/s).
        let mut r = Recorder::new(vec![0, 0]);
        for t in 0..10u64 {
            r.push(vec![s(t * 1_000_000), s(t * 250_000)]);
        }
        let f = r.figures();
        assert_eq!(f["peak_utilization"], Value::Null);
        let imbalance = f["imbalance_max_over_mean"].as_f64().unwrap();
        assert!((imbalance - 1.6).abs() < 1e-9, "{imbalance}");
    }
}
