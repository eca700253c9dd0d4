//! Proves no client can make the real server hold more than its budgets, and that honest
//! clients miss nothing while hostile ones sit: the attacks found by the hostile-input review
//! (issue "Bound every byte a client can make ringcast hold"), each run against the binary with
//! its numbers asserted. Idle attackers use a 4 KiB receive buffer, so the kernel absorbs little
//! and the server's own queues fill.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};
use socket2::{Domain, Socket, Type};
use support::server::{
    HttpClient, OPCODE_TEXT, RawClient, ServerProcess, client_frame, upgrade_request, wait_until,
};
use tungstenite::{Message, WebSocket};

const MIB: u64 = 1024 * 1024;
/// What RSS may grow beyond the budgets under test: the allocator's own caches and
/// fragmentation, the buffer pool's classes touched, per-connection tables. Stated once for
/// every test here.
const RSS_SLACK_BYTES: u64 = 24 * MIB;

fn start(environment: &[(&str, &str)]) -> ServerProcess {
    let mut environment = environment.to_vec();
    environment.push(("RINGCAST_SHARDS", "1"));
    ServerProcess::start_with_environment(&[], &environment)
}

/// A client that upgrades, sends `request` and then never reads: its 4 KiB receive buffer
/// fills at once, and what the server sends it after waits in the server's queue.
fn idle_client(address: SocketAddr, request: &Value) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&address.into()).unwrap();
    let mut client = RawClient::from_stream(socket.into());
    client.write(upgrade_request("/ws").as_bytes());
    client.expect_upgraded();
    client.send_frame(OPCODE_TEXT, true, request.to_string().as_bytes());
    client.stream
}

/// An honest subscriber that reads everything.
fn reader(address: SocketAddr, topics: &[&str], since: Option<Value>) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (mut socket, _) = tungstenite::client(format!("ws://{address}/ws"), stream).unwrap();
    let mut request = json!({"op":"subscribe","topics":topics});
    if let Some(since) = since {
        request["since"] = since;
    }
    socket.send(Message::text(request.to_string())).unwrap();
    socket
}

