//! Small `connect`, `echo`, `churn`, `publish` and `fanout` runs of the load generator against
//! the real ringcast binary, over ws:// and wss://, so that the README's one test command
//! exercises both ends together.
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
    /// wss://ADDRESS/ws when started with a TLS listener.
    tls_url: Option<String>,
}

impl Server {
    fn start(arguments: &[&str]) -> Server {
        Server::start_with_environment(arguments, &[])
    }

    /// A ringcast that also listens for TLS, with the certificate and key of `pki`.
    fn start_tls(pki: &TestPki, arguments: &[&str]) -> Server {
        let mut all = vec![
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-certificate",
            pki.certificate_path.to_str().unwrap(),
            "--tls-private-key",
            pki.key_path.to_str().unwrap(),
        ];
        all.extend_from_slice(arguments);
        Server::start_with_environment(&all, &[])
    }

    fn start_with_environment(arguments: &[&str], environment: &[(&str, &str)]) -> Server {
        let tls = arguments.contains(&"--tls-listen");
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
            for _ in 0..2 {
                let mut line = String::new();
                let _ = sender.send(reader.read_line(&mut line).map(|_| line));
            }
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut server = Server {
            child,
            url: String::new(),
            tls_url: None,
        };
        let address = |receiver: &mpsc::Receiver<std::io::Result<String>>, suffix: &str| {
            let line = receiver
                .recv_timeout(STARTUP_WAIT)
                .expect("ringcast printed its address")
                .unwrap();
            line.trim_end()
                .strip_prefix("ringcast listening on ")
                .and_then(|rest| rest.strip_suffix(suffix))
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .to_owned()
        };
        server.url = format!("ws://{}/ws", address(&receiver, ""));
        if tls {
            server.tls_url = Some(format!("wss://{}/ws", address(&receiver, " (tls)")));
        }
        server
    }

