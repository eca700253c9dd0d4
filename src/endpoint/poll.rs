//! Long and short polling (`GET /poll`): an HTTP request held until its topics have a message
//! past its cursor, then answered `{"messages":[…],"cursor":"…"}`.
//!
//! A poll subscribes to its topics from its cursor (or `since`), like a stream, and collects
//! what the broker delivers: messages, and the `reset` and `error` replies that stand where
//! history cannot serve. At the end of the shard's turn in which something was collected, it
//! answers with all of it (so a replay's page goes out in one answer, up to
//! `poll_messages_max` messages and about `outbound_queue_bytes_max` bytes) and unsubscribes;
//! the client polls again with the answer's cursor. With nothing to say, it answers when
//! `wait_ms` passes (at once for a short poll, `wait_ms=0`, once every topic's subscription was
//! answered). Messages past the limits are not lost: the cursor stops before them, and the next
//! poll replays them from history.

use super::outbound::Frame;
use super::stream::TopicPositions;
use crate::broker::message_pool::MessagePool;
use crate::broker::stream_api::StreamRequest;
use crate::broker::{BrokerRequest, Message, Reply, ReplyKind};
use crate::protocol::http1::response::{reason_phrase, write_header};

/// How long past its wait a poll may be held for its subscriptions to be answered, so that its
/// cursor names every topic's epoch (owners answer within a turn or two; this only bounds an
/// owner that is very busy).
const ANSWERS_WAIT_MS_MAX: u64 = 1_000;

/// What a poll collected, in order.
#[derive(Debug)]
enum Collected {
    Message(Message),
    Reply(Reply),
}

/// One held poll.
#[derive(Debug)]
pub struct HeldPoll {
    positions: TopicPositions,
    /// When its wait ends.
    deadline_ms: u64,
    held_ms: u64,
    /// A short poll answers as soon as every subscription was answered.
    short: bool,
    collected: Vec<Collected>,
    collected_bytes: usize,
    messages_max: usize,
    bytes_max: usize,
    keep_alive: bool,
}

impl HeldPoll {
    /// Holds `request`, leaving its subscriptions in `requests`.
    pub fn hold(
        request: StreamRequest,
        keep_alive: bool,
        now_ms: u64,
        messages_max: usize,
        bytes_max: usize,
        requests: &mut Vec<BrokerRequest>,
    ) -> HeldPoll {
        let positions = TopicPositions::new(request.topics, request.positions);
        positions.subscribe(requests);
        HeldPoll {
            positions,
            deadline_ms: now_ms.saturating_add(request.wait_ms),
            held_ms: now_ms,
            short: request.wait_ms == 0,
            collected: Vec::new(),
            collected_bytes: 0,
            messages_max,
            bytes_max,
            keep_alive,
        }
    }

    /// When the poll answers with whatever it has: at the end of its wait, once every
    /// subscription was answered (or `ANSWERS_WAIT_MS_MAX` after it was held).
    pub fn deadline_ms(&self) -> u64 {
        match self.positions.all_answered() {
            true => self.deadline_ms,
            false => self
                .deadline_ms
                .max(self.held_ms.saturating_add(ANSWERS_WAIT_MS_MAX)),
        }
    }

    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Takes a delivered message, unless the answer is full or the client has it already (a
    /// replay asked for by an earlier poll of this connection, answered late). Either way the
    /// broker counts it delivered: the cursor stops before what was not taken.
    pub fn collect(&mut self, message: &Message) {
        let messages = self
            .collected
            .iter()
            .filter(|item| matches!(item, Collected::Message(_)))
            .count();
        let full = messages >= self.messages_max
            || (messages > 0 && self.collected_bytes + message.body().len() > self.bytes_max);
        if full || self.positions.has(message) {
            return;
        }
        self.positions.took_message(message);
        self.collected_bytes += message.body().len() + 1;
        self.collected.push(Collected::Message(message.clone()));
    }

    /// Takes a reply: `reset` and `error` go into the answer; every reply moves the cursor.
    pub fn collect_reply(&mut self, reply: &Reply) {
        self.positions.took_reply(reply);
        if matches!(reply.kind, ReplyKind::Reset | ReplyKind::Error) {
            self.collected_bytes += reply.body().len() + 1;
            self.collected.push(Collected::Reply(reply.clone()));
        }
    }

    /// Whether the poll has its answer: every subscription answered (so that the cursor names
    /// each topic's epoch and where the client stands), and something collected or a short
    /// poll. A topic whose owner answers first does not hurry the answer past the others.
    pub fn is_ready(&self) -> bool {
        self.positions.all_answered() && (!self.collected.is_empty() || self.short)
    }

    /// The answer, `200 {"messages":[…],"cursor":"…"}`, in a pooled buffer; the subscriptions
    /// to end go into `requests`.
    pub fn answer(self, pool: &mut MessagePool, requests: &mut Vec<BrokerRequest>) -> Frame {
        self.positions.unsubscribe(requests);
        let mut cursor = [0u8; crate::broker::cursor::cursor_text_bytes_max(
            crate::broker::cursor::CURSOR_TOPICS_LIMIT,
        )];
        let cursor_bytes = self.positions.write_cursor(&mut cursor);
        let cursor = &cursor[..cursor_bytes];
        let items: usize = self
            .collected
            .iter()
            .map(|item| item_body(item).len())
            .sum();
        let separators = self.collected.len().saturating_sub(1);
        let body_bytes =
            PREFIX.len() + items + separators + MIDDLE.len() + cursor.len() + SUFFIX.len();
        let mut head = bytes::BytesMut::new();
        write_head(body_bytes, self.keep_alive, &mut head);
        Frame::Shared(pool.fill(head.len() + body_bytes, |out| {
            out.extend_from_slice(&head);
            out.extend_from_slice(PREFIX);
            for (index, item) in self.collected.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(item_body(item));
            }
            out.extend_from_slice(MIDDLE);
            out.extend_from_slice(cursor);
            out.extend_from_slice(SUFFIX);
        }))
    }
}

