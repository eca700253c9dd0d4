//! Interoperability with the WebSocket clients people actually use, both strict about what a
//! server sends: Python `websockets` and Node `ws` each run `tests/interop/*_client.*` against
//! the real `ringcast --echo` process (text, binary, fragmented and multi-byte UTF-8 messages, a
//! 3 MiB message, a ping, and a clean close with 1000). A protocol error either library reports
//! is a bug in ringcast.

mod support;

use std::process::Command;
use std::time::Duration;

use support::server::ServerProcess;
use support::tools::{self, INSTALL_COMMAND, ToolRun};

/// Far above the clients' own 10 s waits, so that they report what they were waiting for.
const CLIENT_DEADLINE: Duration = Duration::from_secs(120);

fn assert_client_passed(name: &str, run: &ToolRun, server: &ServerProcess) {
    assert!(
        run.status.success(),
        "{name} failed with {}\n{}\n--- server log (end) ---\n{}",
        run.status,
        run.outputs(),
        server.log_tail()
    );
}

/// Proves Python `websockets` completes every exchange with ringcast and closes cleanly.
#[test]
fn python_websockets_client_round_trips() {
    let python = tools::tool_path("RINGCAST_PYTHON", ".venv/bin/python");
    tools::require_installed(&python, "the Python venv with websockets");
    let directory = tools::fresh_directory("interop-python");
    let server = ServerProcess::start(&["--echo", "--log", "debug"]);
    let mut command = Command::new(python);
    command
        .arg(tools::manifest_path("tests/interop/python_client.py"))
        .arg(server.url("/interop/python"));
    let missing = format!("run `{INSTALL_COMMAND}`, which creates .venv");
    let run = tools::run_with_deadline(
        &mut command,
        "python_client",
        &directory,
        CLIENT_DEADLINE,
        &missing,
    );
    assert_client_passed("python_client.py", &run, &server);
}

/// Proves Node `ws` completes every exchange with ringcast and closes cleanly.
#[test]
fn node_ws_client_round_trips() {
    let ws = tools::manifest_path("tests/interop/node_modules/ws/package.json");
    tools::require_installed(&ws, "the npm package ws");
    let directory = tools::fresh_directory("interop-node");
    let server = ServerProcess::start(&["--echo", "--log", "debug"]);
    let mut command = Command::new("node");
    command
        .arg(tools::manifest_path("tests/interop/node_client.js"))
        .arg(server.url("/interop/node"));
    let missing = format!("install Node.js 20 with npm, then run `{INSTALL_COMMAND}`");
    let run = tools::run_with_deadline(
        &mut command,
        "node_client",
        &directory,
        CLIENT_DEADLINE,
        &missing,
    );
    assert_client_passed("node_client.js", &run, &server);
}
