//! What subscribers and publishers send and how they read what the server sends, for each
//! protocol. Sans-IO: bytes and messages in, events out.
//!
//! - `ringcast` (and `uws`, whose peer speaks the same JSON protocol): text frames, one JSON
//!   object each. `{"op":"subscribe","topics":[…]}` is answered by `{"op":"subscribed",
//!   "topic":…,"seq":N}`; deliveries are `{"topic":…,"seq":N,"data":…}`.
//! - `nats`: the NATS text protocol over WebSocket (see `super::nats`); no sequence numbers, and
//!   a PING answered by PONG after the SUB stands in for the subscription's acknowledgement,
//!   since a NATS server handles one connection's commands in order.
//! - `socketio`: Socket.IO v5 over Engine.IO v4, WebSocket only (ringcast's `/socket.io/` and
//!   `peers/socketio-pubsub.js`), one Engine.IO packet per text frame. The server speaks first
//!   (the open packet `0{…}`); the client then CONNECTs (`40`), and once answered (`40{…}`)
//!   emits `42["subscribe",{"topics":[…]}]`, answered by the event `42["subscribed",{…}]`
//!   with the JSON protocol's object. Deliveries are `42["message",{"topic":…,"seq":N,
//!   "data":…}]`: the JSON protocol's delivery as the event's argument, so it is read the same
//!   way. The server's heartbeat `2` is answered `3`; ringcast's `cursor` events and the offset
//!   it appends to the messages of a client of one topic (`42["message",{…},"<offset>"]`, its
//!   connection-state recovery) are of no interest here.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::nats::{NatsEvent, NatsParser};
use super::payload::{self, PayloadData};
use super::topic_index;

/// The protocol the server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// ringcast's JSON protocol, with per-topic sequence numbers.
    Ringcast,
    /// The same JSON protocol, served by loadtest/peers/uws-pubsub.js (uWebSockets.js).
    Uws,
    /// NATS over WebSocket (nats-server's `websocket` listener).
    Nats,
    /// Socket.IO v5 over an Engine.IO v4 WebSocket (ringcast's `/socket.io/`, or
    /// loadtest/peers/socketio-pubsub.js on the npm `socket.io` server).
    #[serde(rename = "socketio")]
    #[value(name = "socketio")]
    SocketIo,
}

impl Protocol {
    /// Whether deliveries carry the server's per-topic sequence number.
    pub fn has_sequence_numbers(self) -> bool {
        matches!(
            self,
            Protocol::Ringcast | Protocol::Uws | Protocol::SocketIo
        )
    }

    /// Whether the protocol's frames are binary (NATS) or text (JSON).
    pub fn is_binary(self) -> bool {
        self == Protocol::Nats
    }

    /// The bytes a subscriber sends to subscribe to `topic`; the server's acknowledgement is
    /// [`Incoming::Subscribed`]. NATS also needs its CONNECT first.
    pub fn subscribe(self, topic: &str) -> String {
        match self {
            Protocol::Ringcast | Protocol::Uws => {
                format!("{{\"op\":\"subscribe\",\"topics\":[\"{topic}\"]}}")
            }
            Protocol::Nats => format!("{NATS_CONNECT}SUB {topic} 1\r\nPING\r\n"),
            Protocol::SocketIo => format!("42[\"subscribe\",{{\"topics\":[\"{topic}\"]}}]"),
        }
    }

    /// Whether the server speaks first and the client must wait for it ([`Incoming::Opened`],
    /// Socket.IO's Engine.IO open packet) before its hello.
    pub fn server_speaks_first(self) -> bool {
        self == Protocol::SocketIo
    }

