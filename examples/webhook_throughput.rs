//! Measures webhook delivery: events per second to a local receiver, and the CPU the shards
//! spend per delivered message with a `message.published` webhook on against off (same run,
//! same machine), plus the webhook thread's CPU per event.
//!
//! `cargo run --release --example webhook_throughput -- [MESSAGES] [SUBSCRIBERS] [BATCH_MAX]`
//! (defaults 50000, 10, 1). The receiver is a plain HTTP/1.1 server on loopback answering 204 to
//! every request, reading each body whole and checking nothing (the tests check signatures).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringcast::config::{ServerConfig, WebhookConfig};
use ringcast::server::Server;
use tungstenite::Message;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Messages per HTTP publish request.
const PUBLISH_BATCH: usize = 50;
/// How long to wait for the last event before giving up on a run.
const FINISH_WAIT: Duration = Duration::from_secs(120);

fn main() {
    let arguments: Vec<u64> = std::env::args()
        .skip(1)
        .map(|argument| argument.parse().expect("numbers"))
        .collect();
    let messages = arguments.first().copied().unwrap_or(50_000);
    let subscribers = arguments.get(1).copied().unwrap_or(10) as usize;
    let batch_max = arguments.get(2).copied().unwrap_or(1) as usize;
    println!("messages {messages}, subscribers {subscribers}, webhook batch_max {batch_max}");
    let off = run(messages, subscribers, None);
    let on = run(messages, subscribers, Some(batch_max));
    for (name, report) in [("webhook off", &off), ("webhook on", &on)] {
        let deliveries = messages as f64 * subscribers as f64;
        println!(
            "{name:12} fanout {:8.0} deliveries/s, shard CPU {:6.0} ns/delivery",
            deliveries / report.fanout_seconds,
            report.shard_cpu_ns / deliveries,
        );
    }
    if let Some(seconds) = on.webhook_seconds {
        println!(
            "webhook      {:8.0} events/s in {} requests, egress thread CPU {:6.0} ns/event",
            messages as f64 / seconds,
            on.requests,
            on.egress_cpu_ns / messages as f64,
        );
    }
    let deliveries = messages as f64 * subscribers as f64;
    println!(
        "shard CPU per delivery, on/off: {:.2}",
        (on.shard_cpu_ns / deliveries) / (off.shard_cpu_ns / deliveries)
    );
}

struct Report {
    fanout_seconds: f64,
    webhook_seconds: Option<f64>,
    requests: u64,
    shard_cpu_ns: f64,
    egress_cpu_ns: f64,
}

fn run(messages: u64, subscribers: usize, batch_max: Option<usize>) -> Report {
    let receiver = batch_max.map(|_| CountingReceiver::start());
    let webhook = match (&receiver, batch_max) {
        (Some(receiver), Some(batch_max)) => vec![WebhookConfig {
            url: format!("http://{}/hook", receiver.address),
            events: vec!["message.published".into()],
            secret: SECRET.into(),
            batch_max,
            batch_wait_ms: 5,
            queue_bytes_max: 256 * 1024 * 1024,
            allow_private_destinations: true,
            ..WebhookConfig::default()
        }],
        _ => Vec::new(),
    };
    let server = Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        drain_timeout_ms: 1_000,
        webhook,
        ..ServerConfig::default()
    })
    .unwrap();
    let address = server.local_address();
    let readers: Vec<_> = (0..subscribers)
        .map(|_| subscribe(address, messages))
        .collect();
    let cpu_before = thread_cpu_ns();
    let started = Instant::now();
    publish(address, messages);
    for reader in readers {
        reader.join().unwrap();
    }
    let fanout_seconds = started.elapsed().as_secs_f64();
    let webhook_seconds = receiver.as_ref().map(|receiver| {
        let deadline = Instant::now() + FINISH_WAIT;
        while receiver.events.load(Ordering::Relaxed) < messages {
            assert!(
                Instant::now() < deadline,
                "the webhook events did not all arrive"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        started.elapsed().as_secs_f64()
    });
    let cpu_after = thread_cpu_ns();
    let used = |prefix: &str| {
        cpu_after
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, after)| {
                let before = cpu_before.iter().find(|(other, _)| other == name);
                after - before.map_or(0, |(_, before)| *before)
            })
            .sum::<u64>() as f64
    };
    let report = Report {
        fanout_seconds,
        webhook_seconds,
        requests: receiver
            .as_ref()
            .map_or(0, |receiver| receiver.requests.load(Ordering::Relaxed)),
        shard_cpu_ns: used("ringcast-shard"),
        egress_cpu_ns: used("ringcast-egress"),
    };
    server.shutdown().unwrap();
    report
}

