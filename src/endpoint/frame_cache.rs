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
//!
//! A WebSocket subscriber that negotiated permessage-deflate takes the body compressed, as a
//! text frame with RSV1, in a pooled buffer: compressed once per shard for each window size in
//! use (nearly always only 15 bits) on the first delivery to such a subscriber, and shared by
//! all of them. That is what `server_no_context_takeover` buys: no frame depends on what the
//! connection was sent before.
//!
//! A Socket.IO subscriber takes the body as the event `42["message",<body>]` in one WebSocket
//! text frame, in a pooled buffer made on the first delivery to such a subscriber; one that is
//! subscribed to that topic alone takes `42["message",<body>,"<offset>"]` instead, its
//! connection-state recovery offset being the same as every other such subscriber's (the
//! topic's epoch and the message's seq), so that it needs no `cursor` event of its own.

use super::EndpointKind;
use super::outbound::{Frame, SharedFrames};
use super::socketio;
use crate::broker::Message;
use crate::broker::message_pool::MessagePool;
use crate::broker::topic::Epoch;
use crate::protocol::websocket::deflate::{
    COMPRESSION_WINDOW_BITS_MIN, CompressorSet, WINDOW_BITS_MAX,
};
use crate::protocol::websocket::frame::{HEAD_BYTES_MAX, compressed_text_frame_head};
use crate::protocol::{ndjson, sse};

/// How many compressor windows a compressed framing may be made for (9 to 15 bits).
const COMPRESSED_WINDOWS_COUNT: usize =
    (WINDOW_BITS_MAX - COMPRESSION_WINDOW_BITS_MIN) as usize + 1;

/// Which framing of a message a subscriber takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingKey {
    /// The plain framing of an endpoint kind.
    Plain(EndpointKind),
    /// A WebSocket text frame compressed with a window of this many bits (9–15).
    CompressedWebSocket(u8),
    /// The Socket.IO framing carrying the offset of a client of the message's topic alone,
    /// standing at the message in this epoch.
    SocketIoWithOffset(Epoch),
}

/// What compressed framings are made with: the shard's compressors.
pub type Compressors<'a> = &'a mut CompressorSet;

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
    socketio: Option<Framing>,
    /// Nearly always one epoch per topic: a second replaces the first (it is still counted
    /// in the ledger by the queues that took it).
    socketio_with_offset: Option<(Epoch, Framing)>,
    compressed: [Option<Framing>; COMPRESSED_WINDOWS_COUNT],
}

impl FrameCache {
    /// `message` framed for an endpoint of `kind`, made once and shared after that. `None` for
    /// a kind that takes no shared framing (HTTP, polls).
    pub fn frame(
        &mut self,
        key: FramingKey,
        message: &Message,
        pool: &mut MessagePool,
        compressors: Compressors<'_>,
    ) -> Option<Frame> {
        self.framing(key, message, pool, compressors)
            .map(|framing| framing.frame.clone())
    }

    /// The ledger slot of `message`'s framing for `kind`, registered on the first call: call it
    /// only when a queue is about to take the frame.
    pub fn shared_slot(
        &mut self,
        key: FramingKey,
        message: &Message,
        pool: &mut MessagePool,
        compressors: Compressors<'_>,
        shared: &mut SharedFrames,
    ) -> Option<u32> {
        let framing = self.framing(key, message, pool, compressors)?;
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
        key: FramingKey,
        message: &Message,
        pool: &mut MessagePool,
        compressors: Compressors<'_>,
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
            self.socketio = None;
            self.socketio_with_offset = None;
            self.compressed = Default::default();
        }
        let kind = match key {
            FramingKey::Plain(kind) => kind,
            FramingKey::SocketIoWithOffset(epoch) => {
                let cached = &mut self.socketio_with_offset;
                if cached
                    .as_ref()
                    .is_none_or(|(made_for, _)| *made_for != epoch)
                {
                    let offset = socketio::OneTopicOffset::new(message, epoch);
                    let body = message.body();
                    let frame = Frame::Shared(pool.fill(offset.message_frame_bytes(body), |out| {
                        offset.write_message_frame(body, out)
                    }));
                    *cached = Some((epoch, Framing { frame, slot: None }));
                }
                return cached.as_mut().map(|(_, framing)| framing);
            }
            FramingKey::CompressedWebSocket(window_bits) => {
                let index = usize::from(window_bits - COMPRESSION_WINDOW_BITS_MIN);
                return Some(self.compressed[index].get_or_insert_with(|| Framing {
                    frame: compressed_frame(message, window_bits, pool, compressors),
                    slot: None,
                }));
            }
        };
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
            EndpointKind::SocketIo => (&mut self.socketio, &|pool| {
                Frame::Shared(pool.fill(socketio::message_frame_bytes(body), |out| {
                    socketio::write_message_frame(body, out)
                }))
            }),
            EndpointKind::Http | EndpointKind::Poll | EndpointKind::EngineCarrier => return None,
        };
        Some(cached.get_or_insert_with(|| Framing {
            frame: make(pool),
            slot: None,
        }))
    }
}

/// `message`'s body compressed for a window of `window_bits`, as one text frame with RSV1, in
/// a pooled buffer.
fn compressed_frame(
    message: &Message,
    window_bits: u8,
    pool: &mut MessagePool,
    compressors: &mut CompressorSet,
) -> Frame {
    let payload = compressors.compress(message.body(), window_bits);
    let mut head = [0u8; HEAD_BYTES_MAX];
    let head_bytes = compressed_text_frame_head(payload.len(), &mut head);
    Frame::Shared(pool.fill(head_bytes + payload.len(), |out| {
        out.extend_from_slice(&head[..head_bytes]);
        out.extend_from_slice(payload);
    }))
}
