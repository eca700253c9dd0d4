//! Socket.IO clients over WebSocket (`/socket.io/?EIO=4&transport=websocket`) against the real
//! `ringcast` binary: the Engine.IO open packet and heartbeat, the Socket.IO CONNECT and its
//! refusals, requests as events with acknowledgements, deliveries as `message` events, and the
//! Engine.IO handshake errors. The raw cases are written from the two protocol documents alone;
//! the last runs the real npm `socket.io-client` (`tests/interop/socketio_client.js`).

mod support;

use std::process::Command;
use std::time::Duration;

use support::server::{OPCODE_CLOSE, OPCODE_TEXT, RawClient, ServerProcess};
use support::tools::{self, INSTALL_COMMAND};

const WEBSOCKET_PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// How the event carrying a client's recovery offset starts.
const CURSOR_EVENT: &str = "42[\"cursor\",";

/// Far above the client's own waits, so that it reports what it was waiting for.
const CLIENT_DEADLINE: Duration = Duration::from_secs(120);

/// Reads text frames until one starts with `prefix`, answering the server's pings (`2`) on the
/// way as a client must, and passing over `cursor` events (recovery offsets); bounded.
fn read_text_starting(client: &mut RawClient, prefix: &str) -> String {
    for _ in 0..64 {
        let text = client.read_text();
        if text.starts_with(prefix) {
            return text;
        }
        if text.starts_with(CURSOR_EVENT) {
            continue;
        }
        assert_eq!(text, "2", "unexpected packet while waiting for {prefix:?}");
        send_text(client, "3");
    }
    panic!("no packet starting with {prefix:?} within 64 packets");
}

fn send_text(client: &mut RawClient, text: &str) {
    client.send_frame(OPCODE_TEXT, true, text.as_bytes());
}

/// A `message` event's argument and its last argument when it has a second one: the
/// client's recovery offset after that message (socket.io-client keeps the last string
/// argument of any event). `None` for any other packet.
fn message_event(text: &str) -> Option<(serde_json::Value, Option<String>)> {
    text.strip_prefix("42[\"message\",")?;
    let event: serde_json::Value = serde_json::from_str(&text[2..])
        .unwrap_or_else(|error| panic!("a message event is one JSON array ({error}): {text}"));
    match event.as_array().map(Vec::as_slice) {
        Some([_, message]) => Some((message.clone(), None)),
        Some([_, message, serde_json::Value::String(offset)]) => {
            Some((message.clone(), Some(offset.clone())))
        }
        _ => panic!("a message event has the message and at most an offset: {text}"),
    }
}

/// Upgrades at the Socket.IO path and reads the open packet.
fn opened(server: &ServerProcess) -> (RawClient, serde_json::Value) {
    let mut client = RawClient::upgraded(server.address, WEBSOCKET_PATH);
    let open = client.read_text();
    let json = open.strip_prefix('0').expect("the open packet first");
    (
        client,
        serde_json::from_str(json).expect("the open packet's JSON"),
    )
}

/// Proves the open packet names a session id and the configured heartbeat and payload limit,
/// with no upgrade offered over WebSocket, and that CONNECT to `/` is answered with the sid.
#[test]
fn open_packet_and_connect() {
    let server = ServerProcess::start_with_environment(
        &[],
        &[
            ("RINGCAST_PING_INTERVAL_MS", "60000"),
            ("RINGCAST_PING_TIMEOUT_MS", "30000"),
        ],
    );
    let (mut client, open) = opened(&server);
    let sid = open["sid"].as_str().expect("sid");
    assert_eq!(sid.len(), 22, "{open}");
    assert_eq!(open["upgrades"], serde_json::json!([]), "{open}");
    assert_eq!(open["pingInterval"], 60000, "{open}");
    assert_eq!(open["pingTimeout"], 30000, "{open}");
    assert_eq!(open["maxPayload"], 1_000_000, "{open}");
    send_text(&mut client, "40");
    let connected = client.read_text();
    let json: serde_json::Value =
        serde_json::from_str(connected.strip_prefix("40").expect("40{…}")).unwrap();
    assert!(
        json["sid"].as_str().is_some_and(|sid| sid.len() == 22),
        "{connected}"
    );
    // Two sessions never share an id.
    let (_other, other_open) = opened(&server);
    assert_ne!(other_open["sid"], open["sid"]);
}

