//! The real server's timers and process life: idle pings and the pong timeout, the handshake
//! timeout against slowloris clients, draining on SIGTERM, and refusing a busy port.
//!
//! Timeouts are set to a few hundred milliseconds so that the tests are quick; every assertion
//! is about what the server does, never about how fast.

mod support;

use std::io::{ErrorKind, Write};
use std::time::Duration;

use support::server::{
    OPCODE_CLOSE, OPCODE_PING, RawClient, ServerProcess, connect_websocket, describe_exit,
    run_server_to_exit,
};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Bytes, Message};

const IDLE_TIMEOUT_MS: &str = "300";
const PONG_TIMEOUT_MS: &str = "300";
const HANDSHAKE_TIMEOUT_MS: &str = "300";

fn start_with_short_idle() -> ServerProcess {
    ServerProcess::start_with_environment(
        &["--idle-timeout-ms", IDLE_TIMEOUT_MS],
        &[("RINGCAST_PONG_TIMEOUT_MS", PONG_TIMEOUT_MS)],
    )
}

/// Proves a quiet client that answers every ping is pinged again and again but never closed.
#[test]
fn client_answering_pings_stays_connected() {
    // tungstenite sends its pong on the next read; three pings mean the client outlived several
    // pong timeouts.
    const PINGS_EXPECTED: usize = 3;
    // Each read waits at most READ_WAIT; a ping is due every idle + pong period, so a handful
    // of reads per ping is plenty and the loop is bounded.
    const READS_MAX: usize = 20;
    let server = start_with_short_idle();
    let mut socket = connect_websocket(server.address, "/ws");
    let mut pings = 0;
    for _ in 0..READS_MAX {
        match socket.read().expect("the connection stays open") {
            Message::Ping(_) => pings += 1,
            other => panic!("expected only pings from a quiet connection, got {other:?}"),
        }
        if pings == PINGS_EXPECTED {
            break;
        }
    }
    assert_eq!(pings, PINGS_EXPECTED);
    // Still served: a ping of ours is answered (server pings may come first).
    socket
        .send(Message::Ping(Bytes::from_static(b"alive")))
        .unwrap();
    let answered = (0..READS_MAX).any(|_| match socket.read().unwrap() {
        Message::Pong(payload) => payload == b"alive"[..],
        Message::Ping(_) => false,
        other => panic!("unexpected {other:?}"),
    });
    assert!(answered);
}

/// Proves a client that never answers gets a ping, then a close with 1001, then EOF.
#[test]
fn silent_client_is_pinged_then_closed_with_1001() {
    let server = start_with_short_idle();
    let mut client = RawClient::upgraded(server.address, "/ws");
    let ping = client.read_frame();
    assert_eq!(ping.opcode, OPCODE_PING, "{ping:?}");
    let close = client.read_frame();
    assert_eq!(close.opcode, OPCODE_CLOSE, "{close:?}");
    let (code, reason) = close.close_code_and_reason().expect("a close code");
    assert_eq!((code, reason.as_str()), (1001, "ping timeout"));
    client.expect_eof();
}

/// Proves a request head left incomplete past the handshake timeout gets 408, then EOF.
#[test]
fn half_a_request_head_gets_408() {
    let server = ServerProcess::start(&["--handshake-timeout-ms", HANDSHAKE_TIMEOUT_MS]);
    let mut client = RawClient::connect(server.address);
    client.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: webs");
    let response = client.read_response();
    assert_eq!(response.status, 408, "{response:?}");
    client.expect_eof();
}

/// Proves a client dribbling one byte every 100 ms is cut off with 408, then EOF.
#[test]
fn dribbling_client_is_cut_off_with_408() {
    // The handshake deadline runs from the connection's start, not from its last byte, so a
    // client that never stops sending is cut off all the same.
    const BYTE_INTERVAL: Duration = Duration::from_millis(100);
    // 300 bytes at 100 ms each is a hundred times the handshake timeout: the bound of the loop.
    let request_prefix = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    let bytes: Vec<u8> = request_prefix
        .bytes()
        .chain(std::iter::repeat_n(b'a', 300))
        .collect();
    let server = ServerProcess::start(&["--handshake-timeout-ms", HANDSHAKE_TIMEOUT_MS]);
    let mut client = RawClient::connect(server.address);
    client.stream.set_read_timeout(Some(BYTE_INTERVAL)).unwrap();
    let mut cut_off = false;
    for byte in &bytes {
        // A failed write means the server has closed already; its answer is read below.
        if client.stream.write_all(std::slice::from_ref(byte)).is_err() {
            cut_off = true;
            break;
        }
        // Waiting for an answer doubles as the pause between bytes.
        match client.stream.peek(&mut [0u8; 1]) {
            Ok(_) => {
                cut_off = true;
                break;
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) => panic!("waiting for the server: {error}"),
        }
    }
    assert!(cut_off, "the server never cut the client off");
    client
        .stream
        .set_read_timeout(Some(support::server::READ_WAIT))
        .unwrap();
    let response = client.read_response();
    assert_eq!(response.status, 408, "{response:?}");
    client.expect_eof();
}

