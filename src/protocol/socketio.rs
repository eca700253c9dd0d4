//! Socket.IO v5 packets (socketio/socket-io-protocol, revision 5), carried in Engine.IO message
//! packets ([`super::engineio`]).
//!
//! A packet is `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`: `0` CONNECT, `1`
//! DISCONNECT, `2` EVENT, `3` ACK, `4` CONNECT_ERROR, `5` BINARY_EVENT, `6` BINARY_ACK. The
//! namespace is written only when it is not `/`. An EVENT's JSON is an array whose first item
//! is the event's name; an ACK's is the array of the acknowledgement's arguments.
//!
//! This codec reads the packet's frame and leaves its JSON as text: the endpoint parses it with
//! the broker's bounded JSON reader, like every other JSON a client sends. Binary attachments
//! are read as a count only; ringcast's messages are JSON, and the endpoint refuses them.

/// What one Socket.IO packet may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketLimits {
    /// Bytes of a namespace name.
    pub namespace_bytes_max: usize,
    /// Binary attachments announced by one packet.
    pub attachments_max: u32,
}

impl Default for SocketLimits {
    fn default() -> Self {
        SocketLimits {
            namespace_bytes_max: 128,
            attachments_max: 16,
        }
    }
}

/// Why a packet was refused: the session ends (the reference server closes it too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketError {
    Empty,
    /// A type that is not one of the digits 0 to 6.
    UnknownType(u8),
    /// A BINARY_EVENT or BINARY_ACK without `<count>-`, or a count past the limit.
    BadAttachments,
    /// A namespace longer than `namespace_bytes_max`, or one not ended by `,`.
    BadNamespace,
    /// An ack id that is not a number below 2^53 (JavaScript's safe integers).
    BadAckId,
    /// Data that cannot be this type's: none where some is needed, an EVENT that is not an
    /// array, a CONNECT that is not an object, anything after a DISCONNECT.
    BadData,
}

impl SocketError {
    pub fn reason(self) -> &'static str {
        match self {
            SocketError::Empty => "an empty Socket.IO packet",
            SocketError::UnknownType(_) => "a Socket.IO packet type other than 0 to 6",
            SocketError::BadAttachments => {
                "a Socket.IO attachment count that is missing or too large"
            }
            SocketError::BadNamespace => {
                "a Socket.IO namespace that is too long or not ended by a comma"
            }
            SocketError::BadAckId => "a Socket.IO ack id that is not a safe integer",
            SocketError::BadData => "Socket.IO data that does not fit the packet's type",
        }
    }
}

/// The type of a Socket.IO packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketPacketType {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

impl SocketPacketType {
    fn from_digit(digit: u8) -> Result<SocketPacketType, SocketError> {
        Ok(match digit {
            b'0' => SocketPacketType::Connect,
            b'1' => SocketPacketType::Disconnect,
            b'2' => SocketPacketType::Event,
            b'3' => SocketPacketType::Ack,
            b'4' => SocketPacketType::ConnectError,
            b'5' => SocketPacketType::BinaryEvent,
            b'6' => SocketPacketType::BinaryAck,
            other => return Err(SocketError::UnknownType(other)),
        })
    }

    pub fn digit(self) -> u8 {
        match self {
            SocketPacketType::Connect => b'0',
            SocketPacketType::Disconnect => b'1',
            SocketPacketType::Event => b'2',
            SocketPacketType::Ack => b'3',
            SocketPacketType::ConnectError => b'4',
            SocketPacketType::BinaryEvent => b'5',
            SocketPacketType::BinaryAck => b'6',
        }
    }

    fn is_binary(self) -> bool {
        matches!(
            self,
            SocketPacketType::BinaryEvent | SocketPacketType::BinaryAck
        )
    }
}

/// The main namespace, which a packet names by not naming any.
pub const MAIN_NAMESPACE: &str = "/";

/// The largest ack id: JavaScript's `Number.MAX_SAFE_INTEGER`.
pub const ACK_ID_MAX: u64 = (1 << 53) - 1;

/// One Socket.IO packet, borrowed from the Engine.IO packet's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketPacket<'a> {
    pub kind: SocketPacketType,
    /// Binary attachments announced (BINARY_EVENT and BINARY_ACK only; 0 otherwise).
    pub attachments: u32,
    pub namespace: &'a str,
    pub ack_id: Option<u64>,
    /// The JSON text, unparsed; `None` when the packet has none.
    pub data: Option<&'a str>,
}

