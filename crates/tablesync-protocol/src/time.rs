//! UTC instants with millisecond precision and their wire form (protocol.md 3.2).
//!
//! Every timestamp that crosses a crate boundary is a [`Timestamp`]: milliseconds since the Unix
//! epoch. Milliseconds because that is what both official servers emit and what JavaScript
//! clients can represent; a finer stored value would make a client's delta token compare below
//! the row it came from. The wire form is always `YYYY-MM-DDTHH:MM:SS.sssZ` (exactly three
//! fractional digits), so on SQLite the text order of stored values equals time order.
//!
//! Parsing is lenient the way the protocol requires: 0-7 fractional digits (sub-millisecond
//! digits are truncated, never rounded, so a value never moves into the next millisecond) and
//! `Z` or a numeric `+hh:mm`/`-hh:mm` offset.
//!
//! The calendar arithmetic is done here (proleptic Gregorian, Howard Hinnant's algorithms) rather
//! than through the `time` crate so that formatting cannot fail and the wire form is fixed by
//! this one file.

use std::fmt;
use std::str::FromStr;

const MILLIS_PER_DAY: i64 = 86_400_000;

/// A UTC instant with millisecond precision: milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The earliest instant the parser accepts: `0001-01-01T00:00:00.000Z`. Year 0 has a wire
    /// form but PostgreSQL has no year 0 (it is 1 BC there), so it is refused on both stores.
    pub const MIN_WIRE: Timestamp = Timestamp(-62_135_596_800_000);
    /// The latest instant the wire form can represent and the parser accepts:
    /// `9999-12-31T23:59:59.999Z`.
    pub const MAX_WIRE: Timestamp = Timestamp(253_402_300_799_999);

    /// The instant `ms` milliseconds after the Unix epoch.
    pub fn from_unix_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> i64 {
        self.0
    }

    /// The current wall-clock time, truncated to milliseconds.
    pub fn now() -> Self {
        let ms = match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        };
        Timestamp(ms)
    }

    /// Calendar fields (year, month 1-12, day 1-31, hour, minute, second, millisecond) in UTC.
    pub fn to_parts(self) -> (i64, u32, u32, u32, u32, u32, u32) {
        let days = self.0.div_euclid(MILLIS_PER_DAY);
        let ms_of_day = self.0.rem_euclid(MILLIS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        let ms_of_day = ms_of_day as u32; // < 86_400_000, fits
        (
            y,
            m,
            d,
            ms_of_day / 3_600_000,
            ms_of_day / 60_000 % 60,
            ms_of_day / 1000 % 60,
            ms_of_day % 1000,
        )
    }
}

/// Days since 1970-01-01 to (year, month, day).
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

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// The wire form, always `YYYY-MM-DDTHH:MM:SS.sssZ`.
///
/// Instants outside years 0000-9999 print with a signed, wider year so that formatting never
/// fails; they are not valid wire values. The parser never produces them: it refuses anything
/// outside [`Timestamp::MIN_WIRE`]..=[`Timestamp::MAX_WIRE`] after applying the offset.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s, ms) = self.to_parts();
        if (0..=9999).contains(&y) {
            write!(f, "{y:04}-")?;
        } else {
            write!(f, "{y:+05}-")?;
        }
        write!(f, "{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    }
}

/// Why a string is not a timestamp.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid timestamp '{input}': {reason} (format: YYYY-MM-DDTHH:MM:SS[.fffffff] and Z or +hh:mm)"
)]
pub struct TimestampError {
    /// The refused input (truncated to 64 characters).
    pub input: String,
    /// What was wrong with it.
    pub reason: &'static str,
}

/// Most fractional-second digits accepted (.NET `DateTimeOffset` precision, 100 ns).
pub const FRACTION_DIGITS_MAX: usize = 7;

