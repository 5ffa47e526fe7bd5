//! This process's CPU use, from `/proc/self/stat` (Linux; elsewhere it reads 0).

use std::time::Instant;

/// Clock ticks per second of `/proc` CPU times (USER_HZ, 100 on every Linux ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// Measures CPU use between two samples.
#[derive(Debug, Default)]
pub struct CpuMeter {
    last: Option<(Instant, u64)>,
    permille: u16,
}

impl CpuMeter {
    /// CPU use since the previous sample, permille of all cores (the previous figure when
    /// called again within 0.5 s).
    pub fn sample(&mut self) -> u16 {
        let Some(ticks) = process_ticks() else {
            return 0;
        };
        let now = Instant::now();
        match self.last {
            Some((at, _)) if now.duration_since(at).as_secs_f64() < 0.5 => {}
            Some((at, before)) => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
                let used = ticks.saturating_sub(before) as f64 / TICKS_PER_SECOND;
                let wall = now.duration_since(at).as_secs_f64();
                self.permille = ((used / wall / cores) * 1000.0).clamp(0.0, 1000.0) as u16;
                self.last = Some((now, ticks));
            }
            None => self.last = Some((now, ticks)),
        }
        self.permille
    }
}

/// utime + stime of this process, in clock ticks.
fn process_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_busy_loop() {
        let mut meter = CpuMeter::default();
        meter.sample();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 600 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let p = meter.sample();
        assert!(p > 0, "a spinning thread uses CPU");
    }
}
