//! Errors of a WebSocket session after the handshake, each mapped to a close code.

use super::close::CloseCode;

/// A WebSocket framing or message error after the handshake. Each variant maps to a close code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// RSV1–3 set while no extension was negotiated.
    ReservedBitsSet,
    /// An opcode RFC 6455 reserves (3–7, 0xB–0xF).
    UnknownOpcode(u8),
    /// A client frame without the mask bit (RFC 6455 §5.1).
    UnmaskedFrame,
    /// A control frame with a payload over 125 bytes.
    ControlFrameTooLong(u64),
    /// A control frame without FIN.
    FragmentedControlFrame,
    /// A 64-bit payload length with the most significant bit set.
    LengthTopBitSet,
    /// A frame over `frame_bytes_max`.
    FrameTooLarge {
        frame_bytes: u64,
        frame_bytes_max: usize,
    },
    /// A message (all its fragments) over `message_bytes_max`.
    MessageTooLarge {
        message_bytes: u64,
        message_bytes_max: usize,
    },
    /// A continuation frame with no fragmented message in progress.
    ContinuationWithoutStart,
    /// A text or binary frame while a fragmented message was still in progress.
    DataFrameInsideFragmentedMessage,
    /// A close frame whose payload is one byte long.
    CloseFrameTooShort,
    /// A close code a peer may not send.
    InvalidCloseCode(u16),
    /// A text message that is not valid UTF-8.
    InvalidUtf8,
    /// A close reason that is not valid UTF-8.
    InvalidCloseReasonUtf8,
    /// RSV1 on a continuation frame: only a message's first frame says it is compressed.
    CompressedContinuation,
    /// A compressed message that inflates past `message_bytes_max` (a zip bomb, say).
    InflatedTooLarge { message_bytes_max: usize },
    /// A compressed message that is not a valid deflate stream.
    InvalidCompressedData,
    /// Every inflater of the shard is lent to a connection in the middle of a compressed
    /// message (`inflaters_max`): not the peer's fault, it should retry later.
    InflatersExhausted,
    /// Our receive buffer pool had no buffer for this message: not the peer's fault, it should
    /// retry later. The pool's bound keeps one connection from taking the shard's memory.
    BufferPoolExhausted { message_bytes: usize },
}

impl ProtocolError {
    /// The close code this error is answered with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::ReservedBitsSet
            | Self::UnknownOpcode(_)
            | Self::UnmaskedFrame
            | Self::ControlFrameTooLong(_)
            | Self::FragmentedControlFrame
            | Self::LengthTopBitSet
            | Self::ContinuationWithoutStart
            | Self::DataFrameInsideFragmentedMessage
            | Self::CloseFrameTooShort
            | Self::CompressedContinuation
            | Self::InvalidCloseCode(_) => CloseCode::PROTOCOL_ERROR,
            Self::FrameTooLarge { .. }
            | Self::MessageTooLarge { .. }
            | Self::InflatedTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            Self::InvalidUtf8 | Self::InvalidCloseReasonUtf8 | Self::InvalidCompressedData => {
                CloseCode::INVALID_PAYLOAD
            }
            Self::BufferPoolExhausted { .. } | Self::InflatersExhausted => {
                CloseCode::TRY_AGAIN_LATER
            }
        }
    }

    /// A short reason for the close frame (at most 123 bytes, so it fits a control frame).
    pub fn close_reason(&self) -> &'static str {
        match self {
            Self::ReservedBitsSet => "reserved bits set",
            Self::UnknownOpcode(_) => "unknown opcode",
            Self::UnmaskedFrame => "client frame not masked",
            Self::ControlFrameTooLong(_) => "control frame over 125 bytes",
            Self::FragmentedControlFrame => "fragmented control frame",
            Self::LengthTopBitSet => "payload length top bit set",
            Self::FrameTooLarge { .. } => "frame too large",
            Self::MessageTooLarge { .. } => "message too large",
            Self::ContinuationWithoutStart => "continuation without a message",
            Self::DataFrameInsideFragmentedMessage => "new message inside a fragmented one",
            Self::CloseFrameTooShort => "close payload of one byte",
            Self::InvalidCloseCode(_) => "invalid close code",
            Self::InvalidUtf8 => "text is not valid utf-8",
            Self::InvalidCloseReasonUtf8 => "close reason is not valid utf-8",
            Self::CompressedContinuation => "rsv1 on a continuation frame",
            Self::InflatedTooLarge { .. } => "message too large once inflated",
            Self::InvalidCompressedData => "invalid compressed data",
            Self::BufferPoolExhausted { .. } | Self::InflatersExhausted => {
                "server busy, try again later"
            }
        }
    }
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ReservedBitsSet => write!(formatter, "peer set RSV bits with no extension"),
            Self::UnknownOpcode(opcode) => {
                write!(formatter, "peer sent reserved opcode {opcode:#x}")
            }
            Self::UnmaskedFrame => write!(formatter, "peer (a client) sent an unmasked frame"),
            Self::ControlFrameTooLong(bytes) => {
                write!(
                    formatter,
                    "peer sent a control frame of {bytes} bytes (max 125)"
                )
            }
            Self::FragmentedControlFrame => write!(formatter, "peer fragmented a control frame"),
            Self::LengthTopBitSet => write!(formatter, "peer set the top bit of a 64-bit length"),
            Self::FrameTooLarge {
                frame_bytes,
                frame_bytes_max,
            } => write!(
                formatter,
                "peer sent a frame of {frame_bytes} bytes (frame_bytes_max {frame_bytes_max})"
            ),
            Self::MessageTooLarge {
                message_bytes,
                message_bytes_max,
            } => write!(
                formatter,
                "peer sent a message of at least {message_bytes} bytes \
                 (message_bytes_max {message_bytes_max})"
            ),
            Self::ContinuationWithoutStart => {
                write!(
                    formatter,
                    "peer sent a continuation frame with no message to continue"
                )
            }
            Self::DataFrameInsideFragmentedMessage => {
                write!(
                    formatter,
                    "peer started a new message before finishing a fragmented one"
                )
            }
            Self::CloseFrameTooShort => write!(formatter, "peer sent a close payload of 1 byte"),
            Self::InvalidCloseCode(code) => write!(formatter, "peer sent close code {code}"),
            Self::InvalidUtf8 => write!(formatter, "peer sent a text message that is not utf-8"),
            Self::InvalidCloseReasonUtf8 => {
                write!(formatter, "peer sent a close reason that is not utf-8")
            }
            Self::CompressedContinuation => {
                write!(formatter, "peer set RSV1 on a continuation frame")
            }
            Self::InflatedTooLarge { message_bytes_max } => write!(
                formatter,
                "peer sent a compressed message that inflates past {message_bytes_max} bytes \
                 (message_bytes_max)"
            ),
            Self::InvalidCompressedData => {
                write!(
                    formatter,
                    "peer sent a compressed message that does not inflate"
                )
            }
            Self::InflatersExhausted => write!(
                formatter,
                "no inflater for a compressed message: the shard's are all lent (inflaters_max)"
            ),
            Self::BufferPoolExhausted { message_bytes } => write!(
                formatter,
                "no pooled buffer for a {message_bytes}-byte message: the pool is at its maximum"
            ),
        }
    }
}

impl std::error::Error for ProtocolError {}
