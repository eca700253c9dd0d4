//! The `publish` scenario: ingest. How many publishes per second a server accepts from
//! publishers that write as fast as it reads, over WebSocket (one connection or many) or
//! pipelined HTTP keep-alive (`POST /publish/{topic}`), with or without subscribers.
//!
//! "Accepted" is counted by the server, not the client: for the JSON protocols a probe
//! connection subscribes to every topic at the start and at the end of the measured window
//! and reads each topic's seq from the acknowledgements (then unsubscribes), so the window's
//! accepted publishes are the sum of the seqs' growth; for NATS, `in_msgs` of the server's
//! monitoring endpoint (`/varz`) at both ends. The client's own counts (publishes sent, HTTP
//! answers, deliveries) are reported beside it, with the load generator's CPU time and, given
//! `--server-pid`, the server's, each per accepted publish.
//!
//! One process and one io_uring thread (`crate::engine`): a few hundred connections fit one
//! process, and a pinned run gives the load generator exactly one core.

mod handler;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use self::handler::{Ingest, IngestSettings, Role};
use crate::addresses::{address_for, default_address_count, worker_addresses};
use crate::cli::PublishOptions;
use crate::engine::{Engine, EngineSettings, Kind};
use crate::fanout::sequence::{OrderFaults, SequenceCheck};
use crate::fanout::wire::Protocol;
use crate::histogram::LatencySummary;
use crate::system::{self, process_cpu_ns};
use crate::worker::{Counters, Target};

/// Longest a turn waits in the ring before the driver looks at the clock.
const TURN_WAIT_MAX: Duration = Duration::from_millis(5);
/// Receive pool of the one thread.
const BUFFERS_COUNT: usize = 4096;
const BUFFER_BYTES: usize = 16 * 1024;
/// The probe's answers (and everything else at a phase change) must come within this.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);

/// The scenario's result.
#[derive(Clone, Debug, Serialize)]
pub struct PublishResult {
    pub scenario: &'static str,
    pub settings: serde_json::Value,
    pub stopped_by: Option<String>,
    pub connections_failed: u64,
    pub subscribers_ready: u64,
    pub window_seconds: f64,
    /// Publishes the server numbered (JSON protocols) or counted in (NATS) in the window.
    pub accepted: Option<u64>,
    pub accepted_per_second: Option<f64>,
    /// Publishes the load generator handed to the kernel in the window.
    pub sent_per_second: f64,
    /// HTTP: answers 200 per second, and answers that were not 200.
    pub answered_per_second: Option<f64>,
    pub refused: u64,
    pub deliveries_per_second: f64,
    pub delivery_latency: LatencySummary,
    pub faults: OrderFaults,
    pub unexpected: u64,
    pub server_errors: u64,
    pub load_generator_cpu_us_per_publish: Option<f64>,
    pub server_cpu_us_per_publish: Option<f64>,
    pub server_cpu_percent_of_one_core: Option<f64>,
}

