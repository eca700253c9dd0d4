//! Engine.IO v4 packets (socketio/engine.io-protocol, revision 4): what Socket.IO clients speak
//! under Socket.IO's own packets, over WebSocket frames or long-polling bodies.
//!
//! A packet is one type digit and its data: `0` open, `1` close, `2` ping, `3` pong, `4`
//! message, `5` upgrade, `6` noop. Over WebSocket each text frame is one packet and a binary
//! frame is a message packet with binary data. Over long polling a body holds packets joined by
//! the record separator `\x1e`, binary data written `b<base64>`; a POST is answered `ok`.
//!
//! Parsing borrows from the input and allocates nothing; base64 is decoded by the caller into
//! its own bounded buffer ([`decode_binary_into`]). Every body is held to [`EngineLimits`]:
//! the `maxPayload` the open packet announces, and a count of packets per body.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The record separator between the packets of a long-polling body.
pub const SEPARATOR: u8 = 0x1e;

/// The protocol revision in the handshake query (`EIO=4`).
pub const PROTOCOL_REVISION: &str = "4";

/// The body that acknowledges a long-polling POST.
pub const POST_ACKNOWLEDGED: &[u8] = b"ok";

/// What one long-polling body may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineLimits {
    /// Bytes of one body, and of one WebSocket packet (announced as `maxPayload`).
    pub payload_bytes_max: usize,
    /// Packets in one body.
    pub packets_per_payload_max: usize,
}

impl Default for EngineLimits {
    /// The reference server's `maxHttpBufferSize` (1 MB), and a packet count no honest client
    /// comes near (socket.io-client sends what queued while a POST was in flight).
    fn default() -> Self {
        EngineLimits {
            payload_bytes_max: 1_000_000,
            packets_per_payload_max: 1_024,
        }
    }
}

/// Why a packet or a body was refused. Each is answered `400 Bad Request` over polling and
/// closes the session over WebSocket (close 1002 for a framing fault, 1009 for size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineError {
    /// An empty packet: not even a type.
    Empty,
    /// A type that is not one of the digits 0 to 6.
    UnknownType(u8),
    /// A body or a packet longer than `payload_bytes_max`.
    TooLong,
    /// More packets in one body than `packets_per_payload_max`.
    TooManyPackets,
    /// A body or a text packet that is not UTF-8.
    NotUtf8,
    /// `b` data that is not base64.
    BadBase64,
    /// Decoded binary data longer than the caller's bound.
    BinaryTooLong,
}

impl EngineError {
    pub fn reason(self) -> &'static str {
        match self {
            EngineError::Empty => "an empty Engine.IO packet",
            EngineError::UnknownType(_) => "an Engine.IO packet type other than 0 to 6",
            EngineError::TooLong => "an Engine.IO payload longer than maxPayload",
            EngineError::TooManyPackets => "too many Engine.IO packets in one payload",
            EngineError::NotUtf8 => "an Engine.IO payload that is not UTF-8",
            EngineError::BadBase64 => "binary Engine.IO data that is not base64",
            EngineError::BinaryTooLong => "binary Engine.IO data longer than allowed",
        }
    }
}

/// The type of an Engine.IO packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketType {
    Open,
    Close,
    Ping,
    Pong,
    Message,
    Upgrade,
    Noop,
}

impl PacketType {
    /// The type written as its digit.
    pub fn from_digit(digit: u8) -> Result<PacketType, EngineError> {
        Ok(match digit {
            b'0' => PacketType::Open,
            b'1' => PacketType::Close,
            b'2' => PacketType::Ping,
            b'3' => PacketType::Pong,
            b'4' => PacketType::Message,
            b'5' => PacketType::Upgrade,
            b'6' => PacketType::Noop,
            other => return Err(EngineError::UnknownType(other)),
        })
    }

    pub fn digit(self) -> u8 {
        match self {
            PacketType::Open => b'0',
            PacketType::Close => b'1',
            PacketType::Ping => b'2',
            PacketType::Pong => b'3',
            PacketType::Message => b'4',
            PacketType::Upgrade => b'5',
            PacketType::Noop => b'6',
        }
    }
}

