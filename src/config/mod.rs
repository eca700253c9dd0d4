//! Every runtime limit of ringcast, with its default and the reason for it.
//!
//! Limits are plain data here; the protocol core reads them and never reaches for a clock, a
//! socket or the environment. `validate` runs once at start-up so that a bad setting fails loudly
//! before any connection is accepted.
//!
//! Settings come in layers, each overriding the one before: the defaults below, the TOML config
//! file, the `RINGCAST_*` environment variables, then the command line (see `crate::cli`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod error;
mod layers;
mod nofile;
mod tls;

pub use error::ConfigError;
pub use layers::{
    ConfigOverrides, LOG_VARIABLE, Setting, UnknownVariable, VARIABLE_PREFIX, default_table,
    edit_distance, setting_named, settings, unknown_variables,
};
pub use nofile::{NofileLimits, check_file_table_fits, raise_nofile_soft_limit_to_hard};

use crate::auth::Authenticator;
pub use crate::auth::{AuthConfig, AuthMode};
pub use crate::broker::config::{BrokerConfig, SlowConsumerPolicy};
use crate::broker::event::EventKind;
use crate::broker::http_api::PublishConfig;
use crate::egress::EgressSettings;
pub use crate::egress::nats::{NatsConfig, NatsSettings};
use crate::egress::occupancy::OccupancySettings;
pub use crate::egress::webhook::WebhookConfig;
use crate::endpoint::EndpointSettings;
pub use crate::endpoint::socketio::SocketIoConfig;
use crate::protocol::ProtocolLimits;
use crate::protocol::pool::PoolLimits;

/// Slots of each shard's registered-file table kept for descriptors other than connections: the
/// listening socket and the shard's wake-up eventfd, with room for a few more without changing
/// the sizing rule.
pub const RESERVED_FILE_SLOTS: usize = 8;

/// Most shards one process runs. The cross-shard mailboxes form an N × N mesh whose queue count
/// grows with the square of the shard count; 1,024 shards is beyond any machine's core count and
/// keeps that mesh at about a million queues.
pub const SHARDS_MAX: usize = 1024;

// A long-polling Socket.IO session's id names its shard (12 bits) and its slot (24 bits, after
// the connection table): every shard and slot the settings allow must fit.
const _: () = assert!(SHARDS_MAX - 1 <= crate::endpoint::socketio_polling::SESSION_SHARD_MAX);
const _: () = assert!(
    REGISTERED_FILES_KERNEL_MAX + crate::endpoint::socketio::POLLING_SESSIONS_LIMIT
        <= crate::endpoint::socketio_polling::SESSION_SLOT_MAX
);

/// Most entries of a provided buffer ring: the kernel wants a power of two below 65,536.
pub const RECEIVE_BUFFERS_COUNT_MAX: usize = 32 * 1024;

/// Largest registered-file table the kernel accepts whatever the resource limit
/// (`IORING_MAX_FIXED_FILES`).
pub const REGISTERED_FILES_KERNEL_MAX: usize = 1 << 20;

/// Most iovecs the kernel takes in one `sendmsg` (`UIO_MAXIOV`).
pub const SEND_BATCH_FRAMES_KERNEL_MAX: usize = 1024;

/// Most events one shard's feed to the webhook thread may hold (`webhook_shard_events_max`):
/// 16 Mi events would be a gigabyte of preallocated queue per shard.
pub const WEBHOOK_SHARD_EVENTS_LIMIT: usize = 16 * 1024 * 1024;

