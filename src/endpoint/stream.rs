//! The one-way streams: Server-Sent Events (`GET /sse`) and newline-delimited JSON over chunked
//! HTTP (`GET /stream`), and the cursor every reading endpoint keeps.
//!
//! A stream subscribes to its topics when it opens (from where its cursor or `since` says) and
//! sends what the broker delivers until the client goes or the server stops. Each message's
//! framing is made once per shard (`frame_cache`) and shared by every stream of the kind; what
//! differs per stream is its cursor:
//! - SSE gives every event an `id:` holding the whole cursor, written after the shared `data:`
//!   line. The browser's EventSource keeps the last id it saw and sends it back as
//!   `Last-Event-ID` when it reconnects, so wherever the connection breaks, the stream resumes
//!   after exactly the last event the browser took, in every topic.
//! - NDJSON gives a `{"op":"cursor","cursor":"…"}` line after each batch of deliveries (at the
//!   end of the shard's turn); a client resumes from it with `?cursor=` and drops the seqs it
//!   already has (each message carries its topic and seq).
//!
//! A heartbeat (an SSE comment, an NDJSON `{"op":"heartbeat"}` line) goes out after
//! `stream_heartbeat_ms` without anything queued, so proxies and browsers see a live stream.

use bytes::BytesMut;

use super::outbound::{Frame, Outbound};
use super::{Context, EndpointSettings, Next};
use crate::broker::cursor::{self, Position, cursor_text_bytes_max, topics_digest};
use crate::broker::message_pool::MessagePool;
use crate::broker::owner::Since;
use crate::broker::stream_api::{StreamKind, StreamRequest};
use crate::broker::{BrokerRequest, Message, Reply, ReplyKind, TopicName};
use crate::protocol::{ndjson, sse};

const NDJSON_HEARTBEAT: &[u8] = b"13\r\n{\"op\":\"heartbeat\"}\n\r\n";

/// The last event of a stream whose token ran out: the client knows to come back with a new
/// token rather than resume with the old one.
const SSE_EXPIRED: &[u8] = b"event: expired\ndata: {\"op\":\"expired\"}\n\n";
const NDJSON_EXPIRED: &[u8] = b"11\r\n{\"op\":\"expired\"}\n\r\n";

/// Where a reading client stands in each of its topics, and the cursor that says so.
#[derive(Debug)]
pub struct TopicPositions {
    /// In the request's order (the cursor's).
    topics: Vec<TopicName>,
    positions: Vec<Position>,
    /// Indices into `topics`, sorted by name, to find a delivery's topic.
    by_name: Vec<u16>,
    digest: u32,
    /// Topics whose subscription was answered (`subscribed`, or an error).
    answered: Vec<bool>,
}

impl TopicPositions {
    pub fn new(topics: Vec<TopicName>, positions: Vec<Position>) -> TopicPositions {
        let mut by_name: Vec<u16> = (0..topics.len() as u16).collect();
        by_name.sort_by(|&a, &b| {
            topics[a as usize]
                .as_bytes()
                .cmp(topics[b as usize].as_bytes())
        });
        TopicPositions {
            digest: topics_digest(&topics),
            answered: vec![false; topics.len()],
            topics,
            positions,
            by_name,
        }
    }

    pub fn topics(&self) -> &[TopicName] {
        &self.topics
    }

    /// Where the client stands in each topic, in the order of [`TopicPositions::topics`].
    pub fn positions(&self) -> &[Position] {
        &self.positions
    }

    /// Whether every topic's subscription was answered.
    pub fn all_answered(&self) -> bool {
        self.answered.iter().all(|&answered| answered)
    }

    /// One subscription per topic, each from its position.
    pub fn subscribe(&self, requests: &mut Vec<BrokerRequest>) {
        for (topic, position) in self.topics.iter().zip(&self.positions) {
            requests.push(BrokerRequest::Subscribe {
                topic: topic.clone(),
                since: *position,
            });
        }
    }

    pub fn unsubscribe(&self, requests: &mut Vec<BrokerRequest>) {
        for topic in &self.topics {
            requests.push(BrokerRequest::Unsubscribe {
                topic: topic.clone(),
            });
        }
    }

    fn index(&self, name: &[u8]) -> Option<usize> {
        self.by_name
            .binary_search_by(|&index| self.topics[index as usize].as_bytes().cmp(name))
            .ok()
            .map(|found| self.by_name[found] as usize)
    }

    /// Whether the client already has `message`: its seq is not past the position, in an epoch
    /// the client knows (so the message is of that epoch: the topic was subscribed in it).
    pub fn has(&self, message: &Message) -> bool {
        self.index(message.topic()).is_some_and(|index| {
            self.positions[index]
                .is_some_and(|position| position.epoch.is_some() && message.seq() <= position.seq)
        })
    }

