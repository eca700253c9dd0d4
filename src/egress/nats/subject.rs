//! Topic names as NATS subjects, and back.
//!
//! A topic is 1 to `topic_bytes_max` bytes of printable ASCII, where NATS gives `.` (token
//! separator), `*` and `>` (wildcards) and the space a meaning. A topic becomes one subject
//! token after the prefix, with those bytes and `%` itself percent-escaped (`EUR.USD` →
//! `ringcast.topic.EUR%2EUSD`), so that every topic has exactly one subject and the stream's
//! wildcard `<prefix>.>` holds them all.

/// The stream's subjects: every token under the prefix.
pub fn wildcard(prefix: &str) -> String {
    format!("{prefix}.>")
}

/// The subject of `topic` under `prefix`.
pub fn of_topic(prefix: &str, topic: &[u8]) -> String {
    let mut subject = String::with_capacity(prefix.len() + 1 + topic.len());
    subject.push_str(prefix);
    subject.push('.');
    for &byte in topic {
        if needs_escape(byte) {
            subject.push('%');
            subject.push(char::from(HEX[usize::from(byte >> 4)]));
            subject.push(char::from(HEX[usize::from(byte & 0x0f)]));
        } else {
            subject.push(char::from(byte));
        }
    }
    subject
}

/// The topic of `subject` under `prefix`, or `None` for a subject ringcast did not make.
pub fn to_topic(prefix: &str, subject: &str) -> Option<Vec<u8>> {
    let token = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let bytes = token.as_bytes();
    let mut topic = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        if byte == b'%' {
            let high = hex_value(*bytes.get(at + 1)?)?;
            let low = hex_value(*bytes.get(at + 2)?)?;
            topic.push(high << 4 | low);
            at += 3;
        } else if needs_escape(byte) {
            return None;
        } else {
            topic.push(byte);
            at += 1;
        }
    }
    (!topic.is_empty()).then_some(topic)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn needs_escape(byte: u8) -> bool {
    matches!(byte, b'.' | b'*' | b'>' | b' ' | b'%') || !byte.is_ascii_graphic()
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves every printable topic makes one subject token that reads back as the topic.
    #[test]
    fn topics_round_trip_as_one_token() {
        for topic in [
            "AAPL",
            "EUR/USD",
            "a.b",
            "*",
            ">",
            "x y",
            "100%",
            "~!@#$^&()",
        ] {
            let subject = of_topic("ringcast.topic", topic.as_bytes());
            let token = subject.strip_prefix("ringcast.topic.").unwrap();
            assert!(!token.contains(['.', '*', '>', ' ']), "{subject}");
            let back = to_topic("ringcast.topic", &subject).unwrap();
            assert_eq!(back, topic.as_bytes());
        }
        assert_eq!(of_topic("p", b"EUR.USD"), "p.EUR%2EUSD");
        assert_eq!(to_topic("p", "q.AAPL"), None);
        assert_eq!(to_topic("p", "p.A%2"), None);
        assert_eq!(to_topic("p", "p."), None);
    }
}
