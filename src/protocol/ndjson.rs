//! Newline-delimited JSON over chunked transfer coding (RFC 9112 §7.1): the response head, one
//! JSON value per line, each line its own chunk, and the last chunk.
//!
//! Each line is a chunk so that a line's bytes (the same for every subscriber of a message) are
//! framed once and sent as they are. Line breaks inside a value are written as spaces, as in
//! [`super::sse`]: in JSON they can only be whitespace between tokens.

use bytes::BytesMut;

use super::http1::response::{reason_phrase, write_header};
use super::sse::write_without_line_breaks;

pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// The last chunk: the stream ended cleanly.
pub const END: &[u8] = b"0\r\n\r\n";

/// Hex digits of a chunk size: sixteen spell any `u64`.
const SIZE_DIGITS_MAX: usize = 16;

/// The response head of a stream.
pub fn write_head(out: &mut BytesMut) {
    out.extend_from_slice(b"HTTP/1.1 200 ");
    out.extend_from_slice(reason_phrase(200).as_bytes());
    out.extend_from_slice(b"\r\n");
    write_header("Content-Type", CONTENT_TYPE, out);
    write_header("Cache-Control", "no-cache, no-store", out);
    write_header("X-Accel-Buffering", "no", out);
    write_header("Transfer-Encoding", "chunked", out);
    write_header("Connection", "close", out);
    out.extend_from_slice(b"\r\n");
}

/// Bytes of [`write_line_chunk`] for a line made of `parts`.
pub fn line_chunk_bytes(parts: &[&[u8]]) -> usize {
    let line_bytes = parts.iter().map(|part| part.len()).sum::<usize>() + 1;
    hex_digits(line_bytes) + 2 + line_bytes + 2
}

/// One chunk holding `parts` joined and a line feed; line breaks in the parts as spaces.
pub fn write_line_chunk(parts: &[&[u8]], out: &mut Vec<u8>) {
    let line_bytes = parts.iter().map(|part| part.len()).sum::<usize>() + 1;
    let mut digits = [0u8; SIZE_DIGITS_MAX];
    let count = hex_digits(line_bytes);
    for (index, digit) in digits[..count].iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[(line_bytes >> (4 * (count - 1 - index))) & 0xF];
    }
    out.extend_from_slice(&digits[..count]);
    out.extend_from_slice(b"\r\n");
    for part in parts {
        write_without_line_breaks(part, out);
    }
    out.extend_from_slice(b"\n\r\n");
}

fn hex_digits(value: usize) -> usize {
    (usize::BITS - value.leading_zeros()).div_ceil(4).max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_chunk() {
        let parts: [&[u8]; 2] = [b"{\"a\":\n1", b"}"];
        let mut out = Vec::new();
        write_line_chunk(&parts, &mut out);
        assert_eq!(out, b"9\r\n{\"a\": 1}\n\r\n".to_vec());
        assert_eq!(out.len(), line_chunk_bytes(&parts));
        let long = vec![b'x'; 300];
        let mut out = Vec::new();
        write_line_chunk(&[&long], &mut out);
        assert!(out.starts_with(b"12d\r\n"));
        assert_eq!(out.len(), line_chunk_bytes(&[&long]));
        assert_eq!(hex_digits(0), 1);
        assert_eq!(hex_digits(15), 1);
        assert_eq!(hex_digits(16), 2);
    }

    #[test]
    fn the_head_is_chunked_without_a_length() {
        let mut head = BytesMut::new();
        write_head(&mut head);
        let text = String::from_utf8(head.to_vec()).unwrap();
        assert!(text.contains("Transfer-Encoding: chunked\r\n"));
        assert!(text.contains("Content-Type: application/x-ndjson\r\n"));
        assert!(!text.contains("Content-Length"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
