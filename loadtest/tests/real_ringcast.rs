//! Small `connect` and `echo` runs of the load generator against the real ringcast binary, so
//! that the README's one test command exercises both ends together.
//!
//! Finding the server: Cargo gives a test the path of its own package's binaries only
//! (CARGO_BIN_EXE_*), and a package cannot depend on another package's binary on stable
//! Cargo. The mirror image (the test in the root crate running the load generator) has the
//! same problem. So this test builds `ringcast` itself, with the Cargo that runs the test,
//! into the same target directory and profile as the test executable: under
//! `cargo test --workspace` the binary is already built and up to date, so the build is a
//! no-op; under `cargo test -p ringcast-loadtest` it is built (or rebuilt) before use, so the
//! test never runs a stale server. Cargo holds its build lock only while compiling, not while
//! tests run, so the nested build does not wait on the outer one.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// How long the server may take to print its address.
const STARTUP_WAIT: Duration = Duration::from_secs(30);

/// The target directory and profile this test was built into: its executable is
/// `<target>/<profile>/deps/real_ringcast-<hash>`.
fn target_profile() -> (PathBuf, String) {
    let executable = std::env::current_exe().unwrap();
    let profile_directory = executable.parent().unwrap().parent().unwrap();
    let profile = profile_directory.file_name().unwrap().to_string_lossy();
    (
        profile_directory.parent().unwrap().to_owned(),
        profile.into_owned(),
    )
}