/// The data of a packet, borrowed from the frame or body it came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketData<'a> {
    /// Text after the type digit (`probe` of `2probe`, a Socket.IO packet of `4…`).
    Text(&'a str),
    /// Binary data as a WebSocket binary frame carried it.
    Binary(&'a [u8]),
    /// Binary data of a polling body, still base64 (without its `b`): see
    /// [`decode_binary_into`].
    Base64(&'a str),
}

/// One Engine.IO packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub kind: PacketType,
    pub data: PacketData<'a>,
}

/// The packet of one WebSocket text frame (already checked to be UTF-8 by the frame layer).
pub fn parse_text_packet<'a>(
    text: &'a str,
    limits: &EngineLimits,
) -> Result<Packet<'a>, EngineError> {
    if text.len() > limits.payload_bytes_max {
        return Err(EngineError::TooLong);
    }
    let (&digit, _) = text.as_bytes().split_first().ok_or(EngineError::Empty)?;
    Ok(Packet {
        kind: PacketType::from_digit(digit)?,
        // The digit is ASCII, so the rest starts on a character boundary.
        data: PacketData::Text(&text[1..]),
    })
}

/// The packet of one WebSocket binary frame: always a message with binary data.
pub fn parse_binary_packet<'a>(
    bytes: &'a [u8],
    limits: &EngineLimits,
) -> Result<Packet<'a>, EngineError> {
    if bytes.len() > limits.payload_bytes_max {
        return Err(EngineError::TooLong);
    }
    Ok(Packet {
        kind: PacketType::Message,
        data: PacketData::Binary(bytes),
    })
}

/// The packets of a long-polling body, in order. The whole body is checked first (length,
/// UTF-8, packet count), so a bad body is refused before any of its packets is acted on.
pub fn parse_payload<'a>(
    body: &'a [u8],
    limits: &EngineLimits,
) -> Result<PayloadPackets<'a>, EngineError> {
    if body.len() > limits.payload_bytes_max {
        return Err(EngineError::TooLong);
    }
    let text = simdutf8::basic::from_utf8(body).map_err(|_| EngineError::NotUtf8)?;
    let separators = body.iter().filter(|&&byte| byte == SEPARATOR).count();
    if separators >= limits.packets_per_payload_max {
        return Err(EngineError::TooManyPackets);
    }
    for record in text.split(SEPARATOR as char) {
        parse_record(record)?;
    }
    Ok(PayloadPackets {
        records: text.split(SEPARATOR as char),
    })
}

/// The packets of a body [`parse_payload`] checked.
#[derive(Clone, Debug)]
pub struct PayloadPackets<'a> {
    records: std::str::Split<'a, char>,
}

impl<'a> Iterator for PayloadPackets<'a> {
    type Item = Packet<'a>;

    fn next(&mut self) -> Option<Packet<'a>> {
        // Every record parsed when the body was checked.
        self.records
            .next()
            .and_then(|record| parse_record(record).ok())
    }
}

/// One record of a polling body: a packet, or `b<base64>` for a binary message.
fn parse_record(record: &str) -> Result<Packet<'_>, EngineError> {
    let (&first, _) = record.as_bytes().split_first().ok_or(EngineError::Empty)?;
    if first == b'b' {
        let encoded = &record[1..];
        if !is_base64(encoded) {
            return Err(EngineError::BadBase64);
        }
        return Ok(Packet {
            kind: PacketType::Message,
            data: PacketData::Base64(encoded),
        });
    }
    Ok(Packet {
        kind: PacketType::from_digit(first)?,
        data: PacketData::Text(&record[1..]),
    })
}

/// Whether `text` is standard, padded base64 (what the reference client writes).
fn is_base64(text: &str) -> bool {
    text.len().is_multiple_of(4)
        && text.bytes().enumerate().all(|(index, byte)| {
            byte.is_ascii_alphanumeric()
                || byte == b'+'
                || byte == b'/'
                || (byte == b'=' && index + 2 >= text.len())
        })
}

/// Decodes base64 data of a polling body into `out` (cleared first), refusing more than
/// `bytes_max` decoded bytes before decoding any.
pub fn decode_binary_into(
    encoded: &str,
    bytes_max: usize,
    out: &mut Vec<u8>,
) -> Result<(), EngineError> {
    out.clear();
    if encoded.len() / 4 * 3 > bytes_max.saturating_add(2) {
        return Err(EngineError::BinaryTooLong);
    }
    BASE64
        .decode_vec(encoded, out)
        .map_err(|_| EngineError::BadBase64)?;
    if out.len() > bytes_max {
        out.clear();
        return Err(EngineError::BinaryTooLong);
    }
    Ok(())
}

/// What the open packet tells the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenSettings<'a> {
    /// The session id: the `sid` of every later polling request.
    pub session_id: &'a str,
    /// Whether the client may upgrade to WebSocket (false once it is on WebSocket).
    pub upgrade_to_websocket: bool,
    /// How often the server pings.
    pub ping_interval_ms: u64,
    /// How long after a ping the server waits for the pong.
    pub ping_timeout_ms: u64,
    pub payload_bytes_max: usize,
}

