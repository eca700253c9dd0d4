//! The `RINGCAST_*` environment variables and the command line's overrides of the settings.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use super::ServerConfig;
use super::error::ConfigError;
use crate::broker::config::SlowConsumerPolicy;

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
    send_stall_timeout_ms: u64 = "RINGCAST_SEND_STALL_TIMEOUT_MS" => send_stall_timeout_ms;
    message_timeout_ms: u64 = "RINGCAST_MESSAGE_TIMEOUT_MS" => message_timeout_ms;
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
