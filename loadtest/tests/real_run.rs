//! Real runs of the binary against a small tungstenite echo server inside the test.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::Message;

/// Connections the test server accepts before its accept loop ends, so it stops by itself.
const SERVER_CONNECTIONS_MAX: usize = 500;

/// Starts an echo server on 127.0.0.1 (a thread per connection) and returns its URL.
fn echo_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().take(SERVER_CONNECTIONS_MAX) {
            let Ok(stream) = stream else { continue };
            thread::spawn(move || serve(stream));
        }
    });
    format!("ws://{address}/ws")
}

/// Echoes text and binary messages; tungstenite answers pings by itself (sent on flush).
fn serve(stream: TcpStream) {
    let Ok(mut socket) = tungstenite::accept(stream) else {
        return;
    };
    loop {
        let message = match socket.read() {
            Ok(message) => message,
            Err(_) => return,
        };
        if matches!(message, Message::Text(_) | Message::Binary(_))
            && socket.write(message).is_err()
        {
            return;
        }
        if socket.flush().is_err() {
            return;
        }
    }
}

fn output_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "ringcast-loadtest-{name}-{}.json",
        std::process::id()
    ))
}

fn loadtest(arguments: &[&str], tag: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringcast-loadtest"));
    command
        .args(arguments)
        .env("RINGCAST_LOADTEST_TEST_TAG", tag)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn read_result(path: &PathBuf) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::remove_file(path).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn show(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Processes still alive whose environment carries `tag`: workers that outlived the run.
fn processes_tagged(tag: &str) -> Vec<u32> {
    let needle = format!("RINGCAST_LOADTEST_TEST_TAG={tag}\0");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environment) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if String::from_utf8_lossy(&environment).contains(&needle) {
            found.push(pid);
        }
    }
    found
}

/// `connect` over two workers: every connection is established and answers its ping, the
/// counts agree, and memory figures are present.
#[test]
fn connect_run_is_consistent() {
    let url = echo_server();
    let path = output_path("connect");
    let pid = std::process::id().to_string();
    let arguments = [
        "connect",
        "--url",
        &url,
        "--connections",
        "50",
        "--rate",
        "1000",
        "--hold-seconds",
        "0",
        "--workers",
        "2",
        "--server-pid",
        &pid,
        "--output",
        path.to_str().unwrap(),
    ];
    let output = loadtest(&arguments, "connect").output().unwrap();
    assert!(output.status.success(), "{}", show(&output));
    let result = read_result(&path);
    let totals = &result["totals"];
    assert_eq!(result["scenario"], "connect");
    assert_eq!(result["workers"], 2);
    assert_eq!(result["workers_lost"], 0);
    assert_eq!(totals["attempted"], 50, "{result:#}");
    assert_eq!(totals["established"], 50, "{result:#}");
    assert_eq!(totals["alive"], 50, "{result:#}");
    assert_eq!(totals["failures_total"], 0, "{result:#}");
    assert_eq!(totals["connect_latency"]["count"], 50);
    let p50 = totals["connect_latency"]["p50_us"].as_f64().unwrap();
    let p99 = totals["connect_latency"]["p99_us"].as_f64().unwrap();
    assert!(0.0 < p50 && p50 <= p99, "{result:#}");
    assert!(result["server"]["rss_kib_after"].as_u64().unwrap() > 0);
    assert!(
        result["kernel"]["note"]
            .as_str()
            .unwrap()
            .contains("both ends")
    );
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(
        summary.contains("| alive (answered the ping) | 50 |"),
        "{summary}"
    );
    assert!(
        summary.contains("| ping phase (every connection pinged) |"),
        "{summary}"
    );
    assert!(processes_tagged("connect").is_empty());
}

