//! What the broker sends clients, encoded once: published messages and per-client replies.
//!
//! A published message's body is `{"topic":…,"seq":…,"data":…}`, with `data` copied verbatim.
//! The owner encodes it once into a [`Message`], and that one buffer is shared by every shard it
//! is forwarded to, every subscriber's queue and the topic's history. Each kind of endpoint frames
//! the same body its own way, at most once per shard (`endpoint::frame_cache`). Since most
//! subscribers speak WebSocket, the body is encoded with its WebSocket head in front, so a
//! WebSocket delivery is the buffer itself, with no copy at all; other endpoints read
//! [`Message::body`].
//!
//! Replies to one client (`subscribed`, `reset`, `unsubscribed`, `error`) are [`Reply`] values
//! encoded the same way, with their kind for endpoints that name events (SSE).

use bytes::Bytes;

use super::message_pool::{MessagePool, SharedBuffer};
use super::topic::{Epoch, TOPIC_BYTES_LIMIT, TopicName};
use crate::protocol::decimal::decimal;
use crate::protocol::websocket::frame::{FrameEncoder, HEAD_BYTES_MAX, OpCode, text_frame_head};

/// Bytes of the message's own header: the seq (8, little-endian) and the topic's length (2).
const MESSAGE_HEADER_BYTES: usize = 10;

const _: () = assert!(TOPIC_BYTES_LIMIT <= u16::MAX as usize);

/// Message `seq` of a topic: the owner numbered it, and every subscriber of the topic gets this
/// same buffer. Cloning shares it (one reference count). The layout is
/// `[seq: u64 LE][topic length: u16 LE][topic][WebSocket head][body]`, so the seq and topic need no
/// fields of their own and a message costs one buffer wherever it is held (commands, history,
/// conflation, queues). The buffer comes from the owner's [`MessagePool`] and goes back to it
/// when the last holder lets go.
#[derive(Clone, PartialEq, Eq)]
pub struct Message(SharedBuffer);

impl Message {
    /// Encodes message `seq` of `topic` with `data` (one JSON value, verbatim) in a buffer of
    /// `pool`. A message may be kept long (history, a stalled queue): each has a buffer of its
    /// own, rather than a share of an arena chunk, so that one old message cannot pin a chunk
    /// and what history and queues count is what they hold.
    pub fn encode(pool: &mut MessagePool, topic: &TopicName, seq: u64, data: &[u8]) -> Message {
        Message::encode_into(Some(pool), topic, seq, data)
    }

    /// [`Message::encode`] in a buffer of its own, outside any pool (tests, tools).
    pub fn new(topic: &TopicName, seq: u64, data: &[u8]) -> Message {
        Message::encode_into(None, topic, seq, data)
    }

    fn encode_into(
        pool: Option<&mut MessagePool>,
        topic: &TopicName,
        seq: u64,
        data: &[u8],
    ) -> Message {
        let mut digits = [0u8; 20];
        let seq_text = decimal(seq, &mut digits);
        let mut escaped = [0u8; 2 * TOPIC_BYTES_LIMIT];
        let topic_text = escape_topic(topic.as_str(), &mut escaped);
        let body: [&[u8]; 7] = [
            b"{\"topic\":\"",
            topic_text,
            b"\",\"seq\":",
            seq_text,
            b",\"data\":",
            data,
            b"}",
        ];
        let body_bytes: usize = body.iter().map(|part| part.len()).sum();
        let mut head = [0u8; HEAD_BYTES_MAX];
        let head_bytes = text_frame_head(body_bytes, &mut head);
        let name = topic.as_bytes();
        let bytes = MESSAGE_HEADER_BYTES + name.len() + head_bytes + body_bytes;
        let write = |buffer: &mut Vec<u8>| {
            buffer.extend_from_slice(&seq.to_le_bytes());
            buffer.extend_from_slice(&(name.len() as u16).to_le_bytes());
            buffer.extend_from_slice(name);
            buffer.extend_from_slice(&head[..head_bytes]);
            for part in body {
                buffer.extend_from_slice(part);
            }
        };
        Message(match pool {
            Some(pool) => pool.fill(bytes, write),
            None => SharedBuffer::exact(bytes, write),
        })
    }

    pub fn seq(&self) -> u64 {
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(seq)
    }

    /// The topic's name (ASCII, as validated when the message was published).
    pub fn topic(&self) -> &[u8] {
        &self.0[MESSAGE_HEADER_BYTES..self.frame_start()]
    }

