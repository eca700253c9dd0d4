//! Interoperability with the clients people actually use, each strict about what a server
//! sends: Python `websockets` and Node `ws` each run `tests/interop/*_client.*` against the real
//! `ringcast --echo` process (text, binary, fragmented and multi-byte UTF-8 messages, a 3 MiB
//! message, a ping, and a clean close with 1000); the npm `eventsource` package (WHATWG
//! EventSource) reads an SSE stream of four topics across two shards through a proxy cut three
//! times mid-stream, and must end with every seq once and in order after its own reconnects.
//! Python `websockets` also runs its permessage-deflate against `--websocket-compression` for a
//! matrix of window sizes. A protocol error any library reports is a bug in ringcast.

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

/// Proves Python `websockets`' permessage-deflate works with ringcast's for every window
/// combination the client may offer (client_max_window_bits none, valueless, 9, 12, 15 by
/// server_max_window_bits none, 8, 9, 12, 15): the negotiated parameters are the ones ringcast
/// promises, and compressed text, binary, fragmented, empty and 3 MiB messages echo intact.
#[test]
fn python_websockets_deflate_window_matrix() {
    let python = tools::tool_path("RINGCAST_PYTHON", ".venv/bin/python");
    tools::require_installed(&python, "the Python venv with websockets");
    let directory = tools::fresh_directory("interop-python-deflate");
    let server = ServerProcess::start(&["--echo", "--websocket-compression", "--log", "debug"]);
    let mut command = Command::new(python);
    command
        .arg(tools::manifest_path(
            "tests/interop/python_deflate_client.py",
        ))
        .arg(server.url("/interop/python-deflate"));
    let missing = format!("run `{INSTALL_COMMAND}`, which creates .venv");
    let run = tools::run_with_deadline(
        &mut command,
        "python_deflate_client",
        &directory,
        CLIENT_DEADLINE,
        &missing,
    );
    assert_client_passed("python_deflate_client.py", &run, &server);
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

/// Proves the npm `eventsource` package resumes a multi-topic SSE stream by itself after the
/// connection breaks mid-stream (three times, while publishing goes on), with every seq of
/// every topic exactly once and in order: its `Last-Event-ID` is the stream's cursor.
#[test]
fn eventsource_resumes_every_topic_exactly_after_cuts() {
    let package = tools::manifest_path("tests/interop/node_modules/eventsource/package.json");
    tools::require_installed(&package, "the npm package eventsource");
    let directory = tools::fresh_directory("interop-eventsource");
    let server = ServerProcess::start_with_environment(
        &["--shards", "2", "--log", "debug"],
        &[("RINGCAST_SSE_RETRY_MS", "100")],
    );
    let mut command = Command::new("node");
    command
        .arg(tools::manifest_path("tests/interop/eventsource_client.js"))
        .arg(server.address.to_string())
        .arg("300")
        .arg("3");
    let missing = format!("install Node.js 20 with npm, then run `{INSTALL_COMMAND}`");
    let run = tools::run_with_deadline(
        &mut command,
        "eventsource_client",
        &directory,
        CLIENT_DEADLINE,
        &missing,
    );
    assert_client_passed("eventsource_client.js", &run, &server);
}
