//! Every runtime limit of ringcast, with its default and the reason for it.
//!
//! Limits are plain data here; the protocol core reads them and never reaches for a clock, a
//! socket or the environment. `validate` runs once at start-up so that a bad setting fails loudly
//! before any connection is accepted.
//!
//! Settings come in layers, each overriding the one before: the defaults below, the TOML config
//! file, the `RINGCAST_*` environment variables, then the command line (see `crate::cli`).

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

pub use crate::broker::config::{BrokerConfig, SlowConsumerPolicy};
use crate::broker::http_api::PublishConfig;
use crate::endpoint::EndpointSettings;
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

/// Most entries of a provided buffer ring: the kernel wants a power of two below 65,536.
pub const RECEIVE_BUFFERS_COUNT_MAX: usize = 32 * 1024;

/// Largest registered-file table the kernel accepts whatever the resource limit
/// (`IORING_MAX_FIXED_FILES`).
pub const REGISTERED_FILES_KERNEL_MAX: usize = 1 << 20;

/// Most iovecs the kernel takes in one `sendmsg` (`UIO_MAXIOV`).
pub const SEND_BATCH_FRAMES_KERNEL_MAX: usize = 1024;

/// Everything one ringcast process needs to start: where to listen, how many shards, and every
/// per-shard and per-connection limit. Read from the config file with unknown keys refused, so
/// that a misspelled setting is an error rather than silently left at its default.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to accept WebSocket connections on. Default 127.0.0.1:8080: loopback, so
    /// that a server started without thought is not reachable from the network.
    pub listen: SocketAddr,
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
    /// allocation. Over it the slow-consumer policy applies; until that policy exists, the
    /// connection is closed with 1008 (policy violation). Must hold one largest message.
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            shards: shards_default(),
            connections_per_shard_max: 16 * 1024,
            echo: false,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            pong_timeout_ms: 10_000,
            close_timeout_ms: 5_000,
            drain_timeout_ms: 5_000,
            receive_buffer_bytes: 4 * 1024,
            receive_buffers_count: 4 * 1024,
            outbound_queue_bytes_max: 1024 * 1024,
            outbound_queue_frames_max: 16 * 1024,
            send_batch_frames_max: 64,
            log_interval_ms: 10_000,
            protocol: ProtocolLimits::default(),
            pool: PoolLimits::default(),
            broker: BrokerConfig::default(),
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
    /// then the command line). Settings derived from others are filled in last. Does not
    /// validate, so that the caller chooses when to ask the OS about its limits.
    pub fn from_layers(
        file_text: Option<&str>,
        overrides: &[ConfigOverrides],
    ) -> Result<Self, ConfigError> {
        let (mut config, mut explicit) = match file_text {
            Some(text) => Self::parse_file(text)?,
            None => (Self::default(), ExplicitSettings::default()),
        };
        for layer in overrides {
            layer.apply_to(&mut config);
            explicit.frame_bytes_max |= layer.frame_bytes_max.is_some();
            explicit.message_bytes_max |= layer.message_bytes_max.is_some();
            explicit.outbound_queue_bytes_max |= layer.outbound_queue_bytes_max.is_some();
        }
        config.derive_unset(explicit);
        Ok(config)
    }

    /// Parses a config file's text alone (no environment, no command line).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_layers(Some(text), &[])
    }

    fn parse_file(text: &str) -> Result<(Self, ExplicitSettings), ConfigError> {
        let parse_error = |error: toml::de::Error| ConfigError::FileParse {
            path: None,
            message: error.to_string(),
        };
        let config: Self = toml::from_str(text).map_err(parse_error)?;
        // Serde fills absent keys with their defaults, so which keys were written is read from
        // the document itself.
        let table: toml::Table = text.parse().map_err(parse_error)?;
        let written = |section: &str, key: &str| {
            table
                .get(section)
                .and_then(|value| value.get(key))
                .is_some()
        };
        let explicit = ExplicitSettings {
            frame_bytes_max: written("protocol", "frame_bytes_max"),
            message_bytes_max: written("protocol", "message_bytes_max"),
            outbound_queue_bytes_max: table.contains_key("outbound_queue_bytes_max"),
            pool: written("pool", "classes"),
            publish_body_bytes_max: written("broker", "publish_body_bytes_max"),
        };
        Ok((config, explicit))
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
            self.pool = PoolLimits::for_message_bytes_max(protocol.message_bytes_max);
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

    /// What the endpoints read, from the settings of the same names.
    pub fn endpoint_settings(&self) -> EndpointSettings {
        let publish = PublishConfig::from_broker(&self.broker);
        EndpointSettings {
            echo: self.echo,
            handshake_timeout_ms: self.handshake_timeout_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            pong_timeout_ms: self.pong_timeout_ms,
            close_timeout_ms: self.close_timeout_ms,
            protocol: self.protocol.clone(),
            http_limits: publish.request_limits(self.protocol.header_bytes_max),
            publish,
            broker: self.broker.clone(),
        }
    }

    /// Checks every setting, and that each shard's registered-file table fits the process's
    /// RLIMIT_NOFILE as it is now. Run once at start-up, after `raise_nofile_soft_limit_to_hard`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_settings()?;
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
        self.validate_shards()?;
        self.validate_receive_buffers()?;
        self.validate_outbound_queue()?;
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

fn invalid(setting: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { setting, reason }
}

// One list drives the overrides struct, the environment variable names and the merge into a
// `ServerConfig`, so a setting cannot gain a variable without also being applied.
macro_rules! config_overrides {
    ($($field:ident: $type:ty = $variable:literal => $($target:ident).+;)+) => {
        /// Settings given explicitly by a layer above the config file: the environment or the
        /// command line. Each field overrides the `ServerConfig` setting of the same name (the
        /// two protocol limits live in `protocol`); `None` keeps the lower layer's value.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct ConfigOverrides {
            $(pub $field: Option<$type>,)+
        }

        impl ConfigOverrides {
            /// Each overridable setting and the environment variable that overrides it.
            pub const ENVIRONMENT_VARIABLES: &[(&str, &str)] =
                &[$((stringify!($field), $variable)),+];

            /// Reads the `RINGCAST_*` variables through `environment`, a lookup that returns a
            /// variable's value, so that tests need not touch the process's environment. A value
            /// that does not parse is an error naming the variable.
            pub fn from_environment(
                environment: impl Fn(&str) -> Option<String>,
            ) -> Result<Self, ConfigError> {
                Ok(Self {
                    $($field: parse_variable(&environment, $variable)?,)+
                })
            }

            /// Writes each setting this layer gives into `config`.
            pub fn apply_to(&self, config: &mut ServerConfig) {
                $(
                    if let Some(value) = self.$field {
                        config.$($target).+ = value;
                    }
                )+
            }
        }
    };
}

