//! Engine.IO long polling and the upgrade from it to WebSocket, against the real `ringcast`
//! binary, written from the engine.io-protocol document: the handshake GET and its open
//! packet, GETs held until packets wait, POSTs answered `ok`, the reference server's 400 and
//! 413 answers, the heartbeat carried by polls, expiry, sessions on a 2-shard server reached
//! from connections that land on either shard, and `2probe`/`3probe`/`6`/`5` with nothing lost
//! or repeated across the switch. Every request is a new TCP connection, as a load balancer
//! without affinity would make it.

mod support;

use std::time::Duration;

use support::server::{HttpClient, HttpResponse, OPCODE_TEXT, RawClient, ServerProcess};

const POLLING_PATH: &str = "/socket.io/?EIO=4&transport=polling";

/// Sends one request on a new connection (closed after the answer) and returns that
/// connection, to read the answer from when it comes (a held GET).
fn send_request(server: &ServerProcess, method: &str, path: &str, body: &[u8]) -> RawClient {
    let mut client = RawClient::connect(server.address);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain;charset=UTF-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    client.write(head.as_bytes());
    client.write(body);
    client
}

fn request(server: &ServerProcess, method: &str, path: &str, body: &[u8]) -> HttpResponse {
    send_request(server, method, path, body).read_response()
}

fn session_path(sid: &str) -> String {
    format!("{POLLING_PATH}&sid={sid}")
}

/// The handshake: the open packet's JSON.
fn open_session(server: &ServerProcess) -> serde_json::Value {
    let response = request(server, "GET", POLLING_PATH, b"");
    assert_eq!(response.status, 200, "{response:?}");
    let body = String::from_utf8(response.body).expect("UTF-8");
    let json = body.strip_prefix('0').expect("the open packet");
    serde_json::from_str(json).expect("the open packet's JSON")
}

fn post(server: &ServerProcess, sid: &str, packets: &[&str]) -> HttpResponse {
    let body = packets.join("\u{1e}");
    request(server, "POST", &session_path(sid), body.as_bytes())
}

/// One GET: the packets of its body.
fn poll(server: &ServerProcess, sid: &str) -> Vec<String> {
    let response = request(server, "GET", &session_path(sid), b"");
    assert_eq!(response.status, 200, "{response:?}");
    packets_of(response)
}

fn packets_of(response: HttpResponse) -> Vec<String> {
    let body = String::from_utf8(response.body).expect("UTF-8");
    body.split('\u{1e}').map(str::to_owned).collect()
}

/// GETs until a packet starting with `prefix` came, answering pings (`3` by POST) on the
/// way; returns every packet read up to and with it. Bounded.
fn poll_until(server: &ServerProcess, sid: &str, prefix: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..32 {
        for packet in poll(server, sid) {
            if packet == "2" {
                assert_eq!(post(server, sid, &["3"]).status, 200);
            }
            let done = packet.starts_with(prefix);
            seen.push(packet);
            if done {
                return seen;
            }
        }
    }
    panic!("no packet starting with {prefix:?} in 32 polls: {seen:?}");
}

/// GETs until packets starting with each of `prefixes` came, in that order, answering pings
/// on the way; returns every packet of every body read (a body's packets after the last
/// prefix too, so nothing read is lost to the caller). Bounded.
fn poll_until_in_order(server: &ServerProcess, sid: &str, prefixes: &[&str]) -> Vec<String> {
    let mut seen = Vec::new();
    let mut found = 0;
    for _ in 0..32 {
        for packet in poll(server, sid) {
            if packet == "2" {
                assert_eq!(post(server, sid, &["3"]).status, 200);
            }
            if found < prefixes.len() && packet.starts_with(prefixes[found]) {
                found += 1;
            }
            seen.push(packet);
        }
        if found == prefixes.len() {
            return seen;
        }
    }
    panic!("no packets starting with {prefixes:?} in order in 32 polls: {seen:?}");
}

/// Opens a session and connects it to `/`: its sid.
fn connected_session(server: &ServerProcess) -> String {
    let open = open_session(server);
    let sid = open["sid"].as_str().expect("sid").to_owned();
    assert_eq!(post(server, &sid, &["40"]).status, 200);
    poll_until(server, &sid, "40{");
    sid
}

/// The shard a session id names (its first two characters, base64url, hold the shard).
fn owner_shard(sid: &str) -> usize {
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let value = |index: usize| {
        ALPHABET
            .find(sid.as_bytes()[index] as char)
            .expect("base64url")
    };
    (value(0) << 6) | value(1)
}

