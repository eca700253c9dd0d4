//! WebSocket frames (RFC 6455, section 5), sans-IO: parsing a frame head without consuming
//! anything until the whole head is there, writing heads, and masking. Used by the io_uring
//! client (server frames in, masked client frames out) and by the floor programs (the
//! reverse). RSV1 marks a compressed message once permessage-deflate is negotiated
//! (`parse_head_compressed`); any other RSV bit is an error.

/// Opcodes.
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// Control frames carry at most this much payload (section 5.5).
pub const CONTROL_PAYLOAD_BYTES_MAX: usize = 125;

/// A parsed frame head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    /// RSV1: the first frame of a compressed message (permessage-deflate only).
    pub compressed: bool,
    /// Bytes of the head, where the payload starts.
    pub head_bytes: usize,
    pub payload_bytes: usize,
}

impl FrameHead {
    /// Bytes of the whole frame.
    pub fn frame_bytes(&self) -> usize {
        self.head_bytes + self.payload_bytes
    }
}

/// A frame no endpoint of ours accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// An RSV bit is set, but no extension was negotiated.
    ReservedBits,
    /// An opcode RFC 6455 does not define.
    UnknownOpcode(u8),
    /// A control frame that is fragmented or longer than 125 bytes.
    BadControlFrame,
    /// A payload longer than the caller allows (or a length with its top bit set).
    TooLong,
}

/// Parses the head at the start of `bytes`: `Ok(None)` until all of it is there; nothing is
/// consumed either way. `payload_bytes_max` bounds data frames.
pub fn parse_head(bytes: &[u8], payload_bytes_max: usize) -> Result<Option<FrameHead>, FrameError> {
    parse_head_compressed(bytes, payload_bytes_max, false)
}

/// [`parse_head`] on a connection that negotiated permessage-deflate when `deflate`: RSV1 is
/// then allowed on the first frame of a data message (RFC 7692 §6), and nowhere else.
pub fn parse_head_compressed(
    bytes: &[u8],
    payload_bytes_max: usize,
    deflate: bool,
) -> Result<Option<FrameHead>, FrameError> {
    let [first, second, ..] = *bytes else {
        return Ok(None);
    };
    let fin = first & 0x80 != 0;
    let compressed = first & 0x40 != 0;
    let opcode = first & 0x0F;
    if first & 0x30 != 0 || (compressed && !(deflate && matches!(opcode, TEXT | BINARY))) {
        return Err(FrameError::ReservedBits);
    }
    if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
        return Err(FrameError::UnknownOpcode(opcode));
    }
    let masked = second & 0x80 != 0;
    let (length_bytes, short_length) = match second & 0x7F {
        126 => (2, None),
        127 => (8, None),
        length => (0, Some(usize::from(length))),
    };
    let head_bytes = 2 + length_bytes + if masked { 4 } else { 0 };
    if bytes.len() < head_bytes {
        return Ok(None);
    }
    let payload_bytes = match short_length {
        Some(length) => length,
        None => {
            let mut length = 0u64;
            for byte in &bytes[2..2 + length_bytes] {
                length = length << 8 | u64::from(*byte);
            }
            if length >> 63 != 0 {
                return Err(FrameError::TooLong);
            }
            usize::try_from(length).map_err(|_| FrameError::TooLong)?
        }
    };
    let is_control = opcode & 0x8 != 0;
    if is_control && (!fin || payload_bytes > CONTROL_PAYLOAD_BYTES_MAX) {
        return Err(FrameError::BadControlFrame);
    }
    if payload_bytes > payload_bytes_max.max(CONTROL_PAYLOAD_BYTES_MAX) {
        return Err(FrameError::TooLong);
    }
    let mask = masked.then(|| {
        let start = 2 + length_bytes;
        [
            bytes[start],
            bytes[start + 1],
            bytes[start + 2],
            bytes[start + 3],
        ]
    });
    Ok(Some(FrameHead {
        fin,
        opcode,
        mask,
        compressed,
        head_bytes,
        payload_bytes,
    }))
}

/// Appends the head of a final frame with `opcode` and `payload_bytes` of payload, masked
/// with `mask` when given (clients must mask, servers must not).
pub fn write_head(output: &mut Vec<u8>, opcode: u8, payload_bytes: usize, mask: Option<[u8; 4]>) {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    output.push(0x80 | opcode);
    if payload_bytes < 126 {
        output.push(mask_bit | payload_bytes as u8);
    } else if let Ok(length) = u16::try_from(payload_bytes) {
        output.push(mask_bit | 126);
        output.extend_from_slice(&length.to_be_bytes());
    } else {
        output.push(mask_bit | 127);
        output.extend_from_slice(&(payload_bytes as u64).to_be_bytes());
    }
    if let Some(key) = mask {
        output.extend_from_slice(&key);
    }
}

/// Appends a whole final frame: head, then the payload masked with `mask` if given.
pub fn write_frame(output: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    write_head(output, opcode, payload.len(), mask);
    let start = output.len();
    output.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut output[start..], key);
    }
}

/// XORs `bytes` with the repeating `key` (masking and unmasking are the same operation),
/// eight bytes at a time.
pub fn apply_mask(bytes: &mut [u8], key: [u8; 4]) {
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = bytes.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let value = u64::from_ne_bytes((&*chunk).try_into().expect("chunks of eight"));
        chunk.copy_from_slice(&(value ^ word).to_ne_bytes());
    }
    // The tail starts at a multiple of eight, so the key's phase starts over at 0.
    for (index, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[index % 4];
    }
}

