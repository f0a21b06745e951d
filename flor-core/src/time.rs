//! Timestamps: ISO-8601 in UTC with microseconds, without a zone suffix
//! (`2026-11-26T18:38:57.123456`), the shape FlorDB uses for `tstamp`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The current time as an ISO-8601 UTC timestamp with microseconds.
pub fn now_iso() -> String {
    iso_from_system_time(SystemTime::now())
}

/// Formats a point in time as `YYYY-MM-DDTHH:MM:SS.ffffff` (UTC).
pub fn iso_from_system_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    iso_from_micros(d.as_micros() as i64)
}

/// Formats microseconds since the Unix epoch (UTC).
pub fn iso_from_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}", sod / 3600, (sod / 60) % 60, sod % 60)
}

/// Parses a timestamp written by [`iso_from_micros`] back to microseconds.
pub fn micros_from_iso(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 26 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'.'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse::<i64>().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se, us) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(y, mo as u32, d as u32);
    Some((days * 86_400 + h * 3600 + mi * 60 + se) * 1_000_000 + us)
}

// Howard Hinnant's algorithms for the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(iso_from_micros(0), "1970-01-01T00:00:00.000000");
        assert_eq!(iso_from_micros(1_709_251_199_000_001), "2024-02-29T23:59:59.000001");
        for m in [0, 1, 951_782_400_000_000, 1_795_718_337_123_456, -86_400_000_000] {
            assert_eq!(micros_from_iso(&iso_from_micros(m)), Some(m));
        }
        assert_eq!(micros_from_iso("2026-13-01T00:00:00.000000"), None);
        assert_eq!(micros_from_iso("garbage"), None);
    }
}
