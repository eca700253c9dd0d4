//! Floor programs: the least a WebSocket server on io_uring must do for the echo and fanout
//! scenarios, so that ringcast's figures can be stated as a ratio to what the kernel allows
//! on the same machine under the same load generator.
//!
//! - `floor echo`: receive, unmask, send one unmasked frame back, with ringcast's batching.
//! - `floor fanout`: answer subscriptions, and per publish encode one frame and send it to
//!   each subscriber with one `SEND`.
//!
//! Both share `server` (accept, receive, handshake, frames, sends). They are measuring
//! instruments, not servers: no timeouts, no limits beyond fixed tables, no metrics.

mod echo;
mod fanout;
mod server;

use std::io::Write;
use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;

use crate::cli::{FloorKind, FloorOptions};

/// Runs a floor program until it is killed. The first line on stdout says where it listens.
pub fn main(options: FloorOptions) -> Result<i32, String> {
    let address: SocketAddrV4 = options
        .listen
        .parse()
        .map_err(|error| format!("--listen {}: {error}", options.listen))?;
    let threads = match options.kind {
        FloorKind::Echo => options.threads.max(1),
        // Subscribers and publishers must share one table of topics: one thread.
        FloorKind::Fanout => 1,
    };
    // Bind every listener before announcing, so that port 0 resolves once for all threads.
    let first = server::listener(address).map_err(|error| format!("listen: {error}"))?;
    let bound = first
        .local_addr()
        .ok()
        .and_then(|address| address.as_socket_ipv4())
        .ok_or("no local address")?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(server::listener(bound).map_err(|error| format!("listen: {error}"))?);
    }
    println!("floor {:?} listening on {bound}", options.kind);
    let _ = std::io::stdout().flush();
    let handles: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let kind = options.kind;
            let connections_max = options.connections_max;
            std::thread::spawn(move || -> Result<(), String> {
                let core = server::Core::new(listener.as_raw_fd(), connections_max)
                    .map_err(|error| format!("io_uring set-up: {error}"))?;
                let outcome = match kind {
                    FloorKind::Echo => server::run(core, &mut echo::Echo::default()),
                    FloorKind::Fanout => server::run(core, &mut fanout::Fanout::default()),
                };
                drop(listener);
                outcome.map_err(|error| format!("io_uring: {error}"))
            })
        })
        .collect();
    for handle in handles {
        handle.join().map_err(|_| "a floor thread panicked")??;
    }
    Ok(0)
}