/// A small, fast generator for mask keys and nonces: splitmix64. RFC 6455 asks for keys a
/// proxy cannot predict; this is a load generator talking to a server on loopback, where the
/// point of a fresh key per frame is that the server really unmasks.
#[derive(Clone, Debug)]
pub struct MaskKeys {
    state: u64,
}

impl MaskKeys {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut value = self.state;
        value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        value ^ (value >> 31)
    }

    pub fn key(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{Data, OpCode};

    /// Heads of every length class parse back to what was written, masked or not, and a
    /// truncated head is "need more", never an error or a wrong frame.
    #[test]
    fn heads_round_trip_and_never_half_parse() {
        for payload_bytes in [0, 1, 125, 126, 65_535, 65_536, 1 << 20] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut bytes = Vec::new();
                write_head(&mut bytes, TEXT, payload_bytes, mask);
                let head = parse_head(&bytes, usize::MAX).unwrap().unwrap();
                assert_eq!(head.head_bytes, bytes.len());
                assert_eq!(head.payload_bytes, payload_bytes);
                assert_eq!(head.mask, mask);
                assert!(head.fin);
                for cut in 0..bytes.len() {
                    assert_eq!(parse_head(&bytes[..cut], usize::MAX), Ok(None));
                }
            }
        }
    }

    /// Our masked client frames decode in tungstenite as the same message, and tungstenite's
    /// unmasked server frames parse here with the right payload.
    #[test]
    fn frames_agree_with_tungstenite() {
        let mut keys = MaskKeys::new(7);
        for length in [0usize, 3, 8, 13, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..length).map(|index| (index % 251) as u8).collect();
            let mut ours = Vec::new();
            write_frame(&mut ours, BINARY, &payload, Some(keys.key()));
            let mut cursor = std::io::Cursor::new(ours);
            let (header, _) = tungstenite::protocol::frame::FrameHeader::parse(&mut cursor)
                .unwrap()
                .unwrap();
            let mut body = cursor.into_inner()[cursor_position(&header, length)..].to_vec();
            apply_mask(&mut body, header.mask.unwrap());
            assert_eq!(body, payload);
            let mut theirs = Vec::new();
            Frame::message(payload.clone(), OpCode::Data(Data::Binary), true)
                .format(&mut theirs)
                .unwrap();
            let head = parse_head(&theirs, usize::MAX).unwrap().unwrap();
            assert_eq!(head.mask, None);
            assert_eq!(&theirs[head.head_bytes..head.frame_bytes()], &payload[..]);
        }
    }

    fn cursor_position(header: &tungstenite::protocol::frame::FrameHeader, length: usize) -> usize {
        header.len(length as u64)
    }

    /// Masking with any alignment and length matches the byte-by-byte definition.
    #[test]
    fn mask_matches_the_definition() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for length in 0..40 {
            let original: Vec<u8> = (0..length as u8).collect();
            let mut fast = original.clone();
            apply_mask(&mut fast, key);
            let slow: Vec<u8> = original
                .iter()
                .enumerate()
                .map(|(index, byte)| byte ^ key[index % 4])
                .collect();
            assert_eq!(fast, slow);
        }
    }

    /// Reserved bits, unknown opcodes, long or fragmented control frames, and oversize data
    /// frames are refused.
    #[test]
    fn bad_heads_are_refused() {
        assert_eq!(parse_head(&[0xC1, 0x00], 10), Err(FrameError::ReservedBits));
        assert_eq!(
            parse_head(&[0x83, 0x00], 10),
            Err(FrameError::UnknownOpcode(3))
        );
        assert_eq!(
            parse_head(&[0x09, 0x00], 10),
            Err(FrameError::BadControlFrame)
        );
        assert_eq!(
            parse_head(&[0x89, 126, 0, 126], 10),
            Err(FrameError::BadControlFrame)
        );
        assert_eq!(
            parse_head(&[0x81, 126, 0, 201], 200),
            Err(FrameError::TooLong)
        );
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(parse_head(&huge, usize::MAX), Err(FrameError::TooLong));
        assert!(parse_head(&[0x81, 126, 0, 200], 200).unwrap().is_some());
    }

    /// RSV1 marks a compressed message only where deflate was negotiated, and only on the
    /// first frame of a data message; RSV2 and RSV3 stay errors.
    #[test]
    fn rsv1_only_with_deflate_on_data_frames() {
        let head = parse_head_compressed(&[0xC1, 0x05], 10, true)
            .unwrap()
            .unwrap();
        assert!(head.compressed && head.fin && head.opcode == TEXT);
        assert!(
            parse_head_compressed(&[0x42, 0x05], 10, true)
                .unwrap()
                .unwrap()
                .compressed
        );
        assert!(
            !parse_head_compressed(&[0x81, 0x05], 10, true)
                .unwrap()
                .unwrap()
                .compressed
        );
        assert_eq!(
            parse_head_compressed(&[0xC1, 0x05], 10, false),
            Err(FrameError::ReservedBits)
        );
        for refused in [[0xC0, 0x05], [0xC9, 0x00], [0xA1, 0x05], [0x91, 0x05]] {
            assert_eq!(
                parse_head_compressed(&refused, 10, true),
                Err(FrameError::ReservedBits),
                "{refused:?}"
            );
        }
    }
}
