//! Engine.IO v4 and Socket.IO v5 packets (`protocol::engineio`, `protocol::socketio`): the
//! long-polling body a socket.io-client POSTs, each packet in it, and the Socket.IO packet
//! inside every message packet; also a WebSocket text frame's single packet.
//!
//! The input's first byte picks the limits (small ones, so that the fuzzer reaches them); the
//! rest is a polling body.
//!
//! Invariants, for every input:
//! - no panic, and memory within a fixed amount plus a multiple of the input;
//! - a body is read or refused as a whole, and the packets of a body read re-encode to the
//!   very body (nothing dropped, nothing added);
//! - decoded binary data never exceeds the caller's bound;
//! - a Socket.IO packet read names a namespace within its limit, an ack id within 2^53 − 1,
//!   data whose first byte fits its type, and re-encodes to its text in the short form;
//! - the packets of a body read, queued as a long-polling session queues them (one WebSocket
//!   text frame each) and cut back into a body as a GET answer is, give the very body;
//! - a `sid` (the whole input as text) is either refused or names a shard and slot within the
//!   id's bounds, and is the id it was read from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_fuzz::allocation::{self, AllocationBudget};

// The crate's API, in one place: when modules move, only these lines change.
use ringcast::endpoint::socketio_polling::{
    SESSION_SHARD_MAX, SESSION_SLOT_MAX, session_address, write_frame_as_packet,
};
use ringcast::protocol::engineio::{
    EngineLimits, PacketData, decode_binary_into, parse_payload, parse_text_packet,
    write_separator_if_needed, write_text_packet,
};
use ringcast::protocol::socketio::{
    ACK_ID_MAX, MAIN_NAMESPACE, SocketLimits, SocketPacketType, parse, write_head,
};
use ringcast::protocol::websocket::frame::{OpCode, encode_frame};

/// The re-encoded body and decoded binaries, each about the input's size.
const BUDGET: AllocationBudget = AllocationBudget {
    fixed_bytes: 64 * 1024,
    bytes_per_input_byte: 8,
};

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, body)) = data.split_first() else {
        return;
    };
    let engine = EngineLimits {
        payload_bytes_max: 64 + usize::from(knobs & 0x0f) * 64,
        packets_per_payload_max: 1 + usize::from(knobs >> 4),
    };
    let socket = SocketLimits {
        namespace_bytes_max: 1 + usize::from(knobs & 0x0f),
        attachments_max: u32::from(knobs >> 4),
    };
    allocation::measure(BUDGET, data.len(), || {
        check_body(body, &engine, &socket);
        check_session_id(body);
        if let Ok(text) = std::str::from_utf8(body)
            && let Ok(packet) = parse_text_packet(text, &engine)
            && let PacketData::Text(inner) = packet.data
        {
            check_socket_packet(inner, &socket);
        }
    });
});

fn check_body(body: &[u8], engine: &EngineLimits, socket: &SocketLimits) {
    let Ok(packets) = parse_payload(body, engine) else {
        return;
    };
    assert!(body.len() <= engine.payload_bytes_max);
    let mut rewritten = Vec::with_capacity(body.len());
    let mut carried = Vec::with_capacity(body.len());
    let mut all_text = true;
    let mut decoded = Vec::new();
    for packet in packets {
        write_separator_if_needed(0, &mut rewritten);
        match packet.data {
            PacketData::Text(text) => {
                let start = rewritten.len();
                write_text_packet(packet.kind, text.as_bytes(), &mut rewritten);
                let frame = encode_frame(OpCode::Text, true, &rewritten[start..]);
                write_frame_as_packet(&frame, 0, &mut carried);
                check_socket_packet(text, socket);
            }
            PacketData::Base64(encoded) => {
                all_text = false;
                rewritten.push(b'b');
                rewritten.extend_from_slice(encoded.as_bytes());
                let bound = body.len() / 2;
                if decode_binary_into(encoded, bound, &mut decoded).is_ok() {
                    assert!(decoded.len() <= bound);
                }
            }
            PacketData::Binary(_) => panic!("binary data from a polling body"),
        }
    }
    assert_eq!(rewritten, body, "a body read is not the body re-encoded");
    if all_text {
        assert_eq!(
            carried, body,
            "frames cut back into a body are not the body"
        );
    }
}

fn check_session_id(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Some(address) = session_address(text) {
        assert!(usize::from(address.shard) <= SESSION_SHARD_MAX);
        assert!(address.slot as usize <= SESSION_SLOT_MAX);
        assert_eq!(&address.id[..], input);
    }
}

fn check_socket_packet(text: &str, limits: &SocketLimits) {
    let Ok(packet) = parse(text, limits) else {
        return;
    };
    assert!(packet.namespace.len() <= limits.namespace_bytes_max || packet.namespace == "/");
    assert!(packet.namespace.starts_with('/'));
    assert!(packet.ack_id.is_none_or(|id| id <= ACK_ID_MAX));
    assert!(packet.attachments <= limits.attachments_max);
    let first = packet.data.and_then(|data| data.bytes().next());
    match packet.kind {
        SocketPacketType::Event | SocketPacketType::BinaryEvent => assert_eq!(first, Some(b'[')),
        SocketPacketType::Ack | SocketPacketType::BinaryAck => {
            assert_eq!(first, Some(b'['));
            assert!(packet.ack_id.is_some());
        }
        SocketPacketType::Connect => assert!(matches!(first, None | Some(b'{'))),
        SocketPacketType::Disconnect => assert_eq!(packet.data, None),
        SocketPacketType::ConnectError => assert!(first.is_some()),
    }
    let binary = matches!(
        packet.kind,
        SocketPacketType::BinaryEvent | SocketPacketType::BinaryAck
    );
    // `/,` and `/name` without its comma read as the short forms, which are what is written.
    let rest = &text[1..];
    let short = rest.starts_with('/')
        && (packet.namespace == MAIN_NAMESPACE
            || !rest.starts_with(&format!("{},", packet.namespace)));
    if !binary && !short {
        let mut out = Vec::with_capacity(text.len());
        write_head(packet.kind, packet.namespace, packet.ack_id, &mut out);
        out.extend_from_slice(packet.data.unwrap_or("").as_bytes());
        assert_eq!(
            out,
            text.as_bytes(),
            "a packet read is not its text re-encoded"
        );
    }
}
