//! The HTTP/1.1 side of a connection: the request head, the WebSocket upgrade (RFC 6455 §4.2),
//! the `Sec-WebSocket-Accept` key and every response written before the first frame.
//!
//! Like the rest of `protocol`, this module does no I/O. The shard hands it the bytes received so
//! far and a buffer to append the answer to:
//!
//! 1. [`parse_request`] returns `Ok(None)` until the head is complete. It re-parses from the start
//!    on every call, which costs at most `header_bytes_max` bytes of work, and never consumes
//!    anything: bytes after [`Request::head_bytes`] (a pipelined request, early frames) stay in
//!    the caller's buffer.
//! 2. A request with `Upgrade: websocket` goes to [`accept_upgrade`]; on success the shard writes
//!    [`write_switching_protocols`] and speaks frames from then on. On failure it writes
//!    [`write_error_response`] and closes.
//! 3. Any other request is plain HTTP for the caller to route (a health check, a 404), answered
//!    with [`write_response`].
//!
//! Nothing here allocates: header fields land in the caller's fixed array and borrow the input,
//! and responses are appended to a caller's `BytesMut`, which grows only if it lacks capacity.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::BytesMut;
use sha1::{Digest as _, Sha1};

use super::error::HandshakeError;
use crate::config::ProtocolConfig;

/// How many header fields a request may carry. A browser upgrade request has about 15; 64 leaves
/// room for proxies' additions while keeping the caller's array at 2 KiB of stack.
pub const HEADERS_COUNT_MAX: usize = 64;
/// Length of a `Sec-WebSocket-Accept` value: base64 of a 20-byte SHA-1 digest.
pub const ACCEPT_KEY_BYTES: usize = 28;
/// The only WebSocket version RFC 6455 defines, and the one we answer a 426 with.
pub const WEBSOCKET_VERSION: &str = "13";

/// The GUID RFC 6455 §1.3 appends to the client's key before hashing.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// A client key is 16 random bytes, which base64 spells in 24 characters with padding.
const KEY_BYTES: usize = 16;
const KEY_BASE64_BYTES: usize = 24;
/// base64's decoder wants room for its upper estimate (three bytes per four characters) even
/// when padding makes the result shorter.
const KEY_DECODE_BUFFER_BYTES: usize = KEY_BASE64_BYTES / 4 * 3;
/// Room for an error response body: every `HandshakeError` message is one short line.
const ERROR_BODY_BYTES_MAX: usize = 128;
/// Header fields a handshake error response always carries.
const CONTENT_TYPE_TEXT: (&str, &str) = ("Content-Type", "text/plain; charset=utf-8");

const _: () = assert!(ACCEPT_KEY_BYTES == 20_usize.div_ceil(3) * 4);
const _: () = assert!(KEY_BASE64_BYTES == KEY_BYTES.div_ceil(3) * 4);

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
/// and still within `config.header_bytes_max`; call again with the same bytes plus more.
pub fn parse_request<'headers, 'buffer>(
    input: &'buffer [u8],
    headers: &'headers mut [httparse::Header<'buffer>; HEADERS_COUNT_MAX],
    config: &ProtocolConfig,
) -> Result<Option<Request<'headers, 'buffer>>, HandshakeError> {
    parse_request_head(input, headers, config.header_bytes_max)
}

/// [`parse_request`] with the one limit it reads passed alone, for callers (the HTTP request
/// reader) that carry their limits without the rest of the protocol configuration.
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
    Ok(Some(Request {
        method,
        path,
        query,
        version_minor,
        headers: parsed.headers,
        head_bytes,
    }))
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

/// What a valid upgrade request is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upgrade<'buffer> {
    /// The `Sec-WebSocket-Accept` value, base64 (ASCII).
    pub accept_key: [u8; ACCEPT_KEY_BYTES],
    /// The subprotocol chosen from the client's offer, if any.
    pub subprotocol: Option<&'buffer str>,
}

impl Upgrade<'_> {
    /// The accept key as text.
    pub fn accept_key_str(&self) -> &str {
        std::str::from_utf8(&self.accept_key).expect("base64 is ASCII")
    }
}

