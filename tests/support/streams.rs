//! Clients of the reading endpoints, written from their specifications alone: an SSE reader
//! (WHATWG HTML §9.2's parsing rules for the lines the server sends), an NDJSON reader over
//! chunked coding, and polls.

use std::net::SocketAddr;

use super::server::{HttpClient, HttpResponse, RawClient};

/// One dispatched SSE event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `message` unless the event named itself.
    pub event: String,
    pub data: String,
    /// The last event id after this event (ids persist across events, as in a browser).
    pub id: String,
}

/// An SSE stream being read.
pub struct SseClient {
    client: RawClient,
    pub head: HttpResponse,
    last_id: String,
    /// Comment lines seen (heartbeats).
    pub comments: usize,
    /// The reconnection delay the server asked for, if it did.
    pub retry_ms: Option<u64>,
}

impl SseClient {
    /// `GET target` with `extra_headers` (say `Last-Event-ID`); reads the response head.
    pub fn open(address: SocketAddr, target: &str, extra_headers: &[(&str, &str)]) -> SseClient {
        let mut client = RawClient::connect(address);
        let mut request =
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n");
        for (name, value) in extra_headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        client.write(request.as_bytes());
        let head = client.read_response_head();
        SseClient {
            client,
            head,
            last_id: String::new(),
            comments: 0,
            retry_ms: None,
        }
    }

    /// The next dispatched event; `None` when the stream ends.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        let (mut event, mut data, mut has_data) = (String::new(), String::new(), false);
        loop {
            let line = self.client.read_line()?;
            let line = String::from_utf8(line).expect("an event stream is UTF-8");
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                if has_data {
                    return Some(SseEvent {
                        event: if event.is_empty() {
                            "message".into()
                        } else {
                            event
                        },
                        data,
                        id: self.last_id.clone(),
                    });
                }
                event.clear();
                continue;
            }
            if line.starts_with(':') {
                self.comments += 1;
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event = value.to_string(),
                "data" => {
                    if has_data {
                        data.push('\n');
                    }
                    data.push_str(value);
                    has_data = true;
                }
                "id" if !value.contains('\0') => self.last_id = value.to_string(),
                "retry" => self.retry_ms = value.parse().ok(),
                _ => {}
            }
        }
    }

    /// The id a browser would send back as `Last-Event-ID`.
    pub fn last_event_id(&self) -> &str {
        &self.last_id
    }
}

/// An NDJSON stream being read.
pub struct NdjsonClient {
    client: RawClient,
    pub head: HttpResponse,
    /// Lines of the chunk being read.
    pending: std::collections::VecDeque<String>,
}

impl NdjsonClient {
    pub fn open(address: SocketAddr, target: &str) -> NdjsonClient {
        let mut client = RawClient::connect(address);
        client.write(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let head = client.read_response_head();
        NdjsonClient {
            client,
            head,
            pending: Default::default(),
        }
    }

    /// The next JSON line, parsed; `None` after the last chunk.
    pub fn next_line(&mut self) -> Option<serde_json::Value> {
        while self.pending.is_empty() {
            let chunk = self.client.read_chunk()?;
            let text = String::from_utf8(chunk).expect("NDJSON is UTF-8");
            for line in text.split_terminator('\n') {
                self.pending.push_back(line.to_string());
            }
        }
        let line = self.pending.pop_front()?;
        Some(serde_json::from_str(&line).unwrap_or_else(|error| panic!("{line:?}: {error}")))
    }
}

/// `GET target` on a keep-alive connection; the answer and its JSON body (`Null` if none).
pub fn poll(client: &mut HttpClient, target: &str) -> (HttpResponse, serde_json::Value) {
    let response = client.get(target);
    let body = serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null);
    (response, body)
}

/// Percent-encodes `text` for a query value.
pub fn encode_query(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