fn next_json(socket: &mut WebSocket<TcpStream>) -> Value {
    loop {
        if let Message::Text(text) = socket.read().unwrap() {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// The next published message (skipping replies): its topic and seq.
fn next_message(socket: &mut WebSocket<TcpStream>) -> (String, u64) {
    loop {
        let value = next_json(socket);
        if value.get("op").is_none() {
            return (
                value["topic"].as_str().unwrap().to_string(),
                value["seq"].as_u64().unwrap(),
            );
        }
    }
}

fn quoted(bytes: usize) -> Vec<u8> {
    format!("\"{}\"", "x".repeat(bytes)).into_bytes()
}

/// Proves 300 subscribers of a busy topic that never read cannot silence anyone: the budget
/// counts the messages they share once, and falls on them alone; a reader of the same topic
/// and a reader of another get every tick, the queues' memory stays within the budget, RSS
/// grows by no more than the budgets, and it all drains when the attackers leave. (Before,
/// the shard counted each shared frame once per queue, went over its budget at once and
/// conflated every subscriber, readers included.)
#[test]
fn idle_subscribers_do_not_silence_readers() {
    const ATTACKERS: usize = 300;
    const ROUNDS: u64 = 300;
    let budget = 4 * MIB;
    let server = start(&[
        ("RINGCAST_OUTBOUND_SHARD_BYTES_MAX", &budget.to_string()),
        ("RINGCAST_HISTORY_SHARD_BYTES_MAX", &budget.to_string()),
        ("RINGCAST_SOCKET_SEND_BUFFER_BYTES", "16384"),
    ]);
    let mut http = HttpClient::connect(server.address);
    let subscribe_busy = json!({"op":"subscribe","topics":["BUSY"]});
    let attackers: Vec<TcpStream> = (0..ATTACKERS)
        .map(|_| idle_client(server.address, &subscribe_busy))
        .collect();
    let mut busy_reader = reader(server.address, &["BUSY"], None);
    let mut calm_reader = reader(server.address, &["CALM"], None);
    wait_until("every subscription in effect", || {
        http.metric("ringcast_subscriptions") == ATTACKERS as u64 + 2
    });
    let rss_before = server.rss_bytes();
    let tick = quoted(8 * 1024);
    for round in 1..=ROUNDS {
        assert_eq!(http.post("/publish/BUSY", &tick, &[]).status, 200);
        let calm = json!({ "round": round }).to_string();
        assert_eq!(http.post("/publish/CALM", calm.as_bytes(), &[]).status, 200);
        assert_eq!(next_message(&mut busy_reader), ("BUSY".into(), round));
        assert_eq!(next_message(&mut calm_reader), ("CALM".into(), round));
    }
    let memory = http.metric("ringcast_outbound_memory_bytes");
    assert!(
        memory <= budget + ATTACKERS as u64 * 9 * 1024,
        "the queues hold {memory} bytes against a budget of {budget}"
    );
    assert!(http.metric("ringcast_slow_consumer_actions_total") > 0);
    let growth = server.rss_bytes().saturating_sub(rss_before);
    assert!(
        growth <= 2 * budget + RSS_SLACK_BYTES,
        "RSS grew {growth} bytes with budgets of 2 × {budget}"
    );
    drop(attackers);
    wait_until("the attackers' queues let go", || {
        http.metric("ringcast_outbound_memory_bytes") < 64 * 1024
    });
}

/// Proves the newest message of every topic counts in the shard's history budget: 400
/// topics with one 256 KiB message each (100 MiB) leave history within its 16 MiB, and RSS
/// grows by no more than that. (Before, each topic's latest message was kept outside the
/// budget: 300 × 1 MiB held 315 MB against 64 MiB.)
#[test]
fn history_counts_every_newest_message() {
    let budget = 16 * MIB;
    let server = start(&[("RINGCAST_HISTORY_SHARD_BYTES_MAX", &budget.to_string())]);
    let mut http = HttpClient::connect(server.address);
    let rss_before = server.rss_bytes();
    let message = quoted(256 * 1024);
    for index in 0..400 {
        let response = http.post(&format!("/publish/T{index}"), &message, &[]);
        assert_eq!(response.status, 200);
    }
    let history = http.metric("ringcast_history_bytes");
    assert!(history <= budget, "history holds {history} bytes");
    let growth = server.rss_bytes().saturating_sub(rss_before);
    assert!(
        growth <= budget + RSS_SLACK_BYTES,
        "RSS grew {growth} bytes with a history budget of {budget}"
    );
}

/// Proves a replay is paced by the subscriber's queue and bounded by it: 12 clients that never
/// read, each subscribing to 100 topics of 100 messages with `since: 0`, hold no more than
/// their queue limits (1 MiB each) plus one page per topic in flight, while an honest client
/// making the same request gets all 10,000 messages, every topic in order. (Before, the whole
/// replay was queued at once: 278 MB queued past every limit.)
#[test]
fn replay_is_paced_by_the_queue() {
    const TOPICS: usize = 100;
    const MESSAGES: u64 = 100;
    let server = start(&[("RINGCAST_SOCKET_SEND_BUFFER_BYTES", "16384")]);
    let mut http = HttpClient::connect(server.address);
    let names: Vec<String> = (0..TOPICS).map(|index| format!("R{index}")).collect();
    let data = quoted(1024);
    let batch: Vec<Value> = names
        .iter()
        .map(|topic| json!({"topic": topic, "data": serde_json::from_slice::<Value>(&data).unwrap()}))
        .collect();
    let batch = serde_json::to_vec(&batch).unwrap();
    for _ in 0..MESSAGES {
        assert_eq!(http.post("/publish", &batch, &[]).status, 200);
    }
    let since: serde_json::Map<String, Value> = names
        .iter()
        .map(|topic| (topic.clone(), json!(0)))
        .collect();
    let request = json!({"op":"subscribe","topics":names,"since":since});
    let attackers: Vec<TcpStream> = (0..12)
        .map(|_| idle_client(server.address, &request))
        .collect();
    let topics: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut honest = reader(server.address, &topics, Some(json!(since)));
    let mut next_seq = vec![1u64; TOPICS];
    for _ in 0..TOPICS as u64 * MESSAGES {
        let (topic, seq) = next_message(&mut honest);
        let index: usize = topic[1..].parse().unwrap();
        assert_eq!(seq, next_seq[index], "{topic}");
        next_seq[index] += 1;
    }
    let queued = http.metric("ringcast_outbound_queued_bytes");
    let bound = 12 * (MIB + TOPICS as u64 * 64 * 1024);
    assert!(
        queued <= bound,
        "{queued} bytes queued to 12 idle clients (bound {bound})"
    );
    assert!(
        http.metric("ringcast_replay_pages_total") > 0,
        "replays came in pages"
    );
    drop(attackers);
}

/// Proves clients that begin large messages and trickle them hold small buffers, so honest
/// messages over 4 KiB still pass on the WebSocket and over HTTP, and that an unfinished
/// message is refused with 1008 after `message_timeout_ms`. (Before, 640 tricklers each took a
/// buffer the size of the frame they announced and every message over 4 KiB got 1013 or 503.)
#[test]
fn trickled_messages_hold_no_large_buffers_and_time_out() {
    const TRICKLERS: usize = 640;
    let server = start(&[("RINGCAST_MESSAGE_TIMEOUT_MS", "1500")]);
    let mut tricklers: Vec<RawClient> = (0..TRICKLERS)
        .map(|_| RawClient::upgraded(server.address, "/ws"))
        .collect();
    // Half announce 60 KiB frames (the 64 KiB class's size), half 1 MiB frames (the largest
    // class's): together more than both classes hold.
    let announced = [60 * 1024, 1024 * 1024];
    for (index, trickler) in tricklers.iter_mut().enumerate() {
        let frame = client_frame(OPCODE_TEXT, true, &vec![b'x'; announced[index % 2]]);
        // The head (8 or 14 bytes with the mask) and one byte of payload.
        let head_bytes = if index % 2 == 0 { 8 } else { 14 };
        trickler.write(&frame[..head_bytes + 1]);
    }
    let mut http = HttpClient::connect(server.address);
    let mut subscriber = reader(server.address, &["BIG"], None);
    // Over 4 KiB (so cut across reads and assembled in a pooled buffer), within the default
    // request_bytes_max of 64 KiB.
    let big = quoted(60 * 1024);
    let (mut publisher, _) = tungstenite::client(
        format!("ws://{}/ws", server.address),
        TcpStream::connect(server.address).unwrap(),
    )
    .unwrap();
    let publish = format!(
        r#"{{"op":"publish","topic":"BIG","data":{}}}"#,
        String::from_utf8(big.clone()).unwrap()
    );
    publisher.send(Message::text(publish)).unwrap();
    assert_eq!(next_message(&mut subscriber), ("BIG".into(), 1));
    assert_eq!(http.post("/publish/BIG", &big, &[]).status, 200);
    assert_eq!(next_message(&mut subscriber), ("BIG".into(), 2));
    for class in ["65536", "1048576"] {
        let label = format!("class_bytes=\"{class}\"");
        let in_use = http.metric_where("ringcast_pool_buffers_in_use", &label);
        assert_eq!(in_use, 0, "no trickler holds a buffer of {class} bytes");
    }
    for trickler in &mut tricklers {
        assert_eq!(trickler.read_close_code(), Some(1008));
    }
    assert!(http.metric_where("ringcast_timeouts_total", "kind=\"message\"") >= TRICKLERS as u64);
}

/// Proves one client cannot fill the topic table: past its burst of creations it gets 429
/// (and a refused batch publishes nothing), another client still creates topics, topics left
/// idle are forgotten, and a topic that comes back starts a new epoch.
#[test]
fn topic_floods_are_limited_per_client_and_idle_topics_expire() {
    let server = start(&[
        ("RINGCAST_TOPIC_CREATIONS_BURST", "100"),
        ("RINGCAST_TOPIC_CREATIONS_PER_SECOND", "1"),
        ("RINGCAST_TOPIC_IDLE_MS", "500"),
    ]);
    let batch = |prefix: &str, count: usize| {
        let items: Vec<Value> = (0..count)
            .map(|index| json!({"topic": format!("{prefix}{index}"), "data": 1}))
            .collect();
        serde_json::to_vec(&items).unwrap()
    };
    let mut flooder = HttpClient::connect(server.address);
    let response = flooder.post("/publish", &batch("F", 150), &[]);
    assert_eq!(response.status, 429, "{response:?}");
    assert_eq!(flooder.metric("ringcast_messages_published_total"), 0);
    assert_eq!(flooder.post("/publish", &batch("G", 80), &[]).status, 200);
    assert_eq!(flooder.post("/publish", &batch("H", 80), &[]).status, 429);
    let mut other = HttpClient::connect(server.address);
    assert_eq!(other.post("/publish", &batch("O", 80), &[]).status, 200);
    let mut first = reader(server.address, &["G0"], None);
    let epoch = next_json(&mut first)["epoch"].as_str().unwrap().to_string();
    drop(first);
    wait_until("idle topics forgotten", || {
        other.metric("ringcast_topics_owned") == 0
    });
    assert!(other.metric("ringcast_topics_expired_total") >= 160);
    assert_eq!(other.post("/publish/G0", b"1", &[]).status, 200);
    let mut again = reader(server.address, &["G0"], None);
    let reply = next_json(&mut again);
    assert_eq!(reply["seq"], 1);
    assert_ne!(
        reply["epoch"].as_str().unwrap(),
        epoch,
        "a new sequence space"
    );
}

/// Proves a batch that cannot be published whole publishes nothing, and that retries with an
/// idempotency key (HTTP's header, a WebSocket publish's id) are answered with the first seq
/// and not published again.
#[test]
fn batches_are_atomic_and_retries_are_idempotent() {
    let server = start(&[("RINGCAST_TOPICS_PER_SHARD_MAX", "3")]);
    let mut http = HttpClient::connect(server.address);
    let mut subscriber = reader(server.address, &["A"], None);
    assert_eq!(next_json(&mut subscriber)["op"], "subscribed");
    let items = json!([
        {"topic":"A","data":1},{"topic":"B","data":1},{"topic":"C","data":1},{"topic":"D","data":1}
    ]);
    let response = http.post("/publish", items.to_string().as_bytes(), &[]);
    assert_eq!(response.status, 503, "four topics where three fit");
    assert_eq!(http.metric("ringcast_messages_published_total"), 0);
    let seq_of = |response: support::server::HttpResponse| -> Value {
        assert_eq!(response.status, 200, "{response:?}");
        serde_json::from_slice(&response.body).unwrap()
    };
    assert_eq!(
        seq_of(http.post("/publish/A", b"1", &[("Idempotency-Key", "k1")]))["seq"],
        1
    );
    assert_eq!(
        seq_of(http.post("/publish/A", b"1", &[("Idempotency-Key", "k1")]))["seq"],
        1
    );
    assert_eq!(
        seq_of(http.post("/publish/A", b"1", &[("Idempotency-Key", "k2")]))["seq"],
        2
    );
    let batch = json!([{"topic":"A","data":1},{"topic":"B","data":1}]).to_string();
    let first = seq_of(http.post("/publish", batch.as_bytes(), &[("Idempotency-Key", "kb")]));
    let retry = seq_of(http.post("/publish", batch.as_bytes(), &[("Idempotency-Key", "kb")]));
    assert_eq!(first, json!({"seqs":[3,1]}));
    assert_eq!(retry, first);
    let (mut publisher, _) = tungstenite::client(
        format!("ws://{}/ws", server.address),
        TcpStream::connect(server.address).unwrap(),
    )
    .unwrap();
    for _ in 0..2 {
        let publish = r#"{"op":"publish","topic":"A","data":1,"id":"w1"}"#;
        publisher.send(Message::text(publish)).unwrap();
        let ack = next_json(&mut publisher);
        assert_eq!(ack, json!({"op":"published","id":"w1","seq":4}));
    }
    let seqs: Vec<u64> = (0..4).map(|_| next_message(&mut subscriber).1).collect();
    assert_eq!(seqs, [1, 2, 3, 4], "each publish once");
}

/// Proves a subscriber whose queue makes no progress is closed after `send_stall_timeout_ms`
/// even though its connection stays open, and its queue is let go.
#[test]
fn a_stalled_queue_is_closed() {
    let server = start(&[
        ("RINGCAST_SEND_STALL_TIMEOUT_MS", "1000"),
        ("RINGCAST_SOCKET_SEND_BUFFER_BYTES", "16384"),
    ]);
    let mut http = HttpClient::connect(server.address);
    let stalled = idle_client(server.address, &json!({"op":"subscribe","topics":["S"]}));
    wait_until("the subscription in effect", || {
        http.metric("ringcast_subscriptions") == 1
    });
    let tick = quoted(8 * 1024);
    for _ in 0..200 {
        assert_eq!(http.post("/publish/S", &tick, &[]).status, 200);
    }
    wait_until("the stalled subscriber closed", || {
        http.metric_where("ringcast_slow_consumer_actions_total", "action=\"stall\"") == 1
    });
    wait_until("its queue let go", || {
        http.metric("ringcast_outbound_memory_bytes") < 64 * 1024
    });
    drop(stalled);
}
