//! Proves the cross-shard mailboxes carry commands end to end: publishes pushed from the main
//! thread reach subscribers on every shard, a shutdown closes each of them with 1001, and a
//! shard blocked with nothing else to do is woken by every burst of commands.

use std::net::TcpStream;
use std::time::Duration;

use ringcast::config::ServerConfig;
use ringcast::server::Server;
use tungstenite::protocol::frame::coding::CloseCode as TungsteniteCloseCode;
use tungstenite::{Message, WebSocket};

fn connect(address: std::net::SocketAddr) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (socket, response) = tungstenite::client(format!("ws://{address}/ws"), stream).unwrap();
    assert_eq!(response.status(), 101);
    socket
}

/// Proves a publish from the main thread reaches every subscriber whatever its shard, and
/// shutdown sends 1001 to all.
#[test]
fn publishes_and_shutdown_reach_every_shard() {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        ..ServerConfig::default()
    };
    let server = Server::start(config).unwrap();
    let address = server.local_address();
    // SO_REUSEPORT spreads connections by their addresses: 32 clients land on both shards
    // with overwhelming probability (2^-31 that they all land on one).
    let mut clients: Vec<_> = (0..32).map(|_| connect(address)).collect();
    // The `subscribed` answer proves each subscription took effect before the publish.
    for client in &mut clients {
        let subscribe = r#"{"op":"subscribe","topics":["AAPL"]}"#;
        client.send(Message::Text(subscribe.into())).unwrap();
        let reply: serde_json::Value =
            serde_json::from_str(client.read().unwrap().to_text().unwrap()).unwrap();
        assert_eq!(
            (&reply["op"], &reply["seq"]),
            (&"subscribed".into(), &0.into())
        );
    }
    server
        .publisher()
        .unwrap()
        .publish("AAPL", b"191.2")
        .unwrap();
    for client in &mut clients {
        let expected = r#"{"topic":"AAPL","seq":1,"data":191.2}"#;
        assert_eq!(client.read().unwrap(), Message::Text(expected.into()));
    }
    let reports = server.shutdown_in_background();
    for client in &mut clients {
        match client.read().unwrap() {
            Message::Close(Some(frame)) => assert_eq!(frame.code, TungsteniteCloseCode::Away),
            other => panic!("expected close 1001, got {other:?}"),
        }
        // Reading on completes the close handshake (tungstenite replies), then the server
        // closes the connection.
        while client.read().is_ok() {}
    }
    let reports = reports.join().unwrap().unwrap();
    let accepted: u64 = reports
        .iter()
        .map(|report| report.counters.connections_accepted)
        .sum();
    assert_eq!(accepted, 32);
    assert!(
        reports
            .iter()
            .all(|report| report.counters.connections_accepted > 0),
        "both shards served clients"
    );
}

/// Proves that a shard with no connections and no timers, blocked in its wait with nothing to
/// do, is woken by every burst of commands sent from another thread, and that nothing is
/// stranded: 2,000 bursts of publishes racing the shard's drains, then a shutdown. A lost wake-up (a
/// wake-up flag left set on an empty mailbox, so later senders skip the wake-up) leaves the
/// shard asleep for good, and the bounded wait for its report fails the test.
#[test]
fn a_blocked_shard_is_woken_by_every_burst() {
    const BURSTS: u64 = 2_000;
    const BURST_PUBLISHES: u64 = 3;
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 1,
        ..ServerConfig::default()
    };
    let server = Server::start(config).unwrap();
    let mut publisher = server.publisher().unwrap();
    for burst in 0..BURSTS {
        for _ in 0..BURST_PUBLISHES {
            // A full mailbox is refused, not lost: wait for room (the shard drains it).
            while publisher.publish("T", b"1").is_err() {
                std::thread::yield_now();
            }
        }
        // Let the shard take the burst and block again before the next one.
        if burst % 100 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let (report_sender, report_receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || report_sender.send(server.shutdown()));
    let reports = report_receiver
        .recv_timeout(Duration::from_secs(30))
        .expect("the shard did not wake for its commands within 30 s")
        .unwrap();
    assert_eq!(
        reports[0].counters.messages_published,
        BURSTS * BURST_PUBLISHES
    );
}
