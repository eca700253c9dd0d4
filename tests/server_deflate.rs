//! permessage-deflate against the real server, with a raw client that inflates by hand (flate2,
//! independently of the server's inflater): negotiation in the 101, compressed fanout shared by
//! compressing subscribers beside plain ones, the window-bits matrix, a zip bomb (1009), RSV1
//! without negotiation (1002), and compressed echo.

mod support;

use std::net::SocketAddr;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};
use support::server::{
    OPCODE_BINARY, OPCODE_TEXT, RawClient, SAMPLE_KEY, ServerProcess, masked_frame,
};

const TRAILER: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];
const MASK: [u8; 4] = [1, 2, 3, 4];

/// An upgrade request at `path` offering `extensions` (none when empty).
fn upgrade_with(path: &str, extensions: &str) -> String {
    let offer = match extensions.is_empty() {
        true => String::new(),
        false => format!("Sec-WebSocket-Extensions: {extensions}\r\n"),
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    )
}

/// Connects and upgrades with `extensions` offered; returns the client and the extension the
/// server answered with, if any.
fn connect(address: SocketAddr, path: &str, extensions: &str) -> (RawClient, Option<String>) {
    let mut client = RawClient::connect(address);
    client.write(upgrade_with(path, extensions).as_bytes());
    let response = client.read_response_head();
    assert_eq!(response.status, 101, "{response:?}");
    let agreed = response
        .header("sec-websocket-extensions")
        .map(str::to_owned);
    (client, agreed)
}

/// Inflates a permessage-deflate payload with a window of `window_bits`: an inflater that
/// small fails on any distance farther back, so it checks the server kept to the window.
fn inflate(payload: &[u8], window_bits: u8) -> Vec<u8> {
    let mut inflater = Decompress::new_with_window_bits(false, window_bits);
    let mut input = payload.to_vec();
    input.extend_from_slice(&TRAILER);
    let mut out = Vec::with_capacity(1 << 20);
    inflater
        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("the server's payload inflates");
    out
}

/// `message` compressed as a client would, trailer stripped.
fn deflate(message: &[u8], level: u32) -> Vec<u8> {
    let mut compressor = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(message.len() + 1024);
    compressor
        .compress_vec(message, &mut out, FlushCompress::Sync)
        .unwrap();
    assert!(out.ends_with(&TRAILER));
    out.truncate(out.len() - TRAILER.len());
    out
}

/// A frame's text, inflated when it has RSV1.
fn message_of(frame: &support::server::Frame, window_bits: u8) -> Value {
    let payload = match frame.reserved_bits {
        0b100 => inflate(&frame.payload, window_bits),
        0 => frame.payload.clone(),
        other => panic!("reserved bits {other:#b}"),
    };
    serde_json::from_slice(&payload).unwrap()
}

fn send_json(client: &mut RawClient, value: Value) {
    client.send_frame(OPCODE_TEXT, true, value.to_string().as_bytes());
}

/// A quote padded to about `bytes` bytes, the kind of JSON fanout carries.
fn quote(bytes: usize) -> Value {
    let padding = "x".repeat(bytes.saturating_sub(90));
    json!({"bid":"189.25","ask":"189.27","size":100,"venue":"XNAS","note":padding})
}

fn compressing_server() -> ServerProcess {
    ServerProcess::start(&["--websocket-compression", "--shards", "1"])
}

