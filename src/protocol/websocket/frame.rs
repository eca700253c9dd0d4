//! Frame heads: parsing without consuming anything until a head is complete, and encoding of
//! unmasked server frames with the head in a fixed array (RFC 6455 §5.2).

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use super::error::ProtocolError;

/// The longest frame head: 2 bytes, an 8-byte extended length and a 4-byte mask key.
pub const HEAD_BYTES_MAX: usize = 14;
/// The longest control frame payload (RFC 6455 §5.5).
pub const CONTROL_PAYLOAD_BYTES_MAX: usize = 125;

/// The frame opcodes RFC 6455 defines; the others are reserved and refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    /// Decodes the low four bits of a frame's first byte.
    pub fn from_bits(bits: u8) -> Result<OpCode, ProtocolError> {
        match bits {
            0x0 => Ok(OpCode::Continuation),
            0x1 => Ok(OpCode::Text),
            0x2 => Ok(OpCode::Binary),
            0x8 => Ok(OpCode::Close),
            0x9 => Ok(OpCode::Ping),
            0xA => Ok(OpCode::Pong),
            other => Err(ProtocolError::UnknownOpcode(other)),
        }
    }

    /// Control frames are close, ping and pong (opcodes with the high bit set).
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A parsed frame head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHead {
    /// Whether this is the final fragment of its message.
    pub fin: bool,
    /// RSV1: with permessage-deflate negotiated, the message this frame starts is compressed
    /// (RFC 7692 §6). Whether it may be set is the session's call; RSV2 and RSV3 never may.
    pub rsv1: bool,
    pub opcode: OpCode,
    /// The masking key, present on every client frame.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_bytes: u64,
    /// How many bytes the head itself took (2 to 14).
    pub head_bytes: u8,
}

impl FrameHead {
    /// Parses the head at the start of `input`. `Ok(None)` means more bytes are needed; nothing
    /// is consumed either way, so the caller retries with the same bytes plus more. Rule breaks
    /// visible in the first two bytes are reported as soon as those bytes are present.
    pub fn parse(input: &[u8]) -> Result<Option<FrameHead>, ProtocolError> {
        let Some(&first) = input.first() else {
            return Ok(None);
        };
        if first & 0x30 != 0 {
            return Err(ProtocolError::ReservedBitsSet);
        }
        let fin = first & 0x80 != 0;
        let rsv1 = first & 0x40 != 0;
        let opcode = OpCode::from_bits(first & 0x0F)?;
        if opcode.is_control() && !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }
        // Control frames are never compressed (RFC 7692 §6.1), whatever was negotiated.
        if opcode.is_control() && rsv1 {
            return Err(ProtocolError::ReservedBitsSet);
        }
        let Some(&second) = input.get(1) else {
            return Ok(None);
        };
        let masked = second & 0x80 != 0;
        let length_code = second & 0x7F;
        if opcode.is_control() && usize::from(length_code) > CONTROL_PAYLOAD_BYTES_MAX {
            return Err(ProtocolError::ControlFrameTooLong(u64::from(length_code)));
        }
        let length_bytes = match length_code {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let head_bytes = 2 + length_bytes + if masked { 4 } else { 0 };
        if input.len() < head_bytes {
            return Ok(None);
        }
        let payload_bytes = match length_bytes {
            2 => u64::from(u16::from_be_bytes([input[2], input[3]])),
            8 => u64::from_be_bytes(input[2..10].try_into().expect("eight bytes")),
            _ => u64::from(length_code),
        };
        if payload_bytes >> 63 != 0 {
            return Err(ProtocolError::LengthTopBitSet);
        }
        let mask = masked.then(|| {
            let start = 2 + length_bytes;
            input[start..start + 4].try_into().expect("four bytes")
        });
        Ok(Some(FrameHead {
            fin,
            rsv1,
            opcode,
            mask,
            payload_bytes,
            head_bytes: head_bytes as u8,
        }))
    }

    /// Writes this head into `out` and returns how many bytes it took. The length uses the
    /// shortest encoding, as RFC 6455 §5.2 requires of senders.
    pub fn encode(&self, out: &mut [u8; HEAD_BYTES_MAX]) -> usize {
        out[0] = (u8::from(self.fin) << 7) | (u8::from(self.rsv1) << 6) | self.opcode as u8;
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut length = match self.payload_bytes {
            0..=125 => {
                out[1] = mask_bit | self.payload_bytes as u8;
                2
            }
            126..=0xFFFF => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(self.payload_bytes as u16).to_be_bytes());
                4
            }
            _ => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&self.payload_bytes.to_be_bytes());
                10
            }
        };
        if let Some(mask) = self.mask {
            out[length..length + 4].copy_from_slice(&mask);
            length += 4;
        }
        length
    }
}

