//! Chunked transfer coding (RFC 9112 §7.1), decoded as the bytes arrive: a body may be cut
//! across reads anywhere, every size, extension and trailer is bounded.

use super::error::HandshakeError;
use super::request::RequestLimits;
use crate::protocol::pool::{BufferPool, PooledBuffer};

/// Hex digits in a chunk size. Sixteen spell any `u64`; more can only be leading zeros, which
/// no client sends and which would let a size line grow without bound.
pub(super) const CHUNK_SIZE_DIGITS_MAX: u8 = 16;
/// Bytes of chunk extensions (`;name=value`) on one size line. No client we serve sends any;
/// they are skipped, and the limit keeps skipped bytes, which count against no other limit,
/// bounded.
pub(super) const CHUNK_EXTENSION_BYTES_MAX: usize = 1024;

/// Where a chunked body's decoder stands; every state is a position in RFC 9112 §7.1's grammar,
/// so the body may be cut across reads anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Size {
        digits: u8,
    },
    /// After the size's digits: optional whitespace, then `;` extensions, up to the CR.
    Extension {
        bytes: usize,
        started: bool,
    },
    SizeLineFeed,
    Data {
        remaining: usize,
    },
    DataCarriageReturn,
    DataLineFeed,
    /// A trailer field line, or the blank line that ends the body. `in_value`: the colon that
    /// ends the field name has been read.
    TrailerLine {
        bytes: usize,
        in_value: bool,
    },
    TrailerLineFeed {
        line_empty: bool,
    },
    Done,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct ChunkDecoder {
    state: ChunkState,
    /// The size of the chunk whose size line is being read.
    chunk_bytes: usize,
    body_bytes: usize,
    trailer_bytes: usize,
}

impl ChunkDecoder {
    /// Whether the body ended (the blank line after the last chunk and trailers came).
    pub(super) fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    pub(super) fn new() -> Self {
        Self {
            state: ChunkState::Size { digits: 0 },
            chunk_bytes: 0,
            body_bytes: 0,
            trailer_bytes: 0,
        }
    }

    /// Decodes what `input` holds, appending chunk data to `body`. Returns the bytes consumed:
    /// all of `input`, or fewer once the body is done (the rest is the next request).
    pub(super) fn decode(
        &mut self,
        input: &[u8],
        body: &mut Option<PooledBuffer>,
        pool: &mut BufferPool,
        limits: &RequestLimits,
    ) -> Result<usize, HandshakeError> {
        let mut index = 0;
        while index < input.len() && self.state != ChunkState::Done {
            if let ChunkState::Data { remaining } = self.state {
                let taken = remaining.min(input.len() - index);
                // Room for what arrived, not for the size announced (a trickled chunk holds a
                // small buffer).
                reserve(body, self.body_bytes + taken, pool)?;
                let buffer = body.as_mut().expect("reserved above");
                buffer.extend_from_slice(&input[index..index + taken]);
                index += taken;
                self.body_bytes += taken;
                self.state = match remaining - taken {
                    0 => ChunkState::DataCarriageReturn,
                    remaining => ChunkState::Data { remaining },
                };
                continue;
            }
            if self.step(input[index], limits)? {
                index += 1;
            }
            if self.state == (ChunkState::Data { remaining: 0 }) {
                self.state = ChunkState::Data {
                    remaining: self.chunk_bytes,
                };
            }
        }
        Ok(index)
    }