/// Builds (if needed) and returns the path of the `ringcast` binary.
fn ringcast_binary() -> PathBuf {
    let (target, profile) = target_profile();
    let mut command = Command::new(env!("CARGO"));
    command
        .args(["build", "--quiet", "-p", "ringcast", "--bin", "ringcast"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap());
    match profile.as_str() {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let status = command.status().expect("running cargo build for ringcast");
    assert!(status.success(), "cargo build -p ringcast failed: {status}");
    target.join(&profile).join("ringcast")
}

/// A running ringcast, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(arguments: &[&str]) -> Server {
        Server::start_with_environment(arguments, &[])
    }

    fn start_with_environment(arguments: &[&str], environment: &[(&str, &str)]) -> Server {
        let mut child = Command::new(ringcast_binary())
            .envs(environment.iter().copied())
            // Warnings and errors only: the info lines of a healthy start are noise in test output.
            .args(["--listen", "127.0.0.1:0", "--log", "warn"])
            .args(arguments)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting ringcast");
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        // Keeps draining stdout so the server never blocks on a full pipe; ends at its exit.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = sender.send(reader.read_line(&mut line).map(|_| line));
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut server = Server {
            child,
            url: String::new(),
        };
        let line = receiver
            .recv_timeout(STARTUP_WAIT)
            .expect("ringcast printed its address")
            .unwrap();
        let address = line
            .trim_end()
            .strip_prefix("ringcast listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        server.url = format!("ws://{address}/ws");
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the load generator and returns its JSON result.
fn loadtest(arguments: &[&str], name: &str) -> Value {
    let path = std::env::temp_dir().join(format!(
        "ringcast-loadtest-real-{name}-{}.json",
        std::process::id()
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_ringcast-loadtest"))
        .args(arguments)
        .arg("--output")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// 200 connections to ringcast, held for a second: every one upgrades and answers its ping.
#[test]
fn connect_against_ringcast() {
    let server = Server::start(&["--shards", "2"]);
    let arguments = [
        "connect",
        "--url",
        &server.url,
        "--connections",
        "200",
        "--rate",
        "2000",
        "--hold-seconds",
        "1",
    ];
    let result = loadtest(&arguments, "connect");
    let totals = &result["totals"];
    assert_eq!(totals["established"], 200, "{result:#}");
    assert_eq!(totals["alive"], 200, "{result:#}");
    assert_eq!(totals["failures_total"], 0, "{result:#}");
    assert_eq!(totals["connect_latency"]["count"], 200, "{result:#}");
}

/// Echo through ringcast's --echo mode: every echo is checked byte for byte, none fails.
#[test]
fn echo_against_ringcast() {
    let server = Server::start(&["--shards", "2", "--echo"]);
    let arguments = [
        "echo",
        "--url",
        &server.url,
        "--connections",
        "10",
        "--payload-bytes",
        "100",
        "--warmup-seconds",
        "0",
        "--duration-seconds",
        "1",
    ];
    let result = loadtest(&arguments, "echo");
    let totals = &result["totals"];
    assert_eq!(totals["established"], 10, "{result:#}");
    assert_eq!(totals["alive"], 10, "{result:#}");
    assert_eq!(totals["failures_total"], 0, "{result:#}");
    let messages = totals["messages"].as_u64().unwrap();
    assert!(messages > 0, "{result:#}");
    assert_eq!(totals["round_trip"]["count"].as_u64().unwrap(), messages);
}

/// Ingest into ringcast over WebSocket with subscribers (at a rate a debug build keeps up
/// with, so no slow-consumer policy applies), and flat out over pipelined HTTP: the server
/// numbers publishes (counted by the probe), subscribers get them in order, HTTP answers 200.
#[test]
fn publish_against_ringcast() {
    let server = Server::start(&["--shards", "1"]);
    let websocket = [
        "publish",
        "--url",
        &server.url,
        "--connections",
        "2",
        "--subscribers",
        "20",
        "--topics",
        "10",
        "--rate",
        "2000",
        "--warmup-seconds",
        "0",
        "--duration-seconds",
        "1",
    ];
    let result = loadtest(&websocket, "publish-websocket");
    assert!(result["accepted"].as_u64().unwrap() > 0, "{result:#}");
    assert_eq!(result["subscribers_ready"], 20, "{result:#}");
    assert_eq!(result["connections_failed"], 0, "{result:#}");
    assert!(
        result["deliveries_per_second"].as_f64().unwrap() > 0.0,
        "{result:#}"
    );
    for fault in ["gaps", "duplicates", "out_of_order"] {
        assert_eq!(result["faults"][fault], 0, "{result:#}");
    }
    let http = [
        "publish",
        "--url",
        &server.url,
        "--connections",
        "2",
        "--http",
        "--pipeline",
        "8",
        "--topics",
        "10",
        "--warmup-seconds",
        "0",
        "--duration-seconds",
        "1",
    ];
    let result = loadtest(&http, "publish-http");
    assert!(result["accepted"].as_u64().unwrap() > 0, "{result:#}");
    assert!(
        result["answered_per_second"].as_f64().unwrap() > 0.0,
        "{result:#}"
    );
    assert_eq!(result["refused"], 0, "{result:#}");
    assert_eq!(result["server_errors"], 0, "{result:#}");
}

/// Signs an HS256 token for `claims` with PyJWT (the independent signer of the server's auth
/// tests, `tests/auth/tokens.py`), whose secret it writes into `directory`.
fn signed_token(directory: &std::path::Path, claims: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var_os("RINGCAST_PYTHON")
        .map_or_else(|| root.join(".venv/bin/python"), PathBuf::from);
    assert!(
        python.exists(),
        "{} is missing: run tests/run-all, which installs the Python venv with PyJWT",
        python.display()
    );
    let mut child = Command::new(python)
        .arg(root.join("tests/auth/tokens.py"))
        .arg(directory)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let spec = format!(r#"{{"token": {{"key": "hs256", "claims": {claims}}}}}"#);
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), spec.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let tokens: Value = serde_json::from_slice(&output.stdout).unwrap();
    tokens["token"].as_str().unwrap().to_owned()
}

/// `--token-file` on the publish scenario: against a server with auth_mode = jwt, its
/// subscribers upgrade and its HTTP and WebSocket publishers publish with the token; without
/// it the server refuses the publishes (401).
#[test]
fn publish_with_a_token_against_ringcast_with_jwt() {
    let directory = tempfile::tempdir().unwrap();
    let token = signed_token(
        directory.path(),
        r#"{"sub": "load", "exp_in": 3600, "subscribe": ["*"], "publish": ["*"]}"#,
    );
    let token_path = directory.path().join("token");
    std::fs::write(&token_path, format!("{token}\n")).unwrap();
    let secret_path = directory.path().join("hs256.secret");
    let server = Server::start_with_environment(
        &["--shards", "1"],
        &[
            ("RINGCAST_AUTH_MODE", "jwt"),
            (
                "RINGCAST_JWT_HS256_SECRET_FILE",
                secret_path.to_str().unwrap(),
            ),
        ],
    );
    let token_file = token_path.to_str().unwrap();
    let common = [
        "publish",
        "--url",
        &server.url,
        "--connections",
        "2",
        "--subscribers",
        "10",
        "--topics",
        "10",
        "--rate",
        "2000",
        "--warmup-seconds",
        "0",
        "--duration-seconds",
        "1",
    ];
    for (name, extra) in [("websocket", None), ("http", Some("--http"))] {
        let mut arguments: Vec<&str> = common.to_vec();
        arguments.extend(["--token-file", token_file]);
        arguments.extend(extra);
        let result = loadtest(&arguments, &format!("publish-token-{name}"));
        assert!(result["accepted"].as_u64().unwrap() > 0, "{result:#}");
        assert_eq!(result["subscribers_ready"], 10, "{result:#}");
        assert_eq!(result["connections_failed"], 0, "{result:#}");
        assert_eq!(result["refused"], 0, "{result:#}");
        for fault in ["gaps", "duplicates", "out_of_order"] {
            assert_eq!(result["faults"][fault], 0, "{result:#}");
        }
    }
    let without = Command::new(env!("CARGO_BIN_EXE_ringcast-loadtest"))
        .args(["publish", "--url", &server.url, "--http", "--topics", "1"])
        .args(["--warmup-seconds", "0", "--duration-seconds", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&without.stdout);
    assert!(
        stdout.contains("| refused (HTTP) · server errors · unexpected | 1 ·"),
        "{stdout}"
    );
}
