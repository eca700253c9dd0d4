//! permessage-deflate (RFC 7692): negotiating it in the upgrade, inflating the messages a
//! client compressed under a cap, and compressing ours so that one compressed frame can go to
//! every subscriber.
//!
//! The server always answers with `server_no_context_takeover` and
//! `client_no_context_takeover` (§7.1.1), as Centrifugo does. The first makes each message we
//! send depend on nothing sent before it, so a message compressed once is valid for every
//! connection that negotiated the same window; the second lets an inflater be reset at every
//! message's end, so a connection holds one only while a compressed message is arriving and it
//! can go back to the shard's pool between messages.

use bytes::BytesMut;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::protocol::pool::{BufferPool, PooledBuffer};

/// The extension's registered name.
pub const EXTENSION_NAME: &str = "permessage-deflate";
/// The smallest and largest LZ77 window RFC 7692 §7.1.2 allows, as base-2 logarithms.
pub const WINDOW_BITS_MIN: u8 = 8;
pub const WINDOW_BITS_MAX: u8 = 15;
/// The smallest window zlib compresses raw deflate with: it refuses 8 bits (and a compressor
/// that quietly used 9 would send distances an 8-bit inflater rejects). A connection that asks
/// for 8 gets every message uncompressed, which §6.1 allows.
pub const COMPRESSION_WINDOW_BITS_MIN: u8 = 9;
/// What a sync flush ends with; RFC 7692 §7.2.1 has the sender strip it and the receiver add
/// it back before inflating.
pub const SYNC_FLUSH_TRAILER: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];
/// The most offers (comma-separated extensions) read from one request; the header limit bounds
/// them already, this bounds the work on a header made of nothing but commas.
pub const OFFERS_MAX: usize = 16;

/// What was agreed with one client: the response header's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateAgreement {
    /// The largest window our compressor may use: the offer's `server_max_window_bits`, else 15.
    pub server_window_bits: u8,
    /// Whether the offer named `server_max_window_bits` (so the response must, §7.1.2.1).
    server_window_bits_offered: bool,
    /// The offer's `client_max_window_bits` value, echoed in the response when it had one.
    pub client_window_bits: Option<u8>,
}

impl DeflateAgreement {
    /// Whether messages to this client are compressed at all (see
    /// [`COMPRESSION_WINDOW_BITS_MIN`]).
    pub fn compresses(&self) -> bool {
        self.server_window_bits >= COMPRESSION_WINDOW_BITS_MIN
    }

    /// Appends the `Sec-WebSocket-Extensions` header line of the 101 response.
    pub fn write_response_header(&self, out: &mut BytesMut) {
        out.extend_from_slice(
            b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
              client_no_context_takeover",
        );
        if self.server_window_bits_offered {
            out.extend_from_slice(b"; server_max_window_bits=");
            write_bits(self.server_window_bits, out);
        }
        if let Some(bits) = self.client_window_bits {
            out.extend_from_slice(b"; client_max_window_bits=");
            write_bits(bits, out);
        }
        out.extend_from_slice(b"\r\n");
    }
}

fn write_bits(bits: u8, out: &mut BytesMut) {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(digits.format(bits).as_bytes());
}

/// The first acceptable `permessage-deflate` offer among the `Sec-WebSocket-Extensions` header
/// values, or `None` (then the connection runs uncompressed). An offer with an unknown, a
/// repeated or a malformed parameter is declined and the next one tried (§5, §7.1).
pub fn negotiate<'value>(
    header_values: impl Iterator<Item = &'value [u8]>,
) -> Option<DeflateAgreement> {
    header_values
        .flat_map(|value| split_outside_quotes(value, b','))
        .take(OFFERS_MAX)
        .find_map(accept_offer)
}

