//! The session with permessage-deflate negotiated, driven with plain byte slices: compressed
//! messages whole, fragmented and cut at every point, RSV1 where it may not be, a zip bomb,
//! corrupt data, and the inflater lent only while a compressed message arrives.

mod support;

use ringcast::protocol::pool::{BufferPool, PoolLimits};
use ringcast::protocol::websocket::deflate::{Compressor, WINDOW_BITS_MAX};
use ringcast::protocol::websocket::frame::{OpCode, encode_masked_frame_with_rsv1};
use ringcast::protocol::websocket::session::SessionState;
use ringcast::protocol::{CloseCode, ProtocolError, ProtocolLimits};
use support::session::{Harness, Owned, client_frame};

const MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

fn compressing_harness(config: ProtocolLimits) -> Harness {
    let mut harness = Harness::new(config);
    harness.session.set_compression(true);
    harness
}

fn compressed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Compressor::new(1, WINDOW_BITS_MAX).compress(message, &mut out);
    out
}

fn frame(opcode: OpCode, fin: bool, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_masked_frame_with_rsv1(opcode, fin, rsv1, payload, MASK, &mut out);
    out
}

/// A compressed message cut into `pieces` frames: RSV1 on the first only.
fn fragment_frames(opcode: OpCode, message: &[u8], pieces: usize) -> Vec<Vec<u8>> {
    let payload = compressed(message);
    let piece_bytes = payload.len().div_ceil(pieces).max(1);
    let chunks: Vec<&[u8]> = payload.chunks(piece_bytes).collect();
    let last = chunks.len() - 1;
    chunks
        .iter()
        .enumerate()
        .map(|(index, chunk)| {
            let opcode = if index == 0 {
                opcode
            } else {
                OpCode::Continuation
            };
            frame(opcode, index == last, index == 0, chunk)
        })
        .collect()
}

fn fragmented(opcode: OpCode, message: &[u8], pieces: usize) -> Vec<u8> {
    fragment_frames(opcode, message, pieces).concat()
}

