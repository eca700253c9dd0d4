//! The connections of the `publish` scenario as the io_uring client's handler: publishers
//! that write as fast as the server takes (WebSocket frames in batches, or pipelined HTTP
//! requests), subscribers that count and check what they receive, and the probe that reads
//! the topics' sequence numbers.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::engine::{Handler, Message, Outbound};
use crate::fanout::monotonic_ns;
use crate::fanout::nats::{NatsEvent, NatsParser};
use crate::fanout::payload::{self, PayloadData};
use crate::fanout::scan::{scan_delivery, scan_payload};
use crate::fanout::sequence::{OrderFaults, SequenceCheck};
use crate::fanout::topic_index;
use crate::fanout::wire::{Incoming, Protocol, decode_json};
use crate::histogram::{new_histogram, record};
use crate::protocol::Cause;

/// Bytes of HTTP answers one connection may hold unparsed: far more than any answer here.
const ANSWER_BYTES_MAX: usize = 64 * 1024;

/// What one connection is.
pub enum Role {
    Subscriber {
        topic: u32,
        check: SequenceCheck,
        subscribed: bool,
        nats: Option<Box<NatsParser>>,
    },
    /// Publishes its topics round robin as WebSocket messages, a batch per send.
    Publisher {
        topics: Vec<u32>,
        next: usize,
        /// Publishes sent so far, for the rate limit.
        published: u64,
    },
    /// Publishes with `POST /publish/{topic}`, `pipeline` requests in flight.
    HttpPublisher {
        topics: Vec<u32>,
        next: usize,
        published: u64,
        in_flight: u64,
        /// Answer bytes not parsed yet.
        partial: Vec<u8>,
    },
    /// Subscribes to every topic to read their sequence numbers, then unsubscribes.
    Probe,
}

/// Counts over the measured window (reset when it starts).
#[derive(Clone, Debug, Default)]
pub struct Window {
    /// Publishes handed to the kernel.
    pub sent: u64,
    /// HTTP publishes answered 200.
    pub answered: u64,
    /// HTTP answers other than 200.
    pub refused: u64,
    pub deliveries: u64,
}

/// The handler of the scenario's connections.
pub struct Ingest {
    pub protocol: Protocol,
    pub roles: Vec<Role>,
    pub names: Vec<String>,
    /// The last counter published per topic (each topic has one publisher).
    counters: Vec<u64>,
    payload_bytes: usize,
    /// WebSocket publishers fill each send up to this many bytes.
    batch_bytes: usize,
    pipeline: u64,
    host: String,
    /// `Authorization: …\r\n`, or nothing.
    authorization_header: String,
    /// Publishers write only while this holds.
    pub publishing: bool,
    /// With a rate limit: publishes per second per publisher, from when publishing started.
    pub rate_per_publisher: Option<(f64, std::time::Instant)>,
    pub window: Window,
    pub faults: OrderFaults,
    pub latency_ns: Histogram<u64>,
    pub unexpected: u64,
    pub server_errors: u64,
    /// Subscribers acknowledged, connections that ended with a failure.
    pub subscribed: u64,
    pub failed: u64,
    pub opened: u64,
    /// The probe's acknowledgements still due, and the sum of their seqs.
    pub probe_waiting: usize,
    pub probe_seq_sum: u64,
    data: String,
    text: String,
}

/// The scenario's sizes.
pub struct IngestSettings {
    pub protocol: Protocol,
    pub topics: u32,
    pub payload_bytes: usize,
    pub batch_bytes: usize,
    pub pipeline: u64,
    pub host: String,
    /// `Authorization` of every HTTP publish (`Bearer <token>`), when the server wants one.
    pub authorization: Option<String>,
}