/// One offer (`name; param; param=value`), accepted when it is a valid permessage-deflate one.
fn accept_offer(offer: &[u8]) -> Option<DeflateAgreement> {
    let mut parts = split_outside_quotes(offer, b';');
    let name = parts.next()?.trim_ascii();
    if !name.eq_ignore_ascii_case(EXTENSION_NAME.as_bytes()) {
        return None;
    }
    let mut seen = [false; 4];
    let mut agreement = DeflateAgreement {
        server_window_bits: WINDOW_BITS_MAX,
        server_window_bits_offered: false,
        client_window_bits: None,
    };
    for parameter in parts {
        let (key, value) = split_parameter(parameter)?;
        let index = match key {
            b"server_no_context_takeover" => 0,
            b"client_no_context_takeover" => 1,
            b"server_max_window_bits" => 2,
            b"client_max_window_bits" => 3,
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
        match (index, value) {
            (0 | 1, None) => {}
            (2, Some(value)) => {
                agreement.server_window_bits = parse_window_bits(value)?;
                agreement.server_window_bits_offered = true;
            }
            (3, None) => {}
            (3, Some(value)) => agreement.client_window_bits = Some(parse_window_bits(value)?),
            _ => return None,
        }
    }
    Some(agreement)
}

/// `key` or `key=value`, trimmed, with a quoted value unquoted (RFC 6455 §9.1 allows either
/// form). `None` for an empty key, an empty value or a quoted value with escapes.
fn split_parameter(parameter: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let parameter = parameter.trim_ascii();
    let Some(equals) = parameter.iter().position(|&byte| byte == b'=') else {
        return (!parameter.is_empty()).then_some((parameter, None));
    };
    let key = parameter[..equals].trim_ascii();
    let mut value = parameter[equals + 1..].trim_ascii();
    if let [b'"', inner @ .., b'"'] = value {
        value = inner;
    }
    let valid = !key.is_empty() && !value.is_empty() && !value.contains(&b'\\');
    valid.then_some((key, Some(value)))
}

/// A window size as RFC 7692 §7.1.2 spells it: 8 to 15, decimal, no leading zero or sign.
fn parse_window_bits(value: &[u8]) -> Option<u8> {
    let bits = match value {
        [digit @ b'8'..=b'9'] => digit - b'0',
        [b'1', digit @ b'0'..=b'5'] => 10 + digit - b'0',
        _ => return None,
    };
    Some(bits)
}

/// Splits on `separator` outside double quotes (a quoted value may hold commas).
fn split_outside_quotes(bytes: &[u8], separator: u8) -> impl Iterator<Item = &[u8]> {
    let mut quoted = false;
    bytes.split(move |&byte| {
        if byte == b'"' {
            quoted = !quoted;
        }
        byte == separator && !quoted
    })
}

/// Why a compressed message could not be inflated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflateError {
    /// The inflated message would exceed the cap (close 1009): a zip bomb among others.
    TooLarge,
    /// The bytes are not a valid deflate stream (close 1007).
    Corrupt,
    /// No larger output buffer could be had below the cap (the shard's pool is at its
    /// maximum): not the peer's fault.
    OutOfBuffers,
}

/// A raw-deflate inflater for client messages, reset between messages (the client was told
/// `client_no_context_takeover`). It always uses the largest window: it then inflates any
/// client's output, including that of a zlib client that uses 9 bits after offering 8, and its
/// memory (about 40 KiB, mostly the window) is bounded by how many the shard's pool holds.
pub struct Inflater {
    inner: Decompress,
    /// The compressed bytes of the message being inflated, handed in so far (zlib's own
    /// `total_in` counts only what it consumed).
    compressed_bytes: usize,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Inflater")
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    pub fn new() -> Inflater {
        Inflater {
            inner: Decompress::new_with_window_bits(false, WINDOW_BITS_MAX),
            compressed_bytes: 0,
        }
    }

    /// Forgets the message it was inflating.
    pub fn reset(&mut self) {
        self.inner.reset(false);
        self.compressed_bytes = 0;
    }

    /// Counts a piece of the message's compressed bytes (the sync-flush trailer too).
    pub fn count_compressed(&mut self, bytes: usize) {
        self.compressed_bytes += bytes;
    }

    /// The compressed bytes of the message counted so far.
    pub fn compressed_bytes(&self) -> usize {
        self.compressed_bytes
    }