/// A subscriber of topic `T` on its own thread, reading `messages` messages.
fn subscribe(address: SocketAddr, messages: u64) -> std::thread::JoinHandle<()> {
    let stream = TcpStream::connect(address).unwrap();
    let (mut socket, _) = tungstenite::client(format!("ws://{address}/ws"), stream).unwrap();
    socket
        .send(Message::text(r#"{"op":"subscribe","topics":["T"]}"#))
        .unwrap();
    let answer = socket.read().unwrap();
    assert!(answer.to_text().unwrap().contains("subscribed"), "{answer}");
    std::thread::spawn(move || {
        let mut received = 0;
        while received < messages {
            if let Message::Text(_) = socket.read().unwrap() {
                received += 1;
            }
        }
    })
}

/// Publishes `messages` messages to `T` in HTTP batches.
fn publish(address: SocketAddr, messages: u64) {
    let mut stream = TcpStream::connect(address).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut number = 0;
    while number < messages {
        let count = (messages - number).min(PUBLISH_BATCH as u64);
        let items: Vec<String> = (number..number + count)
            .map(|n| format!(r#"{{"topic":"T","data":{{"n":{n},"px":101.25}}}}"#))
            .collect();
        let body = format!("[{}]", items.join(","));
        let head = format!(
            "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        // One write: a head and a body written apart wait out Nagle and the server's delayed
        // ACK (about 40 ms a request), which capped this publisher at about 1,100 messages/s.
        stream
            .write_all(format!("{head}{body}").as_bytes())
            .unwrap();
        let (status, _) = read_message(&mut reader, true).expect("a response");
        assert_eq!(status, 200);
        number += count;
    }
}

/// Reads one HTTP/1.1 message with a Content-Length body: (status or 0, body).
fn read_message(reader: &mut BufReader<TcpStream>, response: bool) -> Option<(u16, Vec<u8>)> {
    let mut status = 0;
    let mut length = 0;
    let mut first = true;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if first && response {
            status = line.split(' ').nth(1)?.parse().ok()?;
        }
        first = false;
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((status, body))
}

/// A receiver that answers 204 to everything and counts requests and events.
struct CountingReceiver {
    address: SocketAddr,
    requests: Arc<AtomicU64>,
    events: Arc<AtomicU64>,
}

impl CountingReceiver {
    fn start() -> CountingReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let events = Arc::new(AtomicU64::new(0));
        let (counted_requests, counted_events) = (Arc::clone(&requests), Arc::clone(&events));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let requests = Arc::clone(&counted_requests);
                let events = Arc::clone(&counted_events);
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    while let Some((_, body)) = read_message(&mut reader, false) {
                        let count = body.windows(6).filter(|w| w == b"\"type\"").count();
                        requests.fetch_add(1, Ordering::Relaxed);
                        events.fetch_add(count as u64, Ordering::Relaxed);
                        let answer = b"HTTP/1.1 204 No Content\r\n\r\n";
                        if writer.write_all(answer).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        CountingReceiver {
            address,
            requests,
            events,
        }
    }
}

/// Each thread of this process by name, with the CPU time it used (user and system), in ns.
fn thread_cpu_ns() -> Vec<(String, u64)> {
    let ticks_per_second = clock_ticks_per_second();
    let mut threads = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = entry.path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // Fields after the parenthesised name: utime and stime are the 12th and 13th.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let name = format!("{}#{}", name.trim(), entry.file_name().to_string_lossy());
        threads.push((name, ticks * 1_000_000_000 / ticks_per_second));
    }
    threads
}

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}
