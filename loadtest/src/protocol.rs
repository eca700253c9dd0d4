//! The coordinator–worker protocol: one JSON object per line, over the worker's stdin (commands)
//! and stdout (events). Stderr is left to the worker for diagnostics.
//!
//! A run goes: the coordinator sends `start` with the worker's plan; the worker opens its
//! connections, sending `progress` about once a second and `established` when every connection
//! has been attempted; the coordinator sends `proceed` when all workers are established (and,
//! for `connect`, the hold is over); the worker runs the measured phase and sends `finished`
//! with its report, then exits. `stop` (or end of input) at any time makes the worker end its
//! connections and send `finished` with what it measured so far.

use std::net::Ipv4Addr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::fanout::reach::ReachEntry;
use crate::fanout::sequence::OrderFaults;
use crate::fanout::steps::Step;
use crate::fanout::wire::Protocol;
use crate::histogram::EncodedHistogram;

/// A message from the coordinator to a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// The first line a worker reads: everything it is to do.
    Start(WorkerPlan),
    /// Begin the measured phase (liveness pings for `connect`, traffic for `echo`).
    Proceed,
    /// End now and report what was measured.
    Stop,
    /// Fanout, to the publishers' worker: publish at this step's rate for its duration, then
    /// answer `step_published`.
    Step(Step),
    /// Fanout, to each subscribers' worker: wait until the step's deliveries are in (or the
    /// drain timeout), then answer `step_collected`.
    Collect(CollectOrder),
}

/// What a subscribers' worker needs to know when a step's deliveries are all in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectOrder {
    pub step: u32,
    /// Messages published in the step, per topic (index = topic).
    pub published_per_topic: Vec<u64>,
    /// How long to wait for the deliveries still missing before reporting.
    pub drain_timeout_ms: u64,
}

/// A message from a worker to the coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Sent about once a second while connections are being opened.
    Progress(Progress),
    /// Every planned connection has been attempted (it is open or has failed).
    Established(Progress),
    /// The worker's final report; it exits after sending it.
    Finished(Box<WorkerReport>),
    /// The worker could not run at all (bad plan, runtime set-up failed).
    Failed { message: String },
    /// Fanout: the publishers finished a step.
    StepPublished(StepPublished),
    /// Fanout: one subscribers' worker's tally of a step.
    StepCollected(Box<StepCollected>),
}

/// What the publishers did in one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepPublished {
    pub worker_index: usize,
    pub step: u32,
    /// Messages published, per topic (index = topic).
    pub published_per_topic: Vec<u64>,
    /// The longest any publisher took for the step.
    pub duration_ms: u64,
    /// Publishers that ran the step to its end.
    pub publishers: u64,
    /// The worker's CPU time so far when it reported the step, ns.
    #[serde(default)]
    pub cpu_ns: u64,
}

/// What one worker's subscribers received in one step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepCollected {
    pub worker_index: usize,
    pub step: u32,
    pub deliveries: u64,
    /// Deliveries this worker's subscribers should have had: published per topic times the
    /// subscribers of the topic alive at collection.
    pub expected: u64,
    /// Every expected delivery arrived before the drain timeout.
    pub drained: bool,
    /// Publish → receive, nanoseconds, one value per delivery.
    pub latency_ns: EncodedHistogram,
    pub faults: OrderFaults,
    /// Per message: the slowest delivery and the count (see `crate::fanout::reach`).
    pub reach: Vec<ReachEntry>,
    pub reach_truncated: bool,
    /// (topic, subscribers alive in this worker), for reach completeness.
    pub subscribers_per_topic: Vec<(u32, u64)>,
    /// The worker's CPU time so far when it reported the step, ns.
    #[serde(default)]
    pub cpu_ns: u64,
}

/// Counts a worker reports while ramping up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub attempted: u64,
    pub established: u64,
    pub failed: u64,
    /// Milliseconds from the worker's start to its last connection attempt ending.
    pub ramp_ms: u64,
    /// Echoes received so far, warm-up included (echo only); fanout: deliveries so far.
    #[serde(default)]
    pub messages: u64,
    /// Fanout: connections subscribed (or, for publishers, ready to publish).
    #[serde(default)]
    pub ready: u64,
    /// CPU time the worker process has used so far (user + system, all threads), ns.
    #[serde(default)]
    pub cpu_ns: u64,
}

