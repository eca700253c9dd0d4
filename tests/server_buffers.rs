//! Proves running out of receive buffers is a pause, not a failure: with a four-buffer receive
//! ring and many clients sending large messages at once, receives that find no buffer are
//! parked and re-armed as buffers return, and every message is still echoed intact.

mod support;

use support::server::{ServerProcess, connect_websocket};
use tungstenite::Message;

const CLIENTS: usize = 32;
const MESSAGES_PER_CLIENT: usize = 8;
const MESSAGE_BYTES: usize = 64 * 1024;

/// Proves ENOBUFS parks receives and loses nothing: every echo matches, and shortages happened.
#[test]
fn receive_buffer_shortage_parks_and_loses_nothing() {
    let mut server = ServerProcess::start_with_environment(
        &["--echo", "--shards", "1"],
        &[("RINGCAST_RECEIVE_BUFFERS_COUNT", "4")],
    );
    let address = server.address;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client_index| {
            std::thread::spawn(move || {
                let mut socket = connect_websocket(address, "/echo");
                for message_index in 0..MESSAGES_PER_CLIENT {
                    let fill = (client_index * MESSAGES_PER_CLIENT + message_index) as u8;
                    let payload = vec![fill; MESSAGE_BYTES];
                    socket
                        .send(Message::Binary(payload.clone().into()))
                        .unwrap();
                    match socket.read().unwrap() {
                        Message::Binary(echo) => assert!(echo[..] == payload[..], "echo differs"),
                        other => panic!("expected the echo, got {other:?}"),
                    }
                }
                socket.close(None).unwrap();
                while socket.read().is_ok() {}
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    assert_eq!(server.terminate().code(), Some(0));
    let log = server.stderr_text();
    assert!(
        log.contains("receive_buffer_shortages="),
        "no shortage was provoked: {log}"
    );
}