    /// The bytes a publisher sends once connected, and whether it must then wait for
    /// [`Incoming::Subscribed`] (the NATS PONG) before publishing.
    pub fn publisher_hello(self) -> Option<&'static str> {
        match self {
            Protocol::Ringcast | Protocol::Uws => None,
            Protocol::Nats => Some(NATS_CONNECT_PING),
            // The CONNECT to the main namespace, answered `40{…}`.
            Protocol::SocketIo => Some(SOCKETIO_CONNECT),
        }
    }

    /// The answer to [`Incoming::PingRequest`]: NATS's PONG, Engine.IO's pong packet.
    pub fn pong(self) -> &'static str {
        match self {
            Protocol::Nats => "PONG\r\n",
            Protocol::SocketIo => "3",
            Protocol::Ringcast | Protocol::Uws => {
                unreachable!("the JSON protocols have no ping of their own to answer")
            }
        }
    }

    /// Appends one publish of `data` (a JSON text) on `topic` to `output`. For the JSON
    /// protocols each publish is its own message; NATS publishes are a byte stream, so a
    /// publisher sends all those due at once in one frame, as NATS clients do.
    pub fn publish(self, topic: &str, data: &str, output: &mut String) {
        use std::fmt::Write as _;
        match self {
            Protocol::Ringcast | Protocol::Uws => {
                let _ = write!(
                    output,
                    "{{\"op\":\"publish\",\"topic\":\"{topic}\",\"data\":{data}}}"
                );
            }
            Protocol::Nats => {
                let _ = write!(output, "PUB {topic} {}\r\n{data}\r\n", data.len());
            }
            Protocol::SocketIo => {
                let _ = write!(
                    output,
                    "42[\"publish\",{{\"topic\":\"{topic}\",\"data\":{data}}}]"
                );
            }
        }
    }
}

/// Socket.IO's CONNECT to the main namespace `/`, with no auth payload.
const SOCKETIO_CONNECT: &str = "40";

/// verbose off: no +OK after every command; pedantic off; no headers (we send none).
const NATS_CONNECT: &str = "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":false}\r\n";
const NATS_CONNECT_PING: &str =
    "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":false}\r\nPING\r\n";

/// Something the server said, as far as a fanout client cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// The subscription took effect; `seq` is the topic's latest sequence number then (JSON
    /// protocols; 0 for NATS, which has none).
    Subscribed { topic: Option<u32>, seq: u64 },
    /// A message on one of our topics.
    Delivery {
        topic: u32,
        seq: Option<u64>,
        data: PayloadData,
    },
    /// The server wants an answer (NATS PING, Engine.IO ping): send [`Protocol::pong`].
    PingRequest,
    /// The server opened the session (Socket.IO: the Engine.IO open packet): send the hello.
    Opened,
    /// The server says the subscriber missed messages and must start over (`op: reset`).
    Reset,
    /// The server reported an error (`op: error`, NATS `-ERR`).
    Error(String),
    /// Anything else: a message on a topic not ours, data not ours, a malformed message.
    Unexpected,
    /// Expected and of no interest (NATS INFO, +OK, PONG beyond the first; Socket.IO acks,
    /// noops and ringcast's `cursor` events).
    Ignored,
}

/// A server message of the JSON protocol. `data` stays raw: it is the publisher's text.
#[derive(Deserialize)]
struct JsonMessage<'a> {
    #[serde(default, borrow)]
    op: Option<&'a str>,
    #[serde(default, borrow)]
    topic: Option<&'a str>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    reason: Option<String>,
}

/// Reads one text message of the JSON protocol.
pub fn decode_json(text: &[u8]) -> Incoming {
    let Ok(message) = serde_json::from_slice::<JsonMessage>(text) else {
        return Incoming::Unexpected;
    };
    match message.op {
        Some("subscribed") => match message.seq {
            Some(seq) => Incoming::Subscribed {
                topic: message.topic.and_then(topic_index),
                seq,
            },
            None => Incoming::Unexpected,
        },
        Some("reset") => Incoming::Reset,
        Some("error") => Incoming::Error(message.reason.unwrap_or_default()),
        Some(_) => Incoming::Unexpected,
        None => delivery(message.topic, message.seq, message.data.map(RawValue::get)),
    }
}

fn delivery(topic: Option<&str>, seq: Option<u64>, data: Option<&str>) -> Incoming {
    let topic = topic.and_then(topic_index);
    let data = data.and_then(|data| payload::decode(data.as_bytes()));
    match (topic, data) {
        (Some(topic), Some(data)) => Incoming::Delivery { topic, seq, data },
        _ => Incoming::Unexpected,
    }
}

/// Turns what the server sends into [`Incoming`] events, whatever the protocol.
pub struct Decoder {
    protocol: Protocol,
    nats: NatsParser,
}