config_overrides! {
    listen: SocketAddr = "RINGCAST_LISTEN" => listen;
    shards: usize = "RINGCAST_SHARDS" => shards;
    connections_per_shard_max: usize = "RINGCAST_CONNECTIONS_PER_SHARD_MAX" =>
        connections_per_shard_max;
    echo: bool = "RINGCAST_ECHO" => echo;
    handshake_timeout_ms: u64 = "RINGCAST_HANDSHAKE_TIMEOUT_MS" => handshake_timeout_ms;
    idle_timeout_ms: u64 = "RINGCAST_IDLE_TIMEOUT_MS" => idle_timeout_ms;
    pong_timeout_ms: u64 = "RINGCAST_PONG_TIMEOUT_MS" => pong_timeout_ms;
    close_timeout_ms: u64 = "RINGCAST_CLOSE_TIMEOUT_MS" => close_timeout_ms;
    drain_timeout_ms: u64 = "RINGCAST_DRAIN_TIMEOUT_MS" => drain_timeout_ms;
    receive_buffer_bytes: usize = "RINGCAST_RECEIVE_BUFFER_BYTES" => receive_buffer_bytes;
    receive_buffers_count: usize = "RINGCAST_RECEIVE_BUFFERS_COUNT" => receive_buffers_count;
    outbound_queue_bytes_max: usize = "RINGCAST_OUTBOUND_QUEUE_BYTES_MAX" =>
        outbound_queue_bytes_max;
    outbound_queue_frames_max: usize = "RINGCAST_OUTBOUND_QUEUE_FRAMES_MAX" =>
        outbound_queue_frames_max;
    send_batch_frames_max: usize = "RINGCAST_SEND_BATCH_FRAMES_MAX" => send_batch_frames_max;
    log_interval_ms: u64 = "RINGCAST_LOG_INTERVAL_MS" => log_interval_ms;
    frame_bytes_max: usize = "RINGCAST_FRAME_BYTES_MAX" => protocol.frame_bytes_max;
    message_bytes_max: usize = "RINGCAST_MESSAGE_BYTES_MAX" => protocol.message_bytes_max;
    history_messages_max: usize = "RINGCAST_HISTORY_MESSAGES_MAX" => broker.history_messages_max;
    history_bytes_max: usize = "RINGCAST_HISTORY_BYTES_MAX" => broker.history_bytes_max;
    slow_consumer_policy: SlowConsumerPolicy = "RINGCAST_SLOW_CONSUMER_POLICY" =>
        broker.slow_consumer_policy;
    outbound_shard_bytes_max: usize = "RINGCAST_OUTBOUND_SHARD_BYTES_MAX" =>
        broker.outbound_shard_bytes_max;
    demo: bool = "RINGCAST_DEMO" => broker.demo;
    demo_messages_per_second: u64 = "RINGCAST_DEMO_MESSAGES_PER_SECOND" =>
        broker.demo_messages_per_second;
}

