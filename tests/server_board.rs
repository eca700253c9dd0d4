//! What a browser meets at the server's address: the board and the client served at `/`, a
//! plain `GET /ws` answered 426 with a hint, WebSocket refused with 403 when turned off, and
//! `{"op":"ping"}` answered `{"op":"pong"}` (browsers cannot see WebSocket pings).

mod support;

use support::server::{
    HttpClient, OPCODE_TEXT, RawClient, ServerProcess, client_frame, upgrade_request,
};

/// Proves `/`, `/board.js`, `/board-socketio.js`, `/ringcast.js` and `/symbols.txt` are served with their types,
/// and that `board_enabled = false` turns them off.
#[test]
fn board_and_client_are_served() {
    let server = ServerProcess::start(&["--shards", "1"]);
    let mut client = HttpClient::connect(server.address);
    let page = client.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(String::from_utf8_lossy(&page.body).contains("/board.js"));
    for path in ["/board.js", "/board-socketio.js", "/ringcast.js"] {
        let script = client.get(path);
        assert_eq!(script.status, 200, "{path}");
        assert_eq!(
            script.header("content-type"),
            Some("text/javascript; charset=utf-8")
        );
    }
    let symbols = client.get("/symbols.txt");
    assert!(String::from_utf8_lossy(&symbols.body).contains(" MSFT "));
    let totals = client.get("/metrics/totals");
    assert_eq!(totals.header("content-type"), Some("application/json"));
    let totals: serde_json::Value = serde_json::from_slice(&totals.body).unwrap();
    assert_eq!(totals["shards"], 1);
    assert!(totals["http_requests"].as_u64().unwrap() >= 3, "{totals}");
    let health = client.get("/health");
    assert_eq!(
        health.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let off = ServerProcess::start_with_environment(
        &["--shards", "1"],
        &[("RINGCAST_BOARD_ENABLED", "false")],
    );
    assert_eq!(HttpClient::connect(off.address).get("/").status, 404);
}

/// Proves a plain `GET /ws` (a browser's address bar) gets 426 Upgrade Required with the
/// headers RFC 9110 asks for and a hint, not 404.
#[test]
fn plain_get_of_the_websocket_path_is_426() {
    let server = ServerProcess::start(&["--shards", "1"]);
    let response = HttpClient::connect(server.address).get("/ws");
    assert_eq!(response.status, 426);
    assert_eq!(response.header("upgrade"), Some("websocket"));
    let body = String::from_utf8_lossy(&response.body);
    assert!(body.contains("open /"), "{body}");
}

/// Proves `websocket_enabled = false` refuses upgrades with 403 while SSE still serves.
#[test]
fn websocket_can_be_turned_off() {
    let server = ServerProcess::start_with_environment(
        &["--shards", "1"],
        &[("RINGCAST_WEBSOCKET_ENABLED", "false")],
    );
    let mut client = RawClient::connect(server.address);
    client.write(upgrade_request("/ws").as_bytes());
    let response = client.read_response();
    assert_eq!(response.status, 403);
    assert!(String::from_utf8_lossy(&response.body).contains("/sse"));
    let mut reader = RawClient::connect(server.address);
    reader.write(b"GET /sse?topics=AAPL HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(reader.read_response_head().status, 200);
}

/// Proves `{"op":"ping"}` is answered `{"op":"pong"}` on the connection that asked.
#[test]
fn ping_request_is_answered_pong() {
    let server = ServerProcess::start(&["--shards", "1"]);
    let mut client = RawClient::upgraded(server.address, "/ws");
    client.write(&client_frame(OPCODE_TEXT, true, br#"{"op":"ping"}"#));
    let frame = client.read_frame();
    assert_eq!(frame.opcode, OPCODE_TEXT);
    assert_eq!(frame.payload, br#"{"op":"pong"}"#);
}