pub fn publish(options: PublishOptions) -> Result<i32, String> {
    let target = Target::parse(&options.url)?;
    let tls = target.tls_plan(options.ca.as_deref(), options.server_name.as_deref())?;
    let target = target.with_tls(tls.as_ref())?;
    if options.connections == 0 || options.topics == 0 {
        return Err("--connections and --topics must be positive".into());
    }
    if u64::from(options.topics) < options.connections {
        return Err("--topics must be at least --connections: each topic has one publisher".into());
    }
    if options.protocol == Protocol::SocketIo {
        return Err("the publish scenario does not speak Socket.IO (fanout does)".into());
    }
    if options.http && options.protocol == Protocol::Nats {
        return Err("NATS has no HTTP publishing".into());
    }
    if options.protocol == Protocol::Nats && options.nats_monitor.is_none() {
        return Err("--nats-monitor is needed to count what nats-server accepted".into());
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .map_err(|error| format!("cannot handle signals: {error}"))?;
    }
    let mut run = Run::new(&options, &target)?;
    let outcome = run.drive(&options, &interrupted);
    run.engine.stop(&mut run.handler);
    let result = run.result(&options, outcome.err());
    if let Some(path) = &options.output {
        let json = serde_json::to_string_pretty(&result).expect("results serialize");
        std::fs::write(path, json + "\n")
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    print!("{}", markdown(&result));
    Ok(if result.stopped_by.is_some() { 1 } else { 0 })
}

/// The measured window's two ends.
#[derive(Clone, Copy, Debug)]
struct Mark {
    at: Instant,
    accepted: Option<u64>,
    load_generator_cpu_ns: u64,
    server_cpu_ns: Option<u64>,
}

struct Run {
    engine: Engine,
    handler: Ingest,
    subscribers: u32,
    probe: Option<u32>,
    sources: Vec<std::net::Ipv4Addr>,
    marks: Option<(Mark, Mark)>,
    window_start: Option<handler::Window>,
}

impl Run {
    fn new(options: &PublishOptions, target: &Target) -> Result<Self, String> {
        let subscribers = u32::try_from(options.subscribers).map_err(|_| "too many subscribers")?;
        let publishers = options.connections as u32;
        let probe = (options.protocol != Protocol::Nats).then_some(subscribers + publishers);
        let total = subscribers + publishers + u32::from(probe.is_some());
        let roles = roles(options, subscribers, publishers, probe.is_some());
        let authorization = crate::cli::read_bearer_token(options.token_file.as_deref())?
            .map(|token| format!("Bearer {token}"));
        let host = target
            .uri
            .authority()
            .map_or_else(|| target.address.to_string(), |a| a.to_string());
        let settings = EngineSettings {
            target: target.address,
            host: host.clone(),
            path: target
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |path| path.as_str().to_owned()),
            authorization: authorization.clone(),
            connect_timeout: Duration::from_secs(options.connect_timeout_seconds),
            buffers_count: BUFFERS_COUNT,
            buffer_bytes: BUFFER_BYTES,
            message_bytes_max: 1024 * 1024,
            seed: u64::from(std::process::id()),
            tls: target.tls.clone(),
            deflate: false,
        };
        let engine = Engine::new(settings, total as usize, Arc::new(Counters::default()))
            .map_err(|error| format!("cannot set up the io_uring client: {error}"))?;
        let handler = Ingest::new(
            IngestSettings {
                protocol: options.protocol,
                topics: options.topics,
                payload_bytes: options.payload_bytes,
                batch_bytes: options.batch_bytes,
                pipeline: options.pipeline,
                host,
                authorization,
            },
            roles,
        );
        let address_count = default_address_count(u64::from(total), 1);
        Ok(Self {
            engine,
            handler,
            subscribers,
            probe,
            sources: worker_addresses(0, 1, address_count),
            marks: None,
            window_start: None,
        })
    }

    fn drive(&mut self, options: &PublishOptions, interrupted: &AtomicBool) -> Result<(), String> {
        // Subscribers first, all acknowledged before anything is published.
        self.open(0..self.subscribers, Kind::WebSocket)?;
        let subscribers = u64::from(self.subscribers);
        self.turn_until(interrupted, |run| {
            run.handler.subscribed + run.handler.failed >= subscribers
        })?;
        let kind = if options.http {
            Kind::Raw
        } else {
            Kind::WebSocket
        };
        let publishers = self.subscribers..self.subscribers + options.connections as u32;
        self.open(publishers, kind)?;
        if let Some(probe) = self.probe {
            self.open(probe..probe + 1, Kind::WebSocket)?;
        }
        let connections =
            u64::from(self.subscribers) + options.connections + u64::from(self.probe.is_some());
        self.turn_until(interrupted, |run| {
            run.handler.opened + run.handler.failed >= connections
        })?;
        self.start_publishing(options);
        self.turn_for(interrupted, Duration::from_secs(options.warmup_seconds))?;
        let first = self.mark(options, interrupted)?;
        self.window_start = Some(self.handler.window.clone());
        self.turn_for(interrupted, Duration::from_secs(options.duration_seconds))?;
        let last = self.mark(options, interrupted)?;
        self.handler.publishing = false;
        self.marks = Some((first, last));
        Ok(())
    }

    fn open(&mut self, indices: std::ops::Range<u32>, kind: Kind) -> Result<(), String> {
        for index in indices {
            let source = address_for(&self.sources, u64::from(index));
            self.engine
                .open(index, source, kind, &mut self.handler)
                .map_err(|error| format!("io_uring submission failed: {error}"))?;
        }
        Ok(())
    }

    fn turn(&mut self) -> Result<(), String> {
        self.engine
            .turn(&mut self.handler, TURN_WAIT_MAX)
            .map_err(|error| format!("io_uring failed: {error}"))
    }

    /// Turns until `done`, a stop, or the phase timeout.
    fn turn_until(
        &mut self,
        interrupted: &AtomicBool,
        done: impl Fn(&Run) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + PHASE_TIMEOUT;
        while !done(self) {
            if interrupted.load(Ordering::Relaxed) {
                return Err("interrupted".into());
            }
            if Instant::now() >= deadline {
                return Err("timed out waiting for the server".into());
            }
            self.turn()?;
            if self.handler.rate_per_publisher.is_some() && self.handler.publishing {
                self.top_up();
            }
        }
        Ok(())
    }

    fn turn_for(&mut self, interrupted: &AtomicBool, length: Duration) -> Result<(), String> {
        let end = Instant::now() + length;
        self.turn_until(interrupted, |_| Instant::now() >= end)
    }

    fn start_publishing(&mut self, options: &PublishOptions) {
        self.handler.publishing = true;
        self.handler.rate_per_publisher = options
            .rate
            .map(|rate| (rate / options.connections as f64, Instant::now()));
        self.top_up();
    }

    /// Gives every publisher the chance to write (with a rate, what has come due).
    fn top_up(&mut self) {
        for index in self.handler.publisher_indices() {
            let handler = &mut self.handler;
            self.engine
                .with_outbound(index, |out| handler.top_up(index, out));
        }
    }

    /// One end of the window: the server's count (probe or monitor) and the CPU clocks.
    fn mark(&mut self, options: &PublishOptions, interrupted: &AtomicBool) -> Result<Mark, String> {
        let requested_at = Instant::now();
        let accepted = match (self.probe, &options.nats_monitor) {
            (Some(probe), _) => Some(self.probe_seqs(probe, interrupted)?),
            (None, Some(monitor)) => Some(nats_in_msgs(monitor)?),
            (None, None) => None,
        };
        // The server read its count somewhere between the request and the answer.
        let at = requested_at + requested_at.elapsed() / 2;
        Ok(Mark {
            at,
            accepted,
            load_generator_cpu_ns: process_cpu_ns(),
            server_cpu_ns: options
                .server_pid
                .and_then(|pid| system::process_cpu_ns_of(pid).ok()),
        })
    }

    /// Subscribes the probe to every topic, sums the seqs in the acknowledgements, and
    /// unsubscribes it again.
    fn probe_seqs(&mut self, probe: u32, interrupted: &AtomicBool) -> Result<u64, String> {
        let (subscribe, unsubscribe) = self.handler.probe_requests();
        self.handler.probe_waiting = self.handler.names.len();
        self.handler.probe_seq_sum = 0;
        self.engine
            .with_outbound(probe, |out| out.text(subscribe.as_bytes()));
        self.turn_until(interrupted, |run| run.handler.probe_waiting == 0)?;
        self.engine
            .with_outbound(probe, |out| out.text(unsubscribe.as_bytes()));
        Ok(self.handler.probe_seq_sum)
    }

    fn result(&self, options: &PublishOptions, stopped_by: Option<String>) -> PublishResult {
        let settings = serde_json::json!({
            "url": options.url,
            "ca": options.ca,
            "server_name": options.server_name,
            "protocol": options.protocol,
            "connections": options.connections,
            "http": options.http,
            "pipeline": options.pipeline,
            "batch_bytes": options.batch_bytes,
            "subscribers": options.subscribers,
            "topics": options.topics,
            "payload_bytes": options.payload_bytes,
            "rate": options.rate,
            "warmup_seconds": options.warmup_seconds,
            "duration_seconds": options.duration_seconds,
        });
        let handler = &self.handler;
        let mut result = PublishResult {
            scenario: "publish",
            settings,
            stopped_by,
            connections_failed: handler.failed,
            subscribers_ready: handler.subscribed,
            window_seconds: 0.0,
            accepted: None,
            accepted_per_second: None,
            sent_per_second: 0.0,
            answered_per_second: None,
            refused: handler.window.refused,
            deliveries_per_second: 0.0,
            delivery_latency: LatencySummary::of(&handler.latency_ns),
            faults: handler.faults,
            unexpected: handler.unexpected,
            server_errors: handler.server_errors,
            load_generator_cpu_us_per_publish: None,
            server_cpu_us_per_publish: None,
            server_cpu_percent_of_one_core: None,
        };
        let (Some((first, last)), Some(start)) = (self.marks, &self.window_start) else {
            return result;
        };
        let seconds = last.at.duration_since(first.at).as_secs_f64();
        let end = &handler.window;
        result.window_seconds = seconds;
        result.sent_per_second = (end.sent - start.sent) as f64 / seconds;
        result.deliveries_per_second = (end.deliveries - start.deliveries) as f64 / seconds;
        if options.http {
            result.answered_per_second = Some((end.answered - start.answered) as f64 / seconds);
        }
        let accepted = match (first.accepted, last.accepted) {
            (Some(first), Some(last)) => Some(last.saturating_sub(first)),
            _ => None,
        };
        result.accepted = accepted;
        result.accepted_per_second = accepted.map(|count| count as f64 / seconds);
        let per_publish = |cpu_ns: u64| {
            accepted
                .filter(|count| *count > 0)
                .map(|count| cpu_ns as f64 / 1000.0 / count as f64)
        };
        result.load_generator_cpu_us_per_publish =
            per_publish(last.load_generator_cpu_ns - first.load_generator_cpu_ns);
        if let (Some(before), Some(after)) = (first.server_cpu_ns, last.server_cpu_ns) {
            result.server_cpu_us_per_publish = per_publish(after - before);
            result.server_cpu_percent_of_one_core =
                Some((after - before) as f64 / 1e9 / seconds * 100.0);
        }
        result
    }
}