/// Reads one packet.
pub fn parse<'a>(text: &'a str, limits: &SocketLimits) -> Result<SocketPacket<'a>, SocketError> {
    let (&digit, _) = text.as_bytes().split_first().ok_or(SocketError::Empty)?;
    let kind = SocketPacketType::from_digit(digit)?;
    let mut rest = &text[1..];
    let mut attachments = 0;
    if kind.is_binary() {
        let (count, after) = rest.split_once('-').ok_or(SocketError::BadAttachments)?;
        attachments = parse_decimal(count, u64::from(limits.attachments_max))
            .and_then(|count| u32::try_from(count).ok())
            .ok_or(SocketError::BadAttachments)?;
        rest = after;
    }
    let mut namespace = MAIN_NAMESPACE;
    if rest.starts_with('/') {
        let end = rest
            .bytes()
            .take(limits.namespace_bytes_max + 1)
            .position(|byte| byte == b',');
        match end {
            Some(end) => {
                namespace = &rest[..end];
                rest = &rest[end + 1..];
            }
            // `/custom` alone: a namespace ends the packet only when no data follows.
            None if rest.len() <= limits.namespace_bytes_max && !rest.contains(['[', '{']) => {
                namespace = rest;
                rest = "";
            }
            None => return Err(SocketError::BadNamespace),
        }
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack_id = match digits {
        0 => None,
        _ => Some(parse_decimal(&rest[..digits], ACK_ID_MAX).ok_or(SocketError::BadAckId)?),
    };
    rest = &rest[digits..];
    let data = (!rest.is_empty()).then_some(rest);
    check_data(kind, ack_id, data)?;
    Ok(SocketPacket {
        kind,
        attachments,
        namespace,
        ack_id,
        data,
    })
}

/// The packet's data, as far as its first byte tells, fits its type (the JSON inside is the
/// endpoint's to parse).
fn check_data(
    kind: SocketPacketType,
    ack_id: Option<u64>,
    data: Option<&str>,
) -> Result<(), SocketError> {
    let first = data.and_then(|data| data.bytes().next());
    let fits = match kind {
        SocketPacketType::Connect => ack_id.is_none() && matches!(first, None | Some(b'{')),
        SocketPacketType::Disconnect => ack_id.is_none() && first.is_none(),
        SocketPacketType::Event | SocketPacketType::BinaryEvent => first == Some(b'['),
        SocketPacketType::Ack | SocketPacketType::BinaryAck => {
            ack_id.is_some() && first == Some(b'[')
        }
        SocketPacketType::ConnectError => ack_id.is_none() && first.is_some(),
    };
    if fits {
        Ok(())
    } else {
        Err(SocketError::BadData)
    }
}