/// One worker's share of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub worker_index: usize,
    /// ws://IPv4:PORT/PATH
    pub url: String,
    /// A JWT every upgrade request carries as `Authorization: Bearer` (`--token-file`).
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// wss:// (and https://): what the worker's TLS client trusts and expects.
    #[serde(default)]
    pub tls: Option<TlsPlan>,
    /// Connections this worker opens.
    pub connections: u64,
    /// Connections per second this worker opens.
    pub rate_per_second: f64,
    /// Threads, each with its own tokio-uring runtime.
    pub threads: usize,
    /// Source addresses this worker binds its sockets to, round robin.
    pub source_addresses: Vec<Ipv4Addr>,
    pub connect_timeout_ms: u64,
    /// The worker stops by itself this long after starting, whatever the coordinator says.
    pub deadline_ms: u64,
    pub scenario: ScenarioPlan,
    /// The closed-loop ramp of each thread (see `crate::ramp`).
    #[serde(default)]
    pub ramp: RampPlan,
}

/// The TLS client of a wss:// run: each worker builds its own from these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsPlan {
    /// PEM file of the CA the server's certificate must chain to (`--ca`).
    pub ca_path: std::path::PathBuf,
    /// The name the certificate must hold (`--server-name`, by default the URL's host).
    pub server_name: String,
}

/// The closed-loop ramp's settings, per worker thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RampPlan {
    /// Connection attempts (connect + handshake, fanout: + subscription) in flight at most.
    pub in_flight_max: u64,
    /// An attempt slower than this is a sign of overload: the window shrinks.
    pub latency_ms_target: u64,
}

impl Default for RampPlan {
    fn default() -> Self {
        Self {
            in_flight_max: 1024,
            latency_ms_target: 250,
        }
    }
}

impl RampPlan {
    pub fn settings(self) -> crate::ramp::RampSettings {
        crate::ramp::RampSettings {
            in_flight_max: self.in_flight_max,
            latency_target: std::time::Duration::from_millis(self.latency_ms_target),
        }
    }
}

/// What each connection does once established.
///
/// A later scenario fits as a further variant: `fanout` (subscribe to topics, check per-topic
/// sequence numbers and measure latency from timestamps in the payloads).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScenarioPlan {
    /// Hold until `proceed`, then ping and await the pong.
    Connect { pong_timeout_ms: u64 },
    /// On `proceed`: warm up, then measure closed-loop echo round trips.
    Echo {
        payload_bytes: usize,
        warmup_ms: u64,
        duration_ms: u64,
        echo_timeout_ms: u64,
    },
    /// Open connections at the plan's rate for `duration_ms`, at most `open_max` open at once
    /// in this worker; each pings once, awaits its pong, closes cleanly (code 1000, waiting
    /// for the server's close frame) and ends. No `proceed` is needed.
    Churn {
        duration_ms: u64,
        open_max: u64,
        pong_timeout_ms: u64,
        close_timeout_ms: u64,
    },
    /// Subscribe (or get ready to publish), then follow the `step` and `collect` commands.
    Fanout(FanoutPlan),
}