    /// Inflates `input` (a piece of a message's compressed payload, or the sync-flush trailer
    /// at its end), appending to `out`, which may hold at most `out_bytes_max` in total. A full
    /// `out` moves to a larger buffer of `pool`, which may have none to give.
    pub fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut PooledBuffer,
        out_bytes_max: usize,
        pool: &mut BufferPool,
    ) -> Result<(), InflateError> {
        // Inflating stops when the input is used up and zlib had room to spare (so it holds
        // no output back), or when a call makes no progress (it waits for more input).
        while !input.is_empty() || out.len() == out.capacity() {
            let (before_in, before_out) = (self.inner.total_in(), self.inner.total_out());
            let probing = out.len() >= out_bytes_max;
            let status = if probing {
                // At the cap one more byte breaks it. A probe into one byte on the stack
                // tells; the byte is lost only when the message is refused anyway.
                let mut probe = [0u8; 1];
                self.inner
                    .decompress(input, &mut probe, FlushDecompress::Sync)
            } else {
                if out.len() == out.capacity() {
                    let wanted = out.capacity().saturating_mul(2).clamp(128, out_bytes_max);
                    if !pool.grow_in_place(out, wanted) {
                        return Err(InflateError::OutOfBuffers);
                    }
                }
                let capacity = out.capacity();
                let status = self.inner.decompress_vec(
                    input,
                    out.bytes_without_growing(),
                    FlushDecompress::Sync,
                );
                assert_eq!(
                    out.capacity(),
                    capacity,
                    "inflating never grows a pooled buffer"
                );
                status
            };
            // A stream both too large and corrupt is called too large whatever the pieces it
            // came in: its output may already have passed the cap when zlib found the fault
            // (the buffer's class may hold more than the cap), or been stopped at the cap.
            let status = status.map_err(|_| match out.len() > out_bytes_max {
                true => InflateError::TooLarge,
                false => InflateError::Corrupt,
            })?;
            let consumed = (self.inner.total_in() - before_in) as usize;
            let produced = self.inner.total_out() - before_out;
            // The buffer's class may hold more than the cap: what lands past it is refused.
            if (probing && produced > 0) || out.len() > out_bytes_max {
                return Err(InflateError::TooLarge);
            }
            input = &input[consumed..];
            if status == Status::StreamEnd || (consumed == 0 && produced == 0) {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// A raw-deflate compressor for our messages, reset before each one (we negotiated
/// `server_no_context_takeover`), so the same bytes serve every connection with its window.
pub struct Compressor {
    inner: Compress,
    window_bits: u8,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Compressor({} bits)", self.window_bits)
    }
}

impl Compressor {
    /// A compressor at `level` (0–9) with a window of `window_bits` (9–15).
    pub fn new(level: u32, window_bits: u8) -> Compressor {
        assert!((COMPRESSION_WINDOW_BITS_MIN..=WINDOW_BITS_MAX).contains(&window_bits));
        assert!(level <= 9, "zlib levels are 0 to 9");
        Compressor {
            inner: Compress::new_with_window_bits(Compression::new(level), false, window_bits),
            window_bits,
        }
    }

    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }

    /// Replaces `out`'s contents with `message` compressed as one permessage-deflate payload:
    /// a sync flush with its trailer stripped (§7.2.1). An empty message comes out as the one
    /// byte `00` (§7.2.3.6). `out` grows only while it is smaller than the largest message
    /// compressed so far: after warm-up this allocates nothing.
    pub fn compress(&mut self, message: &[u8], out: &mut Vec<u8>) {
        self.inner.reset();
        out.clear();
        let mut input = message;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(message.len() / 2 + 64));
            }
            let before_in = self.inner.total_in();
            self.inner
                .compress_vec(input, out, FlushCompress::Sync)
                .expect("deflate with a valid state never fails");
            input = &input[(self.inner.total_in() - before_in) as usize..];
            // The flush is complete once all input is taken and zlib left room unused.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        assert!(
            out.ends_with(&SYNC_FLUSH_TRAILER),
            "a sync flush ends with its trailer"
        );
        out.truncate(out.len() - SYNC_FLUSH_TRAILER.len());
    }
}

/// The compressors of one shard, one per window size in use (made on first demand: nearly
/// every client takes the default 15 bits), and the buffer their output goes to. Like
/// uWebSockets' shared compressor, but also shared across subscribers: what it compresses
/// goes unchanged to every connection with that window.
#[derive(Debug)]
pub struct CompressorSet {
    level: u32,
    compressors: [Option<Box<Compressor>>; COMPRESSOR_WINDOWS_COUNT],
    out: Vec<u8>,
}

const COMPRESSOR_WINDOWS_COUNT: usize =
    (WINDOW_BITS_MAX - COMPRESSION_WINDOW_BITS_MIN) as usize + 1;

impl CompressorSet {
    /// A set compressing at `level` (0–9); no compressor is made until one is needed.
    pub fn new(level: u32) -> CompressorSet {
        CompressorSet {
            level,
            compressors: Default::default(),
            out: Vec::new(),
        }
    }

    /// `message` compressed for a connection whose compressor may use `window_bits` (9–15),
    /// as a permessage-deflate payload; valid until the next call.
    pub fn compress(&mut self, message: &[u8], window_bits: u8) -> &[u8] {
        let index = usize::from(window_bits - COMPRESSION_WINDOW_BITS_MIN);
        let level = self.level;
        let compressor = self.compressors[index]
            .get_or_insert_with(|| Box::new(Compressor::new(level, window_bits)));
        compressor.compress(message, &mut self.out);
        &self.out
    }
}

#[cfg(test)]
#[path = "deflate_tests.rs"]
mod tests;
