//! The command line: one subcommand per scenario, plus the hidden `worker` that the coordinator
//! starts in child processes.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const LONG_ABOUT: &str = "\
ringcast-loadtest drives a WebSocket server with many client connections on loopback and \
measures what it sees: connections held, connect latency, echo throughput and round-trip \
latency, and (given the server's pid) the server's memory per connection.

One process can hold only as many sockets as its open-files limit allows, so the command you \
run is a coordinator: it starts worker processes (this same binary), gives each a share of the \
connections and a share of the source addresses 127.0.x.y, and merges what they measured. \
Every run is bounded in connections and in time; Ctrl-C stops all workers and still prints \
what was measured.

Output: progress on stderr (a bar on a terminal, else lines), a markdown summary on stdout, \
with --output a JSON file holding every figure and the merged latency histograms, and with \
--plots SVG plots of the latency CDF and of the rate over time.

wss:// (and https://) URLs speak TLS (rustls), verifying the server against --ca FILE and \
--server-name (default: the URL's host); the TLS handshake counts into the connect latency \
and its failures have a cause of their own, tls_handshake_failed.

Examples:
  ringcast-loadtest echo --url ws://127.0.0.1:9100/ws --connections 100 --payload-bytes 20
  ringcast-loadtest connect --url ws://127.0.0.1:9100/ws --connections 10000 --rate 20000 \\
      --hold-seconds 10 --server-pid $(pgrep -n ringcast) --output connect.json
  ringcast-loadtest echo --url wss://127.0.0.1:9443/ws --ca ca.pem --connections 100";

/// The command-line arguments of `ringcast-loadtest`.
#[derive(Debug, Parser)]
#[command(name = "ringcast-loadtest", version, about, long_about = LONG_ABOUT)]
pub struct Arguments {
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// What to measure.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Open many connections at a steady rate, hold them, then prove each one is alive.
    ///
    /// Ramps up to --connections at --rate connections per second, holds them for
    /// --hold-seconds, then has every connection send a ping and wait for its pong. Reports
    /// the connections achieved and alive, failures by cause, connect latency (TCP connect
    /// plus WebSocket handshake), the ramp time and, with --server-pid, the server's resident
    /// memory and the kernel's slab memory per connection.
    Connect(ConnectOptions),
    /// Closed-loop echo: each connection sends a text message and waits for its echo.
    ///
    /// Opens --connections connections, waits --warmup-seconds with traffic flowing, then
    /// measures for --duration-seconds: messages per second and round-trip latency. Every
    /// echo is checked byte for byte against what was sent.
    Echo(EchoOptions),
    /// Open and close connections at a steady rate: errors and server memory afterwards.
    ///
    /// For --duration-seconds, opens --rate connections per second (in total), never more
    /// than --concurrent-max open at once. Each connection does the TCP connect and the
    /// WebSocket handshake, one ping and its pong, then a clean close: a close frame with
    /// code 1000, a wait for the server's close frame, then the TCP close. Reports
    /// connections opened and closed cleanly, failures by cause, connect latency, the open
    /// rate achieved and, with --server-pid, the server's resident memory before the first
    /// connection and after the last one ended plus --settle-seconds.
    Churn(ChurnOptions),
    /// Pub/sub fanout: publish→receive latency and delivery checks at rising publish rates.
    ///
    /// Opens --subscribers connections (subscriber i on topic i % --topics, topics named
    /// T0000, T0001, ...) and waits for every subscription to be acknowledged, then
    /// --publishers connections publish (each topic by exactly one of them) at the rates of
    /// the plan: one --rate for --duration-seconds, or steps (--rates, or --rate-start ×
    /// --rate-factor up to --rate-max) of --step-seconds each, stopping after the first step
    /// that misses the bound (p99 latency over --latency-ms-p99-max, or any delivery missing,
    /// duplicated or out of order). Each message's data carries its per-topic counter, its
    /// step and the publisher's CLOCK_MONOTONIC send time, so every subscriber checks order
    /// and measures latency. Reports per step: offered and achieved publishes/s, deliveries/s,
    /// latency percentiles per delivery and per message (time to reach its last subscriber),
    /// gaps, duplicates, out-of-order and missing deliveries, and the highest step that met
    /// the bound.
    ///
    /// Protocols: ringcast (its JSON protocol), uws (the same protocol served by
    /// loadtest/peers/uws-pubsub.js), nats (nats-server's websocket listener), socketio
    /// (Socket.IO v5 over an Engine.IO v4 WebSocket, with a URL such as
    /// ws://127.0.0.1:8080/socket.io/?EIO=4&transport=websocket: ringcast's Socket.IO
    /// endpoint or loadtest/peers/socketio-pubsub.js).
    Fanout(FanoutOptions),
    /// Ingest: publishes per second a server accepts from publishers writing flat out.
    ///
    /// --connections publishers write as fast as the server reads: WebSocket messages in
    /// batches of --batch-bytes per send, or with --http pipelined `POST /publish/{topic}`
    /// requests (--pipeline in flight per connection). Each topic (T0000, ...) has one
    /// publisher; --subscribers subscribe first (subscriber i on topic i % --topics) and
    /// count and check what they get. After --warmup-seconds the window of
    /// --duration-seconds is measured; what the server accepted is counted by the server:
    /// for ringcast and uws a probe connection reads every topic's seq at both ends of the
    /// window, for NATS `in_msgs` of the monitoring endpoint (--nats-monitor). One process,
    /// one io_uring thread.
    Publish(PublishOptions),
    /// A floor program: the least an io_uring WebSocket server must do, to measure against.
    ///
    /// `floor echo` receives, unmasks and sends one unmasked frame back per message, with
    /// ringcast's batching (every ready completion in one batch, the turn's sends submitted
    /// together). `floor fanout` speaks enough of ringcast's JSON protocol for the fanout
    /// scenario (subscribe → subscribed with the topic's seq; publish → one frame encoded
    /// once and sent to each subscriber with one SEND). Both run under the same load
    /// generator as ringcast, so ringcast ÷ floor is a measured ratio. They run until killed;
    /// the first line on stdout says where they listen.
    Floor(FloorOptions),
    /// Internal: a worker process driven by the coordinator over stdin/stdout.
    #[command(hide = true)]
    Worker,
}

/// Options of the `publish` scenario.
#[derive(Clone, Debug, Args)]
pub struct PublishOptions {
    /// WebSocket URL of the server (ws://IPv4:PORT/PATH, or wss:// for TLS); HTTP
    /// publishing uses its host (over TLS too with wss:// or https://).
    #[arg(long, value_name = "URL", default_value = "ws://127.0.0.1:9100/ws")]
    pub url: String,

    /// PEM file of the CA the server's certificate must chain to. Required for wss:// and
    /// https:// URLs (refused for plain ones): the server is always verified.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// The name the server's certificate must hold (default: the URL's host address).
    #[arg(long, value_name = "NAME", requires = "ca")]
    pub server_name: Option<String>,

    /// The protocol the server speaks.
    #[arg(long, value_enum, default_value = "ringcast")]
    pub protocol: crate::fanout::wire::Protocol,

    /// Publisher connections.
    #[arg(long, value_name = "COUNT", default_value_t = 1)]
    pub connections: u64,

    /// Publish with pipelined HTTP/1.1 keep-alive requests instead of WebSocket messages.
    #[arg(long)]
    pub http: bool,

    /// HTTP requests in flight per connection.
    #[arg(long, value_name = "COUNT", default_value_t = 64)]
    pub pipeline: u64,

    /// WebSocket publishers queue messages up to this many bytes per send.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    pub batch_bytes: usize,

    /// Subscribers, subscribed before publishing starts; subscriber i takes topic i % topics.
    #[arg(long, value_name = "COUNT", default_value_t = 0)]
    pub subscribers: u64,

    /// Topics published to, round robin per publisher.
    #[arg(long, value_name = "COUNT", default_value_t = 1000)]
    pub topics: u32,

    /// Size of each message's data (the JSON object), bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    pub payload_bytes: usize,

    /// Publishes per second in total at most (default: as fast as the server takes them).
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,

    /// Seconds of publishing before the window starts.
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    pub warmup_seconds: u64,

    /// Seconds the window lasts.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub duration_seconds: u64,

    /// Seconds a connection may take for TCP connect plus the WebSocket handshake.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub connect_timeout_seconds: u64,

    /// nats-server's monitoring endpoint (http://HOST:PORT): `in_msgs` counts accepted
    /// publishes. Required with --protocol nats.
    #[arg(long, value_name = "URL")]
    pub nats_monitor: Option<String>,

    /// Pid of the server, to report its CPU time per accepted publish.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Write the result as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// A file holding a JWT (one line) that every upgrade and every HTTP publish sends as
    /// `Authorization: Bearer <token>`, for a server with auth_mode = jwt (its `publish` and
    /// `subscribe` grants must cover the scenario's topics).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

/// Which floor program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FloorKind {
    Echo,
    Fanout,
}

/// Options of the floor programs.
#[derive(Clone, Debug, Args)]
pub struct FloorOptions {
    /// echo or fanout.
    #[arg(value_enum)]
    pub kind: FloorKind,

    /// Address to listen on (port 0: any free port, printed on stdout).
    #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1:9400")]
    pub listen: String,

    /// Threads, each with its own listener (SO_REUSEPORT) and ring; fanout always uses one.
    #[arg(long, value_name = "COUNT", default_value_t = 1)]
    pub threads: usize,

    /// Connections per thread at most: the size of each ring's table of direct descriptors,
    /// which must fit under the soft open-files limit.
    #[arg(long, value_name = "COUNT", default_value_t = 19_990)]
    pub connections_max: usize,
}

/// Options every scenario shares: the target, the process layout, timeouts and outputs.
#[derive(Clone, Debug, Args)]
pub struct CommonOptions {
    /// WebSocket URL of the server, an IPv4 address on this machine: ws://, or wss:// for
    /// TLS (rustls, verifying the server against --ca; the handshake counts into the connect
    /// latency). http:// and https:// are the same targets (the HTTP transports use them).
    #[arg(long, value_name = "URL", default_value = "ws://127.0.0.1:9100/ws")]
    pub url: String,

    /// PEM file of the CA the server's certificate must chain to. Required for wss:// and
    /// https:// URLs (refused for plain ones): the server is always verified.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// The name the server's certificate must hold (default: the URL's host address).
    #[arg(long, value_name = "NAME", requires = "ca")]
    pub server_name: Option<String>,

    /// A file holding a JWT (one line) that every upgrade request sends as
    /// `Authorization: Bearer <token>`, for a server with auth_mode = jwt.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// Worker processes to spread the connections over.
    ///
    /// Default: one per 18000 connections (rounded up), since each process may hold only as
    /// many sockets as its open-files limit (ulimit -n) allows.
    #[arg(long, value_name = "COUNT")]
    pub workers: Option<usize>,

    /// Threads in each worker, each running its own tokio-uring runtime.
    #[arg(long, value_name = "COUNT", default_value_t = 1)]
    pub threads_per_worker: usize,

    /// Source addresses (127.0.x.y) to spread the client sockets over.
    ///
    /// Each address gives about 28000 ephemeral ports towards one server address, and the
    /// kernel's port search slows as an address fills up. Default: one per 2000 connections,
    /// at least 8, rounded up to a multiple of --workers.
    #[arg(long, value_name = "COUNT")]
    pub source_addresses: Option<usize>,

    /// Seconds one connection may take for TCP connect plus the WebSocket handshake.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub connect_timeout_seconds: u64,

    /// Connection attempts in flight at most, per worker thread (the closed-loop ramp's
    /// ceiling).
    ///
    /// The rate is a ceiling too: an attempt (connect + handshake, for fanout also the
    /// subscription) starts when it is due and fewer than the ramp's window are in flight.
    /// The window starts at 32, doubles while attempts finish within
    /// --connect-latency-ms-target, then grows by one per window; it shrinks by a quarter
    /// after a slower attempt and halves after a failed one. So on a machine slower than
    /// --rate assumes, the ramp slows down instead of timing out, and the report gives the
    /// rate it sustained.
    #[arg(long, value_name = "COUNT", default_value_t = 1024)]
    pub in_flight_max: u64,

    /// Connection attempts slower than this make the closed-loop ramp slow down.
    #[arg(long, value_name = "MILLISECONDS", default_value_t = 250)]
    pub connect_latency_ms_target: u64,

    /// Pid of the server process, to read its resident memory (VmRSS) before and after.
    ///
    /// "Before" is sampled before the first connection, "after" once all are established
    /// (at the end of the hold). The growth includes the first touch of pools the server
    /// allocated at start-up, so a server fresh from start shows more per connection than a
    /// second run against the same process. The kernel's slab (/proc/meminfo) is sampled at
    /// the same moments, pid or not.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Write the full result as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Write SVG plots into this directory (made if missing).
    ///
    /// <scenario>-latency-cdf.svg: the latency CDF from the merged histogram (connect latency
    /// for connect, round trip for echo) on a log axis; <scenario>-rate.svg: connections
    /// established (connect) or echoes (echo, warm-up included) per second of the run.
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
}

/// Options of the `connect` scenario.
#[derive(Clone, Debug, Args)]
pub struct ConnectOptions {
    #[command(flatten)]
    pub common: CommonOptions,

    /// Connections to open in total, over all workers.
    #[arg(long, value_name = "COUNT")]
    pub connections: u64,

    /// Connections to open per second, in total over all workers.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 10_000.0)]
    pub rate: f64,

    /// Seconds to hold the connections once every one has been attempted.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub hold_seconds: u64,

    /// Seconds each connection may wait for the pong to its liveness ping.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub pong_timeout_seconds: u64,
}

/// Options of the `echo` scenario.
#[derive(Clone, Debug, Args)]
pub struct EchoOptions {
    #[command(flatten)]
    pub common: CommonOptions,

    /// Connections, each with one message in flight at a time.
    #[arg(long, value_name = "COUNT", default_value_t = 100)]
    pub connections: u64,

    /// Connections to open per second while ramping up, in total.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 10_000.0)]
    pub rate: f64,

    /// Size of each text message, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 20)]
    pub payload_bytes: usize,

    /// Seconds of traffic before measuring starts.
    #[arg(long, value_name = "SECONDS", default_value_t = 1)]
    pub warmup_seconds: u64,

    /// Seconds to measure for, after the warm-up.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub duration_seconds: u64,

    /// Seconds a connection waits for one echo before it counts as failed.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub echo_timeout_seconds: u64,
}

/// Options of the `churn` scenario.
#[derive(Clone, Debug, Args)]
pub struct ChurnOptions {
    #[command(flatten)]
    pub common: CommonOptions,

    /// Connections to open per second, in total over all workers.
    ///
    /// The run opens at most --rate × --duration-seconds connections. When --concurrent-max
    /// connections are open, new opens wait, so the rate achieved (reported) may be lower.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 1000.0)]
    pub rate: f64,

    /// Seconds during which connections are opened; those open at the end finish their
    /// ping and close before the run ends.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub duration_seconds: u64,

    /// Connections open at once at most, in total over all workers (split evenly between
    /// the workers' threads, each thread getting at least one).
    #[arg(long, value_name = "COUNT", default_value_t = 1000)]
    pub concurrent_max: u64,

    /// Seconds each connection may wait for the pong to its ping.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub pong_timeout_seconds: u64,

    /// Seconds each connection may wait for the server's close frame after sending its own.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub close_timeout_seconds: u64,

    /// Seconds to wait after the last connection ended before sampling the server's memory
    /// (and the kernel's slab) again, so that deferred frees have happened.
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    pub settle_seconds: u64,
}

/// Options of the `fanout` scenario.
#[derive(Clone, Debug, Args)]
pub struct FanoutOptions {
    #[command(flatten)]
    pub common: CommonOptions,

    /// The protocol the server speaks.
    #[arg(long, value_enum, default_value = "ringcast")]
    pub protocol: crate::fanout::wire::Protocol,

    /// How subscribers read: WebSocket, or (ringcast, and Pushpin for sse) the HTTP transports
    /// `GET /sse`, `GET /stream` or long polls on `GET /poll`. Publishers always use WebSocket
    /// (ringcast, uws, nats) or Pushpin's HTTP publish API.
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: crate::fanout::http_stream::Transport,

    /// Where publishers connect, when not to --url (ws:// or wss://IPv4:PORT/PATH; --ca
    /// serves both URLs): Pushpin's subscribers connect to the proxy and publishers to the
    /// origin that publishes to it.
    ///
    /// Several servers (the nodes of a ringcast cluster): --url and --publish-url may each be
    /// a comma-separated list. Subscriber worker i connects to the list's URL i (round robin;
    /// --workers is raised to the URLs), and the publishers are split evenly over the publish
    /// URLs, a worker each, every topic still with exactly one publisher.
    #[arg(long, value_name = "URL")]
    pub publish_url: Option<String>,

    /// Subscriber connections, in total over all workers; subscriber i takes topic i % topics.
    #[arg(long, value_name = "COUNT", default_value_t = 1000)]
    pub subscribers: u64,

    /// Topics, named T0000, T0001, ...
    #[arg(long, value_name = "COUNT", default_value_t = 10)]
    pub topics: u32,

    /// Publisher connections, all in one extra worker; publisher p publishes topics p, p + P,
    /// p + 2P, ... so each topic has exactly one publisher and its counter is in order.
    #[arg(long, value_name = "COUNT", default_value_t = 1)]
    pub publishers: u64,

    /// Size of each message's data (the JSON object publishers send), in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    pub payload_bytes: usize,

    /// What the data holds besides its counters: `padding` (x up to --payload-bytes: the
    /// lightest to check) or `quote` (a market quote whose prices and sizes change with every
    /// message, padded only if still short: what compression sees in production).
    #[arg(long, value_enum, default_value = "padding")]
    pub payload_kind: crate::fanout::payload::PayloadKind,

    /// WebSocket subscribers offer permessage-deflate (`client_max_window_bits`) and inflate
    /// what comes compressed; the report gives the data messages' bytes on the wire and how
    /// many came compressed. Publishers send uncompressed.
    #[arg(long)]
    pub compression: bool,

    /// One fixed publish rate (messages per second over all topics) for --duration-seconds.
    #[arg(long, value_name = "PER_SECOND", conflicts_with_all = ["rates", "rate_start"])]
    pub rate: Option<f64>,

    /// Seconds the fixed --rate runs.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, requires = "rate")]
    pub duration_seconds: u64,

    /// Steps of publish rates, comma-separated (messages per second over all topics).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        conflicts_with = "rate_start"
    )]
    pub rates: Option<Vec<f64>>,

    /// First rate of a geometric step plan (the default plan when no rate is given).
    #[arg(long, value_name = "PER_SECOND")]
    pub rate_start: Option<f64>,

    /// Each step of a geometric plan multiplies the rate by this.
    #[arg(long, value_name = "FACTOR", default_value_t = 2.0)]
    pub rate_factor: f64,

    /// Last rate of a geometric plan (included when reached exactly).
    #[arg(long, value_name = "PER_SECOND", default_value_t = 1_024_000.0)]
    pub rate_max: f64,

    /// Seconds each step of a step plan publishes.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub step_seconds: u64,

    /// A step meets the bound when the p99 of its publish→receive latencies is at most this
    /// (and every delivery arrived once and in order).
    #[arg(long, value_name = "MILLISECONDS", default_value_t = 50.0)]
    pub latency_ms_p99_max: f64,

    /// Seconds after a step's publishing ends to wait for deliveries still missing.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub drain_seconds: u64,

    /// Seconds every subscription stays open with nothing published, between ready and the
    /// first step (to measure what held subscriptions cost).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub idle_seconds: u64,

    /// Seconds a subscriber may wait for its subscription to be acknowledged (NATS: the PONG
    /// to a PING sent after the SUB).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub subscribe_timeout_seconds: u64,

    /// Connections to open per second while ramping up, in total.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 10_000.0)]
    pub connect_rate: f64,
}

impl CommonOptions {
    /// The token of `--token-file` (its first line), read once by the coordinator.
    pub fn bearer_token(&self) -> Result<Option<String>, String> {
        read_bearer_token(self.token_file.as_deref())
    }

    /// The closed-loop ramp's settings for each worker thread.
    pub fn ramp(&self) -> crate::protocol::RampPlan {
        crate::protocol::RampPlan {
            in_flight_max: self.in_flight_max,
            latency_ms_target: self.connect_latency_ms_target,
        }
    }
}

/// The token in the file of a `--token-file` (its first line), if one was given.
pub fn read_bearer_token(path: Option<&std::path::Path>) -> Result<Option<String>, String> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("--token-file {}: {error}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        return Err(format!("--token-file {} holds no token", path.display()));
    }
    Ok(Some(token))
}