/// A fanout worker's share: subscribers or publishers (never both in one worker).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FanoutPlan {
    pub protocol: Protocol,
    /// How subscribers read (WebSocket, SSE, NDJSON stream, long polls).
    #[serde(default)]
    pub transport: crate::fanout::http_stream::Transport,
    pub topics: u32,
    pub role: FanoutRole,
    /// Size of each message's data (the publisher's JSON object).
    pub payload_bytes: usize,
    /// How long a subscriber may wait for its subscription to be acknowledged.
    pub subscribe_timeout_ms: u64,
    /// Subscribers offer permessage-deflate (WebSocket only).
    #[serde(default)]
    pub compression: bool,
    /// What the data object holds besides the counters.
    #[serde(default)]
    pub payload_kind: crate::fanout::payload::PayloadKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum FanoutRole {
    /// The worker's connection i is subscriber `first_index + i`, on topic (that) % topics.
    Subscribers { first_index: u64 },
    /// The worker's connection i is publisher p = `first_index + i` of `total`, and publishes
    /// topics p, p + total, p + 2 × total, ... (publishers spread over several servers are in
    /// one worker per server).
    Publishers { first_index: u64, total: u64 },
}
/// Connections that failed, by cause. Every connection that fails counts once, under the
/// first thing that went wrong with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failures {
    /// The server refused the TCP connection (ECONNREFUSED): nothing listening, or backlog full.
    pub connect_refused: u64,
    /// No TCP connection within the connect timeout (SYNs dropped).
    pub connect_timeout: u64,
    /// Reset or broken pipe before the upgrade request was sent.
    pub connect_reset: u64,
    /// No local port left for the source address (EADDRNOTAVAIL).
    pub connect_no_port: u64,
    /// Out of file descriptors in the worker (EMFILE, ENFILE).
    pub connect_no_descriptor: u64,
    /// Any other error creating, binding or connecting the socket.
    pub connect_other: u64,
    /// The upgrade failed: a non-101 answer, a bad accept key, or the connection closed.
    pub handshake_failed: u64,
    /// Connected, but no complete upgrade answer within the connect timeout.
    pub handshake_timeout: u64,
    /// wss:// and https://: the TLS handshake failed (a certificate the CA does not vouch
    /// for, a wrong name, an alert from the server, or the server closing during it).
    #[serde(default)]
    pub tls_handshake_failed: u64,
    /// Upgraded, then closed or broken by the server (or a protocol error) before the end.
    pub closed_early: u64,
    /// No pong to the liveness ping within the pong timeout.
    pub no_pong: u64,
    /// No echo within the echo timeout.
    pub no_echo: u64,
    /// An echo that differed from what was sent.
    pub echo_mismatch: u64,
    /// No close frame from the server within the close timeout after ours (churn).
    pub no_close: u64,
    /// Fanout: the subscription (or NATS's CONNECT) was refused or not acknowledged within
    /// the subscribe timeout.
    #[serde(default)]
    pub no_subscribe_ack: u64,
}

/// The first thing that went wrong with a connection: one field of [`Failures`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    ConnectRefused,
    ConnectTimeout,
    ConnectReset,
    ConnectNoPort,
    ConnectNoDescriptor,
    ConnectOther,
    HandshakeFailed,
    HandshakeTimeout,
    TlsHandshakeFailed,
    ClosedEarly,
    NoPong,
    NoEcho,
    EchoMismatch,
    NoClose,
    NoSubscribeAck,
}

impl Failures {
    pub fn record(&mut self, cause: Cause) {
        let count = match cause {
            Cause::ConnectRefused => &mut self.connect_refused,
            Cause::ConnectTimeout => &mut self.connect_timeout,
            Cause::ConnectReset => &mut self.connect_reset,
            Cause::ConnectNoPort => &mut self.connect_no_port,
            Cause::ConnectNoDescriptor => &mut self.connect_no_descriptor,
            Cause::ConnectOther => &mut self.connect_other,
            Cause::HandshakeFailed => &mut self.handshake_failed,
            Cause::HandshakeTimeout => &mut self.handshake_timeout,
            Cause::TlsHandshakeFailed => &mut self.tls_handshake_failed,
            Cause::ClosedEarly => &mut self.closed_early,
            Cause::NoPong => &mut self.no_pong,
            Cause::NoEcho => &mut self.no_echo,
            Cause::EchoMismatch => &mut self.echo_mismatch,
            Cause::NoClose => &mut self.no_close,
            Cause::NoSubscribeAck => &mut self.no_subscribe_ack,
        };
        *count += 1;
    }

