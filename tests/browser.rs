//! The board and the JavaScript client in real Chromium (Debian's `chromium`, headless, driven
//! by puppeteer-core from the committed `tests/interop/package-lock.json`), against the real
//! server: `tests/interop/browser_client.js` loads the board and checks that prices show and
//! move; takes a proxy in front of the server down and back three times while messages are
//! published and checks that the page saw every seq once and in order; and, with WebSocket
//! refused by the server and then SSE by the proxy, checks the client falls back to SSE and then
//! to long polling with every seq once and in order; with WebSocket refused by the proxy and
//! then let through, checks the client moves back to WebSocket by itself; and with
//! permessage-deflate negotiated, checks that a publish comes back to Chromium, compressed by
//! ringcast, intact; and that the board connected through the npm socket.io-client
//! (`?transport=socketio`) subscribes, publishes with acknowledgement, shows prices and
//! recovers every seq once and in order through cuts.

mod support;

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use support::server::ServerProcess;
use support::tools::{self, INSTALL_COMMAND};

/// Far above the script's own 300 s deadline, so that it reports what it was waiting for.
const CLIENT_DEADLINE: Duration = Duration::from_secs(400);

/// One Chromium at a time: three at once on a small shared machine starve each other.
static CHROMIUM: Mutex<()> = Mutex::new(());

fn run_scenario(scenario: &str, server: &ServerProcess, extra: &[&str]) {
    run_scenario_with(scenario, &server.address.to_string(), extra, &[], server);
}

/// Runs `browser_client.js SCENARIO ADDRESS EXTRA…` with `environment` added; `server`'s log
/// tail goes with a failure.
fn run_scenario_with(
    scenario: &str,
    address: &str,
    extra: &[&str],
    environment: &[(&str, &str)],
    server: &dyn ServerLog,
) {
    let _one_at_a_time = CHROMIUM
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let package = tools::manifest_path("tests/interop/node_modules/puppeteer-core/package.json");
    tools::require_installed(&package, "the npm package puppeteer-core");
    let chromium = tools::tool_path("RINGCAST_CHROMIUM", "/usr/bin/chromium");
    tools::require_installed(&chromium, "Chromium (apt-get install chromium)");
    let directory = tools::fresh_directory(&format!("browser-{scenario}"));
    let mut command = Command::new("node");
    command
        .arg(tools::manifest_path("tests/interop/browser_client.js"))
        .arg(scenario)
        .arg(address)
        .args(extra)
        .envs(environment.iter().copied())
        .env("RINGCAST_CHROMIUM", &chromium);
    let missing = format!("install Node.js 20 with npm, then run `{INSTALL_COMMAND}`");
    let name = format!("browser_{scenario}");
    let run = tools::run_with_deadline(&mut command, &name, &directory, CLIENT_DEADLINE, &missing);
    assert!(
        run.status.success(),
        "browser_client.js {scenario} failed with {}\n{}\n--- server log (end) ---\n{}",
        run.status,
        run.outputs(),
        server.tail()
    );
    println!("{}", run.stdout.trim());
}

/// What a failed scenario shows of the server: its log's end, or where the log went.
trait ServerLog {
    fn tail(&self) -> String;
}

impl ServerLog for ServerProcess {
    fn tail(&self) -> String {
        self.log_tail()
    }
}

/// The `restart` scenario runs the server itself; its log is the script's stderr.
struct ScriptsOwnServer;

impl ServerLog for ScriptsOwnServer {
    fn tail(&self) -> String {
        "(the script ran the server: its log is in the script's stderr above)".to_string()
    }
}

/// Proves Chromium's permessage-deflate works with ringcast's: the extension is negotiated with
/// both no-context-takeover parameters, and a 4 KB publish over it is fanned out compressed
/// and read by Chromium as the same JSON.
#[test]
fn deflate_round_trips_in_chromium() {
    let server = ServerProcess::start(&["--websocket-compression", "--shards", "2"]);
    run_scenario("deflate", &server, &[]);
}

