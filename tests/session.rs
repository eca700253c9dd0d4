//! The session state machine driven with plain byte slices: RFC 6455 vectors, every protocol
//! violation and its close code, every split point, the close handshake and the limits.

mod support;

use rand::{Rng, SeedableRng, rngs::StdRng};
use ringcast::protocol::ProtocolLimits;
use ringcast::protocol::websocket::frame::{OpCode, encode_close_frame, encode_frame};
use ringcast::protocol::websocket::session::SessionState;
use ringcast::protocol::{CloseCode, ProtocolError};
use support::session::{Harness, Owned, client_frame};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn harness() -> Harness {
    Harness::new(ProtocolLimits::default())
}

/// Proves the masked "Hello" of RFC 6455 §5.7 is read, and the unmasked one refused (1002).
#[test]
fn rfc_5_7_single_frame_text() {
    let masked = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(harness().feed(&masked), [Owned::Text("Hello".into())]);
    assert_eq!(client_frame(OpCode::Text, true, b"Hello", MASK), masked);
    let unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    let mut session = harness();
    assert_eq!(
        session.feed(&unmasked),
        [Owned::Error(CloseCode::PROTOCOL_ERROR)]
    );
    assert_eq!(session.errors, [ProtocolError::UnmaskedFrame]);
}

