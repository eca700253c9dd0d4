//! ringcast: a WebSocket pub/sub broker for market-data fanout.
//!
//! # Architecture
//! - [`protocol`] is the sans-IO core: HTTP/1.1 upgrade, WebSocket frames with SIMD unmasking,
//!   incremental UTF-8 validation, pooled message buffers and the close handshake. It sees bytes
//!   and produces events and bytes; it never touches a socket, a clock or a system call.
//! - [`shard`] runs one thread and one io_uring per core. Each shard owns its listener
//!   (SO_REUSEPORT), accepts with multishot accept into direct descriptors, receives with
//!   multishot receive from a provided buffer ring (idle connections hold no buffer), gathers each
//!   connection's queued frames into one send, keeps every timeout in one timer wheel, and talks
//!   to other threads through bounded mailboxes woken by `msg_ring`.
//! - [`broker`] is the sans-IO pub/sub core: client requests, message frames encoded once,
//!   the topics a shard owns (sequence numbers, bounded history, replay), the subscriber table,
//!   the HTTP publish API and the demo feed. The shard carries its decisions out
//!   (`shard::fanout`, `shard::http`) and moves commands between shards.
//! - [`metrics`] renders every shard's counters and gauges as Prometheus text.
//! - [`server`] binds the listeners and starts and stops the shards; [`config`] holds every limit
//!   with its default and reason; [`cli`] layers defaults, the config file, the environment and
//!   the command line; [`ticker`] drives the demo feed.
//!
//! Arrows point one way: `shard` depends on `protocol` and `broker`, never the reverse.

pub mod broker;
pub mod cli;
pub mod config;
pub mod endpoint;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod stats;
pub mod ticker;
pub mod transport;
