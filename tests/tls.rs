//! wss:// and https:// against the real server, with clients that verify its certificate
//! against a CA made at test time: curl (OpenSSL) for HTTPS publish, metrics and health, and
//! for SSE, NDJSON streaming and long and short polling;
//! tungstenite over rustls for echo and pub/sub; Python `websockets` and Node `ws` (both over
//! OpenSSL) for strict WebSocket checks over TLS; session resumption for TLS 1.3 and 1.2;
//! SIGHUP reloading the certificate; start-up refusing bad files; shutdown's close 1001
//! followed by close_notify.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustls::HandshakeKind;
use support::server::{EXIT_WAIT, ServerProcess, describe_exit, run_server_to_exit};
use support::tls::{
    TestPki, connect_tls, connect_wss, https_request, metric_total, try_connect_tls,
};
use support::tools::{self, INSTALL_COMMAND, ToolRun};
use tungstenite::Message;

/// Far above the clients' own 10 s waits, so that they report what they were waiting for.
const CLIENT_DEADLINE: Duration = Duration::from_secs(120);
/// How long a log line or a counter may take to show up.
const SETTLE_WAIT: Duration = Duration::from_secs(15);

/// Runs curl with `arguments` (it verifies against the test CA), returning stdout, stderr
/// and whether it succeeded.
fn curl(pki: &TestPki, arguments: &[&str]) -> (String, String, bool) {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&pki.ca_path)
        .args(arguments)
        .output()
        .expect("running curl (apt-get install curl)");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.success(),
    )
}

/// curl reading a response that does not end (an event stream, a held poll) in the
/// background: its stdout lines arrive on `lines`.
struct CurlStream {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl CurlStream {
    fn start(pki: &TestPki, arguments: &[&str]) -> CurlStream {
        let mut child = Command::new("curl")
            .args(["-sS", "-N", "--max-time", "60", "--cacert"])
            .arg(&pki.ca_path)
            .args(arguments)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("running curl (apt-get install curl)");
        let stdout = child.stdout.take().expect("piped");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        CurlStream { child, lines }
    }

    /// Reads lines until one satisfies `wanted`, which it returns; every line read is kept
    /// for the failure message.
    fn line_where(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SETTLE_WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("{what} within {SETTLE_WAIT:?}; read {seen:#?}"),
            }
        }
    }
}

impl Drop for CurlStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until `condition` holds.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE_WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "{what} within {SETTLE_WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Proves HTTPS works for every HTTP endpoint there is (health, publish, metrics) with curl,
/// over TLS 1.3 and TLS 1.2, with ALPN settling on http/1.1 although curl offers h2 first;
/// and that the plain listener serves the same broker at the same time.
#[test]
fn https_publish_metrics_and_health_with_curl() {
    let pki = TestPki::new("curl");
    let server = pki.start_server(&[]);
    let port = server.tls_address.unwrap().port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let (body, log, ok) = curl(&pki, &["-v", "--resolve", &resolve, &url("/health")]);
    assert!(ok && body.trim_end() == "ok", "{body:?}\n{log}");
    assert!(log.contains("ALPN: server accepted http/1.1"), "{log}");
    assert!(log.contains("TLSv1.3"), "{log}");
    for version_flags in [&["--tlsv1.3"][..], &["--tlsv1.2", "--tls-max", "1.2"]] {
        let mut arguments = version_flags.to_vec();
        let publish_url = url("/publish/AAPL");
        arguments.extend([
            "--resolve",
            &resolve,
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"px":191.2}"#,
            &publish_url,
        ]);
        let (body, log, ok) = curl(&pki, &arguments);
        assert!(
            ok && body.starts_with(r#"{"seq":"#),
            "{version_flags:?}: {body:?}\n{log}"
        );
    }
    let (metrics, log, ok) = curl(&pki, &["--resolve", &resolve, &url("/metrics")]);
    assert!(ok, "{log}");
    assert!(
        metrics.contains("ringcast_tls_handshakes_total{"),
        "{metrics}"
    );
    assert!(
        metric_total(
            server.address,
            "ringcast_tls_handshakes_total{kind=\"full\"}"
        ) >= 4,
        "four curl handshakes"
    );
    // The plain listener is the same broker: the two HTTPS publishes numbered AAPL 1 and 2.
    let (body, _, ok) = curl(
        &pki,
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            "{}",
            &format!("http://{}/publish/AAPL", server.address),
        ],
    );
    assert!(ok && body == r#"{"seq":3}"#, "{body:?}");
}

