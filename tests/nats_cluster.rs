//! Proves ringcast nodes join through a real NATS JetStream (Debian's nats-server, started by
//! each test on a free loopback port with its own store): the stream is created by the first
//! node and found by the next; a server without JetStream or no server at all stops the start
//! with a message that says so; a message published on one node reaches the subscribers of
//! every node with the same seq; publishers on two nodes share one gap-free seq space; a node
//! replays with `since` what another published, also a node started after the messages; the
//! `cluster_*` counters of `/metrics` move with publishes, conflicts, failures and reconnects;
//! publishes of different topics fly together and one topic's wait in order; three nodes on a
//! three-server NATS cluster with an R3 stream share one seq space, also when the stream's
//! leader dies; and seeded random schedules of publishes, SIGKILLs and restarts of nodes leave
//! every subscriber's record gap-free and duplicate-free.

mod support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ringcast::config::{NatsConfig, ServerConfig, WebhookConfig};
use ringcast::server::Server;
use serde_json::{Value, json};
use support::nats::{NatsCluster, NatsServer, free_port};
use support::server::{HttpClient, ServerProcess, wait_until};
use support::webhook_receiver::{Answer, Receiver};
use tungstenite::{Message, WebSocket};

type Client = WebSocket<TcpStream>;

/// Time limits of the nodes in these tests: short, so that a refused start costs little.
const CONNECT_TIMEOUT_MS: u64 = 2_000;
const REQUEST_TIMEOUT_MS: u64 = 2_000;

fn node_config(urls: &str) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        drain_timeout_ms: 1_000,
        nats: NatsConfig {
            nats_urls: urls.into(),
            nats_connect_timeout_ms: CONNECT_TIMEOUT_MS,
            nats_request_timeout_ms: REQUEST_TIMEOUT_MS,
            ..NatsConfig::default()
        },
        ..ServerConfig::default()
    }
}

/// The stream as the NATS server has it, read with a client of the test's own.
fn stream_info(url: &str, name: &str) -> async_nats::jetstream::stream::Info {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let read = async {
            let client = async_nats::connect(url).await.unwrap();
            let context = async_nats::jetstream::new(client);
            let mut stream = context.get_stream(name).await.unwrap();
            stream.info().await.unwrap().clone()
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("the stream's info within 20 s")
    })
}

/// Proves the first node creates the stream with the documented defaults and a second node
/// on the same server starts on it too.
#[test]
fn nodes_create_and_share_the_stream() {
    let nats = NatsServer::start();
    let first = Server::start(node_config(&nats.url())).unwrap();
    let second = Server::start(node_config(&nats.url())).unwrap();
    let info = stream_info(&nats.url(), "ringcast");
    assert_eq!(info.config.subjects, ["ringcast.topic.>"]);
    assert_eq!(info.config.max_messages_per_subject, 1024);
    assert_eq!(info.config.max_bytes, 1024 * 1024 * 1024);
    assert_eq!(info.config.num_replicas, 1);
    assert!(info.config.allow_direct);
    second.shutdown().unwrap();
    first.shutdown().unwrap();
}

/// Proves a node started with another history depth brings the stream's to it, and one with
/// another subject prefix is refused (it would not see the others' topics).
#[test]
fn a_stream_that_differs_is_updated_or_refused() {
    let nats = NatsServer::start();
    Server::start(node_config(&nats.url()))
        .unwrap()
        .shutdown()
        .unwrap();
    let mut deeper = node_config(&nats.url());
    deeper.nats.nats_history_messages_max = 4096;
    Server::start(deeper).unwrap().shutdown().unwrap();
    let info = stream_info(&nats.url(), "ringcast");
    assert_eq!(info.config.max_messages_per_subject, 4096);

    let mut other = node_config(&nats.url());
    other.nats.nats_subject_prefix = "elsewhere".into();
    let message = Server::start(other).err().expect("refused").to_string();
    assert!(message.contains("exists but cannot be used"), "{message}");
    assert!(message.contains("nats_subject_prefix"), "{message}");
}

/// Proves a NATS server without JetStream stops the start with a message naming the fix.
#[test]
fn a_server_without_jetstream_is_refused() {
    let nats = NatsServer::start_without_jetstream();
    let message = Server::start(node_config(&nats.url()))
        .err()
        .expect("refused")
        .to_string();
    assert!(message.contains("has no JetStream"), "{message}");
    assert!(message.contains("-js"), "{message}");
}

/// Proves an unreachable NATS stops the start with a message naming the URL.
#[test]
fn unreachable_nats_stops_the_start() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    let message = Server::start(node_config(&url))
        .err()
        .expect("refused")
        .to_string();
    assert!(message.contains("cannot connect to NATS"), "{message}");
    assert!(message.contains(&url), "{message}");
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

