//! Real runs of the binary against small tungstenite servers inside the test: an echo server,
//! and a pub/sub server speaking ringcast's JSON protocol for `fanout`.

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
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

/// Topics of the pub/sub test server: each with its latest sequence number and subscribers.
type Topics = Arc<Mutex<HashMap<String, (u64, Vec<Sender<String>>)>>>;

/// How long a pub/sub connection's read waits before it looks at its outgoing queue.
const PUBSUB_POLL: Duration = Duration::from_millis(2);

/// Starts a pub/sub server with ringcast's JSON protocol (subscribe, subscribed with the
/// topic's seq, publish, deliveries with seq 1, 2, 3, ... per topic). With `drop_every`, the
/// delivery of every nth seq of topic T0000 to its first subscriber is skipped, to show that
/// losses are found.
fn pubsub_server(drop_every: Option<u64>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let topics: Topics = Arc::default();
    thread::spawn(move || {
        for stream in listener.incoming().take(SERVER_CONNECTIONS_MAX) {
            let Ok(stream) = stream else { continue };
            let topics = Arc::clone(&topics);
            thread::spawn(move || serve_pubsub(stream, &topics, drop_every));
        }
    });
    format!("ws://{address}/ws")
}

/// One connection: reads with a short timeout, and between reads sends what its queue holds
/// (its acknowledgements and the deliveries other connections' publishes put there).
fn serve_pubsub(stream: TcpStream, topics: &Topics, drop_every: Option<u64>) {
    let Ok(mut socket) = tungstenite::accept(stream) else {
        return;
    };
    socket
        .get_ref()
        .set_read_timeout(Some(PUBSUB_POLL))
        .unwrap();
    let (sender, outgoing): (Sender<String>, Receiver<String>) = mpsc::channel();
    loop {
        match socket.read() {
            Ok(Message::Text(text)) => handle_pubsub(&text, &sender, topics, drop_every),
            Ok(_) => {}
            Err(tungstenite::Error::Io(error))
                if error.kind() == std::io::ErrorKind::WouldBlock
                    || error.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
        for text in outgoing.try_iter() {
            if socket.write(Message::text(text)).is_err() {
                return;
            }
        }
        if socket.flush().is_err() {
            return;
        }
    }
}

#[derive(serde::Deserialize)]
struct ClientMessage<'a> {
    op: String,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    topic: String,
    #[serde(borrow)]
    data: Option<&'a serde_json::value::RawValue>,
}

fn handle_pubsub(text: &str, sender: &Sender<String>, topics: &Topics, drop_every: Option<u64>) {
    let message: ClientMessage = serde_json::from_str(text).unwrap();
    let mut topics = topics.lock().unwrap();
    match message.op.as_str() {
        "subscribe" => {
            for topic in message.topics {
                let (seq, subscribers) = topics.entry(topic.clone()).or_default();
                subscribers.push(sender.clone());
                let reply = format!(r#"{{"op":"subscribed","topic":"{topic}","seq":{seq}}}"#);
                sender.send(reply).unwrap();
            }
        }
        "publish" => {
            let (seq, subscribers) = topics.entry(message.topic.clone()).or_default();
            *seq += 1;
            let data = message.data.unwrap().get();
            let delivery = format!(
                r#"{{"topic":"{}","seq":{seq},"data":{data}}}"#,
                message.topic
            );
            for (index, subscriber) in subscribers.iter().enumerate() {
                let dropped = drop_every.is_some_and(|every| {
                    message.topic == "T0000" && index == 0 && *seq % every == 0
                });
                if !dropped {
                    // A subscriber that has gone is no longer counted on.
                    let _ = subscriber.send(delivery.clone());
                }
            }
        }
        other => panic!("unexpected op {other}"),
    }
}

fn fanout_arguments<'a>(url: &'a str, path: &'a str, rates: &'a str) -> Vec<&'a str> {
    vec![
        "fanout",
        "--protocol",
        "ringcast",
        "--url",
        url,
        "--subscribers",
        "40",
        "--topics",
        "4",
        "--publishers",
        "2",
        "--payload-bytes",
        "120",
        "--rates",
        rates,
        "--step-seconds",
        "1",
        "--drain-seconds",
        "2",
        "--workers",
        "2",
        // The bound is not what these tests are about: a loaded test machine must not fail
        // them, so it is far above any latency this server shows.
        "--latency-ms-p99-max",
        "60000",
        "--output",
        path,
    ]
}

