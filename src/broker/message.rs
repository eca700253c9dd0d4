//! Server messages, encoded once as complete WebSocket text frames.
//!
//! A published message becomes one frame, `{"topic":…,"seq":…,"data":…}` with `data` copied
//! verbatim, and that one `Bytes` is shared by every subscriber's queue, every shard it is
//! forwarded to and the topic's history. Replies to one client (`subscribed`, `reset`, `error`)
//! are small frames encoded the same way.

use bytes::Bytes;

use super::TOPIC_BYTES_LIMIT;
use crate::protocol::decimal::decimal;
use crate::protocol::websocket::frame::{FrameEncoder, OpCode};

/// Encodes the frame of message `seq` of `topic`.
pub fn encode_message(encoder: &mut FrameEncoder, topic: &str, seq: u64, data: &[u8]) -> Bytes {
    let mut digits = [0u8; 20];
    let seq_text = decimal(seq, &mut digits);
    let mut escaped = [0u8; 2 * TOPIC_BYTES_LIMIT];
    let topic_text = escape_topic(topic, &mut escaped);
    encoder.encode_parts(
        OpCode::Text,
        &[
            b"{\"topic\":\"",
            topic_text,
            b"\",\"seq\":",
            seq_text,
            b",\"data\":",
            data,
            b"}",
        ],
    )
}

/// `{"op":"subscribed","topic":…,"seq":…}`: the subscription took effect after message `seq`.
pub fn encode_subscribed(encoder: &mut FrameEncoder, topic: &str, seq: u64) -> Bytes {
    encode_op(encoder, b"subscribed", topic, seq)
}

/// `{"op":"reset","topic":…,"seq":…}`: the replay asked for is no longer in history; `seq` is
/// the latest (its message follows as a snapshot when there is one).
pub fn encode_reset(encoder: &mut FrameEncoder, topic: &str, seq: u64) -> Bytes {
    encode_op(encoder, b"reset", topic, seq)
}

/// `{"op":"unsubscribed","topic":…}`.
pub fn encode_unsubscribed(encoder: &mut FrameEncoder, topic: &str) -> Bytes {
    let mut escaped = [0u8; 2 * TOPIC_BYTES_LIMIT];
    let topic_text = escape_topic(topic, &mut escaped);
    encoder.encode_parts(
        OpCode::Text,
        &[b"{\"op\":\"unsubscribed\",\"topic\":\"", topic_text, b"\"}"],
    )
}

/// `{"op":"error","reason":…}`; `reason` is plain ASCII without quotes or backslashes.
pub fn encode_error(encoder: &mut FrameEncoder, reason: &str) -> Bytes {
    debug_assert!(!reason.bytes().any(needs_escape));
    encoder.encode_parts(
        OpCode::Text,
        &[
            b"{\"op\":\"error\",\"reason\":\"",
            reason.as_bytes(),
            b"\"}",
        ],
    )
}

/// `{"op":"error","reason":…,"topic":…}` for a request about one topic.
pub fn encode_topic_error(encoder: &mut FrameEncoder, reason: &str, topic: &str) -> Bytes {
    debug_assert!(!reason.bytes().any(needs_escape));
    let mut escaped = [0u8; 2 * TOPIC_BYTES_LIMIT];
    let topic_text = escape_topic(topic, &mut escaped);
    encoder.encode_parts(
        OpCode::Text,
        &[
            b"{\"op\":\"error\",\"reason\":\"",
            reason.as_bytes(),
            b"\",\"topic\":\"",
            topic_text,
            b"\"}",
        ],
    )
}

fn encode_op(encoder: &mut FrameEncoder, op: &[u8], topic: &str, seq: u64) -> Bytes {
    let mut digits = [0u8; 20];
    let seq_text = decimal(seq, &mut digits);
    let mut escaped = [0u8; 2 * TOPIC_BYTES_LIMIT];
    let topic_text = escape_topic(topic, &mut escaped);
    encoder.encode_parts(
        OpCode::Text,
        &[
            b"{\"op\":\"",
            op,
            b"\",\"topic\":\"",
            topic_text,
            b"\",\"seq\":",
            seq_text,
            b"}",
        ],
    )
}

/// Topic names are printable ASCII (checked on the way in); of those, only `"` and `\` need a
/// backslash inside a JSON string.
fn needs_escape(byte: u8) -> bool {
    byte == b'"' || byte == b'\\'
}

/// The topic as JSON string content, escaped into `out` when it has to be. Topic names are at
/// most `TOPIC_BYTES_LIMIT` bytes (the config refuses a larger `topic_bytes_max`), so `out`
/// holds any of them escaped.
fn escape_topic<'a>(topic: &'a str, out: &'a mut [u8; 2 * TOPIC_BYTES_LIMIT]) -> &'a [u8] {
    if !topic.bytes().any(needs_escape) {
        return topic.as_bytes();
    }
    let mut length = 0;
    for byte in topic.bytes().take(out.len() / 2) {
        if needs_escape(byte) {
            out[length] = b'\\';
            length += 1;
        }
        out[length] = byte;
        length += 1;
    }
    &out[..length]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::websocket::frame::encode_frame;

    fn payload_of(frame: &[u8]) -> serde_json::Value {
        let head = crate::protocol::websocket::frame::FrameHead::parse(frame)
            .unwrap()
            .unwrap();
        assert_eq!(head.opcode, OpCode::Text);
        serde_json::from_slice(&frame[usize::from(head.head_bytes)..]).unwrap()
    }

    /// Proves a message frame is exactly the documented JSON with `data` verbatim.
    #[test]
    fn message_frame() {
        let mut encoder = FrameEncoder::new(1024);
        let frame = encode_message(&mut encoder, "AAPL", 42, br#"{"px":191.2}"#);
        let expected = br#"{"topic":"AAPL","seq":42,"data":{"px":191.2}}"#;
        assert_eq!(frame, encode_frame(OpCode::Text, true, expected));
    }

    /// Proves topics with quotes and backslashes stay valid JSON, and seq covers u64.
    #[test]
    fn escaping_and_large_seq() {
        let mut encoder = FrameEncoder::new(64);
        let frame = encode_message(&mut encoder, r#"a"b\c"#, u64::MAX, b"[1,2]");
        let value = payload_of(&frame);
        assert_eq!(value["topic"], r#"a"b\c"#);
        assert_eq!(value["seq"], u64::MAX);
        assert_eq!(value["data"], serde_json::json!([1, 2]));
        let frame = encode_subscribed(&mut encoder, r#"x"y"#, 0);
        let value = payload_of(&frame);
        assert_eq!(
            value,
            serde_json::json!({"op":"subscribed","topic":"x\"y","seq":0})
        );
    }

    /// Proves the control replies are the documented JSON.
    #[test]
    fn replies() {
        let mut encoder = FrameEncoder::new(64);
        let cases = [
            (
                encode_reset(&mut encoder, "MSFT", 57),
                serde_json::json!({"op":"reset","topic":"MSFT","seq":57}),
            ),
            (
                encode_error(&mut encoder, "malformed JSON"),
                serde_json::json!({"op":"error","reason":"malformed JSON"}),
            ),
            (
                encode_topic_error(&mut encoder, "too many", "A"),
                serde_json::json!({"op":"error","reason":"too many","topic":"A"}),
            ),
            (
                encode_unsubscribed(&mut encoder, "A"),
                serde_json::json!({"op":"unsubscribed","topic":"A"}),
            ),
        ];
        for (frame, expected) in cases {
            assert_eq!(payload_of(&frame), expected);
        }
    }
}