/// A decimal number of at most `maximum`, without sign, leading `+` or leading zeros (but `0`).
fn parse_decimal(text: &str, maximum: u64) -> Option<u64> {
    let well_formed = !text.is_empty()
        && text.bytes().all(|byte| byte.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !well_formed || text.len() > 16 {
        return None;
    }
    text.parse::<u64>().ok().filter(|&number| number <= maximum)
}

/// The packet's head: type, namespace (when not `/`, followed by `,`) and ack id; the JSON
/// follows it.
pub fn write_head(kind: SocketPacketType, namespace: &str, ack_id: Option<u64>, out: &mut Vec<u8>) {
    out.push(kind.digit());
    if namespace != MAIN_NAMESPACE {
        out.extend_from_slice(namespace.as_bytes());
        out.push(b',');
    }
    if let Some(ack_id) = ack_id {
        out.extend_from_slice(itoa::Buffer::new().format(ack_id).as_bytes());
    }
}

/// The answer to CONNECT: `0{"sid":…,"pid":…}` (`pid` names the session for connection-state
/// recovery). Both ids are the server's own (URL-safe characters), written without escaping.
pub fn write_connected(
    namespace: &str,
    session_id: &str,
    recovery_id: Option<&str>,
    out: &mut Vec<u8>,
) {
    write_head(SocketPacketType::Connect, namespace, None, out);
    out.extend_from_slice(b"{\"sid\":\"");
    out.extend_from_slice(session_id.as_bytes());
    if let Some(recovery_id) = recovery_id {
        out.extend_from_slice(b"\",\"pid\":\"");
        out.extend_from_slice(recovery_id.as_bytes());
    }
    out.extend_from_slice(b"\"}");
}

/// CONNECT_ERROR: `4{"message":…}`, with `message` written as a JSON string.
pub fn write_connect_error(namespace: &str, message: &str, out: &mut Vec<u8>) {
    write_head(SocketPacketType::ConnectError, namespace, None, out);
    out.extend_from_slice(b"{\"message\":");
    write_json_string(message, out);
    out.push(b'}');
}

/// A JSON string of `text`, with the escapes RFC 8259 requires.
pub fn write_json_string(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for character in text.chars() {
        match character {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            control if (control as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let code = control as usize;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[code >> 4]);
                out.push(HEX[code & 0xf]);
            }
            other => {
                let mut buffer = [0; 4];
                out.extend_from_slice(other.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> SocketPacket<'_> {
        parse(text, &SocketLimits::default()).unwrap_or_else(|error| panic!("{text}: {error:?}"))
    }

    fn packet<'a>(
        kind: SocketPacketType,
        namespace: &'a str,
        ack_id: Option<u64>,
        data: Option<&'a str>,
    ) -> SocketPacket<'a> {
        SocketPacket {
            kind,
            attachments: 0,
            namespace,
            ack_id,
            data,
        }
    }

    /// The examples of the protocol's README, each read as the reference parser reads it.
    #[test]
    fn the_protocols_examples_parse() {
        use SocketPacketType::*;
        for (text, expected) in [
            ("0", packet(Connect, "/", None, None)),
            ("0/admin,", packet(Connect, "/admin", None, None)),
            ("0/admin", packet(Connect, "/admin", None, None)),
            (
                "0{\"token\":\"123\"}",
                packet(Connect, "/", None, Some("{\"token\":\"123\"}")),
            ),
            ("1", packet(Disconnect, "/", None, None)),
            ("1/admin,", packet(Disconnect, "/admin", None, None)),
            (
                "2[\"hello\",1]",
                packet(Event, "/", None, Some("[\"hello\",1]")),
            ),
            (
                "2/admin,456[\"project:delete\",123]",
                packet(Event, "/admin", Some(456), Some("[\"project:delete\",123]")),
            ),
            (
                "3/admin,456[]",
                packet(Ack, "/admin", Some(456), Some("[]")),
            ),
            ("312[\"ok\"]", packet(Ack, "/", Some(12), Some("[\"ok\"]"))),
            (
                "4{\"message\":\"Not authorized\"}",
                packet(
                    ConnectError,
                    "/",
                    None,
                    Some("{\"message\":\"Not authorized\"}"),
                ),
            ),
        ] {
            assert_eq!(parse_ok(text), expected, "{text}");
        }
        let binary = parse_ok("51-[\"hello\",{\"_placeholder\":true,\"num\":0}]");
        assert_eq!(
            (binary.kind, binary.attachments),
            (SocketPacketType::BinaryEvent, 1)
        );
        let binary_ack = parse_ok("61-/admin,456[{\"_placeholder\":true,\"num\":0}]");
        assert_eq!(
            (
                binary_ack.namespace,
                binary_ack.ack_id,
                binary_ack.attachments
            ),
            ("/admin", Some(456), 1)
        );
    }

    #[test]
    fn malformed_packets_are_refused() {
        for (text, error) in [
            ("", SocketError::Empty),
            ("7", SocketError::UnknownType(b'7')),
            ("a", SocketError::UnknownType(b'a')),
            ("5[\"a\"]", SocketError::BadAttachments),
            ("5x-[\"a\"]", SocketError::BadAttachments),
            ("517-[\"a\"]", SocketError::BadAttachments),
            ("501-[\"a\"]", SocketError::BadAttachments),
            ("2", SocketError::BadData),
            ("2{\"a\":1}", SocketError::BadData),
            ("2\"event\"", SocketError::BadData),
            ("3[]", SocketError::BadData),
            ("31", SocketError::BadData),
            ("0[1]", SocketError::BadData),
            ("05{}", SocketError::BadData),
            ("1{}", SocketError::BadData),
            ("4", SocketError::BadData),
            ("2/admin[\"a\"]", SocketError::BadNamespace),
            ("29007199254740992[\"a\"]", SocketError::BadAckId),
            ("201[\"a\"]", SocketError::BadAckId),
            ("299999999999999999999[\"a\"]", SocketError::BadAckId),
        ] {
            assert_eq!(parse(text, &SocketLimits::default()), Err(error), "{text}");
        }
        assert_eq!(
            parse_ok("29007199254740991[\"a\"]").ack_id,
            Some(ACK_ID_MAX)
        );
        assert_eq!(parse_ok("20[\"a\"]").ack_id, Some(0));
    }

    #[test]
    fn a_long_namespace_is_refused_without_reading_the_whole_packet() {
        let limits = SocketLimits {
            namespace_bytes_max: 8,
            ..SocketLimits::default()
        };
        assert_eq!(
            parse("2/1234567,[\"a\"]", &limits).unwrap().namespace,
            "/1234567"
        );
        assert_eq!(
            parse("2/12345678,[\"a\"]", &limits),
            Err(SocketError::BadNamespace)
        );
        let long = format!("2/{}", "n".repeat(100_000));
        assert_eq!(parse(&long, &limits), Err(SocketError::BadNamespace));
    }

    #[test]
    fn written_packets_read_back() {
        let mut out = Vec::new();
        write_head(SocketPacketType::Event, "/", None, &mut out);
        out.extend_from_slice(b"[\"message\",{\"topic\":\"AAPL\",\"seq\":1},\"1\"]");
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(text, "2[\"message\",{\"topic\":\"AAPL\",\"seq\":1},\"1\"]");
        assert_eq!(parse_ok(text).kind, SocketPacketType::Event);

        out.clear();
        write_head(SocketPacketType::Ack, "/admin", Some(7), &mut out);
        out.extend_from_slice(b"[{\"seq\":3}]");
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(text, "3/admin,7[{\"seq\":3}]");
        assert_eq!(
            parse_ok(text),
            packet(
                SocketPacketType::Ack,
                "/admin",
                Some(7),
                Some("[{\"seq\":3}]")
            )
        );
    }

    #[test]
    fn connect_answers_are_what_socket_io_client_reads() {
        let mut out = Vec::new();
        write_connected(
            "/",
            "G5nqjP3bLiTvRvAWAAAB",
            Some("8fqkzLsPnnGjGx3S"),
            &mut out,
        );
        assert_eq!(
            out,
            b"0{\"sid\":\"G5nqjP3bLiTvRvAWAAAB\",\"pid\":\"8fqkzLsPnnGjGx3S\"}"
        );
        out.clear();
        write_connected("/admin", "abc", None, &mut out);
        assert_eq!(out, b"0/admin,{\"sid\":\"abc\"}");
        out.clear();
        write_connect_error("/custom", "Invalid namespace \"x\"\n", &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "4/custom,{\"message\":\"Invalid namespace \\\"x\\\"\\n\"}"
        );
        let parsed = parse_ok(std::str::from_utf8(&out).unwrap());
        assert_eq!(
            (parsed.kind, parsed.namespace),
            (SocketPacketType::ConnectError, "/custom")
        );
    }

    #[test]
    fn json_strings_escape_what_json_requires() {
        let mut out = Vec::new();
        write_json_string("a\"b\\c\u{1}\té", &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "\"a\\\"b\\\\c\\u0001\\té\""
        );
    }

    proptest::proptest! {
        /// Any text is read or refused, never a panic; what is read re-encodes to the text
        /// (for the forms ringcast writes: no attachments, no leading zeros).
        #[test]
        fn any_text_is_read_or_refused(text in "[0-6]?(/[a-z]{0,4},?)?[0-9]{0,3}[\\[{\"a-z,\\]}]{0,12}") {
            if let Ok(packet) = parse(&text, &SocketLimits::default())
                && packet.attachments == 0
                && !packet.kind.is_binary()
            {
                let mut out = Vec::new();
                // `/,` (the main namespace written out) and `/name` without its comma
                // read as the short forms, which are what gets written.
                let written_short = text[1..].starts_with('/')
                    && (packet.namespace == MAIN_NAMESPACE
                        || !text[1..].starts_with(&format!("{},", packet.namespace)));
                write_head(packet.kind, packet.namespace, packet.ack_id, &mut out);
                out.extend_from_slice(packet.data.unwrap_or("").as_bytes());
                if !written_short {
                    proptest::prop_assert_eq!(std::str::from_utf8(&out).unwrap(), text.as_str());
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse(&text, &SocketLimits::default());
        }
    }
}
