//! The fanout floor: enough of ringcast's JSON protocol for the `fanout` scenario, and per
//! delivery nothing but one `IORING_OP_SEND` of a frame encoded once per publish.
//!
//! - `{"op":"subscribe","topics":[…]}` → `{"op":"subscribed","topic":…,"seq":N}` per topic
//!   (N: the topic's latest seq);
//! - `{"op":"publish","topic":…,"data":…}` → the topic's next seq, and
//!   `{"topic":…,"seq":N,"data":…}` (data verbatim) framed once and sent to every subscriber.
//!
//! Anything else is ignored. No history, no unsubscribe, no HTTP, no slow-consumer policy
//! beyond the server loop's queue bound.

use std::collections::HashMap;
use std::rc::Rc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::server::{Core, Service};
use crate::websocket::frame;

/// A client request, as far as the floor reads one.
#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    op: &'a str,
    #[serde(default, borrow)]
    topic: Option<&'a str>,
    #[serde(default, borrow)]
    topics: Vec<&'a str>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Default)]
struct Topic {
    seq: u64,
    subscribers: Vec<u32>,
}

#[derive(Default)]
pub struct Fanout {
    topics: HashMap<String, Topic>,
    /// The topics each connection subscribed to, to leave them when it closes.
    subscriptions: HashMap<u32, Vec<String>>,
    /// Scratch for encoding replies and messages.
    text: Vec<u8>,
    frame: Vec<u8>,
}

impl Fanout {
    fn subscribe(&mut self, core: &mut Core, slot: u32, names: &[&str]) {
        for name in names {
            let topic = self.topics.entry((*name).to_owned()).or_default();
            topic.subscribers.push(slot);
            let seq = topic.seq;
            self.subscriptions
                .entry(slot)
                .or_default()
                .push((*name).to_owned());
            self.text.clear();
            self.text
                .extend_from_slice(b"{\"op\":\"subscribed\",\"topic\":");
            serde_json::to_writer(&mut self.text, name).expect("writing to a Vec cannot fail");
            self.text.extend_from_slice(b",\"seq\":");
            self.text.extend_from_slice(seq.to_string().as_bytes());
            self.text.push(b'}');
            self.frame.clear();
            frame::write_frame(&mut self.frame, frame::TEXT, &self.text, None);
            core.send_owned(slot, &self.frame);
        }
    }

    fn publish(&mut self, core: &mut Core, name: &str, data: &RawValue) {
        let topic = self.topics.entry(name.to_owned()).or_default();
        topic.seq += 1;
        self.text.clear();
        self.text.extend_from_slice(b"{\"topic\":");
        serde_json::to_writer(&mut self.text, name).expect("writing to a Vec cannot fail");
        self.text.extend_from_slice(b",\"seq\":");
        self.text
            .extend_from_slice(topic.seq.to_string().as_bytes());
        self.text.extend_from_slice(b",\"data\":");
        self.text.extend_from_slice(data.get().as_bytes());
        self.text.push(b'}');
        self.frame.clear();
        frame::write_frame(&mut self.frame, frame::TEXT, &self.text, None);
        let shared: Rc<[u8]> = Rc::from(self.frame.as_slice());
        for subscriber in &topic.subscribers {
            // A failed submission means the ring is gone; the loop reports that next turn.
            let _ = core.send_shared(*subscriber, &shared);
        }
    }
}

impl Service for Fanout {
    fn message(&mut self, core: &mut Core, slot: u32, text: bool, payload: &[u8]) {
        if !text {
            return;
        }
        let Ok(request) = serde_json::from_slice::<Request>(payload) else {
            return;
        };
        match (request.op, request.topic, request.data) {
            ("subscribe", _, _) => self.subscribe(core, slot, &request.topics),
            ("publish", Some(topic), Some(data)) => self.publish(core, topic, data),
            _ => {}
        }
    }

    fn closed(&mut self, slot: u32) {
        for name in self.subscriptions.remove(&slot).unwrap_or_default() {
            if let Some(topic) = self.topics.get_mut(&name)
                && let Some(position) = topic.subscribers.iter().position(|s| *s == slot)
            {
                topic.subscribers.swap_remove(position);
            }
        }
    }
}
