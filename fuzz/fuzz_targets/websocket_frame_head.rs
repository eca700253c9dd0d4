//! The WebSocket frame head parser on arbitrary bytes, against tungstenite's.
//!
//! The input is the bytes at a frame boundary; read boundaries do not apply, since
//! `FrameHead::parse` consumes nothing and is called again with the same bytes plus more, so
//! every prefix of the input is parsed instead. Invariants:
//! - no panic, no allocation at all;
//! - a head is 2 to 14 bytes, never more than the input; `Ok(None)` only below 14 bytes;
//! - every prefix shorter than a head is `Ok(None)`, and the head parses the same from exactly
//!   its own bytes (nothing past the head matters);
//! - an error shows on some prefix and stays the same whatever follows;
//! - encoding a parsed head and parsing it again gives the same head;
//! - tungstenite's `FrameHeader::parse` finds the same fields, and where it accepts a head we
//!   refuse, the head breaks the rule we refused it for (tungstenite checks those rules later,
//!   on the whole frame); where it refuses a head (a reserved opcode), we refuse it too.

#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use ringcast_fuzz::allocation::{self, AllocationBudget};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode as TheirOpCode};

// The crate's API, in one place: when modules move, only these lines change.
use ringcast::protocol::ProtocolError;
use ringcast::protocol::websocket::frame::{FrameHead, HEAD_BYTES_MAX, OpCode};

/// Parsing a head allocates nothing.
const BUDGET: AllocationBudget = AllocationBudget {
    fixed_bytes: 0,
    bytes_per_input_byte: 0,
};

fuzz_target!(|data: &[u8]| {
    let (parsed, _) = allocation::measure(BUDGET, data.len(), || FrameHead::parse(data));
    check_prefixes(data, &parsed);
    if let Ok(Some(head)) = parsed {
        check_round_trip(head);
    }
    check_against_tungstenite(data, &parsed);
});

fn check_prefixes(data: &[u8], parsed: &Result<Option<FrameHead>, ProtocolError>) {
    match parsed {
        Ok(Some(head)) => {
            let head_bytes = usize::from(head.head_bytes);
            assert!((2..=HEAD_BYTES_MAX).contains(&head_bytes) && head_bytes <= data.len());
            assert_eq!(&FrameHead::parse(&data[..head_bytes]), parsed);
            for end in 0..head_bytes {
                assert_eq!(FrameHead::parse(&data[..end]), Ok(None), "prefix of {end}");
            }
        }
        Ok(None) => assert!(
            data.len() < HEAD_BYTES_MAX,
            "no head in {} bytes",
            data.len()
        ),
        Err(error) => {
            let mut errors_seen = 0;
            for end in 0..=data.len() {
                match FrameHead::parse(&data[..end]) {
                    Ok(None) => assert_eq!(errors_seen, 0, "an error went away at {end}"),
                    Err(prefix_error) => {
                        assert_eq!(&prefix_error, error, "prefix of {end}");
                        errors_seen += 1;
                    }
                    Ok(Some(head)) => panic!("a prefix of {end} parsed as {head:?}"),
                }
            }
            let extended = [data, &[0xFF; HEAD_BYTES_MAX]].concat();
            assert_eq!(
                &FrameHead::parse(&extended),
                parsed,
                "more bytes changed it"
            );
        }
    }
}

fn check_round_trip(head: FrameHead) {
    let mut encoded = [0u8; HEAD_BYTES_MAX];
    let encoded_bytes = head.encode(&mut encoded);
    let Ok(Some(again)) = FrameHead::parse(&encoded[..encoded_bytes]) else {
        panic!("{head:?} does not parse after encoding");
    };
    // Encoding uses the shortest length, so only the head's own size may differ.
    assert_eq!(
        FrameHead {
            head_bytes: head.head_bytes,
            ..again
        },
        head
    );
    assert_eq!(usize::from(again.head_bytes), encoded_bytes);
}

fn check_against_tungstenite(data: &[u8], ours: &Result<Option<FrameHead>, ProtocolError>) {
    let mut cursor = Cursor::new(data);
    let theirs = FrameHeader::parse(&mut cursor);
    let their_head_bytes = cursor.position() as usize;
    match (theirs, ours) {
        (Ok(Some((header, payload_bytes))), Ok(Some(head))) => {
            assert_eq!(header.is_final, head.fin);
            assert_eq!(header.opcode, their_opcode(head.opcode));
            assert_eq!(header.mask, head.mask);
            assert_eq!(payload_bytes, head.payload_bytes);
            assert_eq!(their_head_bytes, usize::from(head.head_bytes));
            // RSV1 is the session's call (permessage-deflate); RSV2 and RSV3 are always refused.
            assert_eq!(header.rsv1, head.rsv1);
            assert!(!(header.rsv2 || header.rsv3));
        }
        (Ok(Some((header, payload_bytes))), Err(error)) => {
            let control = matches!(header.opcode, TheirOpCode::Control(_));
            let justified = match error {
                ProtocolError::ReservedBitsSet => header.rsv1 || header.rsv2 || header.rsv3,
                ProtocolError::FragmentedControlFrame => control && !header.is_final,
                // The second byte's length code, whatever the extended length says.
                ProtocolError::ControlFrameTooLong(_) => control && data[1] & 0x7F > 125,
                ProtocolError::LengthTopBitSet => payload_bytes >> 63 != 0,
                _ => false,
            };
            assert!(justified, "we refused ({error:?}) the head {header:?}");
        }
        (Ok(Some((header, _))), Ok(None)) => panic!("we wait where tungstenite read {header:?}"),
        (Ok(None), Ok(Some(head))) => panic!("we read {head:?} where tungstenite waits"),
        // We refuse what the first two bytes rule out; tungstenite waits for the whole head.
        (Ok(None), Ok(None) | Err(_)) => {}
        (Err(_), Err(_)) => {}
        (Err(their_error), Ok(result)) => {
            panic!("tungstenite refused ({their_error}) what we read as {result:?}")
        }
    }
}

fn their_opcode(opcode: OpCode) -> TheirOpCode {
    match opcode {
        OpCode::Continuation => TheirOpCode::Data(Data::Continue),
        OpCode::Text => TheirOpCode::Data(Data::Text),
        OpCode::Binary => TheirOpCode::Data(Data::Binary),
        OpCode::Close => TheirOpCode::Control(Control::Close),
        OpCode::Ping => TheirOpCode::Control(Control::Ping),
        OpCode::Pong => TheirOpCode::Control(Control::Pong),
    }
}
