//! A parser for what a NATS server sends a client: `INFO {…}`, `MSG subject sid [reply] n`
//! followed by n payload bytes, `PING`, `PONG`, `+OK`, `-ERR '…'`. The stream arrives in
//! WebSocket frames that may hold several protocol messages or cut one anywhere, so bytes are
//! pushed in as they come and an event is taken out only once it is complete: a partial
//! message is never half-consumed.

/// Longest control line accepted (INFO is the longest, well under this).
const LINE_BYTES_MAX: usize = 64 * 1024;

/// Largest MSG payload accepted: nats-server's default max_payload.
const PAYLOAD_BYTES_MAX: usize = 1024 * 1024;

/// One complete protocol message from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum NatsEvent<'a> {
    Message {
        subject: &'a [u8],
        payload: &'a [u8],
    },
    Ping,
    Pong,
    Info,
    Ok,
    Error(String),
}

/// Bytes received and not yet parsed, and whether the stream broke.
#[derive(Debug, Default)]
pub struct NatsParser {
    buffer: Vec<u8>,
    offset: usize,
    broken: bool,
}

impl NatsParser {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.offset == self.buffer.len() {
            self.buffer.clear();
            self.offset = 0;
        } else if self.offset > self.buffer.len() / 2 {
            self.buffer.drain(..self.offset);
            self.offset = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Whether a line could not be parsed; nothing more is returned after that.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The next complete event, or `None` until more bytes arrive.
    pub fn next_event(&mut self) -> Option<NatsEvent<'_>> {
        if self.broken {
            return None;
        }
        let start = self.offset;
        let pending = &self.buffer[start..];
        let Some(line_bytes) = pending.windows(2).position(|pair| pair == b"\r\n") else {
            self.broken = pending.len() > LINE_BYTES_MAX;
            return None;
        };
        let line_end = start + line_bytes;
        let line = &self.buffer[start..line_end];
        let verb_bytes = line
            .iter()
            .position(|byte| *byte == b' ' || *byte == b'\t')
            .unwrap_or(line.len());
        let verb = line[..verb_bytes].to_ascii_uppercase();
        let after_line = line_end + 2;
        let simple = |event, parser: &mut Self| {
            parser.offset = after_line;
            Some(event)
        };
        match verb.as_slice() {
            b"MSG" => self.message(start, line_end),
            b"PING" => simple(NatsEvent::Ping, self),
            b"PONG" => simple(NatsEvent::Pong, self),
            b"INFO" => simple(NatsEvent::Info, self),
            b"+OK" => simple(NatsEvent::Ok, self),
            b"-ERR" => {
                let reason = String::from_utf8_lossy(&line[verb_bytes..])
                    .trim()
                    .to_owned();
                simple(NatsEvent::Error(reason), self)
            }
            _ => {
                self.broken = true;
                None
            }
        }
    }

    /// `MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>\r\n`, the line at start..line_end.
    fn message(&mut self, start: usize, line_end: usize) -> Option<NatsEvent<'_>> {
        let line = &self.buffer[start..line_end];
        let fields: Vec<&[u8]> = line
            .split(|byte| *byte == b' ' || *byte == b'\t')
            .filter(|field| !field.is_empty())
            .collect();
        let size = match fields.len() {
            4 | 5 => std::str::from_utf8(fields[fields.len() - 1])
                .ok()
                .and_then(|text| text.parse::<usize>().ok()),
            _ => None,
        };
        let Some(size) = size.filter(|size| *size <= PAYLOAD_BYTES_MAX) else {
            self.broken = true;
            return None;
        };
        let subject_start = start + (fields[1].as_ptr() as usize - line.as_ptr() as usize);
        let subject_end = subject_start + fields[1].len();
        let payload_start = line_end + 2;
        let payload_end = payload_start + size;
        if self.buffer.len() < payload_end + 2 {
            return None;
        }
        if &self.buffer[payload_end..payload_end + 2] != b"\r\n" {
            self.broken = true;
            return None;
        }
        self.offset = payload_end + 2;
        Some(NatsEvent::Message {
            subject: &self.buffer[subject_start..subject_end],
            payload: &self.buffer[payload_start..payload_end],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind of server message parses; a reply subject is accepted and skipped.
    #[test]
    fn parses_each_message_kind() {
        let mut parser = NatsParser::default();
        parser.push(b"INFO {\"max_payload\":1048576} \r\n+OK\r\nPING\r\npong\r\n");
        parser.push(b"MSG a.b 9 5\r\nhello\r\nMSG a.b 9 INBOX.1 2\r\nhi\r\n");
        parser.push(b"MSG x 1 0\r\n\r\n-ERR 'Slow Consumer'\r\n");
        assert_eq!(parser.next_event(), Some(NatsEvent::Info));
        assert_eq!(parser.next_event(), Some(NatsEvent::Ok));
        assert_eq!(parser.next_event(), Some(NatsEvent::Ping));
        assert_eq!(parser.next_event(), Some(NatsEvent::Pong));
        let message = |subject: &'static [u8], payload: &'static [u8]| NatsEvent::Message {
            subject,
            payload,
        };
        assert_eq!(parser.next_event(), Some(message(b"a.b", b"hello")));
        assert_eq!(parser.next_event(), Some(message(b"a.b", b"hi")));
        assert_eq!(parser.next_event(), Some(message(b"x", b"")));
        assert_eq!(
            parser.next_event(),
            Some(NatsEvent::Error("'Slow Consumer'".into()))
        );
        assert_eq!(parser.next_event(), None);
        assert!(!parser.is_broken());
    }

    /// Payloads holding CRLF are taken by length, and byte-by-byte input gives the same events.
    #[test]
    fn parses_split_input_byte_by_byte() {
        let stream = b"MSG T0001 1 6\r\nab\r\ncd\r\nPING\r\nMSG T0002 1 3\r\nxyz\r\n";
        let mut parser = NatsParser::default();
        let mut seen = Vec::new();
        for byte in stream {
            parser.push(std::slice::from_ref(byte));
            while let Some(event) = parser.next_event() {
                seen.push(format!("{event:?}"));
            }
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen[0].contains("[97, 98, 13, 10, 99, 100]"), "{seen:?}");
        assert_eq!(seen[1], "Ping");
        assert!(!parser.is_broken());
    }

    /// Garbage, a bad size or a payload without its CRLF breaks the stream for good.
    #[test]
    fn broken_streams_stop() {
        for stream in [
            &b"HELLO\r\n"[..],
            b"MSG a 1 x\r\n",
            b"MSG a 1\r\n",
            b"MSG a 1 2\r\nabcd\r\n",
        ] {
            let mut parser = NatsParser::default();
            parser.push(stream);
            assert_eq!(parser.next_event(), None, "{stream:?}");
            assert!(parser.is_broken(), "{stream:?}");
            parser.push(b"PING\r\n");
            assert_eq!(parser.next_event(), None);
        }
        let mut parser = NatsParser::default();
        parser.push(&vec![b'x'; LINE_BYTES_MAX + 1]);
        assert_eq!(parser.next_event(), None);
        assert!(parser.is_broken());
    }
}
