//! The limits of the protocol core, with their defaults and the reasons for them.
//!
//! They are plain data, read by the codecs and never looked up anywhere else; the server's
//! configuration composes them (the `[protocol]` table of the config file).

use serde::{Deserialize, Serialize};

/// Limits of the sans-IO protocol core (handshake, frames, messages).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtocolLimits {
    /// Largest HTTP request head (request line + headers). 8 KiB matches common proxies and is
    /// far above any real upgrade request; a longer head is answered with 431.
    pub header_bytes_max: usize,
    /// Largest single frame payload. Default 1 MiB: market-data messages are small, and a limit
    /// keeps one peer from tying up a large buffer. `--echo` conformance runs raise it to 16 MiB.
    pub frame_bytes_max: usize,
    /// Largest message (all fragments together). Default 1 MiB for the same reason.
    pub message_bytes_max: usize,
    /// Origins allowed to upgrade (exact match of the `Origin` header). Empty: any origin, which
    /// suits non-browser market-data clients; browsers deployments should set it.
    pub origins_allowed: Vec<String>,
    /// Subprotocols we speak, in order of preference. The first one the client offers is chosen.
    pub subprotocols: Vec<String>,
    /// Whether a client that offers subprotocols, none of which we speak, is refused (400)
    /// rather than accepted with none selected (RFC 6455 lets the client decide).
    pub subprotocol_required: bool,
    /// Negotiate permessage-deflate (RFC 7692) with clients that offer it. Default off, as in
    /// uWebSockets and Centrifugo: compression costs CPU on every message and pays only where
    /// bandwidth is dearer. On, the server always asks for `server_no_context_takeover` and
    /// `client_no_context_takeover`, so that each message is compressed once for all its
    /// subscribers and inflaters are lent per message (see `inflaters_max` in [pool]).
    pub websocket_compression: bool,
    /// zlib level 0 (stored) to 9 (smallest) for the messages we compress. Default 1: the
    /// fastest real compression, which on market-data JSON comes within a few percent of the
    /// smallest output at a fraction of the CPU (Centrifugo uses 1 too).
    pub compression_level: u32,
    /// Messages shorter than this many bytes are sent uncompressed even to a client that
    /// negotiated compression (RFC 7692 §6.1 lets a sender choose per message). Default 128:
    /// below it deflate's block overhead eats most of the gain on JSON.
    pub compression_message_bytes_min: usize,
}

impl Default for ProtocolLimits {
    fn default() -> Self {
        Self {
            header_bytes_max: 8 * 1024,
            frame_bytes_max: 1024 * 1024,
            message_bytes_max: 1024 * 1024,
            origins_allowed: Vec::new(),
            subprotocols: Vec::new(),
            subprotocol_required: false,
            websocket_compression: false,
            compression_level: 1,
            compression_message_bytes_min: 128,
        }
    }
}

impl ProtocolLimits {
    /// Limits that admit the Autobahn suite's 16 MiB messages (for `--echo`).
    pub fn conformance() -> Self {
        Self {
            frame_bytes_max: 16 * 1024 * 1024,
            message_bytes_max: 16 * 1024 * 1024,
            ..Self::default()
        }
    }

    /// Checks that the limits are coherent; the error names the setting and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.header_bytes_max < 256 {
            return Err(format!(
                "header_bytes_max = {} is below 256 bytes: no upgrade request fits",
                self.header_bytes_max
            ));
        }
        if self.frame_bytes_max == 0 || self.message_bytes_max == 0 {
            return Err("frame_bytes_max and message_bytes_max must be above zero".into());
        }
        if self.compression_level > 9 {
            return Err(format!(
                "compression_level = {} is not a zlib level: use 0 (stored) to 9 (smallest)",
                self.compression_level
            ));
        }
        if self.frame_bytes_max > u32::MAX as usize {
            return Err(format!(
                "frame_bytes_max = {} is above 4 GiB, the largest frame length a session tracks",
                self.frame_bytes_max
            ));
        }
        if self.frame_bytes_max > self.message_bytes_max {
            return Err(format!(
                "frame_bytes_max = {} is above message_bytes_max = {}: lower it",
                self.frame_bytes_max, self.message_bytes_max
            ));
        }
        Ok(())
    }
}