/// `0{"sid":…,"upgrades":[…],"pingInterval":…,"pingTimeout":…,"maxPayload":…}`. The session
/// id is the server's own (URL-safe characters), so it is written without escaping.
pub fn write_open(settings: &OpenSettings<'_>, out: &mut Vec<u8>) {
    debug_assert!(
        settings
            .session_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    );
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(b"0{\"sid\":\"");
    out.extend_from_slice(settings.session_id.as_bytes());
    out.extend_from_slice(if settings.upgrade_to_websocket {
        b"\",\"upgrades\":[\"websocket\"],\"pingInterval\":"
    } else {
        b"\",\"upgrades\":[],\"pingInterval\":"
    });
    out.extend_from_slice(number.format(settings.ping_interval_ms).as_bytes());
    out.extend_from_slice(b",\"pingTimeout\":");
    out.extend_from_slice(number.format(settings.ping_timeout_ms).as_bytes());
    out.extend_from_slice(b",\"maxPayload\":");
    out.extend_from_slice(number.format(settings.payload_bytes_max).as_bytes());
    out.push(b'}');
}

/// One text packet: its type digit and `data`. In a polling body, packets after the first
/// are preceded by [`SEPARATOR`] (see [`write_separator_if_needed`]).
pub fn write_text_packet(kind: PacketType, data: &[u8], out: &mut Vec<u8>) {
    out.push(kind.digit());
    out.extend_from_slice(data);
}

/// A binary message in a polling body: `b` and the data in base64.
pub fn write_binary_for_polling(data: &[u8], out: &mut Vec<u8>) {
    out.push(b'b');
    let start = out.len();
    out.resize(
        start + base64::encoded_len(data.len(), true).unwrap_or(0),
        0,
    );
    let written = BASE64.encode_slice(data, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
}

/// The separator before a packet that is not the first of a polling body.
pub fn write_separator_if_needed(body_start: usize, out: &mut Vec<u8>) {
    if out.len() > body_start {
        out.push(SEPARATOR);
    }
}

/// The transport a handshake or a request names (`transport=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Polling,
    WebSocket,
}

