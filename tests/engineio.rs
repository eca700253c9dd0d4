//! Engine.IO echo mode (`engineio_echo_path`) against the real `ringcast` binary: the official
//! engine.io-protocol test suite (vendored in tests/interop/engineio-protocol, its packages in
//! the interop lockfile), and raw cases of what the suite does not look at: binary data over an
//! upgraded WebSocket, the echo of an unpolled session held to its queue's limits, and the
//! echo path off by default.

mod support;

use std::process::Command;
use std::time::Duration;

use support::server::{OPCODE_BINARY, OPCODE_TEXT, RawClient, ServerProcess};
use support::tools::{self, INSTALL_COMMAND};

/// Far above the suite's own waits, so that it reports what it was waiting for.
const CLIENT_DEADLINE: Duration = Duration::from_secs(120);

const ECHO_PATH: &str = "/engine.io/";

/// The suite's heartbeat (its `PING_INTERVAL` and `PING_TIMEOUT`) and the echo path it tests.
fn suite_environment() -> [(&'static str, &'static str); 3] {
    [
        ("RINGCAST_PING_INTERVAL_MS", "300"),
        ("RINGCAST_PING_TIMEOUT_MS", "200"),
        ("RINGCAST_ENGINEIO_ECHO_PATH", ECHO_PATH),
    ]
}

/// Proves every case of the official Engine.IO protocol suite passes against ringcast's echo
/// mode with the suite's settings (ping every 300 ms, timeout 200 ms), one shard so that a
/// WebSocket's packets and a polling request sent after them arrive in that order.
#[test]
fn official_engineio_protocol_suite() {
    let mocha = tools::manifest_path("tests/interop/node_modules/mocha/bin/mocha");
    tools::require_installed(&mocha, "the npm package mocha");
    let directory = tools::fresh_directory("interop-engineio-protocol-suite");
    let server = ServerProcess::start_with_environment(&["--shards", "1"], &suite_environment());
    let mut command = Command::new("node");
    command
        .current_dir(tools::manifest_path("tests/interop/engineio-protocol"))
        .env("ENGINEIO_SUITE_URL", format!("http://{}", server.address))
        .arg(&mocha)
        .arg("test-suite.js")
        // The suite's own per-case limits are 2 s (5 s for the heartbeat); a loaded machine
        // gets more, which decides nothing about the protocol.
        .arg("--timeout")
        .arg("20000");
    let missing = format!("install Node.js 20 with npm, then run `{INSTALL_COMMAND}`");
    let run = tools::run_with_deadline(
        &mut command,
        "engineio_protocol_suite",
        &directory,
        CLIENT_DEADLINE,
        &missing,
    );
    assert!(
        run.status.success(),
        "the Engine.IO protocol suite failed with {}\n{}\n--- server log (end) ---\n{}",
        run.status,
        run.outputs(),
        server.log_tail()
    );
    let outputs = run.outputs();
    assert!(outputs.contains("24 passing"), "{outputs}");
    assert!(!outputs.contains("pending"), "{outputs}");
}

/// A long-polling request at `path` on a fresh connection, answered whole.
fn request(server: &ServerProcess, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut client = RawClient::connect(server.address);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    client.write(head.as_bytes());
    client.write(body);
    let response = client.read_response();
    (response.status, response.body)
}

/// Opens a long-polling echo session: its id.
fn open_polling(server: &ServerProcess) -> String {
    let (status, body) = request(server, "GET", "/engine.io/?EIO=4&transport=polling", b"");
    assert_eq!(status, 200);
    let open: serde_json::Value = serde_json::from_slice(&body[1..]).expect("the open packet");
    open["sid"].as_str().expect("a sid").to_owned()
}

/// Proves an echo session upgraded from polling to WebSocket (on a 2-shard server, so the
/// WebSocket may land on the other shard and be forwarded) sends text back as text and binary
/// back as binary, and that what was posted before the upgrade and not polled comes over the
/// WebSocket, in order.
#[test]
fn echo_survives_the_upgrade_with_binary_data() {
    let server = ServerProcess::start_with_environment(
        &["--shards", "2"],
        &[("RINGCAST_ENGINEIO_ECHO_PATH", ECHO_PATH)],
    );
    let sid = open_polling(&server);
    let polling = format!("/engine.io/?EIO=4&transport=polling&sid={sid}");
    let (status, body) = request(&server, "POST", &polling, b"4before\x1ebAQIDBA==");
    assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));

    let upgrade = format!("/engine.io/?EIO=4&transport=websocket&sid={sid}");
    let mut websocket = RawClient::upgraded(server.address, &upgrade);
    websocket.send_frame(OPCODE_TEXT, true, b"2probe");
    assert_eq!(websocket.read_text(), "3probe");
    websocket.send_frame(OPCODE_TEXT, true, b"5");
    assert_eq!(websocket.read_text(), "4before");
    let frame = websocket.read_frame();
    assert_eq!(
        (frame.opcode, frame.payload.as_slice()),
        (OPCODE_BINARY, &[1, 2, 3, 4][..])
    );

    websocket.send_frame(OPCODE_BINARY, true, &[9, 8, 7]);
    websocket.send_frame(OPCODE_TEXT, true, b"4after");
    let frame = websocket.read_frame();
    assert_eq!(
        (frame.opcode, frame.payload.as_slice()),
        (OPCODE_BINARY, &[9, 8, 7][..])
    );
    assert_eq!(websocket.read_text(), "4after");
}