/// Proves SIGTERM closes all 100 clients with 1001 "server shutting down", then exits 0.
#[test]
fn sigterm_closes_every_client_with_1001_and_exits_0() {
    const CLIENT_COUNT: usize = 100;
    let mut server = ServerProcess::start(&["--shards", "2"]);
    server.wait_for_signal_handlers();
    let mut sockets: Vec<_> = (0..CLIENT_COUNT)
        .map(|_| connect_websocket(server.address, "/ws"))
        .collect();
    server.signal(libc::SIGTERM);
    for (index, socket) in sockets.iter_mut().enumerate() {
        match socket.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(frame.code, CloseCode::Away, "client {index}");
                assert_eq!(
                    frame.reason.as_str(),
                    "server shutting down",
                    "client {index}"
                );
            }
            other => panic!("client {index}: expected close 1001, got {other:?}"),
        }
    }
    // Reading on sends tungstenite's close reply; the server then ends each connection.
    for (index, socket) in sockets.iter_mut().enumerate() {
        match socket.read() {
            Err(tungstenite::Error::ConnectionClosed) => {}
            other => panic!("client {index}: expected the end of the connection, got {other:?}"),
        }
    }
    let status = server.wait_for_exit(support::server::EXIT_WAIT);
    assert_eq!(status.code(), Some(0), "{}", describe_exit(status));
}

/// Proves SIGTERM with no clients exits 0 too (through `terminate`), and SIGINT does the same.
#[test]
fn sigterm_and_sigint_exit_0_when_idle() {
    let mut server = ServerProcess::start(&[]);
    server.wait_for_signal_handlers();
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "{}", describe_exit(status));
    let mut server = ServerProcess::start(&[]);
    server.wait_for_signal_handlers();
    server.signal(libc::SIGINT);
    let status = server.wait_for_exit(support::server::EXIT_WAIT);
    assert_eq!(status.code(), Some(0), "{}", describe_exit(status));
}

/// Proves a SIGTERM sent as soon as the address line is printed still drains and exits 0.
#[test]
fn sigterm_right_after_the_address_line_exits_0() {
    // A supervisor that starts and stops the server relies on this; repeated to catch the race.
    const ATTEMPTS: usize = 10;
    for attempt in 0..ATTEMPTS {
        let mut server = ServerProcess::start(&[]);
        let status = server.terminate();
        assert_eq!(
            status.code(),
            Some(0),
            "attempt {attempt}: {}",
            describe_exit(status)
        );
    }
}

/// Proves a second server on a busy port fails, saying "is not free", and the first still serves.
#[test]
fn second_server_on_a_busy_port_fails() {
    let server = ServerProcess::start(&[]);
    let listen = server.address.to_string();
    let (status, log) = run_server_to_exit(&["--listen", &listen]);
    assert!(!status.success(), "{}", describe_exit(status));
    assert!(log.contains("is not free"), "server log:\n{log}");
    let mut client = RawClient::connect(server.address);
    client.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let response = client.read_response();
    assert_eq!((response.status, response.body), (200, b"ok\n".to_vec()));
    client.expect_eof();
}

/// Whether any socket on loopback port `port` is in LISTEN, from /proc/net/tcp (local address
/// `0100007F:PORT`, state `0A`).
fn listening_on(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("reading /proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A")
    })
}

/// Proves a server stopped with SIGTERM while it holds a WebSocket subscriber, a held poll and
/// an SSE stream leaves nothing listening on its port once it has exited, and a server started
/// again at once on the same port (a restart) starts. The rings' file tables held the
/// listeners until the kernel tore the rings down, after the process had exited.
#[test]
fn a_server_restarted_at_once_on_the_same_port_starts() {
    const RESTARTS: usize = 3;
    let mut server = ServerProcess::start(&["--shards", "2"]);
    for restart in 0..RESTARTS {
        server.wait_for_signal_handlers();
        let mut subscriber = connect_websocket(server.address, "/ws");
        subscriber
            .send(Message::text(r#"{"op":"subscribe","topics":["A"]}"#))
            .expect("subscribing");
        let mut poll = RawClient::connect(server.address);
        poll.write(b"GET /poll?topics=A&wait_ms=20000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let mut stream = RawClient::connect(server.address);
        stream.write(b"GET /sse?topics=A HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let _ = subscriber.read(); // The subscribe's reply: the connection is in the broker.
        let status = server.terminate();
        assert_eq!(status.code(), Some(0), "{}", describe_exit(status));
        let port = server.address.port();
        assert!(
            !listening_on(port),
            "restart {restart}: port {port} still listening after the server exited"
        );
        let listen = server.address.to_string();
        server = ServerProcess::start(&["--shards", "2", "--listen", &listen]);
        assert_eq!(server.address.to_string(), listen, "restart {restart}");
    }
}