impl Ingest {
    pub fn new(settings: IngestSettings, roles: Vec<Role>) -> Self {
        Self {
            protocol: settings.protocol,
            roles,
            names: (0..settings.topics)
                .map(crate::fanout::topic_name)
                .collect(),
            counters: vec![0; settings.topics as usize],
            payload_bytes: settings.payload_bytes,
            batch_bytes: settings.batch_bytes,
            pipeline: settings.pipeline,
            host: settings.host,
            authorization_header: settings
                .authorization
                .map(|value| format!("Authorization: {value}\r\n"))
                .unwrap_or_default(),
            publishing: false,
            rate_per_publisher: None,
            window: Window::default(),
            faults: OrderFaults::default(),
            latency_ns: new_histogram(),
            unexpected: 0,
            server_errors: 0,
            subscribed: 0,
            failed: 0,
            opened: 0,
            probe_waiting: 0,
            probe_seq_sum: 0,
            data: String::new(),
            text: String::new(),
        }
    }

    /// The probe's request for every topic's seq (`subscribe`) and its release.
    pub fn probe_requests(&self) -> (String, String) {
        let list = self
            .names
            .iter()
            .map(|name| format!("\"{name}\""))
            .collect::<Vec<_>>()
            .join(",");
        (
            format!("{{\"op\":\"subscribe\",\"topics\":[{list}]}}"),
            format!("{{\"op\":\"unsubscribe\",\"topics\":[{list}]}}"),
        )
    }

    /// The data of the next message on `topic`: its counter and send time.
    fn next_data(&mut self, topic: u32) {
        self.counters[topic as usize] += 1;
        let data = PayloadData {
            counter: self.counters[topic as usize],
            sent_ns: monotonic_ns(),
            step: 0,
        };
        payload::encode(data, self.payload_bytes, &mut self.data);
    }

    /// Publishes a publisher that has sent `published` may send now: unlimited without a
    /// rate, else what is due.
    fn due(&self, published: u64) -> u64 {
        match self.rate_per_publisher {
            None => u64::MAX,
            Some((rate, started)) => {
                ((started.elapsed().as_secs_f64() * rate) as u64 + 1).saturating_sub(published)
            }
        }
    }

    /// Fills a WebSocket publisher's send up to the batch size (and what is due).
    fn fill_websocket(&mut self, index: u32, out: &mut Outbound<'_>) {
        let Role::Publisher {
            topics,
            next,
            published,
        } = &mut self.roles[index as usize]
        else {
            return;
        };
        let topics = std::mem::take(topics);
        let (mut position, published_before) = (*next, *published);
        let due = self.due(published_before);
        let mut count = 0;
        self.text.clear();
        while out.queued_bytes() + self.text.len() < self.batch_bytes && count < due {
            count += 1;
            let topic = topics[position];
            position = (position + 1) % topics.len();
            self.next_data(topic);
            let name = &self.names[topic as usize];
            self.protocol.publish(name, &self.data, &mut self.text);
            // NATS publishes are a byte stream: a batch goes out as one frame. JSON
            // publishes are one message each.
            if !self.protocol.is_binary() {
                out.text(self.text.as_bytes());
                self.text.clear();
            }
        }
        if !self.text.is_empty() {
            out.binary(self.text.as_bytes());
        }
        self.window.sent += count;
        if let Role::Publisher {
            topics: slot,
            next,
            published,
        } = &mut self.roles[index as usize]
        {
            *slot = topics;
            *next = position;
            *published = published_before + count;
        }
    }

    /// Tops an HTTP publisher's pipeline up (to what is due).
    fn fill_http(&mut self, index: u32, out: &mut Outbound<'_>) {
        loop {
            let Role::HttpPublisher {
                published,
                in_flight,
                ..
            } = &self.roles[index as usize]
            else {
                return;
            };
            if *in_flight >= self.pipeline || self.due(*published) == 0 {
                return;
            }
            let Role::HttpPublisher {
                topics,
                next,
                published,
                in_flight,
                ..
            } = &mut self.roles[index as usize]
            else {
                return;
            };
            *in_flight += 1;
            *published += 1;
            let topic = topics[*next];
            *next = (*next + 1) % topics.len();
            self.next_data(topic);
            self.window.sent += 1;
            self.text.clear();
            let _ = write!(
                self.text,
                "POST /publish/{} HTTP/1.1\r\nHost: {}\r\n{}Content-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{}",
                self.names[topic as usize],
                self.host,
                self.authorization_header,
                self.data.len(),
                self.data
            );
            out.raw(self.text.as_bytes());
        }
    }

