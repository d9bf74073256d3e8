//! Time parts for the `minute` ... `year` modifiers.
//!
//! The modifier appendix says these modifiers do no time zone or format
//! conversion: a text timestamp is read as written (`2024-05-01T13:45:00+02:00`
//! has hour 13). Numbers are Unix epoch seconds (or milliseconds when larger
//! than 10^11) in UTC.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimePart {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DateTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
}

impl DateTime {
    pub(crate) fn part(&self, p: TimePart) -> i64 {
        match p {
            TimePart::Minute => i64::from(self.minute),
            TimePart::Hour => i64::from(self.hour),
            TimePart::Day => i64::from(self.day),
            TimePart::Week => i64::from(iso_week(self.year, self.month, self.day)),
            TimePart::Month => i64::from(self.month),
            TimePart::Year => self.year,
        }
    }
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

/// Reads `YYYY-MM-DD[T| ]HH:MM[:SS[.fff]][Z|±hh:mm]` (a date alone gives
/// 00:00), or an epoch number.
pub(crate) fn parse(s: &str) -> Option<DateTime> {
    let t = s.trim();
    let b = t.as_bytes();
    if b.len() >= 10 && b[4] == b'-' && b[7] == b'-' {
        let year = i64::from(digits(&b[0..4])?);
        let month = digits(&b[5..7])?;
        let day = digits(&b[8..10])?;
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        let (mut hour, mut minute) = (0, 0);
        if b.len() >= 16 && (b[10] == b'T' || b[10] == b' ' || b[10] == b't') && b[13] == b':' {
            hour = digits(&b[11..13])?;
            minute = digits(&b[14..16])?;
            if hour > 23 || minute > 59 {
                return None;
            }
        } else if b.len() != 10 {
            return None;
        }
        return Some(DateTime {
            year,
            month,
            day,
            hour,
            minute,
        });
    }
    let n: f64 = t.parse().ok()?;
    if !n.is_finite() {
        return None;
    }
    let secs = if n.abs() > 1e11 { n / 1000.0 } else { n };
    Some(from_epoch(secs.floor() as i64))
}

pub(crate) fn from_epoch(secs: i64) -> DateTime {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    DateTime {
        year,
        month,
        day,
        hour: u32::try_from(rem / 3600).unwrap_or(0),
        minute: u32::try_from((rem % 3600) / 60).unwrap_or(0),
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (the well-known
/// era-based conversion).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn day_of_year(y: i64, m: u32, d: u32) -> u32 {
    (1..m).map(|mm| days_in_month(y, mm)).sum::<u32>() + d
}

/// ISO weekday, Monday = 1.
fn weekday(y: i64, m: u32, d: u32) -> u32 {
    // Days since the epoch via the inverse of civil_from_days.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    // 1970-01-01 was a Thursday (4).
    u32::try_from((days + 3).rem_euclid(7) + 1).unwrap_or(1)
}

/// ISO 8601 week number (1..=53).
fn iso_week(y: i64, m: u32, d: u32) -> u32 {
    let doy = day_of_year(y, m, d);
    let wd = weekday(y, m, d);
    let w = (doy + 10 - wd) / 7;
    if w == 0 {
        // Belongs to the last week of the previous year.
        return iso_weeks_in_year(y - 1);
    }
    if w > iso_weeks_in_year(y) {
        return 1;
    }
    w
}

fn iso_weeks_in_year(y: i64) -> u32 {
    let jan1 = weekday(y, 1, 1);
    if jan1 == 4 || (jan1 == 3 && is_leap(y)) {
        53
    } else {
        52
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_epoch() {
        let d = parse("2025-11-27T07:40:10.165324Z").unwrap();
        assert_eq!(
            (d.year, d.month, d.day, d.hour, d.minute),
            (2025, 11, 27, 7, 40)
        );
        let d = parse("2025-11-27 23:05:10.132").unwrap();
        assert_eq!(d.part(TimePart::Hour), 23);
        assert_eq!(parse("2024-02-29").unwrap().part(TimePart::Day), 29);
        assert!(parse("2023-02-29").is_none());
        assert!(parse("yesterday").is_none());
        let e = parse("1700000000").unwrap();
        assert_eq!(
            (e.year, e.month, e.day, e.hour, e.minute),
            (2023, 11, 14, 22, 13)
        );
        assert_eq!(parse("1700000000000").unwrap(), e);
    }

    #[test]
    fn iso_weeks() {
        assert_eq!(parse("2021-01-03").unwrap().part(TimePart::Week), 53);
        assert_eq!(parse("2021-01-04").unwrap().part(TimePart::Week), 1);
        assert_eq!(parse("2024-12-30").unwrap().part(TimePart::Week), 1);
        assert_eq!(parse("2025-11-27").unwrap().part(TimePart::Week), 48);
    }
}