fn parse_variable<T>(
    environment: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    let Some(value) = environment(variable) else {
        return Ok(None);
    };
    match value.parse() {
        Ok(parsed) => Ok(Some(parsed)),
        Err(error) => Err(ConfigError::Environment {
            variable,
            reason: error.to_string(),
            value,
        }),
    }
}

/// The process's RLIMIT_NOFILE. The kernel refuses an io_uring registered-file table larger
/// than the soft limit, checked for each ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NofileLimits {
    /// The limit in force, which any process may raise up to `hard`.
    pub soft: u64,
    /// The ceiling for `soft`; only a privileged process may raise it.
    pub hard: u64,
}

impl NofileLimits {
    /// A limit of `RLIM_INFINITY`, whatever the platform's value for it.
    pub const UNLIMITED: u64 = u64::MAX;

    /// Reads the limits in force now.
    pub fn current() -> io::Result<Self> {
        let limit = nofile_rlimit()?;
        Ok(Self {
            soft: limit_value(limit.rlim_cur),
            hard: limit_value(limit.rlim_max),
        })
    }
}

fn limit_value(raw: libc::rlim_t) -> u64 {
    if raw == libc::RLIM_INFINITY {
        NofileLimits::UNLIMITED
    } else {
        // `rlim_t` is `u64` on the 64-bit Linux targets ringcast runs on; a target where it
        // differs fails to compile here instead of converting silently.
        raw
    }
}