    /// The message as one WebSocket text frame (head and body), in this buffer.
    pub fn websocket_frame(&self) -> &[u8] {
        &self.0[self.frame_start()..]
    }

    /// The JSON body, without any framing.
    pub fn body(&self) -> &[u8] {
        let frame = &self.0[self.frame_start()..];
        &frame[websocket_head_bytes(frame)..]
    }

    /// Whether `other` is this very message (the same buffer), not merely equal bytes: a
    /// pointer comparison, cheap enough for every delivery.
    pub fn is_same(&self, other: &Message) -> bool {
        self.0.is_same(&other.0)
    }

    /// The bytes this message holds (header, head and body).
    pub fn encoded_bytes(&self) -> usize {
        self.0.len()
    }

    /// What keeping this message costs in memory: its whole buffer (the class it was taken
    /// from, not only the bytes written) and the buffer's bookkeeping.
    pub fn memory_bytes(&self) -> usize {
        self.0.memory_bytes()
    }

    fn frame_start(&self) -> usize {
        MESSAGE_HEADER_BYTES + usize::from(u16::from_le_bytes([self.0[8], self.0[9]]))
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Message")
            .field("topic", &String::from_utf8_lossy(self.topic()))
            .field("seq", &self.seq())
            .field("body", &String::from_utf8_lossy(self.body()))
            .finish()
    }
}

/// What a reply says, for endpoints that name their events (SSE's `event:` line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    Subscribed,
    Reset,
    Unsubscribed,
    Published,
    Error,
    Refreshed,
}

impl ReplyKind {
    pub fn name(self) -> &'static str {
        match self {
            ReplyKind::Subscribed => "subscribed",
            ReplyKind::Reset => "reset",
            ReplyKind::Unsubscribed => "unsubscribed",
            ReplyKind::Published => "published",
            ReplyKind::Error => "error",
            ReplyKind::Refreshed => "refreshed",
        }
    }
}

/// A reply to one client: its kind and its body encoded with a WebSocket head in front, and for
/// endpoints that keep a cursor (SSE, streams, polls), what it says about a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub kind: ReplyKind,
    frame: Bytes,
    /// The topic a `subscribed`, `reset` or topic `error` is about.
    pub topic: Option<TopicName>,
    /// The seq and epoch of a `subscribed` or `reset`.
    pub seq: u64,
    pub epoch: Option<Epoch>,
}

impl Reply {
    /// The reply as one WebSocket text frame.
    pub fn websocket_frame(&self) -> &Bytes {
        &self.frame
    }

    /// The JSON body, without any framing.
    pub fn body(&self) -> &[u8] {
        &self.frame[websocket_head_bytes(&self.frame)..]
    }

    /// `{"op":"subscribed","topic":…,"seq":…,"epoch":…}`: the subscription took effect after
    /// message `seq` of the topic's sequence space `epoch`.
    pub fn subscribed(
        encoder: &mut FrameEncoder,
        topic: &TopicName,
        seq: u64,
        epoch: Epoch,
    ) -> Reply {
        Reply::topic_op(encoder, ReplyKind::Subscribed, topic, seq, epoch)
    }

    /// `{"op":"reset","topic":…,"seq":…,"epoch":…}`: the replay asked for is not in history (or
    /// `since` is of another epoch): live messages continue after `seq`, the latest, whose
    /// message follows as a snapshot when there is one.
    pub fn reset(encoder: &mut FrameEncoder, topic: &TopicName, seq: u64, epoch: Epoch) -> Reply {
        Reply::topic_op(encoder, ReplyKind::Reset, topic, seq, epoch)
    }

    /// `{"op":"unsubscribed","topic":…}`.
    pub fn unsubscribed(encoder: &mut FrameEncoder, topic: &TopicName) -> Reply {
        let mut escaped = [0u8; 2 * TOPIC_BYTES_LIMIT];
        let topic_text = escape_topic(topic.as_str(), &mut escaped);
        let frame = encoder.encode_parts(
            OpCode::Text,
            &[b"{\"op\":\"unsubscribed\",\"topic\":\"", topic_text, b"\"}"],
        );
        Reply::plain(ReplyKind::Unsubscribed, frame)
    }

