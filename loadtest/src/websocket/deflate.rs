//! permessage-deflate (RFC 7692) as a receiving client needs it, sans-IO: the offer written
//! into the upgrade request, the check of the server's answer, and the inflater for messages
//! the server compressed. The client never compresses what it sends (RFC 7692 lets either
//! side send uncompressed messages), so only the server's half of the parameters matters.
//! Written here rather than shared with ringcast, so that the load generator checks the
//! server's compression instead of agreeing with it.

use flate2::{Decompress, FlushDecompress, Status};

/// What the client offers: the extension, with a `client_max_window_bits` the server may
/// lower (we never compress, so any value is fine).
pub const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The four bytes RFC 7692 §7.2.1 strips from the end of every compressed message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// What the server's answer agreed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The server starts each message with an empty window: every message inflates alone.
    pub server_no_context_takeover: bool,
    /// The server's window, 8 to 15 bits (15 unless it said otherwise).
    pub server_max_window_bits: u8,
}

/// Why the server's `Sec-WebSocket-Extensions` answer is not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NegotiationError {
    /// An extension the client did not offer, or any extension when it offered none.
    NotOffered,
    /// A parameter RFC 7692 does not define, a repeated one, or a bad window size.
    BadParameter,
}

/// Reads the server's `Sec-WebSocket-Extensions` values (every header line, in order):
/// `Ok(None)` when none is present, `Ok(Some(..))` for one well-formed permessage-deflate
/// when `offered`.
pub fn negotiated<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    offered: bool,
) -> Result<Option<Negotiated>, NegotiationError> {
    let mut found = None;
    for value in values {
        for extension in value.split(|byte| *byte == b',') {
            if extension.trim_ascii().is_empty() {
                continue;
            }
            if !offered || found.is_some() {
                return Err(NegotiationError::NotOffered);
            }
            found = Some(parse_extension(extension)?);
        }
    }
    Ok(found)
}

/// One `permessage-deflate; param; param=value` element.
fn parse_extension(extension: &[u8]) -> Result<Negotiated, NegotiationError> {
    let mut parts = extension
        .split(|byte| *byte == b';')
        .map(<[u8]>::trim_ascii);
    if !parts
        .next()
        .is_some_and(|name| name.eq_ignore_ascii_case(b"permessage-deflate"))
    {
        return Err(NegotiationError::NotOffered);
    }
    let mut negotiated = Negotiated {
        server_no_context_takeover: false,
        server_max_window_bits: 15,
    };
    let mut seen = [false; 4];
    for part in parts {
        let (name, value) = match part.iter().position(|byte| *byte == b'=') {
            Some(at) => (
                part[..at].trim_ascii(),
                Some(unquote(part[at + 1..].trim_ascii())),
            ),
            None => (part, None),
        };
        let index = match name.to_ascii_lowercase().as_slice() {
            b"server_no_context_takeover" if value.is_none() => {
                negotiated.server_no_context_takeover = true;
                0
            }
            b"client_no_context_takeover" if value.is_none() => 1,
            b"server_max_window_bits" => {
                negotiated.server_max_window_bits =
                    window_bits(value).ok_or(NegotiationError::BadParameter)?;
                2
            }
            b"client_max_window_bits" => {
                window_bits(value).ok_or(NegotiationError::BadParameter)?;
                3
            }
            _ => return Err(NegotiationError::BadParameter),
        };
        if std::mem::replace(&mut seen[index], true) {
            return Err(NegotiationError::BadParameter);
        }
    }
    Ok(negotiated)
}

fn unquote(value: &[u8]) -> &[u8] {
    value
        .strip_prefix(b"\"")
        .and_then(|inner| inner.strip_suffix(b"\""))
        .unwrap_or(value)
}

/// A window size parameter: 8 to 15, decimal, no leading zero.
fn window_bits(value: Option<&[u8]>) -> Option<u8> {
    let value = value?;
    let text = std::str::from_utf8(value).ok()?;
    if text.starts_with('0') {
        return None;
    }
    let bits: u8 = text.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

/// Why a compressed message could not be inflated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflateError {
    /// Not a valid raw deflate stream.
    Corrupt,
    /// It inflates to more than the caller allows.
    TooLong,
}

/// One connection's inflater. With `server_no_context_takeover` it starts over after every
/// message; otherwise it keeps the server's window between messages, as RFC 7692 requires.
pub struct Inflater {
    decompress: Decompress,
    takeover: bool,
}

impl Inflater {
    pub fn new(negotiated: Negotiated) -> Self {
        // zlib refuses an 8-bit window for raw inflate; a 9-bit window reads 8-bit streams.
        let bits = negotiated.server_max_window_bits.max(9);
        Self {
            decompress: Decompress::new_with_window_bits(false, bits),
            takeover: !negotiated.server_no_context_takeover,
        }
    }

    /// Inflates one whole message (the payloads of its frames, in order, as `pieces`) into
    /// `output` (cleared first), at most `bytes_max` bytes.
    pub fn inflate(
        &mut self,
        pieces: &[&[u8]],
        output: &mut Vec<u8>,
        bytes_max: usize,
    ) -> Result<(), InflateError> {
        output.clear();
        let outcome = pieces
            .iter()
            .copied()
            .chain(std::iter::once(&TAIL[..]))
            .try_for_each(|piece| self.feed(piece, output, bytes_max));
        if outcome.is_err() || !self.takeover {
            self.decompress.reset(false);
        }
        outcome
    }

