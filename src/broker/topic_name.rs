//! What a topic name may be, checked the same way wherever a name comes in: the HTTP publish
//! path and body, and the WebSocket subscribe and publish operations.

/// Longest topic name. Market-data symbols are a few bytes (`AAPL`, `fx/EURUSD`); 128 leaves
/// room for namespaced names while keeping every name a small, bounded map key.
pub const TOPIC_BYTES_MAX: usize = 128;

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
                "topic name of {topic_bytes} bytes is over {TOPIC_BYTES_MAX} bytes"
            ),
            Self::InvalidByte { index, byte } => write!(
                formatter,
                "topic name has byte {byte:#04x} at index {index}: only printable ASCII is allowed"
            ),
        }
    }
}

impl std::error::Error for TopicError {}

/// Checks a topic name: 1..=[`TOPIC_BYTES_MAX`] bytes of printable ASCII (0x20..=0x7E).
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    validate_topic_bytes(topic.as_bytes())
}

/// [`validate_topic`] for bytes not yet known to be text (a percent-decoded path); a name that
/// passes is ASCII and so valid UTF-8.
pub fn validate_topic_bytes(topic: &[u8]) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > TOPIC_BYTES_MAX {
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

    /// Proves the bounds of the length and of the byte range, both ends included.
    #[test]
    fn length_and_bytes_are_bounded() {
        let longest = "x".repeat(TOPIC_BYTES_MAX);
        for topic in ["A", " ", "~", "fx/EUR USD", "a%b", longest.as_str()] {
            assert_eq!(validate_topic(topic), Ok(()), "{topic:?}");
        }
        assert_eq!(validate_topic(""), Err(TopicError::Empty));
        let too_long = "x".repeat(TOPIC_BYTES_MAX + 1);
        assert_eq!(
            validate_topic(&too_long),
            Err(TopicError::TooLong { topic_bytes: 129 })
        );
        for (topic, index, byte) in [("a\x1f", 1, 0x1f), ("\x7f", 0, 0x7f), ("é", 0, 0xc3)] {
            assert_eq!(
                validate_topic(topic),
                Err(TopicError::InvalidByte { index, byte })
            );
        }
        assert!(validate_topic_bytes(b"\xff").is_err());
    }
}
