//! The WebSocket wire format as the io_uring client and the floor programs need it, sans-IO:
//! the opening handshake of both ends (`handshake`), frames (`frame`) and the receiving half of
//! permessage-deflate (`deflate`). The tokio-uring
//! scenarios keep tungstenite's; the tests here check these against tungstenite.

pub mod deflate;
pub mod frame;
pub mod handshake;
