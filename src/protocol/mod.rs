//! The sans-IO WebSocket and HTTP/1.1 core: bytes in, messages and bytes out.
//!
//! Nothing in this module opens a socket, reads a clock or makes a system call. The shard loop
//! feeds it bytes (`handle_*`) and takes what it produced (`poll_*`); tests do the same with plain
//! byte slices.

pub mod close;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod mask;
pub mod pool;
pub mod session;
pub mod utf8;

pub use close::CloseCode;
pub use error::{HandshakeError, ProtocolError};
pub use frame::{FrameHead, OpCode};