    fn fill(&mut self, index: u32, out: &mut Outbound<'_>) {
        if !self.publishing {
            return;
        }
        match self.roles[index as usize] {
            Role::Publisher { .. } => self.fill_websocket(index, out),
            Role::HttpPublisher { .. } => self.fill_http(index, out),
            Role::Subscriber { .. } | Role::Probe => {}
        }
    }

    /// Starts publishing on every publisher: the first batch of each.
    pub fn publisher_indices(&self) -> Vec<u32> {
        (0..self.roles.len() as u32)
            .filter(|index| {
                matches!(
                    self.roles[*index as usize],
                    Role::Publisher { .. } | Role::HttpPublisher { .. }
                )
            })
            .collect()
    }

    /// Lets publisher `index` write what it may now (the start, and each turn with a rate).
    pub fn top_up(&mut self, index: u32, out: &mut Outbound<'_>) {
        self.fill(index, out);
    }

    /// HTTP answers: each complete one frees a place in the pipeline.
    fn answers(&mut self, index: u32, bytes: &[u8], out: &mut Outbound<'_>) -> Result<(), Cause> {
        let Role::HttpPublisher {
            in_flight, partial, ..
        } = &mut self.roles[index as usize]
        else {
            return Ok(());
        };
        partial.extend_from_slice(bytes);
        let mut offset = 0;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut response = httparse::Response::new(&mut headers);
            let head = match response.parse(&partial[offset..]) {
                Ok(httparse::Status::Complete(head)) => head,
                Ok(httparse::Status::Partial) => break,
                Err(_) => return Err(Cause::ClosedEarly),
            };
            let body = response
                .headers
                .iter()
                .find(|header| header.name.eq_ignore_ascii_case("content-length"))
                .and_then(|header| std::str::from_utf8(header.value).ok()?.trim().parse().ok())
                .unwrap_or(0usize);
            if partial.len() - offset < head + body {
                break;
            }
            if response.code == Some(200) {
                self.window.answered += 1;
            } else {
                self.window.refused += 1;
            }
            *in_flight = in_flight.saturating_sub(1);
            offset += head + body;
        }
        partial.drain(..offset);
        if partial.len() > ANSWER_BYTES_MAX {
            return Err(Cause::ClosedEarly);
        }
        self.fill(index, out);
        Ok(())
    }

    fn subscriber_message(&mut self, index: u32, message: Message<'_>, out: &mut Outbound<'_>) {
        if self.protocol.is_binary() {
            self.nats_subscriber(index, message, out);
            return;
        }
        let Role::Subscriber {
            topic, subscribed, ..
        } = &mut self.roles[index as usize]
        else {
            return;
        };
        if !*subscribed {
            match decode_json(message.payload) {
                Incoming::Subscribed { topic: acked, .. } if acked == Some(*topic) => {
                    *subscribed = true;
                    self.subscribed += 1;
                }
                Incoming::Error(_) => self.server_errors += 1,
                _ => {}
            }
            return;
        }
        let reading = scan_delivery(message.payload)
            .map(|scanned| (scanned.topic, scanned.data))
            .or_else(|| match decode_json(message.payload) {
                Incoming::Delivery { topic, data, .. } => Some((topic, data)),
                _ => None,
            });
        match reading {
            Some((topic, data)) => self.delivery(index, topic, data, message.received_ns),
            None => self.unexpected += 1,
        }
    }

    fn nats_subscriber(&mut self, index: u32, message: Message<'_>, out: &mut Outbound<'_>) {
        let Role::Subscriber { nats, .. } = &mut self.roles[index as usize] else {
            return;
        };
        let mut parser = nats.take().unwrap_or_default();
        parser.push(message.payload);
        while let Some(event) = parser.next_event() {
            match event {
                NatsEvent::Message { subject, payload } => {
                    let topic = std::str::from_utf8(subject).ok().and_then(topic_index);
                    let data = scan_payload(payload).or_else(|| payload::decode(payload));
                    match (topic, data) {
                        (Some(topic), Some(data)) => {
                            self.delivery(index, topic, data, message.received_ns);
                        }
                        _ => self.unexpected += 1,
                    }
                }
                NatsEvent::Ping => out.binary(b"PONG\r\n"),
                NatsEvent::Pong => {
                    if let Role::Subscriber { subscribed, .. } = &mut self.roles[index as usize]
                        && !*subscribed
                    {
                        *subscribed = true;
                        self.subscribed += 1;
                    }
                }
                NatsEvent::Error(_) => self.server_errors += 1,
                NatsEvent::Info | NatsEvent::Ok => {}
            }
        }
        if let Role::Subscriber { nats, .. } = &mut self.roles[index as usize] {
            *nats = Some(parser);
        }
    }

    fn delivery(&mut self, index: u32, topic: u32, data: PayloadData, received_ns: u64) {
        let Role::Subscriber {
            topic: mine, check, ..
        } = &mut self.roles[index as usize]
        else {
            return;
        };
        if topic != *mine {
            self.unexpected += 1;
            return;
        }
        self.faults.record(check.observe(data.counter));
        self.window.deliveries += 1;
        record(
            &mut self.latency_ns,
            received_ns.saturating_sub(data.sent_ns),
        );
    }

    fn probe_message(&mut self, payload: &[u8]) {
        if self.probe_waiting == 0 {
            return;
        }
        if let Incoming::Subscribed { seq, .. } = decode_json(payload) {
            self.probe_waiting -= 1;
            self.probe_seq_sum += seq;
        }
    }
}