impl Decoder {
    pub fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            nats: NatsParser::default(),
        }
    }

    /// Feeds one WebSocket data message's payload; calls `handle` for each event in it. A NATS
    /// frame may hold several protocol messages or part of one; the rest waits for the next.
    pub fn feed(&mut self, bytes: &[u8], handle: &mut impl FnMut(Incoming)) {
        match self.protocol {
            Protocol::Ringcast | Protocol::Uws => handle(decode_json(bytes)),
            Protocol::SocketIo => handle(socketio_incoming(decode_socketio(bytes))),
            Protocol::Nats => {
                self.nats.push(bytes);
                while let Some(event) = self.nats.next_event() {
                    handle(nats_incoming(event));
                }
            }
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Whether the NATS stream broke (a line we cannot parse): the connection is unusable.
    pub fn is_broken(&self) -> bool {
        self.nats.is_broken()
    }
}

fn nats_incoming(event: NatsEvent) -> Incoming {
    match event {
        NatsEvent::Message { subject, payload } => match std::str::from_utf8(payload) {
            Ok(text) => delivery(std::str::from_utf8(subject).ok(), None, Some(text)),
            Err(_) => Incoming::Unexpected,
        },
        NatsEvent::Ping => Incoming::PingRequest,
        NatsEvent::Pong => Incoming::Subscribed {
            topic: None,
            seq: 0,
        },
        NatsEvent::Error(reason) => Incoming::Error(reason),
        NatsEvent::Info | NatsEvent::Ok => Incoming::Ignored,
    }
}

/// One Engine.IO packet of a Socket.IO connection (one WebSocket text message), as far as a
/// fanout client cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketIoPacket<'a> {
    /// The Engine.IO open packet `0{…}`: the client may CONNECT now.
    Open,
    /// The Engine.IO ping `2`: answer `3`.
    Ping,
    /// The CONNECT to the main namespace was accepted: `40{…}`.
    Connected,
    /// The CONNECT was refused (`44…`) or the session closed (Engine.IO `1`).
    Refused,
    /// An event on the main namespace without acknowledgement id, `42["name",argument]`: the
    /// name and the raw text of its one argument (not yet checked as JSON; empty when none).
    Event { name: &'a [u8], argument: &'a [u8] },
    /// Expected and of no interest: acknowledgements (`43…`), noops (`6`), pongs (`3`).
    Ignored,
    /// Anything else: other namespaces, other packet types, malformed.
    Other,
}

/// Reads one Engine.IO packet as the servers under test send it. Only the event's frame is
/// taken apart here; its argument is read by the JSON protocol's decoder or scanner, which
/// check it in full.
pub fn decode_socketio(packet: &[u8]) -> SocketIoPacket<'_> {
    match packet {
        [b'0', b'{', ..] => SocketIoPacket::Open,
        b"2" => SocketIoPacket::Ping,
        b"1" | [b'4', b'4', ..] => SocketIoPacket::Refused,
        b"40" | [b'4', b'0', b'{', ..] => SocketIoPacket::Connected,
        [b'4', b'2', b'[', b'"', rest @ ..] => {
            socketio_event(rest).unwrap_or(SocketIoPacket::Other)
        }
        b"3" | b"6" | [b'4', b'3', ..] => SocketIoPacket::Ignored,
        _ => SocketIoPacket::Other,
    }
}

/// `name",argument]` (or `name"]`): the rest of an event after its opening `42["`.
fn socketio_event(rest: &[u8]) -> Option<SocketIoPacket<'_>> {
    let inner = rest.strip_suffix(b"]")?;
    let name_end = inner.iter().position(|byte| *byte == b'"')?;
    let (name, after) = inner.split_at(name_end);
    if name.contains(&b'\\') {
        return None;
    }
    let argument = match &after[1..] {
        [] => &[][..],
        [b',', argument @ ..] => without_offset(argument),
        _ => return None,
    };
    Some(SocketIoPacket::Event { name, argument })
}

/// The event's first argument without the recovery offset ringcast appends to the messages of
/// a client of one topic (`{…},"<offset>"`; an offset is base64url and dots, so it holds
/// neither a quote nor a comma).
fn without_offset(arguments: &[u8]) -> &[u8] {
    let Some(inner) = arguments.strip_suffix(b"\"") else {
        return arguments;
    };
    let Some(quote) = inner.iter().rposition(|byte| *byte == b'"') else {
        return arguments;
    };
    let offset = &inner[quote + 1..];
    let is_offset = offset
        .iter()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
    match inner[..quote].strip_suffix(b",") {
        Some(first) if is_offset => first,
        _ => arguments,
    }
}

/// Ringcast's event carrying its connection-state recovery offset, unused by the load test.
pub const SOCKETIO_CURSOR_EVENT: &[u8] = b"cursor";

