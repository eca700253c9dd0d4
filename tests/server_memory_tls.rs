//! What an idle WebSocket over TLS costs the real server in resident memory (issue 12): the
//! plain connection's state, and what TLS adds once its handshake is over.

mod support;

use support::server::{close_every_client, raise_open_files_limit, subscribe_and_ping};
use support::tls::{TestPki, open_wss};

const CONNECTION_COUNT: usize = 10_000;
/// The warm-up opens as many connections in all, but only a tenth of them at once.
const WARM_UP_ROUND_COUNT: usize = 10;
const WARM_UP_CONNECTION_COUNT: usize = CONNECTION_COUNT / WARM_UP_ROUND_COUNT;
/// Threads opening connections at once: each handshake waits for the server.
const OPENING_THREAD_COUNT: usize = 8;
const SPARE_FILES: u64 = 256;
/// The budget per idle connection, TLS included.
const BYTES_PER_CONNECTION_MAX: u64 = 2048;

/// Proves 10,000 idle subscribers over TLS grow the server's RSS by at most 2 KiB each.
#[test]
fn idle_tls_connection_costs_at_most_2_kib_of_rss() {
    raise_open_files_limit(CONNECTION_COUNT as u64 + SPARE_FILES);
    let pki = TestPki::new("memory");
    // The connections are idle for as long as opening 10,000 takes; the server's keep-alive ping
    // (after 30 s by default) would be a frame the clients do not read, and traffic that is
    // not an idle connection's.
    let server = pki.start_server(&["--shards", "2", "--idle-timeout-ms", "600000"]);
    let address = server.tls_address.expect("a TLS listener");
    // One configuration for every client: most handshakes resume from the tickets of earlier
    // ones, as returning browsers' do, which costs the server no certificate signature. What an
    // idle connection keeps afterwards is the same either way (`tests/tls_idle_memory.rs`).
    let config = pki.client_config();
    // The warm-up is the plain test's (`tests/server_memory.rs` says why it is legitimate):
    // the receive ring, the tables sized at start-up, the buffer pool's first buffers (TLS's
    // ciphertext buffers among them) and the allocator's arenas come into residence at 1,000
    // connections at once, so that what the 10,000 add is per connection.
    let started = std::time::Instant::now();
    for _ in 0..WARM_UP_ROUND_COUNT {
        let mut warm_up = open_wss(
            address,
            "/ws",
            WARM_UP_CONNECTION_COUNT,
            &config,
            OPENING_THREAD_COUNT,
        );
        subscribe_and_ping(&mut warm_up);
        close_every_client(&mut warm_up);
    }
    eprintln!("warm-up: {:?}", started.elapsed());
    let baseline_bytes = server.rss_bytes();
    let mut idle = open_wss(
        address,
        "/ws",
        CONNECTION_COUNT,
        &config,
        OPENING_THREAD_COUNT,
    );
    eprintln!("opened: {:?}", started.elapsed());
    subscribe_and_ping(&mut idle);
    eprintln!("served: {:?}", started.elapsed());
    let held_bytes = server.rss_bytes();
    let growth_bytes = held_bytes.saturating_sub(baseline_bytes);
    let bytes_per_connection = growth_bytes / CONNECTION_COUNT as u64;
    eprintln!(
        "server RSS: {baseline_bytes} B after warm-up, {held_bytes} B with {CONNECTION_COUNT} \
         idle TLS connections: {bytes_per_connection} B per connection"
    );
    assert!(
        bytes_per_connection <= BYTES_PER_CONNECTION_MAX,
        "{bytes_per_connection} B per idle TLS connection, over {BYTES_PER_CONNECTION_MAX} B"
    );
    // The connections were really held while measured: each still completes its close.
    close_every_client(&mut idle);
}