/// Everything one ringcast process needs to start: where to listen, how many shards, and every
/// per-shard and per-connection limit. Read from the config file with unknown keys refused, so
/// that a misspelled setting is an error rather than silently left at its default.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to accept WebSocket connections on. Default 127.0.0.1:8080: loopback, so
    /// that a server started without thought is not reachable from the network.
    pub listen: SocketAddr,
    /// Address and port to accept TLS connections on (`wss://`, `https://`), served by the
    /// same shards and endpoints as `listen`. Default "" (none): TLS needs a certificate, so it
    /// is off until one is given.
    #[serde(
        serialize_with = "tls::serialize_address",
        deserialize_with = "tls::deserialize_address"
    )]
    pub tls_listen: Option<SocketAddr>,
    /// The TLS certificate chain, PEM, the server's certificate first. Read at start-up and
    /// again on SIGHUP. Default "" (none; required with `tls_listen`).
    pub tls_certificate: PathBuf,
    /// The private key of that certificate, PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC). Read with
    /// the certificate. Default "" (none; required with `tls_listen`).
    pub tls_private_key: PathBuf,
    /// Shards to run, one thread and one io_uring each. Default: one per CPU this process may use
    /// (`std::thread::available_parallelism`), since a shard never blocks and a second one on the
    /// same core only adds switching. 0 in the file means that default.
    pub shards: usize,
    /// Connections one shard holds at once. Default 16,384. Each shard's registered-file table
    /// holds this many direct descriptors plus `RESERVED_FILE_SLOTS`, and the kernel refuses a
    /// table larger than the soft RLIMIT_NOFILE (checked per ring), so the sum must fit under it.
    pub connections_per_shard_max: usize,
    /// Echo every message back instead of brokering it. Default off. For the Autobahn conformance
    /// suite and for benchmarks of the transport alone; the frame and message limits rise to
    /// 16 MiB unless a layer sets them.
    pub echo: bool,
    /// Serve the live ticker board (a page, its scripts and the JavaScript client, embedded in
    /// the binary) at `GET /`, `/board.js`, `/board-socketio.js`, `/ringcast.js` and
    /// `/symbols.txt`. Default on: a newcomer running `--demo` opens the address in a browser
    /// and sees prices move. Off, these paths answer 404.
    pub board_enabled: bool,
    /// Accept WebSocket upgrades at `/ws`. Default on. Off, `/ws` answers 403 and clients read
    /// through `/sse`, `/stream` or `/poll`: for a deployment behind a proxy that breaks
    /// WebSocket, and for testing that clients fall back.
    pub websocket_enabled: bool,
    /// Time a client has to complete the upgrade request after connecting. Default 10 s: enough
    /// for a slow network, and short enough that a slowloris client dribbling header bytes cannot
    /// hold a connection slot for long.
    pub handshake_timeout_ms: u64,
    /// After this long without traffic from a client, the server sends it a ping. Default 30 s:
    /// below the idle timeouts of common NATs and load balancers (60 s and up), so quiet
    /// connections stay open, while dead ones are found within a minute.
    pub idle_timeout_ms: u64,
    /// A ping unanswered this long closes the connection. Default 10 s: a live client answers
    /// within a round trip, and one this late is dead or too slow to keep up with market data.
    pub pong_timeout_ms: u64,
    /// After sending a close frame, how long to wait for the peer's before dropping the TCP
    /// connection. Default 5 s: RFC 6455 asks for the closing handshake, but a peer that never
    /// answers must not keep its slot.
    pub close_timeout_ms: u64,
    /// On SIGTERM, how long clients get to finish the closing handshake before the process exits.
    /// Default 5 s: well inside orchestrators' grace periods (Kubernetes gives 30 s).
    pub drain_timeout_ms: u64,
    /// A connection with frames queued and none of them sent for this long is closed with 1008
    /// ("send stalled"), whether or not it answers pings: a peer that keeps its socket open
    /// without reading would otherwise hold its queue for good. Default 60 s: far beyond any
    /// stall of a live reader, short enough that an idle attacker pays for its socket only.
    pub send_stall_timeout_ms: u64,
    /// A WebSocket message (or frame) begun and not finished within this long is refused with
    /// 1008: a peer trickling a large message one byte at a time would otherwise hold a large
    /// pooled buffer for good. Default 30 s: a 1 MiB message at 35 KB/s.
    pub message_timeout_ms: u64,
    /// The kernel's send buffer of each connection (SO_SNDBUF), in bytes; 0 leaves the kernel's
    /// autotuning (up to `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default). Default 256 KiB: a
    /// client that stops reading parks at most this much in the kernel (which charges twice
    /// it) before ringcast's own queue, under its budgets and policies, takes over; live
    /// market data to one client never needs more on a path with up to ~100 ms of round trip.
    pub socket_send_buffer_bytes: usize,
    /// The kernel's receive buffer of each connection (SO_RCVBUF), in bytes; 0 leaves the
    /// kernel's autotuning. Default 256 KiB, for the same reason: a client whose reading is
    /// paused (backpressure) parks at most this much in the kernel.
    pub socket_receive_buffer_bytes: usize,
    /// Size of each buffer in a shard's provided buffer ring, so the most one receive completion
    /// returns. Default 4 KiB: dozens of small market-data frames in one completion. The kernel
    /// hands buffers out in ring order, so over time every buffer gets touched: the ring is a
    /// fixed resident cost, and 4 KiB keeps it at 16 MiB per shard while large messages still
    /// arrive at one completion per 4 KiB.
    pub receive_buffer_bytes: usize,
    /// Buffers in each shard's provided buffer ring: a power of two ≤ 32,768 (the kernel's rule).
    /// Default 4,096. The ring is allocated at start-up and costs count × bytes per shard:
    /// 4,096 × 4 KiB = 16 MiB by default. When every buffer holds unread data, receives stall
    /// until the shard returns some, so this bounds the data in flight, not the connections.
    pub receive_buffers_count: usize,
    /// Bytes queued for sending to one connection before it counts as a slow consumer. Default
    /// 1 MiB: seconds of a busy feed, enough to ride out a short stall. A ceiling, not an
    /// allocation. Over it the slow-consumer policy applies (`broker.slow_consumer_policy`:
    /// conflate by default). Must hold one largest message.
    pub outbound_queue_bytes_max: usize,
    /// Frames queued for sending to one connection, by the same rule. Default 16,384: bounds the
    /// queue's bookkeeping (32 bytes a frame) when frames are so small that the byte limit is
    /// never reached, yet holds a burst of small ticks: one turn of a shard can deliver
    /// thousands of messages to one subscriber before its next send.
    pub outbound_queue_frames_max: usize,
    /// Most frames gathered into one `sendmsg`, one iovec each. Default 64: enough to spread the
    /// system call over a burst, few enough that one connection's batch does not hold up the
    /// others on its shard. The kernel refuses more than 1,024.
    pub send_batch_frames_max: usize,
    /// Least time between two copies of the same rate-limited warning, such as a slow consumer
    /// closed. Default 10 s: a flood of bad clients cannot flood the log, and an ongoing problem
    /// still shows every ten seconds.
    pub log_interval_ms: u64,
    /// Limits of the WebSocket protocol core (`[protocol]` in the config file).
    pub protocol: ProtocolLimits,
    /// Each shard's message buffer pool (`[[pool.classes]]` in the config file). When no layer
    /// sets it, it is sized from `protocol.message_bytes_max` by
    /// `PoolLimits::for_message_bytes_max`.
    pub pool: PoolLimits,
    /// The pub/sub broker's limits and policies (`[broker]` in the config file).
    pub broker: BrokerConfig,
    /// Who may connect and from where: JWT, origins, per-address limits (`[auth]`).
    pub auth: AuthConfig,
    /// Socket.IO clients: path, Engine.IO heartbeat, limits (`[socketio]`).
    pub socketio: SocketIoConfig,
    /// Events each shard's feed to the webhook thread holds (allocated at start-up, about
    /// 80 bytes each, only when a webhook is configured). Default 16,384: far more than the
    /// thread, which takes them every millisecond, lets pile up unless it is starved of CPU.
    /// A full feed drops its oldest event (counted in `webhook_feed_drops`).
    pub webhook_shard_events_max: usize,
    /// The local address webhook requests leave from, so that receivers behind a firewall can
    /// allow it; empty (default) lets the system choose by route.
    pub webhook_source_address: String,
    /// Webhook endpoints (`[[webhook]]` tables; `RINGCAST_WEBHOOK` takes them as a TOML array of
    /// inline tables). Default none: no events are decided, and the shards pay nothing.
    pub webhook: Vec<WebhookConfig>,
    /// Joining other ringcast nodes through NATS JetStream (`[nats]`). Default: no
    /// `nats_urls`, a single node.
    pub nats: NatsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            tls_listen: None,
            tls_certificate: PathBuf::new(),
            tls_private_key: PathBuf::new(),
            shards: shards_default(),
            connections_per_shard_max: 16 * 1024,
            echo: false,
            board_enabled: true,
            websocket_enabled: true,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            pong_timeout_ms: 10_000,
            close_timeout_ms: 5_000,
            drain_timeout_ms: 5_000,
            send_stall_timeout_ms: 60_000,
            message_timeout_ms: 30_000,
            socket_send_buffer_bytes: 256 * 1024,
            socket_receive_buffer_bytes: 256 * 1024,
            receive_buffer_bytes: 4 * 1024,
            receive_buffers_count: 4 * 1024,
            outbound_queue_bytes_max: 1024 * 1024,
            outbound_queue_frames_max: 16 * 1024,
            send_batch_frames_max: 64,
            log_interval_ms: 10_000,
            protocol: ProtocolLimits::default(),
            pool: PoolLimits::default(),
            broker: BrokerConfig::default(),
            auth: AuthConfig::default(),
            socketio: SocketIoConfig::default(),
            webhook_shard_events_max: 16 * 1024,
            webhook_source_address: String::new(),
            webhook: Vec::new(),
            nats: NatsConfig::default(),
        }
    }
}

