//! Durations as a pipeline writes them (a stage's `timeout`): `90`, `45s`, `30m`, `1h30m`, `2d`.

use std::time::Duration;

/// The longest duration [`parse_duration`] accepts: a year.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The forms [`parse_duration`] reads, for hints.
pub(crate) const DURATION_FORMS: &str =
    "write seconds (`90`, `90s`) or a duration like `30m`, `1h`, `1h30m` or `2d`, at most `365d`";

/// Parses a duration such as a stage's `timeout`: a whole number of seconds (`90`), or numbers
/// each followed by a unit, largest first, each unit at most once: `d`, `h`, `m`, `s` (`45s`,
/// `30m`, `1h30m`, `2d12h`). It must be positive and at most [`MAX_DURATION`]. `Err` says why,
/// quoting the text.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];
    let trimmed = text.trim();
    let shown = || crate::node::shorten(trimmed);
    let malformed = || format!("`{}` is not a duration", shown());
    if trimmed.is_empty() {
        return Err("a duration cannot be empty".into());
    }
    let too_long = || {
        format!(
            "`{}` is longer than {}",
            shown(),
            format_duration(MAX_DURATION)
        )
    };
    let mut seconds: u64 = 0;
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        seconds = trimmed.parse().map_err(|_| too_long())?;
    } else {
        let mut rest = trimmed;
        // Units come largest first, each once: `next_unit` is the largest still allowed.
        let mut next_unit = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let unit = rest[digits..]
                .chars()
                .next()
                .and_then(|u| UNITS.iter().position(|(c, _)| *c == u));
            let Some(index) = unit.filter(|&i| digits > 0 && i >= next_unit) else {
                return Err(malformed());
            };
            next_unit = index + 1;
            let n: u64 = rest[..digits].parse().map_err(|_| too_long())?;
            seconds = n
                .checked_mul(UNITS[index].1)
                .and_then(|s| s.checked_add(seconds))
                .ok_or_else(too_long)?;
            // The unit is one ASCII byte.
            rest = &rest[digits + 1..];
        }
    }
    let duration = Duration::from_secs(seconds);
    if duration.is_zero() {
        Err(format!("`{}` is not a positive duration", shown()))
    } else if duration > MAX_DURATION {
        Err(too_long())
    } else {
        Ok(duration)
    }
}

/// A duration as [`parse_duration`] reads it, largest units first, zero parts left out:
/// `1h30m`, `45s`, `2d`, `0s`. A fraction of a second is kept on the seconds (`1m0.5s`).
pub fn format_duration(duration: Duration) -> String {
    let total = duration.as_secs();
    let nanos = duration.subsec_nanos();
    let mut out = String::new();
    let mut rest = total;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push_str(&format!("{rest}.{}s", fraction.trim_end_matches('0')));
    } else if rest != 0 || out.is_empty() {
        out.push_str(&format!("{rest}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Result<Duration, String> {
        Ok(Duration::from_secs(n))
    }

    #[test]
    fn parses_seconds_and_unit_forms() {
        assert_eq!(parse_duration("90"), secs(90));
        assert_eq!(parse_duration("90s"), secs(90));
        assert_eq!(parse_duration("30m"), secs(1800));
        assert_eq!(parse_duration("1h"), secs(3600));
        assert_eq!(parse_duration("1h30m"), secs(5400));
        assert_eq!(parse_duration("2d12h"), secs(216_000));
        assert_eq!(parse_duration("1h0m5s"), secs(3605));
        assert_eq!(parse_duration(" 10m "), secs(600));
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
    }

    #[test]
    fn refuses_malformed_zero_and_too_long_durations() {
        for bad in [
            "", "m", "10x", "1.5h", "-5s", "1h 30m", "30m1h", "1m1m", "h1", "10S", "1e3", "∞",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(parse_duration("10x"), Err("`10x` is not a duration".into()));
        assert_eq!(
            parse_duration("0s"),
            Err("`0s` is not a positive duration".into())
        );
        assert_eq!(
            parse_duration("0"),
            Err("`0` is not a positive duration".into())
        );
        assert_eq!(
            parse_duration("366d"),
            Err("`366d` is longer than 365d".into())
        );
        // Overflow of u64 is "too long", not a panic.
        assert_eq!(
            parse_duration("99999999999999999999999"),
            Err("`99999999999999999999999` is longer than 365d".into())
        );
        assert!(parse_duration("999999999999999999d").is_err());
        // A huge malformed text is quoted cut.
        let e = parse_duration(&"9x".repeat(100_000)).unwrap_err();
        assert!(e.len() < 100, "{e}");
    }

    #[test]
    fn formats_largest_units_first_and_round_trips() {
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(3605)), "1h5s");
        assert_eq!(format_duration(Duration::from_secs(2 * 86_400)), "2d");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(60_500)), "1m0.5s");
        assert_eq!(format_duration(Duration::from_millis(250)), "0.25s");
        for n in [
            1, 59, 60, 61, 3599, 3600, 86_399, 86_400, 90_061, 31_536_000,
        ] {
            let d = Duration::from_secs(n);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{n}");
        }
    }
}
