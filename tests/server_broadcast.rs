//! Proves the cross-shard mailboxes carry commands end to end: a broadcast pushed from the main
//! thread reaches clients on every shard, and a shutdown closes each of them with 1001.

use std::net::TcpStream;
use std::time::Duration;

use ringcast::config::ServerConfig;
use ringcast::protocol::websocket::frame::{OpCode, encode_frame};
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

/// Proves a broadcast reaches every client whatever its shard, and shutdown sends 1001 to all.
#[test]
fn broadcast_and_shutdown_reach_every_shard() {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        ..ServerConfig::default()
    };
    let mut server = Server::start(config).unwrap();
    let address = server.local_address();
    // SO_REUSEPORT spreads connections by their addresses: 32 clients land on both shards
    // with overwhelming probability (2^-31 that they all land on one).
    let mut clients: Vec<_> = (0..32).map(|_| connect(address)).collect();
    // A ping round trip proves each upgrade completed before the broadcast is sent.
    for client in &mut clients {
        client
            .send(Message::Ping(b"ready".to_vec().into()))
            .unwrap();
        assert!(
            matches!(client.read().unwrap(), Message::Pong(payload) if &payload[..] == b"ready")
        );
    }
    server
        .broadcast(encode_frame(OpCode::Text, true, b"AAPL 191.2"))
        .unwrap();
    for client in &mut clients {
        assert_eq!(client.read().unwrap(), Message::Text("AAPL 191.2".into()));
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
