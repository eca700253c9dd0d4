//! The seam between a shard's broker and its connections: what the broker asks of the clients
//! it serves ([`Clients`]), the bounds of one client's queue ([`QueueLimits`]) and what all of
//! a shard's queues hold ([`ShardMemory`]). The shard implements `Clients` over its
//! connections; the broker's tests over plain vectors.

use super::message::{Message, Reply};
use super::owner::OwnerError;
use crate::protocol::CloseCode;

/// The bounds of one client's queue of things to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    pub bytes_max: usize,
    pub frames_max: usize,
}

impl QueueLimits {
    /// Half of each bound: a paused or slow client is resumed once its queue is below it, so that
    /// it does not flap at the limit.
    pub fn half(self) -> QueueLimits {
        QueueLimits {
            bytes_max: self.bytes_max / 2,
            frames_max: self.frames_max / 2,
        }
    }
}

/// What all of a shard's queues hold in memory (each shared frame once) and how many hold
/// anything: what the shard's budget is checked against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardMemory {
    pub bytes: u64,
    pub nonempty_queues: u32,
}

/// Transports a client may read through, for the per-transport counters (the endpoint layer
/// names them: WebSocket, SSE, NDJSON stream, poll, Socket.IO).
pub const TRANSPORT_COUNT: usize = 5;

/// The clients of a shard as the broker sees them: queues to fill and connections to close.
/// Clients are named by their slot; the broker never names a slot it was not told is open.
pub trait Clients {
    /// A hint that `client` is reached a few steps from now (see
    /// [`crate::protocol::prefetch`]): its state may start loading. Nothing else.
    fn prefetch(&self, _client: u32) {}

    /// Whether the client takes messages now: open, and not closing.
    fn takes_messages(&self, client: u32) -> bool;

    /// Which of [`TRANSPORT_COUNT`] transports the client reads through, for the counters.
    fn transport(&self, _client: u32) -> usize {
        0
    }
    /// Queues `message` framed for the client's endpoint if its queue is within `limits` (an
    /// empty queue takes any message, so one larger than the limit still goes out to a client
    /// that keeps up). Returns whether it was queued.
    fn offer(&mut self, client: u32, message: &Message, limits: QueueLimits) -> bool;
    /// Queues `message` whatever the queue holds (replay, a conflated message released).
    fn push(&mut self, client: u32, message: &Message);
    /// Whether the client's queue is within `limits`.
    fn is_within(&self, client: u32, limits: QueueLimits) -> bool;
    /// The bytes queued to the client and not yet sent: how far behind it is.
    fn queued_bytes(&self, client: u32) -> usize;
    /// What all of the shard's queues hold.
    fn memory(&self) -> ShardMemory;
    /// Queues a reply; replies are never refused.
    fn reply(&mut self, client: u32, reply: &Reply);
    /// The owner numbered (or refused) the HTTP publish waiting under `ticket`.
    fn answer_publish(&mut self, client: u32, ticket: u32, result: Result<u64, OwnerError>);
    /// Closes the client's connection with `code` and `reason`.
    fn close(&mut self, client: u32, code: CloseCode, reason: &'static str);
}