fn socketio_incoming(packet: SocketIoPacket<'_>) -> Incoming {
    match packet {
        SocketIoPacket::Open => Incoming::Opened,
        SocketIoPacket::Ping => Incoming::PingRequest,
        // The CONNECT's answer acknowledges a publisher's hello, as NATS's PONG does.
        SocketIoPacket::Connected => Incoming::Subscribed {
            topic: None,
            seq: 0,
        },
        SocketIoPacket::Refused => Incoming::Error("socket.io connection refused".into()),
        SocketIoPacket::Event { name, .. } if name == SOCKETIO_CURSOR_EVENT => Incoming::Ignored,
        // `message`, `subscribed`, `reset`, `error`: the JSON protocol's object as argument.
        SocketIoPacket::Event { argument, .. } => decode_json(argument),
        SocketIoPacket::Ignored => Incoming::Ignored,
        SocketIoPacket::Other => Incoming::Unexpected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::payload::encode;

    fn data(counter: u64) -> (PayloadData, String) {
        let data = PayloadData {
            counter,
            sent_ns: 99,
            step: 1,
        };
        let mut text = String::new();
        encode(data, 100, &mut text);
        (data, text)
    }

    /// ringcast's server messages decode into the events the subscriber acts on.
    #[test]
    fn decodes_ringcast_messages() {
        let (expected, text) = data(7);
        let message = format!("{{\"topic\":\"T0003\",\"seq\":48,\"data\":{text}}}");
        assert_eq!(
            decode_json(message.as_bytes()),
            Incoming::Delivery {
                topic: 3,
                seq: Some(48),
                data: expected
            }
        );
        let subscribed = br#"{"op":"subscribed","topic":"T0003","seq":41}"#;
        assert_eq!(
            decode_json(subscribed),
            Incoming::Subscribed {
                topic: Some(3),
                seq: 41
            }
        );
        let error = br#"{"op":"error","reason":"unknown op"}"#;
        assert_eq!(decode_json(error), Incoming::Error("unknown op".into()));
        assert_eq!(
            decode_json(br#"{"op":"reset","topic":"T0003"}"#),
            Incoming::Reset
        );
        // Someone else's data, a topic not ours, a subscribed without seq, garbage.
        let foreign = br#"{"topic":"T0003","seq":1,"data":{"price":1.5}}"#;
        assert_eq!(decode_json(foreign), Incoming::Unexpected);
        let message = format!("{{\"topic\":\"AAPL\",\"seq\":1,\"data\":{text}}}");
        assert_eq!(decode_json(message.as_bytes()), Incoming::Unexpected);
        assert_eq!(
            decode_json(br#"{"op":"subscribed","topic":"T0003"}"#),
            Incoming::Unexpected
        );
        assert_eq!(decode_json(b"{\"topic\":"), Incoming::Unexpected);
    }

    /// Client messages are what the protocol says, byte for byte.
    #[test]
    fn encodes_client_messages() {
        assert_eq!(
            Protocol::Ringcast.subscribe("T0001"),
            r#"{"op":"subscribe","topics":["T0001"]}"#
        );
        assert_eq!(
            Protocol::Nats.subscribe("T0001"),
            "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":false}\r\n\
             SUB T0001 1\r\nPING\r\n"
        );
        let mut output = String::new();
        Protocol::Uws.publish("T0002", "{\"a\":1}", &mut output);
        assert_eq!(output, r#"{"op":"publish","topic":"T0002","data":{"a":1}}"#);
        output.clear();
        Protocol::Nats.publish("T0002", "{\"a\":1}", &mut output);
        Protocol::Nats.publish("T0002", "{}", &mut output);
        assert_eq!(output, "PUB T0002 7\r\n{\"a\":1}\r\nPUB T0002 2\r\n{}\r\n");
        assert!(
            Protocol::Nats
                .publisher_hello()
                .unwrap()
                .ends_with("PING\r\n")
        );
        assert_eq!(Protocol::Ringcast.publisher_hello(), None);
    }

    /// Socket.IO client packets are what the protocol says, byte for byte.
    #[test]
    fn encodes_socketio_client_packets() {
        assert_eq!(
            Protocol::SocketIo.subscribe("T0001"),
            r#"42["subscribe",{"topics":["T0001"]}]"#
        );
        let mut output = String::new();
        Protocol::SocketIo.publish("T0002", "{\"a\":1}", &mut output);
        assert_eq!(output, r#"42["publish",{"topic":"T0002","data":{"a":1}}]"#);
        assert_eq!(Protocol::SocketIo.publisher_hello(), Some("40"));
        assert_eq!(Protocol::SocketIo.pong(), "3");
        assert!(Protocol::SocketIo.server_speaks_first());
        assert!(!Protocol::Ringcast.server_speaks_first());
        assert!(Protocol::SocketIo.has_sequence_numbers());
    }

    /// What the Socket.IO servers send decodes into the events the clients act on: the
    /// delivery inside `message` as the JSON protocol's delivery, ringcast's `cursor` events
    /// and acknowledgements ignored, refusals and malformed packets told apart.
    #[test]
    fn decodes_socketio_packets() {
        let (expected, text) = data(7);
        let open = br#"0{"sid":"x","upgrades":[],"pingInterval":25000,"pingTimeout":20000}"#;
        let message = format!("42[\"message\",{{\"topic\":\"T0003\",\"seq\":48,\"data\":{text}}}]");
        let with_offset = format!(
            "42[\"message\",{{\"topic\":\"T0003\",\"seq\":48,\"data\":{text}}},\"AbC-_9.VDAwMDM\"]"
        );
        let subscribed = br#"42["subscribed",{"op":"subscribed","topic":"T0003","seq":41}]"#;
        let cases: [(&[u8], Incoming); 12] = [
            (open, Incoming::Opened),
            (b"2", Incoming::PingRequest),
            (
                b"40",
                Incoming::Subscribed {
                    topic: None,
                    seq: 0,
                },
            ),
            (
                br#"40{"sid":"y","pid":"z"}"#,
                Incoming::Subscribed {
                    topic: None,
                    seq: 0,
                },
            ),
            (
                message.as_bytes(),
                Incoming::Delivery {
                    topic: 3,
                    seq: Some(48),
                    data: expected,
                },
            ),
            (
                with_offset.as_bytes(),
                Incoming::Delivery {
                    topic: 3,
                    seq: Some(48),
                    data: expected,
                },
            ),
            (
                subscribed,
                Incoming::Subscribed {
                    topic: Some(3),
                    seq: 41,
                },
            ),
            (br#"42["cursor","1.2.VDAwMDM"]"#, Incoming::Ignored),
            (br#"431[{"op":"published","seq":3}]"#, Incoming::Ignored),
            (
                br#"44{"message":"unauthorized"}"#,
                Incoming::Error("socket.io connection refused".into()),
            ),
            (br#"42["message",{"topic":"T0003"}"#, Incoming::Unexpected),
            (br#"42/chat,["message",{}]"#, Incoming::Unexpected),
        ];
        for (packet, incoming) in cases {
            let mut decoder = Decoder::new(Protocol::SocketIo);
            let mut events = Vec::new();
            decoder.feed(packet, &mut |event| events.push(event));
            assert_eq!(events, [incoming], "{}", String::from_utf8_lossy(packet));
        }
        assert_eq!(
            decode_socketio(br#"42["reset"]"#),
            SocketIoPacket::Event {
                name: b"reset",
                argument: b""
            }
        );
        assert_eq!(decode_socketio(br#"42["a\"b",1]"#), SocketIoPacket::Other);
        assert_eq!(decode_socketio(b"1"), SocketIoPacket::Refused);
    }

    /// A NATS stream split across frames anywhere yields each delivery once, in order.
    #[test]
    fn decodes_nats_across_frames() {
        let (first, first_text) = data(1);
        let (second, second_text) = data(2);
        let stream = format!(
            "INFO {{\"server_id\":\"x\"}} \r\nPONG\r\nMSG T0005 1 {}\r\n{first_text}\r\n\
             PING\r\nMSG T0005 1 {}\r\n{second_text}\r\n",
            first_text.len(),
            second_text.len()
        );
        for split in 1..stream.len() {
            let mut decoder = Decoder::new(Protocol::Nats);
            let mut events = Vec::new();
            let (head, tail) = stream.as_bytes().split_at(split);
            decoder.feed(head, &mut |event| events.push(event));
            decoder.feed(tail, &mut |event| events.push(event));
            assert_eq!(
                events,
                [
                    Incoming::Ignored,
                    Incoming::Subscribed {
                        topic: None,
                        seq: 0
                    },
                    Incoming::Delivery {
                        topic: 5,
                        seq: None,
                        data: first
                    },
                    Incoming::PingRequest,
                    Incoming::Delivery {
                        topic: 5,
                        seq: None,
                        data: second
                    },
                ],
                "split at {split}"
            );
            assert!(!decoder.is_broken());
        }
    }
}
