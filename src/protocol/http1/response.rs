//! HTTP/1.1 responses, appended to a caller's `BytesMut` (which grows only if it lacks
//! capacity): plain responses with `Content-Length`, and the refusal of a bad request.

use std::fmt::Write as _;

use bytes::BytesMut;

use super::error::HandshakeError;
use crate::protocol::decimal::write_decimal;
use crate::protocol::websocket::upgrade::WEBSOCKET_VERSION;

/// Room for an error response body: every `HandshakeError` message is one short line.
const ERROR_BODY_BYTES_MAX: usize = 128;
/// Header fields a handshake error response always carries.
const CONTENT_TYPE_TEXT: (&str, &str) = ("Content-Type", "text/plain; charset=utf-8");

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
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
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
pub fn write_header(name: &str, value: &str, out: &mut BytesMut) {
    let is_line_break = |byte: &u8| *byte == b'\r' || *byte == b'\n';
    assert!(!name.is_empty() && !name.as_bytes().iter().any(is_line_break));
    assert!(!value.as_bytes().iter().any(is_line_break));
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
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
            HandshakeError::DuplicateHost,
            HandshakeError::ExpectationFailed,
            HandshakeError::MalformedRequest("line ending without CR (bare LF)"),
            HandshakeError::MissingUpgradeWebSocket,
            HandshakeError::MissingConnectionUpgrade,
            HandshakeError::MissingKey,
            HandshakeError::InvalidKey,
            HandshakeError::UnsupportedVersion,
            HandshakeError::OriginNotAllowed,
            HandshakeError::NoAcceptableSubprotocol,
            HandshakeError::NotFound,
            HandshakeError::PlainRequestToWebSocket,
            HandshakeError::WebSocketDisabled,
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

    /// Proves a refused expectation is answered `417 Expectation Failed` and closed.
    #[test]
    fn expectation_failed_has_its_reason_phrase() {
        let mut out = BytesMut::new();
        write_error_response(&HandshakeError::ExpectationFailed, &mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 417 Expectation Failed\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
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