    fn tls_url(&self) -> &str {
        self.tls_url
            .as_deref()
            .expect("a server with a TLS listener")
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
    assert_every_connection_held(&result, 200);
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

/// A CA and a server certificate it signed for `localhost` and 127.0.0.1, made at test time
/// (no private key is committed), plus a second CA that vouches for nothing of the server's.
struct TestPki {
    _directory: tempfile::TempDir,
    ca_path: PathBuf,
    stranger_ca_path: PathBuf,
    certificate_path: PathBuf,
    key_path: PathBuf,
}

impl TestPki {
    fn new() -> TestPki {
        let directory = tempfile::tempdir().unwrap();
        let path = |name: &str| directory.path().join(name);
        let ca = certificate_authority("ringcast-loadtest test CA");
        let stranger = certificate_authority("a CA the server does not know");
        let key = rcgen::KeyPair::generate().unwrap();
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let certificate = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let pki = TestPki {
            ca_path: path("ca.pem"),
            stranger_ca_path: path("stranger-ca.pem"),
            certificate_path: path("certificate.pem"),
            key_path: path("key.pem"),
            _directory: directory,
        };
        std::fs::write(&pki.ca_path, ca.pem()).unwrap();
        std::fs::write(&pki.stranger_ca_path, stranger.pem()).unwrap();
        std::fs::write(&pki.certificate_path, certificate.pem()).unwrap();
        std::fs::write(&pki.key_path, key.serialize_pem()).unwrap();
        pki
    }

    fn ca(&self) -> &str {
        self.ca_path.to_str().unwrap()
    }
}

/// A self-signed CA named `name`.
fn certificate_authority(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertifiedIssuer::self_signed(params, key).unwrap()
}

/// 50 wss:// connections (tokio-uring client), verified as 127.0.0.1, held for a second:
/// every one completes TLS and the upgrade, and answers its ping.
#[test]
fn connect_over_wss_against_ringcast() {
    let pki = TestPki::new();
    let server = Server::start_tls(&pki, &["--shards", "2"]);
    let arguments = [
        "connect",
        "--url",
        server.tls_url(),
        "--ca",
        pki.ca(),
        "--connections",
        "50",
        "--rate",
        "500",
        "--hold-seconds",
        "1",
    ];
    let result = loadtest(&arguments, "connect-wss");
    assert_every_connection_held(&result, 50);
}

/// Echo over wss:// on the io_uring client, verified under the name `localhost`: every echo
/// is decrypted and checked byte for byte, none fails.
#[test]
fn echo_over_wss_against_ringcast() {
    let pki = TestPki::new();
    let server = Server::start_tls(&pki, &["--shards", "2", "--echo"]);
    let arguments = [
        "echo",
        "--url",
        server.tls_url(),
        "--ca",
        pki.ca(),
        "--server-name",
        "localhost",
        "--connections",
        "10",
        "--payload-bytes",
        "100",
        "--warmup-seconds",
        "0",
        "--duration-seconds",
        "1",
    ];
    let result = loadtest(&arguments, "echo-wss");
    let totals = &result["totals"];
    assert_eq!(totals["established"], 10, "{result:#}");
    assert_eq!(totals["alive"], 10, "{result:#}");
    assert_eq!(totals["failures_total"], 0, "{result:#}");
    let messages = totals["messages"].as_u64().unwrap();
    assert!(messages > 0, "{result:#}");
    assert_eq!(totals["round_trip"]["count"].as_u64().unwrap(), messages);
}

/// Fanout with `transport` subscribers on `subscribers_url` and WebSocket publishers on
/// wss://: every published message reaches each of its topic's subscribers once, in order,
/// with the seq the server gave it.
fn fanout_over_tls(pki: &TestPki, server: &Server, transport: &str, subscribers_url: &str) {
    let arguments = [
        "fanout",
        "--url",
        subscribers_url,
        "--publish-url",
        server.tls_url(),
        "--ca",
        pki.ca(),
        "--transport",
        transport,
        "--subscribers",
        "20",
        "--topics",
        "4",
        "--publishers",
        "2",
        "--rate",
        "100",
        "--duration-seconds",
        "1",
        "--drain-seconds",
        "5",
        "--latency-ms-p99-max",
        "100000",
    ];
    let result = loadtest(&arguments, &format!("fanout-{transport}-tls"));
    assert_eq!(result["subscribers_ready"], 20, "{result:#}");
    assert_eq!(result["publishers_ready"], 2, "{result:#}");
    assert_eq!(result["totals"]["failures_total"], 0, "{result:#}");
    assert_eq!(result["every_delivery_checked"], true, "{result:#}");
    let steps = result["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{result:#}");
    let step = &steps[0];
    let published = step["published"].as_u64().unwrap();
    assert!(published > 0, "{result:#}");
    // 5 subscribers per topic.
    assert_eq!(
        step["deliveries"].as_u64().unwrap(),
        5 * published,
        "{step:#}"
    );
    assert_eq!(step["missing"], 0, "{step:#}");
    for fault in ["gaps", "duplicates", "out_of_order", "seq_mismatches"] {
        assert_eq!(step["faults"][fault], 0, "{step:#}");
    }
    assert_eq!(step["messages_incomplete"], 0, "{step:#}");
}

/// Fanout over wss:// end to end: subscribers on the io_uring client, publishers on
/// tokio-uring, sequence and seq checked.
#[test]
fn fanout_over_wss_against_ringcast() {
    let pki = TestPki::new();
    let server = Server::start_tls(&pki, &["--shards", "2"]);
    fanout_over_tls(&pki, &server, "ws", server.tls_url());
}

/// The HTTP transports over https://: SSE subscribers (raw connections on the io_uring
/// client, usable once TLS is up) get what wss:// publishers publish, in order.
#[test]
fn fanout_sse_over_https_against_ringcast() {
    let pki = TestPki::new();
    let server = Server::start_tls(&pki, &["--shards", "2"]);
    let https_url = server.tls_url().replacen("wss://", "https://", 1);
    fanout_over_tls(&pki, &server, "sse", &https_url);
}

/// Ingest over TLS: WebSocket publishers with subscribers and the seq probe over wss://, then
/// pipelined HTTP publishes over https:// (raw connections, usable once TLS is up): the
/// server counts what it accepted, subscribers get it in order, every HTTP answer is 200.
#[test]
fn publish_over_wss_and_https_against_ringcast() {
    let pki = TestPki::new();
    let server = Server::start_tls(&pki, &["--shards", "1"]);
    let https_url = server.tls_url().replacen("wss://", "https://", 1);
    let common = ["--ca", pki.ca(), "--topics", "10", "--warmup-seconds", "0"];
    let websocket = [
        &["publish", "--url", server.tls_url()][..],
        &common,
        &[
            "--connections",
            "2",
            "--subscribers",
            "20",
            "--rate",
            "2000",
        ],
        &["--duration-seconds", "1"],
    ]
    .concat();
    let result = loadtest(&websocket, "publish-wss");
    assert!(result["accepted"].as_u64().unwrap() > 0, "{result:#}");
    assert_eq!(result["subscribers_ready"], 20, "{result:#}");
    assert_eq!(result["connections_failed"], 0, "{result:#}");
    for fault in ["gaps", "duplicates", "out_of_order"] {
        assert_eq!(result["faults"][fault], 0, "{result:#}");
    }
    let http = [
        &["publish", "--url", &https_url, "--http", "--pipeline", "8"][..],
        &common,
        &["--connections", "2", "--duration-seconds", "1"],
    ]
    .concat();
    let result = loadtest(&http, "publish-https");
    assert!(result["accepted"].as_u64().unwrap() > 0, "{result:#}");
    assert_eq!(result["connections_failed"], 0, "{result:#}");
    assert_eq!(result["refused"], 0, "{result:#}");
    assert_eq!(result["server_errors"], 0, "{result:#}");
}

/// Churn over wss://: each connection does TLS, the upgrade, a ping and a clean close (close
/// frames both ways, then close_notify); none fails.
#[test]
fn churn_over_wss_against_ringcast() {
    let pki = TestPki::new();
    let server = Server::start_tls(&pki, &["--shards", "1"]);
    let arguments = [
        "churn",
        "--url",
        server.tls_url(),
        "--ca",
        pki.ca(),
        "--rate",
        "100",
        "--duration-seconds",
        "1",
        "--concurrent-max",
        "20",
    ];
    let result = loadtest(&arguments, "churn-wss");
    let totals = &result["totals"];
    assert_eq!(totals["failures_total"], 0, "{result:#}");
    let opened = totals["established"].as_u64().unwrap();
    // What this proves is that every TLS connection closes cleanly; the open rate is the
    // plain churn test's business (here a debug build's handshakes on a shared machine may
    // fall behind the rate asked for).
    assert!((10..=100).contains(&opened), "{result:#}");
    assert_eq!(totals["attempted"].as_u64().unwrap(), opened, "{result:#}");
    assert_eq!(result["churn"]["closed_cleanly"].as_u64().unwrap(), opened);
    assert_eq!(result["churn"]["abandoned"], 0, "{result:#}");
}

/// A CA that did not sign the server's certificate fails every connection quickly, on both
/// client paths, counted as `tls_handshake_failed` (not a hang, not a timeout).
#[test]
fn a_wrong_ca_counts_tls_handshake_failures() {
    let pki = TestPki::new();
    let server = Server::start_tls(&pki, &["--shards", "1", "--echo"]);
    let stranger = pki.stranger_ca_path.to_str().unwrap();
    let common = ["--url", server.tls_url(), "--ca", stranger];
    let connect = [
        &["connect"][..],
        &common,
        &["--connections", "5", "--rate", "100", "--hold-seconds", "0"],
        &["--connect-timeout-seconds", "30"],
    ]
    .concat();
    let echo = [
        &["echo"][..],
        &common,
        &[
            "--connections",
            "5",
            "--warmup-seconds",
            "0",
            "--duration-seconds",
            "1",
        ],
        &["--connect-timeout-seconds", "30"],
    ]
    .concat();
    for (arguments, name) in [(connect, "connect"), (echo, "echo")] {
        let started = std::time::Instant::now();
        let result = loadtest(&arguments, &format!("wrong-ca-{name}"));
        let failures = &result["totals"]["failures"];
        assert_eq!(failures["tls_handshake_failed"], 5, "{result:#}");
        assert_eq!(result["totals"]["failures_total"], 5, "{result:#}");
        assert_eq!(result["totals"]["established"], 0, "{result:#}");
        // Well inside the 30 s connect timeout: the failure is the verdict, not a timeout.
        assert!(started.elapsed() < Duration::from_secs(20), "{name}");
    }
}

/// A connect run's totals: every one of `count` connections established and alive at the end,
/// none failed, each with its connect latency measured.
fn assert_every_connection_held(result: &Value, count: u64) {
    let totals = &result["totals"];
    assert_eq!(totals["established"], count, "{result:#}");
    assert_eq!(totals["alive"], count, "{result:#}");
    assert_eq!(totals["failures_total"], 0, "{result:#}");
    assert_eq!(totals["connect_latency"]["count"], count, "{result:#}");
}

/// Runs a fanout of quotes (20 subscribers, 4 topics, 2 publishers, 100 publishes/s for a
/// second) with the subscribers offering permessage-deflate when `compression`; checks that
/// every delivery arrived once and in order, and returns the run's fanout totals.
fn quote_fanout(server: &Server, compression: bool, name: &str) -> Value {
    let mut arguments = vec![
        "fanout",
        "--url",
        &server.url,
        "--subscribers",
        "20",
        "--topics",
        "4",
        "--publishers",
        "2",
        "--payload-bytes",
        "200",
        "--payload-kind",
        "quote",
        "--rate",
        "100",
        "--duration-seconds",
        "1",
        "--drain-seconds",
        "5",
        "--latency-ms-p99-max",
        "100000",
    ];
    if compression {
        arguments.push("--compression");
    }
    let result = loadtest(&arguments, name);
    assert_eq!(result["subscribers_ready"], 20, "{result:#}");
    assert_eq!(result["totals"]["failures_total"], 0, "{result:#}");
    assert_eq!(result["every_delivery_checked"], true, "{result:#}");
    let step = &result["steps"][0];
    let published = step["published"].as_u64().unwrap();
    assert!(published > 0, "{result:#}");
    assert_eq!(
        step["deliveries"].as_u64().unwrap(),
        5 * published,
        "{step:#}"
    );
    assert_eq!(
        result["fanout_totals"]["scanner_mismatches"], 0,
        "{result:#}"
    );
    assert_eq!(result["fanout_totals"]["unexpected"], 0, "{result:#}");
    result["fanout_totals"].clone()
}

/// The subscribers negotiate permessage-deflate with ringcast and inflate what it sends:
/// with compression on, every delivery comes compressed (the acknowledgements, under
/// `compression_message_bytes_min`, plain) and takes fewer bytes on the wire than the same
/// quotes from a server that does not compress; without the server's consent the offer is
/// declined and nothing comes compressed.
#[test]
fn compressed_fanout_against_ringcast() {
    let compressing = Server::start(&["--shards", "2", "--websocket-compression"]);
    let compressed = quote_fanout(&compressing, true, "fanout-deflate");
    let plain_server = Server::start(&["--shards", "2"]);
    let declined = quote_fanout(&plain_server, true, "fanout-deflate-declined");
    let count = |totals: &Value, key: &str| totals[key].as_u64().unwrap();
    let deliveries = count(&compressed, "data_messages") - 20;
    assert_eq!(
        count(&compressed, "compressed_messages"),
        deliveries,
        "{compressed:#}"
    );
    assert_eq!(count(&declined, "compressed_messages"), 0, "{declined:#}");
    let per_message = |totals: &Value| {
        count(totals, "data_message_wire_bytes") as f64 / count(totals, "data_messages") as f64
    };
    assert!(
        per_message(&compressed) < per_message(&declined),
        "compressed {compressed:#} plain {declined:#}"
    );
}

/// The Socket.IO protocol end to end against ringcast's `/socket.io/` endpoint: subscribers
/// (io_uring client) and publishers (tokio-uring) go through the Engine.IO open packet, the
/// CONNECT and the `subscribe` event; every published message reaches each of its topic's
/// subscribers once, in order, with the seq ringcast gave it, and ringcast's `cursor` events
/// count neither as deliveries nor as unexpected messages.
#[test]
fn socketio_fanout_against_ringcast() {
    let server = Server::start(&["--shards", "2"]);
    let url = server
        .url
        .replace("/ws", "/socket.io/?EIO=4&transport=websocket");
    let arguments = [
        "fanout",
        "--protocol",
        "socketio",
        "--url",
        &url,
        "--subscribers",
        "20",
        "--topics",
        "4",
        "--publishers",
        "2",
        "--rate",
        "100",
        "--duration-seconds",
        "1",
        "--drain-seconds",
        "5",
        "--latency-ms-p99-max",
        "100000",
    ];
    let result = loadtest(&arguments, "fanout-socketio");
    assert_eq!(result["subscribers_ready"], 20, "{result:#}");
    assert_eq!(result["publishers_ready"], 2, "{result:#}");
    assert_eq!(result["totals"]["failures_total"], 0, "{result:#}");
    assert_eq!(result["every_delivery_checked"], true, "{result:#}");
    let step = &result["steps"][0];
    let published = step["published"].as_u64().unwrap();
    assert!(published > 0, "{result:#}");
    // 5 subscribers per topic.
    assert_eq!(
        step["deliveries"].as_u64().unwrap(),
        5 * published,
        "{step:#}"
    );
    assert_eq!(step["missing"], 0, "{step:#}");
    for fault in ["gaps", "duplicates", "out_of_order", "seq_mismatches"] {
        assert_eq!(step["faults"][fault], 0, "{step:#}");
    }
    let totals = &result["fanout_totals"];
    for count in [
        "unexpected",
        "server_errors",
        "resets",
        "scanner_mismatches",
    ] {
        assert_eq!(totals[count], 0, "{result:#}");
    }
}