/// One shard per CPU this process may run on; one when the OS will not say.
fn shards_default() -> usize {
    std::thread::available_parallelism().map_or(1, |count| count.get())
}

/// Which derived settings some layer gave explicitly. A derived value (echo's raised limits, the
/// pool sized from the message limit) never replaces one the user wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ExplicitSettings {
    frame_bytes_max: bool,
    message_bytes_max: bool,
    outbound_queue_bytes_max: bool,
    pool: bool,
    publish_body_bytes_max: bool,
}

impl ServerConfig {
    /// Builds the configuration from its layers, each overriding the one before: the defaults,
    /// the config file's text (if any), then each set of overrides in order (the environment,
    /// then the command line). Settings derived from others are filled in last, except where a
    /// layer wrote them. Does not validate, so that the caller chooses when to ask the OS about
    /// its limits.
    pub fn from_layers(
        file_text: Option<&str>,
        overrides: &[ConfigOverrides],
    ) -> Result<Self, ConfigError> {
        let mut table = match file_text {
            Some(text) => Self::parse_file(text)?,
            None => toml::Table::new(),
        };
        for layer in overrides {
            layer.apply_to(&mut table);
        }
        // Serde fills absent keys with their defaults, so which keys some layer wrote is read
        // from the merged document itself.
        let written = |path: &[&str]| {
            let (leaf, sections) = path.split_last().expect("a path names a key");
            let mut current = &table;
            for section in sections {
                match current.get(*section).and_then(toml::Value::as_table) {
                    Some(inner) => current = inner,
                    None => return false,
                }
            }
            current.contains_key(*leaf)
        };
        let explicit = ExplicitSettings {
            frame_bytes_max: written(&["protocol", "frame_bytes_max"]),
            message_bytes_max: written(&["protocol", "message_bytes_max"]),
            outbound_queue_bytes_max: written(&["outbound_queue_bytes_max"]),
            pool: written(&["pool", "classes"]),
            publish_body_bytes_max: written(&["broker", "publish_body_bytes_max"]),
        };
        // Each layer's values were checked on their own as the layer was built, and the file's
        // as it was parsed, so only a combination could fail here.
        let mut config = Self::deserialize(table).map_err(|error| ConfigError::Layers {
            message: error.message().trim_end().to_owned(),
        })?;
        config.derive_unset(explicit);
        Ok(config)
    }

