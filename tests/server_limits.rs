//! Proves the connection table's limit is a policy, not a failure: while the table is full,
//! new clients are answered 503 with `Retry-After` at once and closed (counted in `/metrics`
//! and logged), and accepting resumes as slots free.

mod support;

use std::io::{ErrorKind, Read};

use support::server::{HttpResponse, RawClient, ServerProcess, connect_websocket, upgrade_request};
use tungstenite::Message;

const TABLE_CONNECTIONS_MAX: usize = 8;
/// Attempts a client makes, honouring the 503's Retry-After in spirit, while the server frees
/// the slot a test just closed (the slot frees when the server's close completes, a moment
/// after the client sees the connection end).
const RETRY_ATTEMPTS_MAX: usize = 1000;

/// Checks a refusal: 503, Retry-After, Connection: close, and a body of the stated length.
fn assert_refusal(response: &HttpResponse) {
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.header("retry-after"), Some("1"), "{response:?}");
    assert_eq!(response.header("connection"), Some("close"), "{response:?}");
    assert!(!response.body.is_empty(), "{response:?}");
}

/// Reads the end of a refused connection: EOF, or a reset when the server closed with the
/// client's request unread (the response came first either way).
fn assert_closed(client: &mut RawClient) {
    let mut byte = [0u8; 1];
    match client.stream.read(&mut byte) {
        Ok(0) => {}
        Err(error) if error.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the refused connection to end, got {other:?}"),
    }
}

/// Sends `request` on new connections until the answer is not a 503 refusal, and returns the
/// client with that answer read, and how many refusals came first.
fn retry_until_served(server: &ServerProcess, request: &str) -> (RawClient, HttpResponse, usize) {
    for refusals in 0..RETRY_ATTEMPTS_MAX {
        let mut client = RawClient::connect(server.address);
        client.write(request.as_bytes());
        let response = client.read_response();
        if response.status != 503 {
            return (client, response, refusals);
        }
        std::thread::yield_now();
    }
    panic!("still refused after {RETRY_ATTEMPTS_MAX} attempts");
}

/// The value of one sample line of the metrics text.
fn sample(text: &str, series: &str) -> u64 {
    let line = text
        .lines()
        .find(|line| line.starts_with(series))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Proves a full table answers the next clients 503 at once, whether they sent their request
/// or not, counts them in /metrics, logs it, and serves new clients again once slots free.
#[test]
fn full_table_answers_503_then_resumes() {
    let limit = TABLE_CONNECTIONS_MAX.to_string();
    let mut server =
        ServerProcess::start(&["--shards", "1", "--connections-per-shard-max", &limit]);
    let mut clients: Vec<_> = (0..TABLE_CONNECTIONS_MAX)
        .map(|_| connect_websocket(server.address, "/ws"))
        .collect();
    for client in &mut clients {
        client.send(Message::Ping(b"in".to_vec().into())).unwrap();
        assert!(matches!(client.read().unwrap(), Message::Pong(_)));
    }
    // Past the limit: a client that sends its upgrade, one that sends a plain request and one
    // that sends nothing are each answered 503 and closed, none served.
    let mut refused_count = 0;
    for request in [
        upgrade_request("/ws"),
        "GET /health HTTP/1.1\r\nHost: a\r\n\r\n".into(),
    ] {
        let mut client = RawClient::connect(server.address);
        client.write(request.as_bytes());
        assert_refusal(&client.read_response());
        assert_closed(&mut client);
        refused_count += 1;
    }
    let mut silent = RawClient::connect(server.address);
    assert_refusal(&silent.read_response());
    silent.expect_eof();
    refused_count += 1;

    // One slot frees: a new client is served (after refusals while the close completes).
    clients.pop().unwrap().close(None).unwrap();
    let (mut late, response, refusals) = retry_until_served(&server, &upgrade_request("/ws"));
    assert_eq!(response.status, 101, "{response:?}");
    refused_count += refusals;
    late.send_frame(support::server::OPCODE_PING, true, b"late");
    assert_eq!(late.read_frame().payload, b"late");

    // Another frees for the metrics request, which reports every refusal this test read.
    clients.pop().unwrap().close(None).unwrap();
    let metrics = "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let (client, response, refusals) = retry_until_served(&server, metrics);
    assert_eq!(response.status, 200, "{response:?}");
    refused_count += refusals;
    let text = String::from_utf8(response.body).unwrap();
    let answered = "ringcast_connections_refused_total{shard=\"0\",reason=\"answered_503\"}";
    assert_eq!(sample(&text, answered), refused_count as u64, "{text}");

    drop((clients, late, client));
    assert_eq!(server.terminate().code(), Some(0));
    let log = server.stderr_text();
    assert!(
        log.contains("connection table full"),
        "the refusal was not logged: {log}"
    );
    assert!(
        log.contains(&format!("refusals_answered={refused_count}")),
        "the refusals were not counted: {log}"
    );
}