fn nofile_rlimit() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit` that outlives the call, which only writes it.
    let result = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, which needs no privilege, so that the
/// default `connections_per_shard_max` fits where the soft limit is the usual 1,024. Call once
/// at start-up, before `ServerConfig::validate`. Returns the limits now in force; an error
/// leaves them as they were, and `validate` then reports what does not fit.
pub fn raise_nofile_soft_limit_to_hard() -> io::Result<NofileLimits> {
    let mut limit = nofile_rlimit()?;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid `rlimit` that outlives the call, which only reads it.
        let result = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    NofileLimits::current()
}

/// Checks that one shard's registered-file table (`connections_per_shard_max` +
/// `RESERVED_FILE_SLOTS` slots) fits under the soft limit in `limits`. Pure, so that the advice
/// in the error can be tested with any limits.
pub fn check_file_table_fits(
    shards: usize,
    connections_per_shard_max: usize,
    limits: NofileLimits,
) -> Result<(), ConfigError> {
    let slots = connections_per_shard_max.saturating_add(RESERVED_FILE_SLOTS);
    if slots as u64 <= limits.soft {
        return Ok(());
    }
    Err(ConfigError::FileTableTooLarge {
        shards,
        connections_per_shard_max,
        limits,
    })
}

/// Why the configuration cannot be used; each message names the setting and how to fix it.
#[derive(Debug)]
pub enum ConfigError {
    /// The config file could not be read.
    FileRead { path: PathBuf, source: io::Error },
    /// The config file is not valid TOML, has an unknown key, or a value of the wrong type.
    FileParse {
        path: Option<PathBuf>,
        message: String,
    },
    /// A `RINGCAST_*` environment variable's value does not parse.
    Environment {
        variable: &'static str,
        value: String,
        reason: String,
    },
    /// A setting is out of range or contradicts another.
    Invalid {
        setting: &'static str,
        reason: String,
    },
    /// A shard's registered-file table would be larger than the soft RLIMIT_NOFILE allows.
    FileTableTooLarge {
        shards: usize,
        connections_per_shard_max: usize,
        limits: NofileLimits,
    },
    /// `getrlimit(RLIMIT_NOFILE)` failed.
    NofileLimitUnreadable(io::Error),
}

impl ConfigError {
    /// Names the file a parse error came from.
    pub fn in_file(self, file_path: Option<&Path>) -> Self {
        match self {
            Self::FileParse {
                path: None,
                message,
            } => Self::FileParse {
                path: file_path.map(Path::to_path_buf),
                message,
            },
            other => other,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FileRead { path, source } => write!(
                f,
                "cannot read config file {}: {source}; check the --config path",
                path.display()
            ),
            Self::FileParse { path, message } => {
                match path {
                    Some(path) => write!(f, "config file {} is invalid: ", path.display())?,
                    None => write!(f, "config file is invalid: ")?,
                }
                write!(
                    f,
                    "{}\n(the example ringcast.toml lists every setting)",
                    message.trim_end()
                )
            }
            Self::Environment {
                variable,
                value,
                reason,
            } => write!(
                f,
                "environment variable {variable}={value:?} is invalid: {reason}; fix or unset it"
            ),
            Self::Invalid { setting, reason } => write!(f, "invalid {setting}: {reason}"),
            Self::FileTableTooLarge {
                shards,
                connections_per_shard_max,
                limits,
            } => write_file_table_advice(f, *shards, *connections_per_shard_max, *limits),
            Self::NofileLimitUnreadable(source) => {
                write!(f, "cannot read RLIMIT_NOFILE: {source}")
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::FileRead { source, .. } | Self::NofileLimitUnreadable(source) => Some(source),
            _ => None,
        }
    }
}

/// Explains the file-table misfit and the three ways out: a higher limit, more shards with
/// fewer connections each (same total), or fewer connections per shard.
fn write_file_table_advice(
    f: &mut fmt::Formatter<'_>,
    shards: usize,
    connections_per_shard_max: usize,
    limits: NofileLimits,
) -> fmt::Result {
    let slots = connections_per_shard_max.saturating_add(RESERVED_FILE_SLOTS);
    write!(
        f,
        "connections_per_shard_max = {connections_per_shard_max} needs a registered-file table \
         of {slots} slots per shard ({connections_per_shard_max} + {RESERVED_FILE_SLOTS} \
         reserved), but the kernel refuses a table larger than the soft RLIMIT_NOFILE, which is \
         {} (hard limit {}). Either ",
        LimitDisplay(limits.soft),
        LimitDisplay(limits.hard)
    )?;
    if slots as u64 <= limits.hard {
        write!(
            f,
            "raise the soft limit with `ulimit -n {slots}` (allowed up to the hard limit {})",
            LimitDisplay(limits.hard)
        )?;
    } else {
        write!(
            f,
            "raise the hard limit to at least {slots} as root (LimitNOFILE= in a systemd unit, \
             or /etc/security/limits.conf), then the soft limit with `ulimit -n {slots}`"
        )?;
    }
    let Some(per_shard_fit) = usize::try_from(limits.soft)
        .ok()
        .and_then(|soft| soft.checked_sub(RESERVED_FILE_SLOTS))
        .filter(|&fit| fit > 0)
    else {
        return write!(f, ".");
    };
    let total = shards.saturating_mul(connections_per_shard_max);
    let suggested_shards = total.div_ceil(per_shard_fit);
    if suggested_shards <= SHARDS_MAX {
        // Spread the total evenly rather than filling each shard to the brim.
        let suggested_per_shard = total.div_ceil(suggested_shards);
        write!(
            f,
            "; or use more shards with fewer connections each: e.g. --shards {suggested_shards} \
             --connections-per-shard-max {suggested_per_shard} (keeps {total} connections in \
             total)"
        )?;
    }
    write!(
        f,
        "; or lower --connections-per-shard-max to {per_shard_fit} or less."
    )
}

/// Shows a resource limit, with `NofileLimits::UNLIMITED` as "unlimited".
struct LimitDisplay(u64);

impl fmt::Display for LimitDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == NofileLimits::UNLIMITED {
            write!(f, "unlimited")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::pool::BufferClass;

    /// Proves the defaults and the conformance preset pass validation.
    #[test]
    fn defaults_are_valid() {
        let protocol = ProtocolLimits::default();
        protocol.validate().unwrap();
        PoolLimits::default()
            .validate(protocol.message_bytes_max)
            .unwrap();
        let conformance = ProtocolLimits::conformance();
        conformance.validate().unwrap();
        PoolLimits::for_message_bytes_max(conformance.message_bytes_max)
            .validate(conformance.message_bytes_max)
            .unwrap();
    }

    /// Proves incoherent limits are refused with a message naming the setting.
    #[test]
    fn incoherent_limits_are_refused() {
        let protocol = ProtocolLimits {
            frame_bytes_max: 10,
            message_bytes_max: 5,
            ..Default::default()
        };
        assert!(protocol.validate().unwrap_err().contains("frame_bytes_max"));
        let pool = PoolLimits::default();
        assert!(
            pool.validate(64 * 1024 * 1024)
                .unwrap_err()
                .contains("message_bytes_max")
        );
    }

    /// Limits under which the default file table (16,384 + 8 slots) fits.
    const LIMITS_GENEROUS: NofileLimits = NofileLimits {
        soft: 1 << 20,
        hard: 1 << 20,
    };

    fn environment(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(candidate, _)| candidate == name)
                .map(|(_, value)| value.clone())
        }
    }

    /// Proves the server defaults pass validation, given a limit the file table fits under.
    #[test]
    fn server_defaults_validate() {
        let config = ServerConfig::default();
        config.validate_settings().unwrap();
        check_file_table_fits(
            config.shards,
            config.connections_per_shard_max,
            LIMITS_GENEROUS,
        )
        .unwrap();
        assert!(config.shards >= 1);
        assert_eq!(ServerConfig::from_toml("").unwrap(), config);
    }

    /// Proves a file with top-level keys, a nested [protocol] and [[pool.classes]] parses.
    #[test]
    fn toml_with_nested_sections_parses() {
        let text = r#"
            listen = "0.0.0.0:9001"
            shards = 2
            idle_timeout_ms = 15000

            [protocol]
            frame_bytes_max = 65536
            message_bytes_max = 262144
            origins_allowed = ["https://example.com"]

            [[pool.classes]]
            buffer_bytes = 128
            buffers_max = 1024

            [[pool.classes]]
            buffer_bytes = 262144
            buffers_max = 16
        "#;
        let config = ServerConfig::from_toml(text).unwrap();
        assert_eq!(config.listen, "0.0.0.0:9001".parse().unwrap());
        assert_eq!(config.shards, 2);
        assert_eq!(config.idle_timeout_ms, 15_000);
        assert_eq!(
            config.pong_timeout_ms, 10_000,
            "an absent key keeps its default"
        );
        assert_eq!(config.protocol.frame_bytes_max, 65536);
        assert_eq!(config.protocol.message_bytes_max, 262_144);
        assert_eq!(config.protocol.origins_allowed, ["https://example.com"]);
        assert_eq!(config.protocol.header_bytes_max, 8 * 1024);
        let classes = [(128, 1024), (262_144, 16)].map(|(buffer_bytes, buffers_max)| BufferClass {
            buffer_bytes,
            buffers_max,
        });
        assert_eq!(
            config.pool.classes, classes,
            "a written pool is kept as written"
        );
        config.validate_settings().unwrap();
    }

    /// Proves a misspelled key, top-level or nested, is refused with the valid keys listed.
    #[test]
    fn unknown_keys_are_refused() {
        let message = ServerConfig::from_toml("shard = 4")
            .unwrap_err()
            .to_string();
        assert!(message.contains("unknown field `shard`"), "{message}");
        assert!(message.contains("`shards`"), "{message}");
        assert!(message.contains("line 1"), "{message}");
        let text = "[protocol]\nframe_byte_max = 10\n";
        let message = ServerConfig::from_toml(text).unwrap_err().to_string();
        assert!(
            message.contains("unknown field `frame_byte_max`"),
            "{message}"
        );
        assert!(message.contains("`frame_bytes_max`"), "{message}");
        let text = "[[pool.classes]]\nbuffer_bytes = 128\nbuffers = 4\n";
        let message = ServerConfig::from_toml(text).unwrap_err().to_string();
        assert!(message.contains("unknown field `buffers`"), "{message}");
    }

    /// Proves a value of the wrong type is refused with the key's position.
    #[test]
    fn wrong_types_are_refused() {
        let message = ServerConfig::from_toml("listen = 8080")
            .unwrap_err()
            .to_string();
        assert!(message.contains("listen"), "{message}");
        let message = ServerConfig::from_toml("echo = \"yes\"")
            .unwrap_err()
            .to_string();
        assert!(message.contains("echo"), "{message}");
    }

    /// Proves `shards = 0` means one shard per CPU.
    #[test]
    fn zero_shards_means_one_per_cpu() {
        let config = ServerConfig::from_toml("shards = 0").unwrap();
        assert_eq!(config.shards, ServerConfig::default().shards);
        assert!(config.shards >= 1);
    }

    /// Proves every variable is RINGCAST_ and its setting's name in upper case.
    #[test]
    fn environment_variables_follow_the_naming_rule() {
        assert_eq!(ConfigOverrides::ENVIRONMENT_VARIABLES.len(), 23);
        for (setting, variable) in ConfigOverrides::ENVIRONMENT_VARIABLES {
            assert_eq!(*variable, format!("RINGCAST_{}", setting.to_uppercase()));
        }
    }

    /// Proves every variable, when set, reaches its setting.
    #[test]
    fn every_environment_variable_applies() {
        let variables = environment(&[
            ("RINGCAST_LISTEN", "[::1]:9002"),
            ("RINGCAST_SHARDS", "5"),
            ("RINGCAST_CONNECTIONS_PER_SHARD_MAX", "1000"),
            ("RINGCAST_ECHO", "true"),
            ("RINGCAST_HANDSHAKE_TIMEOUT_MS", "1"),
            ("RINGCAST_IDLE_TIMEOUT_MS", "2"),
            ("RINGCAST_PONG_TIMEOUT_MS", "3"),
            ("RINGCAST_CLOSE_TIMEOUT_MS", "4"),
            ("RINGCAST_DRAIN_TIMEOUT_MS", "5"),
            ("RINGCAST_RECEIVE_BUFFER_BYTES", "4096"),
            ("RINGCAST_RECEIVE_BUFFERS_COUNT", "512"),
            ("RINGCAST_OUTBOUND_QUEUE_BYTES_MAX", "3000000"),
            ("RINGCAST_OUTBOUND_QUEUE_FRAMES_MAX", "99"),
            ("RINGCAST_SEND_BATCH_FRAMES_MAX", "16"),
            ("RINGCAST_LOG_INTERVAL_MS", "6"),
            ("RINGCAST_FRAME_BYTES_MAX", "1000"),
            ("RINGCAST_MESSAGE_BYTES_MAX", "2000000"),
        ]);
        let overrides = ConfigOverrides::from_environment(variables).unwrap();
        let config = ServerConfig::from_layers(None, &[overrides]).unwrap();
        assert_eq!(config.listen, "[::1]:9002".parse().unwrap());
        assert_eq!(config.shards, 5);
        assert_eq!(config.connections_per_shard_max, 1000);
        assert!(config.echo);
        let timeouts = [
            config.handshake_timeout_ms,
            config.idle_timeout_ms,
            config.pong_timeout_ms,
            config.close_timeout_ms,
            config.drain_timeout_ms,
            config.log_interval_ms,
        ];
        assert_eq!(timeouts, [1, 2, 3, 4, 5, 6]);
        assert_eq!(config.receive_buffer_bytes, 4096);
        assert_eq!(config.receive_buffers_count, 512);
        assert_eq!(config.outbound_queue_bytes_max, 3_000_000);
        assert_eq!(config.outbound_queue_frames_max, 99);
        assert_eq!(config.send_batch_frames_max, 16);
        assert_eq!(config.protocol.frame_bytes_max, 1000);
        assert_eq!(config.protocol.message_bytes_max, 2_000_000);
        config.validate_settings().unwrap();
    }

    /// Proves a value that does not parse is refused, naming the variable and the value.
    #[test]
    fn unparsable_variable_is_named() {
        for (variable, value) in [
            ("RINGCAST_LISTEN", "localhost"),
            ("RINGCAST_ECHO", "yes"),
            ("RINGCAST_IDLE_TIMEOUT_MS", "-1"),
            ("RINGCAST_FRAME_BYTES_MAX", ""),
        ] {
            let error = ConfigOverrides::from_environment(environment(&[(variable, value)]));
            let message = error.unwrap_err().to_string();
            assert!(message.contains(variable), "{message}");
            assert!(message.contains(&format!("{value:?}")), "{message}");
        }
    }

    /// Proves echo mode raises the frame and message limits to 16 MiB, sizes the pool and the
    /// outbound queue for them, and yields to limits a layer wrote.
    #[test]
    fn echo_raises_limits_unless_set() {
        let conformance = ProtocolLimits::conformance();
        let config = ServerConfig::from_toml("echo = true").unwrap();
        assert_eq!(config.protocol.frame_bytes_max, conformance.frame_bytes_max);
        assert_eq!(
            config.protocol.message_bytes_max,
            conformance.message_bytes_max
        );
        let pool = PoolLimits::for_message_bytes_max(conformance.message_bytes_max);
        assert_eq!(config.pool, pool);
        assert_eq!(
            config.outbound_queue_bytes_max,
            conformance.message_bytes_max
        );
        config.validate_settings().unwrap();

        let text = "echo = true\n[protocol]\nframe_bytes_max = 65536\n";
        let config = ServerConfig::from_toml(text).unwrap();
        assert_eq!(config.protocol.frame_bytes_max, 65536);
        assert_eq!(
            config.protocol.message_bytes_max,
            conformance.message_bytes_max
        );
        config.validate_settings().unwrap();

        // A lower message limit set explicitly pulls the unset frame limit down with it.
        let overrides = ConfigOverrides {
            message_bytes_max: Some(2 * 1024 * 1024),
            ..ConfigOverrides::default()
        };
        let config = ServerConfig::from_layers(Some("echo = true"), &[overrides]).unwrap();
        assert_eq!(config.protocol.message_bytes_max, 2 * 1024 * 1024);
        assert_eq!(config.protocol.frame_bytes_max, 2 * 1024 * 1024);
        config.validate_settings().unwrap();

        let config = ServerConfig::from_toml("").unwrap();
        assert_eq!(
            config.protocol,
            ProtocolLimits::default(),
            "no echo, no change"
        );
    }

    /// Proves a pool written in the file is kept even when it cannot hold echo's messages, and
    /// that validation then names the pool.
    #[test]
    fn written_pool_is_not_resized() {
        let text = "echo = true\n[[pool.classes]]\nbuffer_bytes = 4096\nbuffers_max = 8\n";
        let config = ServerConfig::from_toml(text).unwrap();
        assert_eq!(config.pool.classes.len(), 1);
        let error = config.validate_settings().unwrap_err();
        assert!(error.to_string().contains("invalid pool"), "{error}");
    }

    /// Proves out-of-range values are refused, naming the setting.
    #[test]
    fn invalid_values_name_the_setting() {
        let cases = [
            ("shards = 1025", "shards"),
            ("connections_per_shard_max = 0", "connections_per_shard_max"),
            ("receive_buffers_count = 3000", "receive_buffers_count"),
            ("receive_buffers_count = 65536", "receive_buffers_count"),
            ("receive_buffer_bytes = 0", "receive_buffer_bytes"),
            (
                "outbound_queue_bytes_max = 1000",
                "outbound_queue_bytes_max",
            ),
            ("outbound_queue_frames_max = 0", "outbound_queue_frames_max"),
            ("send_batch_frames_max = 2048", "send_batch_frames_max"),
            ("handshake_timeout_ms = 0", "handshake_timeout_ms"),
            ("idle_timeout_ms = 0", "idle_timeout_ms"),
            ("pong_timeout_ms = 0", "pong_timeout_ms"),
            ("close_timeout_ms = 0", "close_timeout_ms"),
            ("drain_timeout_ms = 0", "drain_timeout_ms"),
            ("log_interval_ms = 0", "log_interval_ms"),
            ("[protocol]\nheader_bytes_max = 10", "protocol"),
        ];
        for (text, setting) in cases {
            let config = ServerConfig::from_toml(text).unwrap();
            match config.validate_settings() {
                Err(ConfigError::Invalid { setting: named, .. }) => {
                    assert_eq!(named, setting, "{text}")
                }
                other => panic!("{text}: expected an invalid {setting}, got {other:?}"),
            }
        }
        let config = ServerConfig::from_toml("receive_buffers_count = 3000").unwrap();
        let message = config.validate_settings().unwrap_err().to_string();
        assert!(message.contains("try 4096"), "{message}");
    }

    /// Proves the file table check passes when the table fits, also with no limit at all.
    #[test]
    fn file_table_fits_under_soft_limit() {
        check_file_table_fits(2, 16_384, LIMITS_GENEROUS).unwrap();
        let exact = NofileLimits {
            soft: 16_392,
            hard: 16_392,
        };
        check_file_table_fits(2, 16_384, exact).unwrap();
        let unlimited = NofileLimits {
            soft: NofileLimits::UNLIMITED,
            hard: NofileLimits::UNLIMITED,
        };
        check_file_table_fits(2, 16_384, unlimited).unwrap();
    }

    /// Proves the misfit message names the limit, the numbers and every fix, with a shard
    /// suggestion that keeps the total connection count.
    #[test]
    fn file_table_misfit_explains_the_fixes() {
        let limits = NofileLimits {
            soft: 1024,
            hard: 524_288,
        };
        let message = check_file_table_fits(2, 16_384, limits)
            .unwrap_err()
            .to_string();
        for expected in [
            "RLIMIT_NOFILE",
            "16392 slots",
            "soft RLIMIT_NOFILE, which is 1024",
            "hard limit 524288",
            "`ulimit -n 16392`",
            // 1024 - 8 = 1016 fit a shard; 32768 in total need 33 shards of 993.
            "--shards 33 --connections-per-shard-max 993",
            "keeps 32768 connections",
            "lower --connections-per-shard-max to 1016",
        ] {
            assert!(
                message.contains(expected),
                "missing {expected:?} in: {message}"
            );
        }
    }

    /// Proves that when the hard limit is too low as well, the message says to raise it as root,
    /// and that no shard suggestion beyond SHARDS_MAX is made.
    #[test]
    fn file_table_misfit_under_low_hard_limit() {
        let limits = NofileLimits { soft: 64, hard: 64 };
        let message = check_file_table_fits(64, 16_384, limits)
            .unwrap_err()
            .to_string();
        assert!(message.contains("raise the hard limit to at least 16392 as root"));
        assert!(!message.contains("--shards"), "{message}");
        assert!(
            message.contains("lower --connections-per-shard-max to 56"),
            "{message}"
        );
    }

    /// Proves the real limits can be read, and that raising soft to hard leaves soft = hard.
    #[test]
    fn nofile_limits_are_readable_and_raisable() {
        let before = NofileLimits::current().unwrap();
        assert!(before.soft <= before.hard);
        let after = raise_nofile_soft_limit_to_hard().unwrap();
        assert_eq!(after.soft, after.hard);
        assert_eq!(after.hard, before.hard);
    }

    const EXAMPLE: &str = include_str!("../ringcast.toml");

    /// Proves the example ringcast.toml parses and validates as shipped (every setting
    /// commented out, so the defaults).
    #[test]
    fn example_file_parses_and_validates() {
        let config = ServerConfig::from_toml(EXAMPLE).unwrap();
        config.validate_settings().unwrap();
        assert_eq!(config, ServerConfig::default());
    }

    /// Proves the defaults the example documents are the real ones and its keys all exist:
    /// uncommenting every setting line (`#key = value`, `#[section]`) changes nothing.
    #[test]
    fn example_file_documents_the_defaults() {
        let uncommented: String = EXAMPLE
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if !rest.is_empty() && !rest.starts_with(' ') => rest,
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let config = ServerConfig::from_toml(&uncommented).unwrap();
        assert_eq!(config, ServerConfig::default());
        let table: toml::Table = uncommented.parse().unwrap();
        for (setting, _) in ConfigOverrides::ENVIRONMENT_VARIABLES {
            let present = match *setting {
                "frame_bytes_max" | "message_bytes_max" => table["protocol"].get(setting),
                "history_messages_max"
                | "history_bytes_max"
                | "slow_consumer_policy"
                | "outbound_shard_bytes_max"
                | "demo"
                | "demo_messages_per_second" => table["broker"].get(setting),
                _ => table.get(*setting),
            };
            assert!(present.is_some(), "the example does not document {setting}");
        }
        let protocol_keys = [
            "header_bytes_max",
            "frame_bytes_max",
            "message_bytes_max",
            "origins_allowed",
            "subprotocols",
            "subprotocol_required",
        ];
        for key in protocol_keys {
            assert!(table["protocol"].get(key).is_some(), "protocol.{key}");
        }
        assert_eq!(table["pool"]["classes"].as_array().unwrap().len(), 4);
    }
}
