//! The data of every published message: a JSON object with the per-topic counter, the
//! publisher's send time and the step it belongs to, padded to the requested size.
//!
//! `{"counter":12,"sent_ns":81234567890,"step":0,"padding":"xxxx"}`: full names, since the
//! object travels verbatim through every protocol and people read it in packet captures.

use serde::Deserialize;

/// What a subscriber needs from a message's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct PayloadData {
    /// 1, 2, 3, ... per topic, over the whole run.
    pub counter: u64,
    /// CLOCK_MONOTONIC nanoseconds when the publisher queued the message.
    pub sent_ns: u64,
    /// The step of the rate plan the message was published in.
    pub step: u32,
}

/// The data text for `data`, padded with `x` to `payload_bytes` when that is more than the
/// unpadded object needs (the padding field is always present, maybe empty).
pub fn encode(data: PayloadData, payload_bytes: usize, text: &mut String) {
    use std::fmt::Write as _;
    text.clear();
    let _ = write!(
        text,
        "{{\"counter\":{},\"sent_ns\":{},\"step\":{},\"padding\":\"",
        data.counter, data.sent_ns, data.step
    );
    // Two bytes close the string and the object.
    let padding = payload_bytes.saturating_sub(text.len() + 2);
    text.extend(std::iter::repeat_n('x', padding));
    text.push_str("\"}");
}

/// The data of a message, or `None` when it is not ours (another publisher's, or corrupt).
pub fn decode(bytes: &[u8]) -> Option<PayloadData> {
    serde_json::from_slice(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encoded data has the requested size (when it fits) and decodes to what was put in.
    #[test]
    fn encodes_padded_and_decodes() {
        let data = PayloadData {
            counter: 42,
            sent_ns: 1_234_567_890_123,
            step: 3,
        };
        let mut text = String::new();
        for payload_bytes in [0, 10, 80, 100, 1000] {
            encode(data, payload_bytes, &mut text);
            assert!(text.len() >= payload_bytes.min(text.len()));
            if payload_bytes >= 80 {
                assert_eq!(text.len(), payload_bytes, "{text}");
            }
            assert_eq!(decode(text.as_bytes()), Some(data), "{text}");
        }
        assert_eq!(decode(b"{\"counter\":1}"), None);
        assert_eq!(decode(b"{\"price\":12.5}"), None);
        assert_eq!(decode(b"not json"), None);
    }
}
