//! The `ringcast` binary: parse the configuration, start the shards, wait for a signal.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{error, info};

use ringcast::cli::{self, Arguments};
use ringcast::config::{self, BrokerConfig};
use ringcast::server::Server;
use ringcast::ticker::Ticker;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often the main thread checks that every shard is still running.
const SHARD_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// mimalloc's `arena_eager_commit` option (index 4 in mimalloc 2 and 3's `mi_option_e`).
const MIMALLOC_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Turns mimalloc's eager arena commit off before anything allocates. Eager commit costs about
/// 14 MiB of resident memory per shard thread before it holds a single connection (measured:
/// 24 MiB → 10 MiB for one idle shard); committing on demand keeps an idle shard near the size
/// of its own tables. It must run before mimalloc reserves its first arena, which happens at the
/// first allocation: a prioritized constructor runs before mimalloc's own (unprioritized)
/// constructor and before the Rust runtime allocates anything.
extern "C" fn configure_allocator() {
    // SAFETY: mi_option_set only stores an option value; nothing runs concurrently this early.
    unsafe { libmimalloc_sys::mi_option_set(MIMALLOC_OPTION_ARENA_EAGER_COMMIT, 0) };
}

#[used]
#[unsafe(link_section = ".init_array.00101")]
static CONFIGURE_ALLOCATOR: extern "C" fn() = configure_allocator;

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let log_filter = arguments.log_filter(cli::process_environment);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&log_filter))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: escape codes in log files and pipes get in the way.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    cli::warn_unknown_variables();
    match config::raise_nofile_soft_limit_to_hard() {
        Ok(limits) => info!(soft = limits.soft, hard = limits.hard, "open files limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open files limit"),
    }
    let config = match cli::load_config(&arguments) {
        Ok(config) => config,
        Err(error) => {
            error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let shards = config.shards;
    let broker = config.broker.clone();
    // Handlers first: once the address is announced, a SIGTERM must drain, not kill, and a
    // SIGHUP reload the certificate.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).expect("installing signal handlers");
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(error) => {
            error!("could not start: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The first line on stdout names the address, so scripts and tests can find an ephemeral port.
    println!("ringcast listening on {}", server.local_address());
    info!(address = %server.local_address(), shards, "accepting connections");
    // The second names the TLS listener, when there is one.
    if let Some(address) = server.tls_local_address() {
        println!("ringcast listening on {address} (tls)");
        info!(%address, "accepting TLS connections");
    }
    let ticker = match demo_ticker(&server, &broker) {
        Ok(ticker) => ticker,
        Err(error) => {
            error!("could not start the demo feed: {error}");
            return ExitCode::FAILURE;
        }
    };
    wait_for_signal(&server, &mut signals);
    if let Some(ticker) = ticker {
        ticker.stop();
    }
    match server.shutdown() {
        Ok(reports) => {
            info!(shards = reports.len(), "stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(error) => {
            error!("stopping failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the demo feed when `--demo` asked for it.
fn demo_ticker(server: &Server, broker: &BrokerConfig) -> std::io::Result<Option<Ticker>> {
    if !broker.demo {
        return Ok(None);
    }
    Ticker::start(broker, server.publisher()?).map(Some)
}

fn wait_for_signal(server: &Server, signals: &mut Signals) {
    loop {
        for signal in signals.pending() {
            if signal == SIGHUP {
                reload_certificates(server);
                continue;
            }
            info!(signal, "signal received: draining connections");
            return;
        }
        if server.any_shard_finished() {
            error!("a shard stopped unexpectedly: shutting down");
            return;
        }
        std::thread::sleep(SHARD_CHECK_INTERVAL);
    }
}

/// SIGHUP: the TLS certificate and key are read again; new handshakes use them, open
/// connections keep theirs, and a pair that fails the checks leaves the old one in use.
fn reload_certificates(server: &Server) {
    match server.reload_certificates() {
        None => info!("SIGHUP: no TLS listener, nothing to reload"),
        Some(Ok(loaded)) => info!("SIGHUP: TLS certificate reloaded: {loaded}"),
        Some(Err(error)) => {
            error!("SIGHUP: TLS certificate not reloaded, the previous one stays in use: {error}")
        }
    }
}