/// Proves a namespace other than `/` is refused with CONNECT_ERROR while the connection stays
/// usable, and that a first packet other than CONNECT closes the connection (1002).
#[test]
fn other_namespaces_refused_and_connect_required_first() {
    let server = ServerProcess::start(&[]);
    let (mut client, _) = opened(&server);
    send_text(&mut client, "40/custom,");
    assert_eq!(
        client.read_text(),
        r#"44/custom,{"message":"Invalid namespace"}"#
    );
    send_text(&mut client, "40");
    assert!(client.read_text().starts_with("40{\"sid\":"));

    let (mut early, _) = opened(&server);
    send_text(&mut early, r#"42["subscribe",{"topics":["A"]}]"#);
    assert_eq!(early.read_close_code(), Some(1002));

    let (mut garbage, _) = opened(&server);
    send_text(&mut garbage, "9nonsense");
    assert_eq!(garbage.read_close_code(), Some(1002));
}

/// Proves subscribe, publish and delivery as events: the subscribe is acknowledged, the
/// `subscribed` event carries the `/ws` JSON, each publish is acknowledged with its seq, and
/// each delivery is `42["message",{"topic","seq","data"},"<offset>"]` in order (a client of one
/// topic finds its recovery offset in the message); a bad request is refused in its
/// acknowledgement and the session survives.
#[test]
fn subscribe_publish_and_deliveries_as_events() {
    let server = ServerProcess::start(&["--shards", "2"]);
    let (mut client, _) = opened(&server);
    send_text(&mut client, "40");
    read_text_starting(&mut client, "40{");
    send_text(&mut client, r#"421["subscribe",{"topics":["sio.raw"]}]"#);
    assert_eq!(read_text_starting(&mut client, "431"), "431[]");
    let subscribed = read_text_starting(&mut client, "42[\"subscribed\"");
    assert!(
        subscribed.starts_with(r#"42["subscribed",{"op":"subscribed","topic":"sio.raw","seq":"#),
        "{subscribed}"
    );
    let mut seqs = Vec::new();
    for index in 0..3 {
        let ack_id = 10 + index;
        send_text(
            &mut client,
            &format!(r#"42{ack_id}["publish",{{"topic":"sio.raw","data":{{"i":{index}}}}}]"#),
        );
    }
    let mut acks = 0;
    let mut messages = Vec::new();
    for _ in 0..64 {
        if acks == 3 && messages.len() == 3 {
            break;
        }
        let text = client.read_text();
        if let Some(rest) = text.strip_prefix("431") {
            let (id, body) = rest.split_at(1);
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(json[0]["op"], "published", "{text}");
            seqs.push((id.to_owned(), json[0]["seq"].as_u64().unwrap()));
            acks += 1;
        } else if let Some((message, offset)) = message_event(&text) {
            assert!(offset.is_some(), "a client of one topic: {text}");
            messages.push(message);
        } else if !text.starts_with(CURSOR_EVENT) {
            assert_eq!(text, "2", "unexpected packet {text}");
        }
    }
    assert_eq!((acks, messages.len()), (3, 3), "{seqs:?} {messages:?}");
    for (index, message) in messages.iter().enumerate() {
        assert_eq!(message["topic"], "sio.raw");
        assert_eq!(message["data"]["i"], index as u64);
        if index > 0 {
            let previous = messages[index - 1]["seq"].as_u64().unwrap();
            assert_eq!(message["seq"].as_u64().unwrap(), previous + 1);
        }
    }
    send_text(&mut client, r#"427["subscribe",{"topics":[""]}]"#);
    let refused = read_text_starting(&mut client, "437");
    assert!(
        refused.starts_with(r#"437[{"op":"error","reason":"#),
        "{refused}"
    );
    send_text(&mut client, r#"42["dance",{}]"#);
    let error = read_text_starting(&mut client, "42[\"error\"");
    assert!(error.contains("unknown op"), "{error}");
}

/// Proves the server-driven heartbeat: a ping `2` every `ping_interval_ms`, answered `3`
/// keeps the session; an unanswered ping closes it (1001) after `ping_timeout_ms`. The timeout
/// is seconds, far beyond a loaded machine's answer time, so only a missing pong closes.
#[test]
fn heartbeat_pings_and_closes_on_missing_pong() {
    let server = ServerProcess::start_with_environment(
        &[],
        &[
            ("RINGCAST_PING_INTERVAL_MS", "50"),
            ("RINGCAST_PING_TIMEOUT_MS", "3000"),
        ],
    );
    let (mut client, _) = opened(&server);
    send_text(&mut client, "40");
    read_text_starting(&mut client, "40{");
    for _ in 0..3 {
        assert_eq!(client.read_text(), "2");
        send_text(&mut client, "3");
    }
    assert_eq!(client.read_text(), "2");
    let frame = client.read_frame();
    assert_eq!(frame.opcode, OPCODE_CLOSE, "{frame:?}");
    assert_eq!(
        frame.close_code_and_reason().map(|(code, _)| code),
        Some(1001)
    );
}

/// Proves requests at the Socket.IO path that cannot start a session get the reference
/// server's 400 answers: another protocol revision, an unknown transport, a plain GET naming
/// WebSocket, an unknown sid. A WebSocket naming a sid that cannot be a session (of another
/// shape, naming a shard the server does not have, or naming this shard and a slot holding no
/// such session) gets 400 `Session ID unknown` before any 101, as from the reference server.
#[test]
fn engine_handshake_errors() {
    let server = ServerProcess::start(&["--shards", "1"]);
    let cases = [
        ("/socket.io/?EIO=3&transport=polling", 5),
        ("/socket.io/?EIO=4&transport=polling&sid=nonsense", 1),
        ("/socket.io/?EIO=4&transport=carrier-pigeon", 0),
        ("/socket.io/?EIO=4&transport=websocket", 3),
    ];
    for (path, code) in cases {
        let mut client = RawClient::connect(server.address);
        client.write(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes());
        let response = client.read_response();
        assert_eq!(response.status, 400, "{path}: {response:?}");
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["code"], code, "{path}: {body}");
    }
    // Another shape; shard 0, slot 0 (no session's slot); shard 0, the first session slot
    // (16,384 connections + 8 reserved slots), never opened; shard 7, which a 1-shard server
    // does not have.
    for sid in [
        "nonsense",
        "AAAAAAAAAAAAAAAAAAAAAA",
        "AAAEAIAAAAAAAAAAAAAAAA",
        "AHAAAAAAAAAAAAAAAAAAAA",
    ] {
        let path = format!("/socket.io/?EIO=4&transport=websocket&sid={sid}");
        assert_unknown_sid_refused(&server, &path);
    }
}

/// Asks to upgrade at `path` and expects 400 `{"code":1,"message":"Session ID unknown"}`.
fn assert_unknown_sid_refused(server: &ServerProcess, path: &str) {
    let mut client = RawClient::connect(server.address);
    client.write(support::server::upgrade_request(path).as_bytes());
    let response = client.read_response();
    assert_eq!(response.status, 400, "{path}: {response:?}");
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"code":1,"message":"Session ID unknown"}),
        "{path}"
    );
}

/// Opens a long-polling session with a handshake GET: its sid.
fn open_polling_session(server: &ServerProcess) -> String {
    let mut client = RawClient::connect(server.address);
    let handshake = "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n";
    client.write(handshake.as_bytes());
    let response = client.read_response();
    assert_eq!(response.status, 200);
    let open: serde_json::Value = serde_json::from_slice(&response.body[1..]).unwrap();
    open["sid"].as_str().unwrap().to_owned()
}

/// Proves a WebSocket naming a session that closed is refused with 400 before its 101 on the
/// session's shard, as one naming a session that never was: the shard forgets an id once its
/// session is freed.
#[test]
fn websocket_naming_a_closed_session_gets_400() {
    let server = ServerProcess::start(&["--shards", "1"]);
    let sid = open_polling_session(&server);
    // The client's close packet ends the session (no GET holds it: it is freed at once).
    let polling = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let mut poster = RawClient::connect(server.address);
    let post = format!("POST {polling} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n1");
    poster.write(post.as_bytes());
    assert_eq!(poster.read_response().status, 200);
    let path = format!("/socket.io/?EIO=4&transport=websocket&sid={sid}");
    assert_unknown_sid_refused(&server, &path);
}

/// Proves every shard refuses with 400, before any 101, a WebSocket naming a session that no
/// shard has, not only the shard the id names: on a 2-shard server with one long-polling
/// session open, its id with the random part changed and its id naming the other shard (the
/// same slot, free there) are refused on each of 16 connections of each, which land on both
/// shards; the session's own id is still upgraded.
#[test]
fn websocket_naming_no_shards_session_gets_400_on_every_shard() {
    let server = ServerProcess::start(&["--shards", "2"]);
    let sid = open_polling_session(&server);
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // The id's second character holds the shard's six low bits, its last the random part's.
    let with_character = |index: usize, flip: usize| {
        let mut bytes = sid.clone().into_bytes();
        let value = ALPHABET.find(bytes[index] as char).expect("base64url");
        bytes[index] = ALPHABET.as_bytes()[value ^ flip];
        String::from_utf8(bytes).unwrap()
    };
    let impostor = with_character(sid.len() - 1, 0b10_0000);
    let other_shard = with_character(1, 1);
    for _ in 0..16 {
        for id in [&impostor, &other_shard] {
            let path = format!("/socket.io/?EIO=4&transport=websocket&sid={id}");
            assert_unknown_sid_refused(&server, &path);
        }
    }
    let path = format!("/socket.io/?EIO=4&transport=websocket&sid={sid}");
    let mut upgraded = RawClient::upgraded(server.address, &path);
    send_text(&mut upgraded, "2probe");
    assert_eq!(upgraded.read_text(), "3probe");
}

/// Proves the real npm `socket.io-client` over WebSocket only: it connects, subscribes,
/// publishes with acknowledgements, receives every message in order, and is refused a
/// namespace other than `/`.
#[test]
fn socketio_client_over_websocket() {
    run_socketio_client("websocket");
}

/// Proves the same with the real client on long polling only, on a 2-shard server where its
/// requests land on either shard.
#[test]
fn socketio_client_over_polling() {
    run_socketio_client("polling");
}

/// Proves the same with the client's defaults: long polling first, then the upgrade to
/// WebSocket in the middle of the subscription and publishes, which must be over by the end.
#[test]
fn socketio_client_with_upgrade() {
    run_socketio_client("default");
}

fn run_socketio_client(transport: &str) {
    let package = tools::manifest_path("tests/interop/node_modules/socket.io-client/package.json");
    tools::require_installed(&package, "the npm package socket.io-client");
    let directory = tools::fresh_directory(&format!("interop-socketio-{transport}"));
    let server = ServerProcess::start(&["--shards", "2", "--log", "debug"]);
    let mut command = Command::new("node");
    command
        .arg(tools::manifest_path("tests/interop/socketio_client.js"))
        .arg(server.address.to_string())
        .arg(transport)
        .arg("200");
    let missing = format!("install Node.js 20 with npm, then run `{INSTALL_COMMAND}`");
    let run = tools::run_with_deadline(
        &mut command,
        "socketio_client",
        &directory,
        CLIENT_DEADLINE,
        &missing,
    );
    assert!(
        run.status.success(),
        "socketio_client.js ({transport}) failed with {}\n{}\n--- server log (end) ---\n{}",
        run.status,
        run.outputs(),
        server.log_tail()
    );
}

/// Proves connection-state recovery with the real npm `socket.io-client`: a subscriber behind
/// a proxy that is cut three times while another client publishes comes back each time with
/// its `pid` and offset, is told it recovered, and ends with every seq once and in order.
#[test]
fn socketio_client_recovers_with_no_gap() {
    run_socketio_recovery("websocket");
}

/// Proves the same recovery with the client's defaults: every connection, the first and each
/// reconnect, starts on long polling and upgrades, and a cut may fall before, during or after
/// an upgrade.
#[test]
fn socketio_client_recovers_with_upgrades() {
    run_socketio_recovery("default");
}

/// Proves the same recovery on long polling only: each cut ends the held GET (or the next
/// request), and the client's new session, opened by polling again, resumes the old one's
/// position.
#[test]
fn socketio_client_recovers_over_polling() {
    run_socketio_recovery("polling");
}

fn run_socketio_recovery(transport: &str) {
    let package = tools::manifest_path("tests/interop/node_modules/socket.io-client/package.json");
    tools::require_installed(&package, "the npm package socket.io-client");
    let directory = tools::fresh_directory(&format!("interop-socketio-recovery-{transport}"));
    let server = ServerProcess::start(&["--shards", "2", "--log", "debug"]);
    let mut command = Command::new("node");
    command
        .arg(tools::manifest_path("tests/interop/socketio_recovery.js"))
        .arg(server.address.to_string())
        .arg("300")
        .arg("3")
        .arg(transport);
    let missing = format!("install Node.js 20 with npm, then run `{INSTALL_COMMAND}`");
    let run = tools::run_with_deadline(
        &mut command,
        "socketio_recovery",
        &directory,
        CLIENT_DEADLINE,
        &missing,
    );
    assert!(
        run.status.success(),
        "socketio_recovery.js ({transport}) failed with {}\n{}\n--- server log (end) ---\n{}",
        run.status,
        run.outputs(),
        server.log_tail()
    );
}

/// Proves an offset is resumed on whatever connection brings it back: a raw client of one
/// topic subscribes and takes a message with its offset, then a new connection CONNECTs with
/// the `pid` and that offset and gets the same `pid`, `subscribed` and the messages published
/// meanwhile, from the seq after the one it had; a garbled offset recovers nothing (new pid).
#[test]
fn offset_resumes_on_a_new_connection() {
    let server = ServerProcess::start(&["--shards", "2"]);
    let (mut first, _) = opened(&server);
    send_text(&mut first, "40");
    let connected = read_text_starting(&mut first, "40{");
    let json: serde_json::Value = serde_json::from_str(&connected[2..]).unwrap();
    let pid = json["pid"].as_str().expect("a pid").to_owned();
    send_text(&mut first, r#"42["subscribe",{"topics":["sio.offset"]}]"#);
    read_text_starting(&mut first, "42[\"subscribed\"");
    send_text(
        &mut first,
        r#"421["publish",{"topic":"sio.offset","data":1}]"#,
    );
    let (message, offset) = (0..64)
        .find_map(|_| message_event(&first.read_text()))
        .expect("a message within 64 packets");
    let offset = offset.expect("a client of one topic finds its offset in the message");
    let last_seq = message["seq"].as_u64().expect("a seq");
    drop(first);

    let (mut publisher, _) = opened(&server);
    send_text(&mut publisher, "40");
    read_text_starting(&mut publisher, "40{");
    for index in 0..3 {
        let packet = format!(r#"42{index}["publish",{{"topic":"sio.offset","data":{index}}}]"#);
        send_text(&mut publisher, &packet);
        read_text_starting(&mut publisher, &format!("43{index}"));
    }

    let (mut second, _) = opened(&server);
    let auth = serde_json::json!({ "pid": pid, "offset": offset });
    send_text(&mut second, &format!("40{auth}"));
    let connected = read_text_starting(&mut second, "40{");
    let json: serde_json::Value = serde_json::from_str(&connected[2..]).unwrap();
    assert_eq!(json["pid"], pid.as_str(), "{connected}");
    let mut seqs = Vec::new();
    for _ in 0..64 {
        if seqs.len() == 3 {
            break;
        }
        if let Some((message, _)) = message_event(&second.read_text()) {
            seqs.push(message["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seqs, [last_seq + 1, last_seq + 2, last_seq + 3]);

    let (mut third, _) = opened(&server);
    let auth = serde_json::json!({ "pid": pid, "offset": "garbled.offset" });
    send_text(&mut third, &format!("40{auth}"));
    let connected = read_text_starting(&mut third, "40{");
    let json: serde_json::Value = serde_json::from_str(&connected[2..]).unwrap();
    assert_ne!(json["pid"], pid.as_str(), "{connected}");
}

/// Texts a subscriber reads until `unsubscribed`, in order, answering pings.
fn texts_until_unsubscribed(client: &mut RawClient) -> Vec<String> {
    let mut texts = Vec::new();
    for _ in 0..256 {
        let text = client.read_text();
        if text == "2" {
            send_text(client, "3");
            continue;
        }
        let done = text.starts_with("42[\"unsubscribed\"");
        texts.push(text);
        if done {
            return texts;
        }
    }
    panic!("no unsubscribed within 256 packets: {texts:?}");
}

/// A subscriber of `topics` on `server`, past their `subscribed` events and the `cursor` event
/// that follows a subscription's change at once, whatever the interval.
fn cursor_subscriber(server: &ServerProcess, topics: &[&str]) -> RawClient {
    let (mut subscriber, _) = opened(server);
    send_text(&mut subscriber, "40");
    read_text_starting(&mut subscriber, "40{");
    let request = serde_json::json!(["subscribe", { "topics": topics }]);
    send_text(&mut subscriber, &format!("42{request}"));
    for _ in topics {
        read_text_starting(&mut subscriber, "42[\"subscribed\"");
    }
    let cursor = subscriber.read_text();
    assert!(cursor.starts_with(CURSOR_EVENT), "{cursor}");
    subscriber
}

/// Publishes `count` messages to `topic`, each after the previous one's acknowledgement.
fn publish_acknowledged(server: &ServerProcess, topic: &str, count: usize) {
    let (mut publisher, _) = opened(server);
    send_text(&mut publisher, "40");
    read_text_starting(&mut publisher, "40{");
    for index in 0..count {
        let packet = format!(r#"42{index}["publish",{{"topic":"{topic}","data":{index}}}]"#);
        send_text(&mut publisher, &packet);
        read_text_starting(&mut publisher, &format!("43{index}"));
    }
}

/// The seqs of the next `count` packets, which must be `message` events, with their offsets.
fn read_messages(client: &mut RawClient, count: usize) -> Vec<(u64, Option<String>)> {
    (0..count)
        .map(|_| {
            let text = client.read_text();
            let (message, offset) = message_event(&text)
                .unwrap_or_else(|| panic!("only messages expected, got {text:?}"));
            (message["seq"].as_u64().expect("a seq"), offset)
        })
        .collect()
}

/// CONNECTs a new connection with `pid` and `offset`, checks the session was recovered (the
/// same `pid`) and returns the seq of the first message it is sent.
fn recover_first_seq(server: &ServerProcess, pid: &str, offset: &str) -> u64 {
    let (mut recovered, _) = opened(server);
    let auth = serde_json::json!({ "pid": pid, "offset": offset });
    send_text(&mut recovered, &format!("40{auth}"));
    let connected = read_text_starting(&mut recovered, "40{");
    let json: serde_json::Value = serde_json::from_str(&connected[2..]).unwrap();
    assert_eq!(json["pid"], pid, "{connected}");
    (0..64)
        .find_map(|_| message_event(&recovered.read_text()))
        .and_then(|(message, _)| message["seq"].as_u64())
        .expect("a message within 64 packets")
}

/// Proves `socketio_cursor_interval_ms` holds the `cursor` events that messages owe to a
/// client of several topics (whose messages carry no offset) while a subscription's change
/// still sends its own at once: with an interval of an hour, five messages published one
/// after another's acknowledgement come with no `cursor` event between them, and the
/// `unsubscribed` that follows brings one; with an interval of 50 ms, a `cursor` event comes
/// after the last message by itself (the deadline sends it) and resumes after it: a recovery
/// with it gets only what was published later.
#[test]
fn cursor_events_are_held_to_their_interval() {
    let server = ServerProcess::start_with_environment(
        &["--shards", "2"],
        &[("RINGCAST_SOCKETIO_CURSOR_INTERVAL_MS", "3600000")],
    );
    let mut subscriber = cursor_subscriber(&server, &["sio.interval", "sio.interval.other"]);
    publish_acknowledged(&server, "sio.interval", 5);
    let messages = read_messages(&mut subscriber, 5);
    assert_eq!(
        messages,
        (1..=5).map(|seq| (seq, None)).collect::<Vec<_>>(),
        "no offset in the messages of a client of two topics"
    );
    send_text(
        &mut subscriber,
        r#"42["unsubscribe",{"topics":["sio.interval"]}]"#,
    );
    let texts = texts_until_unsubscribed(&mut subscriber);
    assert_eq!(texts.len(), 1, "nothing but unsubscribed: {texts:?}");
    let cursor = subscriber.read_text();
    assert!(
        cursor.starts_with(CURSOR_EVENT),
        "a subscription's change sends it: {cursor}"
    );

    let server = ServerProcess::start_with_environment(
        &["--shards", "2"],
        &[("RINGCAST_SOCKETIO_CURSOR_INTERVAL_MS", "50")],
    );
    let (mut subscriber, _) = opened(&server);
    send_text(&mut subscriber, "40");
    let connected = read_text_starting(&mut subscriber, "40{");
    let json: serde_json::Value = serde_json::from_str(&connected[2..]).unwrap();
    let pid = json["pid"].as_str().expect("a pid").to_owned();
    send_text(
        &mut subscriber,
        r#"42["subscribe",{"topics":["sio.trailing","sio.trailing.other"]}]"#,
    );
    read_text_starting(&mut subscriber, "42[\"subscribed\"");
    read_text_starting(&mut subscriber, "42[\"subscribed\"");
    publish_acknowledged(&server, "sio.trailing", 5);
    let mut last_seq = 0;
    let mut offset = None;
    for _ in 0..64 {
        let text = subscriber.read_text();
        if let Some((message, _)) = message_event(&text) {
            last_seq = message["seq"].as_u64().unwrap();
            offset = None;
        } else if let Some(rest) = text.strip_prefix(CURSOR_EVENT) {
            let json: serde_json::Value =
                serde_json::from_str(rest.strip_suffix(']').unwrap()).unwrap();
            offset = Some(json.as_str().unwrap().to_owned());
            if last_seq == 5 {
                break;
            }
        }
    }
    let offset = offset.expect("a cursor event after the last message");
    drop(subscriber);
    publish_acknowledged(&server, "sio.trailing", 1);
    assert_eq!(
        recover_first_seq(&server, &pid, &offset),
        6,
        "only what came after the trailing cursor"
    );
}

/// Proves a client of one topic needs no `cursor` event after messages: each message carries
/// its offset as the event's last argument, even with `socketio_cursor_interval_ms` 0 (a
/// `cursor` event every turn in which a client of several topics gets one), so five messages
/// come with nothing between them, and a recovery from the third message's offset on a new
/// connection starts at the fourth.
#[test]
fn one_topic_clients_find_their_offset_in_each_message() {
    let server = ServerProcess::start_with_environment(
        &["--shards", "2"],
        &[("RINGCAST_SOCKETIO_CURSOR_INTERVAL_MS", "0")],
    );
    let (mut subscriber, _) = opened(&server);
    send_text(&mut subscriber, "40");
    let connected = read_text_starting(&mut subscriber, "40{");
    let json: serde_json::Value = serde_json::from_str(&connected[2..]).unwrap();
    let pid = json["pid"].as_str().expect("a pid").to_owned();
    send_text(&mut subscriber, r#"42["subscribe",{"topics":["sio.one"]}]"#);
    read_text_starting(&mut subscriber, "42[\"subscribed\"");
    let cursor = subscriber.read_text();
    assert!(cursor.starts_with(CURSOR_EVENT), "{cursor}");
    publish_acknowledged(&server, "sio.one", 5);
    let messages = read_messages(&mut subscriber, 5);
    let seqs: Vec<u64> = messages.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let offsets: Vec<&str> = messages
        .iter()
        .map(|(_, offset)| offset.as_deref().expect("an offset in each message"))
        .collect();
    assert!(
        offsets.windows(2).all(|pair| pair[0] != pair[1]),
        "{offsets:?}"
    );
    send_text(
        &mut subscriber,
        r#"42["unsubscribe",{"topics":["sio.one"]}]"#,
    );
    let texts = texts_until_unsubscribed(&mut subscriber);
    assert_eq!(texts.len(), 1, "no cursor event owed: {texts:?}");
    drop(subscriber);
    assert_eq!(recover_first_seq(&server, &pid, offsets[2]), 4);
}

/// The cases of the official Socket.IO protocol test suite (socketio/socket.io-protocol's
/// test-suite, vendored in tests/interop/socketio-protocol with its packages in the interop
/// lockfile) that test the protocol rather than the reference's demo application: all of its
/// Engine.IO part (handshakes, heartbeat over polling and WebSocket, close, upgrade) and the
/// Socket.IO refusals (an unknown namespace, a bad or missing handshake, malformed packets).
/// The other Socket.IO cases check that demo app (an `auth` event echoing the handshake, a
/// `message-back` echo, a `/custom` namespace, binary attachments, a CONNECT answer without
/// a `pid`) and do not apply to ringcast, whose events are pub/sub requests.
const SUITE_CASES: &str = "Engine.IO protocol|disallow connection|no handshake|invalid format";

/// Proves the applicable cases of the official Socket.IO protocol suite pass against ringcast
/// with the suite's settings (ping every 300 ms, timeout 200 ms), one shard so that a
/// WebSocket's packets and a polling request sent after them arrive in that order.
#[test]
fn official_socketio_protocol_suite() {
    let mocha = tools::manifest_path("tests/interop/node_modules/mocha/bin/mocha");
    tools::require_installed(&mocha, "the npm package mocha");
    let directory = tools::fresh_directory("interop-socketio-protocol-suite");
    let server = ServerProcess::start_with_environment(
        &["--shards", "1"],
        &[
            ("RINGCAST_PING_INTERVAL_MS", "300"),
            ("RINGCAST_PING_TIMEOUT_MS", "200"),
        ],
    );
    let mut command = Command::new("node");
    command
        .current_dir(tools::manifest_path("tests/interop/socketio-protocol"))
        .env("SOCKETIO_SUITE_URL", format!("http://{}", server.address))
        .arg(&mocha)
        .arg("test-suite.js")
        .arg("--grep")
        .arg(SUITE_CASES)
        // The suite's own per-case limits are 2 s (5 s for the heartbeat); a loaded machine
        // gets more, which decides nothing about the protocol.
        .arg("--timeout")
        .arg("20000");
    let missing = format!("install Node.js 20 with npm, then run `{INSTALL_COMMAND}`");
    let run = tools::run_with_deadline(
        &mut command,
        "socketio_protocol_suite",
        &directory,
        CLIENT_DEADLINE,
        &missing,
    );
    assert!(
        run.status.success(),
        "the Socket.IO protocol suite failed with {}\n{}\n--- server log (end) ---\n{}",
        run.status,
        run.outputs(),
        server.log_tail()
    );
    let outputs = run.outputs();
    assert!(outputs.contains("22 passing"), "{outputs}");
}