/// Checks an upgrade request against RFC 6455 §4.2.1 and our configuration, in the order the
/// RFC lists the fields, and computes the answer. The request should satisfy
/// [`Request::is_websocket_upgrade`]; one that does not is refused with 426.
pub fn accept_upgrade<'buffer>(
    request: &Request<'_, 'buffer>,
    config: &ProtocolConfig,
) -> Result<Upgrade<'buffer>, HandshakeError> {
    check_request_line_and_upgrade(request)?;
    let key = single_valid_key(request)?;
    let version = request
        .header("sec-websocket-version")
        .map(<[u8]>::trim_ascii);
    if version != Some(WEBSOCKET_VERSION.as_bytes()) {
        return Err(HandshakeError::UnsupportedVersion);
    }
    check_origin(request, config)?;
    let subprotocol = select_subprotocol(request, config)?;
    Ok(Upgrade {
        accept_key: accept_key(key),
        subprotocol,
    })
}

/// Method, version, Host, `Upgrade: websocket` and `Connection: upgrade` (§4.2.1 items 1–4).
fn check_request_line_and_upgrade(request: &Request<'_, '_>) -> Result<(), HandshakeError> {
    if request.method != "GET" {
        return Err(HandshakeError::MethodNotGet);
    }
    if request.version_minor < 1 {
        return Err(HandshakeError::HttpVersionTooOld);
    }
    if request.header("host").is_none() {
        return Err(HandshakeError::MissingHost);
    }
    if !request.is_websocket_upgrade() {
        return Err(HandshakeError::MissingUpgradeWebSocket);
    }
    if !request.has_token("connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    Ok(())
}

/// The one `Sec-WebSocket-Key`, trimmed, once it is known to be 16 bytes of padded base64.
fn single_valid_key<'buffer>(
    request: &Request<'_, 'buffer>,
) -> Result<&'buffer [u8], HandshakeError> {
    let mut keys = request.header_values("sec-websocket-key");
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return Err(HandshakeError::MissingKey);
    };
    let key = key.trim_ascii();
    if key.len() != KEY_BASE64_BYTES {
        return Err(HandshakeError::InvalidKey);
    }
    let mut decoded = [0u8; KEY_DECODE_BUFFER_BYTES];
    match BASE64.decode_slice(key, &mut decoded) {
        Ok(KEY_BYTES) => Ok(key),
        Ok(_) | Err(_) => Err(HandshakeError::InvalidKey),
    }
}

/// With an allow-list configured, the `Origin` must be on it; a client that sends none is
/// refused too, since only browsers are bound by the list and browsers always send one.
fn check_origin(request: &Request<'_, '_>, config: &ProtocolConfig) -> Result<(), HandshakeError> {
    if config.origins_allowed.is_empty() {
        return Ok(());
    }
    let origin = request.header("origin").map(<[u8]>::trim_ascii);
    let allowed = origin.is_some_and(|origin| {
        config
            .origins_allowed
            .iter()
            .any(|allowed| allowed.as_bytes() == origin)
    });
    if allowed {
        Ok(())
    } else {
        Err(HandshakeError::OriginNotAllowed)
    }
}

/// The first of our subprotocols, in our order of preference, that the client offers. Names
/// compare exactly: RFC 6455 §11.3.4 registers them as case-sensitive tokens.
fn select_subprotocol<'buffer>(
    request: &Request<'_, 'buffer>,
    config: &ProtocolConfig,
) -> Result<Option<&'buffer str>, HandshakeError> {
    let offered = || {
        request
            .header_values("sec-websocket-protocol")
            .flat_map(|value| value.split(|&byte| byte == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|token| !token.is_empty())
    };
    for preferred in &config.subprotocols {
        if let Some(token) = offered().find(|token| *token == preferred.as_bytes()) {
            let token = std::str::from_utf8(token).expect("equal to the bytes of a String");
            return Ok(Some(token));
        }
    }
    if config.subprotocol_required && offered().next().is_some() {
        return Err(HandshakeError::NoAcceptableSubprotocol);
    }
    Ok(None)
}

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key + GUID)) (RFC 6455 §1.3). The key
/// is hashed as sent, not decoded.
pub fn accept_key(key: &[u8]) -> [u8; ACCEPT_KEY_BYTES] {
    let digest = Sha1::new()
        .chain_update(key)
        .chain_update(WEBSOCKET_GUID)
        .finalize();
    let mut accept = [0u8; ACCEPT_KEY_BYTES];
    let written = BASE64
        .encode_slice(digest, &mut accept)
        .expect("28 bytes hold the base64 of a 20-byte digest");
    assert_eq!(written, ACCEPT_KEY_BYTES);
    accept
}

