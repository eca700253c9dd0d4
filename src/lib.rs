//! ringcast: a WebSocket pub/sub broker for market-data fanout.
//!
//! # Architecture
//! Layers point one way, and `tests/layers.rs` fails when one names a layer above it:
//!
//! ```text
//! protocol ← broker ← auth ← endpoint ← shard ← server
//!              ↑                  ↑         ↑
//!          (transport)          stats ← metrics, config composes every layer's limits
//! ```
//!
//! - [`protocol`]: sans-IO codecs with their own limit types. HTTP/1.1 requests (heads, bodies,
//!   chunked coding, pipelining) and responses; WebSocket upgrade, frames, SIMD unmasking,
//!   UTF-8 validation across reads, the per-connection session; the pool of buffers messages cut
//!   across reads are assembled in. Bytes in, events and bytes out; no socket, clock or thread.
//! - [`broker`]: the sans-IO pub/sub. Topic names and their owner shard (a fixed hash); the
//!   topics a shard owns (sequence numbers, bounded history, replay, snapshots); its clients'
//!   subscriptions; messages encoded once ([`broker::Message`]); and [`broker::Fanout`], which
//!   takes requests and commands and decides: what each subscriber gets under the slow-consumer
//!   policy and the shard's budget, what to answer, what to tell other shards. Tested in memory
//!   with several shards on a simulated network (`tests/broker_fanout.rs`).
//! - [`auth`]: connection-time authentication (JWT from a header, a cookie or the query), the
//!   `Origin` check and the per-address limits; what a token grants is checked by the endpoint
//!   on every subscribe and publish.
//! - [`endpoint`]: per-connection state machines (HTTP, WebSocket, SSE, NDJSON streams,
//!   long and short polls, Socket.IO over WebSocket and Engine.IO long polling) with
//!   `handle_*` methods, their own deadlines, and a frame cache that frames each delivered
//!   message once per shard per kind of endpoint. A long-polling Socket.IO session outlives
//!   its requests: the shard that opened it keeps it as a client of its broker without a
//!   socket, and the connections carrying it, on any shard, reach it through the mailboxes.
//! - [`transport`]: the byte stream under an endpoint (plain now; TLS next).
//! - [`egress`]: side threads with their own tokio runtimes for what leaves on ringcast's own
//!   initiative: webhooks, fed by a bounded lock-free queue per shard that a shard never waits
//!   on; and, with `nats_urls`, the NATS bridge that joins nodes through JetStream (publishes
//!   numbered there, every message of the stream brought back to its topic's owner shard).
//! - [`shard`]: one thread and one io_uring per core, a pure driver: multishot accept into
//!   direct descriptors, multishot receive on a provided buffer ring, gathered sends, one timer
//!   wheel, and bounded mailboxes to the other shards woken by `msg_ring`. It carries out what
//!   endpoints and the broker decide and maps every errno the ring returns.
//! - [`stats`] gathers every layer's counters once per turn; [`metrics`] renders them for
//!   `GET /metrics`; [`config`] holds every limit with its default and reason, [`cli`] layers
//!   defaults, file, environment and flags; [`server`] binds the listeners and runs the shards;
//!   [`ticker`] drives the demo feed.

pub mod auth;
pub mod broker;
pub mod cli;
pub mod config;
pub mod egress;
pub mod endpoint;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod stats;
pub mod ticker;
pub mod transport;