/// Encodes a complete unmasked server frame once, into a `Bytes` that any number of connections
/// can queue and send without copying it again. One allocation of exactly the frame's size.
pub fn encode_frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Bytes {
    let (head, head_length) = encode_head(opcode, fin, None, payload.len());
    let mut frame = BytesMut::with_capacity(head_length + payload.len());
    frame.put_slice(&head[..head_length]);
    frame.put_slice(payload);
    frame.freeze()
}

/// Writes the head of an unmasked, final text frame with `payload_bytes` of payload into `out`;
/// returns its length.
pub fn text_frame_head(payload_bytes: usize, out: &mut [u8; HEAD_BYTES_MAX]) -> usize {
    let (head, head_length) = encode_head(OpCode::Text, true, None, payload_bytes);
    out[..head_length].copy_from_slice(&head[..head_length]);
    head_length
}

/// Writes the head of an unmasked, final text frame with RSV1 set (a message compressed with
/// permessage-deflate) and `payload_bytes` of payload into `out`; returns its length.
pub fn compressed_text_frame_head(payload_bytes: usize, out: &mut [u8; HEAD_BYTES_MAX]) -> usize {
    let (head, head_length) = encode_head_with_rsv1(OpCode::Text, true, true, None, payload_bytes);
    out[..head_length].copy_from_slice(&head[..head_length]);
    head_length
}

/// The encoded head of a frame with `payload_bytes` of payload, and its length.
fn encode_head(
    opcode: OpCode,
    fin: bool,
    mask: Option<[u8; 4]>,
    payload_bytes: usize,
) -> ([u8; HEAD_BYTES_MAX], usize) {
    encode_head_with_rsv1(opcode, fin, false, mask, payload_bytes)
}

/// [`encode_head`] with RSV1 given: set on the first frame of a compressed message.
fn encode_head_with_rsv1(
    opcode: OpCode,
    fin: bool,
    rsv1: bool,
    mask: Option<[u8; 4]>,
    payload_bytes: usize,
) -> ([u8; HEAD_BYTES_MAX], usize) {
    let head = FrameHead {
        fin,
        rsv1,
        opcode,
        mask,
        payload_bytes: payload_bytes as u64,
        head_bytes: 0,
    };
    let mut head_buffer = [0u8; HEAD_BYTES_MAX];
    let head_length = head.encode(&mut head_buffer);
    (head_buffer, head_length)
}

/// Appends a complete masked frame, as a client sends it, to `out`: for clients, tests and
/// benches (the server itself never masks). The mask is applied with the fastest unmasking
/// implementation, since masking and unmasking are the same XOR.
pub fn encode_masked_frame(
    opcode: OpCode,
    fin: bool,
    payload: &[u8],
    mask: [u8; 4],
    out: &mut Vec<u8>,
) {
    encode_masked_frame_with_rsv1(opcode, fin, false, payload, mask, out);
}

/// [`encode_masked_frame`] with RSV1 given, as a client sends the first frame of a compressed
/// message.
pub fn encode_masked_frame_with_rsv1(
    opcode: OpCode,
    fin: bool,
    rsv1: bool,
    payload: &[u8],
    mask: [u8; 4],
    out: &mut Vec<u8>,
) {
    let (head, head_length) = encode_head_with_rsv1(opcode, fin, rsv1, Some(mask), payload.len());
    out.extend_from_slice(&head[..head_length]);
    let payload_start = out.len();
    out.extend_from_slice(payload);
    super::mask::apply_mask(&mut out[payload_start..], mask, 0);
}

/// Writes a close frame payload (code and reason) into `out`; returns its length. The reason is
/// cut at a character boundary so the payload stays within a control frame's 125 bytes.
pub fn encode_close_payload(
    code: u16,
    reason: &str,
    out: &mut [u8; CONTROL_PAYLOAD_BYTES_MAX],
) -> usize {
    out[..2].copy_from_slice(&code.to_be_bytes());
    let mut reason_bytes = reason.len().min(CONTROL_PAYLOAD_BYTES_MAX - 2);
    while !reason.is_char_boundary(reason_bytes) {
        reason_bytes -= 1;
    }
    out[2..2 + reason_bytes].copy_from_slice(&reason.as_bytes()[..reason_bytes]);
    2 + reason_bytes
}

