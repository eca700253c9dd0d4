//! The parts of a request URL and head that streaming and polling endpoints read: query
//! parameters (RFC 3986 percent-encoding, `application/x-www-form-urlencoded` pairs) and
//! whether `Accept` admits a media type (RFC 9110 §12.5.1).

use std::borrow::Cow;

/// Why a query could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// A `%` not followed by two hex digits.
    InvalidPercentEncoding,
    /// Decoded bytes that are not UTF-8.
    NotUtf8,
}

impl QueryError {
    pub fn reason(self) -> &'static str {
        match self {
            QueryError::InvalidPercentEncoding => {
                "a % in the query is not followed by two hex digits"
            }
            QueryError::NotUtf8 => "the query decodes to bytes that are not UTF-8",
        }
    }
}

/// The `name=value` pairs of `query`, still encoded, in order. A pair without `=` has an empty
/// value; empty pairs (`a=1&&b=2`) are skipped.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// The first value of parameter `name` in `query`, still encoded (for a list whose separator
/// may also appear, encoded, inside an item).
pub fn query_raw<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query_pairs(query)
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The first value of parameter `name` in `query`, decoded; `None` when absent.
pub fn query_value<'a>(query: &'a str, name: &str) -> Result<Option<Cow<'a, str>>, QueryError> {
    query_pairs(query)
        .find(|(key, _)| *key == name)
        .map(|(_, value)| percent_decode(value, true))
        .transpose()
}

/// Decodes `%XX` escapes, and `+` as a space when `plus_is_space` (form-encoded queries);
/// borrows when there is nothing to decode.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Result<Cow<'_, str>, QueryError> {
    if !(text.contains('%') || plus_is_space && text.contains('+')) {
        return Ok(Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let digit = |offset: usize| {
                    bytes
                        .get(index + offset)
                        .and_then(|&byte| (byte as char).to_digit(16))
                };
                let (Some(high), Some(low)) = (digit(1), digit(2)) else {
                    return Err(QueryError::InvalidPercentEncoding);
                };
                decoded.push((high * 16 + low) as u8);
                index += 3;
            }
            b'+' if plus_is_space => {
                decoded.push(b' ');
                index += 1;
            }
            byte => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded)
        .map(Cow::Owned)
        .map_err(|_| QueryError::NotUtf8)
}

/// Whether an `Accept` header admits `media_type` (`type/subtype`, lower case): no header,
/// `*/*`, `type/*` or the type itself, each unless given `q=0`.
pub fn accepts(accept: Option<&[u8]>, media_type: &str) -> bool {
    let Some(accept) = accept.and_then(|accept| std::str::from_utf8(accept).ok()) else {
        return accept.is_none();
    };
    let major = media_type.split('/').next().unwrap_or(media_type);
    accept.split(',').any(|range| {
        let mut parts = range.split(';');
        let name = parts.next().unwrap_or("").trim();
        let refused = parts.any(|parameter| {
            let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            key.trim().eq_ignore_ascii_case("q")
                && value.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
        });
        let matches = name == "*/*"
            || name.eq_ignore_ascii_case(media_type)
            || name
                .strip_suffix("/*")
                .is_some_and(|range_major| range_major.eq_ignore_ascii_case(major));
        matches && !refused
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_values_are_decoded() {
        let query = "topics=AAPL,EUR%2FUSD&since=%7B%22AAPL%22%3A4%7D&flag&&x=a+b";
        let pairs: Vec<_> = query_pairs(query).collect();
        assert_eq!(pairs[2], ("flag", ""));
        assert_eq!(pairs.len(), 4);
        assert_eq!(
            query_value(query, "topics").unwrap().unwrap(),
            "AAPL,EUR/USD"
        );
        assert_eq!(
            query_value(query, "since").unwrap().unwrap(),
            r#"{"AAPL":4}"#
        );
        assert_eq!(query_value(query, "x").unwrap().unwrap(), "a b");
        assert_eq!(query_value(query, "none").unwrap(), None);
        assert!(matches!(
            query_value("a=plain", "a").unwrap().unwrap(),
            Cow::Borrowed("plain")
        ));
    }

    #[test]
    fn bad_escapes_are_refused() {
        assert_eq!(
            percent_decode("%4", false),
            Err(QueryError::InvalidPercentEncoding)
        );
        assert_eq!(
            percent_decode("%zz", false),
            Err(QueryError::InvalidPercentEncoding)
        );
        assert_eq!(percent_decode("%ff", false), Err(QueryError::NotUtf8));
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
    }

    #[test]
    fn accept_ranges() {
        let sse = "text/event-stream";
        assert!(accepts(None, sse));
        assert!(accepts(Some(b"text/event-stream"), sse));
        assert!(accepts(Some(b"*/*"), sse));
        assert!(accepts(Some(b"text/*;q=0.5, application/json"), sse));
        assert!(accepts(Some(b"Text/Event-Stream"), sse));
        assert!(!accepts(Some(b"application/json"), sse));
        assert!(!accepts(Some(b"text/event-stream;q=0"), sse));
        assert!(!accepts(Some(b"\xff"), sse));
    }
}