const PREFIX: &[u8] = b"{\"messages\":[";
const MIDDLE: &[u8] = b"],\"cursor\":\"";
const SUFFIX: &[u8] = b"\"}";

fn item_body(item: &Collected) -> &[u8] {
    match item {
        Collected::Message(message) => message.body(),
        Collected::Reply(reply) => reply.body(),
    }
}

fn write_head(body_bytes: usize, keep_alive: bool, out: &mut bytes::BytesMut) {
    out.extend_from_slice(b"HTTP/1.1 200 ");
    out.extend_from_slice(reason_phrase(200).as_bytes());
    out.extend_from_slice(b"\r\n");
    write_header("Content-Type", "application/json", out);
    write_header("Cache-Control", "no-cache, no-store", out);
    write_header(
        "Content-Length",
        itoa::Buffer::new().format(body_bytes),
        out,
    );
    write_header(
        "Connection",
        if keep_alive { "keep-alive" } else { "close" },
        out,
    );
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::cursor;
    use crate::broker::owner::Since;
    use crate::broker::stream_api::StreamKind;
    use crate::broker::topic::{Epoch, TopicName};
    use crate::protocol::websocket::frame::FrameEncoder;

    fn topic(name: &str) -> TopicName {
        TopicName::copy_from(name.as_bytes(), 128).unwrap()
    }

    fn poll_from_zero(topics: &[TopicName], wait_ms: u64) -> HeldPoll {
        let from_zero = Some(Since {
            seq: 0,
            epoch: None,
        });
        let request = StreamRequest {
            kind: StreamKind::Poll,
            topics: topics.to_vec(),
            positions: vec![from_zero; topics.len()],
            wait_ms,
        };
        HeldPoll::hold(request, true, 1_000, 100, 1 << 20, &mut Vec::new())
    }

    fn cursor_of(answer: &Frame, topics: &[TopicName]) -> Vec<cursor::Position> {
        let text = std::str::from_utf8(answer.as_slice()).unwrap();
        let start = text.find("\"cursor\":\"").unwrap() + "\"cursor\":\"".len();
        let end = start + text[start..].find('"').unwrap();
        cursor::decode(&text[start..end], topics).unwrap()
    }

    /// Regression: one topic's owner answered with a replay while the other's had not yet
    /// answered; the poll answered at once, its cursor dropped the other topic's `since`, and
    /// the next poll resumed that topic at its latest message: the client lost messages.
    #[test]
    fn a_poll_answers_once_every_topic_answered_and_its_cursor_keeps_unanswered_sinces() {
        let topics = [topic("AAPL"), topic("EUR/USD")];
        let mut encoder = FrameEncoder::new(64);
        let mut pool = MessagePool::new(1 << 20);
        let mut poll = poll_from_zero(&topics, 100);
        poll.collect_reply(&Reply::subscribed(&mut encoder, &topics[0], 3, Epoch(7)));
        for seq in 1..=3 {
            poll.collect(&Message::new(&topics[0], seq, b"{}"));
        }
        assert!(!poll.is_ready(), "EUR/USD has not answered");
        assert_eq!(poll.deadline_ms(), 1_000 + ANSWERS_WAIT_MS_MAX);

        // Its owner never answers in time: the answer keeps EUR/USD's `since` as asked.
        let answer = poll.answer(&mut pool, &mut Vec::new());
        let positions = cursor_of(&answer, &topics);
        let at = |seq, epoch| Some(Since { seq, epoch });
        assert_eq!(positions, vec![at(3, Some(Epoch(7))), at(0, None)]);

        // Its owner answers: the poll is ready, and its cursor names both epochs.
        let mut poll = poll_from_zero(&topics, 100);
        poll.collect_reply(&Reply::subscribed(&mut encoder, &topics[0], 3, Epoch(7)));
        poll.collect(&Message::new(&topics[0], 1, b"{}"));
        poll.collect_reply(&Reply::subscribed(&mut encoder, &topics[1], 2, Epoch(9)));
        poll.collect(&Message::new(&topics[1], 1, b"{}"));
        assert!(poll.is_ready());
        assert_eq!(poll.deadline_ms(), 1_100);
        let answer = poll.answer(&mut pool, &mut Vec::new());
        let positions = cursor_of(&answer, &topics);
        assert_eq!(
            positions,
            vec![at(1, Some(Epoch(7))), at(1, Some(Epoch(9)))]
        );
    }
}