impl Handler for Ingest {
    fn opened(
        &mut self,
        index: u32,
        _since_attempt: Duration,
        out: &mut Outbound<'_>,
    ) -> Result<(), Cause> {
        self.opened += 1;
        if let Role::Subscriber { topic, .. } = &self.roles[index as usize] {
            let request = self.protocol.subscribe(&self.names[*topic as usize]);
            if self.protocol.is_binary() {
                out.binary(request.as_bytes());
            } else {
                out.text(request.as_bytes());
            }
        }
        if matches!(self.roles[index as usize], Role::Publisher { .. })
            && let Some(hello) = self.protocol.publisher_hello()
        {
            out.binary(hello.as_bytes());
        }
        self.fill(index, out);
        Ok(())
    }

    fn message(
        &mut self,
        index: u32,
        message: Message<'_>,
        out: &mut Outbound<'_>,
    ) -> Result<(), Cause> {
        match self.roles[index as usize] {
            Role::Subscriber { .. } => self.subscriber_message(index, message, out),
            Role::HttpPublisher { .. } => self.answers(index, message.payload, out)?,
            Role::Probe => self.probe_message(message.payload),
            Role::Publisher { .. } => {
                // NATS answers PINGs (and our PING after CONNECT); JSON servers say nothing
                // to a publisher unless something is wrong.
                if self.protocol.is_binary() {
                    if message
                        .payload
                        .windows(6)
                        .any(|window| window == b"PING\r\n")
                    {
                        out.binary(b"PONG\r\n");
                    }
                    if message.payload.starts_with(b"-ERR") {
                        self.server_errors += 1;
                    }
                } else if matches!(decode_json(message.payload), Incoming::Error(_)) {
                    self.server_errors += 1;
                }
            }
        }
        Ok(())
    }

    fn writable(&mut self, index: u32, out: &mut Outbound<'_>) -> Result<(), Cause> {
        if matches!(self.roles[index as usize], Role::Publisher { .. }) {
            self.fill(index, out);
        }
        Ok(())
    }

    fn ended(&mut self, _index: u32, outcome: Result<(), Cause>) {
        if outcome.is_err() {
            self.failed += 1;
        }
    }
}