    /// Takes one framing byte. Returns whether it was consumed (the byte that ends a size's
    /// digits is looked at again as the start of what follows). Entering `Data` is signalled
    /// with `remaining: 0`, for the caller to set the chunk's size.
    fn step(&mut self, byte: u8, limits: &RequestLimits) -> Result<bool, HandshakeError> {
        let malformed = HandshakeError::MalformedChunk;
        self.state = match self.state {
            ChunkState::Size { digits } => match (byte as char).to_digit(16) {
                Some(_) if digits == CHUNK_SIZE_DIGITS_MAX => {
                    return Err(malformed("chunk size over 16 hex digits"));
                }
                Some(value) => {
                    self.chunk_bytes = self
                        .chunk_bytes
                        .saturating_mul(16)
                        .saturating_add(value as usize);
                    let body_bytes = self.body_bytes.saturating_add(self.chunk_bytes);
                    if body_bytes > limits.body_bytes_max {
                        return Err(HandshakeError::BodyTooLarge {
                            body_bytes: body_bytes as u64,
                            body_bytes_max: limits.body_bytes_max,
                        });
                    }
                    ChunkState::Size { digits: digits + 1 }
                }
                None if digits == 0 => return Err(malformed("chunk size is not hexadecimal")),
                None => {
                    self.state = ChunkState::Extension {
                        bytes: 0,
                        started: false,
                    };
                    return Ok(false);
                }
            },
            ChunkState::Extension { bytes, started } => match byte {
                b'\r' => ChunkState::SizeLineFeed,
                b'\n' => return Err(malformed("bare line feed after a chunk size")),
                _ if bytes == CHUNK_EXTENSION_BYTES_MAX => {
                    return Err(malformed("chunk extensions over 1024 bytes"));
                }
                b' ' | b'\t' | b';' => ChunkState::Extension {
                    bytes: bytes + 1,
                    started: started || byte == b';',
                },
                _ if started => ChunkState::Extension {
                    bytes: bytes + 1,
                    started,
                },
                _ => return Err(malformed("chunk size is not hexadecimal")),
            },
            ChunkState::SizeLineFeed if byte != b'\n' => {
                return Err(malformed("chunk size line not ended by CRLF"));
            }
            ChunkState::SizeLineFeed if self.chunk_bytes == 0 => ChunkState::TrailerLine {
                bytes: 0,
                in_value: false,
            },
            ChunkState::SizeLineFeed => ChunkState::Data { remaining: 0 },
            ChunkState::DataCarriageReturn if byte == b'\r' => ChunkState::DataLineFeed,
            ChunkState::DataLineFeed if byte == b'\n' => {
                self.chunk_bytes = 0;
                ChunkState::Size { digits: 0 }
            }
            ChunkState::DataCarriageReturn | ChunkState::DataLineFeed => {
                return Err(malformed("chunk data not followed by CRLF"));
            }
            // Trailer lines are field lines (RFC 9112 §7.1.2), checked like a head's (RFC 9110
            // §5.1, §5.5) though their fields are then skipped: bytes that are not HTTP are
            // refused wherever they appear, as httparse refuses them in a head.
            ChunkState::TrailerLine { bytes, in_value } => match byte {
                b'\r' if bytes > 0 && !in_value => {
                    return Err(malformed("trailer line without a colon"));
                }
                b'\r' => ChunkState::TrailerLineFeed {
                    line_empty: bytes == 0,
                },
                b'\n' => return Err(malformed("bare line feed in the trailer")),
                _ if self.trailer_bytes == limits.header_bytes_max => {
                    return Err(HandshakeError::TrailerTooLarge {
                        trailer_bytes_max: limits.header_bytes_max,
                    });
                }
                b':' if !in_value && bytes > 0 => {
                    self.trailer_bytes += 1;
                    ChunkState::TrailerLine {
                        bytes: bytes + 1,
                        in_value: true,
                    }
                }
                _ if !in_value && !is_token_byte(byte) => {
                    return Err(malformed("invalid trailer field name"));
                }
                _ if in_value && !is_field_value_byte(byte) => {
                    return Err(malformed("invalid trailer field value"));
                }
                _ => {
                    self.trailer_bytes += 1;
                    ChunkState::TrailerLine {
                        bytes: bytes + 1,
                        in_value,
                    }
                }
            },
            ChunkState::TrailerLineFeed { line_empty } if byte == b'\n' => match line_empty {
                true => ChunkState::Done,
                false => ChunkState::TrailerLine {
                    bytes: 0,
                    in_value: false,
                },
            },
            ChunkState::TrailerLineFeed { .. } => {
                return Err(malformed("trailer line not ended by CRLF"));
            }
            ChunkState::Data { .. } | ChunkState::Done => unreachable!("handled by decode"),
        };
        Ok(true)
    }
}

/// A `tchar` of a field name (RFC 9110 §5.6.2).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A byte of a field value: visible ASCII, space, tab, or obs-text (RFC 9110 §5.5).
fn is_field_value_byte(byte: u8) -> bool {
    matches!(byte, b'\t' | b' '..=b'~' | 0x80..=0xFF)
}

/// Makes `slot` hold a buffer of at least `bytes`, acquiring or growing it.
pub(super) fn reserve(
    slot: &mut Option<PooledBuffer>,
    bytes: usize,
    pool: &mut BufferPool,
) -> Result<(), HandshakeError> {
    let exhausted = HandshakeError::BufferPoolExhausted { bytes };
    let reserved = match slot {
        Some(buffer) => pool.grow_in_place(buffer, bytes),
        None => {
            *slot = pool.acquire(bytes);
            slot.is_some()
        }
    };
    if reserved { Ok(()) } else { Err(exhausted) }
}
