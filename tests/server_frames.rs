//! Frames that break RFC 6455, each answered by the real server with the close code the RFC
//! asks for and then the end of the TCP connection; and the client's own close handshake.

mod support;

use support::server::{
    OPCODE_CLOSE, OPCODE_CONTINUATION, OPCODE_PING, OPCODE_TEXT, RawClient, ServerProcess,
    client_frame, close_payload, connect_websocket, mask_from, masked_frame,
};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Error, Message};

const PROTOCOL_ERROR: u16 = 1002;
const INVALID_PAYLOAD: u16 = 1007;
const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

/// Sends `bytes` on a fresh WebSocket and checks the server closes with `code`, then ends the
/// TCP connection.
fn expect_close_after(server: &ServerProcess, case: &str, bytes: &[u8], code: u16) {
    let mut client = RawClient::upgraded(server.address, "/ws");
    client.write(bytes);
    let frame = client.read_frame();
    assert_eq!(frame.opcode, OPCODE_CLOSE, "{case}: {frame:?}");
    let (received, reason) = frame
        .close_code_and_reason()
        .unwrap_or_else(|| panic!("{case}: a close without a code"));
    assert_eq!(received, code, "{case}: reason {reason:?}");
    client.expect_eof();
}

/// Proves a frame with RSV1 set and no extension negotiated closes with 1002.
#[test]
fn reserved_bit_is_1002() {
    let server = ServerProcess::start(&[]);
    let frame = masked_frame(0x80 | 0x40 | OPCODE_TEXT, b"hi", MASK);
    expect_close_after(&server, "RSV1", &frame, PROTOCOL_ERROR);
    let frame = masked_frame(0x80 | 0x10 | OPCODE_TEXT, b"hi", MASK);
    expect_close_after(&server, "RSV3", &frame, PROTOCOL_ERROR);
}

/// Proves reserved data (0x3) and control (0xB) opcodes close with 1002.
#[test]
fn unknown_opcode_is_1002() {
    let server = ServerProcess::start(&[]);
    for opcode in [0x3, 0xB] {
        let frame = masked_frame(0x80 | opcode, b"?", MASK);
        expect_close_after(
            &server,
            &format!("opcode {opcode:#x}"),
            &frame,
            PROTOCOL_ERROR,
        );
    }
}

/// Proves a client frame without the mask bit closes with 1002 (RFC 6455 §5.1).
#[test]
fn unmasked_frame_is_1002() {
    let server = ServerProcess::start(&[]);
    let frame = [0x80 | OPCODE_TEXT, 2, b'h', b'i'];
    expect_close_after(&server, "unmasked text", &frame, PROTOCOL_ERROR);
}

/// Proves a ping without FIN (a fragmented control frame) closes with 1002.
#[test]
fn fragmented_ping_is_1002() {
    let server = ServerProcess::start(&[]);
    let frame = client_frame(OPCODE_PING, false, b"half");
    expect_close_after(&server, "fragmented ping", &frame, PROTOCOL_ERROR);
}

/// Proves a ping with a 126-byte payload (control frames carry at most 125) closes with 1002.
#[test]
fn ping_of_126_bytes_is_1002() {
    let server = ServerProcess::start(&[]);
    let frame = client_frame(OPCODE_PING, true, &[b'p'; 126]);
    expect_close_after(&server, "126-byte ping", &frame, PROTOCOL_ERROR);
}

/// Proves text that is not UTF-8 closes with 1007, whole or split across fragments.
#[test]
fn invalid_utf8_text_is_1007() {
    let server = ServerProcess::start(&[]);
    let frame = client_frame(OPCODE_TEXT, true, &[b'o', b'k', 0xC3, 0x28]);
    expect_close_after(&server, "invalid text", &frame, INVALID_PAYLOAD);
    let mut fragments = client_frame(OPCODE_TEXT, false, &[b'a', 0xF0, 0x9D]);
    fragments.extend(client_frame(OPCODE_CONTINUATION, true, &[0x84, 0xFF]));
    expect_close_after(
        &server,
        "invalid across fragments",
        &fragments,
        INVALID_PAYLOAD,
    );
}

/// Proves close code 1005, a one-byte close payload and an orphan continuation close with 1002.
#[test]
fn invalid_close_and_sequence_are_1002() {
    let server = ServerProcess::start(&[]);
    let frame = client_frame(OPCODE_CLOSE, true, &close_payload(1005, ""));
    expect_close_after(&server, "close code 1005", &frame, PROTOCOL_ERROR);
    let frame = client_frame(OPCODE_CLOSE, true, &[0x03]);
    expect_close_after(&server, "one-byte close", &frame, PROTOCOL_ERROR);
    let frame = client_frame(OPCODE_CONTINUATION, true, b"orphan");
    expect_close_after(&server, "orphan continuation", &frame, PROTOCOL_ERROR);
}

/// Proves a client close with 1000 is answered with 1000, then the server ends the connection.
#[test]
fn client_close_is_echoed_then_connection_ends() {
    let server = ServerProcess::start(&[]);
    let mut client = RawClient::upgraded(server.address, "/ws");
    client.send_frame(OPCODE_CLOSE, true, &close_payload(1000, "done"));
    let frame = client.read_frame();
    assert_eq!(frame.opcode, OPCODE_CLOSE, "{frame:?}");
    assert_eq!(
        frame.close_code_and_reason().map(|(code, _)| code),
        Some(1000)
    );
    client.expect_eof();
}

/// Proves the same with tungstenite: its close handshake completes and the connection ends.
#[test]
fn tungstenite_close_handshake_completes() {
    let server = ServerProcess::start(&[]);
    let mut socket = connect_websocket(server.address, "/ws");
    socket
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        }))
        .unwrap();
    match socket.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected the server's close 1000, got {other:?}"),
    }
    match socket.read() {
        Err(Error::ConnectionClosed) => {}
        other => panic!("expected the connection to end, got {other:?}"),
    }
}

/// Proves an empty close (no code) is answered with an empty close, then the connection ends.
#[test]
fn empty_close_is_echoed_empty() {
    let server = ServerProcess::start(&[]);
    let mut client = RawClient::upgraded(server.address, "/ws");
    client.write(&masked_frame(0x80 | OPCODE_CLOSE, &[], mask_from(0)));
    assert_eq!(client.read_close_code(), None);
    client.expect_eof();
}