/// Proves the board served at `/` loads in Chromium, shows the demo's 500 symbols with prices
/// and updates them; saves a screenshot (set RINGCAST_BOARD_SCREENSHOT to keep it elsewhere).
#[test]
fn board_shows_moving_prices_in_chromium() {
    let server = ServerProcess::start(&["--demo", "--shards", "2"]);
    let screenshot = std::env::var("RINGCAST_BOARD_SCREENSHOT").unwrap_or_else(|_| {
        let directory = tools::fresh_directory("browser-screenshot");
        directory.join("board.png").display().to_string()
    });
    run_scenario("board", &server, &[&screenshot]);
}

/// Proves the client reconnects by itself after its connection is cut and new ones refused
/// (three times, while messages are published), resuming every topic with `since`: the page
/// sees each seq of each topic once and in order, without a reset.
#[test]
fn client_resumes_exactly_after_outages_in_chromium() {
    let server = ServerProcess::start(&["--shards", "2"]);
    run_scenario("cut", &server, &[]);
}

/// Proves the board over the npm socket.io-client (`?transport=socketio`, its bundle served to
/// the page at the board's default path): it subscribes to its symbols and one more from the
/// search box, publishes with acknowledgement (the ack's seq checked) and shows each price;
/// through a proxy taken down and brought back three times while messages are published, every
/// reconnect is recovered by socket.io-client's connection-state recovery and the page sees
/// each seq of each topic once and in order, without a reset.
#[test]
fn board_over_socketio_client_recovers_exactly_in_chromium() {
    let server = ServerProcess::start(&["--shards", "2"]);
    run_scenario("socketio", &server, &[]);
}

/// Proves that with WebSocket refused (403) the client reads over SSE, and with SSE refused
/// too it falls back to long polling, with every seq once and in order across the switch.
#[test]
fn client_falls_back_to_sse_then_polling_in_chromium() {
    let server = ServerProcess::start_with_environment(
        &["--shards", "2"],
        &[("RINGCAST_WEBSOCKET_ENABLED", "false")],
    );
    run_scenario("fallback", &server, &[]);
}

/// Proves that a client that fell back to SSE because a proxy broke WebSocket moves back to
/// WebSocket by itself once the proxy lets it through, with every seq once and in order.
#[test]
fn client_moves_back_to_websocket_when_it_works_again_in_chromium() {
    let server = ServerProcess::start(&["--shards", "2"]);
    run_scenario("upgrade", &server, &[]);
}

/// A 32-byte HS256 secret for the token scenario (a test secret, never a deployment's).
const TEST_SECRET: &str = "browser-test-secret-0123456789abcdef";

/// Proves that when a token expires (no grace) a WebSocket client gets close 4001 and an SSE
/// client the `expired` event, and each asks the page for a new token, reconnects with it and
/// resumes with every seq once and in order.
#[test]
fn client_refreshes_an_expired_token_and_resumes_in_chromium() {
    let environment = [
        ("RINGCAST_AUTH_MODE", "jwt"),
        ("RINGCAST_JWT_HS256_SECRET", TEST_SECRET),
        ("RINGCAST_EXPIRY_GRACE_MS", "0"),
        ("RINGCAST_JWT_LEEWAY_MS", "0"),
    ];
    let server = ServerProcess::start_with_environment(&["--shards", "2"], &environment);
    let address = server.address.to_string();
    let secret = [("RINGCAST_JWT_HS256_SECRET", TEST_SECRET)];
    run_scenario_with("token", &address, &[], &secret, &server);
}

/// Proves that a server restart (SIGTERM, then a new process on the same port) closes the
/// client with 1001, that it reconnects by itself, and that it gets a reset per topic (a new
/// server is a new epoch) followed by every new seq in order.
#[test]
fn client_comes_back_after_a_server_restart_in_chromium() {
    let binary = env!("CARGO_BIN_EXE_ringcast");
    let environment = [("RINGCAST_BINARY", binary)];
    run_scenario_with("restart", "none", &[], &environment, &ScriptsOwnServer);
}
