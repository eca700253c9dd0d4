//! Proves the broker end to end over real sockets: subscribe and publish across shards with
//! order and no loss, replay at every seam, each slow-consumer policy, and bad requests.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ringcast::config::{BrokerConfig, ServerConfig, SlowConsumerPolicy};
use ringcast::server::Server;
use ringcast::stats::Counters;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

type Client = WebSocket<TcpStream>;

fn start(shards: usize, broker: BrokerConfig) -> Server {
    start_with(ServerConfig {
        shards,
        broker,
        ..test_config()
    })
}

fn test_config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        // Test clients do not answer the server's close at shutdown; don't wait long for them.
        drain_timeout_ms: 100,
        ..ServerConfig::default()
    }
}

fn start_with(config: ServerConfig) -> Server {
    Server::start(config).unwrap()
}

/// A stalled client's receive buffer, fixed before connecting: loopback's autotuning would
/// otherwise let the kernel hold up to 32 MB for it, and a much smaller one makes TCP crawl on
/// delayed acknowledgements when the client reads again.
const SLOW_RECEIVE_BUFFER_BYTES: usize = 256 * 1024;

fn connect_with_receive_buffer(address: SocketAddr, receive_buffer_bytes: usize) -> Client {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(receive_buffer_bytes).unwrap();
    socket.connect(&address.into()).unwrap();
    handshake(socket.into())
}

fn connect(address: SocketAddr) -> Client {
    handshake(TcpStream::connect(address).unwrap())
}