/// `fanout` over two subscriber workers and a publisher worker: every subscriber is ready,
/// every step delivers each published message to each of its topic's subscribers once and
/// in order (checked by counter and by seq), and the counts agree across the report.
#[test]
fn fanout_run_delivers_everything() {
    let url = pubsub_server(None);
    let path = output_path("fanout");
    let arguments = fanout_arguments(&url, path.to_str().unwrap(), "100,200");
    let output = loadtest(&arguments, "fanout").output().unwrap();
    assert!(output.status.success(), "{}", show(&output));
    let result = read_result(&path);
    assert_eq!(result["scenario"], "fanout");
    assert_eq!(result["workers"], 3, "{result:#}");
    assert_eq!(result["subscribers_ready"], 40, "{result:#}");
    assert_eq!(result["publishers_ready"], 2, "{result:#}");
    assert_eq!(result["totals"]["failures_total"], 0, "{result:#}");
    assert_eq!(result["every_delivery_checked"], true, "{result:#}");
    assert_eq!(result["highest_met"], 1, "{result:#}");
    let steps = result["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    for (step, offered) in steps.iter().zip([100, 200]) {
        assert_eq!(step["offered_per_second"], offered as f64, "{step:#}");
        // Each of the 4 topics has 10 subscribers.
        assert_eq!(step["published"], offered, "{step:#}");
        let deliveries = step["deliveries"].as_u64().unwrap();
        assert_eq!(deliveries, offered * 10, "{step:#}");
        assert_eq!(step["deliveries_expected"].as_u64().unwrap(), deliveries);
        assert_eq!(step["missing"], 0);
        assert_eq!(step["latency"]["count"].as_u64().unwrap(), deliveries);
        assert_eq!(step["messages_complete"], offered, "{step:#}");
        assert_eq!(step["messages_incomplete"], 0, "{step:#}");
        assert_eq!(step["reach"]["count"], offered, "{step:#}");
        let faults = &step["faults"];
        assert_eq!(faults["gaps"], 0, "{step:#}");
        assert_eq!(faults["seq_mismatches"], 0, "{step:#}");
        assert_eq!(step["met_bound"], true);
        // A message reaches its last subscriber no sooner than its median subscriber.
        let reach_max = step["reach"]["max_us"].as_f64().unwrap();
        assert!(
            reach_max >= step["latency"]["p50_us"].as_f64().unwrap(),
            "{step:#}"
        );
        assert_eq!(reach_max, step["latency"]["max_us"].as_f64().unwrap());
    }
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(
        summary.contains("| every delivery arrived once, in order | yes |"),
        "{summary}"
    );
    assert!(processes_tagged("fanout").is_empty());
}

/// `fanout` over a list of URLs (a cluster's nodes; here the same server twice): a subscriber
/// worker per URL and a publishers' worker per URL, the publishers split between them with
/// every topic still published by exactly one, so every delivery arrives once and in order.
#[test]
fn fanout_over_several_urls_splits_subscribers_and_publishers() {
    let url = pubsub_server(None);
    let urls = format!("{url},{url}");
    let path = output_path("fanout-urls");
    let mut arguments = fanout_arguments(&urls, path.to_str().unwrap(), "100");
    arguments.extend(["--publish-url", &urls]);
    let output = loadtest(&arguments, "fanout-urls").output().unwrap();
    assert!(output.status.success(), "{}", show(&output));
    let result = read_result(&path);
    assert_eq!(
        result["workers"], 4,
        "two subscribers' and two publishers' {result:#}"
    );
    assert_eq!(result["subscribers_ready"], 40, "{result:#}");
    assert_eq!(result["publishers_ready"], 2, "{result:#}");
    assert_eq!(result["every_delivery_checked"], true, "{result:#}");
    let step = &result["steps"][0];
    assert_eq!(step["published"], 100, "{step:#}");
    assert_eq!(step["deliveries"], 1000, "{step:#}");
    assert_eq!(step["missing"], 0, "{step:#}");
    assert!(processes_tagged("fanout-urls").is_empty());
}

