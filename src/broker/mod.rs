//! The pub/sub broker, sans-IO: topics and their owners, sequence numbers, history and replay,
//! subscriber tables, the slow-consumer policy, and the wire protocol of client requests and
//! server messages.
//!
//! Like `protocol`, nothing here touches a socket, a clock or another thread, and it imports
//! nothing of the crate but `protocol`. Each shard owns one [`fanout::Fanout`]: the topics that
//! hash to the shard (it numbers their messages, keeps their history and knows which shards
//! subscribe), its own clients' subscriptions, and the policy that decides what each subscriber
//! gets. The shard feeds it requests and commands and carries out what it decides.
//!
//! - [`topic`]: what a topic name may be, and which shard owns it (a fixed hash).
//! - [`message`]: messages and replies, encoded once and shared; [`message_pool`]: the
//!   recycled buffers messages are encoded in (the one place another thread reaches: the last
//!   holder of a message returns its buffer through a lock-free free list).
//! - [`grants`]: the topics a token grants for subscribing and publishing.
//! - [`request`]: client requests over the WebSocket (JSON), and [`request::BrokerRequest`].
//! - [`http_api`]: publishing over HTTP.
//! - [`json_bounds`]: the depth, number and surrogate bounds on published JSON.
//! - [`owner`], [`subscribers`]: the two tables of a shard.
//! - [`fanout`]: the shard's broker; [`delivery`]: the slow-consumer policy and the budget as
//!   one message reaches its subscribers, and the broker's record of each client;
//!   [`clients`]: what the broker asks of the shard's connections; [`counters`]: what it
//!   counts; [`command`]: what shards tell each other.
//! - [`event`]: what the broker tells the world outside (webhooks): topics occupied and
//!   vacated, subscriptions, messages published, connections opened and closed.
//! - [`config`]: the limits and policies; [`demo`]: the random-walk ticker feed.

pub mod catch_up;
pub mod clients;
pub mod cluster;
pub mod command;
pub mod config;
pub mod counters;
pub mod cursor;
pub mod delivery;
pub mod demo;
pub mod event;
pub mod fanout;
pub mod grants;
pub mod http_api;
pub mod idempotency;
pub mod json_bounds;
pub mod message;
pub mod message_pool;
pub mod owner;
pub mod request;
pub mod stream_api;
pub mod subscribers;
pub mod topic;

pub use clients::{Clients, QueueLimits, ShardMemory, TRANSPORT_COUNT};
pub use cluster::ClusterPublish;
pub use command::{ClientRef, Command, PublishReply};
pub use counters::{BrokerCounters, BrokerGauges};
pub use event::{Event, EventFilter, EventKind};
pub use fanout::Fanout;
pub use message::{Message, Reply, ReplyKind};
pub use message_pool::MessagePool;
pub use request::BrokerRequest;
pub use topic::{Epoch, TOPIC_BYTES_LIMIT, TopicName, owner_shard};
