//! A certificate's validity period (RFC 5280 §4.1.2.5), read from its DER so that start-up and
//! reload can refuse an expired certificate with a message instead of serving handshakes every
//! client refuses. This reads only the fields in front of `validity`, each a tag, a length and
//! bytes; it is not used to trust anything (clients verify the chain).

/// When a certificate starts and stops being valid, in seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before_seconds: i64,
    pub not_after_seconds: i64,
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xA0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// Reads the validity of the DER certificate `der`.
pub fn validity(der: &[u8]) -> Result<Validity, &'static str> {
    let (certificate, _) = element(der, SEQUENCE)?;
    let (tbs, _) = element(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = element(rest, VERSION)?.1;
    }
    rest = element(rest, INTEGER)?.1; // serialNumber
    rest = element(rest, SEQUENCE)?.1; // signature
    rest = element(rest, SEQUENCE)?.1; // issuer
    let (validity, _) = element(rest, SEQUENCE)?;
    let (not_before_seconds, rest) = time(validity)?;
    let (not_after_seconds, _) = time(rest)?;
    Ok(Validity {
        not_before_seconds,
        not_after_seconds,
    })
}

/// The content of the element at the front of `input`, which must have tag `tag`, and what
/// follows it.
fn element(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), &'static str> {
    let (&found, rest) = input.split_first().ok_or("truncated certificate")?;
    if found != tag {
        return Err("not an X.509 certificate");
    }
    let (&first, rest) = rest.split_first().ok_or("truncated certificate")?;
    let (length, rest) = match first {
        0..=0x7F => (usize::from(first), rest),
        0x81..=0x84 => {
            let count = usize::from(first & 0x7F);
            if rest.len() < count {
                return Err("truncated certificate");
            }
            let (bytes, rest) = rest.split_at(count);
            let length = bytes
                .iter()
                .fold(0usize, |length, &byte| (length << 8) | usize::from(byte));
            (length, rest)
        }
        _ => return Err("bad length in certificate"),
    };
    if rest.len() < length {
        return Err("truncated certificate");
    }
    Ok(rest.split_at(length))
}

/// A UTCTime or GeneralizedTime at the front of `input`, as Unix seconds.
fn time(input: &[u8]) -> Result<(i64, &[u8]), &'static str> {
    let tag = *input.first().ok_or("truncated certificate")?;
    let (content, rest) = element(input, tag)?;
    let text = std::str::from_utf8(content).map_err(|_| "bad time in certificate")?;
    let (year, digits) = match (tag, text.len()) {
        // YYMMDDHHMMSSZ: years 50–99 are 19xx, 00–49 are 20xx (RFC 5280 §4.1.2.5.1).
        (UTC_TIME, 13) => {
            let year = number(&text[..2])?;
            (
                if year >= 50 { 1900 + year } else { 2000 + year },
                &text[2..],
            )
        }
        (GENERALIZED_TIME, 15) => (number(&text[..4])?, &text[4..]),
        _ => return Err("bad time in certificate"),
    };
    if !digits.ends_with('Z') {
        return Err("bad time in certificate");
    }
    let month = number(&digits[0..2])?;
    let day = number(&digits[2..4])?;
    let hour = number(&digits[4..6])?;
    let minute = number(&digits[6..8])?;
    let second = number(&digits[8..10])?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err("bad time in certificate");
    }
    let days = days_from_civil(year, month, day);
    Ok((days * 86_400 + hour * 3600 + minute * 60 + second, rest))
}

fn number(text: &str) -> Result<i64, &'static str> {
    if !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err("bad time in certificate");
    }
    text.parse().map_err(|_| "bad time in certificate")
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Formats Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` for messages.
pub fn format_utc(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let in_day = seconds.rem_euclid(86_400);
    // civil_from_days, the inverse of days_from_civil.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the day count agrees with known dates, both ways.
    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(4_102_444_799), "2099-12-31 23:59:59 UTC");
        for seconds in [-86_400 * 400, 1, 1_700_000_000, 253_402_300_799] {
            let text = format_utc(seconds);
            let (date, time) = text.split_once(' ').unwrap();
            let parts: Vec<i64> = date.split('-').map(|part| part.parse().unwrap()).collect();
            let clock: Vec<i64> = time[..8]
                .split(':')
                .map(|part| part.parse().unwrap())
                .collect();
            let back = days_from_civil(parts[0], parts[1], parts[2]) * 86_400
                + clock[0] * 3600
                + clock[1] * 60
                + clock[2];
            assert_eq!(back, seconds, "{text}");
        }
    }

    /// Proves both time encodings are read, and malformed input is refused, never a panic.
    #[test]
    fn times_and_garbage() {
        let utc = [&[UTC_TIME, 13][..], b"491231235959Z"].concat();
        assert_eq!(time(&utc).unwrap().0, 2_524_607_999);
        let generalized = [&[GENERALIZED_TIME, 15][..], b"19700102000000Z"].concat();
        assert_eq!(time(&generalized).unwrap().0, 86_400);
        assert!(time(&[UTC_TIME, 13, b'9']).is_err());
        assert!(validity(&[]).is_err());
        assert!(validity(&[SEQUENCE, 0x85, 1, 1, 1, 1, 1]).is_err());
        assert!(validity(&[SEQUENCE, 0x82, 0xFF, 0xFF]).is_err());
        for length in 0..64 {
            let noise: Vec<u8> = (0..length).map(|index| (index * 37 + 11) as u8).collect();
            let _ = validity(&noise);
        }
    }
}
