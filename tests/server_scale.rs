//! Ten thousand WebSockets at once on the real server: every one upgraded, served and closed.

mod support;

use support::server::{
    ServerProcess, close_every_client, open_websockets, ping_every_client, raise_open_files_limit,
};

const CONNECTION_COUNT: usize = 10_000;
/// Handshakes in flight at once: well under the listen backlog (net.core.somaxconn is often
/// 4,096), so no SYN is dropped and retried.
const HANDSHAKE_BATCH_COUNT: usize = 1_000;
/// Descriptors the test needs besides its sockets (stdio, the test harness, the server's pipes).
const SPARE_FILES: u64 = 256;

/// Proves two shards hold 10,000 concurrent WebSockets that each upgrade, pong and close.
#[test]
fn ten_thousand_concurrent_websockets() {
    raise_open_files_limit(CONNECTION_COUNT as u64 + SPARE_FILES);
    let server = ServerProcess::start(&["--shards", "2"]);
    let mut clients = open_websockets(
        server.address,
        "/ws",
        CONNECTION_COUNT,
        HANDSHAKE_BATCH_COUNT,
    );
    ping_every_client(&mut clients);
    close_every_client(&mut clients);
}