    /// Parses a config file's text alone (no environment, no command line).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_layers(Some(text), &[])
    }

    /// Parses the file as a document and checks it against the config's types, so that a
    /// mistake in the file is reported with its line and column before any layer applies.
    fn parse_file(text: &str) -> Result<toml::Table, ConfigError> {
        let parse_error = |error: toml::de::Error| ConfigError::FileParse {
            path: None,
            message: error.to_string(),
        };
        toml::from_str::<Self>(text).map_err(parse_error)?;
        text.parse().map_err(parse_error)
    }

    /// Fills in the settings that follow from others, unless a layer set them explicitly.
    fn derive_unset(&mut self, explicit: ExplicitSettings) {
        if self.shards == 0 {
            self.shards = shards_default();
        }
        let protocol = &mut self.protocol;
        if self.echo && !explicit.message_bytes_max {
            protocol.message_bytes_max = ProtocolLimits::conformance().message_bytes_max;
        }
        if self.echo && !explicit.frame_bytes_max {
            protocol.frame_bytes_max = ProtocolLimits::conformance().frame_bytes_max;
        }
        // A frame never exceeds its message, so an unset frame limit follows a lowered message
        // limit rather than making the pair incoherent.
        if !explicit.frame_bytes_max {
            protocol.frame_bytes_max = protocol.frame_bytes_max.min(protocol.message_bytes_max);
        }
        // One largest message must fit a client's queue, or echoing it would close the client.
        if !explicit.outbound_queue_bytes_max {
            self.outbound_queue_bytes_max = self
                .outbound_queue_bytes_max
                .max(protocol.message_bytes_max);
        }
        if !explicit.pool {
            // Only the classes follow the message limit; the inflaters keep their setting.
            let inflaters_max = self.pool.inflaters_max;
            self.pool = PoolLimits::for_message_bytes_max(protocol.message_bytes_max);
            self.pool.inflaters_max = inflaters_max;
        }
        // A request is one message: a larger limit could never be reached.
        self.broker.request_bytes_max = self
            .broker
            .request_bytes_max
            .min(protocol.message_bytes_max);
        // A body cut across reads waits in one pooled buffer: an unset limit follows the pool.
        if !explicit.publish_body_bytes_max {
            let largest = self
                .pool
                .classes
                .last()
                .map_or(0, |class| class.buffer_bytes);
            self.broker.publish_body_bytes_max = self.broker.publish_body_bytes_max.min(largest);
        }
    }

    /// What the endpoints read, from the settings of the same names, with the connection-time
    /// checks built once for every shard ([`ServerConfig::authenticator`]).
    pub fn endpoint_settings(&self, auth: Arc<Authenticator>) -> EndpointSettings {
        let publish = PublishConfig::from_broker(&self.broker);
        EndpointSettings {
            echo: self.echo,
            board_enabled: self.board_enabled,
            websocket_enabled: self.websocket_enabled,
            handshake_timeout_ms: self.handshake_timeout_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            pong_timeout_ms: self.pong_timeout_ms,
            close_timeout_ms: self.close_timeout_ms,
            message_timeout_ms: self.message_timeout_ms,
            outbound_queue_bytes_max: self.outbound_queue_bytes_max,
            outbound_queue_frames_max: self.outbound_queue_frames_max,
            protocol: self.protocol.clone(),
            http_limits: publish.request_limits(self.protocol.header_bytes_max),
            publish,
            broker: self.broker.clone(),
            auth,
            close_reasons_kept: self.webhook.iter().any(|webhook| {
                webhook
                    .events
                    .iter()
                    .any(|name| name == EventKind::ConnectionClosed.name())
            }),
            cluster_connected: None,
            socketio: self.socketio.clone(),
        }
    }

    /// The connection-time checks of `[auth]`, with its key files read now.
    pub fn authenticator(&self) -> Result<Authenticator, ConfigError> {
        Authenticator::from_config(&self.auth, self.broker.topic_bytes_max)
            .map_err(|reason| invalid("auth", reason))
    }

    /// What the webhook thread needs, or `None` when no webhook is configured.
    pub fn egress_settings(&self) -> Result<Option<EgressSettings>, ConfigError> {
        if self.webhook.is_empty() {
            return Ok(None);
        }
        let endpoints =
            crate::egress::webhook::config::parse_all(&self.webhook, self.broker.topic_bytes_max)
                .map_err(|reason| invalid("webhook", reason))?;
        let wants_occupancy = endpoints.iter().any(|endpoint| {
            endpoint.kinds.contains(EventKind::TopicOccupied)
                || endpoint.kinds.contains(EventKind::TopicVacated)
        });
        let occupancy = match self.nats_settings()? {
            Some(nats) if wants_occupancy => Some(OccupancySettings {
                urls: nats.urls,
                stream: nats.stream,
                replicas: nats.replicas,
                liveness: nats.node_liveness,
                changes_max: nats.occupancy_changes_max,
                connect_timeout: nats.connect_timeout,
                request_timeout: nats.request_timeout,
                topic_bytes_max: self.broker.topic_bytes_max,
            }),
            _ => None,
        };
        Ok(Some(EgressSettings {
            endpoints,
            shards: self.shards,
            feed_events_max: self.webhook_shard_events_max,
            source_address: self.webhook_source()?,
            occupancy,
        }))
    }

    fn webhook_source(&self) -> Result<Option<IpAddr>, ConfigError> {
        if self.webhook_source_address.is_empty() {
            return Ok(None);
        }
        let address = self.webhook_source_address.parse().map_err(|_| {
            invalid(
                "webhook_source_address",
                format!(
                    "{:?} is not an IP address (or leave it empty)",
                    self.webhook_source_address
                ),
            )
        })?;
        Ok(Some(address))
    }

    /// What the NATS bridge needs, or `None` for a single node (no `nats_urls`).
    pub fn nats_settings(&self) -> Result<Option<NatsSettings>, ConfigError> {
        let settings = self
            .nats
            .settings()
            .map_err(|(setting, reason)| invalid(setting, reason))?;
        Ok(settings.map(|settings| NatsSettings {
            topic_bytes_max: self.broker.topic_bytes_max,
            duplicate_window: std::time::Duration::from_millis(self.broker.idempotency_window_ms),
            ..settings
        }))
    }

    fn validate_webhooks(&self) -> Result<(), ConfigError> {
        if !(1..=WEBHOOK_SHARD_EVENTS_LIMIT).contains(&self.webhook_shard_events_max) {
            return Err(invalid(
                "webhook_shard_events_max",
                format!(
                    "{} is outside 1..={WEBHOOK_SHARD_EVENTS_LIMIT}",
                    self.webhook_shard_events_max
                ),
            ));
        }
        self.egress_settings().map(drop)
    }

    /// Checks every setting, and that each shard's registered-file table fits the process's
    /// RLIMIT_NOFILE as it is now. Run once at start-up, after `raise_nofile_soft_limit_to_hard`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_settings()?;
        // The key files are read here too, so a missing or wrong key fails before any shard
        // starts.
        self.authenticator()?;
        let limits = NofileLimits::current().map_err(ConfigError::NofileLimitUnreadable)?;
        check_file_table_fits(self.shards, self.connections_per_shard_max, limits)
    }

    /// Checks the settings alone and against each other, without asking the OS anything.
    pub fn validate_settings(&self) -> Result<(), ConfigError> {
        self.protocol
            .validate()
            .map_err(|reason| invalid("protocol", reason))?;
        self.pool
            .validate(self.protocol.message_bytes_max)
            .map_err(|reason| invalid("pool", reason))?;
        self.broker
            .validate()
            .map_err(|reason| invalid("broker", reason))?;
        PublishConfig::from_broker(&self.broker)
            .validate(&self.pool)
            .map_err(|reason| invalid("broker", reason))?;
        self.auth
            .validate()
            .map_err(|reason| invalid("auth", reason))?;
        self.socketio
            .validate()
            .map_err(|(setting, reason)| invalid(setting, reason))?;
        self.validate_shards()?;
        self.validate_tls()?;
        self.validate_receive_buffers()?;
        self.validate_outbound_queue()?;
        self.validate_webhooks()?;
        self.nats_settings()?;
        self.validate_timeouts()
    }

    fn validate_shards(&self) -> Result<(), ConfigError> {
        if !(1..=SHARDS_MAX).contains(&self.shards) {
            return Err(invalid(
                "shards",
                format!(
                    "{} is outside 1..={SHARDS_MAX}; set 0 or leave it out for one per CPU",
                    self.shards
                ),
            ));
        }
        let slots_max = REGISTERED_FILES_KERNEL_MAX - RESERVED_FILE_SLOTS;
        if !(1..=slots_max).contains(&self.connections_per_shard_max) {
            return Err(invalid(
                "connections_per_shard_max",
                format!(
                    "{} is outside 1..={slots_max} (the kernel's registered-file table holds \
                     {REGISTERED_FILES_KERNEL_MAX}, {RESERVED_FILE_SLOTS} of them reserved); \
                     use more shards with fewer connections each",
                    self.connections_per_shard_max
                ),
            ));
        }
        Ok(())
    }

    fn validate_receive_buffers(&self) -> Result<(), ConfigError> {
        let count = self.receive_buffers_count;
        if !count.is_power_of_two() || count > RECEIVE_BUFFERS_COUNT_MAX {
            let nearest = count
                .clamp(1, RECEIVE_BUFFERS_COUNT_MAX)
                .next_power_of_two();
            return Err(invalid(
                "receive_buffers_count",
                format!(
                    "{count} is not a power of two from 1 to {RECEIVE_BUFFERS_COUNT_MAX} (the \
                     kernel's rule for provided buffer rings); try {nearest}"
                ),
            ));
        }
        // The kernel describes each provided buffer's length in 32 bits.
        if self.receive_buffer_bytes == 0 || u32::try_from(self.receive_buffer_bytes).is_err() {
            return Err(invalid(
                "receive_buffer_bytes",
                format!(
                    "{} is outside 1..={} (a provided buffer's length is 32-bit)",
                    self.receive_buffer_bytes,
                    u32::MAX
                ),
            ));
        }
        Ok(())
    }

    fn validate_outbound_queue(&self) -> Result<(), ConfigError> {
        if self.outbound_queue_bytes_max < self.protocol.message_bytes_max {
            return Err(invalid(
                "outbound_queue_bytes_max",
                format!(
                    "{} is below message_bytes_max = {}: a client could never be sent one \
                     largest message; raise it or lower message_bytes_max",
                    self.outbound_queue_bytes_max, self.protocol.message_bytes_max
                ),
            ));
        }
        if self.outbound_queue_frames_max == 0 {
            return Err(invalid(
                "outbound_queue_frames_max",
                "0 would refuse every frame; use 1 or more".into(),
            ));
        }
        if !(1..=SEND_BATCH_FRAMES_KERNEL_MAX).contains(&self.send_batch_frames_max) {
            return Err(invalid(
                "send_batch_frames_max",
                format!(
                    "{} is outside 1..={SEND_BATCH_FRAMES_KERNEL_MAX} (the kernel's iovec limit \
                     for one sendmsg)",
                    self.send_batch_frames_max
                ),
            ));
        }
        Ok(())
    }

    fn validate_timeouts(&self) -> Result<(), ConfigError> {
        let timeouts = [
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("pong_timeout_ms", self.pong_timeout_ms),
            ("close_timeout_ms", self.close_timeout_ms),
            ("drain_timeout_ms", self.drain_timeout_ms),
            ("send_stall_timeout_ms", self.send_stall_timeout_ms),
            ("message_timeout_ms", self.message_timeout_ms),
            ("log_interval_ms", self.log_interval_ms),
        ];
        for (setting, milliseconds) in timeouts {
            if milliseconds == 0 {
                return Err(invalid(
                    setting,
                    "0 would expire at once; give a time in milliseconds above 0".into(),
                ));
            }
        }
        Ok(())
    }
}

/// A setting out of range or contradicting another.
pub(crate) fn invalid(setting: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { setting, reason }
}

#[cfg(test)]
mod tests;