/// Encodes server frames into shared `Bytes` carved from reusable arena chunks, so that the hot
/// path does not allocate per frame. Each frame is split off the current chunk and frozen. A
/// full chunk is retired while its frames are still queued or kept in history; once every frame
/// carved from it has been dropped, `BytesMut::try_reclaim` finds the encoder its only owner
/// again and the chunk is reused. New chunks are allocated only while more frames are alive than
/// the chunks hold, so a steady state (bounded queues and history) allocates nothing.
#[derive(Debug)]
pub struct FrameEncoder {
    arena: BytesMut,
    arena_bytes: usize,
    /// Full chunks waiting for their frames to be dropped, oldest first.
    retired: VecDeque<BytesMut>,
}

/// Retired chunks an encoder keeps for reuse; beyond it the oldest is let go (it is freed when
/// its last frame is).
const RETIRED_CHUNKS_MAX: usize = 256;

impl FrameEncoder {
    /// An encoder whose chunks hold `arena_bytes` (larger frames get a chunk of their own size).
    pub fn new(arena_bytes: usize) -> FrameEncoder {
        FrameEncoder {
            arena: BytesMut::with_capacity(arena_bytes),
            arena_bytes,
            retired: VecDeque::new(),
        }
    }

    /// Encodes one complete unmasked frame.
    pub fn encode(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) -> Bytes {
        let (head, head_length) = encode_head(opcode, fin, None, payload.len());
        self.write(&[&head[..head_length], payload])
    }

    /// Encodes one complete unmasked frame with RSV1 set: `payload` is a message compressed
    /// with permessage-deflate.
    pub fn encode_compressed(&mut self, opcode: OpCode, payload: &[u8]) -> Bytes {
        let (head, head_length) = encode_head_with_rsv1(opcode, true, true, None, payload.len());
        self.write(&[&head[..head_length], payload])
    }

    /// Encodes one complete unmasked frame whose payload is `parts` joined (no copy first).
    pub fn encode_parts(&mut self, opcode: OpCode, parts: &[&[u8]]) -> Bytes {
        let payload_bytes = parts.iter().map(|part| part.len()).sum();
        let (head, head_length) = encode_head(opcode, true, None, payload_bytes);
        self.make_room(head_length + payload_bytes);
        self.arena.put_slice(&head[..head_length]);
        for part in parts {
            self.arena.put_slice(part);
        }
        self.arena.split().freeze()
    }

    /// Copies already-encoded bytes (a control frame, an HTTP response) into one `Bytes`.
    pub fn copy(&mut self, encoded: &[u8]) -> Bytes {
        self.write(&[encoded])
    }

    /// Copies `parts`, joined, into one `Bytes` (a request handed to another shard).
    pub fn copy_parts(&mut self, parts: &[&[u8]]) -> Bytes {
        self.write(parts)
    }

    fn write(&mut self, parts: &[&[u8]]) -> Bytes {
        self.make_room(parts.iter().map(|part| part.len()).sum());
        for part in parts {
            self.arena.put_slice(part);
        }
        self.arena.split().freeze()
    }

    /// Makes the current chunk hold `frame_bytes` more: reclaimed in place when its frames are
    /// gone, else a retired chunk whose frames are gone, else a new one.
    fn make_room(&mut self, frame_bytes: usize) {
        if self.arena.capacity() >= frame_bytes || self.arena.try_reclaim(frame_bytes) {
            return;
        }
        let chunk_bytes = frame_bytes.max(self.arena_bytes);
        let reusable = self
            .retired
            .iter_mut()
            .position(|chunk| chunk.try_reclaim(chunk_bytes));
        let next = match reusable {
            Some(index) => self.retired.remove(index).expect("index found"),
            None => BytesMut::with_capacity(chunk_bytes),
        };
        let full = std::mem::replace(&mut self.arena, next);
        if self.retired.len() == RETIRED_CHUNKS_MAX {
            self.retired.pop_front();
        }
        self.retired.push_back(full);
    }
}