/// Appends the 101 response that completes the handshake.
pub fn write_switching_protocols(upgrade: &Upgrade<'_>, out: &mut BytesMut) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(&upgrade.accept_key);
    out.extend_from_slice(b"\r\n");
    if let Some(subprotocol) = upgrade.subprotocol {
        write_header("Sec-WebSocket-Protocol", subprotocol, out);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the response refusing a request: the error's status, the headers that status calls
/// for, and the error's message as a plain-text body. The connection is closed after it, since
/// the bytes that follow a refused head cannot be trusted to start a new request.
pub fn write_error_response(error: &HandshakeError, out: &mut BytesMut) {
    let mut body = StackText::<ERROR_BODY_BYTES_MAX>::new();
    // A message longer than the buffer is cut; the response stays well-formed either way.
    let _ = write!(body, "{error}");
    let _ = body.write_char('\n');
    let status = error.status();
    let (headers, connection): (&[(&str, &str)], &str) = match status {
        405 => (&[CONTENT_TYPE_TEXT, ("Allow", "GET")], "close"),
        // RFC 9110 §15.5.22 requires `Upgrade` on a 426, and §7.8 that `Connection` name it;
        // RFC 6455 §4.4 names the versions we speak.
        426 => (
            &[
                CONTENT_TYPE_TEXT,
                ("Sec-WebSocket-Version", WEBSOCKET_VERSION),
                ("Upgrade", "websocket"),
            ],
            "Upgrade, close",
        ),
        _ => (&[CONTENT_TYPE_TEXT], "close"),
    };
    write_head(status, headers, body.as_bytes().len(), connection, out);
    out.extend_from_slice(body.as_bytes());
}

/// Appends a plain HTTP/1.1 response for the endpoints served beside the WebSocket (health,
/// not found). `Content-Length` and `Connection` are written here; `extra_headers` must not
/// repeat them. 1xx, 204 and 304 responses carry no body and no `Content-Length`.
pub fn write_response(
    status: u16,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
    out: &mut BytesMut,
) {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    write_head(status, extra_headers, body.len(), connection, out);
    out.extend_from_slice(body);
}

/// The reason phrase of each status we send. Others get an empty phrase, which RFC 9110 §4
/// allows: clients read only the code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Appends the head of a response whose `body_bytes`-byte body the caller appends next, for
/// bodies written in place rather than assembled first. Headers as for [`write_response`].
pub fn write_response_head(
    status: u16,
    extra_headers: &[(&str, &str)],
    body_bytes: usize,
    keep_alive: bool,
    out: &mut BytesMut,
) {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    write_head(status, extra_headers, body_bytes, connection, out);
}

/// Status line, header fields, `Content-Length` when the status allows a body, `Connection`,
/// and the blank line.
fn write_head(
    status: u16,
    headers: &[(&str, &str)],
    body_bytes: usize,
    connection: &str,
    out: &mut BytesMut,
) {
    assert!(
        (100..=999).contains(&status),
        "status {status} is not three digits"
    );
    let bodiless = status < 200 || status == 204 || status == 304;
    assert!(
        !bodiless || body_bytes == 0,
        "status {status} may not carry a body"
    );
    out.extend_from_slice(b"HTTP/1.1 ");
    write_decimal(u64::from(status), out);
    out.extend_from_slice(b" ");
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        write_header(name, value, out);
    }
    if !bodiless {
        out.extend_from_slice(b"Content-Length: ");
        write_decimal(body_bytes as u64, out);
        out.extend_from_slice(b"\r\n");
    }
    write_header("Connection", connection, out);
    out.extend_from_slice(b"\r\n");
}

/// One `name: value` line. Names and values come from our code, so a line break in one is our
/// bug (and would let a value forge headers), caught before it reaches a peer.
fn write_header(name: &str, value: &str, out: &mut BytesMut) {
    let is_line_break = |byte: &u8| *byte == b'\r' || *byte == b'\n';
    assert!(!name.is_empty() && !name.as_bytes().iter().any(is_line_break));
    assert!(!value.as_bytes().iter().any(is_line_break));
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `value` in decimal, written at the end of `digits` (no heap-allocated string).
pub fn decimal(mut value: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &digits[start..];
        }
    }
}