    /// Each cause with its count, in declaration order, for reports.
    pub fn by_cause(&self) -> [(&'static str, u64); 15] {
        [
            ("connect_refused", self.connect_refused),
            ("connect_timeout", self.connect_timeout),
            ("connect_reset", self.connect_reset),
            ("connect_no_port", self.connect_no_port),
            ("connect_no_descriptor", self.connect_no_descriptor),
            ("connect_other", self.connect_other),
            ("handshake_failed", self.handshake_failed),
            ("handshake_timeout", self.handshake_timeout),
            ("tls_handshake_failed", self.tls_handshake_failed),
            ("closed_early", self.closed_early),
            ("no_pong", self.no_pong),
            ("no_echo", self.no_echo),
            ("echo_mismatch", self.echo_mismatch),
            ("no_close", self.no_close),
            ("no_subscribe_ack", self.no_subscribe_ack),
        ]
    }

    pub fn total(&self) -> u64 {
        self.by_cause().iter().map(|(_, count)| count).sum()
    }

    pub fn merge(&mut self, other: &Failures) {
        self.connect_refused += other.connect_refused;
        self.connect_timeout += other.connect_timeout;
        self.connect_reset += other.connect_reset;
        self.connect_no_port += other.connect_no_port;
        self.connect_no_descriptor += other.connect_no_descriptor;
        self.connect_other += other.connect_other;
        self.handshake_failed += other.handshake_failed;
        self.handshake_timeout += other.handshake_timeout;
        self.tls_handshake_failed += other.tls_handshake_failed;
        self.closed_early += other.closed_early;
        self.no_pong += other.no_pong;
        self.no_echo += other.no_echo;
        self.echo_mismatch += other.echo_mismatch;
        self.no_close += other.no_close;
        self.no_subscribe_ack += other.no_subscribe_ack;
    }
}

/// What one worker measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub worker_index: usize,
    /// Connections attempted (at most the plan's count; fewer when stopped early).
    pub attempted: u64,
    /// Connections upgraded to WebSocket.
    pub established: u64,
    /// Connections that passed the measured phase: answered the ping (`connect`) or ran the
    /// echo loop to the end (`echo`).
    pub alive: u64,
    pub failures: Failures,
    /// Milliseconds from the worker's start to its last connection attempt ending.
    pub ramp_ms: u64,
    /// Nanoseconds from socket creation to the end of the WebSocket handshake.
    pub connect_latency_ns: EncodedHistogram,
    /// Nanoseconds from sending a message to receiving its echo (measured phase only).
    pub round_trip_ns: EncodedHistogram,
    /// Echoes received and checked during the measured phase.
    pub messages: u64,
    /// Milliseconds the measured phase lasted.
    pub measured_ms: u64,
    /// Whether `stop` or the deadline cut the run short.
    pub stopped_early: bool,
    /// Fanout: what the connections saw besides the steps' tallies.
    #[serde(default)]
    pub fanout: Option<FanoutTotals>,
    /// The threads did not finish within the worker's grace after `stop` (an overloaded
    /// worker): the report holds what they had published by then, up to a second old.
    #[serde(default)]
    pub partial: bool,
    /// How the closed-loop ramp went.
    #[serde(default)]
    pub ramp: RampReport,
    /// io_uring client: receives that found the buffer pool empty (re-armed, not lost).
    #[serde(default)]
    pub buffer_shortages: u64,
}

/// The closed-loop ramp as it went, per worker (threads added up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RampReport {
    /// Attempts allowed in flight at the end (the sum of the threads' windows).
    pub window_final: u64,
    /// How often a window shrank (a slow or failed attempt).
    pub cuts: u64,
    /// How long connections that were due waited for room in the window (the longest of the
    /// threads), ms: the time the machine, not `--rate`, set the pace.
    pub limited_ms: u64,
}

impl RampReport {
    pub fn merge(&mut self, other: &RampReport) {
        self.window_final += other.window_final;
        self.cuts += other.cuts;
        self.limited_ms = self.limited_ms.max(other.limited_ms);
    }
}

/// Fanout counts over the whole run, beside the per-step tallies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanoutTotals {
    /// Deliveries of a step that arrived after the step was collected.
    pub late_deliveries: u64,
    /// `error` messages (NATS: -ERR) from the server.
    pub server_errors: u64,
    /// `reset` messages from the server.
    pub resets: u64,
    /// Messages that were none of the above: foreign topics or data, malformed.
    pub unexpected: u64,
    /// Messages the publishers sent, over all steps.
    pub published: u64,
    /// Deliveries the fast scanner read that were also fully parsed, as a check.
    #[serde(default)]
    pub fully_parsed: u64,
    /// Of those, how many the full parse read differently (the full parse's reading counts).
    #[serde(default)]
    pub scanner_mismatches: u64,
    /// WebSocket subscribers: data messages received (acknowledgements included).
    #[serde(default)]
    pub data_messages: u64,
    /// Their bytes on the wire: frames with their heads, compressed when they came so.
    #[serde(default)]
    pub data_message_wire_bytes: u64,
    /// Of those messages, how many came compressed (permessage-deflate).
    #[serde(default)]
    pub compressed_messages: u64,
}

