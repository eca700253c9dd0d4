//! The one harness of the integration tests, shared by every test binary (`mod support;`):
//!
//! - [`session`]: driving the sans-IO WebSocket session with client frames;
//! - [`server`]: the real `ringcast` binary on an ephemeral port, and clients written from the
//!   RFCs alone (nothing of the crate under test), with every wait bounded;
//! - [`streams`]: SSE, NDJSON and polling clients of the reading endpoints;
//! - [`tools`]: the external tools the interop and conformance tests run (Python, Node,
//!   kosoku), found where the test command installs them;
//! - [`nats`]: a real nats-server (with or without JetStream) on a free loopback port, or a
//!   cluster of three with clustered JetStream;
//! - [`tls`]: certificates made at test time and rustls clients that verify the server.
//!
//! `counting_allocator.rs` is not part of it: it installs a global allocator, so only the
//! binaries that count allocations include it (`#[path = "support/counting_allocator.rs"]`).
#![allow(dead_code)]

pub mod nats;
pub mod server;
pub mod session;
pub mod streams;
pub mod tls;
pub mod tools;
pub mod webhook_receiver;
