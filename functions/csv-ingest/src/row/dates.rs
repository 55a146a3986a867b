//! `settled_at`: RFC 3339 date-times to Unix time, parsed by hand for speed.

use chrono::{DateTime, Utc};

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
#[inline(always)]
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// RFC 3339 date-time (`2026-11-27T06:00:00Z`, `…T06:00:00.250+01:00`; `t`, `z` and a
/// space separator allowed, as RFC 3339 §5.6 notes). Hand-written because chrono's
/// general parser was the largest cost per row; the tests hold it to chrono's answers.
pub fn parse_rfc3339(text: &str) -> Option<DateTime<Utc>> {
    let (secs, nanos) = parse_rfc3339_parts(text.as_bytes())?;
    DateTime::from_timestamp(secs, nanos)
}

/// [`parse_rfc3339`] as Unix seconds and nanoseconds, from raw bytes.
#[inline(always)]
pub(super) fn parse_rfc3339_parts(b: &[u8]) -> Option<(i64, u32)> {
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0u32, |acc, d| d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0')))
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' {
        return None;
    }
    if b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut pos = 19;
    let mut nanos = 0u32;
    if b[pos] == b'.' {
        let digits = b[pos + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        // Digits past nanoseconds are dropped, as chrono does.
        let kept = digits.min(9);
        nanos = num(pos + 1..pos + 1 + kept)? * 10u32.pow(9 - kept as u32);
        pos += 1 + digits;
    }
    let offset_secs: i64 = match b.get(pos..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] | [sign @ 0xE2, 0x88, 0x92, _, _, b':', _, _] => {
            // U+2212 MINUS SIGN (E2 88 92) is taken for '-', as chrono takes it.
            let at = b.len() - 5;
            let (h, m) = (num(at..at + 2)?, num(at + 3..at + 5)?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = i64::from(h * 3600 + m * 60);
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) || day == 0 || day > month_days[month as usize - 1] {
        return None;
    }
    // A leap second (:60) is kept as chrono keeps it: :59 plus a second of nanoseconds.
    let (second, nanos) = if second == 60 { (59, nanos + 1_000_000_000) } else { (second, nanos) };
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    Some((seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_as_chrono_does() {
        let cases = [
            "2026-11-27T06:00:00Z",
            "2026-11-27t06:00:00z",
            "2026-11-27 06:00:00Z",
            "2026-11-27T06:00:00.5Z",
            "2026-11-27T06:00:00.123456789+05:30",
            "2026-11-27T06:00:00-08:00",
            "2026-11-27T06:00:00\u{2212}08:00",
            "2026-11-27T06:00:00\u{2212}0800",
            "2024-02-29T23:59:59+00:00",
            "2026-01-01T00:00:00+23:59",
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T06:00:00",
            "2026-11-27T06:00:00.Z",
            "2026-11-27T06:00:00.1234567891Z",
            "2026-11-27T06:00:00+0100",
            "2026-11-27T06:00:00+24:00",
            "2026-11-27T06:00:00Z ",
            "2026-11-2706:00:00Z",
            "+026-11-27T06:00:00Z",
            "2026-11-27T06:0:00Z",
            "2026-11-27T23:59:60Z",
            "2000-02-29T12:00:00Z",
            "1900-02-29T12:00:00Z",
            "0001-01-01T00:00:00Z",
            "0000-03-01T00:00:00+01:00",
            "9999-12-31T23:59:59-23:59",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999999Z",
            "",
        ];
        for case in cases {
            let ours = parse_rfc3339(case);
            let chrono = DateTime::parse_from_rfc3339(case).ok().map(|d| d.with_timezone(&Utc));
            assert_eq!(ours, chrono, "{case:?}");
        }
    }
}

/// Properties over arbitrary text: the parser agrees with chrono's everywhere.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn dates_agree_with_chrono(text in "[0-9]{4}-[01][0-9]-[0-3][0-9][Tt ][0-2][0-9]:[0-6][0-9]:[0-6][0-9](\\.[0-9]{0,11})?([Zz]|[+-][0-2][0-9]:[0-6][0-9]|)") {
            let ours = parse_rfc3339(&text);
            let chrono = DateTime::parse_from_rfc3339(&text).ok().map(|d| d.with_timezone(&Utc));
            prop_assert_eq!(ours, chrono, "{:?}", text);
        }

        #[test]
        fn arbitrary_text_dates_never_panic(text in ".{0,40}") {
            let ours = parse_rfc3339(&text);
            let chrono = DateTime::parse_from_rfc3339(&text).ok().map(|d| d.with_timezone(&Utc));
            prop_assert_eq!(ours, chrono, "{:?}", text);
        }
    }
}