/// The next JSON text message (pings and pongs skipped).
fn read_json(client: &mut Client) -> Value {
    loop {
        match client.read().unwrap() {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Subscribes with `request` and returns the `subscribed` answer.
fn subscribe(client: &mut Client, request: Value) -> Value {
    client.send(Message::text(request.to_string())).unwrap();
    let reply = read_json(client);
    assert_eq!(reply["op"], "subscribed", "{reply}");
    reply
}

/// Publishes `data` to `topic` over HTTP; the seq it got.
fn publish(publisher: &mut HttpClient, topic: &str, data: &Value) -> u64 {
    let response = publisher.post(
        &format!("/publish/{topic}"),
        data.to_string().as_bytes(),
        &[],
    );
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(response.status, 200, "{body}");
    body["seq"].as_u64().unwrap()
}

/// Reads `count` messages of `topic` and returns their seqs and data, in the order read.
fn read_messages(client: &mut Client, count: usize) -> Vec<(u64, Value)> {
    (0..count)
        .map(|_| {
            let message = read_json(client);
            assert!(message.get("op").is_none(), "{message}");
            (message["seq"].as_u64().unwrap(), message["data"].clone())
        })
        .collect()
}

/// Proves a message published on node A reaches subscribers on A and on B with the seq A's
/// publisher was answered.
#[test]
fn a_message_published_on_one_node_reaches_every_node_with_its_seq() {
    let nats = NatsServer::start();
    let node_a = Server::start(node_config(&nats.url())).unwrap();
    let node_b = Server::start(node_config(&nats.url())).unwrap();
    let mut subscriber_a = connect(node_a.local_address());
    let mut subscriber_b = connect(node_b.local_address());
    let subscribed_a = subscribe(
        &mut subscriber_a,
        json!({"op":"subscribe","topics":["AAPL"]}),
    );
    let subscribed_b = subscribe(
        &mut subscriber_b,
        json!({"op":"subscribe","topics":["AAPL"]}),
    );
    assert_eq!(
        subscribed_a["epoch"], subscribed_b["epoch"],
        "one sequence space"
    );
    let mut publisher = HttpClient::connect(node_a.local_address());
    for number in 1..=3 {
        assert_eq!(
            publish(&mut publisher, "AAPL", &json!({"n": number})),
            number
        );
    }
    let expected: Vec<(u64, Value)> = (1..=3).map(|n| (n, json!({"n": n}))).collect();
    assert_eq!(read_messages(&mut subscriber_a, 3), expected);
    assert_eq!(read_messages(&mut subscriber_b, 3), expected);
    node_b.shutdown().unwrap();
    node_a.shutdown().unwrap();
}

/// Proves publishers on two nodes at once to one topic share one seq space: every publish got
/// a distinct seq, together exactly 1..=N, and subscribers on both nodes read all N in seq
/// order with the data each publisher was answered for.
#[test]
fn concurrent_publishers_on_two_nodes_share_one_gap_free_seq_space() {
    const PER_NODE: u64 = 100;
    let nats = NatsServer::start();
    let node_a = Server::start(node_config(&nats.url())).unwrap();
    let node_b = Server::start(node_config(&nats.url())).unwrap();
    let mut subscribers: Vec<Client> = [&node_a, &node_b]
        .iter()
        .map(|node| {
            let mut client = connect(node.local_address());
            subscribe(&mut client, json!({"op":"subscribe","topics":["EUR.USD"]}));
            client
        })
        .collect();
    let publishers: Vec<_> = [node_a.local_address(), node_b.local_address()]
        .into_iter()
        .enumerate()
        .map(|(node, address)| {
            std::thread::spawn(move || {
                let mut publisher = HttpClient::connect(address);
                (0..PER_NODE)
                    .map(|number| {
                        let data = json!({"node": node, "n": number});
                        (publish(&mut publisher, "EUR.USD", &data), data)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut by_seq = BTreeMap::new();
    for publisher in publishers {
        for (seq, data) in publisher.join().unwrap() {
            assert!(by_seq.insert(seq, data).is_none(), "seq {seq} given twice");
        }
    }
    let total = 2 * PER_NODE;
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    let expected: Vec<(u64, Value)> = by_seq.into_iter().collect();
    for subscriber in &mut subscribers {
        assert_eq!(read_messages(subscriber, total as usize), expected);
    }
    node_b.shutdown().unwrap();
    node_a.shutdown().unwrap();
}

/// Proves history lives in JetStream: a node replays with `since` what another node
/// published, and so does a node started after every message was published, once it has
/// read the stream.
#[test]
fn replay_with_since_works_on_another_node_and_after_a_start() {
    let nats = NatsServer::start();
    let node_a = Server::start(node_config(&nats.url())).unwrap();
    let node_b = Server::start(node_config(&nats.url())).unwrap();
    let mut watcher = connect(node_b.local_address());
    subscribe(&mut watcher, json!({"op":"subscribe","topics":["MSFT"]}));
    let mut publisher = HttpClient::connect(node_a.local_address());
    for number in 1..=10 {
        publish(&mut publisher, "MSFT", &json!({"n": number}));
    }
    read_messages(&mut watcher, 10);
    let mut resuming = connect(node_b.local_address());
    let subscribed = subscribe(
        &mut resuming,
        json!({"op":"subscribe","topics":["MSFT"],"since":{"MSFT":3}}),
    );
    assert_eq!(subscribed["seq"], 10);
    let expected: Vec<(u64, Value)> = (4..=10).map(|n| (n, json!({"n": n}))).collect();
    assert_eq!(read_messages(&mut resuming, 7), expected);

    // Every node that saw the messages stops; a new one reads them from JetStream.
    let epoch = subscribed["epoch"].clone();
    node_a.shutdown().unwrap();
    node_b.shutdown().unwrap();
    let node_c = Server::start(node_config(&nats.url())).unwrap();
    let state = node_c.nats_state().unwrap();
    wait_until("node C read the stream", || state.is_caught_up());
    // The owner takes the last message from its mailbox after the bridge handed it on.
    wait_until("node C's owner has MSFT 10", || {
        let mut probe = connect(node_c.local_address());
        subscribe(&mut probe, json!({"op":"subscribe","topics":["MSFT"]}))["seq"] == 10
    });
    let mut late = connect(node_c.local_address());
    let since = json!({"MSFT": {"seq": 8, "epoch": epoch}});
    let subscribed = subscribe(
        &mut late,
        json!({"op":"subscribe","topics":["MSFT"],"since":since}),
    );
    assert_eq!(
        subscribed["epoch"], epoch,
        "the stream's epoch outlives the nodes"
    );
    let expected: Vec<(u64, Value)> = (9..=10).map(|n| (n, json!({"n": n}))).collect();
    assert_eq!(read_messages(&mut late, 2), expected);
    node_c.shutdown().unwrap();
}

fn health_status(address: SocketAddr) -> u16 {
    HttpClient::connect(address).get("/health").status
}

/// Proves a restart of nats-server is ridden out: `/health` says 503 degraded while NATS is
/// gone, a publish made meanwhile is retried until NATS is back and gets the next seq, the
/// nodes reconnect by themselves, and a subscriber on the other node sees every seq once.
#[test]
fn a_nats_restart_loses_nothing() {
    let mut nats = NatsServer::start();
    let mut config = node_config(&nats.url());
    // Long enough for NATS to come back and the client to reconnect (its backoff).
    config.nats.nats_publish_timeout_ms = 30_000;
    let node_a = Server::start(config.clone()).unwrap();
    let node_b = Server::start(config).unwrap();
    let mut subscriber = connect(node_b.local_address());
    subscribe(&mut subscriber, json!({"op":"subscribe","topics":["GOOG"]}));
    let mut publisher = HttpClient::connect(node_a.local_address());
    for number in 1..=3 {
        publish(&mut publisher, "GOOG", &json!({"n": number}));
    }
    assert_eq!(health_status(node_a.local_address()), 200);

    nats.kill();
    wait_until("node A reports degraded", || {
        health_status(node_a.local_address()) == 503
    });
    let address = node_a.local_address();
    let in_flight = std::thread::spawn(move || {
        publish(&mut HttpClient::connect(address), "GOOG", &json!({"n": 4}))
    });
    nats.start_again();
    assert_eq!(
        in_flight.join().unwrap(),
        4,
        "the publish made while NATS was down"
    );
    wait_until("node A healthy again", || {
        health_status(node_a.local_address()) == 200
    });
    for number in 5..=6 {
        assert_eq!(
            publish(&mut publisher, "GOOG", &json!({"n": number})),
            number
        );
    }
    let expected: Vec<(u64, Value)> = (1..=6).map(|n| (n, json!({"n": n}))).collect();
    assert_eq!(read_messages(&mut subscriber, 6), expected);
    node_b.shutdown().unwrap();
    node_a.shutdown().unwrap();
}

/// Deletes the stream with a client of the test's own.
fn delete_stream(url: &str, name: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let delete = async {
            let client = async_nats::connect(url).await.unwrap();
            let context = async_nats::jetstream::new(client);
            context.delete_stream(name).await.unwrap();
        };
        tokio::time::timeout(Duration::from_secs(20), delete)
            .await
            .expect("the stream deleted within 20 s");
    })
}

/// Proves a lost history changes the epoch: after the stream is deleted, the nodes make it
/// anew, a subscriber gets `reset` with seq 0 of a new epoch, then the new messages from 1.
#[test]
fn a_deleted_stream_changes_the_epoch_and_resets_subscribers() {
    let nats = NatsServer::start();
    let node_a = Server::start(node_config(&nats.url())).unwrap();
    let node_b = Server::start(node_config(&nats.url())).unwrap();
    let mut subscriber = connect(node_b.local_address());
    let subscribed = subscribe(&mut subscriber, json!({"op":"subscribe","topics":["IBM"]}));
    let mut publisher = HttpClient::connect(node_a.local_address());
    for number in 1..=3 {
        publish(&mut publisher, "IBM", &json!({"n": number}));
    }
    read_messages(&mut subscriber, 3);

    delete_stream(&nats.url(), "ringcast");
    // Publishes wait (503 after nats_publish_timeout_ms) until a node made the stream anew.
    let mut seq = None;
    wait_until("a publish after the stream came back", || {
        // A 503 closes the connection: each attempt on a connection of its own.
        let body = json!({"n": 1}).to_string();
        let mut publisher = HttpClient::connect(node_a.local_address());
        let response = publisher.post("/publish/IBM", body.as_bytes(), &[]);
        if response.status == 200 {
            let answer: Value = serde_json::from_slice(&response.body).unwrap();
            seq = answer["seq"].as_u64();
        }
        seq.is_some()
    });
    assert_eq!(seq, Some(1), "the new stream numbers from 1");
    let reset = read_json(&mut subscriber);
    assert_eq!(reset["op"], "reset", "{reset}");
    assert_eq!(reset["seq"], 0);
    assert_ne!(reset["epoch"], subscribed["epoch"], "a new epoch");
    assert_eq!(read_messages(&mut subscriber, 1), [(1, json!({"n": 1}))]);
    node_b.shutdown().unwrap();
    node_a.shutdown().unwrap();
}

/// Proves a node's death loses nothing: a subscriber of a `ringcast --nats` process that is
/// SIGKILLed mid-stream reconnects to another node with `since` and its epoch, and reads the
/// messages published meanwhile from the next seq on, with no gap and no duplicate.
#[test]
fn clients_of_a_killed_node_resume_on_another_without_a_gap() {
    let nats = NatsServer::start();
    let url = nats.url();
    let node_a = ServerProcess::start(&["--nats", &url, "--shards", "2"]);
    let node_b = Server::start(node_config(&url)).unwrap();
    let mut subscriber = connect(node_a.address);
    let subscribed = subscribe(&mut subscriber, json!({"op":"subscribe","topics":["TSLA"]}));
    let mut publisher = HttpClient::connect(node_b.local_address());
    for number in 1..=5 {
        publish(&mut publisher, "TSLA", &json!({"n": number}));
    }
    let seen = read_messages(&mut subscriber, 5);
    let last_seq = seen.last().unwrap().0;

    node_a.signal(libc::SIGKILL);
    for number in 6..=8 {
        publish(&mut publisher, "TSLA", &json!({"n": number}));
    }
    let mut resumed = connect(node_b.local_address());
    let since = json!({"TSLA": {"seq": last_seq, "epoch": subscribed["epoch"]}});
    let answer = subscribe(
        &mut resumed,
        json!({"op":"subscribe","topics":["TSLA"],"since":since}),
    );
    assert_eq!(answer["epoch"], subscribed["epoch"]);
    let expected: Vec<(u64, Value)> = (6..=8).map(|n| (n, json!({"n": n}))).collect();
    assert_eq!(read_messages(&mut resumed, 3), expected);
    node_b.shutdown().unwrap();
    drop(node_a);
}

/// The sum of the series of `name` whose labels contain `labels`, scraped from `address`.
fn metric(address: SocketAddr, name: &str, labels: &str) -> u64 {
    HttpClient::connect(address).metric_where(name, labels)
}

/// Publishes `count` messages to `topic` on each of `addresses` at once (a thread per node).
fn publish_everywhere_at_once(addresses: &[SocketAddr], topic: &'static str, count: u64) {
    let publishers: Vec<_> = addresses
        .iter()
        .map(|&address| {
            std::thread::spawn(move || {
                let mut publisher = HttpClient::connect(address);
                for number in 0..count {
                    publish(&mut publisher, topic, &json!({"n": number}));
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.join().unwrap();
    }
}

/// Publishes `data` to `topic` on a connection of its own; the status (a 503 closes it).
fn publish_status(address: SocketAddr, topic: &str, data: &Value) -> u16 {
    let body = data.to_string();
    HttpClient::connect(address)
        .post(&format!("/publish/{topic}"), body.as_bytes(), &[])
        .status
}

/// Proves the `cluster_*` families move with what the bridge does: publishes sent and
/// acknowledged, messages read on the other node, compare-and-set conflicts between nodes,
/// the degraded state while NATS is gone, a publish that timed out, one refused for a full
/// queue, and the reconnect.
#[test]
fn cluster_counters_follow_publishes_conflicts_and_failures() {
    let mut nats = NatsServer::start();
    let mut patient = node_config(&nats.url());
    patient.nats.nats_publish_timeout_ms = 30_000;
    patient.nats.nats_shard_publishes_max = 1;
    patient.nats.nats_publishes_in_flight_max = 1;
    let mut hasty = node_config(&nats.url());
    hasty.nats.nats_publish_timeout_ms = 1_000;
    let node_a = Server::start(patient).unwrap();
    let node_b = Server::start(hasty).unwrap();
    let (address_a, address_b) = (node_a.local_address(), node_b.local_address());
    let mut publisher = HttpClient::connect(address_a);
    for number in 1..=3 {
        publish(&mut publisher, "M", &json!({"n": number}));
    }
    let name = |family: &str| format!("ringcast_cluster_{family}");
    assert_eq!(metric(address_a, &name("publishes_total"), ""), 3);
    assert_eq!(
        metric(address_a, &name("publishes_acknowledged_total"), ""),
        3
    );
    assert!(metric(address_a, &name("publish_attempts_total"), "") >= 3);
    assert_eq!(metric(address_a, &name("state"), "state=\"connected\""), 1);
    assert_eq!(metric(address_a, &name("state"), "state=\"degraded\""), 0);
    assert_eq!(
        metric(address_a, &name("queue_depth_max"), ""),
        2,
        "1 per shard"
    );
    assert_eq!(
        metric(address_a, &name("publish_latency_seconds_count"), ""),
        3
    );
    wait_until("node B read the 3 messages", || {
        metric(address_b, &name("messages_received_total"), "") >= 3
    });

    // Two nodes publishing one topic at once collide on its last sequence sooner or later.
    let conflicts = || {
        [address_a, address_b]
            .iter()
            .map(|&address| metric(address, &name("publish_retries_total"), "conflict"))
            .sum::<u64>()
    };
    for _round in 0..50 {
        if conflicts() > 0 {
            break;
        }
        publish_everywhere_at_once(&[address_a, address_b], "C", 20);
    }
    assert!(conflicts() > 0, "no compare-and-set conflict in 50 rounds");

    nats.kill();
    wait_until("node A degraded", || {
        metric(address_a, &name("state"), "state=\"degraded\"") == 1
    });
    assert_eq!(publish_status(address_b, "M", &json!({"late": true})), 503);
    assert_eq!(
        metric(address_b, &name("publish_failures_total"), "timeout"),
        1
    );
    // Node A's bridge holds one publish in flight and four waiting behind it (the bridge's
    // WAITING_PER_IN_FLIGHT), its shard's queue one more: a seventh is refused.
    let waiting: Vec<_> = (0..7)
        .map(|number| {
            std::thread::spawn(move || publish_status(address_a, "Q", &json!({"n": number})))
        })
        .collect();
    wait_until("a publish refused for a full queue", || {
        metric(address_a, &name("publish_failures_total"), "queue_full") >= 1
    });
    // Attempts wait while the connection is gone: each is a retry for want of an answer.
    wait_until("node A retried for want of an answer", || {
        metric(address_a, &name("publish_retries_total"), "error") >= 1
    });
    nats.start_again();
    let statuses: Vec<u16> = waiting.into_iter().map(|w| w.join().unwrap()).collect();
    let refused = statuses.iter().filter(|&&status| status == 503).count();
    assert!(
        (1..=7).contains(&refused) && statuses.iter().all(|&s| s == 200 || s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.len() - refused <= 6,
        "more held than room: {statuses:?}"
    );
    wait_until("node A counted its reconnect", || {
        metric(address_a, &name("reconnects_total"), "") >= 1
    });
    assert_eq!(metric(address_a, &name("state"), "state=\"connected\""), 1);
    node_b.shutdown().unwrap();
    node_a.shutdown().unwrap();
}

/// Subscribes to every topic of `topics` and reads their `subscribed` answers.
fn subscribe_all(client: &mut Client, topics: &[&str]) {
    let request = json!({"op":"subscribe","topics":topics});
    client.send(Message::text(request.to_string())).unwrap();
    for _ in topics {
        let reply = read_json(client);
        assert_eq!(reply["op"], "subscribed", "{reply}");
    }
}

/// Reads `count` messages and returns them per topic, in the order read: (seq, data).
fn read_by_topic(client: &mut Client, count: usize) -> BTreeMap<String, Vec<(u64, Value)>> {
    let mut by_topic: BTreeMap<String, Vec<(u64, Value)>> = BTreeMap::new();
    for _ in 0..count {
        let message = read_json(client);
        assert!(message.get("op").is_none(), "{message}");
        let topic = message["topic"].as_str().unwrap().to_owned();
        let seq = message["seq"].as_u64().unwrap();
        by_topic
            .entry(topic)
            .or_default()
            .push((seq, message["data"].clone()));
    }
    by_topic
}

/// Proves three ringcast nodes on a three-server NATS cluster, with the stream kept in three
/// copies (`nats_replicas = 3`), keep one seq space per topic and deliver everything
/// everywhere: publishers on every node at once, each to its own topic and all to one shared
/// topic (where nats-server 2.9's clustered compare-and-set lets two simultaneous publishes
/// share a seq, nats-io/nats-server#4320, which the nodes find and publish again). Every
/// publish got a distinct seq, together 1..=N per topic, and every subscriber on every node
/// reads every seq of every topic once, in order, with the data it was published with.
#[test]
fn three_nodes_on_a_three_server_nats_cluster_share_one_seq_space() {
    const PER_NODE: u64 = 30;
    const OWN_TOPICS: [&str; 3] = ["BTC", "ETH", "SOL"];
    const SHARED: &str = "ALL";
    let cluster = NatsCluster::start();
    let mut config = node_config(&cluster.urls());
    config.nats.nats_replicas = 3;
    let nodes: Vec<Server> = (0..3)
        .map(|_| Server::start(config.clone()).unwrap())
        .collect();
    let info = stream_info(&cluster.servers[1].url(), "ringcast");
    assert_eq!(info.config.num_replicas, 3);
    let placement = info
        .cluster
        .expect("a clustered stream says where it lives");
    assert!(placement.leader.is_some(), "{placement:?}");
    assert_eq!(placement.replicas.len(), 2, "a leader and two replicas");

    let mut all_topics = OWN_TOPICS.to_vec();
    all_topics.push(SHARED);
    let mut subscribers: Vec<Client> = nodes
        .iter()
        .map(|node| {
            let mut client = connect(node.local_address());
            subscribe_all(&mut client, &all_topics);
            client
        })
        .collect();
    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(node, server)| {
            let address = server.local_address();
            std::thread::spawn(move || {
                let mut publisher = HttpClient::connect(address);
                (1..=PER_NODE)
                    .flat_map(|number| [OWN_TOPICS[node], SHARED].map(|topic| (topic, number)))
                    .map(|(topic, number)| {
                        let data = json!({"node": node, "n": number});
                        (topic, publish(&mut publisher, topic, &data), data)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut expected: BTreeMap<String, BTreeMap<u64, Value>> = BTreeMap::new();
    for publisher in publishers {
        for (topic, seq, data) in publisher.join().unwrap() {
            let seqs = expected.entry(topic.to_owned()).or_default();
            assert!(
                seqs.insert(seq, data).is_none(),
                "{topic} seq {seq} given twice"
            );
        }
    }
    let total: usize = expected.values().map(BTreeMap::len).sum();
    let expected: BTreeMap<String, Vec<(u64, Value)>> = expected
        .into_iter()
        .map(|(topic, seqs)| {
            let count = seqs.len() as u64;
            let seqs: Vec<(u64, Value)> = seqs.into_iter().collect();
            let numbers: Vec<u64> = seqs.iter().map(|(seq, _)| *seq).collect();
            assert_eq!(numbers, (1..=count).collect::<Vec<_>>(), "{topic}: a gap");
            (topic, seqs)
        })
        .collect();
    assert_eq!(expected[SHARED].len() as u64, 3 * PER_NODE);
    let collisions: u64 = nodes
        .iter()
        .map(|node| {
            metric(
                node.local_address(),
                "ringcast_cluster_publish_retries_total",
                "collision",
            )
        })
        .sum();
    // Not asserted (it depends on timing), but shown: how often the server's clustered CAS
    // let two nodes share a seq here (usually about ten times in this test).
    eprintln!("seqs taken twice, found and published again: {collisions}");
    for (index, subscriber) in subscribers.iter_mut().enumerate() {
        assert_eq!(read_by_topic(subscriber, total), expected, "node {index}");
    }
    for node in nodes {
        node.shutdown().unwrap();
    }
}

/// Seeds of the kill-and-restart property test: each is one schedule (the last on a
/// three-server NATS cluster with an R3 stream). `RINGCAST_CLUSTER_SEED`
/// replays one seed instead (the failure message names it).
const SCHEDULE_SEEDS: [u64; 3] = [0x5eed_0001, 0x5eed_0002, 0x5eed_0003];
/// Steps of one schedule: publishes, kills and restarts.
const SCHEDULE_STEPS: usize = 40;
const SCHEDULE_NODES: usize = 3;
const SCHEDULE_SUBSCRIBERS: usize = 4;
const SCHEDULE_TOPICS: [&str; 2] = ["P1", "P2"];
/// How long a drain waits for one more message before it takes the subscriber's record as
/// complete for now (a pause, not a check: the final wait is bounded by `wait_until`).
const DRAIN_PAUSE: Duration = Duration::from_millis(20);

/// One subscriber of the schedule: the node it is on, its connection, and every message it
/// read per topic, in order: (seq, data); and the epoch of each topic it was told.
struct Subscriber {
    node: usize,
    client: Option<Client>,
    records: BTreeMap<String, Vec<(u64, Value)>>,
    epoch: Option<Value>,
    /// `reset` answers: each would start a new epoch of the record (none are expected here).
    resets: Vec<Value>,
}

impl Subscriber {
    /// `since` for every topic: the last seq read and the epoch.
    fn since(&self) -> Value {
        let mut since = serde_json::Map::new();
        for topic in SCHEDULE_TOPICS {
            let seq = self
                .records
                .get(topic)
                .and_then(|record| record.last())
                .map_or(0, |(seq, _)| *seq);
            let cursor = match &self.epoch {
                Some(epoch) => json!({"seq": seq, "epoch": epoch}),
                None => json!(seq),
            };
            since.insert(topic.into(), cursor);
        }
        Value::Object(since)
    }

    /// Connects to `address` and subscribes to every topic with `since` what it read.
    fn attach(&mut self, node: usize, address: SocketAddr) {
        let mut client = connect(address);
        let request = json!({"op":"subscribe","topics":SCHEDULE_TOPICS,"since":self.since()});
        client.send(Message::text(request.to_string())).unwrap();
        client
            .get_mut()
            .set_read_timeout(Some(DRAIN_PAUSE))
            .unwrap();
        self.node = node;
        self.client = Some(client);
    }

    /// Reads what has come; returns false when the connection is gone (its node killed).
    fn drain(&mut self) -> bool {
        let Some(client) = &mut self.client else {
            return false;
        };
        loop {
            let text = match client.read() {
                Ok(Message::Text(text)) => text,
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Err(tungstenite::Error::Io(error))
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return true;
                }
                Ok(_) | Err(_) => {
                    self.client = None;
                    return false;
                }
            };
            let message: Value = serde_json::from_str(&text).unwrap();
            match message["op"].as_str() {
                Some("subscribed") => {
                    let epoch = message["epoch"].clone();
                    assert!(
                        self.epoch.as_ref().is_none_or(|known| *known == epoch),
                        "the epoch changed without a reset: {message}"
                    );
                    self.epoch = Some(epoch);
                }
                Some("reset") => self.resets.push(message),
                Some(_) => panic!("unexpected {message}"),
                None => {
                    let topic = message["topic"].as_str().unwrap().to_owned();
                    let seq = message["seq"].as_u64().unwrap();
                    let record = self.records.entry(topic).or_default();
                    record.push((seq, message["data"].clone()));
                }
            }
        }
    }

    fn last_seq(&self, topic: &str) -> u64 {
        self.records
            .get(topic)
            .and_then(|record| record.last())
            .map_or(0, |(seq, _)| *seq)
    }
}

/// The seq the node at `address` has for `topic` now (its owner's latest), read with a probe.
fn node_seq(address: SocketAddr, topic: &str) -> u64 {
    let mut probe = connect(address);
    subscribe(&mut probe, json!({"op":"subscribe","topics":[topic]}))["seq"]
        .as_u64()
        .unwrap()
}

/// The cluster of one schedule: nodes as `ringcast --nats` processes (`None` while killed).
struct Schedule {
    url: String,
    /// Copies of the stream: 3 on a three-server NATS cluster.
    replicas: &'static str,
    nodes: Vec<Option<ServerProcess>>,
    /// Per topic: every seq published and its data, as the publishers were answered.
    published: BTreeMap<String, BTreeMap<u64, Value>>,
}

impl Schedule {
    fn start_node(&self) -> ServerProcess {
        let arguments = ["--nats", &self.url, "--shards", "2"];
        ServerProcess::start_with_environment(
            &arguments,
            &[("RINGCAST_NATS_REPLICAS", self.replicas)],
        )
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&node| self.nodes[node].is_some())
            .collect()
    }

    fn address(&self, node: usize) -> SocketAddr {
        self.nodes[node].as_ref().unwrap().address
    }

    fn last_published(&self, topic: &str) -> u64 {
        self.published
            .get(topic)
            .and_then(|seqs| seqs.keys().next_back().copied())
            .unwrap_or(0)
    }

    /// Waits (bounded) until `node` has read every topic up to `seqs` (a node just started
    /// reads the stream from its start; a `since` ahead of it would be answered `reset`).
    fn wait_for_node(&self, node: usize, seqs: &BTreeMap<&str, u64>) {
        let address = self.address(node);
        wait_until("the node read the stream far enough", || {
            seqs.iter()
                .all(|(topic, &seq)| node_seq(address, topic) >= seq)
        });
    }

    /// Attaches `subscriber` to a random live node that has read what it has.
    fn move_subscriber(&self, subscriber: &mut Subscriber, random: &mut fastrand::Rng) {
        let live = self.live();
        let node = live[random.usize(..live.len())];
        let seqs = SCHEDULE_TOPICS
            .iter()
            .map(|&topic| (topic, subscriber.last_seq(topic)))
            .collect();
        self.wait_for_node(node, &seqs);
        subscriber.attach(node, self.address(node));
    }
}

/// What one schedule did, so that the test can tell it exercised failures.
#[derive(Debug, Default)]
struct ScheduleCounts {
    publishes: usize,
    kills: usize,
    restarts: usize,
    moves: usize,
}

/// One schedule of `seed`: random publishes on random nodes, SIGKILLs and restarts of random
/// nodes, subscribers of a killed node moving to another with `since` and their epoch.
fn run_schedule(seed: u64) -> ScheduleCounts {
    let mut counts = ScheduleCounts::default();
    let mut random = fastrand::Rng::with_seed(seed);
    // The last seed's schedule runs on a three-server NATS cluster with an R3 stream.
    let on_cluster = seed == SCHEDULE_SEEDS[SCHEDULE_SEEDS.len() - 1];
    let (single, cluster) = match on_cluster {
        true => (None, Some(NatsCluster::start())),
        false => (Some(NatsServer::start()), None),
    };
    let url = match (&single, &cluster) {
        (Some(nats), _) => nats.url(),
        (_, Some(cluster)) => cluster.urls(),
        (None, None) => unreachable!("one of the two runs"),
    };
    let mut schedule = Schedule {
        replicas: if on_cluster { "3" } else { "1" },
        url,
        nodes: Vec::new(),
        published: BTreeMap::new(),
    };
    for _ in 0..SCHEDULE_NODES {
        let node = schedule.start_node();
        schedule.nodes.push(Some(node));
    }
    let mut subscribers: Vec<Subscriber> = (0..SCHEDULE_SUBSCRIBERS)
        .map(|index| {
            let mut subscriber = Subscriber {
                node: 0,
                client: None,
                records: BTreeMap::new(),
                epoch: None,
                resets: Vec::new(),
            };
            let node = index % SCHEDULE_NODES;
            subscriber.attach(node, schedule.address(node));
            subscriber
        })
        .collect();
    for step in 0..SCHEDULE_STEPS {
        let live = schedule.live();
        let dead: Vec<usize> = (0..SCHEDULE_NODES).filter(|n| !live.contains(n)).collect();
        let roll = random.u32(..100);
        if roll < 12 && live.len() > 1 {
            let victim = live[random.usize(..live.len())];
            schedule.nodes[victim]
                .as_ref()
                .unwrap()
                .signal(libc::SIGKILL);
            schedule.nodes[victim] = None;
            counts.kills += 1;
        } else if roll < 24 && !dead.is_empty() {
            let node = dead[random.usize(..dead.len())];
            schedule.nodes[node] = Some(schedule.start_node());
            counts.restarts += 1;
        } else {
            let node = live[random.usize(..live.len())];
            let topic = SCHEDULE_TOPICS[random.usize(..SCHEDULE_TOPICS.len())];
            let data = json!({"step": step, "node": node});
            let mut publisher = HttpClient::connect(schedule.address(node));
            let seq = publish(&mut publisher, topic, &data);
            let seqs = schedule.published.entry(topic.into()).or_default();
            assert!(
                seqs.insert(seq, data).is_none(),
                "{topic} seq {seq} given twice"
            );
            counts.publishes += 1;
        }
        for subscriber in &mut subscribers {
            let attached = subscriber.drain() && schedule.nodes[subscriber.node].is_some();
            if !attached {
                // Its node was killed: what it read before stands; it resumes elsewhere.
                subscriber.drain();
                schedule.move_subscriber(subscriber, &mut random);
                counts.moves += 1;
            }
        }
    }
    let finals: BTreeMap<&str, u64> = SCHEDULE_TOPICS
        .iter()
        .map(|&topic| (topic, schedule.last_published(topic)))
        .collect();
    for subscriber in &mut subscribers {
        wait_until("every subscriber read every topic to its end", || {
            if !subscriber.drain() {
                schedule.move_subscriber(subscriber, &mut random);
            }
            finals
                .iter()
                .all(|(topic, &seq)| subscriber.last_seq(topic) >= seq)
        });
    }
    for (index, subscriber) in subscribers.iter().enumerate() {
        assert!(
            subscriber.resets.is_empty(),
            "subscriber {index}: {:?}",
            subscriber.resets
        );
        for topic in SCHEDULE_TOPICS {
            let expected: Vec<(u64, Value)> = schedule
                .published
                .get(topic)
                .map(|seqs| seqs.clone().into_iter().collect())
                .unwrap_or_default();
            let numbers: Vec<u64> = expected.iter().map(|(seq, _)| *seq).collect();
            assert_eq!(
                numbers,
                (1..=finals[topic]).collect::<Vec<_>>(),
                "{topic}: a gap"
            );
            let record = subscriber.records.get(topic).cloned().unwrap_or_default();
            assert_eq!(record, expected, "subscriber {index}, {topic}");
        }
    }
    counts
}

/// Names the seed of the schedule that panicked.
struct SeedReport(u64);

impl Drop for SeedReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "the schedule of seed {:#x} failed: replay it with RINGCAST_CLUSTER_SEED={:#x}",
                self.0, self.0
            );
        }
    }
}

/// Proves the property of issue 16 under random failures: for each seeded schedule of
/// publishes on random nodes, SIGKILLs and restarts of random `ringcast --nats` processes, and
/// subscribers of a killed node resuming on another with `since` and their epoch, every
/// publish got a distinct seq (1..=N per topic), and every subscriber's record of every topic
/// is exactly 1..=N in order with the data published: no gap, no duplicate, no reset.
#[test]
fn random_kills_and_restarts_lose_and_repeat_nothing() {
    let seeds: Vec<u64> = match std::env::var("RINGCAST_CLUSTER_SEED") {
        Ok(seed) => {
            let digits = seed.trim_start_matches("0x");
            vec![u64::from_str_radix(digits, 16).expect("a hexadecimal seed")]
        }
        Err(_) => SCHEDULE_SEEDS.to_vec(),
    };
    let mut failures = 0;
    for seed in seeds {
        let _report = SeedReport(seed);
        let counts = run_schedule(seed);
        eprintln!("seed {seed:#x}: {counts:?}");
        failures += counts.kills.min(counts.moves);
    }
    assert!(
        failures > 0,
        "the schedules killed no node that had subscribers"
    );
}

/// Proves the bridge pipelines across topics and serialises within one: with NATS gone (every
/// publish stuck in its retries), publishes to five topics are all in flight at once and a
/// second publish of one of them waits behind the first; once NATS is back, each topic's
/// publishes get its next seqs in the order they were made.
#[test]
fn publishes_of_different_topics_fly_together_and_one_topic_waits() {
    const TOPICS: [&str; 5] = ["K0", "K1", "K2", "K3", "K4"];
    let mut nats = NatsServer::start();
    let mut config = node_config(&nats.url());
    config.nats.nats_publish_timeout_ms = 30_000;
    let node = Server::start(config).unwrap();
    let address = node.local_address();
    let name = |family: &str| format!("ringcast_cluster_{family}");
    nats.kill();
    wait_until("the node degraded", || {
        metric(address, &name("state"), "state=\"degraded\"") == 1
    });
    let firsts: Vec<_> = TOPICS
        .iter()
        .map(|&topic| {
            std::thread::spawn(move || {
                publish(&mut HttpClient::connect(address), topic, &json!({"n": 1}))
            })
        })
        .collect();
    wait_until("five publishes in flight at once", || {
        metric(address, &name("publishes_in_flight"), "") == 5
    });
    let second = std::thread::spawn(move || {
        publish(&mut HttpClient::connect(address), "K0", &json!({"n": 2}))
    });
    wait_until("K0's second publish waiting behind its first", || {
        metric(address, &name("publishes_waiting"), "") == 1
    });
    assert_eq!(metric(address, &name("publishes_in_flight"), ""), 5);
    nats.start_again();
    for first in firsts {
        assert_eq!(first.join().unwrap(), 1);
    }
    assert_eq!(second.join().unwrap(), 2, "after K0's first, in order");
    wait_until("nothing held", || {
        metric(address, &name("publishes_in_flight"), "") == 0
            && metric(address, &name("publishes_waiting"), "") == 0
    });
    node.shutdown().unwrap();
}

/// Proves the loss of the stream's leader in a three-server NATS cluster loses nothing: with
/// the stream in three copies, the nats-server leading it is SIGKILLed mid-stream; the others
/// elect a new leader, the nodes (whichever server they were connected to) carry on, the
/// publishes made meanwhile get the next seqs, and subscribers on both nodes read every seq
/// once, in order.
#[test]
fn the_stream_leaders_death_in_a_nats_cluster_loses_nothing() {
    const BEFORE: u64 = 10;
    const AFTER: u64 = 10;
    let mut cluster = NatsCluster::start();
    let mut config = node_config(&cluster.urls());
    config.nats.nats_replicas = 3;
    config.nats.nats_publish_timeout_ms = 30_000;
    let node_a = Server::start(config.clone()).unwrap();
    let node_b = Server::start(config).unwrap();
    let mut subscribers: Vec<Client> = [&node_a, &node_b]
        .iter()
        .map(|node| {
            let mut client = connect(node.local_address());
            subscribe(&mut client, json!({"op":"subscribe","topics":["LEAD"]}));
            client
        })
        .collect();
    let mut publishers = [
        HttpClient::connect(node_a.local_address()),
        HttpClient::connect(node_b.local_address()),
    ];
    for number in 1..=BEFORE {
        let publisher = &mut publishers[number as usize % 2];
        assert_eq!(publish(publisher, "LEAD", &json!({"n": number})), number);
    }
    let leader = stream_info(&cluster.servers[0].url(), "ringcast")
        .cluster
        .and_then(|placement| placement.leader)
        .expect("the stream has a leader");
    // The servers are named n0, n1, n2 in the order started.
    let index: usize = leader.trim_start_matches('n').parse().unwrap();
    cluster.servers[index].kill();
    // A connection each: a keep-alive one idle while the other waits out the election would
    // meet the server's request-head timeout (408). The first publishes wait for the election
    // and for the node's reading of the stream to come back (its consumer may have lived on
    // the dead server), up to nats_publish_timeout_ms.
    let addresses = [node_a.local_address(), node_b.local_address()];
    for number in BEFORE + 1..=BEFORE + AFTER {
        let address = addresses[number as usize % 2];
        let mut publisher = HttpClient::connect_patient(address, Duration::from_secs(60));
        assert_eq!(
            publish(&mut publisher, "LEAD", &json!({"n": number})),
            number
        );
    }
    let expected: Vec<(u64, Value)> = (1..=BEFORE + AFTER).map(|n| (n, json!({"n": n}))).collect();
    for subscriber in &mut subscribers {
        assert_eq!(read_messages(subscriber, expected.len()), expected);
    }
    node_b.shutdown().unwrap();
    node_a.shutdown().unwrap();
}

/// Proves a publish refused while NATS is gone (503 after `nats_publish_timeout_ms`) is not
/// stored once NATS is back: the client library would send what it kept meanwhile, and the
/// publisher, told it failed, would publish it again.
#[test]
fn a_publish_refused_while_nats_is_gone_is_not_stored_later() {
    let mut nats = NatsServer::start();
    let mut hasty = node_config(&nats.url());
    hasty.nats.nats_publish_timeout_ms = 1_000;
    let node = Server::start(hasty).unwrap();
    let address = node.local_address();
    assert_eq!(
        publish(&mut HttpClient::connect(address), "Z", &json!({"n": 1})),
        1
    );
    nats.kill();
    wait_until("the node degraded", || {
        metric(address, "ringcast_cluster_state", "state=\"degraded\"") == 1
    });
    assert_eq!(publish_status(address, "Z", &json!({"n": 2})), 503);
    nats.start_again();
    wait_until("the node connected again", || {
        metric(address, "ringcast_cluster_state", "state=\"connected\"") == 1
    });
    assert_eq!(
        publish(&mut HttpClient::connect(address), "Z", &json!({"n": 3})),
        2,
        "the refused publish took no seq"
    );
    let info = stream_info(&nats.url(), "ringcast");
    assert_eq!(
        info.state.messages, 2,
        "the refused publish is not in the stream"
    );
    node.shutdown().unwrap();
}

/// A Standard Webhooks secret (24 bytes) for the occupancy receiver.
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// How long a node that stops writing its heartbeat counts as live in the occupancy test.
const LIVENESS_MS: u64 = 1_500;

/// A node of the occupancy test: its webhook wants only `topic.occupied` and `topic.vacated`.
fn occupancy_node(url: &str, receiver: &Receiver) -> ServerConfig {
    let mut config = node_config(url);
    config.nats.nats_node_liveness_ms = LIVENESS_MS;
    config.webhook = vec![WebhookConfig {
        url: receiver.url("/hook"),
        events: vec!["topic.occupied".into(), "topic.vacated".into()],
        secret: WEBHOOK_SECRET.into(),
        batch_wait_ms: 20,
        timeout_ms: 500,
        retry_base_ms: 50,
        retry_max_ms: 200,
        allow_private_destinations: true,
        ..WebhookConfig::default()
    }];
    config
}

/// The occupancy events the receiver accepted, in order of arrival: type and topic.
fn occupancy_events(receiver: &Receiver) -> Vec<(String, String)> {
    let mut events = Vec::new();
    for request in receiver.accepted() {
        let body: Value = serde_json::from_slice(&request.body).expect("a JSON body");
        let batch = match body {
            Value::Array(batch) => batch,
            event => vec![event],
        };
        for event in batch {
            let kind = event["type"].as_str().unwrap().to_owned();
            events.push((kind, event["data"]["topic"].as_str().unwrap().to_owned()));
        }
    }
    events
}

fn occupancy_applied(address: SocketAddr) -> u64 {
    metric(
        address,
        "ringcast_cluster_occupancy_changes_total",
        "outcome=\"applied\"",
    )
}

fn close_client(mut client: Client) {
    client.close(None).unwrap();
    while client.read().is_ok() {}
}

/// Proves `topic.occupied` and `topic.vacated` are decided once for the whole cluster: the
/// first subscriber of a topic on any node sends `topic.occupied`, a second on another node
/// and the first's leaving send nothing, the last's leaving sends `topic.vacated`; and when a
/// node holding a topic's only subscriber is SIGKILLed, another node sends the
/// `topic.vacated` it owed once its heartbeat has expired.
#[test]
fn occupancy_webhooks_are_decided_once_for_the_cluster() {
    let nats = NatsServer::start();
    let url = nats.url();
    let receiver = Receiver::start(WEBHOOK_SECRET, |_| Answer::ok());
    let node_a = Server::start(occupancy_node(&url, &receiver)).unwrap();
    let node_b = Server::start(occupancy_node(&url, &receiver)).unwrap();
    let (address_a, address_b) = (node_a.local_address(), node_b.local_address());
    let expected = |kinds: &[&str], topic: &str| -> Vec<(String, String)> {
        kinds
            .iter()
            .map(|kind| (kind.to_string(), topic.to_owned()))
            .collect()
    };

    let mut first = connect(address_a);
    subscribe(&mut first, json!({"op":"subscribe","topics":["AAPL"]}));
    wait_until("topic.occupied", || !occupancy_events(&receiver).is_empty());
    let mut second = connect(address_b);
    subscribe(&mut second, json!({"op":"subscribe","topics":["AAPL"]}));
    wait_until("node B's change made", || occupancy_applied(address_b) == 1);
    close_client(first);
    wait_until("node A's leaving made", || {
        occupancy_applied(address_a) == 2
    });
    assert_eq!(
        occupancy_events(&receiver),
        expected(&["topic.occupied"], "AAPL")
    );
    close_client(second);
    wait_until("topic.vacated", || occupancy_events(&receiver).len() == 2);
    assert_eq!(
        occupancy_events(&receiver),
        expected(&["topic.occupied", "topic.vacated"], "AAPL")
    );

    let directory = support::tools::fresh_directory("nats-occupancy-killed");
    let config_path = directory.join("ringcast.toml");
    let config = format!(
        "[nats]\nnats_urls = \"{url}\"\nnats_node_liveness_ms = {LIVENESS_MS}\n\n\
         [[webhook]]\nurl = \"{}\"\nevents = [\"topic.occupied\", \"topic.vacated\"]\n\
         secret = \"{WEBHOOK_SECRET}\"\nbatch_wait_ms = 20\ntimeout_ms = 500\n\
         retry_base_ms = 50\nretry_max_ms = 200\nallow_private_destinations = true\n",
        receiver.url("/hook")
    );
    std::fs::write(&config_path, config).unwrap();
    let node_c = ServerProcess::start(&["--config", config_path.to_str().unwrap()]);
    let mut doomed = connect(node_c.address);
    subscribe(&mut doomed, json!({"op":"subscribe","topics":["MSFT"]}));
    wait_until("MSFT occupied", || occupancy_events(&receiver).len() == 3);
    node_c.signal(libc::SIGKILL);
    wait_until("MSFT vacated by a live node", || {
        occupancy_events(&receiver).len() == 4
    });
    let events = occupancy_events(&receiver);
    assert_eq!(
        events[2..],
        expected(&["topic.occupied", "topic.vacated"], "MSFT")
    );
    let swept = |address| {
        metric(
            address,
            "ringcast_cluster_occupancy_changes_total",
            "outcome=\"swept\"",
        )
    };
    assert!(swept(address_a) + swept(address_b) >= 1);
    drop(doomed);
    node_a.shutdown().unwrap();
    node_b.shutdown().unwrap();
    assert_eq!(occupancy_events(&receiver).len(), 4, "nothing more");
}

/// Proves `message.published` goes to a cluster's webhook once per message, from the node that
/// published it, although every node reads every message: three publishes on node A and two
/// on node B reach the receiver as five events, with seqs 1 to 5, and no more once both nodes
/// have stopped (and delivered what they held).
#[test]
fn message_events_are_sent_once_by_the_publishing_node() {
    let nats = NatsServer::start();
    let url = nats.url();
    let receiver = Receiver::start(WEBHOOK_SECRET, |_| Answer::ok());
    let node = || {
        let mut config = occupancy_node(&url, &receiver);
        config.webhook[0].events = vec!["message.published".into()];
        Server::start(config).unwrap()
    };
    let (node_a, node_b) = (node(), node());
    let mut publisher_a = HttpClient::connect(node_a.local_address());
    let mut publisher_b = HttpClient::connect(node_b.local_address());
    for number in 1..=3 {
        publish(&mut publisher_a, "IBM", &json!({"n": number}));
    }
    for number in 4..=5 {
        publish(&mut publisher_b, "IBM", &json!({"n": number}));
    }
    let seqs = |receiver: &Receiver| -> Vec<u64> {
        let mut seqs: Vec<u64> = receiver
            .accepted()
            .iter()
            .flat_map(
                |request| match serde_json::from_slice(&request.body).expect("a JSON body") {
                    Value::Array(batch) => batch,
                    event => vec![event],
                },
            )
            .map(|event| {
                assert_eq!(event["type"], "message.published", "{event}");
                event["data"]["seq"].as_u64().expect("a seq")
            })
            .collect();
        seqs.sort_unstable();
        seqs
    };
    wait_until("five message events", || seqs(&receiver).len() >= 5);
    node_a.shutdown().unwrap();
    node_b.shutdown().unwrap();
    assert_eq!(seqs(&receiver), [1, 2, 3, 4, 5]);
}
