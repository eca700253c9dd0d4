//! Proves the webhooks end to end: a real ringcast (in process, two shards) POSTs to a real HTTP
//! receiver on loopback (`support::webhook_receiver`), which checks every signature with its
//! own HMAC-SHA256, and the Standard Webhooks reference library (Python `standardwebhooks`)
//! verifies the accepted requests again. The receiver fails attempts on purpose (500, 429 with
//! `Retry-After`, silence past the timeout, 410) and the tests check what arrives: each event
//! exactly once by `webhook-id`, in order, occupancy across shards, batches, transports other
//! than the WebSocket, queue overflow counted, private destinations refused.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use ringcast::config::{ServerConfig, WebhookConfig};
use ringcast::server::Server;
use serde_json::{Value, json};
use support::server::{HttpClient, wait_until};
use support::streams::{NdjsonClient, SseClient};
use support::tools;
use support::webhook_receiver::{Answer, Captured, Receiver};
use tungstenite::{Message, WebSocket};

/// A Standard Webhooks secret (24 bytes).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// How long the Python verifier may take.
const VERIFIER_DEADLINE: Duration = Duration::from_secs(60);
/// One attempt's timeout in these tests: short, so that a silent receiver costs little.
const TIMEOUT_MS: u64 = 500;

type Client = WebSocket<TcpStream>;

/// A webhook to `receiver` for `events`, retried quickly, private destinations allowed (the
/// receiver is on loopback).
fn webhook(receiver: &Receiver, events: &[&str]) -> WebhookConfig {
    WebhookConfig {
        url: receiver.url("/hook"),
        events: events.iter().map(|event| event.to_string()).collect(),
        secret: SECRET.into(),
        batch_wait_ms: 20,
        timeout_ms: TIMEOUT_MS,
        retry_base_ms: 50,
        retry_max_ms: 200,
        allow_private_destinations: true,
        ..WebhookConfig::default()
    }
}

fn start(webhooks: Vec<WebhookConfig>) -> Server {
    Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        drain_timeout_ms: 2_000,
        webhook: webhooks,
        ..ServerConfig::default()
    })
    .unwrap()
}

fn connect(address: SocketAddr) -> Client {
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (socket, response) = tungstenite::client(format!("ws://{address}/ws"), stream).unwrap();
    assert_eq!(response.status(), 101);
    socket
}

fn send(client: &mut Client, request: Value) {
    client.send(Message::text(request.to_string())).unwrap();
}

