//! Proves the broker end to end over real sockets: subscribe and publish across shards with
//! order and no loss, replay at every seam, each slow-consumer policy, and bad requests.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringcast::config::{BrokerConfig, ServerConfig, SlowConsumerPolicy};
use ringcast::server::Server;
use ringcast::shard::connection::Counters;
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
        ..ServerConfig::default()
    }
}

fn start_with(config: ServerConfig) -> Server {
    Server::start(config).unwrap()
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
    client
        .send(Message::text(request.to_string()))
        .unwrap();
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

fn subscribe(client: &mut Client, topics: &[&str]) -> Vec<u64> {
    send(client, json!({"op":"subscribe","topics":topics}));
    topics
        .iter()
        .map(|topic| {
            let reply = receive(client);
            assert_eq!(reply["op"], "subscribed", "{reply}");
            assert_eq!(reply["topic"], *topic);
            reply["seq"].as_u64().unwrap()
        })
        .collect()
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
