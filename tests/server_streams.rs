//! Proves the reading endpoints besides the WebSocket end to end over real sockets, across two
//! shards with publishers on connections of either: SSE (`/sse`), NDJSON streams (`/stream`),
//! long and short polls (`/poll`). Every topic in order with no gap and no duplicate, resumes
//! from a cursor (SSE's `Last-Event-ID`) at any point, replay from `since`, `reset` for a
//! cursor of an earlier server life (the epoch), heartbeats, bad requests, slow readers, the
//! per-transport metrics, and a clean end at shutdown.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ringcast::config::{BrokerConfig, ServerConfig};
use ringcast::server::Server;
use serde_json::Value;
use support::server::{HttpClient, RawClient};
use support::streams::{NdjsonClient, SseClient, encode_query, poll};

/// Topics spread over both shards (at least one owned by each, by the fixed owner hash).
const TOPICS: [&str; 4] = ["AAPL", "MSFT", "EUR/USD", "BTC-USD"];

fn config(broker: BrokerConfig) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        drain_timeout_ms: 2_000,
        broker,
        ..ServerConfig::default()
    }
}

fn start() -> Server {
    Server::start(config(BrokerConfig::default())).unwrap()
}

fn topics_query() -> String {
    TOPICS.map(encode_query).join(",")
}