fn handshake(stream: TcpStream) -> Client {
    let address = stream.peer_addr().unwrap();
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

/// The next text message as JSON (pings and pongs are skipped).
fn receive(client: &mut Client) -> Value {
    loop {
        match client.read().unwrap() {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Subscribes and returns each topic's seq from its `subscribed` answer. Answers come from
/// each topic's owner shard, so they may arrive in any order.
fn subscribe(client: &mut Client, topics: &[&str]) -> Vec<u64> {
    send(client, json!({"op":"subscribe","topics":topics}));
    let mut seqs = HashMap::new();
    for _ in topics {
        let reply = receive(client);
        assert_eq!(reply["op"], "subscribed", "{reply}");
        seqs.insert(reply["topic"].as_str().unwrap().to_string(), seq_of(&reply));
    }
    topics.iter().map(|topic| seqs[*topic]).collect()
}

fn publish(client: &mut Client, topic: &str, data: Value) {
    send(client, json!({"op":"publish","topic":topic,"data":data}));
}

fn totals(server: Server) -> Counters {
    let reports = server.shutdown().unwrap();
    let mut total = Counters::default();
    for report in reports {
        let counters = report.counters;
        total.deliveries += counters.deliveries;
        total.messages_published += counters.messages_published;
        total.slow_consumer_drops += counters.slow_consumer_drops;
        total.slow_consumer_conflations += counters.slow_consumer_conflations;
        total.slow_consumer_closes += counters.slow_consumer_closes;
        total.request_errors += counters.request_errors;
        total.resets += counters.resets;
        total.replays += counters.replays;
    }
    total
}

/// Proves a publish reaches a subscriber as the documented message, with `data` verbatim.
#[test]
fn publish_reaches_subscriber() {
    let server = start(2, BrokerConfig::default());
    let mut subscriber = connect(server.local_address());
    assert_eq!(subscribe(&mut subscriber, &["AAPL"]), [0]);
    let mut publisher = connect(server.local_address());
    let text = r#"{"op":"publish","topic":"AAPL","data":{"px": 191.20,"z":[1,2]}}"#;
    publisher.send(Message::text(text)).unwrap();
    let Message::Text(message) = subscriber.read().unwrap() else {
        panic!("not text")
    };
    assert_eq!(
        message.as_str(),
        r#"{"topic":"AAPL","seq":1,"data":{"px": 191.20,"z":[1,2]}}"#
    );
    let counters = totals(server);
    assert_eq!(counters.messages_published, 1);
    assert_eq!(counters.deliveries, 1);
}

/// Proves every subscriber, whatever its shard, gets every message of every topic in seq order
/// with no gap or duplicate, while publishers on several shards publish concurrently, and that
/// each publisher's messages keep their order within a topic.
#[test]
fn order_and_no_loss_across_shards() {
    const TOPICS: [&str; 3] = ["AAPL", "MSFT", "GOOG"];
    const PUBLISHERS: usize = 6;
    const MESSAGES_PER_PUBLISHER: usize = 300;
    let server = start(4, BrokerConfig::default());
    let address = server.local_address();
    // 48 subscribers over 4 shards: each shard gets one with probability 1 - 4 * (3/4)^48
    // (about 1 - 4e-6); the HTTP publishing test checks coverage through /metrics instead.
    let mut subscribers: Vec<Client> = (0..48).map(|_| connect(address)).collect();
    for subscriber in &mut subscribers {
        assert_eq!(subscribe(subscriber, &TOPICS), [0, 0, 0]);
    }
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|publisher_index| {
            std::thread::spawn(move || {
                let mut publisher = connect(address);
                for counter in 0..MESSAGES_PER_PUBLISHER {
                    let topic = TOPICS[counter % TOPICS.len()];
                    publish(
                        &mut publisher,
                        topic,
                        json!({"p": publisher_index, "n": counter}),
                    );
                }
                // A round trip proves the server has read every publish before we close.
                publisher
                    .send(Message::Ping(b"done".to_vec().into()))
                    .unwrap();
                while !matches!(publisher.read().unwrap(), Message::Pong(_)) {}
            })
        })
        .collect();
    for publisher in publishers {
        publisher.join().unwrap();
    }
    let per_topic = PUBLISHERS * MESSAGES_PER_PUBLISHER / TOPICS.len();
    for subscriber in &mut subscribers {
        let mut next_seq: HashMap<String, u64> = HashMap::new();
        let mut last_counter: HashMap<(String, u64), i64> = HashMap::new();
        for _ in 0..PUBLISHERS * MESSAGES_PER_PUBLISHER {
            let message = receive(subscriber);
            let topic = message["topic"].as_str().unwrap().to_string();
            let seq = message["seq"].as_u64().unwrap();
            let expected = next_seq.entry(topic.clone()).or_insert(1);
            assert_eq!(seq, *expected, "gap or duplicate on {topic}");
            *expected += 1;
            let publisher = message["data"]["p"].as_u64().unwrap();
            let counter = message["data"]["n"].as_i64().unwrap();
            let last = last_counter.entry((topic, publisher)).or_insert(-1);
            assert!(counter > *last, "publisher {publisher}'s order broke");
            *last = counter;
        }
        for topic in TOPICS {
            assert_eq!(next_seq[topic], per_topic as u64 + 1);
        }
    }
    let counters = totals(server);
    assert_eq!(
        counters.messages_published,
        (PUBLISHERS * MESSAGES_PER_PUBLISHER) as u64
    );
    assert_eq!(
        counters.deliveries,
        (48 * PUBLISHERS * MESSAGES_PER_PUBLISHER) as u64
    );
}

fn seq_of(message: &Value) -> u64 {
    message["seq"].as_u64().unwrap()
}

/// Proves replay at every seam: since = latest (nothing replayed), since inside history (the
/// rest replayed), since before history (reset and a snapshot), since ahead of the topic
/// (reset), and that live messages follow each with no gap or duplicate.
#[test]
fn replay_at_every_seam() {
    let server = start(
        2,
        BrokerConfig {
            history_messages_max: 4,
            ..BrokerConfig::default()
        },
    );
    let address = server.local_address();
    let mut publisher = connect(address);
    let mut witness = connect(address);
    subscribe(&mut witness, &["EURUSD"]);
    for index in 1..=10 {
        publish(&mut publisher, "EURUSD", json!({"i": index}));
        assert_eq!(seq_of(&receive(&mut witness)), index);
    }
    let subscribe_since = |since: u64| {
        let mut client = connect(address);
        send(
            &mut client,
            json!({"op":"subscribe","topics":["EURUSD"],"since":{"EURUSD":since}}),
        );
        let subscribed = receive(&mut client);
        assert_eq!(subscribed["op"], "subscribed");
        assert_eq!(seq_of(&subscribed), 10);
        client
    };
    let mut at_latest = subscribe_since(10);
    let mut inside = subscribe_since(7);
    for expected in 8..=10 {
        let message = receive(&mut inside);
        assert_eq!(
            (seq_of(&message), message["data"]["i"].as_u64()),
            (expected, Some(expected))
        );
    }
    let mut before = subscribe_since(3);
    let reset = receive(&mut before);
    assert_eq!((reset["op"].as_str(), seq_of(&reset)), (Some("reset"), 10));
    assert_eq!(
        seq_of(&receive(&mut before)),
        10,
        "the snapshot follows reset"
    );
    let mut ahead = subscribe_since(99);
    assert_eq!(receive(&mut ahead)["op"], "reset");
    assert_eq!(seq_of(&receive(&mut ahead)), 10);
    publish(&mut publisher, "EURUSD", json!({"i": 11}));
    for client in [
        &mut at_latest,
        &mut inside,
        &mut before,
        &mut ahead,
        &mut witness,
    ] {
        assert_eq!(
            seq_of(&receive(client)),
            11,
            "live continues after the seam"
        );
    }
    let counters = totals(server);
    assert_eq!(counters.resets, 2);
    assert_eq!(counters.replays, 1);
}

/// Proves a last-value snapshot on subscribe for topics matching a configured pattern only.
#[test]
fn snapshot_for_matching_topics() {
    let server = start(
        2,
        BrokerConfig {
            snapshot_topics: vec!["FX.*".into()],
            ..BrokerConfig::default()
        },
    );
    let address = server.local_address();
    let mut publisher = connect(address);
    let mut witness = connect(address);
    subscribe(&mut witness, &["FX.EURUSD", "AAPL"]);
    publish(&mut publisher, "FX.EURUSD", json!(1.08));
    publish(&mut publisher, "AAPL", json!(191));
    receive(&mut witness);
    receive(&mut witness);
    let mut late = connect(address);
    assert_eq!(subscribe(&mut late, &["AAPL"]), [1]);
    send(&mut late, json!({"op":"subscribe","topics":["FX.EURUSD"]}));
    assert_eq!(receive(&mut late)["op"], "subscribed");
    let snapshot = receive(&mut late);
    assert_eq!(
        (snapshot["topic"].as_str(), snapshot["data"].as_f64()),
        (Some("FX.EURUSD"), Some(1.08))
    );
    totals(server);
}

/// Proves bad requests get an `error` reply and leave the connection and its subscriptions
/// working.
#[test]
fn bad_requests_are_answered_and_survived() {
    let server = start(
        1,
        BrokerConfig {
            request_bytes_max: 256,
            subscriptions_per_connection_max: 2,
            ..BrokerConfig::default()
        },
    );
    let mut client = connect(server.local_address());
    subscribe(&mut client, &["A"]);
    let bad: [Message; 6] = [
        Message::text("{not json"),
        Message::text(r#"{"op":"fly"}"#),
        Message::text(r#"{"op":"publish","topic":"A\u0001","data":1}"#),
        Message::text(r#"{"op":"publish","topic":"A"}"#),
        Message::text(format!(
            r#"{{"op":"publish","topic":"A","data":"{}"}}"#,
            "x".repeat(300)
        )),
        Message::binary(b"{}".to_vec()),
    ];
    let expected_reasons = [
        "malformed JSON",
        "unknown op: expected subscribe, unsubscribe, publish, refresh or ping",
        "topic name has a byte outside printable ASCII",
        "publish needs data",
        "request is larger than request_bytes_max",
        "requests are JSON text messages",
    ];
    for (message, reason) in bad.into_iter().zip(expected_reasons) {
        client.send(message).unwrap();
        let reply = receive(&mut client);
        assert_eq!(
            (reply["op"].as_str(), reply["reason"].as_str()),
            (Some("error"), Some(reason))
        );
    }
    // One more topic fits (2 allowed, "A" held); the next is refused.
    send(&mut client, json!({"op":"subscribe","topics":["B","C"]}));
    // B's answer comes from its owner, C's refusal at once: either may come first.
    let mut replies: Vec<(String, String)> = (0..2)
        .map(|_| {
            let reply = receive(&mut client);
            let field = |name: &str| reply[name].as_str().unwrap().to_string();
            (field("op"), field("topic"))
        })
        .collect();
    replies.sort();
    assert_eq!(
        replies,
        [
            ("error".into(), "C".into()),
            ("subscribed".into(), "B".into())
        ]
    );
    publish(&mut client, "A", json!("still here"));
    assert_eq!(receive(&mut client)["data"], "still here");
    let counters = totals(server);
    assert_eq!(counters.request_errors, 7);
}

/// Proves unsubscribe stops delivery and is acknowledged.
#[test]
fn unsubscribe_stops_delivery() {
    let server = start(2, BrokerConfig::default());
    let address = server.local_address();
    let mut client = connect(address);
    subscribe(&mut client, &["A", "B"]);
    send(&mut client, json!({"op":"unsubscribe","topics":["A"]}));
    let reply = receive(&mut client);
    assert_eq!(
        (reply["op"].as_str(), reply["topic"].as_str()),
        (Some("unsubscribed"), Some("A"))
    );
    let mut publisher = connect(address);
    publish(&mut publisher, "A", json!(1));
    publish(&mut publisher, "B", json!(2));
    let message = receive(&mut client);
    assert_eq!(
        (message["topic"].as_str(), seq_of(&message)),
        (Some("B"), 1)
    );
    totals(server);
}

/// Starts a server with a small outbound queue and the given policy, subscribes a client that
/// does not read, and publishes `count` messages of about 16 KiB: more than the kernel's socket
/// buffers on loopback hold (about 10 MB for both ends), so its queue fills. (Shrinking the
/// client's receive buffer instead makes loopback TCP crawl on delayed acknowledgements.) Returns the server, the stalled client and the publisher.
fn stall_subscriber(policy: SlowConsumerPolicy, count: u64) -> (Server, Client, Client) {
    stall_subscriber_with(
        policy,
        count,
        64 * 1024,
        BrokerConfig::default().outbound_shard_bytes_max,
    )
}

/// `stall_subscriber` with the per-connection and per-shard queue limits given.
fn stall_subscriber_with(
    policy: SlowConsumerPolicy,
    count: u64,
    outbound_queue_bytes_max: usize,
    outbound_shard_bytes_max: usize,
) -> (Server, Client, Client) {
    // One shard, so that a round trip with the publisher proves its publishes were delivered;
    // delivery applies the policy the same way whichever shard the publisher is on.
    let config = ServerConfig {
        shards: 1,
        outbound_queue_bytes_max,
        broker: BrokerConfig {
            slow_consumer_policy: policy,
            outbound_shard_bytes_max,
            ..BrokerConfig::default()
        },
        ..test_config()
    };
    let server = start_with(config);
    let address = server.local_address();
    let mut slow = connect_with_receive_buffer(address, SLOW_RECEIVE_BUFFER_BYTES);
    subscribe(&mut slow, &["TICK"]);
    let mut publisher = connect(address);
    let padding = "x".repeat(16 * 1024);
    for index in 1..=count {
        publish(&mut publisher, "TICK", json!({"i": index, "pad": padding}));
    }
    round_trip(&mut publisher);
    (server, slow, publisher)
}

/// Returns once the server has read everything `client` sent before: its pong comes after.
/// With one shard that also means every publish read was numbered and queued to subscribers,
/// since a shard carries out its own commands before it sends what the turn queued.
fn round_trip(client: &mut Client) {
    client.send(Message::Ping(b"sync".to_vec().into())).unwrap();
    while !matches!(client.read().unwrap(), Message::Pong(_)) {}
}

/// Reads the stalled client's backlog: a ping's pong comes after everything queued before it;
/// then a marker published once the queue has drained must arrive. Returns the seqs read.
fn drain_backlog(slow: &mut Client, publisher: &mut Client, marker: u64) -> Vec<u64> {
    slow.send(Message::Ping(b"drain".to_vec().into())).unwrap();
    let mut seqs = Vec::new();
    loop {
        match slow.read().unwrap() {
            Message::Text(text) => {
                let message: Value = serde_json::from_str(&text).unwrap();
                seqs.push(seq_of(&message));
            }
            Message::Pong(_) => break,
            // The server's heartbeat, when the drain outlasts idle_timeout_ms on a busy
            // machine; tungstenite answers it.
            Message::Ping(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    publish(publisher, "TICK", json!({"i": marker, "pad": ""}));
    loop {
        let seq = seq_of(&receive(slow));
        seqs.push(seq);
        if seq == marker {
            return seqs;
        }
    }
}

const STALL_MESSAGES: u64 = 1000;

/// Proves `drop`: a stalled subscriber loses the newest messages (counted), keeps its
/// connection, and what it gets is in order.
#[test]
fn slow_consumer_drop() {
    let (server, mut slow, mut publisher) =
        stall_subscriber(SlowConsumerPolicy::Drop, STALL_MESSAGES);
    let seqs = drain_backlog(&mut slow, &mut publisher, STALL_MESSAGES + 1);
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "in order");
    assert!(seqs.len() < STALL_MESSAGES as usize, "some were dropped");
    let counters = totals(server);
    let lost = STALL_MESSAGES + 1 - seqs.len() as u64;
    assert_eq!(counters.slow_consumer_drops, lost, "every drop is counted");
}

/// Proves `conflate`: a stalled subscriber's seq jumps forward but it always ends up with the
/// newest message, and every replaced message is counted.
#[test]
fn slow_consumer_conflate() {
    let (server, mut slow, mut publisher) =
        stall_subscriber(SlowConsumerPolicy::Conflate, STALL_MESSAGES);
    let seqs = drain_backlog(&mut slow, &mut publisher, STALL_MESSAGES + 1);
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "in order");
    assert!(
        seqs.contains(&STALL_MESSAGES),
        "the newest message before the marker survives conflation: {seqs:?}"
    );
    let counters = totals(server);
    let lost = STALL_MESSAGES + 1 - seqs.len() as u64;
    assert!(lost > 0);
    assert_eq!(
        counters.slow_consumer_conflations, lost,
        "every replaced message is counted"
    );
}

/// Proves the shard-wide queue budget: with a per-connection limit too large to matter, a
/// stalled subscriber that fills the shard's budget is conflated, and still ends with the newest
/// message once it reads again.
#[test]
fn shard_queue_budget_applies_the_policy() {
    // 48 MB published: several times what loopback's socket buffers hold.
    const MESSAGES: u64 = 3 * STALL_MESSAGES;
    let (server, mut slow, mut publisher) = stall_subscriber_with(
        SlowConsumerPolicy::Conflate,
        MESSAGES,
        64 * 1024 * 1024,
        256 * 1024,
    );
    let seqs = drain_backlog(&mut slow, &mut publisher, MESSAGES + 1);
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "in order");
    assert!(seqs.contains(&MESSAGES), "the newest survives");
    let counters = totals(server);
    assert!(counters.slow_consumer_conflations > 0);
    assert_eq!(
        counters.slow_consumer_conflations,
        MESSAGES + 1 - seqs.len() as u64
    );
}

/// Proves `disconnect`: a stalled subscriber is closed with 1008 "slow consumer" after what
/// was queued before.
#[test]
fn slow_consumer_disconnect() {
    let (server, mut slow, _publisher) =
        stall_subscriber(SlowConsumerPolicy::Disconnect, STALL_MESSAGES);
    let close = loop {
        match slow.read().unwrap() {
            Message::Text(_) => continue,
            Message::Close(frame) => break frame.unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "slow consumer");
    let counters = totals(server);
    assert_eq!(counters.slow_consumer_closes, 1);
}

/// Proves the demo feed publishes live quotes that subscribers receive in seq order.
#[test]
fn demo_feed_publishes_quotes() {
    let broker = BrokerConfig {
        demo: true,
        demo_symbols: 5,
        demo_messages_per_second: 500,
        ..BrokerConfig::default()
    };
    let server = start(2, broker.clone());
    let ticker = ringcast::ticker::Ticker::start(&broker, server.publisher().unwrap()).unwrap();
    let mut client = connect(server.local_address());
    let seqs = subscribe(&mut client, &["AAPL"]);
    for expected in seqs[0] + 1..=seqs[0] + 5 {
        let quote = receive(&mut client);
        assert_eq!(
            (quote["topic"].as_str(), seq_of(&quote)),
            (Some("AAPL"), expected)
        );
        let data = &quote["data"];
        let (bid, price, ask) = (
            data["bid"].as_f64(),
            data["px"].as_f64(),
            data["ask"].as_f64(),
        );
        assert!(bid < price && price < ask, "{data}");
        assert!(
            data["ts"].as_u64().unwrap() > 1_700_000_000_000,
            "Unix milliseconds"
        );
    }
    ticker.stop();
    totals(server);
}

/// Proves nothing is lost when mailboxes are tiny: publishes and deliveries that find a full
/// mailbox wait in the sender's outbox while the publisher's reading pauses, and every
/// subscriber still gets every message in order. Both topics' owners differ, so one of them is
/// remote to the publisher whatever its shard.
#[test]
fn full_mailboxes_push_back_without_loss() {
    let topics: Vec<String> = (0..)
        .map(|index| format!("P{index}"))
        .scan([None, None], |owners, topic| {
            let owner = ringcast::broker::owner_shard(topic.as_bytes(), 2);
            Some(
                owners[owner]
                    .replace(topic.clone())
                    .is_none()
                    .then_some(topic),
            )
        })
        .flatten()
        .take(2)
        .collect();
    let server = start(
        2,
        BrokerConfig {
            mailbox_commands_max: 2,
            outbox_commands_max: 4,
            ..BrokerConfig::default()
        },
    );
    let address = server.local_address();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut subscribers: Vec<Client> = (0..8).map(|_| connect(address)).collect();
    for subscriber in &mut subscribers {
        subscribe(subscriber, &names);
    }
    const MESSAGES: u64 = 2_000;
    let mut publisher = connect(address);
    for index in 0..MESSAGES {
        publish(&mut publisher, names[(index % 2) as usize], json!(index));
    }
    for subscriber in &mut subscribers {
        let mut next = [1u64, 1u64];
        for _ in 0..MESSAGES {
            let message = receive(subscriber);
            let topic = names
                .iter()
                .position(|name| message["topic"] == *name)
                .unwrap();
            assert_eq!(seq_of(&message), next[topic], "in order, nothing lost");
            next[topic] += 1;
        }
    }
    let reports = server.shutdown().unwrap();
    let mailbox_full: u64 = reports
        .iter()
        .map(|report| report.counters.mailbox_full)
        .sum();
    assert!(mailbox_full > 0, "the test must exercise full mailboxes");
}