impl Transport {
    pub fn parse(name: &str) -> Option<Transport> {
        match name {
            "polling" => Some(Transport::Polling),
            "websocket" => Some(Transport::WebSocket),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> EngineLimits {
        EngineLimits::default()
    }

    #[test]
    fn text_packets_of_every_type_parse() {
        for (text, kind, data) in [
            ("0", PacketType::Open, ""),
            ("1", PacketType::Close, ""),
            ("2probe", PacketType::Ping, "probe"),
            ("3probe", PacketType::Pong, "probe"),
            ("42[\"message\",1]", PacketType::Message, "2[\"message\",1]"),
            ("5", PacketType::Upgrade, ""),
            ("6", PacketType::Noop, ""),
            ("4héllo", PacketType::Message, "héllo"),
        ] {
            let packet = parse_text_packet(text, &limits()).unwrap();
            assert_eq!(packet.kind, kind, "{text}");
            assert_eq!(packet.data, PacketData::Text(data), "{text}");
            let mut written = Vec::new();
            write_text_packet(kind, data.as_bytes(), &mut written);
            assert_eq!(written, text.as_bytes());
        }
    }

    #[test]
    fn bad_text_packets_are_refused() {
        assert_eq!(parse_text_packet("", &limits()), Err(EngineError::Empty));
        assert_eq!(
            parse_text_packet("7", &limits()),
            Err(EngineError::UnknownType(b'7'))
        );
        assert_eq!(
            parse_text_packet("x", &limits()),
            Err(EngineError::UnknownType(b'x'))
        );
        let small = EngineLimits {
            payload_bytes_max: 4,
            ..limits()
        };
        assert_eq!(
            parse_text_packet("4abcd", &small),
            Err(EngineError::TooLong)
        );
        assert!(parse_text_packet("4abc", &small).is_ok());
        assert_eq!(
            parse_binary_packet(&[0; 5], &small),
            Err(EngineError::TooLong)
        );
    }

    #[test]
    fn a_polling_body_splits_into_its_packets() {
        let body = b"4hello\x1e2\x1ebAQID\x1e40";
        let packets: Vec<_> = parse_payload(body, &limits()).unwrap().collect();
        assert_eq!(
            packets,
            [
                Packet {
                    kind: PacketType::Message,
                    data: PacketData::Text("hello")
                },
                Packet {
                    kind: PacketType::Ping,
                    data: PacketData::Text("")
                },
                Packet {
                    kind: PacketType::Message,
                    data: PacketData::Base64("AQID")
                },
                Packet {
                    kind: PacketType::Message,
                    data: PacketData::Text("0")
                },
            ]
        );
        let mut decoded = Vec::new();
        decode_binary_into("AQID", 16, &mut decoded).unwrap();
        assert_eq!(decoded, [1, 2, 3]);
    }

    #[test]
    fn a_bad_record_refuses_the_whole_body() {
        for (body, error) in [
            (&b""[..], EngineError::Empty),
            (b"4a\x1e\x1e4b", EngineError::Empty),
            (b"4a\x1e", EngineError::Empty),
            (b"4a\x1e9", EngineError::UnknownType(b'9')),
            (b"b!!!!", EngineError::BadBase64),
            (b"bAQI", EngineError::BadBase64),
            (b"bA=QI", EngineError::BadBase64),
            (b"4\xff", EngineError::NotUtf8),
        ] {
            assert_eq!(
                parse_payload(body, &limits()).map(|_| ()),
                Err(error),
                "{body:?}"
            );
        }
    }

    #[test]
    fn a_body_is_held_to_its_limits() {
        let few = EngineLimits {
            payload_bytes_max: 1_000,
            packets_per_payload_max: 3,
        };
        assert!(parse_payload(b"2\x1e2\x1e2", &few).is_ok());
        assert_eq!(
            parse_payload(b"2\x1e2\x1e2\x1e2", &few).map(|_| ()),
            Err(EngineError::TooManyPackets)
        );
        let body = vec![b'6'; 1_001];
        assert_eq!(
            parse_payload(&body, &few).map(|_| ()),
            Err(EngineError::TooLong)
        );
    }

    #[test]
    fn binary_data_round_trips_through_a_polling_body_within_its_bound() {
        let data: Vec<u8> = (0..=255).collect();
        let mut body = Vec::new();
        write_binary_for_polling(&data, &mut body);
        let packet = parse_payload(&body, &limits()).unwrap().next().unwrap();
        let PacketData::Base64(encoded) = packet.data else {
            panic!("{packet:?}");
        };
        let mut decoded = Vec::new();
        decode_binary_into(encoded, 256, &mut decoded).unwrap();
        assert_eq!(decoded, data);
        assert_eq!(
            decode_binary_into(encoded, 255, &mut decoded),
            Err(EngineError::BinaryTooLong)
        );
        assert!(decoded.is_empty());
        assert_eq!(
            decode_binary_into(encoded, 10, &mut decoded),
            Err(EngineError::BinaryTooLong)
        );
    }

    #[test]
    fn the_open_packet_says_what_the_reference_server_says() {
        let mut out = Vec::new();
        write_open(
            &OpenSettings {
                session_id: "lv_VI97HAXpY6yYWAAAC",
                upgrade_to_websocket: true,
                ping_interval_ms: 25_000,
                ping_timeout_ms: 20_000,
                payload_bytes_max: 1_000_000,
            },
            &mut out,
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
    }

    #[test]
    fn packets_of_a_polling_answer_are_separated() {
        let mut out = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        let body_start = out.len();
        for data in [&b"2[\"a\"]"[..], b"2[\"b\"]"] {
            write_separator_if_needed(body_start, &mut out);
            write_text_packet(PacketType::Message, data, &mut out);
        }
        write_separator_if_needed(body_start, &mut out);
        write_binary_for_polling(&[1, 2, 3], &mut out);
        assert_eq!(&out[body_start..], b"42[\"a\"]\x1e42[\"b\"]\x1ebAQID");
    }

    #[test]
    fn transports_are_named_as_the_client_names_them() {
        assert_eq!(Transport::parse("polling"), Some(Transport::Polling));
        assert_eq!(Transport::parse("websocket"), Some(Transport::WebSocket));
        assert_eq!(Transport::parse("webtransport"), None);
    }

    proptest::proptest! {
        /// Any body is read or refused as a whole; the packets of one that is read re-encode to
        /// the body.
        #[test]
        fn any_body_is_read_or_refused(bytes in proptest::collection::vec(
            proptest::sample::select(b"0123456789b4AQID=x\x1e\xff".to_vec()), 0..48)) {
            if let Ok(packets) = parse_payload(&bytes, &limits()) {
                let mut out = Vec::new();
                for packet in packets {
                    write_separator_if_needed(0, &mut out);
                    match packet.data {
                        PacketData::Text(text) => write_text_packet(packet.kind, text.as_bytes(), &mut out),
                        PacketData::Base64(encoded) => {
                            out.push(b'b');
                            out.extend_from_slice(encoded.as_bytes());
                        }
                        PacketData::Binary(_) => proptest::prop_assert!(false, "binary in a body"),
                    }
                }
                proptest::prop_assert_eq!(out, bytes);
            }
        }
    }
}