/// Proves our server encoding produces the RFC 6455 §5.7 example frames byte for byte.
#[test]
fn rfc_5_7_server_encodings() {
    assert_eq!(
        &encode_frame(OpCode::Text, true, b"Hello")[..],
        [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']
    );
    assert_eq!(
        &encode_frame(OpCode::Text, false, b"Hel")[..],
        [0x01, 0x03, 0x48, 0x65, 0x6c]
    );
    assert_eq!(
        &encode_frame(OpCode::Continuation, true, b"lo")[..],
        [0x80, 0x02, 0x6c, 0x6f]
    );
    assert_eq!(
        &encode_frame(OpCode::Ping, true, b"Hello")[..5],
        [0x89, 0x05, 0x48, 0x65, 0x6c]
    );
    let binary_256 = encode_frame(OpCode::Binary, true, &[7; 256]);
    assert_eq!(&binary_256[..4], [0x82, 0x7E, 0x01, 0x00]);
    assert_eq!(binary_256.len(), 4 + 256);
    let binary_65536 = encode_frame(OpCode::Binary, true, &[7; 65536]);
    assert_eq!(&binary_65536[..10], [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert_eq!(
        &encode_close_frame(1000, "bye")[..],
        [0x88, 0x05, 0x03, 0xe8, b'b', b'y', b'e']
    );
}

/// Proves the fragmented "Hel"+"lo" of §5.7 is one message, and the masked pong is read.
#[test]
fn rfc_5_7_fragments_and_pong() {
    let mut bytes = client_frame(OpCode::Text, false, b"Hel", MASK);
    bytes.extend(client_frame(OpCode::Continuation, true, b"lo", MASK));
    assert_eq!(harness().feed(&bytes), [Owned::Text("Hello".into())]);
    let pong = [
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(harness().feed(&pong), [Owned::Pong(b"Hello".to_vec())]);
}

/// Proves a ping is answered by a pong with the same payload, after the read.
#[test]
fn ping_owes_pong_with_same_payload() {
    let mut session = harness();
    let events = session.feed(&client_frame(OpCode::Ping, true, b"heartbeat", MASK));
    assert_eq!(events, [Owned::Ping(b"heartbeat".to_vec())]);
    assert_eq!(
        session.transmits(),
        [encode_frame(OpCode::Pong, true, b"heartbeat").to_vec()]
    );
    assert!(!session.session.holds_buffers());
}

/// Proves a session borrows a holder for its buffers only while it keeps one: across the reads
/// of a split message and while a pong is owed, and never between reads otherwise.
#[test]
fn holder_is_lent_only_while_a_buffer_is_kept() {
    let mut session = harness();
    let lent = |session: &Harness| session.pool.holder_statistics().1;
    session.feed(&client_frame(OpCode::Text, true, b"whole", MASK));
    assert_eq!(lent(&session), 0);
    let mut split = client_frame(OpCode::Text, false, b"Hel", MASK);
    split.extend(client_frame(OpCode::Continuation, true, b"lo", MASK));
    assert_eq!(session.feed(&split[..7]), []);
    assert_eq!(lent(&session), 1);
    assert!(session.session.holds_buffers());
    assert_eq!(session.feed(&split[7..]), [Owned::Text("Hello".into())]);
    assert_eq!(lent(&session), 0);
    assert!(!session.session.holds_buffers());
    session.feed(&client_frame(OpCode::Ping, true, b"beat", MASK));
    assert_eq!(lent(&session), 1, "the owed pong is kept until sent");
    assert_eq!(session.transmits().len(), 1);
    assert_eq!(lent(&session), 0);
    assert_eq!(session.pool.holder_statistics().0, 1, "one holder, reused");
}

/// Proves control frames may interleave a fragmented message without disturbing it.
#[test]
fn control_frames_interleave_fragments() {
    let mut bytes = client_frame(OpCode::Binary, false, b"ab", MASK);
    bytes.extend(client_frame(OpCode::Ping, true, b"p", MASK));
    bytes.extend(client_frame(OpCode::Continuation, false, b"cd", MASK));
    bytes.extend(client_frame(OpCode::Pong, true, b"q", MASK));
    bytes.extend(client_frame(OpCode::Continuation, true, b"ef", MASK));
    let events = harness().feed(&bytes);
    assert_eq!(
        events,
        [
            Owned::Ping(b"p".to_vec()),
            Owned::Pong(b"q".to_vec()),
            Owned::Binary(b"abcdef".to_vec())
        ]
    );
}

fn close_code_of(bytes: &[u8], config: ProtocolLimits) -> (CloseCode, ProtocolError) {
    let mut session = Harness::new(config);
    let events = session.feed(bytes);
    let Some(Owned::Error(code)) = events.last() else {
        panic!("no error in {events:?}")
    };
    assert_eq!(session.session.state(), SessionState::Closed);
    let transmits = session.transmits();
    let close = transmits.last().expect("a close frame is owed");
    assert_eq!(close[0], 0x88);
    assert_eq!(
        u16::from_be_bytes([close[2], close[3]]),
        code.0,
        "close frame carries the code"
    );
    (*code, session.errors.pop().unwrap())
}

/// Proves every framing violation is refused with its close code and a close frame.
#[test]
fn every_violation_has_its_close_code() {
    let default = ProtocolLimits::default;
    let mut rsv = client_frame(OpCode::Text, true, b"x", MASK);
    rsv[0] |= 0x40;
    let mut reserved_opcode = client_frame(OpCode::Text, true, b"x", MASK);
    reserved_opcode[0] = 0x80 | 0x3;
    let mut unmasked = client_frame(OpCode::Binary, true, b"x", MASK);
    unmasked[1] &= 0x7F;
    let long_ping = client_frame(OpCode::Ping, true, &[0; 126], MASK);
    let fragmented_ping = client_frame(OpCode::Ping, false, b"x", MASK);
    let mut top_bit = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
    top_bit.extend(MASK);
    let continuation = client_frame(OpCode::Continuation, true, b"x", MASK);
    let mut nested = client_frame(OpCode::Text, false, b"a", MASK);
    nested.extend(client_frame(OpCode::Text, true, b"b", MASK));
    let short_close = client_frame(OpCode::Close, true, &[3], MASK);
    let bad_utf8 = client_frame(OpCode::Text, true, &[b'a', 0xC0, 0x80], MASK);
    let mut bad_reason = 1000u16.to_be_bytes().to_vec();
    bad_reason.extend([0xFF]);
    let bad_reason = client_frame(OpCode::Close, true, &bad_reason, MASK);
    let small = || ProtocolLimits {
        frame_bytes_max: 16,
        message_bytes_max: 32,
        ..default()
    };
    let big_frame = client_frame(OpCode::Binary, true, &[0; 17], MASK);
    let mut big_message = Vec::new();
    big_message.extend(client_frame(OpCode::Binary, false, &[0; 12], MASK));
    for _ in 0..2 {
        big_message.extend(client_frame(OpCode::Continuation, false, &[0; 12], MASK));
    }
    let cases: Vec<(&str, Vec<u8>, ProtocolLimits, ProtocolError, CloseCode)> = vec![
        (
            "rsv",
            rsv,
            default(),
            ProtocolError::ReservedBitsSet,
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "opcode",
            reserved_opcode,
            default(),
            ProtocolError::UnknownOpcode(3),
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "unmasked",
            unmasked,
            default(),
            ProtocolError::UnmaskedFrame,
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "long ping",
            long_ping,
            default(),
            ProtocolError::ControlFrameTooLong(126),
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "fragmented ping",
            fragmented_ping,
            default(),
            ProtocolError::FragmentedControlFrame,
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "top bit",
            top_bit,
            default(),
            ProtocolError::LengthTopBitSet,
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "continuation",
            continuation,
            default(),
            ProtocolError::ContinuationWithoutStart,
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "nested",
            nested,
            default(),
            ProtocolError::DataFrameInsideFragmentedMessage,
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "short close",
            short_close,
            default(),
            ProtocolError::CloseFrameTooShort,
            CloseCode::PROTOCOL_ERROR,
        ),
        (
            "utf8",
            bad_utf8,
            default(),
            ProtocolError::InvalidUtf8,
            CloseCode::INVALID_PAYLOAD,
        ),
        (
            "reason",
            bad_reason,
            default(),
            ProtocolError::InvalidCloseReasonUtf8,
            CloseCode::INVALID_PAYLOAD,
        ),
        (
            "frame size",
            big_frame,
            small(),
            ProtocolError::FrameTooLarge {
                frame_bytes: 17,
                frame_bytes_max: 16,
            },
            CloseCode::MESSAGE_TOO_BIG,
        ),
        (
            "message size",
            big_message,
            small(),
            ProtocolError::MessageTooLarge {
                message_bytes: 36,
                message_bytes_max: 32,
            },
            CloseCode::MESSAGE_TOO_BIG,
        ),
    ];
    for (name, bytes, config, error, code) in cases {
        assert_eq!(close_code_of(&bytes, config), (code, error), "case {name}");
    }
}

/// Proves close codes are checked per RFC 6455 §7.4: reserved and unassigned ones are refused.
#[test]
fn close_code_validity() {
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
    ] {
        let mut session = harness();
        let events = session.feed(&client_frame(
            OpCode::Close,
            true,
            &code.to_be_bytes(),
            MASK,
        ));
        assert_eq!(
            events,
            [Owned::Close(Some(code), String::new())],
            "code {code}"
        );
    }
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
    ] {
        let frame = client_frame(OpCode::Close, true, &code.to_be_bytes(), MASK);
        let (close, error) = close_code_of(&frame, ProtocolLimits::default());
        assert_eq!(
            (close, error),
            (
                CloseCode::PROTOCOL_ERROR,
                ProtocolError::InvalidCloseCode(code)
            )
        );
    }
}

/// Proves the peer-initiated close handshake: the code is echoed and nothing more is read.
#[test]
fn peer_initiated_close() {
    let mut session = harness();
    let mut bytes = client_frame(OpCode::Close, true, &[0x03, 0xe8, b'o', b'k'], MASK);
    bytes.extend(client_frame(OpCode::Text, true, b"after close", MASK));
    assert_eq!(
        session.feed(&bytes),
        [Owned::Close(Some(1000), "ok".into())]
    );
    assert_eq!(session.session.state(), SessionState::Closed);
    assert_eq!(session.transmits(), [vec![0x88, 0x02, 0x03, 0xe8]]);
    assert!(
        session
            .feed(&client_frame(OpCode::Text, true, b"x", MASK))
            .is_empty()
    );
    // An empty close payload is answered with an empty close.
    let mut empty = harness();
    assert_eq!(
        empty.feed(&client_frame(OpCode::Close, true, b"", MASK)),
        [Owned::Close(None, String::new())]
    );
    assert_eq!(empty.transmits(), [vec![0x88, 0x00]]);
}

/// Proves the server-initiated close: data is discarded until the peer's close, not answered.
#[test]
fn server_initiated_close() {
    let mut session = harness();
    session
        .session
        .close(CloseCode::GOING_AWAY, "shutting down");
    assert_eq!(session.session.state(), SessionState::CloseSent);
    let transmits = session.transmits();
    assert_eq!(
        transmits,
        [encode_close_frame(1001, "shutting down").to_vec()]
    );
    let mut bytes = client_frame(OpCode::Text, true, b"late", MASK);
    bytes.extend(client_frame(OpCode::Ping, true, b"p", MASK));
    bytes.extend(client_frame(
        OpCode::Close,
        true,
        &1001u16.to_be_bytes(),
        MASK,
    ));
    let events = session.feed(&bytes);
    assert_eq!(
        events,
        [
            Owned::Ping(b"p".to_vec()),
            Owned::Close(Some(1001), String::new())
        ]
    );
    assert_eq!(session.session.state(), SessionState::Closed);
    assert!(
        session.transmits().is_empty(),
        "no pong or second close after our close"
    );
}

/// A realistic read stream: every kind of frame, fragments, pings inside fragments, large frames.
fn mixed_stream(random: &mut StdRng) -> (Vec<u8>, Vec<Owned>) {
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for index in 0..40 {
        let mask: [u8; 4] = random.random();
        match index % 5 {
            0 => {
                let text = format!("{{\"topic\":\"AAPL\",\"seq\":{index},\"px\":\"191.2€\"}}");
                bytes.extend(client_frame(OpCode::Text, true, text.as_bytes(), mask));
                expected.push(Owned::Text(text));
            }
            1 => {
                let payload: Vec<u8> = (0..random.random_range(0..70_000))
                    .map(|_| random.random())
                    .collect();
                bytes.extend(client_frame(OpCode::Binary, true, &payload, mask));
                expected.push(Owned::Binary(payload));
            }
            2 => {
                let text = "株価 κόσμε ".repeat(random.random_range(1..50));
                let cut = text.len() / 3;
                bytes.extend(client_frame(
                    OpCode::Text,
                    false,
                    &text.as_bytes()[..cut],
                    mask,
                ));
                bytes.extend(client_frame(OpCode::Ping, true, b"mid", mask));
                expected.push(Owned::Ping(b"mid".to_vec()));
                bytes.extend(client_frame(
                    OpCode::Continuation,
                    false,
                    &text.as_bytes()[cut..cut * 2],
                    mask,
                ));
                bytes.extend(client_frame(
                    OpCode::Continuation,
                    true,
                    &text.as_bytes()[cut * 2..],
                    mask,
                ));
                expected.push(Owned::Text(text));
            }
            3 => {
                let payload: Vec<u8> = (0..random.random_range(0..=125))
                    .map(|_| random.random())
                    .collect();
                bytes.extend(client_frame(OpCode::Ping, true, &payload, mask));
                expected.push(Owned::Ping(payload));
            }
            _ => {
                bytes.extend(client_frame(OpCode::Text, true, b"", mask));
                expected.push(Owned::Text(String::new()));
            }
        }
    }
    bytes.extend(client_frame(
        OpCode::Close,
        true,
        &[0x03, 0xe8],
        [9, 8, 7, 6],
    ));
    expected.push(Owned::Close(Some(1000), String::new()));
    (bytes, expected)
}

/// Proves a stream fed byte by byte and in random chunks gives the same events as fed whole.
#[test]
fn every_split_point_gives_the_same_messages() {
    let mut random = StdRng::seed_from_u64(6455);
    let (bytes, expected) = mixed_stream(&mut random);
    let mut whole = harness();
    assert_eq!(whole.feed(&bytes), expected);
    let mut byte_by_byte = harness();
    assert_eq!(byte_by_byte.feed_in_chunks(&bytes, &[1]), expected);
    for _ in 0..50 {
        let sizes: Vec<usize> = (0..16).map(|_| random.random_range(1..9000)).collect();
        let mut chunked = harness();
        assert_eq!(
            chunked.feed_in_chunks(&bytes, &sizes),
            expected,
            "chunks {sizes:?}"
        );
        chunked.session.release_buffers(&mut chunked.pool);
        assert!(
            chunked
                .pool
                .statistics()
                .all(|class| class.buffers_in_use == 0),
            "leak"
        );
    }
}

/// Proves every two-way split of a small stream, at every offset, gives the same events.
#[test]
fn every_two_way_split() {
    let mut bytes = client_frame(OpCode::Text, false, "κό".as_bytes(), MASK);
    bytes.extend(client_frame(OpCode::Ping, true, b"pi", [1, 2, 3, 4]));
    bytes.extend(client_frame(
        OpCode::Continuation,
        true,
        "σμε".as_bytes(),
        [5, 6, 7, 8],
    ));
    bytes.extend(client_frame(OpCode::Binary, true, &[1; 300], [9, 9, 9, 9]));
    let expected = harness().feed(&bytes);
    assert_eq!(expected.len(), 3);
    for cut in 0..=bytes.len() {
        let mut session = harness();
        let mut events = session.feed(&bytes[..cut]);
        events.extend(session.feed(&bytes[cut..]));
        assert_eq!(events, expected, "cut at {cut}");
        assert_eq!(session.transmits().len(), 1, "the pong");
        assert!(!session.session.holds_buffers());
    }
}

/// Proves invalid UTF-8 fails on the fragment that carries it, before the message ends.
#[test]
fn invalid_utf8_fails_fast() {
    let mut session = harness();
    assert!(
        session
            .feed(&client_frame(OpCode::Text, false, "κόσμε".as_bytes(), MASK))
            .is_empty()
    );
    let events = session.feed(&client_frame(
        OpCode::Continuation,
        false,
        &[0xED, 0xA0, 0x80],
        MASK,
    ));
    assert_eq!(events, [Owned::Error(CloseCode::INVALID_PAYLOAD)]);
    // Also within a single frame whose payload is still arriving.
    let mut partial = harness();
    let frame = client_frame(
        OpCode::Text,
        true,
        &[b'a', b'b', 0xFF, b'c', b'd', b'e'],
        MASK,
    );
    assert_eq!(
        partial.feed(&frame[..frame.len() - 2]),
        [Owned::Error(CloseCode::INVALID_PAYLOAD)]
    );
}

/// Proves an exhausted pool closes the connection with 1013 instead of growing without bound.
#[test]
fn exhausted_pool_is_try_again_later() {
    use ringcast::protocol::pool::BufferPool;
    use ringcast::protocol::pool::{BufferClass, PoolLimits};
    let mut session = harness();
    session.pool = BufferPool::new(&PoolLimits {
        inflaters_max: 1,
        classes: vec![BufferClass {
            buffer_bytes: 128,
            buffers_max: 1,
        }],
    });
    let held = session.pool.acquire(1).unwrap();
    let frame = client_frame(OpCode::Binary, true, &[0; 100], MASK);
    let events = session.feed(&frame[..50]);
    assert_eq!(events, [Owned::Error(CloseCode::TRY_AGAIN_LATER)]);
    session.pool.release(held);
}

/// Proves replies keep wire order when taken per event: ten pings give ten pongs, and a pong
/// for a ping inside a fragmented message precedes that message (Autobahn 2.10 and 5.6).
#[test]
fn pongs_keep_wire_order_when_polled_per_event() {
    let mut bytes = Vec::new();
    for index in 0..10u8 {
        bytes.extend(client_frame(OpCode::Ping, true, &[index], MASK));
    }
    bytes.extend(client_frame(OpCode::Text, false, b"frag", MASK));
    bytes.extend(client_frame(OpCode::Ping, true, b"mid", MASK));
    bytes.extend(client_frame(OpCode::Continuation, true, b"ment", MASK));
    let mut session = harness();
    let mut log = Vec::new();
    let mut reader = session
        .session
        .handle_read(&mut bytes, &mut session.pool, &session.config);
    while let Some(event) = reader.next_event() {
        if let ringcast::protocol::websocket::session::Event::Message { payload, .. } =
            event.unwrap()
        {
            log.push(format!("message {}", String::from_utf8_lossy(payload)));
        }
        while let Some(frame) = reader.poll_transmit() {
            log.push(format!("pong {:?}", &frame.as_bytes()[2..]));
        }
    }
    drop(reader);
    let mut expected: Vec<String> = (0..10u8)
        .map(|index| format!("pong {:?}", [index]))
        .collect();
    expected.push(format!("pong {:?}", b"mid"));
    expected.push("message fragment".to_string());
    assert_eq!(log, expected);
}
