//! Proves parser bombs in published data are refused end to end, over the WebSocket and over
//! HTTP, and that nothing of them is numbered, delivered or kept for replay.

mod support;

use serde_json::{Value, json};
use support::server::{OPCODE_TEXT, RawClient, ServerProcess};

/// The three bombs of issue 10: nesting 100,000 deep, a 60,000-digit number, and an unpaired
/// surrogate escape, each with the reason it is refused for.
fn bombs() -> [(String, &'static str); 3] {
    [
        (
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            "data is nested deeper than publish_json_depth_max",
        ),
        (
            "7".repeat(60_000),
            "data has a number longer than publish_json_number_bytes_max",
        ),
        (
            r#"{"px":1,"note":"\ud800"}"#.to_owned(),
            "data has an unpaired UTF-16 surrogate escape",
        ),
    ]
}

/// The next text frame as JSON.
fn read_json(client: &mut RawClient) -> Value {
    let frame = client.read_frame();
    assert_eq!(frame.opcode, OPCODE_TEXT, "{frame:?}");
    serde_json::from_slice(&frame.payload).unwrap()
}

fn send_json(client: &mut RawClient, text: &str) {
    client.send_frame(OPCODE_TEXT, true, text.as_bytes());
}

fn post(client: &mut RawClient, path: &str, body: &str) -> (u16, Value) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: ringcast\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write(request.as_bytes());
    let response = client.read_response();
    let body = serde_json::from_slice(&response.body).unwrap();
    (response.status, body)
}

/// Proves each bomb gets an error reply over the WebSocket and a 400 with a JSON reason over
/// HTTP (single and batch), the connection survives, and the subscriber's first message is the
/// valid publish that followed, seq 1: no bomb was numbered, delivered or kept.
#[test]
fn parser_bombs_are_refused_and_never_delivered() {
    // Requests large enough to carry the bombs whole, so that the bound refuses them rather
    // than the request size.
    let server = ServerProcess::start_with_environment(
        &["--shards", "2"],
        &[("RINGCAST_REQUEST_BYTES_MAX", "1048576")],
    );
    let mut subscriber = RawClient::upgraded(server.address, "/ws");
    send_json(&mut subscriber, r#"{"op":"subscribe","topics":["T"]}"#);
    assert_eq!(read_json(&mut subscriber)["op"], "subscribed");
    let mut publisher = RawClient::upgraded(server.address, "/ws");
    let mut http = RawClient::connect(server.address);
    for (data, reason) in bombs() {
        send_json(
            &mut publisher,
            &format!(r#"{{"op":"publish","topic":"T","data":{data}}}"#),
        );
        let reply = read_json(&mut publisher);
        assert_eq!(reply, json!({"op": "error", "reason": reason}));
        let (status, body) = post(&mut http, "/publish/T", &data);
        assert_eq!((status, body), (400, json!({ "error": reason })));
        let batch = format!(r#"[{{"topic":"T","data":1}},{{"topic":"T","data":{data}}}]"#);
        let (status, body) = post(&mut http, "/publish", &batch);
        let item_reason = format!("item 1: {reason}");
        assert_eq!((status, body), (400, json!({ "error": item_reason })));
    }
    send_json(
        &mut publisher,
        r#"{"op":"publish","topic":"T","data":{"px":1.5,"s":"\ud83d\ude00"}}"#,
    );
    let message = read_json(&mut subscriber);
    assert_eq!(
        message,
        json!({"topic": "T", "seq": 1, "data": {"px": 1.5, "s": "\u{1f600}"}})
    );
    // Replay from the start holds the one valid message only.
    let mut late = RawClient::upgraded(server.address, "/ws");
    send_json(
        &mut late,
        r#"{"op":"subscribe","topics":["T"],"since":{"T":0}}"#,
    );
    assert_eq!(read_json(&mut late)["op"], "subscribed");
    assert_eq!(read_json(&mut late)["seq"], 1);
}
