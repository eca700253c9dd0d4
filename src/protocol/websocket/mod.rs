//! WebSocket (RFC 6455) on the server side: the upgrade, frame heads, unmasking with SIMD,
//! UTF-8 validation across reads, close codes, and the per-connection [`session::Session`].

pub mod close;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod mask;
pub mod session;
pub mod upgrade;
pub mod utf8;
