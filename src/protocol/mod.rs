//! The sans-IO codecs: bytes in, requests, messages and bytes out.
//!
//! Nothing in this module opens a socket, reads a clock or makes a system call, and nothing in
//! it imports the rest of the crate: its limits are its own types ([`ProtocolLimits`],
//! [`pool::PoolLimits`]), which the server's configuration composes. The shard's endpoints feed
//! it bytes (`handle_*`) and take what it produced (`poll_*`); tests do the same with plain byte
//! slices.
//!
//! - [`http1`]: HTTP/1.1 request heads and bodies (Content-Length, chunked, pipelining) and
//!   responses.
//! - [`websocket`]: the upgrade, frames, SIMD unmasking, UTF-8 validation across reads, close
//!   codes and the per-connection session.
//! - [`sse`], [`ndjson`]: Server-Sent Events and newline-delimited JSON streams.
//! - [`engineio`], [`socketio`]: Engine.IO v4 and Socket.IO v5 packets, for socket.io-client
//!   (the codecs only: no endpoint speaks them yet).
//! - [`pool`]: the bounded pool of buffers that messages cut across reads are assembled in.

pub mod decimal;
pub mod engineio;
pub mod http1;
pub mod limits;
pub mod ndjson;
pub mod pool;
pub mod prefetch;
pub mod socketio;
pub mod sse;
pub mod websocket;

pub use http1::error::HandshakeError;
pub use limits::ProtocolLimits;
pub use websocket::close::CloseCode;
pub use websocket::error::ProtocolError;
pub use websocket::frame::{FrameHead, OpCode};
