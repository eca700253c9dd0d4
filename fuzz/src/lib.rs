//! The shared harness of ringcast's fuzz targets (see `fuzz/README.md`).
//!
//! - [`reads`]: the input layout that carries fuzzer-chosen read boundaries, and
//!   [`reads::same_for_any_split`], the check that a parser's answer does not depend on them.
//! - [`allocation`]: the counting global allocator with a cap, and [`allocation::measure`].
//! - [`http1_reference`] and [`websocket_reference`]: the independent implementations the HTTP
//!   reader and the WebSocket session must agree with (httparse and tungstenite).
//!
//! Linking this crate installs the capped allocator as the global allocator of the target.

pub mod allocation;
pub mod http1_reference;
pub mod reads;
pub mod websocket_reference;
