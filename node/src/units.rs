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

/// Parses a duration: seconds (`90`, `90s`), minutes (`30m`), hours (`1h`) or days
/// (`7d`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (number, unit) = t
        .find(|c: char| !c.is_ascii_digit())
        .map_or((t, "s"), |i| t.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a whole number with s, m, h or d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: unit must be s, m, h or d")),
    };
    n.checked_mul(scale)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?}: too long"))
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

    #[test]
    fn durations() {
        let secs = |t| parse_duration(t).map(|d| d.as_secs());
        assert_eq!(secs("90"), Ok(90));
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("30m"), Ok(1800));
        assert_eq!(secs("1h"), Ok(3600));
        assert_eq!(secs("7d"), Ok(604_800));
        assert!(secs("1.5h").is_err());
        assert!(secs("h").is_err());
        assert!(secs("3y").is_err());
        assert!(secs("99999999999999999999d").is_err());
    }
}