    /// `{"op":"published","id":…,"seq":…}`: the publish the client gave `id` has seq `seq` (also
    /// when it was a retry answered from the idempotency table). `id` is printable ASCII,
    /// escaped here like a topic name.
    pub fn published(encoder: &mut FrameEncoder, id: &str, seq: u64) -> Reply {
        let mut digits = [0u8; 20];
        let seq_text = decimal(seq, &mut digits);
        let mut escaped = [0u8; 2 * TOPIC_BYTES_LIMIT];
        let id_text = escape_topic(id, &mut escaped);
        let frame = encoder.encode_parts(
            OpCode::Text,
            &[
                b"{\"op\":\"published\",\"id\":\"",
                id_text,
                b"\",\"seq\":",
                seq_text,
                b"}",
            ],
        );
        Reply::plain(ReplyKind::Published, frame)
    }

    /// `{"op":"refreshed","exp":…}`: the connection's token was replaced by one that expires at
    /// `exp` (seconds since the epoch).
    pub fn refreshed(encoder: &mut FrameEncoder, exp: u64) -> Reply {
        let mut digits = [0u8; 20];
        let exp_text = decimal(exp, &mut digits);
        let frame = encoder.encode_parts(
            OpCode::Text,
            &[b"{\"op\":\"refreshed\",\"exp\":", exp_text, b"}"],
        );
        Reply::plain(ReplyKind::Refreshed, frame)
    }

    /// `{"op":"error","reason":…,"id":…}`: the publish the client gave `id` was refused.
    pub fn publish_error(encoder: &mut FrameEncoder, reason: &str, id: &str) -> Reply {
        debug_assert!(!reason.bytes().any(needs_escape));
        let mut escaped = [0u8; 2 * TOPIC_BYTES_LIMIT];
        let id_text = escape_topic(id, &mut escaped);
        let frame = encoder.encode_parts(
            OpCode::Text,
            &[
                b"{\"op\":\"error\",\"reason\":\"",
                reason.as_bytes(),
                b"\",\"id\":\"",
                id_text,
                b"\"}",
            ],
        );
        Reply::plain(ReplyKind::Error, frame)
    }

    /// `{"op":"error","reason":…}`; `reason` is plain ASCII without quotes or backslashes.
    pub fn error(encoder: &mut FrameEncoder, reason: &str) -> Reply {
        debug_assert!(!reason.bytes().any(needs_escape));
        let frame = encoder.encode_parts(
            OpCode::Text,
            &[
                b"{\"op\":\"error\",\"reason\":\"",
                reason.as_bytes(),
                b"\"}",
            ],
        );
        Reply::plain(ReplyKind::Error, frame)
    }

    /// `{"op":"error","reason":…,"topic":…}` for a request about one topic.
    pub fn topic_error(encoder: &mut FrameEncoder, reason: &str, topic: &TopicName) -> Reply {
        debug_assert!(!reason.bytes().any(needs_escape));
        let mut escaped = [0u8; 2 * TOPIC_BYTES_LIMIT];
        let topic_text = escape_topic(topic.as_str(), &mut escaped);
        let frame = encoder.encode_parts(
            OpCode::Text,
            &[
                b"{\"op\":\"error\",\"reason\":\"",
                reason.as_bytes(),
                b"\",\"topic\":\"",
                topic_text,
                b"\"}",
            ],
        );
        Reply {
            topic: Some(topic.clone()),
            ..Reply::plain(ReplyKind::Error, frame)
        }
    }

    fn topic_op(
        encoder: &mut FrameEncoder,
        kind: ReplyKind,
        topic: &TopicName,
        seq: u64,
        epoch: Epoch,
    ) -> Reply {
        let mut digits = [0u8; 20];
        let seq_text = decimal(seq, &mut digits);
        let mut escaped = [0u8; 2 * TOPIC_BYTES_LIMIT];
        let topic_text = escape_topic(topic.as_str(), &mut escaped);
        let mut epoch_text = [0u8; 16];
        let epoch_text = epoch.text(&mut epoch_text);
        let frame = encoder.encode_parts(
            OpCode::Text,
            &[
                b"{\"op\":\"",
                kind.name().as_bytes(),
                b"\",\"topic\":\"",
                topic_text,
                b"\",\"seq\":",
                seq_text,
                b",\"epoch\":\"",
                epoch_text.as_bytes(),
                b"\"}",
            ],
        );
        Reply {
            kind,
            frame,
            topic: Some(topic.clone()),
            seq,
            epoch: Some(epoch),
        }
    }

    fn plain(kind: ReplyKind, frame: Bytes) -> Reply {
        Reply {
            kind,
            frame,
            topic: None,
            seq: 0,
            epoch: None,
        }
    }
}

