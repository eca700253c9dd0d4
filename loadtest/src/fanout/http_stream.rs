//! The HTTP transports a fanout subscriber may use instead of WebSocket (`--transport`): an
//! SSE stream (`GET /sse`), an NDJSON stream (`GET /stream`) or long polls (`GET /poll`).
//! Each turns received bytes into the same JSON texts a WebSocket subscriber gets, so the
//! subscriber checks them with the same scanner and sequence checks.
//!
//! The readers accept what ringcast (and Pushpin in front of an SSE origin) send: an HTTP/1.1
//! response head, then for SSE `data:` lines (other lines skipped), for NDJSON one JSON value per
//! chunk, for polls one `Content-Length` answer `{"messages":[…],"cursor":"…"}` per request.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// Longest line or poll answer a reader holds; past it the connection fails.
pub const LINE_BYTES_MAX: usize = 1024 * 1024;

/// How long a long poll may be held by the server.
pub const POLL_WAIT_MS: u64 = 25_000;

/// How a subscriber reads its topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// WebSocket frames (the protocol's own subscribe message).
    #[default]
    Ws,
    /// Server-Sent Events: `GET /sse?topics=T`.
    Sse,
    /// Newline-delimited JSON over chunked transfer: `GET /stream?topics=T`.
    Stream,
    /// Long polling: `GET /poll?topics=T&cursor=C&wait_ms=25000`, again after each answer.
    Poll,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Stream => "stream",
            Transport::Poll => "poll",
        }
    }

    /// The request that opens (or, for polls, continues) `topic`'s subscription, with
    /// `authorization` (`Bearer <token>`) as its `Authorization` header when given.
    pub fn request(
        self,
        host: &str,
        authorization: Option<&str>,
        topic: &str,
        cursor: Option<&str>,
    ) -> String {
        let target = match (self, cursor) {
            (Transport::Sse, _) => format!("/sse?topics={topic}"),
            (Transport::Stream, _) => format!("/stream?topics={topic}"),
            // The first poll is short: its answer (once the subscription was answered) carries
            // the cursor every later, long, poll starts from.
            (Transport::Poll, None) => format!("/poll?topics={topic}&wait_ms=0"),
            (Transport::Poll, Some(cursor)) => {
                format!("/poll?topics={topic}&cursor={cursor}&wait_ms={POLL_WAIT_MS}")
            }
            (Transport::Ws, _) => unreachable!("WebSocket subscribers send frames"),
        };
        let authorization =
            authorization.map_or(String::new(), |value| format!("Authorization: {value}\r\n"));
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n{authorization}\r\n")
    }
}

/// What a reader found in received bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// One JSON text, as a WebSocket subscriber would get it.
    Json(&'a [u8]),
    /// A poll answered: its JSON texts were given before; poll again from `cursor`.
    PollAnswered { cursor: &'a str },
}

/// Why a stream cannot be read.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamError {
    /// The answer was not `200`.
    Status,
    /// A head, line or answer past [`LINE_BYTES_MAX`], or malformed.
    Malformed,
}

/// One subscriber's reader: the bytes of an incomplete line or answer, and where it stands.
#[derive(Debug)]
pub struct StreamReader {
    transport: Transport,
    pending: Vec<u8>,
    /// The response head was read (streams: once; polls: per answer).
    in_body: bool,
    /// A poll answer's body length.
    body_bytes: usize,
}

impl StreamReader {
    pub fn new(transport: Transport) -> StreamReader {
        StreamReader {
            transport,
            pending: Vec::new(),
            in_body: false,
            body_bytes: 0,
        }
    }