/// `42["message",{…}]` or, for a client of one topic, `42["message",{…},"<offset>"]`: the
/// message's JSON.
fn message_of(packet: &str) -> Option<serde_json::Value> {
    packet.strip_prefix("42[\"message\",")?;
    let event: serde_json::Value = serde_json::from_str(&packet[2..]).expect("a message event");
    match event.as_array().map(Vec::as_slice) {
        Some([_, message] | [_, message, serde_json::Value::String(_)]) => Some(message.clone()),
        _ => panic!("not a message event: {packet}"),
    }
}

fn publish(server: &ServerProcess, topic: &str, data: &str) -> u64 {
    let mut http = HttpClient::connect(server.address);
    let response = http.post(&format!("/publish/{topic}"), data.as_bytes(), &[]);
    assert_eq!(response.status, 200, "{response:?}");
    let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    json["seq"].as_u64().expect("a seq")
}

/// Proves the handshake over polling: a 200 whose body is the open packet offering the
/// upgrade, with the configured heartbeat and payload limit; the CONNECT posted is answered
/// `ok` (text/html, as the reference server does) and its reply comes by the next GET.
#[test]
fn handshake_connect_and_post_ok() {
    let server = ServerProcess::start_with_environment(
        &[],
        &[
            ("RINGCAST_PING_INTERVAL_MS", "60000"),
            ("RINGCAST_PING_TIMEOUT_MS", "30000"),
        ],
    );
    let open = open_session(&server);
    let sid = open["sid"].as_str().expect("sid");
    assert_eq!(sid.len(), 22, "{open}");
    assert_eq!(open["upgrades"], serde_json::json!(["websocket"]), "{open}");
    assert_eq!(open["pingInterval"], 60000, "{open}");
    assert_eq!(open["pingTimeout"], 30000, "{open}");
    assert_eq!(open["maxPayload"], 1_000_000, "{open}");
    let posted = post(&server, sid, &["40"]);
    assert_eq!(posted.status, 200);
    assert_eq!(posted.body, b"ok");
    assert_eq!(
        posted.header("content-type"),
        Some("text/html; charset=UTF-8")
    );
    let packets = poll(&server, sid);
    assert!(packets[0].starts_with("40{\"sid\":"), "{packets:?}");
    assert_ne!(open_session(&server)["sid"], open["sid"]);
}