/// Parses an ISO 8601 instant: `YYYY-MM-DDTHH:MM:SS`, then 0-7 fractional digits after a `.`,
/// then `Z` or `+hh:mm`/`-hh:mm`. Sub-millisecond digits are truncated; the result is UTC.
/// `t`/`z` are accepted in lower case too.
pub fn parse_timestamp(s: &str) -> Result<Timestamp, TimestampError> {
    let err = |reason: &'static str| TimestampError {
        input: s.chars().take(64).collect(),
        reason,
    };
    let b = s.as_bytes();
    let mut pos = 0usize;
    let num = |pos: &mut usize, digits: usize, what: &'static str| -> Result<u32, TimestampError> {
        let mut v = 0u32;
        for _ in 0..digits {
            match b.get(*pos) {
                Some(c) if c.is_ascii_digit() => v = v * 10 + u32::from(c - b'0'),
                _ => return Err(err(what)),
            }
            *pos += 1;
        }
        Ok(v)
    };
    let expect = |pos: &mut usize, ch: &[u8], what: &'static str| -> Result<(), TimestampError> {
        match b.get(*pos) {
            Some(c) if ch.contains(c) => {
                *pos += 1;
                Ok(())
            }
            _ => Err(err(what)),
        }
    };
    let year = num(&mut pos, 4, "expected a 4-digit year")?;
    expect(&mut pos, b"-", "expected '-' after the year")?;
    let month = num(&mut pos, 2, "expected a 2-digit month")?;
    expect(&mut pos, b"-", "expected '-' after the month")?;
    let day = num(&mut pos, 2, "expected a 2-digit day")?;
    expect(&mut pos, b"Tt", "expected 'T' after the date")?;
    let hour = num(&mut pos, 2, "expected a 2-digit hour")?;
    expect(&mut pos, b":", "expected ':' after the hour")?;
    let minute = num(&mut pos, 2, "expected 2-digit minutes")?;
    expect(&mut pos, b":", "expected ':' after the minutes")?;
    let second = num(&mut pos, 2, "expected 2-digit seconds")?;
    let mut millis = 0u32;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while b.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        let digits = pos - start;
        if digits == 0 {
            return Err(err("expected digits after '.'"));
        }
        if digits > FRACTION_DIGITS_MAX {
            return Err(err("more than 7 fractional digits"));
        }
        // Truncate to milliseconds: take the first three digits, padding with zeros.
        for i in 0..3 {
            millis = millis * 10
                + b.get(start + i)
                    .filter(|_| i < digits)
                    .map_or(0, |c| u32::from(c - b'0'));
        }
    }
    let offset_minutes: i64 = match b.get(pos) {
        Some(b'Z' | b'z') => {
            pos += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            let negative = *sign == b'-';
            pos += 1;
            let oh = num(&mut pos, 2, "expected a 2-digit offset hour")?;
            expect(&mut pos, b":", "expected ':' in the offset")?;
            let om = num(&mut pos, 2, "expected 2-digit offset minutes")?;
            if oh > 23 || om > 59 {
                return Err(err("offset out of range"));
            }
            let m = i64::from(oh * 60 + om);
            if negative {
                -m
            } else {
                m
            }
        }
        _ => return Err(err("expected 'Z' or an offset like +00:00")),
    };
    if pos != b.len() {
        return Err(err("unexpected characters after the timestamp"));
    }
    if !(1..=12).contains(&month) {
        return Err(err("month out of range"));
    }
    if day == 0 || day > days_in_month(i64::from(year), month) {
        return Err(err("day out of range"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(err("time of day out of range"));
    }
    let days = days_from_civil(i64::from(year), month, day);
    let ms = days * MILLIS_PER_DAY
        + i64::from(hour) * 3_600_000
        + i64::from(minute) * 60_000
        + i64::from(second) * 1000
        + i64::from(millis)
        - offset_minutes * 60_000;
    // The offset can move an in-range local time out of range (`9999-12-31T23:59:59-01:00`),
    // so the range is checked on the UTC result, not on the digits.
    if !(Timestamp::MIN_WIRE.0..=Timestamp::MAX_WIRE.0).contains(&ms) {
        return Err(err("outside years 0001-9999 (UTC)"));
    }
    Ok(Timestamp(ms))
}

impl FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_timestamp(s)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ISO 8601 timestamp string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                parse_timestamp(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        match parse_timestamp(s) {
            Ok(t) => t.to_string(),
            Err(e) => format!("ERR {e}"),
        }
    }

    #[test]
    fn wire_form() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(-1).to_string(), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            Timestamp(1_476_101_315_247).to_string(),
            "2016-10-10T12:08:35.247Z"
        );
        assert_eq!(Timestamp::MIN_WIRE.to_string(), "0001-01-01T00:00:00.000Z");
        assert_eq!(Timestamp::MAX_WIRE.to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            Timestamp(Timestamp::MAX_WIRE.0 + 1).to_string(),
            "+10000-01-01T00:00:00.000Z"
        );
        // Extremes must not panic.
        let _ = Timestamp(i64::MIN).to_string();
        let _ = Timestamp(i64::MAX).to_string();
    }

    #[test]
    fn parsing() {
        assert_eq!(p("2016-10-10T12:08:35.247Z"), "2016-10-10T12:08:35.247Z");
        assert_eq!(p("2016-10-10T12:08:35Z"), "2016-10-10T12:08:35.000Z");
        assert_eq!(p("2016-10-10T12:08:35.2Z"), "2016-10-10T12:08:35.200Z");
        assert_eq!(
            p("2016-10-10T12:08:35.2479999+00:00"),
            "2016-10-10T12:08:35.247Z"
        );
        assert_eq!(
            p("2016-10-10T12:08:35.247+02:00"),
            "2016-10-10T10:08:35.247Z"
        );
        assert_eq!(p("2016-10-10T23:30:00-01:30"), "2016-10-11T01:00:00.000Z");
        assert_eq!(p("1969-12-31t08:00:00.000z"), "1969-12-31T08:00:00.000Z");
        assert_eq!(p("2024-02-29T00:00:00Z"), "2024-02-29T00:00:00.000Z");
        assert_eq!(
            p("2023-02-29T00:00:00Z"),
            "ERR invalid timestamp '2023-02-29T00:00:00Z': day out of range (format: YYYY-MM-DDTHH:MM:SS[.fffffff] and Z or +hh:mm)"
        );
        for bad in [
            "",
            "abc",
            "2016-10-10",
            "2016-10-10T12:08:35",
            "2016-10-10T12:08:35.Z",
            "2016-10-10T12:08:35.12345678Z",
            "2016-13-10T12:08:35Z",
            "2016-10-10T24:00:00Z",
            "2016-10-10T12:60:00Z",
            "2016-10-10T12:08:35Zx",
            "2016-10-10T12:08:35+0000",
            "2016-10-10T12:08:35+24:00",
            "２016-10-10T12:08:35Z",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    /// Results outside 0001-01-01T00:00:00.000Z..=9999-12-31T23:59:59.999Z (after applying the
    /// offset) are refused: PostgreSQL has no year 0 and the wire form has four year digits.
    #[test]
    fn range_after_offset() {
        for bad in [
            "0000-01-01T00:00:00Z",
            "0000-12-31T23:59:59.999Z",
            "9999-12-31T23:59:59-01:00",
            "0001-01-01T00:30:00+01:00",
        ] {
            assert_eq!(
                parse_timestamp(bad).map_err(|e| e.reason),
                Err("outside years 0001-9999 (UTC)"),
                "{bad}"
            );
        }
        assert_eq!(p("0001-01-01T00:00:00Z"), "0001-01-01T00:00:00.000Z");
        assert_eq!(p("0001-01-01T01:00:00+01:00"), "0001-01-01T00:00:00.000Z");
        assert_eq!(p("9999-12-31T23:59:59.999Z"), "9999-12-31T23:59:59.999Z");
        assert_eq!(p("9999-12-31T23:00:00-00:59"), "9999-12-31T23:59:00.000Z");
    }

    #[test]
    fn serde_round_trip() {
        let t = Timestamp(1_476_101_315_247);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2016-10-10T12:08:35.247Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        assert!(serde_json::from_str::<Timestamp>("\"nope\"").is_err());
        assert!(serde_json::from_str::<Timestamp>("12").is_err());
    }

    #[test]
    fn parts_round_trip() {
        for ms in [
            Timestamp::MIN_WIRE.0,
            -86_400_001,
            -1,
            0,
            951_782_400_000,
            1_476_101_315_247,
            Timestamp::MAX_WIRE.0,
        ] {
            let t = Timestamp(ms);
            assert_eq!(parse_timestamp(&t.to_string()), Ok(t));
        }
    }
}
