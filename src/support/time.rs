//! Times as image documents write them: whole seconds since the epoch, formatted as
//! RFC 3339 in UTC (`2023-11-14T22:13:20Z`), the form of an image config's `created`
//! and of the `org.opencontainers.image.created` annotation; run records add
//! milliseconds (`2023-11-14T22:13:20.250Z`) and read them back.

/// 9999-12-31T23:59:59Z: the last second a four-digit RFC 3339 year can say, so the
/// largest time archfarm writes (image.yaml `created`, `SOURCE_DATE_EPOCH`).
pub const MAX_SECONDS: u64 = 253_402_300_799;

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a wall-clock time (run records).
pub fn rfc3339_millis(t: std::time::SystemTime) -> String {
    let ms = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let whole = rfc3339(ms / 1000);
    format!("{}.{:03}Z", whole.trim_end_matches('Z'), ms % 1000)
}

/// Milliseconds since the epoch of a UTC RFC 3339 time as [`rfc3339`] and
/// [`rfc3339_millis`] write it (`Z`, optional fraction); `None` for anything else.
pub fn parse_rfc3339_millis(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let ms = match frac.len() {
        0 => 0,
        n if frac.bytes().all(|b| b.is_ascii_digit()) => {
            frac[..n.min(3)].parse::<u64>().ok()? * 10u64.pow(3 - n.min(3) as u32)
        }
        _ => return None,
    };
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146097 + doe - 719468).ok()?;
    Some((days * 86400 + hh * 3600 + mm * 60 + ss) * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(MAX_SECONDS), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn millis_round_trip() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_250);
        assert_eq!(rfc3339_millis(t), "2023-11-14T22:13:20.250Z");
        assert_eq!(parse_rfc3339_millis("2023-11-14T22:13:20.250Z"), Some(1_700_000_000_250));
        assert_eq!(parse_rfc3339_millis("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(parse_rfc3339_millis("2000-02-29T00:00:00.5Z"), Some(951_782_400_500));
        assert_eq!(parse_rfc3339_millis(&rfc3339(MAX_SECONDS)), Some(MAX_SECONDS * 1000));
        for bad in ["", "2023-11-14", "2023-13-01T00:00:00Z", "2023-11-14T22:13:20+01:00", "2023-11-14T22:13:20.x5Z"] {
            assert_eq!(parse_rfc3339_millis(bad), None, "{bad}");
        }
    }
}