/// Publishes message `seq`-th of `topic` (the data names them) through `publisher`.
fn publish(publisher: &mut HttpClient, topic: &str, number: u64) {
    let path = format!("/publish/{}", encode_query(topic));
    let body = format!("{{\"n\":{number}}}");
    let response = publisher.post(&path, body.as_bytes(), &[]);
    assert_eq!(
        response.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
}

/// Publishes `count` messages to every topic, round robin over two publisher connections (so
/// on either shard, whichever each landed on).
fn publish_round(address: SocketAddr, first: u64, count: u64) {
    let mut publishers = [HttpClient::connect(address), HttpClient::connect(address)];
    for number in first..first + count {
        for (index, topic) in TOPICS.iter().enumerate() {
            publish(&mut publishers[index % 2], topic, number);
        }
    }
}

/// Per topic, the seqs received in order.
#[derive(Default)]
struct Record {
    seqs: BTreeMap<String, Vec<u64>>,
}

impl Record {
    fn take(&mut self, message: &Value) {
        let topic = message["topic"].as_str().unwrap().to_string();
        let seq = message["seq"].as_u64().unwrap();
        assert_eq!(
            message["data"]["n"].as_u64(),
            Some(seq),
            "seq {seq} of {topic} carries its own data"
        );
        self.seqs.entry(topic).or_default().push(seq);
    }

    fn count(&self) -> usize {
        self.seqs.values().map(Vec::len).sum()
    }

    /// Every topic has exactly 1..=last, in order.
    fn assert_complete(&self, last: u64) {
        for topic in TOPICS {
            let expected: Vec<u64> = (1..=last).collect();
            assert_eq!(
                self.seqs.get(topic),
                Some(&expected),
                "{topic}: every seq once and in order"
            );
        }
    }
}

/// Reads SSE events into `record` until it holds `total` messages or `stop_after` more have
/// come; returns the subscribed events seen.
fn read_sse(stream: &mut SseClient, record: &mut Record, total: usize, stop_after: usize) -> usize {
    let (mut subscribed, mut taken) = (0, 0);
    while record.count() < total && taken < stop_after {
        let event = stream.next_event().expect("the stream goes on");
        match event.event.as_str() {
            "message" => {
                record.take(&serde_json::from_str(&event.data).unwrap());
                taken += 1;
            }
            "subscribed" => subscribed += 1,
            other => panic!("unexpected event {other}: {event:?}"),
        }
    }
    subscribed
}

/// Proves an SSE stream carries every topic in order, with `subscribed` events first and an id
/// on every event, and that reconnecting with the last id (as a browser's EventSource does
/// after a break) resumes every topic exactly after the last event taken, while publishing
/// went on during the break.
#[test]
fn sse_resumes_every_topic_exactly_from_the_last_event_id() {
    let server = start();
    let address = server.local_address();
    let target = format!("/sse?topics={}", topics_query());
    let mut stream = SseClient::open(address, &target, &[]);
    assert_eq!(stream.head.status, 200);
    assert_eq!(
        stream.head.header("content-type"),
        Some("text/event-stream")
    );
    assert_eq!(stream.head.header("x-accel-buffering"), Some("no"));
    assert!(stream.head.header("content-length").is_none());
    let mut record = Record::default();
    // The subscriptions are in effect once their events came.
    let first = stream.next_event().unwrap();
    assert_eq!(first.event, "subscribed");
    assert!(!first.id.is_empty(), "every event carries the cursor");
    assert_eq!(stream.retry_ms, Some(2000));
    for _ in 1..TOPICS.len() {
        assert_eq!(stream.next_event().unwrap().event, "subscribed");
    }
    publish_round(address, 1, 30);
    read_sse(&mut stream, &mut record, usize::MAX, 57);
    let last_id = stream.last_event_id().to_string();
    drop(stream);
    publish_round(address, 31, 20);
    let mut resumed = SseClient::open(address, &target, &[("Last-Event-ID", &last_id)]);
    assert_eq!(resumed.head.status, 200);
    let subscribed = read_sse(&mut resumed, &mut record, 50 * TOPICS.len(), usize::MAX);
    assert_eq!(subscribed, TOPICS.len());
    record.assert_complete(50);
    drop(resumed);
    server.shutdown().unwrap();
}

/// Proves an NDJSON stream is chunked JSON lines, the `/ws` objects one per line with cursor
/// lines after each batch, and that `?cursor=` resumes after the last cursor line read.
#[test]
fn ndjson_stream_resumes_from_its_cursor_line() {
    let server = start();
    let address = server.local_address();
    let target = format!("/stream?topics={}", topics_query());
    let mut stream = NdjsonClient::open(address, &target);
    assert_eq!(stream.head.status, 200);
    assert_eq!(stream.head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(
        stream.head.header("content-type"),
        Some("application/x-ndjson")
    );
    let mut subscribed = 0;
    while subscribed < TOPICS.len() {
        if stream.next_line().unwrap()["op"] == "subscribed" {
            subscribed += 1;
        }
    }
    publish_round(address, 1, 25);
    let mut record = Record::default();
    let mut cursor = String::new();
    let mut pending = Record::default();
    // Read until about half is in, then stop right after a cursor line.
    while record.count() < 50 || !pending.seqs.is_empty() {
        let line = stream.next_line().unwrap();
        match line["op"].as_str() {
            Some("cursor") => {
                cursor = line["cursor"].as_str().unwrap().to_string();
                for (topic, seqs) in std::mem::take(&mut pending.seqs) {
                    record.seqs.entry(topic).or_default().extend(seqs);
                }
            }
            Some(other) => panic!("unexpected line {other}: {line}"),
            None => pending.take(&line),
        }
    }
    drop(stream);
    publish_round(address, 26, 25);
    let resumed_target = format!("{target}&cursor={cursor}");
    let mut resumed = NdjsonClient::open(address, &resumed_target);
    while record.count() < 50 * TOPICS.len() {
        let line = resumed.next_line().unwrap();
        if line["op"].is_null() {
            record.take(&line);
        }
    }
    record.assert_complete(50);
    server.shutdown().unwrap();
}

/// Polls `topics` from `cursor` (or the start) until `total` messages came; every answer's
/// cursor feeds the next poll. Returns the record.
fn poll_until(address: SocketAddr, total: usize, wait_ms: u64) -> Record {
    let mut client = HttpClient::connect(address);
    let mut record = Record::default();
    let mut cursor: Option<String> = None;
    let since = encode_query(&format!(
        "{{{}}}",
        TOPICS.map(|topic| format!("\"{topic}\":0")).join(",")
    ));
    while record.count() < total {
        let target = match &cursor {
            Some(cursor) => format!(
                "/poll?topics={}&cursor={cursor}&wait_ms={wait_ms}",
                topics_query()
            ),
            None => format!(
                "/poll?topics={}&since={since}&wait_ms={wait_ms}",
                topics_query()
            ),
        };
        let (response, body) = poll(&mut client, &target);
        assert_eq!(response.status, 200, "{body}");
        for message in body["messages"].as_array().unwrap() {
            assert!(message["op"].is_null(), "no reset or error: {message}");
            record.take(message);
        }
        cursor = Some(body["cursor"].as_str().unwrap().to_string());
    }
    record
}

/// Proves long polls chain through their cursors with no gap and no duplicate while messages
/// are being published: each answer comes as soon as there is something past the cursor.
#[test]
fn long_polls_chain_without_gaps_while_publishing() {
    let server = start();
    let address = server.local_address();
    let publisher = std::thread::spawn(move || {
        for round in 0..20 {
            publish_round(address, round * 10 + 1, 10);
        }
    });
    let record = poll_until(address, 200 * TOPICS.len(), 5_000);
    publisher.join().unwrap();
    record.assert_complete(200);
    server.shutdown().unwrap();
}

/// Proves a short poll (`wait_ms=0`) answers at once, with a cursor naming every topic (an
/// empty list when nothing was published), and that the cursor then serves a long poll that
/// ends empty when its wait passes.
#[test]
fn short_polls_answer_at_once_and_empty_waits_end_empty() {
    let server = start();
    let address = server.local_address();
    let mut client = HttpClient::connect(address);
    let (response, body) = poll(
        &mut client,
        &format!("/poll?topics={}&wait_ms=0", topics_query()),
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(body["messages"], Value::Array(vec![]));
    let cursor = body["cursor"].as_str().unwrap();
    let target = format!("/poll?topics={}&cursor={cursor}&wait_ms=50", topics_query());
    let (response, body) = poll(&mut client, &target);
    assert_eq!(response.status, 200);
    assert_eq!(body["messages"], Value::Array(vec![]));
    assert_eq!(body["cursor"].as_str(), Some(cursor), "nothing moved");
    publish_round(address, 1, 3);
    let (_, body) = poll(&mut client, &target);
    let count = body["messages"].as_array().unwrap().len();
    assert!(count >= 1, "the poll answers with what came: {body}");
    server.shutdown().unwrap();
}

/// Proves a cursor (and a `since` with an epoch) from an earlier life of the server is answered
/// with `reset` and the latest message, never with a replay of the new life's seqs: the server
/// restarted, the topic passed its old seq again.
#[test]
fn a_cursor_from_an_earlier_server_life_gets_reset() {
    let server = start();
    let address = server.local_address();
    publish_round(address, 1, 5);
    let mut client = HttpClient::connect(address);
    let target = format!("/poll?topics={}&wait_ms=0", encode_query("AAPL"));
    let (_, body) = poll(&mut client, &target);
    let old_cursor = body["cursor"].as_str().unwrap().to_string();
    drop(client);
    server.shutdown().unwrap();

    let server = start();
    let address = server.local_address();
    publish_round(address, 1, 9);
    let mut client = HttpClient::connect(address);
    let target = format!("/poll?topics=AAPL&cursor={old_cursor}&wait_ms=0");
    let (response, body) = poll(&mut client, &target);
    assert_eq!(response.status, 200);
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "reset and the latest message: {body}");
    assert_eq!(messages[0]["op"], "reset");
    assert_eq!(messages[0]["seq"], 9);
    assert_eq!(
        messages[1]["seq"], 9,
        "not seq 6: the old seq 5 meant another life"
    );
    // The same over SSE, whose reset is a named event.
    let mut stream = SseClient::open(
        address,
        "/sse?topics=AAPL",
        &[("Last-Event-ID", &old_cursor)],
    );
    let mut events = Vec::new();
    while events.len() < 3 {
        events.push(stream.next_event().unwrap());
    }
    assert_eq!(
        events
            .iter()
            .map(|event| event.event.as_str())
            .collect::<Vec<_>>(),
        ["subscribed", "reset", "message"]
    );
    assert!(events[2].data.contains("\"seq\":9"), "{events:?}");
    server.shutdown().unwrap();
}

/// Proves `since` works in the query as on `/ws`: replay from seq + 1.
#[test]
fn since_in_the_query_replays_from_the_next_seq() {
    let server = start();
    let address = server.local_address();
    publish_round(address, 1, 10);
    let since = encode_query(r#"{"AAPL":7}"#);
    let mut stream = SseClient::open(address, &format!("/sse?topics=AAPL&since={since}"), &[]);
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        let event = stream.next_event().unwrap();
        if event.event == "message" {
            let message: Value = serde_json::from_str(&event.data).unwrap();
            seqs.push(message["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seqs, [8, 9, 10]);
    server.shutdown().unwrap();
}

/// Proves quiet streams send heartbeats: SSE comments and NDJSON heartbeat lines.
#[test]
fn quiet_streams_send_heartbeats() {
    let server = Server::start(config(BrokerConfig {
        stream_heartbeat_ms: 50,
        ..BrokerConfig::default()
    }))
    .unwrap();
    let address = server.local_address();
    let mut sse = SseClient::open(address, "/sse?topics=AAPL", &[]);
    sse.next_event().unwrap(); // subscribed
    let mut ndjson = NdjsonClient::open(address, "/stream?topics=AAPL");
    let mut heartbeats = 0;
    while heartbeats < 2 {
        let line = ndjson.next_line().unwrap();
        if line["op"] == "heartbeat" {
            heartbeats += 1;
        }
    }
    // Reading on until an event shows the comments that came before it.
    publish_round(address, 1, 1);
    sse.next_event().unwrap();
    assert!(sse.comments >= 1, "an SSE heartbeat is a comment line");
    server.shutdown().unwrap();
}

/// Proves bad reading requests get a 4xx with a JSON reason, and the server serves on.
#[test]
fn bad_reading_requests_are_refused_with_a_reason() {
    let server = start();
    let address = server.local_address();
    let too_many = (0..65)
        .map(|index| format!("T{index}"))
        .collect::<Vec<_>>()
        .join(",");
    let cases = [
        ("GET /sse HTTP/1.1\r\nHost: x\r\n\r\n", 400, "topics"),
        ("GET /sse?topics=A%ZZ HTTP/1.1\r\nHost: x\r\n\r\n", 400, "%"),
        (
            "GET /sse?topics=A,A HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "twice",
        ),
        (
            "GET /stream?topics=A&cursor=nonsense HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "cursor",
        ),
        (
            "GET /poll?topics=A&since=%7Bx HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "since",
        ),
        (
            "GET /poll?topics=A&wait_ms=-1 HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "wait_ms",
        ),
        (
            "GET /sse?topics=A HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n",
            406,
            "Accept",
        ),
        (
            "POST /sse?topics=A HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            405,
            "GET",
        ),
    ];
    for (request, status, reason) in cases {
        let mut client = RawClient::connect(address);
        client.write(request.as_bytes());
        let response = client.read_response();
        assert_eq!(response.status, status, "{request}");
        let body: Value = serde_json::from_slice(&response.body).unwrap();
        assert!(
            body["error"].as_str().unwrap().contains(reason),
            "{request}: {body}"
        );
    }
    let mut client = HttpClient::connect(address);
    let (response, body) = poll(&mut client, &format!("/poll?topics={too_many}&wait_ms=0"));
    assert_eq!(response.status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("stream_topics_max")
    );
    let (response, _) = poll(&mut client, "/poll?topics=A&wait_ms=0");
    assert_eq!(
        response.status, 200,
        "the connection and the server serve on"
    );
    server.shutdown().unwrap();
}

/// Proves a slow SSE reader falls under the slow-consumer policy (conflated, counted under
/// its transport) while a reading SSE client of the same topic gets every message, and the
/// per-transport metrics count each transport's connections and deliveries.
#[test]
fn slow_sse_readers_are_conflated_and_counted_per_transport() {
    let server = Server::start(ServerConfig {
        outbound_queue_bytes_max: 64 * 1024,
        socket_send_buffer_bytes: 16 * 1024,
        ..config(BrokerConfig::default())
    })
    .unwrap();
    let address = server.local_address();
    let slow = {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&address.into()).unwrap();
        let mut client = RawClient::from_stream(socket.into());
        client.write(b"GET /sse?topics=AAPL HTTP/1.1\r\nHost: x\r\n\r\n");
        client
    };
    let mut reader = SseClient::open(address, "/sse?topics=AAPL", &[]);
    reader.next_event().unwrap();
    let mut poller = HttpClient::connect(address);
    let mut metrics = HttpClient::connect(address);
    support::server::wait_until("both SSE subscribers", || {
        metrics.metric_where("ringcast_transport_connections", "transport=\"sse\"") == 2
    });
    let big = "x".repeat(2000);
    let stop = Arc::new(AtomicBool::new(false));
    // The reader is honest whatever the machine's load: the publisher stays at most
    // READER_WINDOW messages (16 KB) ahead of what it has read, far inside its 64 KiB queue,
    // so only the slow reader, which reads nothing, can fall under the policy.
    const READER_WINDOW: u64 = 8;
    let read_count = Arc::new(AtomicU64::new(0));
    let publisher = {
        let stop = Arc::clone(&stop);
        let read_count = Arc::clone(&read_count);
        std::thread::spawn(move || {
            let mut publisher = HttpClient::connect(address);
            let mut count = 0;
            while !stop.load(Ordering::Relaxed) || count < 400 {
                while count >= read_count.load(Ordering::Relaxed) + READER_WINDOW
                    && !stop.load(Ordering::Relaxed)
                {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                let body = format!("{{\"n\":{},\"pad\":\"{big}\"}}", count + 1);
                let response = publisher.post("/publish/AAPL", body.as_bytes(), &[]);
                assert_eq!(response.status, 200);
                count += 1;
            }
            count
        })
    };
    let mut seqs = Vec::new();
    while seqs.len() < 400 {
        let event = reader.next_event().unwrap();
        let message: Value = serde_json::from_str(&event.data).unwrap();
        seqs.push(message["seq"].as_u64().unwrap());
        read_count.store(seqs.len() as u64, Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    let published = publisher.join().unwrap();
    assert_eq!(
        seqs,
        (1..=400).collect::<Vec<_>>(),
        "the reader misses nothing"
    );
    support::server::wait_until("the slow reader's conflations", || {
        metrics.metric_where(
            "ringcast_transport_slow_consumer_actions_total",
            "transport=\"sse\"",
        ) > 0
    });
    let (_, body) = poll(&mut poller, "/poll?topics=AAPL&wait_ms=0");
    assert!(body["messages"].as_array().unwrap().is_empty());
    assert!(
        metrics.metric_where("ringcast_transport_deliveries_total", "transport=\"sse\"") >= 400
    );
    assert!(published >= 400);
    drop(slow);
    server.shutdown().unwrap();
}

/// Proves a shutdown ends every reading client cleanly: an NDJSON stream with its last chunk,
/// an SSE stream with the end of its body, a held poll with its answer (and cursor).
#[test]
fn shutdown_ends_streams_and_answers_polls() {
    let server = start();
    let address = server.local_address();
    let mut ndjson = NdjsonClient::open(address, "/stream?topics=AAPL");
    assert_eq!(ndjson.next_line().unwrap()["op"], "subscribed");
    let mut sse = SseClient::open(address, "/sse?topics=AAPL", &[]);
    assert_eq!(sse.next_event().unwrap().event, "subscribed");
    let mut poller = RawClient::connect(address);
    poller.write(b"GET /poll?topics=AAPL&wait_ms=50000 HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut metrics = HttpClient::connect(address);
    support::server::wait_until("the poll held", || {
        metrics.metric_where("ringcast_transport_connections", "transport=\"poll\"") == 1
    });
    drop(metrics);
    let shutdown = server.shutdown_in_background();
    let answer = poller.read_response();
    assert_eq!(answer.status, 200);
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    assert!(body["cursor"].is_string());
    // The cursor line after `subscribed`, then the last chunk (an end without it would fail
    // the chunked reader).
    while let Some(line) = ndjson.next_line() {
        assert_eq!(line["op"], "cursor", "{line}");
    }
    assert!(sse.next_event().is_none(), "the body ends");
    shutdown.join().unwrap().unwrap();
}

/// Proves long polling under churn: 1,000 clients poll in a loop (a third of their polls on a
/// new connection) while publishers run; each client's answers, concatenated, hold every seq of
/// every topic once and in order.
#[test]
fn a_thousand_pollers_under_churn_see_every_seq_once() {
    const CLIENTS: usize = 1000;
    const THREADS: usize = 50;
    const MESSAGES: u64 = 100;
    const POLL_TOPICS: [&str; 2] = ["AAPL", "EUR/USD"];
    // A client that lost a message would poll on forever: past this many polls it stops, and
    // the check below names what it lacks (every client needs far fewer).
    const POLLS_MAX: usize = 2_000;
    let server = start();
    let address = server.local_address();
    let topics = POLL_TOPICS.map(encode_query).join(",");
    let publisher = std::thread::spawn(move || {
        let mut publishers = [HttpClient::connect(address), HttpClient::connect(address)];
        for number in 1..=MESSAGES {
            for (index, topic) in POLL_TOPICS.iter().enumerate() {
                publish(&mut publishers[index], topic, number);
            }
        }
    });
    let pollers: Vec<_> = (0..THREADS)
        .map(|_| {
            let topics = topics.clone();
            std::thread::spawn(move || {
                let mut clients: Vec<(HttpClient, Option<String>, Record, usize)> = (0..CLIENTS
                    / THREADS)
                    .map(|_| (HttpClient::connect(address), None, Record::default(), 0))
                    .collect();
                let total = MESSAGES as usize * POLL_TOPICS.len();
                while clients
                    .iter()
                    .any(|(_, _, record, polls)| record.count() < total && *polls < POLLS_MAX)
                {
                    for (client, cursor, record, polls) in &mut clients {
                        if record.count() == total || *polls == POLLS_MAX {
                            continue;
                        }
                        *polls += 1;
                        if *polls % 3 == 0 {
                            *client = HttpClient::connect(address);
                        }
                        let target = match cursor {
                            Some(cursor) => {
                                format!("/poll?topics={topics}&cursor={cursor}&wait_ms=100")
                            }
                            None => format!(
                                "/poll?topics={topics}&since={}&wait_ms=100",
                                encode_query(r#"{"AAPL":0,"EUR/USD":0}"#)
                            ),
                        };
                        let (response, body) = poll(client, &target);
                        assert_eq!(response.status, 200, "{body}");
                        for message in body["messages"].as_array().unwrap() {
                            assert!(message["op"].is_null(), "no reset: {message}");
                            record.take(message);
                        }
                        *cursor = Some(body["cursor"].as_str().unwrap().to_string());
                    }
                }
                clients
                    .into_iter()
                    .map(|(_, _, record, _)| record)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    publisher.join().unwrap();
    let mut checked = 0;
    for poller in pollers {
        for record in poller.join().unwrap() {
            for topic in POLL_TOPICS {
                assert_eq!(
                    record.seqs.get(topic),
                    Some(&(1..=MESSAGES).collect::<Vec<_>>()),
                    "{topic}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, CLIENTS);
    server.shutdown().unwrap();
}