/// `echo` for a second: messages flow, every echo checks out, and the rate matches the count.
#[test]
fn echo_run_is_consistent() {
    let url = echo_server();
    let path = output_path("echo");
    let arguments = [
        "echo",
        "--url",
        &url,
        "--connections",
        "10",
        "--payload-bytes",
        "20",
        "--warmup-seconds",
        "0",
        "--duration-seconds",
        "1",
        "--output",
        path.to_str().unwrap(),
    ];
    let output = loadtest(&arguments, "echo").output().unwrap();
    assert!(output.status.success(), "{}", show(&output));
    let result = read_result(&path);
    let totals = &result["totals"];
    assert_eq!(totals["established"], 10, "{result:#}");
    assert_eq!(totals["alive"], 10, "{result:#}");
    assert_eq!(totals["failures_total"], 0, "{result:#}");
    let messages = totals["messages"].as_u64().unwrap();
    assert!(messages > 100, "{result:#}");
    assert_eq!(totals["round_trip"]["count"].as_u64().unwrap(), messages);
    let echo = &result["echo"];
    let seconds = echo["measured_seconds"].as_f64().unwrap();
    assert!((0.9..=1.1).contains(&seconds), "{result:#}");
    let rate = echo["messages_per_second"].as_f64().unwrap();
    assert!(
        (rate - messages as f64 / seconds).abs() <= 1.0,
        "{result:#}"
    );
    assert!(processes_tagged("echo").is_empty());
}

/// SIGINT during the hold stops the workers, and the coordinator still reports what they
/// measured, marked as stopped early, with no worker left behind.
#[test]
fn interrupt_still_reports() {
    let url = echo_server();
    let path = output_path("interrupt");
    let arguments = [
        "connect",
        "--url",
        &url,
        "--connections",
        "20",
        "--rate",
        "2000",
        "--hold-seconds",
        "60",
        "--workers",
        "2",
        "--output",
        path.to_str().unwrap(),
    ];
    let child = loadtest(&arguments, "interrupt").spawn().unwrap();
    thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let output = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{}",
        show(&output)
    );
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let result = read_result(&path);
    assert_eq!(result["stopped_by"], "interrupted");
    assert_eq!(result["workers_lost"], 0, "{result:#}");
    assert_eq!(result["totals"]["established"], 20, "{result:#}");
    assert_eq!(result["totals"]["connect_latency"]["count"], 20);
    assert!(String::from_utf8_lossy(&output.stdout).contains("Stopped early (interrupted)"));
    assert!(processes_tagged("interrupt").is_empty());
}

/// A port nobody listens on: every connection fails as refused, and the run still ends.
#[test]
fn refused_connections_are_counted() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let path = output_path("refused");
    let arguments = [
        "connect",
        "--url",
        &url,
        "--connections",
        "30",
        "--rate",
        "3000",
        "--hold-seconds",
        "0",
        "--output",
        path.to_str().unwrap(),
    ];
    let output = loadtest(&arguments, "refused").output().unwrap();
    assert!(output.status.success(), "{}", show(&output));
    let result = read_result(&path);
    assert_eq!(result["totals"]["established"], 0, "{result:#}");
    assert_eq!(
        result["totals"]["failures"]["connect_refused"], 30,
        "{result:#}"
    );
}

/// `churn` for about a second: every connection opens, answers its ping and closes cleanly,
/// the open rate is close to the one asked for, and memory is sampled after the settle.
#[test]
fn churn_run_is_consistent() {
    let url = echo_server();
    let path = output_path("churn");
    let pid = std::process::id().to_string();
    let arguments = [
        "churn",
        "--url",
        &url,
        "--rate",
        "200",
        "--duration-seconds",
        "1",
        "--concurrent-max",
        "20",
        "--settle-seconds",
        "0",
        "--server-pid",
        &pid,
        "--output",
        path.to_str().unwrap(),
    ];
    let output = loadtest(&arguments, "churn").output().unwrap();
    assert!(output.status.success(), "{}", show(&output));
    let result = read_result(&path);
    let totals = &result["totals"];
    assert_eq!(result["scenario"], "churn");
    assert_eq!(totals["failures_total"], 0, "{result:#}");
    let opened = totals["established"].as_u64().unwrap();
    // The last opens may miss the one-second window by a tick.
    assert!((190..=200).contains(&opened), "{result:#}");
    assert_eq!(totals["attempted"].as_u64().unwrap(), opened, "{result:#}");
    assert_eq!(totals["alive"].as_u64().unwrap(), opened, "{result:#}");
    assert_eq!(totals["connect_latency"]["count"].as_u64().unwrap(), opened);
    let churn = &result["churn"];
    assert_eq!(churn["closed_cleanly"].as_u64().unwrap(), opened);
    assert_eq!(churn["abandoned"], 0, "{result:#}");
    assert!(result["server"]["rss_kib_after"].as_u64().unwrap() > 0);
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(
        summary.contains("| closed cleanly (pong, then close handshake) |"),
        "{summary}"
    );
    assert!(processes_tagged("churn").is_empty());
}