    fn feed(
        &mut self,
        mut input: &[u8],
        output: &mut Vec<u8>,
        bytes_max: usize,
    ) -> Result<(), InflateError> {
        loop {
            if output.len() == output.capacity() {
                if output.len() >= bytes_max {
                    return Err(InflateError::TooLong);
                }
                output.reserve_exact(output.len().max(256).min(bytes_max - output.len()));
            }
            let read_before = self.decompress.total_in();
            let written_before = output.len();
            let status = self
                .decompress
                .decompress_vec(input, output, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            let read = (self.decompress.total_in() - read_before) as usize;
            input = &input[read..];
            if output.len() > bytes_max {
                return Err(InflateError::TooLong);
            }
            let progressed = read > 0 || output.len() > written_before;
            match status {
                // The tail's empty stored block never ends the stream; an end is a server
                // that set BFINAL, which RFC 7692 allows: what follows would be garbage.
                Status::StreamEnd => return Ok(()),
                Status::Ok | Status::BufError
                    if input.is_empty() && output.len() < output.capacity() =>
                {
                    return Ok(());
                }
                Status::Ok | Status::BufError
                    if progressed || output.len() == output.capacity() => {}
                Status::Ok | Status::BufError => return Err(InflateError::Corrupt),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    /// Compresses `message` as a permessage-deflate sender does: raw deflate, sync flush,
    /// the four-byte tail removed.
    fn compress(compressor: &mut Compress, message: &[u8]) -> Vec<u8> {
        let mut output = Vec::with_capacity(message.len() + 64);
        compressor
            .compress_vec(message, &mut output, FlushCompress::Sync)
            .unwrap();
        assert!(output.ends_with(&TAIL));
        output.truncate(output.len() - 4);
        output
    }

    fn params(server_no_context_takeover: bool, bits: u8) -> Negotiated {
        Negotiated {
            server_no_context_takeover,
            server_max_window_bits: bits,
        }
    }

    /// The answers ringcast and uWebSockets.js give are read as what they say; extensions
    /// not offered, unknown or repeated parameters and bad window sizes are refused.
    #[test]
    fn answers_negotiate_or_are_refused() {
        let read = |value: &str, offered| negotiated([value.as_bytes()], offered);
        assert_eq!(negotiated(std::iter::empty(), true), Ok(None));
        assert_eq!(
            read(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
                true
            ),
            Ok(Some(params(true, 15)))
        );
        assert_eq!(
            read(
                "permessage-deflate; server_max_window_bits=10; client_max_window_bits=\"9\"",
                true
            ),
            Ok(Some(params(false, 10)))
        );
        assert_eq!(
            read("permessage-deflate", true),
            Ok(Some(params(false, 15)))
        );
        assert_eq!(
            read("permessage-deflate", false),
            Err(NegotiationError::NotOffered)
        );
        assert_eq!(
            read("x-webkit-deflate-frame", true),
            Err(NegotiationError::NotOffered)
        );
        assert_eq!(
            read("permessage-deflate, permessage-deflate", true),
            Err(NegotiationError::NotOffered)
        );
        for bad in [
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
        ] {
            assert_eq!(
                read(bad, true),
                Err(NegotiationError::BadParameter),
                "{bad}"
            );
        }
    }

    /// Messages compressed without context takeover inflate one by one, each alone; with
    /// takeover the inflater keeps the window, so a repeated message (compressed to a back
    /// reference) inflates too. Every window size from 9 to 15 bits.
    #[test]
    fn inflates_with_and_without_context_takeover() {
        let quote = br#"{"topic":"AAPL","seq":12,"data":{"bid":187.42,"ask":187.45,"size":300}}"#;
        for bits in 9..=15 {
            for takeover in [false, true] {
                let mut compressor =
                    Compress::new_with_window_bits(Compression::fast(), false, bits);
                let mut inflater = Inflater::new(params(!takeover, bits));
                let mut output = Vec::new();
                for _ in 0..3 {
                    let compressed = compress(&mut compressor, quote);
                    if !takeover {
                        compressor.reset();
                    }
                    inflater
                        .inflate(&[&compressed], &mut output, 1 << 20)
                        .unwrap();
                    assert_eq!(output, quote, "bits {bits} takeover {takeover}");
                }
            }
        }
    }

    /// A message split over frames anywhere inflates the same.
    #[test]
    fn inflates_fragmented_messages() {
        let message: Vec<u8> = (0..5000u32)
            .flat_map(|index| (index % 97).to_le_bytes())
            .collect();
        let mut compressor = Compress::new(Compression::default(), false);
        let compressed = compress(&mut compressor, &message);
        let mut inflater = Inflater::new(params(true, 15));
        let mut output = Vec::new();
        for split in [1, 7, compressed.len() / 2, compressed.len() - 1] {
            let (head, tail) = compressed.split_at(split);
            inflater
                .inflate(&[head, tail], &mut output, 1 << 20)
                .unwrap();
            assert_eq!(output, message);
        }
    }

    /// More than the limit is refused, and garbage is corrupt; the inflater works after both.
    #[test]
    fn refuses_bombs_and_garbage() {
        let zeros = vec![0u8; 100_000];
        let mut compressor = Compress::new(Compression::best(), false);
        let bomb = compress(&mut compressor, &zeros);
        let mut inflater = Inflater::new(params(true, 15));
        let mut output = Vec::new();
        assert_eq!(
            inflater.inflate(&[&bomb], &mut output, 10_000),
            Err(InflateError::TooLong)
        );
        assert!(output.len() <= 10_000 + 256);
        assert_eq!(
            inflater.inflate(&[&[0xFF, 0xFF, 0xFF]], &mut output, 10_000),
            Err(InflateError::Corrupt)
        );
        inflater.inflate(&[&bomb], &mut output, 1 << 20).unwrap();
        assert_eq!(output, zeros);
    }
}