/// Subscribes to `topic` and waits for the answer.
fn subscribe(client: &mut Client, topic: &str) {
    send(client, json!({"op":"subscribe","topics":[topic]}));
    loop {
        match client.read().unwrap() {
            Message::Text(text) => {
                let reply: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(reply["op"], "subscribed", "{reply}");
                return;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Closes `client` with `code` and `reason` and reads until the server's close.
fn close(mut client: Client, code: u16, reason: &str) {
    let frame = tungstenite::protocol::CloseFrame {
        code: code.into(),
        reason: reason.to_owned().into(),
    };
    client.close(Some(frame)).unwrap();
    while client.read().is_ok() {}
}

fn publish(publisher: &mut HttpClient, topic: &str, number: u64) {
    let response = publisher.post(
        &format!("/publish/{topic}"),
        format!("{{\"n\":{number}}}").as_bytes(),
        &[],
    );
    assert_eq!(response.status, 200);
}

/// The events of a request's body: one object, or an array of them.
fn events_of(request: &Captured) -> Vec<Value> {
    match serde_json::from_slice(&request.body).expect("a JSON body") {
        Value::Array(events) => events,
        event => vec![event],
    }
}

/// Every event the receiver accepted, in order of arrival.
fn accepted_events(receiver: &Receiver) -> Vec<Value> {
    receiver.accepted().iter().flat_map(events_of).collect()
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|event| event["type"] == kind)
        .collect()
}

/// Checks every request's signature (the receiver's HMAC did on arrival), that each accepted
/// id was accepted once, and has the Python reference library verify the accepted ones.
fn assert_signed_and_once(receiver: &Receiver, name: &str) {
    let requests = receiver.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert!(request.signature_valid, "bad signature: {request:?}");
        assert_eq!(request.content_type, "application/json");
    }
    let accepted = receiver.accepted();
    let ids: BTreeSet<&str> = accepted.iter().map(|request| request.id.as_str()).collect();
    assert_eq!(ids.len(), accepted.len(), "an id was accepted twice");
    verify_with_reference_library(&accepted, name);
}

/// Runs `tests/webhook_verify.py` (Standard Webhooks' own Python library) over `requests`.
fn verify_with_reference_library(requests: &[Captured], name: &str) {
    let python = tools::tool_path("RINGCAST_PYTHON", ".venv/bin/python");
    tools::require_installed(&python, "the Python venv with standardwebhooks");
    let directory = tools::fresh_directory(&format!("webhooks-{name}"));
    let listed: Vec<Value> = requests
        .iter()
        .map(|request| {
            json!({
                "id": request.id,
                "timestamp": request.timestamp,
                "signature": request.signature,
                "body_base64": base64::engine::general_purpose::STANDARD.encode(&request.body),
            })
        })
        .collect();
    let path = directory.join("requests.json");
    std::fs::write(&path, serde_json::to_vec(&listed).unwrap()).unwrap();
    let mut command = Command::new(python);
    command
        .arg(tools::manifest_path("tests/webhook_verify.py"))
        .arg(&path)
        .arg(SECRET);
    let missing = format!("run `{}`, which creates .venv", tools::INSTALL_COMMAND);
    let run = tools::run_with_deadline(
        &mut command,
        "webhook_verify",
        &directory,
        VERIFIER_DEADLINE,
        &missing,
    );
    assert!(run.status.success(), "{}", run.outputs());
    assert_eq!(run.stdout.trim(), requests.len().to_string());
}

/// Proves every kind of event of a WebSocket's life arrives signed and exactly once, in order,
/// although the receiver fails the first request with 500, then 429 with `Retry-After: 1`
/// (waited for), then silence past the timeout, and only then accepts it; and that the
/// `webhook-id` stays the same across those attempts.
#[test]
fn events_arrive_once_in_order_through_failures() {
    let receiver = Receiver::start(SECRET, |request| {
        match (request.id_index, request.attempt) {
            (0, 1) => Answer::Status(500, Vec::new()),
            (0, 2) => Answer::Status(429, vec![("Retry-After", "1".into())]),
            (0, 3) => Answer::Silence(Duration::from_millis(3 * TIMEOUT_MS)),
            _ => Answer::ok(),
        }
    });
    let all = [
        "topic.occupied",
        "topic.vacated",
        "connection.opened",
        "connection.closed",
        "subscription.created",
        "subscription.removed",
        "message.published",
    ];
    let server = start(vec![webhook(&receiver, &all)]);
    let address = server.local_address();
    let mut subscriber = connect(address);
    subscribe(&mut subscriber, "AAPL");
    let mut publisher = HttpClient::connect(address);
    for number in 1..=5 {
        publish(&mut publisher, "AAPL", number);
    }
    // Subscribed longer than `batch_wait_ms`: not a flap, so occupied and vacated are both
    // reported, although they wait behind the first request's retries.
    std::thread::sleep(Duration::from_millis(100));
    close(subscriber, 4000, "done here");
    wait_until("the vacated event", || {
        !of_type(&accepted_events(&receiver), "topic.vacated").is_empty()
    });
    let mut scrape = HttpClient::connect(address);
    assert_eq!(scrape.metric("ringcast_webhook_retries_total"), 3);
    assert_eq!(
        scrape.metric_where("ringcast_webhook_failures_total", "class=\"timeout\""),
        1
    );
    server.shutdown().unwrap();

    let requests = receiver.requests();
    let first: Vec<&Captured> = requests.iter().filter(|r| r.id_index == 0).collect();
    assert_eq!(first.len(), 4, "the first request's attempts");
    assert!(first.iter().all(|attempt| attempt.id == first[0].id));
    let waited = first[2].arrived - first[1].arrived;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 was not waited ({waited:?})"
    );
    assert_signed_and_once(&receiver, "once-in-order");

    let events = accepted_events(&receiver);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let position = |kind: &str| kinds.iter().position(|k| *k == kind).unwrap();
    // The subscriber's life, in order (the publisher's HTTP connection is no client).
    assert_eq!(
        kinds.iter().filter(|k| **k == "connection.opened").count(),
        1
    );
    assert!(position("connection.opened") < position("subscription.created"));
    assert!(position("subscription.removed") < position("connection.closed"));
    assert_eq!(of_type(&events, "topic.occupied").len(), 1);
    assert_eq!(of_type(&events, "topic.vacated").len(), 1);
    let seqs: Vec<u64> = of_type(&events, "message.published")
        .iter()
        .map(|event| event["data"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let closed = of_type(&events, "connection.closed")[0];
    assert_eq!(closed["data"]["code"], 4000);
    assert_eq!(closed["data"]["reason"], "done here");
    assert_eq!(closed["data"]["transport"], "websocket");
    let opened = of_type(&events, "connection.opened")[0];
    assert_eq!(opened["data"]["connection"], closed["data"]["connection"]);
    for event in &events {
        assert!(
            event["timestamp"].as_str().unwrap().ends_with('Z'),
            "{event}"
        );
    }
}

/// Proves a close the server starts is reported with its own code and reason: a peer that
/// sends text that is not UTF-8 is closed with 1007, and the webhook says why.
#[test]
fn a_close_the_server_starts_is_reported_with_its_reason() {
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    let receiver = Receiver::start(SECRET, |_| Answer::ok());
    let server = start(vec![webhook(&receiver, &["connection.closed"])]);
    let mut client = connect(server.local_address());
    let not_utf8 = Frame::message(vec![0xff, 0xfe], OpCode::Data(Data::Text), true);
    client.send(Message::Frame(not_utf8)).unwrap();
    while client.read().is_ok() {}
    wait_until("the close", || {
        !of_type(&accepted_events(&receiver), "connection.closed").is_empty()
    });
    server.shutdown().unwrap();
    let events = accepted_events(&receiver);
    let closed = of_type(&events, "connection.closed")[0];
    assert_eq!(closed["data"]["code"], 1007);
    assert_eq!(closed["data"]["reason"], "text is not valid utf-8");
}

/// Proves a topic is occupied once and vacated once however many subscribers on however many
/// shards come and go, as long as one stays subscribed meanwhile.
#[test]
fn occupancy_is_decided_once_across_shards() {
    let receiver = Receiver::start(SECRET, |_| Answer::ok());
    let events = ["topic.occupied", "topic.vacated", "subscription.created"];
    let server = start(vec![webhook(&receiver, &events)]);
    let address = server.local_address();
    // Subscribers until both shards have some (connections land by the kernel's hash).
    let mut subscribers = Vec::new();
    let mut shards = BTreeSet::new();
    while shards.len() < 2 {
        assert!(
            subscribers.len() < 64,
            "every connection landed on one shard"
        );
        let mut subscriber = connect(address);
        subscribe(&mut subscriber, "MSFT");
        subscribers.push(subscriber);
        wait_until("the subscription event", || {
            of_type(&accepted_events(&receiver), "subscription.created").len() == subscribers.len()
        });
        shards = of_type(&accepted_events(&receiver), "subscription.created")
            .iter()
            .map(|event| {
                let connection = event["data"]["connection"].as_str().unwrap().to_owned();
                connection.split('-').next().unwrap().to_owned()
            })
            .collect();
    }
    for subscriber in subscribers {
        close(subscriber, 1000, "");
    }
    wait_until("the vacated event", || {
        !of_type(&accepted_events(&receiver), "topic.vacated").is_empty()
    });
    server.shutdown().unwrap();
    let events = accepted_events(&receiver);
    let occupancy: Vec<&str> = events
        .iter()
        .filter(|event| event["type"] != "subscription.created")
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert_eq!(occupancy, ["topic.occupied", "topic.vacated"]);
    assert_signed_and_once(&receiver, "occupancy");
}

/// Proves message events come in requests of at most `batch_max`, each a JSON array, all of
/// them in seq order with none missing.
#[test]
fn messages_are_batched_in_seq_order() {
    const MESSAGES: u64 = 95;
    let receiver = Receiver::start(SECRET, |_| Answer::ok());
    let mut endpoint = webhook(&receiver, &["message.published"]);
    endpoint.batch_max = 10;
    endpoint.batch_wait_ms = 200;
    endpoint.topics = vec!["FX.*".into()];
    let server = start(vec![endpoint]);
    let mut publisher = HttpClient::connect(server.local_address());
    for number in 1..=MESSAGES {
        publish(&mut publisher, "FX.EURUSD", number);
        publish(&mut publisher, "AAPL", number); // not matched by the pattern
    }
    wait_until("every message", || {
        accepted_events(&receiver).len() == MESSAGES as usize
    });
    server.shutdown().unwrap();
    let requests = receiver.accepted();
    for request in &requests {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let batch = body.as_array().expect("a batch is an array");
        assert!((1..=10).contains(&batch.len()), "{} events", batch.len());
    }
    assert!(requests.len() < MESSAGES as usize, "nothing was batched");
    let seqs: Vec<u64> = accepted_events(&receiver)
        .iter()
        .map(|event| {
            assert_eq!(event["data"]["topic"], "FX.EURUSD");
            event["data"]["seq"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=MESSAGES).collect::<Vec<_>>());
    assert_signed_and_once(&receiver, "batches");
}

/// Proves SSE and NDJSON streams and held polls are connections and subscribers like
/// WebSockets: opened, subscribed, unsubscribed and closed, with their transport named and no
/// close code.
#[test]
fn streams_and_polls_emit_connection_and_subscription_events() {
    let receiver = Receiver::start(SECRET, |_| Answer::ok());
    let events = [
        "connection.opened",
        "connection.closed",
        "subscription.created",
        "subscription.removed",
    ];
    let server = start(vec![webhook(&receiver, &events)]);
    let address = server.local_address();
    let sse = SseClient::open(address, "/sse?topics=GOOG", &[]);
    assert_eq!(sse.head.status, 200);
    wait_until("the SSE subscription", || {
        !of_type(&accepted_events(&receiver), "subscription.created").is_empty()
    });
    drop(sse);
    wait_until("the SSE close", || {
        !of_type(&accepted_events(&receiver), "connection.closed").is_empty()
    });
    let ndjson = NdjsonClient::open(address, "/stream?topics=GOOG");
    wait_until("the NDJSON subscription", || {
        of_type(&accepted_events(&receiver), "subscription.created").len() == 2
    });
    drop(ndjson);
    wait_until("the NDJSON close", || {
        of_type(&accepted_events(&receiver), "connection.closed").len() == 2
    });
    let mut poller = HttpClient::connect(address);
    let answer = poller.get("/poll?topics=GOOG&wait_ms=50");
    assert_eq!(answer.status, 200);
    drop(poller);
    wait_until("the poll's close", || {
        of_type(&accepted_events(&receiver), "connection.closed").len() == 3
    });
    server.shutdown().unwrap();
    let events = accepted_events(&receiver);
    let by_connection = |connection: &Value| -> Vec<String> {
        events
            .iter()
            .filter(|event| event["data"]["connection"] == *connection)
            .map(|event| event["type"].as_str().unwrap().to_owned())
            .collect()
    };
    let opened = of_type(&events, "connection.opened");
    let transports: Vec<&str> = opened
        .iter()
        .map(|event| event["data"]["transport"].as_str().unwrap())
        .collect();
    assert_eq!(transports, ["sse", "stream", "poll"]);
    for event in opened {
        assert_eq!(
            by_connection(&event["data"]["connection"]),
            [
                "connection.opened",
                "subscription.created",
                "subscription.removed",
                "connection.closed"
            ]
        );
    }
    for event in of_type(&events, "connection.closed") {
        assert_eq!(event["data"]["code"], Value::Null);
    }
    assert_signed_and_once(&receiver, "transports");
}

/// Proves 410 Gone disables the endpoint: nothing more is attempted, what it held and what
/// comes later is dropped and counted, and the other endpoint carries on.
#[test]
fn gone_disables_only_that_endpoint() {
    let gone = Receiver::start(SECRET, |_| Answer::Status(410, Vec::new()));
    let healthy = Receiver::start(SECRET, |_| Answer::ok());
    let mut first = webhook(&gone, &["message.published"]);
    first.name = "gone".into();
    let mut second = webhook(&healthy, &["message.published"]);
    second.name = "healthy".into();
    let server = start(vec![first, second]);
    let address = server.local_address();
    let mut publisher = HttpClient::connect(address);
    publish(&mut publisher, "AAPL", 1);
    let mut scrape = HttpClient::connect(address);
    wait_until("the endpoint disabled", || {
        scrape.metric_where("ringcast_webhook_disabled", "endpoint=\"gone\"") == 1
    });
    for number in 2..=10 {
        publish(&mut publisher, "AAPL", number);
    }
    wait_until("every message at the healthy endpoint", || {
        accepted_events(&healthy).len() == 10
    });
    assert_eq!(gone.requests().len(), 1);
    assert_eq!(
        scrape.metric_where("ringcast_webhook_attempts_total", "endpoint=\"gone\""),
        1
    );
    let dropped = scrape.metric_where(
        "ringcast_webhook_dropped_events_total",
        "endpoint=\"gone\",reason=\"disabled\"",
    );
    assert_eq!(dropped, 1, "the event of the 410'd request");
    server.shutdown().unwrap();
    assert_signed_and_once(&healthy, "gone");
}

/// Proves a receiver that never answers costs only its own queue: when it is full the oldest
/// events go, counted, memory stays within `queue_bytes_max`, and subscribers still get every
/// message.
#[test]
fn a_silent_receiver_overflows_its_queue_counted() {
    const MESSAGES: u64 = 500;
    let receiver = Receiver::start(SECRET, |_| Answer::Silence(Duration::from_secs(30)));
    let mut endpoint = webhook(&receiver, &["message.published"]);
    endpoint.name = "silent".into();
    endpoint.queue_bytes_max = 8192;
    endpoint.timeout_ms = 10_000;
    let queue_bytes_max = endpoint.queue_bytes_max as u64;
    let server = start(vec![endpoint]);
    let address = server.local_address();
    let mut subscriber = connect(address);
    subscribe(&mut subscriber, "AAPL");
    let mut publisher = HttpClient::connect(address);
    for number in 1..=MESSAGES {
        publish(&mut publisher, "AAPL", number);
    }
    for _ in 0..MESSAGES {
        assert!(matches!(subscriber.read().unwrap(), Message::Text(_)));
    }
    let mut scrape = HttpClient::connect(address);
    let labels = "endpoint=\"silent\",reason=\"queue_full\"";
    wait_until("queue-full drops", || {
        let dropped = scrape.metric_where("ringcast_webhook_dropped_events_total", labels);
        let waiting = scrape.metric_where("ringcast_webhook_queue_depth", "endpoint=\"silent\"");
        // One request in flight, the rest waiting or dropped.
        dropped + waiting + 1 == MESSAGES
    });
    let held = scrape.metric_where("ringcast_webhook_queue_bytes", "endpoint=\"silent\"");
    assert!(held <= queue_bytes_max, "{held} bytes held");
    server.shutdown().unwrap();
}

/// Proves a private destination is refused: an address in the URL at start-up, a name that
/// resolves to one at every attempt (counted, nothing sent).
#[test]
fn private_destinations_are_refused_without_the_flag() {
    let receiver = Receiver::start(SECRET, |_| Answer::ok());
    let mut literal = webhook(&receiver, &["topic.occupied"]);
    literal.allow_private_destinations = false;
    let refused = Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        webhook: vec![literal],
        ..ServerConfig::default()
    });
    let message = refused.err().expect("start refused").to_string();
    assert!(message.contains("127.0.0.1"), "{message}");

    let mut named = webhook(&receiver, &["topic.occupied"]);
    named.url = format!("http://localhost:{}/hook", receiver.address.port());
    named.allow_private_destinations = false;
    named.name = "named".into();
    named.attempts_max = 2;
    let server = start(vec![named]);
    let address = server.local_address();
    let mut subscriber = connect(address);
    subscribe(&mut subscriber, "TSLA");
    let mut scrape = HttpClient::connect(address);
    let labels = "endpoint=\"named\",class=\"destination_refused\"";
    wait_until("refused attempts", || {
        scrape.metric_where("ringcast_webhook_failures_total", labels) == 2
    });
    assert!(receiver.requests().is_empty());
    let dropped = HashMap::from([(
        "attempts_exhausted",
        scrape.metric_where(
            "ringcast_webhook_dropped_events_total",
            "endpoint=\"named\",reason=\"attempts_exhausted\"",
        ),
    )]);
    assert_eq!(dropped["attempts_exhausted"], 1);
    server.shutdown().unwrap();
}

/// Proves a receiver that never answers does not slow fanout: publish-to-delivery round trips
/// with such a webhook on every message take no longer than without webhooks, within a generous
/// bound (four times, plus two seconds: a shard that waited on the receiver would take at least
/// one attempt's timeout, 10 s here, per message).
#[test]
fn a_dead_receiver_does_not_slow_fanout() {
    const ROUND_TRIPS: u64 = 200;
    let silent = Receiver::start(SECRET, |_| Answer::Silence(Duration::from_secs(60)));
    let mut endpoint = webhook(&silent, &["message.published", "subscription.created"]);
    endpoint.timeout_ms = 10_000;
    endpoint.queue_bytes_max = 16 * 1024;
    let without = round_trips(Vec::new(), ROUND_TRIPS);
    let with = round_trips(vec![endpoint], ROUND_TRIPS);
    println!("{ROUND_TRIPS} round trips: {without:?} without webhooks, {with:?} with a dead one");
    assert!(
        with <= 4 * without + Duration::from_secs(2),
        "with a dead receiver {with:?}, without webhooks {without:?}"
    );
}

/// The time `count` sequential publish → delivery round trips take with `webhooks`.
fn round_trips(webhooks: Vec<WebhookConfig>, count: u64) -> Duration {
    let server = start(webhooks);
    let address = server.local_address();
    let mut subscriber = connect(address);
    subscribe(&mut subscriber, "NVDA");
    let mut publisher = HttpClient::connect(address);
    let started = std::time::Instant::now();
    for number in 1..=count {
        publish(&mut publisher, "NVDA", number);
        loop {
            if let Message::Text(_) = subscriber.read().unwrap() {
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    server.shutdown().unwrap();
    elapsed
}
