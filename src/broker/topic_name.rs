//! What a topic name may be, checked the same way wherever a name comes in: the HTTP publish
//! path and body, and the WebSocket subscribe and publish operations.

/// The largest `topic_bytes_max` the config accepts (default 128): names stay small, bounded map
/// keys, and message encoding escapes a name on the stack.
pub const TOPIC_BYTES_LIMIT: usize = 256;

/// Why a topic name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicError {
    Empty,
    TooLong {
        topic_bytes: usize,
    },
    /// A byte outside printable ASCII (0x20..=0x7E): control bytes would corrupt logs and
    /// metrics labels, and non-ASCII would let look-alike names stand for different topics.
    InvalidByte {
        index: usize,
        byte: u8,
    },
}

impl std::fmt::Display for TopicError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => write!(formatter, "topic name is empty"),
            Self::TooLong { topic_bytes } => write!(
                formatter,
                "topic name of {topic_bytes} bytes is over topic_bytes_max"
            ),
            Self::InvalidByte { index, byte } => write!(
                formatter,
                "topic name has byte {byte:#04x} at index {index}: only printable ASCII is allowed"
            ),
        }
    }
}

impl std::error::Error for TopicError {}

impl TopicError {
    /// A fixed reason, for replies that must not carry client bytes (WebSocket `error`).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Empty => "topic name is empty",
            Self::TooLong { .. } => "topic name is longer than topic_bytes_max",
            Self::InvalidByte { .. } => "topic name has a byte outside printable ASCII",
        }
    }
}

/// Checks a topic name: 1..=`topic_bytes_max` bytes of printable ASCII (0x20..=0x7E).
pub fn validate_topic(topic: &str, topic_bytes_max: usize) -> Result<(), TopicError> {
    validate_topic_bytes(topic.as_bytes(), topic_bytes_max)
}

/// [`validate_topic`] for bytes not yet known to be text (a percent-decoded path); a name that
/// passes is ASCII and so valid UTF-8.
pub fn validate_topic_bytes(topic: &[u8], topic_bytes_max: usize) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > topic_bytes_max {
        return Err(TopicError::TooLong {
            topic_bytes: topic.len(),
        });
    }
    match topic.iter().position(|byte| !(0x20..=0x7E).contains(byte)) {
        Some(index) => Err(TopicError::InvalidByte {
            index,
            byte: topic[index],
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC_BYTES_MAX: usize = 128;

    /// Proves the bounds of the length and of the byte range, both ends included.
    #[test]
    fn length_and_bytes_are_bounded() {
        let longest = "x".repeat(TOPIC_BYTES_MAX);
        for topic in ["A", " ", "~", "fx/EUR USD", "a%b", longest.as_str()] {
            assert_eq!(validate_topic(topic, TOPIC_BYTES_MAX), Ok(()), "{topic:?}");
        }
        assert_eq!(validate_topic("", TOPIC_BYTES_MAX), Err(TopicError::Empty));
        let too_long = "x".repeat(TOPIC_BYTES_MAX + 1);
        assert_eq!(
            validate_topic(&too_long, TOPIC_BYTES_MAX),
            Err(TopicError::TooLong { topic_bytes: 129 })
        );
        for (topic, index, byte) in [("a\x1f", 1, 0x1f), ("\x7f", 0, 0x7f), ("é", 0, 0xc3)] {
            assert_eq!(
                validate_topic(topic, TOPIC_BYTES_MAX),
                Err(TopicError::InvalidByte { index, byte })
            );
        }
        assert!(validate_topic_bytes(b"\xff", TOPIC_BYTES_MAX).is_err());
    }
}