/// The length of the head of an unmasked server frame that starts `frame`.
fn websocket_head_bytes(frame: &[u8]) -> usize {
    match frame[1] & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    }
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
    use crate::protocol::websocket::frame::{FrameHead, encode_frame};

    fn topic(name: &str) -> TopicName {
        TopicName::copy_from(name.as_bytes(), TOPIC_BYTES_LIMIT).unwrap()
    }

    fn payload_of(frame: &[u8]) -> serde_json::Value {
        let head = FrameHead::parse(frame).unwrap().unwrap();
        assert_eq!(head.opcode, OpCode::Text);
        serde_json::from_slice(&frame[usize::from(head.head_bytes)..]).unwrap()
    }

    /// Proves a message is exactly the documented JSON with `data` verbatim, as a WebSocket frame
    /// and as a bare body, and carries its seq and topic.
    #[test]
    fn message_frame_and_body() {
        let message = Message::new(&topic("AAPL"), 42, br#"{"px":191.2}"#);
        let expected = br#"{"topic":"AAPL","seq":42,"data":{"px":191.2}}"#;
        assert_eq!(
            message.websocket_frame(),
            encode_frame(OpCode::Text, true, expected)
        );
        assert_eq!(message.body(), expected);
        assert_eq!((message.seq(), message.topic()), (42, &b"AAPL"[..]));
    }

    /// Proves bodies past 125 and 65,535 bytes keep their 4- and 10-byte heads apart from the
    /// body.
    #[test]
    fn long_bodies_split_from_their_heads() {
        for data_bytes in [200, 70_000] {
            let data = format!("\"{}\"", "x".repeat(data_bytes));
            let message = Message::new(&topic("A"), 1, data.as_bytes());
            let value: serde_json::Value = serde_json::from_slice(message.body()).unwrap();
            assert_eq!(value["data"].as_str().unwrap().len(), data_bytes);
            assert_eq!(payload_of(message.websocket_frame()), value);
        }
    }

    /// Proves topics with quotes and backslashes stay valid JSON, and seq covers u64.
    #[test]
    fn escaping_and_large_seq() {
        let mut encoder = FrameEncoder::new(64);
        let message = Message::new(&topic(r#"a"b\c"#), u64::MAX, b"[1,2]");
        let value = payload_of(message.websocket_frame());
        assert_eq!(value["topic"], r#"a"b\c"#);
        assert_eq!(value["seq"], u64::MAX);
        assert_eq!(value["data"], serde_json::json!([1, 2]));
        assert_eq!(message.seq(), u64::MAX);
        let reply = Reply::subscribed(&mut encoder, &topic(r#"x"y"#), 0, Epoch(0xab));
        assert_eq!(
            payload_of(reply.websocket_frame()),
            serde_json::json!({"op":"subscribed","topic":"x\"y","seq":0,"epoch":"00000000000000ab"})
        );
    }

    /// Proves the replies are the documented JSON, with their kinds.
    #[test]
    fn replies() {
        let mut encoder = FrameEncoder::new(64);
        let cases = [
            (
                Reply::reset(&mut encoder, &topic("MSFT"), 57, Epoch(u64::MAX)),
                serde_json::json!({"op":"reset","topic":"MSFT","seq":57,"epoch":"ffffffffffffffff"}),
            ),
            (
                Reply::error(&mut encoder, "malformed JSON"),
                serde_json::json!({"op":"error","reason":"malformed JSON"}),
            ),
            (
                Reply::topic_error(&mut encoder, "too many", &topic("A")),
                serde_json::json!({"op":"error","reason":"too many","topic":"A"}),
            ),
            (
                Reply::unsubscribed(&mut encoder, &topic("A")),
                serde_json::json!({"op":"unsubscribed","topic":"A"}),
            ),
            (
                Reply::published(&mut encoder, "order-7", 12),
                serde_json::json!({"op":"published","id":"order-7","seq":12}),
            ),
            (
                Reply::publish_error(&mut encoder, "too many", "a\"b"),
                serde_json::json!({"op":"error","reason":"too many","id":"a\"b"}),
            ),
        ];
        for (reply, expected) in cases {
            assert_eq!(payload_of(reply.websocket_frame()), expected);
            let body: serde_json::Value = serde_json::from_slice(reply.body()).unwrap();
            assert_eq!(body, expected);
            assert_eq!(reply.kind.name(), expected["op"]);
        }
    }
}