    /// The client has message `seq` of its topic.
    pub fn took_message(&mut self, message: &Message) {
        if let Some(index) = self.index(message.topic()) {
            let epoch = self.positions[index].and_then(|position| position.epoch);
            self.positions[index] = Some(Since {
                seq: message.seq(),
                epoch,
            });
        }
    }

    /// The client has `reply`. `subscribed` names the topic's epoch (and, unless a replay of
    /// what the client asked for follows, where it stands); `reset` says the latest message
    /// follows, so the client stands just before it.
    pub fn took_reply(&mut self, reply: &Reply) {
        let Some(index) = reply
            .topic
            .as_ref()
            .and_then(|topic| self.index(topic.as_bytes()))
        else {
            return;
        };
        self.answered[index] |= matches!(reply.kind, ReplyKind::Subscribed | ReplyKind::Error);
        let Some(epoch) = reply.epoch else { return };
        let position = &mut self.positions[index];
        *position = Some(match (reply.kind, *position) {
            (ReplyKind::Reset, _) => Since {
                seq: reply.seq.saturating_sub(1),
                epoch: Some(epoch),
            },
            // A replay from `since` follows when the epoch is the one asked for (or none was
            // named) and `since` is behind: the client stands where it asked to.
            (_, Some(since))
                if since.epoch.is_none_or(|asked| asked == epoch) && since.seq < reply.seq =>
            {
                Since {
                    seq: since.seq,
                    epoch: Some(epoch),
                }
            }
            _ => Since {
                seq: reply.seq,
                epoch: Some(epoch),
            },
        });
    }

    /// Writes the cursor into `out` (sized by [`TopicPositions::cursor_bytes_max`]); returns its
    /// length.
    pub fn write_cursor(&self, out: &mut [u8]) -> usize {
        // A bare `since` not yet answered is written as it was asked: resuming from it asks
        // the same again (dropping it would resume at the latest message and skip what the
        // client asked for).
        cursor::encode(self.digest, &self.positions, out)
    }

    pub fn cursor_bytes_max(&self) -> usize {
        cursor_text_bytes_max(self.topics.len())
    }
}

/// The framing of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFormat {
    Sse,
    Ndjson,
}

/// One SSE or NDJSON stream.
#[derive(Debug)]
pub struct StreamEndpoint {
    format: StreamFormat,
    /// Boxed: its four vectors are 104 bytes, and the largest endpoint sets the size of every
    /// connection slot (a WebSocket's is smaller). One more allocation beside the vectors'
    /// own, once per stream.
    positions: Box<TopicPositions>,
    heartbeat_ms: u64,
    /// When something was last queued (heartbeats fill silences only).
    last_queued_ms: u64,
    /// NDJSON: deliveries went out since the last cursor line.
    cursor_owed: bool,
    closed: bool,
    /// When the stream's token runs out (its `exp` plus `expiry_grace_ms`, on the shard's
    /// clock); `u64::MAX` without a token.
    ends_at_ms: u64,
}

