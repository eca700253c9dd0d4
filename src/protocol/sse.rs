//! Server-Sent Events framing (WHATWG HTML §9.2): the response head, `data:` lines, named
//! events, ids, the reconnection hint and comments.
//!
//! An event is its field lines and a blank line. Fields may come in any order, so a message's
//! `data:` line (the same bytes for every subscriber) and a subscriber's own `id:` line can be
//! written apart and sent one after the other. A data line may not hold a line break; the JSON
//! the broker sends holds them only as whitespace between tokens (a raw CR or LF inside a JSON
//! string is not JSON), so they are written as spaces, which leaves the JSON's meaning whole.

use bytes::BytesMut;

use super::http1::response::{reason_phrase, write_header};

pub const CONTENT_TYPE: &str = "text/event-stream";

/// A comment line: what heartbeats send (proxies see traffic, the parser ignores it).
pub const HEARTBEAT: &[u8] = b":\n";

/// The response head of an event stream. The body runs until the connection closes (no
/// `Content-Length`, no chunking: RFC 9112 §6.3), so nothing frames each event twice. The
/// headers keep caches and buffering proxies (nginx: `X-Accel-Buffering`) out of the way.
/// `retry_ms` is the reconnection delay browsers are told to use.
pub fn write_head(retry_ms: u64, out: &mut BytesMut) {
    out.extend_from_slice(b"HTTP/1.1 200 ");
    out.extend_from_slice(reason_phrase(200).as_bytes());
    out.extend_from_slice(b"\r\n");
    write_header("Content-Type", CONTENT_TYPE, out);
    write_header(
        "Cache-Control",
        "private, no-cache, no-store, must-revalidate, max-age=0",
        out,
    );
    write_header("Pragma", "no-cache", out);
    write_header("X-Accel-Buffering", "no", out);
    write_header("Connection", "close", out);
    out.extend_from_slice(b"\r\nretry: ");
    out.extend_from_slice(itoa::Buffer::new().format(retry_ms).as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// Bytes of [`write_data_line`] for `body`.
pub fn data_line_bytes(body: &[u8]) -> usize {
    b"data: ".len() + body.len() + 1
}

/// `data: <body>\n`, line breaks in `body` written as spaces.
pub fn write_data_line(body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    write_without_line_breaks(body, out);
    out.push(b'\n');
}

/// `event: <name>\n`.
pub fn write_event_name(name: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
}

/// Bytes of [`write_id_and_end`] for an id of `id_bytes`.
pub fn id_and_end_bytes(id_bytes: usize) -> usize {
    b"id: ".len() + id_bytes + 2
}

/// `id: <id>\n` and the blank line that ends the event. `id` must hold no line break and no
/// NUL (the parser ignores such an id); cursors are base64url.
pub fn write_id_and_end(id: &[u8], out: &mut Vec<u8>) {
    debug_assert!(!id.iter().any(|&byte| matches!(byte, b'\r' | b'\n' | 0)));
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id);
    out.extend_from_slice(b"\n\n");
}

/// Copies `text` with every CR and LF written as a space.
pub fn write_without_line_breaks(text: &[u8], out: &mut Vec<u8>) {
    let mut rest = text;
    while let Some(position) = rest.iter().position(|&byte| byte == b'\r' || byte == b'\n') {
        out.extend_from_slice(&rest[..position]);
        out.push(b' ');
        rest = &rest[position + 1..];
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_in_two_parts() {
        let mut event = Vec::new();
        write_event_name("subscribed", &mut event);
        write_data_line(b"{\"a\":\r\n 1,\n\"b\":2}", &mut event);
        assert_eq!(
            event.len(),
            18 + data_line_bytes(b"{\"a\":\r\n 1,\n\"b\":2}")
        );
        write_id_and_end(b"AbC-_", &mut event);
        assert_eq!(
            event,
            b"event: subscribed\ndata: {\"a\":   1, \"b\":2}\nid: AbC-_\n\n".to_vec()
        );
        assert_eq!(id_and_end_bytes(5), b"id: AbC-_\n\n".len());
    }

    #[test]
    fn the_head_ends_with_the_retry_hint() {
        let mut head = BytesMut::new();
        write_head(2000, &mut head);
        let text = String::from_utf8(head.to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Type: text/event-stream\r\n"));
        assert!(text.contains("X-Accel-Buffering: no\r\n"));
        assert!(!text.contains("Content-Length"));
        assert!(text.ends_with("\r\n\r\nretry: 2000\n\n"));
    }
}