/// The connections' roles: subscribers first, then publishers, then the probe.
fn roles(options: &PublishOptions, subscribers: u32, publishers: u32, probe: bool) -> Vec<Role> {
    let mut roles: Vec<Role> = (0..subscribers)
        .map(|index| Role::Subscriber {
            topic: index % options.topics,
            check: SequenceCheck::new(1),
            subscribed: false,
            nats: None,
        })
        .collect();
    for publisher in 0..publishers {
        let topics = (publisher..options.topics)
            .step_by(publishers as usize)
            .collect();
        roles.push(if options.http {
            Role::HttpPublisher {
                topics,
                next: 0,
                published: 0,
                in_flight: 0,
                partial: Vec::new(),
            }
        } else {
            Role::Publisher {
                topics,
                next: 0,
                published: 0,
            }
        });
    }
    if probe {
        roles.push(Role::Probe);
    }
    roles
}

/// `in_msgs` from nats-server's monitoring endpoint (`http://HOST:PORT`), `/varz`.
fn nats_in_msgs(monitor: &str) -> Result<u64, String> {
    let address = monitor.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(address).map_err(|error| format!("{monitor}: {error}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|error| error.to_string())?;
    write!(
        stream,
        "GET /varz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|error| format!("{monitor}: {error}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|error| format!("{monitor}: {error}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .ok_or_else(|| format!("{monitor}: no HTTP body"))?;
    let varz: serde_json::Value =
        serde_json::from_str(body).map_err(|error| format!("{monitor}/varz: {error}"))?;
    varz["in_msgs"]
        .as_u64()
        .ok_or_else(|| format!("{monitor}/varz has no in_msgs"))
}

fn markdown(result: &PublishResult) -> String {
    use std::fmt::Write as _;
    let mut text = String::from("## ringcast-loadtest publish\n\n");
    if let Some(reason) = &result.stopped_by {
        let _ = writeln!(text, "**Stopped early ({reason}): partial figures.**\n");
    }
    let _ = writeln!(text, "| figure | value |\n|---|---|");
    let optional = |value: Option<f64>, digits: usize| {
        value.map_or("n/a".to_owned(), |value| format!("{value:.digits$}"))
    };
    let rows = [
        (
            "accepted publishes/s (counted by the server)",
            optional(result.accepted_per_second, 0),
        ),
        (
            "sent publishes/s (handed to the kernel)",
            format!("{:.0}", result.sent_per_second),
        ),
        (
            "HTTP answered/s (200)",
            optional(result.answered_per_second, 0),
        ),
        (
            "deliveries/s to subscribers",
            format!("{:.0}", result.deliveries_per_second),
        ),
        ("window", format!("{:.2} s", result.window_seconds)),
        (
            "subscribers ready · connections failed",
            format!(
                "{} · {}",
                result.subscribers_ready, result.connections_failed
            ),
        ),
        (
            "load generator CPU µs per accepted publish",
            optional(result.load_generator_cpu_us_per_publish, 3),
        ),
        (
            "server CPU µs per accepted publish",
            optional(result.server_cpu_us_per_publish, 3),
        ),
        (
            "server CPU, % of one core",
            optional(result.server_cpu_percent_of_one_core, 0),
        ),
        (
            "delivery latency p50 · p99 (µs)",
            format!(
                "{:.0} · {:.0}",
                result.delivery_latency.p50_us, result.delivery_latency.p99_us
            ),
        ),
        (
            "gaps · duplicates · out of order",
            format!(
                "{} · {} · {}",
                result.faults.gaps, result.faults.duplicates, result.faults.out_of_order
            ),
        ),
        (
            "refused (HTTP) · server errors · unexpected",
            format!(
                "{} · {} · {}",
                result.refused, result.server_errors, result.unexpected
            ),
        ),
    ];
    for (name, value) in rows {
        let _ = writeln!(text, "| {name} | {value} |");
    }
    text
}