/// Proves the reading endpoints work over HTTPS with curl (OpenSSL) verifying the server:
/// an SSE stream gets its `subscribed` event and then a message published afterwards, with
/// the cursor as its id; an NDJSON stream the same message and a cursor line; a short poll
/// answers at once with what is there, and a long poll held from that cursor is answered by
/// the next publish. Every stream counts as a TLS connection while it is open.
#[test]
fn https_sse_stream_and_polls_with_curl() {
    let pki = TestPki::new("streams");
    let server = pki.start_server(&[]);
    let port = server.tls_address.unwrap().port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let publish = |body: &str| {
        let publish_url = url("/publish/AAPL");
        let arguments = [
            "--resolve",
            &resolve,
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            &publish_url,
        ];
        let (answer, log, ok) = curl(&pki, &arguments);
        assert!(ok && answer.starts_with(r#"{"seq":"#), "{answer:?}\n{log}");
    };

    let sse_url = url("/sse?topics=AAPL");
    let mut sse = CurlStream::start(&pki, &["--resolve", &resolve, &sse_url]);
    sse.line_where("the SSE subscribed event", |line| {
        line == "event: subscribed"
    });
    let ndjson_url = url("/stream?topics=AAPL");
    let mut ndjson = CurlStream::start(&pki, &["--resolve", &resolve, &ndjson_url]);
    ndjson.line_where("the NDJSON subscribed line", |line| {
        line.contains(r#""op":"subscribed""#)
    });
    wait_until("both streams counted as TLS connections", || {
        metric_total(server.address, "ringcast_tls_connections") >= 2
    });

    publish(r#"{"px":1}"#);
    let data = sse.line_where("the published message as SSE data", |line| {
        line.starts_with("data: ") && line.contains(r#"{"px":1}"#)
    });
    assert!(data.contains(r#""topic":"AAPL""#), "{data}");
    sse.line_where("the event's cursor id", |line| line.starts_with("id: "));
    let line = ndjson.line_where("the published message as an NDJSON line", |line| {
        line.contains(r#"{"px":1}"#)
    });
    assert!(line.contains(r#""topic":"AAPL""#), "{line}");
    ndjson.line_where("the NDJSON cursor line", |line| {
        line.contains(r#""op":"cursor""#)
    });

    // A short poll from the start of history (seq 0 of the topic) gets the message.
    let since = "since=%7B%22AAPL%22%3A0%7D";
    let short_url = url(&format!("/poll?topics=AAPL&wait_ms=0&{since}"));
    let (answer, log, ok) = curl(&pki, &["--resolve", &resolve, &short_url]);
    assert!(ok, "{log}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("a poll answer");
    let messages = answer["messages"].as_array().expect("messages");
    assert!(
        messages.iter().any(|message| message["data"]["px"] == 1),
        "{answer}"
    );
    let cursor = answer["cursor"].as_str().expect("a cursor").to_string();

    let long_url = url(&format!("/poll?topics=AAPL&wait_ms=30000&cursor={cursor}"));
    let mut long_poll = CurlStream::start(&pki, &["--resolve", &resolve, &long_url]);
    wait_until("the long poll held", || {
        metric_total(server.address, "ringcast_tls_connections") >= 3
    });
    publish(r#"{"px":2}"#);
    let answer = long_poll.line_where("the long poll answered", |line| line.contains("messages"));
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("a poll answer");
    let messages = answer["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "only what followed the cursor: {answer}");
    assert_eq!(messages[0]["data"]["px"], 2, "{answer}");
    // The streams saw it too.
    sse.line_where("the second message as SSE data", |line| {
        line.contains(r#"{"px":2}"#)
    });
    ndjson.line_where("the second message as NDJSON", |line| {
        line.contains(r#"{"px":2}"#)
    });
}

/// Proves TLS connections opened long after the server started are not taken for stalled
/// ones: a handshake flight is bytes waiting to be sent with no frame queued, and the stall
/// clock starts when they appear. (It once started only when a frame was queued, so that after
/// `send_stall_timeout_ms` of uptime a handshake could be cut with 1008 before it finished;
/// Autobahn over TLS found it, its cases after the first minute all refused.)
#[test]
fn handshakes_after_the_stall_timeout_are_not_stalls() {
    let pki = TestPki::new("stall");
    let tls = pki.server_arguments();
    let mut arguments: Vec<&str> = tls.iter().map(String::as_str).collect();
    arguments.push("--echo");
    let stall = [("RINGCAST_SEND_STALL_TIMEOUT_MS", "1000")];
    let server = ServerProcess::start_with_environment(&arguments, &stall);
    std::thread::sleep(Duration::from_millis(1500));
    let config = pki.client_config();
    for index in 0..20 {
        let mut socket = connect_wss(server.tls_address.unwrap(), "/echo", &config);
        let text = format!("message {index}");
        socket.send(Message::text(text.clone())).unwrap();
        assert_eq!(
            socket.read().unwrap(),
            Message::text(text),
            "connection {index}"
        );
        socket.close(None).unwrap();
        while socket.read().is_ok() {}
    }
    let series = "ringcast_slow_consumer_actions_total{action=\"stall\"}";
    assert_eq!(metric_total(server.address, series), 0);
}

/// Proves wss echo with tungstenite over rustls: text, binary, a message far larger than a
/// record and a receive buffer, and a close that the server ends with close_notify (rustls
/// reports a clean end of stream only after close_notify).
#[test]
fn wss_echo_with_tungstenite() {
    let pki = TestPki::new("echo");
    let server = pki.start_server(&["--echo"]);
    let config = pki.client_config();
    let mut socket = connect_wss(server.tls_address.unwrap(), "/echo", &config);
    let large: Vec<u8> = (0..3 * 1024 * 1024)
        .map(|index| (index % 251) as u8)
        .collect();
    for message in [
        Message::text("hello over TLS"),
        Message::binary(vec![0u8; 0]),
        Message::binary(large),
        Message::text("ünïcödé ✓".repeat(2000)),
    ] {
        socket.send(message.clone()).unwrap();
        assert_eq!(socket.read().unwrap(), message);
    }
    socket.close(None).unwrap();
    loop {
        match socket.read() {
            Ok(Message::Close(_)) => continue,
            Ok(other) => panic!("after close: {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(error) => panic!("closing: {error}"),
        }
    }
    let mut rest = Vec::new();
    let clean = socket.get_mut().read_to_end(&mut rest);
    assert!(
        clean.is_ok(),
        "no close_notify before the TCP end: {clean:?}"
    );
    wait_until("close_notify counted", || {
        metric_total(
            server.address,
            "ringcast_tls_close_notify_total{direction=\"sent\"}",
        ) >= 1
    });
}

/// Proves pub/sub across transports: a wss subscriber gets what a wss publisher, an HTTPS
/// publisher and a plain ws publisher publish, in seq order.
#[test]
fn wss_pubsub_across_listeners() {
    let pki = TestPki::new("pubsub");
    let server = pki.start_server(&["--shards", "2"]);
    let tls = server.tls_address.unwrap();
    let config = pki.client_config();
    let mut subscriber = connect_wss(tls, "/ws", &config);
    subscriber
        .send(Message::text(r#"{"op":"subscribe","topics":["AAPL"]}"#))
        .unwrap();
    let subscribed = subscriber.read().unwrap().into_text().unwrap();
    assert!(
        subscribed.starts_with(r#"{"op":"subscribed","topic":"AAPL""#),
        "{subscribed}"
    );
    let mut publisher = connect_wss(tls, "/ws", &config);
    publisher
        .send(Message::text(
            r#"{"op":"publish","topic":"AAPL","data":{"from":"wss"},"id":"first"}"#,
        ))
        .unwrap();
    // Publishes on different connections are ordered only by when the owner numbers them: the
    // next one goes out once this one has its seq.
    let published = publisher.read().unwrap().into_text().unwrap();
    assert_eq!(
        published.as_str(),
        r#"{"op":"published","id":"first","seq":1}"#
    );
    let response = https_request(
        tls,
        &config,
        "POST /publish/AAPL HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 16\r\nConnection: close\r\n\r\n{\"from\":\"https\"}",
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let mut plain = support::server::connect_websocket(server.address, "/ws");
    plain
        .send(Message::text(
            r#"{"op":"publish","topic":"AAPL","data":{"from":"ws"}}"#,
        ))
        .unwrap();
    for (seq, from) in [(1, "wss"), (2, "https"), (3, "ws")] {
        let delivery = subscriber.read().unwrap().into_text().unwrap();
        let expected = format!(r#"{{"topic":"AAPL","seq":{seq},"data":{{"from":"{from}"}}}}"#);
        assert_eq!(delivery.as_str(), expected);
    }
}

fn assert_client_passed(name: &str, run: &ToolRun, server: &ServerProcess) {
    assert!(
        run.status.success(),
        "{name} failed with {}\n{}\n--- server log (end) ---\n{}",
        run.status,
        run.outputs(),
        server.log_tail()
    );
}

/// Proves Python `websockets` (over the ssl module, OpenSSL) completes every strict exchange
/// over wss: text, binary, fragmented and multi-byte messages, 3 MiB, a ping, a clean close.
#[test]
fn python_websockets_over_tls() {
    let python = tools::tool_path("RINGCAST_PYTHON", ".venv/bin/python");
    tools::require_installed(&python, "the Python venv with websockets");
    let pki = TestPki::new("python");
    let server = pki.start_server(&["--echo", "--log", "debug"]);
    let directory = tools::fresh_directory("interop-python-tls");
    let url = format!(
        "wss://127.0.0.1:{}/interop/python",
        server.tls_address.unwrap().port()
    );
    let mut command = Command::new(python);
    command
        .arg(tools::manifest_path("tests/interop/python_client.py"))
        .arg(url)
        .arg(&pki.ca_path);
    let missing = format!("run `{INSTALL_COMMAND}`, which creates .venv");
    let run = tools::run_with_deadline(
        &mut command,
        "python_client",
        &directory,
        CLIENT_DEADLINE,
        &missing,
    );
    assert_client_passed("python_client.py over TLS", &run, &server);
}

/// Proves Node `ws` (over Node's TLS, OpenSSL) completes every strict exchange over wss.
#[test]
fn node_ws_over_tls() {
    let ws = tools::manifest_path("tests/interop/node_modules/ws/package.json");
    tools::require_installed(&ws, "the npm package ws");
    let pki = TestPki::new("node");
    let server = pki.start_server(&["--echo", "--log", "debug"]);
    let directory = tools::fresh_directory("interop-node-tls");
    let url = format!(
        "wss://127.0.0.1:{}/interop/node",
        server.tls_address.unwrap().port()
    );
    let mut command = Command::new("node");
    command
        .arg(tools::manifest_path("tests/interop/node_client.js"))
        .arg(url)
        .arg(&pki.ca_path);
    let missing = format!("install Node.js 20 with npm, then run `{INSTALL_COMMAND}`");
    let run = tools::run_with_deadline(
        &mut command,
        "node_client",
        &directory,
        CLIENT_DEADLINE,
        &missing,
    );
    assert_client_passed("node_client.js over TLS", &run, &server);
}

/// Proves a second handshake resumes the session of the first (a stateless ticket), for
/// TLS 1.3 and TLS 1.2, and that the server counts it.
#[test]
fn second_handshake_resumes() {
    let pki = TestPki::new("resume");
    let server = pki.start_server(&[]);
    let tls = server.tls_address.unwrap();
    for versions in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = pki.client_config_for(&[versions]);
        // A whole exchange first: TLS 1.3 tickets come after the handshake.
        let request = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let response = https_request(tls, &config, request);
        assert!(response.trim_end().ends_with("ok"), "{response}");
        let first = connect_tls(tls, &config);
        assert_eq!(
            first.conn.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "{versions:?}"
        );
        assert_eq!(
            first.conn.protocol_version(),
            Some(versions.version),
            "{versions:?}"
        );
    }
    wait_until("two resumptions counted", || {
        metric_total(
            server.address,
            "ringcast_tls_handshakes_total{kind=\"resumed\"}",
        ) == 2
    });
}

/// Proves SIGHUP reloads the certificate: a client after the reload is shown the new one (and
/// one trusting only the old CA is refused), a client connected before keeps working, and a bad
/// new pair is refused with a log line while the good one stays in use.
#[test]
fn sighup_reloads_the_certificate_for_new_handshakes() {
    let mut pki = TestPki::new("reload");
    let server = pki.start_server(&["--echo"]);
    server.wait_for_signal_handlers();
    let tls = server.tls_address.unwrap();
    let old_ca = pki.ca.clone();
    let mut before = connect_wss(tls, "/before", &pki.client_config());
    before.send(Message::text("before")).unwrap();
    assert_eq!(before.read().unwrap(), Message::text("before"));

    pki.issue();
    server.signal(libc::SIGHUP);
    wait_until("the reload logged", || {
        server.stderr_text().contains("TLS certificate reloaded")
    });
    let after = connect_tls(tls, &pki.client_config());
    let shown = &after.conn.peer_certificates().unwrap()[0];
    assert_eq!(
        shown, &pki.certificate,
        "a new handshake shows the new certificate"
    );
    // A client with no session to resume that trusts only the old CA is refused now.
    let mut stale = TestPki::new("reload-stale");
    stale.ca = old_ca;
    assert!(try_connect_tls(tls, &stale.client_config()).is_err());
    before.send(Message::text("still here")).unwrap();
    assert_eq!(
        before.read().unwrap(),
        Message::text("still here"),
        "opened before"
    );

    // A key that does not match the certificate: refused, and the pair in use stays.
    std::fs::write(
        &pki.key_path,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    wait_until("the refusal logged", || {
        server
            .stderr_text()
            .contains("TLS certificate not reloaded")
    });
    let log = server.stderr_text();
    assert!(
        log.contains("this key does not match the certificate"),
        "{log}"
    );
    let later = connect_tls(tls, &pki.client_config());
    assert_eq!(
        &later.conn.peer_certificates().unwrap()[0],
        &pki.certificate
    );
}

/// Proves start-up stops on each bad certificate or key, with a message naming the file and
/// the problem, and on TLS settings that do not make sense together.
#[test]
fn bad_files_stop_start_up_with_the_reason() {
    let mut pki = TestPki::new("start-up");
    let certificate = pki.certificate_path.display().to_string();
    let key = pki.key_path.display().to_string();
    let missing = pki.directory.join("missing.pem").display().to_string();
    let directory = pki.directory.display().to_string();
    let start = |certificate: &str, key: &str| {
        let arguments = [
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-certificate",
            certificate,
            "--tls-private-key",
            key,
        ];
        let (status, log) = run_server_to_exit(&arguments);
        assert!(
            !status.success(),
            "started with {arguments:?}: {}",
            describe_exit(status)
        );
        log
    };
    let log = start(&missing, &key);
    assert!(log.contains(&format!("{missing}: no such file")), "{log}");
    let log = start(&certificate, &directory);
    assert!(
        log.contains(&format!("{directory}: cannot be read")),
        "{log}"
    );
    let log = start(&key, &key);
    assert!(log.contains(&format!("{key}: no PEM certificate")), "{log}");
    let other_key = pki.directory.join("other-key.pem");
    std::fs::write(
        &other_key,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let other_key = other_key.display().to_string();
    let log = start(&certificate, &other_key);
    assert!(
        log.contains(&format!("{other_key}: this key does not match")),
        "{log}"
    );
    pki.issue_valid_for(-30, -1);
    let log = start(&certificate, &key);
    assert!(
        log.contains(&format!("{certificate}: the certificate expired on")),
        "{log}"
    );

    let (status, log) = run_server_to_exit(&["--tls-listen", "127.0.0.1:0"]);
    assert!(!status.success());
    assert!(log.contains("tls_certificate"), "{log}");
    let (status, log) = run_server_to_exit(&["--tls-certificate", &certificate]);
    assert!(!status.success());
    assert!(log.contains("tls_listen"), "{log}");
}

/// Proves a graceful shutdown closes a wss client with 1001 and then close_notify, and exits 0.
#[test]
fn shutdown_sends_close_then_close_notify() {
    let pki = TestPki::new("shutdown");
    let mut server = pki.start_server(&["--echo"]);
    server.wait_for_signal_handlers();
    let mut socket = connect_wss(server.tls_address.unwrap(), "/echo", &pki.client_config());
    socket.send(Message::text("ping")).unwrap();
    assert_eq!(socket.read().unwrap(), Message::text("ping"));
    server.signal(libc::SIGTERM);
    match socket.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected close 1001, got {other:?}"),
    }
    // tungstenite answers the close; the server then ends TLS with close_notify.
    loop {
        match socket.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(error) => panic!("after the close: {error}"),
        }
    }
    let mut rest = Vec::new();
    let clean = socket.get_mut().read_to_end(&mut rest);
    assert!(
        clean.is_ok(),
        "no close_notify before the TCP end: {clean:?}"
    );
    let status = server.wait_for_exit(EXIT_WAIT);
    assert!(status.success(), "{}", describe_exit(status));
}
