//! HTTP/1.1 request heads: parsed with httparse into borrowed fields, never copied.
//!
//! [`parse_request_head`] returns `Ok(None)` until the head is complete. It re-parses from the
//! start on every call, which costs at most `header_bytes_max` bytes of work, and never consumes
//! anything: bytes after [`Request::head_bytes`] (a body, a pipelined request, early frames) stay
//! in the caller's buffer. Header fields land in the caller's fixed array and borrow the input.

use super::error::HandshakeError;

/// How many header fields a request may carry. A browser upgrade request has about 15; 64 leaves
/// room for proxies' additions while keeping the caller's array at 2 KiB of stack.
pub const HEADERS_COUNT_MAX: usize = 64;

/// A complete HTTP/1.x request head. Everything borrows the receive buffer (`'buffer`) or the
/// caller's header array (`'headers`); nothing is copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'headers, 'buffer> {
    method: &'buffer str,
    path: &'buffer str,
    query: Option<&'buffer str>,
    version_minor: u8,
    headers: &'headers [httparse::Header<'buffer>],
    head_bytes: usize,
}

impl<'headers, 'buffer> Request<'headers, 'buffer> {
    /// The method, exactly as sent (methods are case-sensitive).
    pub fn method(&self) -> &'buffer str {
        self.method
    }

    /// The request target up to the first `?`.
    pub fn path(&self) -> &'buffer str {
        self.path
    }

    /// The request target after the first `?`, if there was one.
    pub fn query(&self) -> Option<&'buffer str> {
        self.query
    }

    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub fn version_minor(&self) -> u8 {
        self.version_minor
    }

    /// The value of the first header field called `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&'buffer [u8]> {
        self.header_values(name).next()
    }

    /// The values of every header field called `name`, in the order they were sent.
    pub fn header_values<'name>(
        &self,
        name: &'name str,
    ) -> impl Iterator<Item = &'buffer [u8]> + use<'headers, 'buffer, 'name> {
        self.headers
            .iter()
            .filter(move |header| header.name.eq_ignore_ascii_case(name))
            .map(|header| header.value)
    }

    /// Every header field as (name, value), in the order they were sent.
    pub fn headers(
        &self,
    ) -> impl Iterator<Item = (&'buffer str, &'buffer [u8])> + use<'headers, 'buffer> {
        self.headers
            .iter()
            .map(|header| (header.name, header.value))
    }

    /// Every `name=value` pair of every `Cookie` header, spaces trimmed. Pairs without `=` or
    /// with an empty name, and pairs that are not UTF-8, are skipped rather than failing the
    /// request: a cookie we cannot read is one we were never going to use. Quotes around a
    /// value are kept, as RFC 6265 makes them part of the value.
    pub fn cookies(
        &self,
    ) -> impl Iterator<Item = (&'buffer str, &'buffer str)> + use<'headers, 'buffer> {
        self.header_values("cookie")
            .flat_map(|value| value.split(|&byte| byte == b';'))
            .filter_map(parse_cookie_pair)
    }

    /// Whether the client asks for a WebSocket: an `Upgrade` header listing `websocket`. Other
    /// upgrades (such as `h2c`) are ignored, as RFC 9110 §7.8 allows, and served as plain HTTP.
    pub fn is_websocket_upgrade(&self) -> bool {
        self.has_token("upgrade", "websocket")
    }

    /// Where the head ends: the offset of a body, of the next pipelined request, or of the
    /// first WebSocket frame. The caller consumes this many bytes once it is done with `self`.
    pub fn head_bytes(&self) -> usize {
        self.head_bytes
    }

    /// Whether any `name` header lists `token` in its comma-separated value, ignoring case.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_values(name)
            .any(|value| list_contains_token(value, token))
    }
}

