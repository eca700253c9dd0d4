//! Proves the connection table's limit is a policy, not a failure: connections beyond it are
//! refused and logged while the table is full, and accepting resumes as slots free.

mod support;

use std::time::Duration;

use support::server::{ServerProcess, connect_websocket};
use tungstenite::Message;

const TABLE_CONNECTIONS_MAX: usize = 8;

/// Proves a full table refuses the next connection, logs it, and accepts again once one closes.
#[test]
fn full_table_refuses_then_resumes() {
    let limit = TABLE_CONNECTIONS_MAX.to_string();
    let mut server =
        ServerProcess::start(&["--shards", "1", "--connections-per-shard-max", &limit]);
    let mut clients: Vec<_> = (0..TABLE_CONNECTIONS_MAX)
        .map(|_| connect_websocket(server.address, "/ws"))
        .collect();
    for client in &mut clients {
        client.send(Message::Ping(b"in".to_vec().into())).unwrap();
        assert!(matches!(client.read().unwrap(), Message::Pong(_)));
    }
    // The ninth finds the table full: the kernel drops it (EOF or reset) and accepting stops;
    // connections after it wait in the listen backlog. Either way none is upgraded meanwhile.
    let refused = std::net::TcpStream::connect(server.address).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut probe = refused.try_clone().unwrap();
    std::io::Write::write_all(
        &mut probe,
        support::server::upgrade_request("/ws").as_bytes(),
    )
    .unwrap();
    let mut answer = [0u8; 64];
    let upgraded = matches!(std::io::Read::read(&mut probe, &mut answer), Ok(read) if read > 0);
    assert!(!upgraded, "a connection beyond the table was served");
    // One slot frees: accepting resumes and a new client is served.
    clients.pop().unwrap().close(None).unwrap();
    let mut late = connect_websocket(server.address, "/ws");
    late.send(Message::Ping(b"late".to_vec().into())).unwrap();
    assert!(matches!(late.read().unwrap(), Message::Pong(payload) if &payload[..] == b"late"));
    drop((clients, late, refused, probe));
    assert_eq!(server.terminate().code(), Some(0));
    let log = server.stderr_text();
    assert!(
        log.contains("connection table full"),
        "the refusal was not logged: {log}"
    );
    assert!(
        log.contains("accept_table_full="),
        "the refusal was not counted: {log}"
    );
}