fn quote_json() -> String {
    (0..40)
        .map(|index| format!("{{\"topic\":\"AAPL\",\"bid\":\"189.{index:02}\",\"size\":100}}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Proves a compressed text and binary message are inflated, with plain messages between.
#[test]
fn compressed_messages_are_inflated() {
    let text = quote_json();
    let mut bytes = frame(OpCode::Text, true, true, &compressed(text.as_bytes()));
    bytes.extend(client_frame(OpCode::Text, true, b"plain", MASK));
    bytes.extend(frame(OpCode::Binary, true, true, &compressed(&[9; 3000])));
    let mut harness = compressing_harness(ProtocolLimits::default());
    assert_eq!(
        harness.feed(&bytes),
        [
            Owned::Text(text),
            Owned::Text("plain".into()),
            Owned::Binary(vec![9; 3000])
        ]
    );
    assert_eq!(
        harness.pool.inflater_statistics(),
        (1, 0),
        "one made, none lent"
    );
    assert!(!harness.session.holds_buffers());
}

/// Proves a fragmented compressed message, with a ping between fragments, gives the same
/// message at every split point of the byte stream.
#[test]
fn fragmented_compressed_message_at_every_split() {
    let text = quote_json();
    let mut frames = fragment_frames(OpCode::Text, text.as_bytes(), 3);
    assert_eq!(frames.len(), 3);
    frames.insert(1, client_frame(OpCode::Ping, true, b"p", MASK));
    let bytes = frames.concat();
    let expected = [Owned::Ping(b"p".to_vec()), Owned::Text(text)];
    for split in 1..bytes.len() {
        let mut harness = compressing_harness(ProtocolLimits::default());
        let mut events = harness.feed(&bytes[..split]);
        events.extend(harness.feed(&bytes[split..]));
        assert_eq!(events, expected, "split at {split}");
        assert_eq!(harness.pool.inflater_statistics().1, 0);
    }
    let mut harness = compressing_harness(ProtocolLimits::default());
    assert_eq!(harness.feed_in_chunks(&bytes, &[1, 3, 7]), expected);
}

/// Proves an empty compressed message, as the single byte 00 or as no bytes, is empty.
#[test]
fn empty_compressed_messages() {
    let mut bytes = frame(OpCode::Text, true, true, &[0x00]);
    bytes.extend(frame(OpCode::Binary, true, true, &[]));
    assert_eq!(
        compressing_harness(ProtocolLimits::default()).feed(&bytes),
        [Owned::Text(String::new()), Owned::Binary(Vec::new())]
    );
}

fn error_of(harness: &mut Harness, bytes: &[u8]) -> ProtocolError {
    let events = harness.feed(bytes);
    assert!(matches!(events.last(), Some(Owned::Error(_))), "{events:?}");
    assert_eq!(harness.session.state(), SessionState::Closed);
    harness.errors.pop().unwrap()
}

/// Proves RSV1 is refused with 1002 without negotiation, on a continuation frame and on a
/// control frame.
#[test]
fn rsv1_where_it_may_not_be_is_a_protocol_error() {
    let payload = compressed(b"hello");
    let mut plain = Harness::new(ProtocolLimits::default());
    let error = error_of(&mut plain, &frame(OpCode::Text, true, true, &payload));
    assert_eq!(error, ProtocolError::ReservedBitsSet);
    let mut bytes = frame(OpCode::Text, false, true, &payload[..2]);
    bytes.extend(frame(OpCode::Continuation, true, true, &payload[2..]));
    let mut harness = compressing_harness(ProtocolLimits::default());
    assert_eq!(
        error_of(&mut harness, &bytes),
        ProtocolError::CompressedContinuation
    );
    let mut harness = compressing_harness(ProtocolLimits::default());
    let ping = frame(OpCode::Ping, true, true, b"");
    assert_eq!(
        error_of(&mut harness, &ping),
        ProtocolError::ReservedBitsSet
    );
    for error in [
        ProtocolError::ReservedBitsSet,
        ProtocolError::CompressedContinuation,
    ] {
        assert_eq!(error.close_code(), CloseCode::PROTOCOL_ERROR);
    }
}

/// Proves a zip bomb (16 MB of zeros in about 16 KB) is refused with 1009 once it inflates
/// past `message_bytes_max`, and that the session hands its inflater and buffers back.
#[test]
fn zip_bomb_is_message_too_big() {
    let mut bomb = Vec::new();
    Compressor::new(9, WINDOW_BITS_MAX).compress(&vec![0; 16 << 20], &mut bomb);
    assert!(bomb.len() < 32 * 1024, "{} bytes", bomb.len());
    let mut harness = compressing_harness(ProtocolLimits::default());
    let error = error_of(&mut harness, &frame(OpCode::Binary, true, true, &bomb));
    assert_eq!(
        error,
        ProtocolError::InflatedTooLarge {
            message_bytes_max: 1 << 20
        }
    );
    assert_eq!(error.close_code(), CloseCode::MESSAGE_TOO_BIG);
    let mut pool = std::mem::replace(&mut harness.pool, BufferPool::new(&PoolLimits::default()));
    harness.session.release_buffers(&mut pool);
    assert_eq!(pool.inflater_statistics(), (1, 0));
    assert!(pool.statistics().all(|class| class.buffers_in_use == 0));
}

/// Proves a message that inflates to exactly `message_bytes_max` passes, one byte more not.
#[test]
fn inflated_cap_is_exact() {
    let config = ProtocolLimits {
        message_bytes_max: 5000,
        frame_bytes_max: 5000,
        ..ProtocolLimits::default()
    };
    let mut harness = compressing_harness(config.clone());
    let exact = frame(OpCode::Binary, true, true, &compressed(&[3; 5000]));
    assert_eq!(harness.feed(&exact), [Owned::Binary(vec![3; 5000])]);
    let over = frame(OpCode::Binary, true, true, &compressed(&[3; 5001]));
    let mut harness = compressing_harness(config);
    assert!(matches!(
        error_of(&mut harness, &over),
        ProtocolError::InflatedTooLarge { .. }
    ));
}

/// Proves a fragmented compressed message's compressed bytes count towards
/// `message_bytes_max`, as an uncompressed message's do: 4,000 incompressible bytes deflate to
/// a little more, which passes whole under a 4,004-byte limit as inflated bytes but not as the
/// compressed bytes of four frames. The inflater lent for the message keeps that count, and a
/// later message starts again from zero.
#[test]
fn compressed_bytes_of_fragments_are_held_to_the_message_limit() {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..4000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let compressed_bytes = compressed(&noise).len();
    assert!(compressed_bytes > 4004, "{compressed_bytes} bytes");
    let config = ProtocolLimits {
        message_bytes_max: 4004,
        frame_bytes_max: 4004,
        ..ProtocolLimits::default()
    };
    let mut harness = compressing_harness(config.clone());
    let error = error_of(&mut harness, &fragmented(OpCode::Binary, &noise, 4));
    assert_eq!(
        error,
        ProtocolError::MessageTooLarge {
            message_bytes: compressed_bytes as u64,
            message_bytes_max: 4004
        }
    );
    let mut harness = compressing_harness(config);
    let small = fragmented(OpCode::Binary, &noise[..3000], 4);
    let events = harness.feed(&[small.clone(), small].concat());
    assert_eq!(
        events,
        [
            Owned::Binary(noise[..3000].to_vec()),
            Owned::Binary(noise[..3000].to_vec())
        ]
    );
}

/// Proves data that does not inflate, and compressed text that is not UTF-8, are 1007.
#[test]
fn corrupt_data_and_bad_utf8_are_invalid_payload() {
    let mut harness = compressing_harness(ProtocolLimits::default());
    let error = error_of(
        &mut harness,
        &frame(OpCode::Binary, true, true, &[0xFF; 40]),
    );
    assert_eq!(error, ProtocolError::InvalidCompressedData);
    assert_eq!(error.close_code(), CloseCode::INVALID_PAYLOAD);
    let mut harness = compressing_harness(ProtocolLimits::default());
    let bad_text = frame(OpCode::Text, true, true, &compressed(b"ok \xC3\x28 not"));
    assert_eq!(
        error_of(&mut harness, &bad_text),
        ProtocolError::InvalidUtf8
    );
}

/// Proves the shard's inflaters bound how many connections may be mid-message at once: with
/// one, a second connection starting a compressed message is told to try again later (1013),
/// and once the first message ends its inflater serves the next.
#[test]
fn inflaters_are_lent_per_message_and_bounded() {
    let mut first = compressing_harness(ProtocolLimits::default());
    first.pool = BufferPool::new(&PoolLimits {
        inflaters_max: 1,
        ..PoolLimits::default()
    });
    let message = fragmented(OpCode::Binary, &[5; 4000], 2);
    let split = message.len() - 3;
    assert_eq!(first.feed(&message[..split]), []);
    assert_eq!(first.pool.inflater_statistics(), (1, 1));
    // A second session on the same shard (pool) finds none to borrow.
    let mut second = compressing_harness(ProtocolLimits::default());
    std::mem::swap(&mut second.pool, &mut first.pool);
    let error = error_of(&mut second, &message);
    assert_eq!(error, ProtocolError::InflatersExhausted);
    assert_eq!(error.close_code(), CloseCode::TRY_AGAIN_LATER);
    std::mem::swap(&mut second.pool, &mut first.pool);
    assert_eq!(
        first.feed(&message[split..]),
        [Owned::Binary(vec![5; 4000])]
    );
    assert_eq!(first.pool.inflater_statistics(), (1, 0));
    assert_eq!(first.feed(&message), [Owned::Binary(vec![5; 4000])]);
    assert_eq!(
        first.pool.inflater_statistics(),
        (1, 0),
        "reused, not made again"
    );
}
