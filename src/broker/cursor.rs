//! Cursors: where a stream or poll client stands in every topic it reads, as one opaque string
//! it hands back to resume (SSE's `Last-Event-ID`, `?cursor=`).
//!
//! A cursor holds, for each topic of the request in the request's order, the last seq the client
//! has and the epoch of that seq's sequence space (or nothing, before the first `subscribed`; or
//! the bare `since` the client asked for, while its subscription is not yet answered: resuming
//! from it asks again for what the client asked, and a message it asked for is never skipped).
//! Resuming from it is subscribing with `since` for each topic: replay from seq + 1 when history
//! has it and the epoch matches, `reset` otherwise, so a cursor is never silently wrong. It also
//! holds a digest of the topic list, so that a cursor cannot be applied to other topics.
//!
//! Encoding: base64url without padding (safe in a URL, a header and an SSE `id:` line) of
//! `[version 1][digest u32 LE][count varint]` and per topic `[0]` (no position),
//! `[1][epoch u64 LE][seq varint]` or `[2][seq varint]` (a bare `since`): about 14 characters per
//! topic.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use xxhash_rust::xxh3::Xxh3;

use super::owner::Since;
use super::topic::{Epoch, TopicName};

const VERSION: u8 = 1;
/// Bytes of one topic's position at most: flag, epoch, a 10-byte varint.
const POSITION_BYTES_MAX: usize = 1 + 8 + 10;
const HEADER_BYTES_MAX: usize = 1 + 4 + 10;

/// Topics one cursor may hold: its text (5.4 KB at this count) must fit in a request header
/// (`Last-Event-ID`) under the default `header_bytes_max` of 8 KiB, beside the others.
pub const CURSOR_TOPICS_LIMIT: usize = 200;

/// Binary bytes of a cursor at most.
const BINARY_BYTES_MAX: usize = HEADER_BYTES_MAX + CURSOR_TOPICS_LIMIT * POSITION_BYTES_MAX;

/// Characters of the cursor of `topic_count` topics at most.
pub const fn cursor_text_bytes_max(topic_count: usize) -> usize {
    (HEADER_BYTES_MAX + topic_count * POSITION_BYTES_MAX).div_ceil(3) * 4
}

/// Why a cursor was refused (400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CursorError {
    /// Not base64url, or not the layout above.
    Malformed,
    /// Made for another list of topics.
    OtherTopics,
}

impl CursorError {
    pub fn reason(self) -> &'static str {
        match self {
            CursorError::Malformed => "the cursor is not one this server made",
            CursorError::OtherTopics => "the cursor was made for another list of topics",
        }
    }
}

/// Where the client stands in one topic: `Some` once it knows the topic's epoch.
pub type Position = Option<Since>;

/// The digest of a topic list, in order.
pub fn topics_digest(topics: &[TopicName]) -> u32 {
    names_digest(topics.iter().map(TopicName::as_bytes))
}

/// [`topics_digest`] of topics given by their names' bytes (a delivered message's topic).
pub fn names_digest<'a>(names: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    let mut hasher = Xxh3::new();
    for name in names {
        // Names are printable ASCII: a NUL cannot occur in one, so it separates them.
        hasher.update(name);
        hasher.update(&[0]);
    }
    hasher.digest() as u32
}

/// Writes the cursor of `positions` (one per topic of the list whose digest is `digest`) into
/// `out`, which must hold [`cursor_text_bytes_max`] of their count (at most
/// [`CURSOR_TOPICS_LIMIT`]); returns the text's length.
pub fn encode(digest: u32, positions: &[Position], out: &mut [u8]) -> usize {
    assert!(positions.len() <= CURSOR_TOPICS_LIMIT);
    let mut binary = [0u8; BINARY_BYTES_MAX];
    let mut length = 0;
    let mut put = |bytes: &[u8]| {
        binary[length..length + bytes.len()].copy_from_slice(bytes);
        length += bytes.len();
    };
    put(&[VERSION]);
    put(&digest.to_le_bytes());
    put_varint(positions.len() as u64, &mut put);
    for position in positions {
        match position {
            Some(Since {
                seq,
                epoch: Some(epoch),
            }) => {
                put(&[1]);
                put(&epoch.0.to_le_bytes());
                put_varint(*seq, &mut put);
            }
            Some(Since { seq, epoch: None }) => {
                put(&[2]);
                put_varint(*seq, &mut put);
            }
            None => put(&[0]),
        }
    }
    URL_SAFE_NO_PAD
        .encode_slice(&binary[..length], out)
        .expect("the caller sized the buffer")
}

/// Reads a cursor made for `topics`.
pub fn decode(text: &str, topics: &[TopicName]) -> Result<Vec<Position>, CursorError> {
    if text.len() > cursor_text_bytes_max(topics.len()) {
        return Err(CursorError::Malformed);
    }
    let binary = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| CursorError::Malformed)?;
    let mut reader = Reader { bytes: &binary };
    if reader.byte()? != VERSION {
        return Err(CursorError::Malformed);
    }
    let digest = u32::from_le_bytes(reader.array()?);
    let count = reader.varint()?;
    if digest != topics_digest(topics) || count != topics.len() as u64 {
        return Err(CursorError::OtherTopics);
    }
    let mut positions = Vec::with_capacity(topics.len());
    for _ in 0..count {
        positions.push(match reader.byte()? {
            0 => None,
            1 => {
                let epoch = Epoch(u64::from_le_bytes(reader.array()?));
                let seq = reader.varint()?;
                Some(Since {
                    seq,
                    epoch: Some(epoch),
                })
            }
            2 => Some(Since {
                seq: reader.varint()?,
                epoch: None,
            }),
            _ => return Err(CursorError::Malformed),
        });
    }
    match reader.bytes.is_empty() {
        true => Ok(positions),
        false => Err(CursorError::Malformed),
    }
}

