//! The framings of one delivered message, one per kind of endpoint, each made at most once per
//! shard however many subscribers of that kind the shard has.
//!
//! The broker hands the shard a [`Message`] (its body encoded once by the topic's owner); each
//! subscriber's endpoint needs it framed its own way. The cache keeps the framing of the
//! message being delivered for each kind, and starts over when the next message comes. A
//! WebSocket framing costs nothing: the owner encoded the body with its frame head in front.

use bytes::Bytes;

use super::EndpointKind;
use crate::broker::{Message, Reply};

/// The framings of the message being delivered.
#[derive(Debug, Default)]
pub struct FrameCache {
    /// The message the entries below belong to.
    message: Option<Message>,
    websocket: Option<Bytes>,
}

impl FrameCache {
    /// `message` framed for an endpoint of `kind`, made once and shared after that.
    pub fn frame(&mut self, kind: EndpointKind, message: &Message) -> Bytes {
        if !self
            .message
            .as_ref()
            .is_some_and(|cached| cached.is_same(message))
        {
            self.message = Some(message.clone());
            self.websocket = None;
        }
        match kind {
            EndpointKind::WebSocket => self
                .websocket
                .get_or_insert_with(|| message.websocket_frame())
                .clone(),
            // HTTP connections subscribe to nothing; the broker never delivers to them.
            EndpointKind::Http => Bytes::new(),
        }
    }
}

/// A reply to one client framed for its endpoint; `None` for an endpoint that takes no
/// replies.
pub fn reply_frame(kind: EndpointKind, reply: &Reply) -> Option<Bytes> {
    match kind {
        EndpointKind::WebSocket => Some(reply.websocket_frame().clone()),
        EndpointKind::Http => None,
    }
}
