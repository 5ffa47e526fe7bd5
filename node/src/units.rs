//! Human units in flags and config: rates (`500mbit`, `2gbit`, `800kbit`, `1000000`) and
//! shares (`20%`, or a rate).

/// Parses a bit rate: a number of bits per second with an optional `k`/`m`/`g` prefix
/// (decimal, as network rates are), and an optional `bit`/`bps` suffix. `0` means none.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("bit/s")
        .or_else(|| t.strip_suffix("bps"))
        .or_else(|| t.strip_suffix("bit"))
        .unwrap_or(&t);
    let (number, factor) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1e3),
        Some('m') => (&t[..t.len() - 1], 1e6),
        Some('g') => (&t[..t.len() - 1], 1e9),
        Some('t') => (&t[..t.len() - 1], 1e12),
        _ => (t, 1.0),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a rate (e.g. 500mbit, 2gbit, 800kbit)"))?;
    if !value.is_finite() || value < 0.0 || value * factor > 1e15 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok((value * factor) as u64)
}

/// A share of a capacity: a percentage (`20%`) or an absolute rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Share {
    /// Percent of the capacity.
    Percent(f64),
    /// Bits per second.
    Rate(u64),
}

impl Share {
    /// Parses `20%` or a rate.
    pub fn parse(text: &str) -> Result<Share, String> {
        match text.trim().strip_suffix('%') {
            Some(p) => {
                let v: f64 = p
                    .trim()
                    .parse()
                    .map_err(|_| format!("{text:?} is not a percentage"))?;
                if !(0.0..=100.0).contains(&v) {
                    return Err(format!("{text:?} must be between 0% and 100%"));
                }
                Ok(Share::Percent(v))
            }
            None => parse_rate(text).map(Share::Rate),
        }
    }

    /// The share of `capacity` in bits per second (never more than it).
    pub fn of(self, capacity: u64) -> u64 {
        match self {
            Share::Percent(p) => (capacity as f64 * p / 100.0) as u64,
            Share::Rate(r) => r.min(capacity),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("500mbit"), Ok(500_000_000));
        assert_eq!(parse_rate("2gbit"), Ok(2_000_000_000));
        assert_eq!(parse_rate("2.5Gbps"), Ok(2_500_000_000));
        assert_eq!(parse_rate("800k"), Ok(800_000));
        assert_eq!(parse_rate("1000000"), Ok(1_000_000));
        assert_eq!(parse_rate("0"), Ok(0));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-1mbit").is_err());
        assert!(parse_rate("1e30").is_err());
    }

    #[test]
    fn shares() {
        assert_eq!(Share::parse("20%").unwrap().of(1_000), 200);
        assert_eq!(
            Share::parse("100mbit").unwrap().of(1_000_000_000),
            100_000_000
        );
        assert_eq!(Share::parse("5gbit").unwrap().of(1_000), 1_000);
        assert!(Share::parse("120%").is_err());
    }
}