/// A server that loses deliveries: the gaps are found by counter and by seq, the messages
/// count as missing and incomplete, the step misses the bound and the plan stops there.
#[test]
fn fanout_run_finds_losses() {
    let url = pubsub_server(Some(10));
    let path = output_path("fanout-losses");
    let arguments = fanout_arguments(&url, path.to_str().unwrap(), "200,400");
    let output = loadtest(&arguments, "fanout-losses").output().unwrap();
    assert!(output.status.success(), "{}", show(&output));
    let result = read_result(&path);
    assert_eq!(result["every_delivery_checked"], false, "{result:#}");
    assert_eq!(result["highest_met"], serde_json::Value::Null, "{result:#}");
    let steps = result["steps"].as_array().unwrap();
    assert_eq!(
        steps.len(),
        1,
        "the plan stops at the first step missing the bound"
    );
    let step = &steps[0];
    // Topic T0000 gets 50 of the 200 messages; its first subscriber misses seq 10, 20, ..., 50.
    assert_eq!(step["missing"], 5, "{step:#}");
    assert_eq!(step["messages_incomplete"], 5, "{step:#}");
    // The last loss may be the final message, which no later one reveals as a gap.
    let gaps = step["faults"]["gaps"].as_u64().unwrap();
    assert!((4..=5).contains(&gaps), "{step:#}");
    assert_eq!(step["faults"]["duplicates"], 0, "{step:#}");
    assert_eq!(step["met_bound"], false, "{step:#}");
    assert!(processes_tagged("fanout-losses").is_empty());
}

/// SIGINT in the middle of a fanout step (subscribers on the io_uring client): the run
/// stops, every worker still reports, and the subscribers' connection figures are merged.
#[test]
fn fanout_interrupt_still_reports() {
    let url = pubsub_server(None);
    let path = output_path("fanout-interrupt");
    let arguments = [
        "fanout",
        "--protocol",
        "ringcast",
        "--url",
        &url,
        "--subscribers",
        "40",
        "--topics",
        "4",
        "--publishers",
        "2",
        "--rate",
        "20",
        "--duration-seconds",
        "60",
        "--workers",
        "2",
        "--output",
        path.to_str().unwrap(),
    ];
    let child = loadtest(&arguments, "fanout-interrupt").spawn().unwrap();
    thread::sleep(Duration::from_millis(2500));
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let result = read_result(&path);
    assert_eq!(result["stopped_by"], "interrupted", "{result:#}");
    assert_eq!(result["workers_lost"], 0, "{result:#}");
    assert_eq!(result["totals"]["established"], 42, "{result:#}");
    assert_eq!(
        result["totals"]["connect_latency"]["count"], 42,
        "{result:#}"
    );
    assert!(processes_tagged("fanout-interrupt").is_empty());
}

/// The closed-loop ramp holds attempts in flight to its window: against a server that accepts
/// TCP but never answers the upgrade, with `--in-flight-max 4`, the server never sees more
/// than the window open at once (plus those whose close it has not noticed yet), and every
/// attempt still ends, as a handshake timeout.
#[test]
fn ramp_window_bounds_attempts_in_flight() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let open = Arc::new(AtomicUsize::new(0));
    let open_max = Arc::new(AtomicUsize::new(0));
    let (counter, highest) = (Arc::clone(&open), Arc::clone(&open_max));
    thread::spawn(move || {
        for stream in listener.incoming().take(SERVER_CONNECTIONS_MAX) {
            let Ok(mut stream) = stream else { continue };
            let now = counter.fetch_add(1, Ordering::SeqCst) + 1;
            highest.fetch_max(now, Ordering::SeqCst);
            let counter = Arc::clone(&counter);
            // Read (and never answer) until the client gives up.
            thread::spawn(move || {
                let mut sink = [0u8; 1024];
                while matches!(std::io::Read::read(&mut stream, &mut sink), Ok(count) if count > 0)
                {
                }
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    let path = output_path("ramp-window");
    let arguments = [
        "connect",
        "--url",
        &url,
        "--connections",
        "16",
        "--rate",
        "10000",
        "--in-flight-max",
        "4",
        "--connect-timeout-seconds",
        "1",
        "--hold-seconds",
        "0",
        "--workers",
        "1",
        "--output",
        path.to_str().unwrap(),
    ];
    let output = loadtest(&arguments, "ramp-window").output().unwrap();
    assert!(output.status.success(), "{}", show(&output));
    let result = read_result(&path);
    assert_eq!(
        result["totals"]["failures"]["handshake_timeout"], 16,
        "{result:#}"
    );
    let seen = open_max.load(Ordering::SeqCst);
    assert!(seen <= 8, "the server saw {seen} connections open at once");
    assert!(processes_tagged("ramp-window").is_empty());
}