/// Proves a held GET is answered by a delivery: subscribed by POST (the acknowledgement and
/// `subscribed` come by GET), a GET waits, a publish on another connection answers it with
/// `42["message",…]`; messages published while no GET is held wait for the next one, in
/// order, with their seqs; several packets share a body, separated by `\x1e`.
#[test]
fn held_get_answered_by_deliveries() {
    let server = ServerProcess::start(&["--shards", "2"]);
    let sid = connected_session(&server);
    let subscribe = r#"421["subscribe",{"topics":["poll.held"]}]"#;
    assert_eq!(post(&server, &sid, &[subscribe]).status, 200);
    // `subscribed` moves the session's position, so a `cursor` event follows it, queued at
    // the end of that shard turn: a GET answered earlier in the same turn (one reaching the
    // shard right after the POST, as under load) gets `subscribed` and leaves the `cursor` for
    // the next GET. Both are taken here, so that nothing waits for the GET held below.
    let packets = poll_until_in_order(&server, &sid, &["42[\"subscribed\"", "42[\"cursor\""]);
    assert!(
        packets.iter().any(|packet| packet == "431[]"),
        "{packets:?}"
    );

    let held = send_request(&server, "GET", &session_path(&sid), b"");
    // The GET is held: nothing waits for it, so the publish is what answers it.
    let mut seqs = vec![publish(&server, "poll.held", r#"{"i":0}"#)];
    let packets = packets_of(held.read_response_owned());
    let first = packets.iter().find_map(|packet| message_of(packet));
    let first = first.unwrap_or_else(|| panic!("no message in {packets:?}"));
    assert_eq!(first["seq"].as_u64(), Some(seqs[0]));
    assert_eq!(first["data"]["i"], 0);

    for index in 1..4 {
        seqs.push(publish(
            &server,
            "poll.held",
            &format!(r#"{{"i":{index}}}"#),
        ));
    }
    let mut messages = Vec::new();
    for _ in 0..8 {
        if messages.len() == 3 {
            break;
        }
        messages.extend(
            poll(&server, &sid)
                .iter()
                .filter_map(|packet| message_of(packet)),
        );
    }
    let received: Vec<_> = messages
        .iter()
        .map(|message| message["seq"].as_u64())
        .collect();
    let expected: Vec<_> = seqs[1..].iter().map(|&seq| Some(seq)).collect();
    assert_eq!(received, expected, "{messages:?}");
}

/// Proves the reference server's refusals: an unknown sid (of any shape) gets 400
/// `{"code":1,"message":"Session ID unknown"}`; a second GET while one is held gets 400 and
/// closes the session (the held GET is answered with the close packet `1`); a POST over
/// `maxPayload` gets 413 and closes the session; a POST of garbage gets 400 and closes it.
#[test]
fn unknown_sid_overlapping_get_and_oversized_post() {
    let server = ServerProcess::start_with_environment(
        &["--shards", "2"],
        &[("RINGCAST_ENGINEIO_PAYLOAD_BYTES_MAX", "1000")],
    );
    for sid in [
        "AAAAAAAAAAAAAAAAAAAAAA",
        "nonsense",
        "AB__________________AA",
    ] {
        let response = request(&server, "GET", &session_path(sid), b"");
        assert_eq!(response.status, 400, "{sid}: {response:?}");
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"code":1,"message":"Session ID unknown"})
        );
        let response = request(&server, "POST", &session_path(sid), b"40");
        assert_eq!(response.status, 400, "{sid}: {response:?}");
    }

    let sid = connected_session(&server);
    // Two GETs at once: whichever reaches the session's shard second is refused, and the one
    // held is answered with the close packet. They may land on either shard, so which one is
    // held is not known in advance: both are read at once.
    let gets: Vec<_> = (0..2)
        .map(|_| send_request(&server, "GET", &session_path(&sid), b""))
        .map(|client| std::thread::spawn(move || client.read_response_owned()))
        .collect();
    let mut responses: Vec<HttpResponse> =
        gets.into_iter().map(|get| get.join().unwrap()).collect();
    responses.sort_by_key(|response| response.status);
    let (held, second) = (responses.remove(0), responses.remove(0));
    assert_eq!((held.status, second.status), (200, 400));
    let body: serde_json::Value = serde_json::from_slice(&second.body).unwrap();
    assert_eq!(body["code"], 3, "{body}");
    let packets = packets_of(held);
    assert_eq!(packets.last().map(String::as_str), Some("1"), "{packets:?}");
    assert_eq!(
        request(&server, "GET", &session_path(&sid), b"").status,
        400
    );

    let sid = connected_session(&server);
    let long = format!("42[\"ping\",\"{}\"]", "x".repeat(2000));
    assert_eq!(post(&server, &sid, &[&long]).status, 413);
    assert_eq!(
        request(&server, "GET", &session_path(&sid), b"").status,
        400
    );

    let sid = connected_session(&server);
    assert_eq!(post(&server, &sid, &["9garbage"]).status, 400);
    assert_eq!(
        request(&server, "GET", &session_path(&sid), b"").status,
        400
    );
}