/// Encodes a server close frame with `code` and `reason` into a `Bytes`.
pub fn encode_close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = [0u8; CONTROL_PAYLOAD_BYTES_MAX];
    let payload_bytes = encode_close_payload(code, reason, &mut payload);
    encode_frame(OpCode::Close, true, &payload[..payload_bytes])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a head is reported incomplete at every prefix and parsed once whole.
    #[test]
    fn never_half_consumes() {
        let head = FrameHead {
            fin: true,
            rsv1: false,
            opcode: OpCode::Binary,
            mask: Some([1, 2, 3, 4]),
            payload_bytes: 70_000,
            head_bytes: 14,
        };
        let mut buffer = [0u8; HEAD_BYTES_MAX];
        let length = head.encode(&mut buffer);
        assert_eq!(length, 14);
        for prefix in 0..length {
            assert_eq!(
                FrameHead::parse(&buffer[..prefix]),
                Ok(None),
                "prefix {prefix}"
            );
        }
        assert_eq!(FrameHead::parse(&buffer), Ok(Some(head)));
    }

    /// Proves lengths use the shortest of the three encodings.
    #[test]
    fn length_encodings() {
        for (payload_bytes, expected) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let head = FrameHead {
                fin: true,
                rsv1: false,
                opcode: OpCode::Text,
                mask: None,
                payload_bytes,
                head_bytes: 0,
            };
            let mut buffer = [0u8; HEAD_BYTES_MAX];
            assert_eq!(head.encode(&mut buffer), expected);
            let parsed = FrameHead::parse(&buffer[..expected]).unwrap().unwrap();
            assert_eq!(parsed.payload_bytes, payload_bytes);
        }
    }

    /// Proves the encoder's frames equal `encode_frame`'s and outlive later frames.
    #[test]
    fn encoder_frames_match_and_stay_intact() {
        let mut encoder = FrameEncoder::new(64);
        let kept: Vec<Bytes> = (0..40u8)
            .map(|index| encoder.encode(OpCode::Binary, true, &vec![index; usize::from(index) * 3]))
            .collect();
        for (index, frame) in kept.iter().enumerate() {
            let payload = vec![index as u8; index * 3];
            assert_eq!(frame, &encode_frame(OpCode::Binary, true, &payload));
        }
        assert_eq!(&encoder.copy(b"\x8a\x00")[..], b"\x8a\x00");
    }

    /// Proves chunks are reused once their frames are dropped, and never while one is alive.
    #[test]
    fn encoder_reuses_chunks_whose_frames_are_gone() {
        let mut encoder = FrameEncoder::new(64);
        let kept = encoder.encode(OpCode::Binary, true, &[7; 40]);
        for round in 0..100u8 {
            let frames: Vec<Bytes> = (0..4)
                .map(|_| encoder.encode(OpCode::Binary, true, &[round; 40]))
                .collect();
            assert!(
                frames
                    .iter()
                    .all(|frame| frame[2..].iter().all(|&byte| byte == round))
            );
        }
        assert!(
            encoder.retired.len() < 8,
            "chunks were reused: {}",
            encoder.retired.len()
        );
        assert_eq!(
            kept,
            encode_frame(OpCode::Binary, true, &[7; 40]),
            "a live frame is intact"
        );
    }

    /// Proves RSV1 is read on data frames and refused on control frames, RSV2 and RSV3 always
    /// refused, and that a compressed frame is encoded with RSV1 set.
    #[test]
    fn reserved_bits() {
        let head = FrameHead::parse(&[0xC1, 0x80, 0, 0, 0, 0])
            .unwrap()
            .unwrap();
        assert!(head.rsv1 && head.fin && head.opcode == OpCode::Text);
        let plain = FrameHead::parse(&[0x81, 0x80, 0, 0, 0, 0])
            .unwrap()
            .unwrap();
        assert!(!plain.rsv1);
        for first in [0xA1, 0x91, 0xC9, 0xC8, 0xCA] {
            assert_eq!(
                FrameHead::parse(&[first, 0x80]),
                Err(ProtocolError::ReservedBitsSet),
                "{first:#x}"
            );
        }
        let frame = FrameEncoder::new(64).encode_compressed(OpCode::Binary, &[0x00]);
        assert_eq!(&frame[..], [0xC2, 0x01, 0x00]);
    }

    /// Proves close payloads are cut at a character boundary within 125 bytes.
    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let reason = "é".repeat(100);
        let mut payload = [0u8; CONTROL_PAYLOAD_BYTES_MAX];
        let length = encode_close_payload(1000, &reason, &mut payload);
        assert!(length <= CONTROL_PAYLOAD_BYTES_MAX);
        assert!(std::str::from_utf8(&payload[2..length]).is_ok());
        assert_eq!(length, 2 + 122);
    }
}