/// Proves a long-polling echo session that is posted to and never polled is held to its
/// queue's limit (`outbound_queue_bytes_max`): once the echoes would pass it the session is
/// closed, and its sid is unknown from then on, while another session goes on echoing.
#[test]
fn an_unpolled_echo_session_pays_for_itself() {
    let server = ServerProcess::start_with_environment(
        &["--shards", "1"],
        &[
            ("RINGCAST_ENGINEIO_ECHO_PATH", ECHO_PATH),
            ("RINGCAST_OUTBOUND_QUEUE_BYTES_MAX", "65536"),
            ("RINGCAST_MESSAGE_BYTES_MAX", "65536"),
        ],
    );
    let sid = open_polling(&server);
    let polling = format!("/engine.io/?EIO=4&transport=polling&sid={sid}");
    let mut body = vec![b'x'; 16_000];
    body[0] = b'4';
    let mut closed_after = None;
    for post in 0..16 {
        let (status, _) = request(&server, "POST", &polling, &body);
        if status != 200 {
            assert_eq!(status, 400, "an unknown sid once closed");
            closed_after = Some(post);
            break;
        }
    }
    // Four echoes of 16,000 bytes fit 64 KiB, the fifth does not and closes the session; the
    // next POST finds it gone.
    assert_eq!(closed_after, Some(5));

    let other = open_polling(&server);
    let polling = format!("/engine.io/?EIO=4&transport=polling&sid={other}");
    let (status, _) = request(&server, "POST", &polling, b"4still");
    assert_eq!(status, 200);
    let (status, body) = request(&server, "GET", &polling, b"");
    assert_eq!((status, body.as_slice()), (200, &b"4still"[..]));
}

/// Proves the echo path is not served unless configured: `/engine.io/` is then an ordinary
/// path (404), and the Socket.IO path is unchanged.
#[test]
fn the_echo_path_is_off_by_default() {
    let server = ServerProcess::start(&["--shards", "1"]);
    let (status, _) = request(&server, "GET", "/engine.io/?EIO=4&transport=polling", b"");
    assert_eq!(status, 404);
    let (status, body) = request(&server, "GET", "/socket.io/?EIO=4&transport=polling", b"");
    assert_eq!(status, 200);
    assert!(body.starts_with(b"0{\"sid\""));
}

/// Proves a session is known only at the path that opened it, as if the echo path and the
/// Socket.IO path were two servers: an echo session's id at `/socket.io/` and a Socket.IO
/// session's id at `/engine.io/` are refused, polling and WebSocket alike, with 400
/// `Session ID unknown`, while each still works at its own path.
#[test]
fn a_session_is_unknown_at_the_other_path() {
    let server = ServerProcess::start_with_environment(
        &["--shards", "2"],
        &[("RINGCAST_ENGINEIO_ECHO_PATH", ECHO_PATH)],
    );
    let echo_sid = open_polling(&server);
    let (status, body) = request(&server, "GET", "/socket.io/?EIO=4&transport=polling", b"");
    assert_eq!(status, 200);
    let open: serde_json::Value = serde_json::from_slice(&body[1..]).expect("the open packet");
    let socketio_sid = open["sid"].as_str().expect("a sid").to_owned();
    let unknown = serde_json::json!({"code": 1, "message": "Session ID unknown"});
    for (path, sid) in [("/socket.io/", &echo_sid), ("/engine.io/", &socketio_sid)] {
        let polling = format!("{path}?EIO=4&transport=polling&sid={sid}");
        for method in ["GET", "POST"] {
            let (status, body) = request(&server, method, &polling, b"4x");
            assert_eq!(status, 400, "{method} {polling}");
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body, unknown, "{method} {polling}");
        }
        let upgrade = format!("{path}?EIO=4&transport=websocket&sid={sid}");
        let mut client = RawClient::connect(server.address);
        client.write(support::server::upgrade_request(&upgrade).as_bytes());
        let response = client.read_response();
        assert_eq!(response.status, 400, "{upgrade}: {response:?}");
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body, unknown, "{upgrade}");
    }
    let polling = format!("/engine.io/?EIO=4&transport=polling&sid={echo_sid}");
    let (status, body) = request(&server, "POST", &polling, b"4still");
    assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));
    let (status, body) = request(&server, "GET", &polling, b"");
    assert_eq!((status, body.as_slice()), (200, &b"4still"[..]));
    let polling = format!("/socket.io/?EIO=4&transport=polling&sid={socketio_sid}");
    let (status, body) = request(&server, "POST", &polling, b"40");
    assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));
}