/// Proves the heartbeat over polling: the server's ping `2` comes in a held GET, the pong `3`
/// goes by POST and the session lives on; a session whose ping goes unanswered is closed (its
/// next GET is refused as unknown), and so is one never polled at all. The timeout is seconds,
/// far beyond a loaded machine's answer time, so only a missing pong closes.
#[test]
fn heartbeat_by_polls_and_expiry() {
    let server = ServerProcess::start_with_environment(
        &["--shards", "2"],
        &[
            ("RINGCAST_PING_INTERVAL_MS", "50"),
            ("RINGCAST_PING_TIMEOUT_MS", "3000"),
        ],
    );
    let sid = connected_session(&server);
    for _ in 0..3 {
        let packets = poll(&server, &sid);
        assert!(packets.iter().all(|packet| packet == "2"), "{packets:?}");
        assert_eq!(post(&server, &sid, &["3"]).status, 200);
    }
    // No pong from here on: the session ends within a ping interval and timeout.
    let mut ended = false;
    for _ in 0..256 {
        let response = request(&server, "GET", &session_path(&sid), b"");
        if response.status == 400 {
            ended = true;
            break;
        }
        let packets = packets_of(response);
        if packets.last().map(String::as_str) == Some("1") {
            ended = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ended, "the session outlived its unanswered ping");

    let open = open_session(&server);
    let never_polled = open["sid"].as_str().unwrap().to_owned();
    let mut metrics = HttpClient::connect(server.address);
    support::server::wait_until("the never-polled session to expire", || {
        metrics.metric_where("ringcast_transport_connections", "transport=\"socketio\"") == 0
    });
    assert_eq!(
        request(&server, "GET", &session_path(&never_polled), b"").status,
        400
    );
}

/// Proves sessions are served whatever shard a request lands on: on a 2-shard server, new
/// connections open sessions owned by both shards, and each session's later requests (each
/// on a new connection, so landing on either shard) subscribe, publish with acknowledgement
/// and receive every message in order.
#[test]
fn sessions_across_shards() {
    let server = ServerProcess::start(&["--shards", "2"]);
    let sids: Vec<String> = (0..12).map(|_| connected_session(&server)).collect();
    let owners: std::collections::BTreeSet<usize> =
        sids.iter().map(|sid| owner_shard(sid)).collect();
    assert_eq!(owners.len(), 2, "sessions on both shards: {owners:?}");
    for (index, sid) in sids.iter().enumerate() {
        let topic = format!("poll.shards.{index}");
        let subscribe = format!(r#"42["subscribe",{{"topics":["{topic}"]}}]"#);
        assert_eq!(post(&server, sid, &[&subscribe]).status, 200);
        poll_until(&server, sid, "42[\"subscribed\"");
        let publishes: Vec<String> = (0..3)
            .map(|number| format!(r#"42{number}["publish",{{"topic":"{topic}","data":{number}}}]"#))
            .collect();
        let publishes: Vec<&str> = publishes.iter().map(String::as_str).collect();
        assert_eq!(post(&server, sid, &publishes).status, 200);
        let mut acks = Vec::new();
        let mut data = Vec::new();
        for _ in 0..16 {
            if acks.len() == 3 && data.len() == 3 {
                break;
            }
            for packet in poll(&server, sid) {
                if packet.starts_with("43") {
                    acks.push(packet);
                } else if let Some(message) = message_of(&packet) {
                    data.push(message["data"].as_u64().unwrap());
                }
            }
        }
        assert_eq!(data, [0, 1, 2], "{sid}: {acks:?}");
        assert_eq!(acks.len(), 3, "{acks:?}");
        assert!(
            acks.iter().all(|ack| ack.contains("\"published\"")),
            "{acks:?}"
        );
    }
    // Some of those requests landed on the shard that does not own their session.
    let mut metrics = HttpClient::connect(server.address);
    let family = "ringcast_socketio_polling_sessions_total";
    assert!(metrics.metric_where(family, "event=\"forwarded\"") > 0);
}

/// Proves the upgrade: a WebSocket naming the session answers `2probe` with `3probe`, the
/// held GET is answered (`6` when nothing waits) so the client can pause polling, and after
/// `5` everything queued meanwhile and everything after comes over the WebSocket, each seq
/// once and in order; polling the upgraded session is refused, and packets sent over the
/// WebSocket reach the same session (its subscription, its acknowledgements).
#[test]
fn upgrade_from_polling_without_loss() {
    let server = ServerProcess::start(&["--shards", "2"]);
    for round in 0..4 {
        let sid = connected_session(&server);
        let topic = format!("poll.upgrade.{round}");
        let subscribe = format!(r#"42["subscribe",{{"topics":["{topic}"]}}]"#);
        assert_eq!(post(&server, &sid, &[&subscribe]).status, 200);
        poll_until(&server, &sid, "42[\"subscribed\"");
        let mut seqs = vec![publish(&server, &topic, "0")];
        let mut received = Vec::new();
        let collect = |packets: Vec<String>, received: &mut Vec<u64>| {
            for packet in packets {
                if let Some(message) = message_of(&packet) {
                    received.push(message["seq"].as_u64().unwrap());
                }
            }
        };
        let held = send_request(&server, "GET", &session_path(&sid), b"");
        let websocket_path = format!("/socket.io/?EIO=4&transport=websocket&sid={sid}");
        let mut websocket = RawClient::upgraded(server.address, &websocket_path);
        websocket.send_frame(OPCODE_TEXT, true, b"2probe");
        assert_eq!(websocket.read_text(), "3probe");
        // The held GET returns: with the message, or `6` if it had been answered before.
        collect(packets_of(held.read_response_owned()), &mut received);
        if received.is_empty() {
            collect(poll(&server, &sid), &mut received);
        }
        seqs.push(publish(&server, &topic, "1"));
        websocket.send_frame(OPCODE_TEXT, true, b"5");
        seqs.push(publish(&server, &topic, "2"));
        websocket.send_frame(
            OPCODE_TEXT,
            true,
            format!(r#"427["publish",{{"topic":"{topic}","data":3}}]"#).as_bytes(),
        );
        let mut acknowledged = false;
        for _ in 0..64 {
            if acknowledged && received.len() == 4 {
                break;
            }
            let text = websocket.read_text();
            if text.starts_with("437[") {
                acknowledged = true;
            } else if let Some(message) = message_of(&text) {
                received.push(message["seq"].as_u64().unwrap());
            } else if text == "2" {
                websocket.send_frame(OPCODE_TEXT, true, b"3");
            }
        }
        assert!(
            acknowledged,
            "the publish over the upgraded WebSocket was acknowledged"
        );
        let first = seqs[0];
        assert_eq!(
            received,
            [first, first + 1, first + 2, first + 3],
            "{seqs:?}"
        );
        assert_eq!(
            request(&server, "GET", &session_path(&sid), b"").status,
            400
        );
    }
    let mut metrics = HttpClient::connect(server.address);
    let family = "ringcast_socketio_polling_sessions_total";
    assert_eq!(metrics.metric_where(family, "event=\"upgraded\""), 4);
}

/// Proves the heartbeat goes on after the upgrade: the session's pings come over the
/// WebSocket (whichever shard it landed on), the pongs sent back keep it; when they stop, the
/// session ends and its WebSocket is closed.
#[test]
fn heartbeat_after_the_upgrade() {
    let server = ServerProcess::start_with_environment(
        &["--shards", "2"],
        &[
            ("RINGCAST_PING_INTERVAL_MS", "50"),
            ("RINGCAST_PING_TIMEOUT_MS", "3000"),
        ],
    );
    let sid = connected_session(&server);
    let path = format!("/socket.io/?EIO=4&transport=websocket&sid={sid}");
    let mut websocket = RawClient::upgraded(server.address, &path);
    websocket.send_frame(OPCODE_TEXT, true, b"2probe");
    assert_eq!(websocket.read_text(), "3probe");
    websocket.send_frame(OPCODE_TEXT, true, b"5");
    for _ in 0..3 {
        assert_eq!(websocket.read_text(), "2");
        websocket.send_frame(OPCODE_TEXT, true, b"3");
    }
    // No pong from here on: the session's close packet, then the WebSocket's close.
    let mut packets = Vec::new();
    loop {
        let frame = websocket.read_frame();
        if frame.opcode != OPCODE_TEXT {
            assert_eq!(
                frame.close_code_and_reason().map(|(code, _)| code),
                Some(1000)
            );
            break;
        }
        packets.push(String::from_utf8(frame.payload).unwrap());
        assert!(packets.len() < 64, "{packets:?}");
    }
    assert_eq!(packets.last().map(String::as_str), Some("1"), "{packets:?}");
}

/// Reading a response from a connection taken by value.
trait ReadOwned {
    fn read_response_owned(self) -> HttpResponse;
}

impl ReadOwned for RawClient {
    fn read_response_owned(mut self) -> HttpResponse {
        self.read_response()
    }
}

/// Proves a poller that falls behind pays for itself, as any slow subscriber does: its queue
/// is held to `outbound_queue_bytes_max` and the slow-consumer policy acts and is counted
/// under the `socketio` transport. With `disconnect`, the session is closed (its next GET is
/// refused); with `conflate`, the next GET gets the newest message, its seq jumped forward.
#[test]
fn slow_poller_pays_for_itself() {
    for policy in ["disconnect", "conflate"] {
        let server = ServerProcess::start_with_environment(
            &["--shards", "2"],
            &[
                ("RINGCAST_OUTBOUND_QUEUE_BYTES_MAX", "4096"),
                ("RINGCAST_MESSAGE_BYTES_MAX", "4096"),
                ("RINGCAST_SLOW_CONSUMER_POLICY", policy),
            ],
        );
        let sid = connected_session(&server);
        let topic = format!("poll.slow.{policy}");
        let subscribe = format!(r#"42["subscribe",{{"topics":["{topic}"]}}]"#);
        assert_eq!(post(&server, &sid, &[&subscribe]).status, 200);
        poll_until(&server, &sid, "42[\"subscribed\"");
        let data = format!("\"{}\"", "x".repeat(500));
        let seqs: Vec<u64> = (0..40).map(|_| publish(&server, &topic, &data)).collect();
        let mut metrics = HttpClient::connect(server.address);
        let family = "ringcast_transport_slow_consumer_actions_total";
        support::server::wait_until("the slow-consumer policy to act", || {
            metrics.metric_where(family, "transport=\"socketio\"") > 0
        });
        if policy == "disconnect" {
            assert_eq!(
                request(&server, "GET", &session_path(&sid), b"").status,
                400
            );
            continue;
        }
        let mut received = Vec::new();
        for _ in 0..16 {
            received.extend(
                poll(&server, &sid)
                    .iter()
                    .filter_map(|packet| message_of(packet))
                    .map(|message| message["seq"].as_u64().unwrap()),
            );
            if received.last() == seqs.last() {
                break;
            }
        }
        assert_eq!(received.last(), seqs.last(), "{received:?}");
        assert!(received.len() < seqs.len(), "conflated: {received:?}");
        assert!(
            received.windows(2).all(|pair| pair[0] < pair[1]),
            "{received:?}"
        );
    }
}

/// Proves the client's own close over polling: a POST of `1` ends the session, the GET it
/// holds is answered with the noop `6` (as the reference server does), and the sid is then
/// unknown. The GET must reach the session before the POST; each may land on either shard, so
/// a round where the POST came first (the GET is then refused) is tried again.
#[test]
fn client_close_over_polling() {
    let server = ServerProcess::start(&["--shards", "2"]);
    let mut noop_seen = false;
    for _ in 0..16 {
        let sid = connected_session(&server);
        let held = send_request(&server, "GET", &session_path(&sid), b"");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(post(&server, &sid, &["1"]).status, 200);
        let answer = held.read_response_owned();
        match answer.status {
            200 => {
                assert_eq!(answer.body, b"6", "{answer:?}");
                noop_seen = true;
            }
            status => assert_eq!(status, 400, "{answer:?}"),
        }
        assert_eq!(
            request(&server, "GET", &session_path(&sid), b"").status,
            400
        );
        if noop_seen {
            break;
        }
    }
    assert!(noop_seen, "a held GET answered 6 when its client closed");
}

/// Proves an upgraded session keeps its WebSocket: another WebSocket naming the same sid is
/// closed at once, and the first still carries the session both ways.
#[test]
fn second_websocket_after_upgrade_is_closed() {
    let server = ServerProcess::start(&["--shards", "2"]);
    let sid = connected_session(&server);
    let path = format!("/socket.io/?EIO=4&transport=websocket&sid={sid}");
    let mut first = RawClient::upgraded(server.address, &path);
    first.send_frame(OPCODE_TEXT, true, b"2probe");
    assert_eq!(first.read_text(), "3probe");
    first.send_frame(OPCODE_TEXT, true, b"5");
    // The upgrade reached the session once a packet sent after it is answered over it.
    first.send_frame(
        OPCODE_TEXT,
        true,
        br#"421["subscribe",{"topics":["poll.second"]}]"#,
    );
    let mut acknowledged = false;
    for _ in 0..16 {
        if first.read_text() == "431[]" {
            acknowledged = true;
            break;
        }
    }
    assert!(acknowledged);
    let mut second = RawClient::upgraded(server.address, &path);
    assert_eq!(second.read_close_code(), Some(1000));
    first.send_frame(
        OPCODE_TEXT,
        true,
        br#"422["unsubscribe",{"topics":["poll.second"]}]"#,
    );
    let mut acknowledged = false;
    for _ in 0..16 {
        if first.read_text() == "432[]" {
            acknowledged = true;
            break;
        }
    }
    assert!(
        acknowledged,
        "the first WebSocket still carries the session"
    );
}

/// Proves sessions are bounded per shard: past `socketio_polling_sessions_max` a handshake is
/// answered 503 (counted), and a session that ends frees its slot for the next one; the
/// slot's new session has another id, so the old one stays unknown.
#[test]
fn sessions_per_shard_are_bounded() {
    let server = ServerProcess::start_with_environment(
        &["--shards", "1"],
        &[("RINGCAST_SOCKETIO_POLLING_SESSIONS_MAX", "2")],
    );
    let first = connected_session(&server);
    let _second = connected_session(&server);
    let refused = request(&server, "GET", POLLING_PATH, b"");
    assert_eq!(refused.status, 503, "{refused:?}");
    let mut metrics = HttpClient::connect(server.address);
    let family = "ringcast_socketio_polling_sessions_total";
    assert_eq!(metrics.metric_where(family, "event=\"refused\""), 1);
    assert_eq!(post(&server, &first, &["1"]).status, 200);
    let third = connected_session(&server);
    assert_ne!(third, first);
    assert_eq!(
        request(&server, "GET", &session_path(&first), b"").status,
        400
    );
}

/// Proves a shutdown ends long-polling sessions cleanly: SIGTERM answers each held GET with
/// the close packet `1`, and the server exits 0. One shard, so that each GET, written before
/// a request that is answered, has reached its session before the signal.
#[test]
fn shutdown_answers_held_gets_with_close() {
    let mut server = ServerProcess::start(&["--shards", "1"]);
    server.wait_for_signal_handlers();
    let sids: Vec<String> = (0..4).map(|_| connected_session(&server)).collect();
    let held: Vec<RawClient> = sids
        .iter()
        .map(|sid| send_request(&server, "GET", &session_path(sid), b""))
        .collect();
    let health = HttpClient::connect(server.address).get("/health");
    assert_eq!(health.status, 200);
    server.signal(libc::SIGTERM);
    for client in held {
        let response = client.read_response_owned();
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(packets_of(response).last().map(String::as_str), Some("1"));
    }
    let status = server.wait_for_exit(support::server::EXIT_WAIT);
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        support::server::describe_exit(status)
    );
}

/// Sends `head` (a whole request head, with its blank line) and `body` on a new connection
/// and reads the answer.
fn raw_request(server: &ServerProcess, head: &str, body: &[u8]) -> HttpResponse {
    let mut client = RawClient::connect(server.address);
    client.write(head.as_bytes());
    client.write(body);
    client.read_response()
}

/// The CORS headers of `response`, in a fixed order (absent ones as `None`).
fn cors_headers(response: &HttpResponse) -> [Option<&str>; 5] {
    [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "vary",
    ]
    .map(|name| response.header(name))
}

/// Proves cross-origin long polling with `socketio_cors_origins`: a preflight from a listed
/// origin gets 204 with the origin echoed, credentials, GET and POST and the headers it asked
/// for (a list past its bound is not echoed); the handshake, a POST, a held GET (answered on
/// whichever shard holds the session) and a refused request carry the origin and credentials;
/// an origin not listed gets no CORS header but `Vary: Origin`, and a server without the
/// setting sends none at all (and refuses a preflight, 400, as before the setting existed).
#[test]
fn cors_for_polling_from_listed_origins() {
    let server = ServerProcess::start_with_environment(
        &["--shards", "2"],
        &[(
            "RINGCAST_SOCKETIO_CORS_ORIGINS",
            r#"["https://app.example"]"#,
        )],
    );
    let app = "https://app.example";
    let preflight = |origin: &str, asked: &str| {
        let head = format!(
            "OPTIONS /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\
             Origin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: {asked}\r\nConnection: close\r\n\r\n"
        );
        raw_request(&server, &head, b"")
    };
    let answer = preflight(app, "content-type, x-app");
    assert_eq!(answer.status, 204, "{answer:?}");
    assert_eq!(
        cors_headers(&answer),
        [
            Some(app),
            Some("true"),
            Some("GET, POST"),
            Some("content-type, x-app"),
            Some("Origin")
        ]
    );
    let long_list = vec!["x-header"; 40].join(", ");
    let answer = preflight(app, &long_list);
    assert_eq!(answer.status, 204);
    assert_eq!(answer.header("access-control-allow-headers"), None);
    let answer = preflight("https://evil.example", "content-type");
    assert_eq!(answer.status, 204);
    assert_eq!(
        cors_headers(&answer),
        [None, None, None, None, Some("Origin")]
    );

    let with_origin = |method: &str, path: &str, origin: &str, body: &[u8]| {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        raw_request(&server, &head, body)
    };
    let allowed = [Some(app), Some("true"), None, None, Some("Origin")];
    let open = with_origin("GET", "/socket.io/?EIO=4&transport=polling", app, b"");
    assert_eq!(open.status, 200);
    assert_eq!(cors_headers(&open), allowed);
    let json: serde_json::Value = serde_json::from_slice(&open.body[1..]).unwrap();
    let sid = json["sid"].as_str().unwrap().to_owned();
    let path = session_path(&sid);
    let posted = with_origin("POST", &path, app, b"40");
    assert_eq!(cors_headers(&posted), allowed);
    // Over a few requests each lands on either shard: answered here or forwarded. Each POST
    // asks for an acknowledgement, so that the GET after it has something to take.
    for ack_id in 0..4 {
        let event = format!("42{ack_id}[\"unsubscribe\",{{\"topics\":[\"t\"]}}]");
        let posted = with_origin("POST", &path, app, event.as_bytes());
        assert_eq!((posted.status, posted.body.as_slice()), (200, &b"ok"[..]));
        assert_eq!(cors_headers(&posted), allowed);
        let polled = with_origin("GET", &path, app, b"");
        assert_eq!(polled.status, 200);
        assert_eq!(cors_headers(&polled), allowed);
    }
    let refused = with_origin("GET", &session_path("nonsense"), app, b"");
    assert_eq!(refused.status, 400);
    assert_eq!(cors_headers(&refused), allowed);
    let foreign = with_origin("POST", &path, "https://evil.example", b"6");
    assert_eq!(foreign.status, 200);
    assert_eq!(
        cors_headers(&foreign),
        [None, None, None, None, Some("Origin")]
    );

    let plain = ServerProcess::start(&["--shards", "1"]);
    let head = "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\
                Origin: https://app.example\r\nConnection: close\r\n\r\n";
    let answer = raw_request(&plain, head, b"");
    assert_eq!(answer.status, 200);
    assert_eq!(cors_headers(&answer), [None; 5]);
    let head = head.replacen("GET", "OPTIONS", 1);
    let answer = raw_request(&plain, &head, b"");
    assert_eq!(
        answer.status, 400,
        "a preflight without CORS is refused as before"
    );
    assert_eq!(cors_headers(&answer), [None; 5]);
}

/// Proves `"*"` answers any origin with `Access-Control-Allow-Origin: *` and no credentials
/// (browsers refuse `*` with them).
#[test]
fn cors_star_allows_any_origin_without_credentials() {
    let server = ServerProcess::start_with_environment(
        &["--shards", "1"],
        &[("RINGCAST_SOCKETIO_CORS_ORIGINS", r#"["*"]"#)],
    );
    let head = "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\
                Origin: https://anyone.example\r\nConnection: close\r\n\r\n";
    let answer = raw_request(&server, head, b"");
    assert_eq!(answer.status, 200);
    assert_eq!(
        cors_headers(&answer),
        [Some("*"), None, None, None, Some("Origin")]
    );
}

/// A long-polling handshake on a new connection from the source address `source`.
fn handshake_from(server: &ServerProcess, source: std::net::IpAddr) -> HttpResponse {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    let bind = std::net::SocketAddr::new(source, 0);
    socket
        .bind(&bind.into())
        .expect("a loopback source address");
    socket
        .connect(&server.address.into())
        .expect("connect to the server");
    let stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("a read timeout");
    let mut client = RawClient::from_stream(stream);
    let head = format!("GET {POLLING_PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    client.write(head.as_bytes());
    client.read_response()
}

/// Proves one client address cannot take every session slot of a shard: past
/// `socketio_polling_sessions_per_address_max` its handshakes are answered 429 (code 4) and
/// counted, while another address still opens sessions in the slots left; a session the first
/// address closes gives its room back.
#[test]
fn sessions_per_address_are_bounded() {
    let server = ServerProcess::start_with_environment(
        &["--shards", "1"],
        &[
            ("RINGCAST_SOCKETIO_POLLING_SESSIONS_MAX", "8"),
            ("RINGCAST_SOCKETIO_POLLING_SESSIONS_PER_ADDRESS_MAX", "3"),
        ],
    );
    let greedy: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let other: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut sids = Vec::new();
    for _ in 0..3 {
        let opened = handshake_from(&server, greedy);
        assert_eq!(opened.status, 200, "{opened:?}");
        let open: serde_json::Value = serde_json::from_slice(&opened.body[1..]).unwrap();
        sids.push(open["sid"].as_str().unwrap().to_owned());
    }
    for _ in 0..2 {
        let refused = handshake_from(&server, greedy);
        assert_eq!(refused.status, 429, "{refused:?}");
        let body: serde_json::Value = serde_json::from_slice(&refused.body).unwrap();
        assert_eq!(body["code"], 4, "{body}");
    }
    let mut metrics = HttpClient::connect(server.address);
    let family = "ringcast_socketio_polling_sessions_total";
    assert_eq!(metrics.metric_where(family, "event=\"address_refused\""), 2);
    assert_eq!(metrics.metric_where(family, "event=\"refused\""), 0);
    for _ in 0..3 {
        assert_eq!(handshake_from(&server, other).status, 200);
    }
    assert_eq!(post(&server, &sids[0], &["1"]).status, 200);
    assert_eq!(handshake_from(&server, greedy).status, 200);
}
