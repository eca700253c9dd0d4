//! The framings of one delivered message, one per kind of endpoint, each made at most once per
//! shard however many subscribers of that kind the shard has.
//!
//! The broker hands the shard a [`Message`] (its body encoded once by the topic's owner); each
//! subscriber's endpoint needs it framed its own way. The cache keeps the framing of the
//! message being delivered for each kind, with its entry in the shard's ledger of shared frames
//! (so that the framing's bytes count once however many queues hold it), and starts over when
//! the next message comes. A WebSocket framing costs nothing: the owner encoded the body with
//! its frame head in front, so the framing is the message itself. An SSE framing is the body as
//! a `data:` line, an NDJSON framing the body as one chunked line, each in a pooled buffer made
//! on the first delivery to such a subscriber. Polls collect messages themselves (their answer
//! is one response per client), so they have no framing.

use super::EndpointKind;
use super::outbound::{Frame, SharedFrames};
use crate::broker::Message;
use crate::broker::message_pool::MessagePool;
use crate::protocol::{ndjson, sse};

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
    sse: Option<Framing>,
    ndjson: Option<Framing>,
}

impl FrameCache {
    /// `message` framed for an endpoint of `kind`, made once and shared after that. `None` for
    /// a kind that takes no shared framing (HTTP, polls).
    pub fn frame(
        &mut self,
        kind: EndpointKind,
        message: &Message,
        pool: &mut MessagePool,
    ) -> Option<Frame> {
        self.framing(kind, message, pool)
            .map(|framing| framing.frame.clone())
    }

    /// The ledger slot of `message`'s framing for `kind`, registered on the first call: call it
    /// only when a queue is about to take the frame.
    pub fn shared_slot(
        &mut self,
        kind: EndpointKind,
        message: &Message,
        pool: &mut MessagePool,
        shared: &mut SharedFrames,
    ) -> Option<u32> {
        let framing = self.framing(kind, message, pool)?;
        match framing.slot {
            Some((slot, generation)) if shared.is_current(slot, generation) => Some(slot),
            _ => {
                let (slot, generation) = shared.register(framing.frame.memory_bytes());
                framing.slot = Some((slot, generation));
                Some(slot)
            }
        }
    }

    fn framing(
        &mut self,
        kind: EndpointKind,
        message: &Message,
        pool: &mut MessagePool,
    ) -> Option<&mut Framing> {
        if !self
            .message
            .as_ref()
            .is_some_and(|cached| cached.is_same(message))
        {
            self.message = Some(message.clone());
            self.websocket = None;
            self.sse = None;
            self.ndjson = None;
        }
        let body = message.body();
        let (cached, make): (_, &dyn Fn(&mut MessagePool) -> Frame) = match kind {
            EndpointKind::WebSocket => (&mut self.websocket, &|_| Frame::Message(message.clone())),
            EndpointKind::Sse => (&mut self.sse, &|pool| {
                Frame::Shared(pool.fill(sse::data_line_bytes(body), |out| {
                    sse::write_data_line(body, out)
                }))
            }),
            EndpointKind::Ndjson => (&mut self.ndjson, &|pool| {
                Frame::Shared(pool.fill(ndjson::line_chunk_bytes(&[body]), |out| {
                    ndjson::write_line_chunk(&[body], out)
                }))
            }),
            EndpointKind::Http | EndpointKind::Poll => return None,
        };
        Some(cached.get_or_insert_with(|| Framing {
            frame: make(pool),
            slot: None,
        }))
    }
}