fn put_varint(mut value: u64, put: &mut impl FnMut(&[u8])) {
    while value >= 0x80 {
        put(&[(value as u8) | 0x80]);
        value >>= 7;
    }
    put(&[value as u8]);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, CursorError> {
        let (&first, rest) = self.bytes.split_first().ok_or(CursorError::Malformed)?;
        self.bytes = rest;
        Ok(first)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CursorError> {
        let (head, rest) = self
            .bytes
            .split_first_chunk::<N>()
            .ok_or(CursorError::Malformed)?;
        self.bytes = rest;
        Ok(*head)
    }

    fn varint(&mut self) -> Result<u64, CursorError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7F)
                .checked_shl(shift)
                .filter(|part| part >> shift == u64::from(byte & 0x7F))
                .ok_or(CursorError::Malformed)?;
            if byte & 0x80 == 0 {
                // A last byte of 0 after others only spells the same value longer: one cursor,
                // one text (the cursor a client resumes with is the one it was given).
                return match byte == 0 && shift > 0 {
                    true => Err(CursorError::Malformed),
                    false => Ok(value),
                };
            }
        }
        Err(CursorError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn topics(names: &[&str]) -> Vec<TopicName> {
        names
            .iter()
            .map(|name| TopicName::copy_from(name.as_bytes(), 128).unwrap())
            .collect()
    }

    fn text(digest: u32, positions: &[Position]) -> String {
        let mut out = vec![0u8; cursor_text_bytes_max(positions.len())];
        let length = encode(digest, positions, &mut out);
        String::from_utf8(out[..length].to_vec()).unwrap()
    }

    #[test]
    fn a_cursor_round_trips_for_its_topics_only() {
        let list = topics(&["AAPL", "MSFT", "EUR/USD"]);
        let positions = vec![
            Some(Since {
                seq: 41,
                epoch: Some(Epoch(0x9f2c_0000_0000_0001)),
            }),
            None,
            Some(Since {
                seq: u64::MAX,
                epoch: Some(Epoch(7)),
            }),
        ];
        let cursor = text(topics_digest(&list), &positions);
        assert_eq!(decode(&cursor, &list), Ok(positions.clone()));
        // A bare `since` not yet answered keeps what the client asked for.
        let mut positions = positions;
        positions[1] = Some(Since {
            seq: 0,
            epoch: None,
        });
        let cursor = text(topics_digest(&list), &positions);
        assert!(
            cursor
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        );
        assert_eq!(decode(&cursor, &list), Ok(positions.clone()));
        let reordered = topics(&["MSFT", "AAPL", "EUR/USD"]);
        assert_eq!(decode(&cursor, &reordered), Err(CursorError::OtherTopics));
        assert_eq!(decode(&cursor, &list[..2]), Err(CursorError::OtherTopics));
        assert_eq!(decode("!!", &list), Err(CursorError::Malformed));
        assert_eq!(decode("", &list), Err(CursorError::Malformed));
    }

    #[test]
    fn a_longer_spelling_of_a_cursor_is_refused() {
        // `[0x80, 0x00]` used to read as the varint 0: two texts decoded to one cursor, and
        // encoding what was decoded changed the text (fuzz/fuzz_targets/stream_cursor.rs checks
        // that it never does).
        let list = topics(&["AAPL"]);
        let mut binary = vec![VERSION];
        binary.extend_from_slice(&topics_digest(&list).to_le_bytes());
        let canonical = [binary.clone(), vec![1, 1], vec![0; 8], vec![0]].concat();
        let overlong_seq = [binary.clone(), vec![1, 1], vec![0; 8], vec![0x80, 0]].concat();
        let overlong_count = [binary, vec![0x81, 0], vec![1], vec![0; 8], vec![0]].concat();
        let decoded = |bytes: &[u8]| decode(&URL_SAFE_NO_PAD.encode(bytes), &list);
        let position = Some(Since {
            seq: 0,
            epoch: Some(Epoch(0)),
        });
        assert_eq!(decoded(&canonical), Ok(vec![position]));
        assert_eq!(decoded(&overlong_seq), Err(CursorError::Malformed));
        assert_eq!(decoded(&overlong_count), Err(CursorError::Malformed));
    }

    proptest! {
        /// Proves no input makes decoding panic, and every cursor encoded decodes to itself.
        #[test]
        fn decoding_never_panics(text in "[A-Za-z0-9_-]{0,80}", seqs in proptest::collection::vec(any::<u64>(), 1..5)) {
            let list = topics(&["A", "B", "C", "D", "E"][..seqs.len()]);
            let _ = decode(&text, &list);
            let positions: Vec<Position> = seqs.iter().map(|&seq| Some(Since { seq, epoch: Some(Epoch(seq ^ 1)) })).collect();
            let cursor = text_of(&list, &positions);
            prop_assert_eq!(decode(&cursor, &list), Ok(positions));
        }
    }

    fn text_of(list: &[TopicName], positions: &[Position]) -> String {
        text(topics_digest(list), positions)
    }
}