    /// Reads `bytes`, calling `on_event` for each thing found, in order.
    pub fn push(
        &mut self,
        bytes: &[u8],
        mut on_event: impl FnMut(Event<'_>),
    ) -> Result<(), StreamError> {
        self.pending.extend_from_slice(bytes);
        let mut pending = std::mem::take(&mut self.pending);
        let result = self.drain(&pending, &mut on_event);
        match result {
            Ok(consumed) => {
                pending.drain(..consumed);
                if pending.len() > LINE_BYTES_MAX {
                    return Err(StreamError::Malformed);
                }
                self.pending = pending;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Reads what `input` completes; returns the bytes consumed.
    fn drain(
        &mut self,
        input: &[u8],
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<usize, StreamError> {
        let mut consumed = 0;
        loop {
            let rest = &input[consumed..];
            if !self.in_body {
                let Some(head_bytes) = find(rest, b"\r\n\r\n").map(|at| at + 4) else {
                    return Ok(consumed);
                };
                self.body_bytes = read_head(&rest[..head_bytes])?;
                self.in_body = true;
                consumed += head_bytes;
                continue;
            }
            if self.transport == Transport::Poll {
                if rest.len() < self.body_bytes {
                    return Ok(consumed);
                }
                poll_answer(&rest[..self.body_bytes], on_event)?;
                consumed += self.body_bytes;
                self.in_body = false;
                continue;
            }
            let Some(end) = rest.iter().position(|byte| *byte == b'\n') else {
                return Ok(consumed);
            };
            let line = &rest[..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.stream_line(line, on_event);
            consumed += end + 1;
        }
    }

    /// A line of a stream: SSE `data:` lines and NDJSON objects are JSON texts; SSE ids,
    /// event names and comments, chunk sizes, cursor and heartbeat lines are skipped.
    fn stream_line(&self, line: &[u8], on_event: &mut impl FnMut(Event<'_>)) {
        let json = match self.transport {
            Transport::Sse => line
                .strip_prefix(b"data:")
                .map(|data| data.strip_prefix(b" ").unwrap_or(data)),
            _ => Some(line).filter(|line| {
                line.first() == Some(&b'{')
                    && !line.starts_with(b"{\"op\":\"cursor\"")
                    && !line.starts_with(b"{\"op\":\"heartbeat\"")
            }),
        };
        if let Some(json) = json {
            on_event(Event::Json(json));
        }
    }
}

/// Checks a response head; returns its `Content-Length` (0 when absent).
fn read_head(head: &[u8]) -> Result<usize, StreamError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(StreamError::Malformed),
    }
    if response.code != Some(200) {
        return Err(StreamError::Status);
    }
    let length = response
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("content-length"))
        .map(|header| std::str::from_utf8(header.value).ok()?.trim().parse().ok())
        .unwrap_or(Some(0))
        .ok_or(StreamError::Malformed)?;
    if length > LINE_BYTES_MAX {
        return Err(StreamError::Malformed);
    }
    Ok(length)
}

/// `{"messages":[…],"cursor":"…"}`: each message as a JSON text, then the cursor.
fn poll_answer(body: &[u8], on_event: &mut impl FnMut(Event<'_>)) -> Result<(), StreamError> {
    let list = body
        .strip_prefix(b"{\"messages\":[")
        .ok_or(StreamError::Malformed)?;
    let mut index = 0;
    while list.get(index) == Some(&b'{') {
        let end = object_end(&list[index..]).ok_or(StreamError::Malformed)?;
        on_event(Event::Json(&list[index..index + end]));
        index += end;
        if list.get(index) == Some(&b',') {
            index += 1;
        }
    }
    let rest = list[index..]
        .strip_prefix(b"],\"cursor\":\"")
        .ok_or(StreamError::Malformed)?;
    let cursor_end = rest
        .iter()
        .position(|byte| *byte == b'"')
        .ok_or(StreamError::Malformed)?;
    let cursor = std::str::from_utf8(&rest[..cursor_end]).map_err(|_| StreamError::Malformed)?;
    on_event(Event::PollAnswered { cursor });
    Ok(())
}

/// The length of the JSON object `text` starts with, strings and nesting considered.
fn object_end(text: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (index, byte) in text.iter().enumerate() {
        match (in_string, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'{' | b'[') => depth += 1,
            (false, _, b'}' | b']') => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(index + 1);
                }
            }
            (false, _, _) => {}
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(transport: Transport, input: &[u8]) -> Vec<String> {
        let mut seen = Vec::new();
        for split in 0..=input.len() {
            let mut reader = StreamReader::new(transport);
            let mut events = Vec::new();
            for part in [&input[..split], &input[split..]] {
                reader
                    .push(part, |event| {
                        events.push(match event {
                            Event::Json(json) => String::from_utf8_lossy(json).into_owned(),
                            Event::PollAnswered { cursor } => format!("cursor {cursor}"),
                        })
                    })
                    .unwrap();
            }
            if split == 0 {
                seen = events;
            } else {
                assert_eq!(seen, events, "split at {split}");
            }
        }
        seen
    }

    #[test]
    fn sse_data_lines_are_json_texts() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nretry: 2000\n\n\
            event: subscribed\ndata: {\"op\":\"subscribed\",\"topic\":\"T0001\",\"seq\":4}\n\n\
            : heartbeat\n\ndata: {\"topic\":\"T0001\",\"seq\":5,\"data\":{}}\nid: abc\n\n";
        assert_eq!(
            read_all(Transport::Sse, input),
            [
                "{\"op\":\"subscribed\",\"topic\":\"T0001\",\"seq\":4}",
                "{\"topic\":\"T0001\",\"seq\":5,\"data\":{}}"
            ]
        );
    }

    #[test]
    fn ndjson_lines_skip_chunk_sizes_cursors_and_heartbeats() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            1f\r\n{\"topic\":\"T0001\",\"seq\":5,\"data\":{}}\n\r\n\
            13\r\n{\"op\":\"heartbeat\"}\n\r\n14\r\n{\"op\":\"cursor\",\"cursor\":\"x\"}\n\r\n";
        assert_eq!(
            read_all(Transport::Stream, input),
            ["{\"topic\":\"T0001\",\"seq\":5,\"data\":{}}"]
        );
    }

    #[test]
    fn poll_answers_give_messages_then_the_cursor() {
        let body = b"{\"messages\":[{\"topic\":\"T0001\",\"seq\":5,\"data\":{\"s\":\"}{\\\"\"}},\
            {\"op\":\"reset\",\"topic\":\"T0001\"}],\"cursor\":\"AbC\"}";
        let mut input =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        input.extend_from_slice(body);
        let empty = b"{\"messages\":[],\"cursor\":\"D\"}";
        input.extend_from_slice(
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", empty.len()).as_bytes(),
        );
        input.extend_from_slice(empty);
        assert_eq!(
            read_all(Transport::Poll, &input),
            [
                "{\"topic\":\"T0001\",\"seq\":5,\"data\":{\"s\":\"}{\\\"\"}}",
                "{\"op\":\"reset\",\"topic\":\"T0001\"}",
                "cursor AbC",
                "cursor D"
            ]
        );
    }

    #[test]
    fn a_refusal_fails_the_stream() {
        let mut reader = StreamReader::new(Transport::Sse);
        let result = reader.push(b"HTTP/1.1 400 Bad Request\r\n\r\n", |_| {});
        assert_eq!(result, Err(StreamError::Status));
    }
}
