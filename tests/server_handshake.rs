//! The HTTP side of the real server: the WebSocket upgrade and each way it is refused, and the
//! plain endpoints served on the same port.

mod support;

use support::server::{
    OPCODE_PING, OPCODE_PONG, RawClient, SAMPLE_KEY, ServerProcess, connect_websocket,
};
use tungstenite::{Bytes, Message};

/// Sends `request` on a fresh connection and returns the response, after checking that the
/// server then closes the connection (every refused upgrade is answered once, then closed).
fn refused(server: &ServerProcess, request: &str) -> support::server::HttpResponse {
    let mut client = RawClient::connect(server.address);
    client.write(request.as_bytes());
    let response = client.read_response();
    // A 426 says `Connection: Upgrade, close`; every refusal lists `close`.
    let connection = response.header("connection").unwrap_or_default();
    assert!(
        connection
            .split(',')
            .any(|token| token.trim().eq_ignore_ascii_case("close")),
        "{response:?}"
    );
    client.expect_eof();
    response
}

/// Proves tungstenite upgrades at /ws, Sec-WebSocket-Accept checked, and then exchanges frames.
#[test]
fn tungstenite_upgrades_at_ws() {
    // tungstenite compares the accept value with its own key's and fails the handshake if not.
    let server = ServerProcess::start(&[]);
    let mut socket = connect_websocket(server.address, "/ws");
    socket
        .send(Message::Ping(Bytes::from_static(b"hello")))
        .unwrap();
    assert_eq!(
        socket.read().unwrap(),
        Message::Pong(Bytes::from_static(b"hello"))
    );
}

/// Proves the accept value is the one RFC 6455 §1.3 derives from its sample key, library-free.
#[test]
fn upgrade_answers_with_the_rfc_accept_value() {
    let server = ServerProcess::start(&[]);
    let mut client = RawClient::upgraded(server.address, "/ws");
    client.send_frame(OPCODE_PING, true, b"raw");
    let frame = client.read_frame();
    assert_eq!(
        (frame.opcode, frame.payload),
        (OPCODE_PONG, b"raw".to_vec())
    );
}

/// Proves an upgrade without Sec-WebSocket-Key is refused with 400.
#[test]
fn missing_key_is_400() {
    let server = ServerProcess::start(&[]);
    let request = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(refused(&server, request).status, 400);
}

/// Proves an unsupported Sec-WebSocket-Version is refused with 426 naming version 13.
#[test]
fn bad_version_is_426_naming_13() {
    let server = ServerProcess::start(&[]);
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 8\r\n\r\n"
    );
    let response = refused(&server, &request);
    assert_eq!(response.status, 426);
    assert_eq!(
        response.header("sec-websocket-version"),
        Some("13"),
        "{response:?}"
    );
}

/// Proves an upgrade with a method other than GET is refused with 405.
#[test]
fn post_upgrade_is_405() {
    let server = ServerProcess::start(&[]);
    let request = format!(
        "POST /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    assert_eq!(refused(&server, &request).status, 405);
}

/// Proves an HTTP/1.0 upgrade is refused with 400 (RFC 6455 needs HTTP/1.1).
#[test]
fn http_1_0_upgrade_is_400() {
    let server = ServerProcess::start(&[]);
    let request = format!(
        "GET /ws HTTP/1.0\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    assert_eq!(refused(&server, &request).status, 400);
}

/// Proves a request head over the 8 KiB limit is refused with 431.
#[test]
fn header_block_over_8_kib_is_431() {
    let server = ServerProcess::start(&[]);
    let filler = "a".repeat(9 * 1024);
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: {filler}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    assert_eq!(refused(&server, &request).status, 431);
}

/// Proves that without --echo a WebSocket opens only at /ws: elsewhere the upgrade gets 404.
#[test]
fn upgrade_outside_ws_is_404_without_echo() {
    let server = ServerProcess::start(&[]);
    let request = support::server::upgrade_request("/chat");
    assert_eq!(refused(&server, &request).status, 404);
}

/// Proves /health answers two pipelined requests with two 200 "ok", then a third on keep-alive.
#[test]
fn health_keeps_alive_and_pipelines() {
    let server = ServerProcess::start(&[]);
    let mut client = RawClient::connect(server.address);
    let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    client.write(request.repeat(2).as_bytes());
    let check = |response: support::server::HttpResponse| {
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body, b"ok\n");
        assert_eq!(
            response.header("connection").map(str::to_ascii_lowercase),
            Some("keep-alive".into())
        );
    };
    check(client.read_response());
    check(client.read_response());
    client.write(request.as_bytes());
    check(client.read_response());
}

/// Proves an unknown path is answered with 404.
#[test]
fn unknown_path_is_404() {
    let server = ServerProcess::start(&[]);
    let mut client = RawClient::connect(server.address);
    client.write(b"GET /nothing-here HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 404, "{response:?}");
}

/// Proves the real server holds every request to RFC 9112's head rules, upgrades and plain
/// requests alike: no Host in HTTP/1.1 or a bare LF is 400, an expectation other than
/// 100-continue is 417 Expectation Failed, each answered and closed; HTTP/1.0 may omit Host.
#[test]
fn heads_breaking_rfc_9112_are_refused() {
    let server = ServerProcess::start(&[]);
    let upgrade = format!(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\n\
         Sec-WebSocket-Version: 13\r\n"
    );
    let cases = [
        ("GET /health HTTP/1.1\r\n\r\n".to_owned(), 400),
        (format!("GET /ws HTTP/1.1\r\n{upgrade}\r\n"), 400),
        ("GET /health HTTP/1.1\nHost: 127.0.0.1\n\n".to_owned(), 400),
        (
            format!("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\n{upgrade}\r\n"),
            400,
        ),
        (
            "POST /publish/A HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Expect: 200-ok\r\nContent-Length: 1\r\n\r\n1"
                .to_owned(),
            417,
        ),
        (
            format!("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: websocket\r\n{upgrade}\r\n"),
            417,
        ),
    ];
    for (request, status) in cases {
        let response = refused(&server, &request);
        assert_eq!(response.status, status, "{request:?}: {response:?}");
    }
    let mut client = RawClient::connect(server.address);
    client.write(b"GET /health HTTP/1.0\r\n\r\n");
    let response = client.read_response();
    assert_eq!((response.status, response.body), (200, b"ok\n".to_vec()));
}