impl StreamEndpoint {
    /// Opens a stream for `request`: its response head goes out at once, and its subscriptions
    /// are left in the context for the broker.
    pub fn open(
        request: StreamRequest,
        ends_at_ms: Option<u64>,
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> StreamEndpoint {
        let settings: &EndpointSettings = &context.settings;
        let format = match request.kind {
            StreamKind::Sse => StreamFormat::Sse,
            StreamKind::Ndjson => StreamFormat::Ndjson,
            StreamKind::Poll => unreachable!("a poll is held by the HTTP endpoint"),
        };
        let mut head = BytesMut::new();
        match format {
            StreamFormat::Sse => sse::write_head(settings.broker.sse_retry_ms, &mut head),
            StreamFormat::Ndjson => ndjson::write_head(&mut head),
        }
        outbound.push_control(head.freeze());
        let positions = Box::new(TopicPositions::new(request.topics, request.positions));
        positions.subscribe(&mut context.requests);
        StreamEndpoint {
            format,
            positions,
            heartbeat_ms: settings.broker.stream_heartbeat_ms,
            last_queued_ms: context.now_ms,
            cursor_owed: false,
            closed: false,
            ends_at_ms: ends_at_ms.unwrap_or(u64::MAX),
        }
    }

    pub fn format(&self) -> StreamFormat {
        self.format
    }

    pub fn deadline_ms(&self) -> u64 {
        match self.closed {
            true => u64::MAX,
            false => (self.last_queued_ms + self.heartbeat_ms).min(self.ends_at_ms),
        }
    }

    pub fn takes_messages(&self) -> bool {
        !self.closed
    }

    /// A silence: the heartbeat. Or the token ran out: an `expired` event, and the end.
    pub fn handle_deadline(&mut self, outbound: &mut Outbound, context: &mut Context) -> Next {
        let now_ms = context.now_ms;
        if !self.closed && now_ms >= self.ends_at_ms {
            context.counters.token_expiries += 1;
            outbound.push_control(bytes::Bytes::from_static(match self.format {
                StreamFormat::Sse => SSE_EXPIRED,
                StreamFormat::Ndjson => NDJSON_EXPIRED,
            }));
            return self.close(outbound);
        }
        if !self.closed {
            outbound.push_control(bytes::Bytes::from_static(match self.format {
                StreamFormat::Sse => sse::HEARTBEAT,
                StreamFormat::Ndjson => NDJSON_HEARTBEAT,
            }));
            self.last_queued_ms = now_ms;
        }
        Next::Continue
    }

    /// The shared framing of `message` was just queued: SSE ends the event with the stream's
    /// id. Returns whether the stream owes something at the end of the turn (NDJSON's cursor).
    pub fn took_message(
        &mut self,
        message: &Message,
        outbound: &mut Outbound,
        pool: &mut MessagePool,
        now_ms: u64,
    ) -> bool {
        self.positions.took_message(message);
        self.last_queued_ms = now_ms;
        match self.format {
            StreamFormat::Sse => {
                let event = self.event_end(pool);
                outbound.push_control(event);
                false
            }
            StreamFormat::Ndjson => {
                self.cursor_owed = true;
                true
            }
        }
    }

    /// A reply: SSE sends it as a named event with the stream's id, NDJSON as a line.
    pub fn took_reply(
        &mut self,
        reply: &Reply,
        outbound: &mut Outbound,
        pool: &mut MessagePool,
        now_ms: u64,
    ) -> bool {
        self.positions.took_reply(reply);
        self.last_queued_ms = now_ms;
        let body = reply.body();
        match self.format {
            StreamFormat::Sse => {
                let name = reply.kind.name();
                let mut id = vec_on_stack();
                let id_bytes = self.positions.write_cursor(&mut id);
                let bytes = 7
                    + name.len()
                    + 1
                    + sse::data_line_bytes(body)
                    + sse::id_and_end_bytes(id_bytes);
                let event = pool.fill(bytes, |out| {
                    sse::write_event_name(name, out);
                    sse::write_data_line(body, out);
                    sse::write_id_and_end(&id[..id_bytes], out);
                });
                outbound.push_control(event);
                false
            }
            StreamFormat::Ndjson => {
                let line = pool.fill(ndjson::line_chunk_bytes(&[body]), |out| {
                    ndjson::write_line_chunk(&[body], out)
                });
                outbound.push_control(line);
                self.cursor_owed = true;
                true
            }
        }
    }

    /// The end of the shard's turn: NDJSON's cursor line after the turn's deliveries.
    pub fn handle_turn_end(&mut self, outbound: &mut Outbound, pool: &mut MessagePool) {
        if !std::mem::take(&mut self.cursor_owed) || self.closed {
            return;
        }
        let mut cursor = vec_on_stack();
        let cursor_bytes = self.positions.write_cursor(&mut cursor);
        let parts: [&[u8]; 3] = [
            b"{\"op\":\"cursor\",\"cursor\":\"",
            &cursor[..cursor_bytes],
            b"\"}",
        ];
        let line = pool.fill(ndjson::line_chunk_bytes(&parts), |out| {
            ndjson::write_line_chunk(&parts, out)
        });
        outbound.push_control(line);
    }

    /// The server ends the stream: NDJSON's last chunk, then close once it is sent.
    pub fn close(&mut self, outbound: &mut Outbound) -> Next {
        if !self.closed {
            self.closed = true;
            if self.format == StreamFormat::Ndjson {
                outbound.push_control(bytes::Bytes::from_static(ndjson::END));
            }
        }
        Next::CloseAfterFlush
    }

    /// `id: <cursor>\n\n`, ending an SSE event whose `data:` line was just queued.
    fn event_end(&self, pool: &mut MessagePool) -> Frame {
        let mut id = vec_on_stack();
        let id_bytes = self.positions.write_cursor(&mut id);
        Frame::Shared(pool.fill(sse::id_and_end_bytes(id_bytes), |out| {
            sse::write_id_and_end(&id[..id_bytes], out)
        }))
    }
}

/// A buffer for one cursor's text, on the stack.
fn vec_on_stack() -> [u8; cursor_text_bytes_max(cursor::CURSOR_TOPICS_LIMIT)] {
    [0u8; cursor_text_bytes_max(cursor::CURSOR_TOPICS_LIMIT)]
}