/// Parses the request head at the start of `input`. `Ok(None)` means the head is incomplete
/// and still within `header_bytes_max`; call again with the same bytes plus more.
pub fn parse_request_head<'headers, 'buffer>(
    input: &'buffer [u8],
    headers: &'headers mut [httparse::Header<'buffer>; HEADERS_COUNT_MAX],
    header_bytes_max: usize,
) -> Result<Option<Request<'headers, 'buffer>>, HandshakeError> {
    // Parsing no more than the limit bounds the work of each call; a head that fits completes
    // within the window, so an incomplete window with more input behind it is over the limit.
    let window = &input[..input.len().min(header_bytes_max)];
    let mut parsed = httparse::Request::new(headers);
    let head_bytes = match parsed.parse(window) {
        Ok(httparse::Status::Complete(head_bytes)) => head_bytes,
        Ok(httparse::Status::Partial) if input.len() > header_bytes_max => {
            return Err(HandshakeError::HeaderBlockTooLarge { header_bytes_max });
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(parse_error(error)),
    };
    let method = parsed
        .method
        .expect("httparse sets the method of a complete request");
    let target = parsed
        .path
        .expect("httparse sets the path of a complete request");
    let version_minor = parsed
        .version
        .expect("httparse sets the version of a complete request");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    check_line_endings(&window[..head_bytes])?;
    let request = Request {
        method,
        path,
        query,
        version_minor,
        headers: parsed.headers,
        head_bytes,
    };
    check_host(&request)?;
    check_expectations(&request)?;
    Ok(Some(request))
}

/// Every line of a head ends in CRLF (RFC 9112 §2.2). httparse also takes a bare LF, which a
/// proxy in front of us may read differently (one of the ways requests are smuggled), so a
/// head with one is refused rather than guessed at.
fn check_line_endings(head: &[u8]) -> Result<(), HandshakeError> {
    let mut previous = 0u8;
    for &byte in head {
        if byte == b'\n' && previous != b'\r' {
            return Err(HandshakeError::MalformedRequest(
                "line ending without CR (bare LF)",
            ));
        }
        previous = byte;
    }
    Ok(())
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host`; HTTP/1.0 may omit it, but no
/// request may carry two, since which one names the target would be a guess.
fn check_host(request: &Request<'_, '_>) -> Result<(), HandshakeError> {
    let mut hosts = request.header_values("host");
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(HandshakeError::DuplicateHost),
        (None, _) if request.version_minor() >= 1 => Err(HandshakeError::MissingHost),
        _ => Ok(()),
    }
}

/// RFC 9110 §10.1.1: the only expectation defined is `100-continue`; a server that receives
/// any other may answer 417. Refusing it tells the client at once that what it waits for will
/// not come. Empty list elements are allowed by the list syntax and mean nothing.
fn check_expectations(request: &Request<'_, '_>) -> Result<(), HandshakeError> {
    let unmet = request
        .header_values("expect")
        .flat_map(|value| value.split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .any(|element| !element.is_empty() && !element.eq_ignore_ascii_case(b"100-continue"));
    if unmet {
        return Err(HandshakeError::ExpectationFailed);
    }
    Ok(())
}

/// Names what httparse found wrong; the text goes into the 400 response body.
fn parse_error(error: httparse::Error) -> HandshakeError {
    match error {
        httparse::Error::TooManyHeaders => HandshakeError::TooManyHeaders {
            headers_count_max: HEADERS_COUNT_MAX,
        },
        httparse::Error::HeaderName => HandshakeError::MalformedRequest("invalid header name"),
        httparse::Error::HeaderValue => HandshakeError::MalformedRequest("invalid header value"),
        httparse::Error::NewLine => HandshakeError::MalformedRequest("invalid line ending"),
        httparse::Error::Token => {
            HandshakeError::MalformedRequest("invalid method or request target")
        }
        httparse::Error::Version => HandshakeError::MalformedRequest("invalid http version"),
        // Only responses have a status; a request parser reporting one is still bad input.
        httparse::Error::Status => HandshakeError::MalformedRequest("invalid request line"),
    }
}

/// Whether a comma-separated header value lists `token`, ignoring case and surrounding spaces.
fn list_contains_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&byte| byte == b',')
        .any(|element| element.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// One `name=value` element of a `Cookie` header, or `None` for one we skip.
fn parse_cookie_pair(pair: &[u8]) -> Option<(&str, &str)> {
    let equals_index = pair.iter().position(|&byte| byte == b'=')?;
    let name = pair[..equals_index].trim_ascii();
    let value = pair[equals_index + 1..].trim_ascii();
    if name.is_empty() {
        return None;
    }
    Some((
        std::str::from_utf8(name).ok()?,
        std::str::from_utf8(value).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves token lists match whole elements, ignoring case and spaces, and nothing else.
    #[test]
    fn token_lists_match_whole_elements() {
        assert!(list_contains_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(list_contains_token(b"UPGRADE", "upgrade"));
        assert!(list_contains_token(b" upgrade ,close", "upgrade"));
        assert!(!list_contains_token(b"upgraded", "upgrade"));
        assert!(!list_contains_token(b"keep-alive upgrade", "upgrade"));
        assert!(!list_contains_token(b"", "upgrade"));
    }
}
