//! Every runtime limit of ringcast, with its default and the reason for it.
//!
//! Limits are plain data here; the protocol core reads them and never reaches for a clock, a
//! socket or the environment. `validate` runs once at start-up so that a bad setting fails loudly
//! before any connection is accepted.

/// Limits of the sans-IO protocol core (handshake, frames, messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolConfig {
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
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        Self {
            header_bytes_max: 8 * 1024,
            frame_bytes_max: 1024 * 1024,
            message_bytes_max: 1024 * 1024,
            origins_allowed: Vec::new(),
            subprotocols: Vec::new(),
            subprotocol_required: false,
        }
    }
}

impl ProtocolConfig {
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
        if self.frame_bytes_max > self.message_bytes_max {
            return Err(format!(
                "frame_bytes_max = {} is above message_bytes_max = {}: lower it",
                self.frame_bytes_max, self.message_bytes_max
            ));
        }
        Ok(())
    }
}

/// One size class of the message buffer pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferClass {
    /// Capacity of each buffer in this class.
    pub buffer_bytes: usize,
    /// How many buffers of this class may exist at once (in use or free).
    pub buffers_max: usize,
}

/// Sizes and counts of the pooled buffers messages are assembled in. Each shard owns one pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Size classes in ascending order. The defaults are sized from their consumers:
    /// - 128 B: a control frame's payload (≤ 125 B) split across reads, and an owed pong;
    /// - 4 KiB: a small data message split across reads (most market-data traffic);
    /// - 64 KiB: a larger message, such as a batch publish;
    /// - 1 MiB: a message at the default `message_bytes_max`.
    ///
    /// Counts bound the pool's memory to about 4 + 8 + 16 + 64 = 92 MiB per shard at worst.
    pub classes: Vec<BufferClass>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            classes: vec![
                BufferClass {
                    buffer_bytes: 128,
                    buffers_max: 32 * 1024,
                },
                BufferClass {
                    buffer_bytes: 4 * 1024,
                    buffers_max: 2 * 1024,
                },
                BufferClass {
                    buffer_bytes: 64 * 1024,
                    buffers_max: 256,
                },
                BufferClass {
                    buffer_bytes: 1024 * 1024,
                    buffers_max: 64,
                },
            ],
        }
    }
}

impl PoolConfig {
    /// A pool whose largest class holds `message_bytes_max` (for example 16 MiB for conformance).
    pub fn for_message_bytes_max(message_bytes_max: usize) -> Self {
        let mut config = Self::default();
        let largest = config.classes.last().map_or(0, |class| class.buffer_bytes);
        if message_bytes_max > largest {
            config.classes.push(BufferClass {
                buffer_bytes: message_bytes_max,
                buffers_max: 8,
            });
        }
        config
    }

    /// Checks the classes ascend, are non-empty, and that the largest holds `message_bytes_max`.
    pub fn validate(&self, message_bytes_max: usize) -> Result<(), String> {
        if self.classes.is_empty() {
            return Err("the buffer pool needs at least one size class".into());
        }
        for pair in self.classes.windows(2) {
            if pair[0].buffer_bytes >= pair[1].buffer_bytes {
                return Err("buffer pool classes must ascend strictly by buffer_bytes".into());
            }
        }
        if self
            .classes
            .iter()
            .any(|class| class.buffers_max == 0 || class.buffer_bytes < 128)
        {
            return Err(
                "each buffer pool class needs buffers_max > 0 and buffer_bytes ≥ 128".into(),
            );
        }
        let largest = self.classes.last().map_or(0, |class| class.buffer_bytes);
        if largest < message_bytes_max {
            return Err(format!(
                "largest pool buffer ({largest} B) is below message_bytes_max ({message_bytes_max} B)"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the defaults and the conformance preset pass validation.
    #[test]
    fn defaults_are_valid() {
        let protocol = ProtocolConfig::default();
        protocol.validate().unwrap();
        PoolConfig::default()
            .validate(protocol.message_bytes_max)
            .unwrap();
        let conformance = ProtocolConfig::conformance();
        conformance.validate().unwrap();
        PoolConfig::for_message_bytes_max(conformance.message_bytes_max)
            .validate(conformance.message_bytes_max)
            .unwrap();
    }

    /// Proves incoherent limits are refused with a message naming the setting.
    #[test]
    fn incoherent_limits_are_refused() {
        let protocol = ProtocolConfig {
            frame_bytes_max: 10,
            message_bytes_max: 5,
            ..Default::default()
        };
        assert!(protocol.validate().unwrap_err().contains("frame_bytes_max"));
        let pool = PoolConfig::default();
        assert!(
            pool.validate(64 * 1024 * 1024)
                .unwrap_err()
                .contains("message_bytes_max")
        );
    }
}
