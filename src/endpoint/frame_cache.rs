//! The framings of one delivered message, one per kind of endpoint, each made at most once per
//! shard however many subscribers of that kind the shard has.
//!
//! The broker hands the shard a [`Message`] (its body encoded once by the topic's owner); each
//! subscriber's endpoint needs it framed its own way. The cache keeps the framing of the
//! message being delivered for each kind, with its entry in the shard's ledger of shared frames
//! (so that the framing's bytes count once however many queues hold it), and starts over when
//! the next message comes. A WebSocket framing costs nothing: the owner encoded the body with
//! its frame head in front: the framing is the message itself.

use bytes::Bytes;

use super::EndpointKind;
use super::outbound::{Frame, SharedFrames};
use crate::broker::{Message, Reply};

/// One kind's framing of the message being delivered.
#[derive(Debug)]
struct Framing {
    frame: Frame,
    /// Its entry in the ledger (slot and generation), registered when the first queue takes
    /// it, and again if every queue let it go before this message's delivery is over.
    slot: Option<(u32, u32)>,
}

/// The framings of the message being delivered.
#[derive(Debug, Default)]
pub struct FrameCache {
    /// The message the entries below belong to.
    message: Option<Message>,
    websocket: Option<Framing>,
}

impl FrameCache {
    /// `message` framed for an endpoint of `kind`, made once and shared after that. `None` for
    /// a kind that takes no messages.
    pub fn frame(&mut self, kind: EndpointKind, message: &Message) -> Option<Frame> {
        self.framing(kind, message)
            .map(|framing| framing.frame.clone())
    }

    /// The ledger slot of `message`'s framing for `kind`, registered on the first call: call it
    /// only when a queue is about to take the frame.
    pub fn shared_slot(
        &mut self,
        kind: EndpointKind,
        message: &Message,
        shared: &mut SharedFrames,
    ) -> Option<u32> {
        let framing = self.framing(kind, message)?;
        match framing.slot {
            Some((slot, generation)) if shared.is_current(slot, generation) => Some(slot),
            _ => {
                let (slot, generation) = shared.register(framing.frame.len());
                framing.slot = Some((slot, generation));
                Some(slot)
            }
        }
    }

    fn framing(&mut self, kind: EndpointKind, message: &Message) -> Option<&mut Framing> {
        if !self
            .message
            .as_ref()
            .is_some_and(|cached| cached.is_same(message))
        {
            self.message = Some(message.clone());
            self.websocket = None;
        }
        match kind {
            EndpointKind::WebSocket => Some(self.websocket.get_or_insert_with(|| Framing {
                frame: Frame::Message(message.clone()),
                slot: None,
            })),
            // HTTP connections subscribe to nothing; the broker never delivers to them.
            EndpointKind::Http => None,
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