/// Appends `value` in decimal without going through a heap-allocated string.
pub fn write_decimal(value: u64, out: &mut BytesMut) {
    let mut digits = [0u8; 20];
    out.extend_from_slice(decimal(value, &mut digits));
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

/// Text formatted into a fixed array, so an error body needs no heap. Writing past the end
/// keeps what fits (cut at a character boundary) and reports `fmt::Error`.
struct StackText<const CAPACITY: usize> {
    bytes: [u8; CAPACITY],
    length: usize,
}

impl<const CAPACITY: usize> StackText<CAPACITY> {
    fn new() -> Self {
        Self {
            bytes: [0; CAPACITY],
            length: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.length]
    }
}

impl<const CAPACITY: usize> std::fmt::Write for StackText<CAPACITY> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let room = CAPACITY - self.length;
        let mut taken = text.len().min(room);
        while !text.is_char_boundary(taken) {
            taken -= 1;
        }
        self.bytes[self.length..self.length + taken].copy_from_slice(&text.as_bytes()[..taken]);
        self.length += taken;
        if taken == text.len() {
            Ok(())
        } else {
            Err(std::fmt::Error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the accept key matches the worked example of RFC 6455 §1.3.
    #[test]
    fn accept_key_matches_rfc_example() {
        let accept = accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(&accept, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

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

    /// Proves decimals are written for zero, one digit and the largest value.
    #[test]
    fn decimals_are_written_without_allocation() {
        for value in [0, 7, 10, 431, u64::MAX] {
            let mut out = BytesMut::new();
            write_decimal(value, &mut out);
            assert_eq!(out, value.to_string().as_bytes());
        }
    }

    /// Proves every handshake error's message fits the stack buffer with its newline.
    #[test]
    fn every_error_message_fits_the_body_buffer() {
        let errors = [
            HandshakeError::HeaderBlockTooLarge {
                header_bytes_max: usize::MAX,
            },
            HandshakeError::TooManyHeaders {
                headers_count_max: usize::MAX,
            },
            HandshakeError::MalformedRequest("invalid method or request target"),
            HandshakeError::MethodNotGet,
            HandshakeError::HttpVersionTooOld,
            HandshakeError::MissingHost,
            HandshakeError::MissingUpgradeWebSocket,
            HandshakeError::MissingConnectionUpgrade,
            HandshakeError::MissingKey,
            HandshakeError::InvalidKey,
            HandshakeError::UnsupportedVersion,
            HandshakeError::OriginNotAllowed,
            HandshakeError::NoAcceptableSubprotocol,
            HandshakeError::NotFound,
            HandshakeError::InvalidContentLength,
            HandshakeError::ConflictingContentLengths,
            HandshakeError::ContentLengthWithTransferEncoding,
            HandshakeError::TransferEncodingInHttp10,
            HandshakeError::UnsupportedTransferEncoding,
            HandshakeError::BodyTooLarge {
                body_bytes: u64::MAX,
                body_bytes_max: usize::MAX,
            },
            HandshakeError::MalformedChunk("chunk data not followed by a line break"),
            HandshakeError::TrailerTooLarge {
                trailer_bytes_max: usize::MAX,
            },
            HandshakeError::UpgradeWithBody,
            HandshakeError::BufferPoolExhausted { bytes: usize::MAX },
        ];
        for error in errors {
            let message = format!("{error}\n");
            assert!(message.len() <= ERROR_BODY_BYTES_MAX, "{message}");
        }
    }

    /// Proves a stack text cuts at a character boundary and says it did.
    #[test]
    fn stack_text_cuts_on_a_char_boundary() {
        let mut text = StackText::<5>::new();
        assert!(text.write_str("abcé").is_ok());
        assert!(text.write_str("é").is_err());
        assert_eq!(text.as_bytes(), "abcé".as_bytes());
    }
}