/// Proves the 101 names permessage-deflate with both no-context-takeover parameters only
/// when the server is configured for it and the client offered it.
#[test]
fn negotiation_needs_configuration_and_an_offer() {
    let server = compressing_server();
    let (_, agreed) = connect(
        server.address,
        "/ws",
        "permessage-deflate; client_max_window_bits",
    );
    assert_eq!(
        agreed.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    let (_, agreed) = connect(server.address, "/ws", "");
    assert_eq!(agreed, None);
    let (_, agreed) = connect(server.address, "/ws", "permessage-deflate; bogus=1");
    assert_eq!(agreed, None, "a malformed offer is declined, not refused");
    let plain = ServerProcess::start(&["--shards", "1"]);
    let (_, agreed) = connect(plain.address, "/ws", "permessage-deflate");
    assert_eq!(agreed, None, "off by default");
}

/// Proves a published message reaches a compressing subscriber compressed (RSV1, inflating to
/// the same JSON as the plain subscriber's frame) for every window the client may ask for,
/// 9 to 15 bits, each inflated with exactly that window; 8 bits gets plain frames, and a
/// message under `compression_message_bytes_min` goes plain to everyone.
#[test]
fn fanout_is_compressed_for_every_window() {
    let server = compressing_server();
    let (mut plain, _) = connect(server.address, "/ws", "");
    let mut subscribers = Vec::new();
    for window_bits in 8..=15u8 {
        let offer = format!("permessage-deflate; server_max_window_bits={window_bits}");
        let (client, agreed) = connect(server.address, "/ws", &offer);
        let agreed = agreed.expect("accepted");
        assert!(agreed.ends_with(&format!("server_max_window_bits={window_bits}")));
        subscribers.push((window_bits, client));
    }
    for client in std::iter::once(&mut plain).chain(subscribers.iter_mut().map(|(_, c)| c)) {
        send_json(client, json!({"op":"subscribe","topics":["AAPL"]}));
        let reply = client.read_frame();
        assert_eq!(message_of(&reply, 15)["op"], "subscribed");
    }
    let (mut publisher, _) = connect(server.address, "/ws", "");
    for (seq, bytes) in [(1, 2000), (2, 40)] {
        let data = quote(bytes);
        send_json(
            &mut publisher,
            json!({"op":"publish","topic":"AAPL","data":data}),
        );
        let expected = plain.read_frame();
        assert_eq!(expected.reserved_bits, 0);
        let expected: Value = serde_json::from_slice(&expected.payload).unwrap();
        assert_eq!(expected["seq"], seq);
        assert_eq!(expected["data"], data);
        for (window_bits, client) in &mut subscribers {
            let frame = client.read_frame();
            let compressed = *window_bits >= 9 && bytes >= 128;
            assert_eq!(frame.reserved_bits != 0, compressed, "window {window_bits}");
            assert_eq!(message_of(&frame, *window_bits), expected);
            if compressed {
                assert!(
                    frame.payload.len() < bytes / 4,
                    "{} bytes",
                    frame.payload.len()
                );
            }
        }
    }
}

/// Proves echo replies are compressed, and that messages the client compressed, whole or
/// fragmented, with or without context takeover offered, are inflated before they are echoed.
#[test]
fn echo_inflates_and_compresses() {
    let server = ServerProcess::start(&["--echo", "--websocket-compression"]);
    let offers = [
        "permessage-deflate",
        "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits=10; server_max_window_bits=12",
    ];
    for offer in offers {
        let (mut client, agreed) = connect(server.address, "/echo", offer);
        assert!(agreed.is_some(), "{offer}");
        let message = quote(3000).to_string();
        let compressed = deflate(message.as_bytes(), 6);
        client.write(&masked_frame(0x80 | 0x40 | OPCODE_TEXT, &compressed, MASK));
        let reply = client.read_frame();
        assert_eq!(reply.reserved_bits, 0b100, "{offer}");
        assert_eq!(inflate(&reply.payload, 15), message.as_bytes());
        // Fragmented: RSV1 on the first frame only.
        let (first, rest) = compressed.split_at(compressed.len() / 2);
        client.write(&masked_frame(0x40 | OPCODE_BINARY, first, MASK));
        client.write(&masked_frame(0x80, rest, MASK));
        let reply = client.read_frame();
        assert_eq!(reply.opcode, OPCODE_BINARY);
        assert_eq!(inflate(&reply.payload, 15), message.as_bytes());
    }
}

/// Proves a zip bomb (a message inflating past `message_bytes_max`, 1 MiB by default) is
/// closed with 1009, and RSV1 without negotiation with 1002.
#[test]
fn zip_bomb_and_unnegotiated_rsv1_are_closed() {
    let server = compressing_server();
    let (mut client, _) = connect(server.address, "/ws", "permessage-deflate");
    let bomb = deflate(&vec![b'0'; 8 << 20], 9);
    assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
    client.write(&masked_frame(0x80 | 0x40 | OPCODE_TEXT, &bomb, MASK));
    let close = client.read_frame();
    assert_eq!(close.close_code_and_reason().unwrap().0, 1009, "{close:?}");
    let (mut plain, _) = connect(server.address, "/ws", "");
    plain.write(&masked_frame(
        0x80 | 0x40 | OPCODE_TEXT,
        &deflate(b"{}", 1),
        MASK,
    ));
    let close = plain.read_frame();
    assert_eq!(close.close_code_and_reason().unwrap().0, 1002, "{close:?}");
}