impl FanoutTotals {
    pub fn merge(&mut self, other: &FanoutTotals) {
        self.late_deliveries += other.late_deliveries;
        self.server_errors += other.server_errors;
        self.resets += other.resets;
        self.unexpected += other.unexpected;
        self.published += other.published;
        self.fully_parsed += other.fully_parsed;
        self.scanner_mismatches += other.scanner_mismatches;
        self.data_messages += other.data_messages;
        self.data_message_wire_bytes += other.data_message_wire_bytes;
        self.compressed_messages += other.compressed_messages;
    }
}

/// A line that is not a message of this protocol.
#[derive(Debug)]
pub struct ParseError {
    pub line: String,
    pub reason: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "bad protocol line ({}): {:.200}",
            self.reason, self.line
        )
    }
}

impl std::error::Error for ParseError {}

/// Serializes a message as one line, newline included.
pub fn encode_line<T: Serialize>(message: &T) -> String {
    // Our messages hold no maps with non-string keys and no non-finite floats from user input
    // that serde_json could reject; a failure here is a bug in this crate.
    let mut line = serde_json::to_string(message).expect("protocol messages always serialize");
    assert!(
        !line.contains('\n'),
        "JSON from serde_json is a single line"
    );
    line.push('\n');
    line
}

/// Parses one line (with or without its newline).
pub fn parse_line<T: DeserializeOwned>(line: &str) -> Result<T, ParseError> {
    serde_json::from_str(line.trim_end()).map_err(|error| ParseError {
        line: line.to_owned(),
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::{EncodedHistogram, new_histogram};

    fn plan() -> WorkerPlan {
        WorkerPlan {
            worker_index: 3,
            url: "ws://127.0.0.1:9100/ws".into(),
            bearer_token: None,
            tls: None,
            connections: 18_000,
            rate_per_second: 3333.5,
            threads: 2,
            source_addresses: vec![Ipv4Addr::new(127, 0, 1, 4), Ipv4Addr::new(127, 0, 1, 9)],
            connect_timeout_ms: 10_000,
            deadline_ms: 120_000,
            scenario: ScenarioPlan::Echo {
                payload_bytes: 20,
                warmup_ms: 1000,
                duration_ms: 10_000,
                echo_timeout_ms: 5000,
            },
            ramp: RampPlan {
                in_flight_max: 77,
                latency_ms_target: 250,
            },
        }
    }

    /// Every command survives encode → parse unchanged, as one line.
    #[test]
    fn commands_round_trip() {
        let commands = [
            Command::Start(plan()),
            Command::Proceed,
            Command::Stop,
            Command::Start(WorkerPlan {
                scenario: ScenarioPlan::Connect { pong_timeout_ms: 7 },
                url: "wss://127.0.0.1:9443/ws".into(),
                tls: Some(TlsPlan {
                    ca_path: "/tmp/ca.pem".into(),
                    server_name: "localhost".into(),
                }),
                ..plan()
            }),
            Command::Start(WorkerPlan {
                scenario: ScenarioPlan::Churn {
                    duration_ms: 1000,
                    open_max: 50,
                    pong_timeout_ms: 2000,
                    close_timeout_ms: 3000,
                },
                ..plan()
            }),
            Command::Start(WorkerPlan {
                scenario: ScenarioPlan::Fanout(FanoutPlan {
                    protocol: Protocol::Nats,
                    transport: crate::fanout::http_stream::Transport::Ws,
                    topics: 100,
                    role: FanoutRole::Subscribers {
                        first_index: 18_000,
                    },
                    payload_bytes: 100,
                    subscribe_timeout_ms: 5000,
                    compression: true,
                    payload_kind: crate::fanout::payload::PayloadKind::Quote,
                }),
                ..plan()
            }),
            Command::Step(Step {
                index: 2,
                rate_per_second: 4000.0,
                duration_ms: 5000,
            }),
            Command::Collect(CollectOrder {
                step: 2,
                published_per_topic: vec![40, 40],
                drain_timeout_ms: 5000,
            }),
        ];
        for command in commands {
            let line = encode_line(&command);
            assert_eq!(line.matches('\n').count(), 1);
            assert!(line.ends_with('\n'));
            assert_eq!(parse_line::<Command>(&line).unwrap(), command);
        }
    }

    /// Every event, a report with real histograms included, survives encode → parse.
    #[test]
    fn events_round_trip() {
        let mut histogram = new_histogram();
        for value in [1_000, 25_000, 25_001, 9_000_000] {
            histogram.record(value).unwrap();
        }
        let mut failures = Failures::default();
        failures.record(Cause::NoPong);
        failures.record(Cause::ConnectRefused);
        let report = WorkerReport {
            worker_index: 1,
            attempted: 10,
            established: 9,
            alive: 8,
            failures,
            ramp_ms: 1234,
            connect_latency_ns: EncodedHistogram::encode(&histogram),
            round_trip_ns: EncodedHistogram::encode(&new_histogram()),
            messages: 0,
            measured_ms: 0,
            stopped_early: true,
            fanout: Some(FanoutTotals {
                late_deliveries: 3,
                scanner_mismatches: 1,
                ..FanoutTotals::default()
            }),
            partial: true,
            ramp: RampReport {
                window_final: 40,
                cuts: 2,
                limited_ms: 1500,
            },
            buffer_shortages: 9,
        };
        let progress = Progress {
            attempted: 5,
            established: 4,
            failed: 1,
            ramp_ms: 0,
            messages: 7,
            ready: 2,
            cpu_ns: 123_456_789,
        };
        let events = [
            Event::Progress(progress),
            Event::Established(progress),
            Event::Finished(Box::new(report)),
            Event::Failed {
                message: "no \"runtime\"\nhere".into(),
            },
            Event::StepPublished(StepPublished {
                worker_index: 2,
                step: 1,
                published_per_topic: vec![5, 5, 4],
                duration_ms: 1000,
                publishers: 2,
                cpu_ns: 5,
            }),
            Event::StepCollected(Box::new(StepCollected {
                worker_index: 1,
                step: 1,
                deliveries: 9,
                expected: 10,
                drained: false,
                latency_ns: EncodedHistogram::encode(&histogram),
                faults: OrderFaults {
                    gaps: 1,
                    ..OrderFaults::default()
                },
                reach: vec![ReachEntry(0, 1, 25_000, 3)],
                reach_truncated: false,
                subscribers_per_topic: vec![(0, 3), (1, 2)],
                cpu_ns: 6,
            })),
        ];
        for event in events {
            let line = encode_line(&event);
            assert_eq!(line.matches('\n').count(), 1);
            assert_eq!(parse_line::<Event>(&line).unwrap(), event);
        }
    }

    /// The wire format is readable and stable: tagged objects with snake_case names.
    #[test]
    fn wire_format_is_tagged() {
        assert_eq!(
            encode_line(&Command::Proceed),
            "{\"command\":\"proceed\"}\n"
        );
        let line = encode_line(&Command::Start(plan()));
        assert!(line.starts_with("{\"command\":\"start\",\"worker_index\":3,"));
        assert!(line.contains("\"scenario\":{\"kind\":\"echo\",\"payload_bytes\":20,"));
        assert!(parse_line::<Command>("{\"command\":\"launch\"}").is_err());
        assert!(parse_line::<Event>("not json").is_err());
    }

    /// Each cause lands in its own field, and merging adds field by field.
    #[test]
    fn failures_record_and_merge() {
        let causes = [
            Cause::ConnectRefused,
            Cause::ConnectTimeout,
            Cause::ConnectReset,
            Cause::ConnectNoPort,
            Cause::ConnectNoDescriptor,
            Cause::ConnectOther,
            Cause::HandshakeFailed,
            Cause::HandshakeTimeout,
            Cause::TlsHandshakeFailed,
            Cause::ClosedEarly,
            Cause::NoPong,
            Cause::NoEcho,
            Cause::EchoMismatch,
            Cause::NoClose,
            Cause::NoSubscribeAck,
        ];
        let mut failures = Failures::default();
        for (index, cause) in causes.iter().enumerate() {
            for _ in 0..=index {
                failures.record(*cause);
            }
        }
        let counts: Vec<u64> = failures
            .by_cause()
            .iter()
            .map(|(_, count)| *count)
            .collect();
        assert_eq!(counts, (1..=15).collect::<Vec<u64>>());
        assert_eq!(failures.total(), 120);
        let mut merged = failures;
        merged.merge(&failures);
        assert_eq!(merged.total(), 240);
        assert_eq!(merged.no_subscribe_ack, 30);
        assert_eq!(merged.no_close, 28);
        assert_eq!(merged.no_echo, 24);
        assert_eq!(merged.tls_handshake_failed, 18);
    }
}
