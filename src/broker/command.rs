//! What shards tell each other. The broker of one shard produces commands for the others (and
//! itself); the shard driver carries them through the mailboxes, in order per pair of shards.

use bytes::Bytes;

use super::idempotency::IdempotencyKey;
use super::message::Message;
use super::owner::{OwnerError, ReplayPage, Since, SubscribeAnswer};
use super::topic::{Epoch, TopicName};

/// A client of some shard, named so that an answer can find it again: the generation tells a
/// reused connection slot from the client that asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientRef {
    pub shard: u16,
    pub slot: u32,
    pub generation: u16,
}

/// Where the answer to a publish goes: the client that sent it, and for HTTP the ticket of the
/// response waiting for the seq. A WebSocket publish has no ticket and hears back only when the
/// owner refused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishReply {
    pub client: ClientRef,
    pub ticket: Option<u32>,
}

/// Characters of a Socket.IO session id (see `endpoint::socketio_polling`).
pub const SESSION_ID_BYTES: usize = 22;

/// Where a Socket.IO session lives: the shard that owns it, its slot there, and its whole id
/// (checked by the owner, so that a guessed slot finds nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionAddress {
    pub shard: u16,
    pub slot: u32,
    pub id: [u8; SESSION_ID_BYTES],
}

/// What a connection carrying a Socket.IO session (a long-polling request, or the WebSocket
/// the session upgrades to) asks of the session's shard. The broker never sees these: the
/// shard drivers carry them.
#[derive(Debug)]
pub enum CarrierRequest {
    /// A long-polling GET: held until packets wait (answered with an HTTP response).
    Poll { keep_alive: bool },
    /// A long-polling POST and its body (answered `ok`, 400 or 413).
    Post { body: Bytes, keep_alive: bool },
    /// A WebSocket naming the session opened (after its 101): the session's shard closes it
    /// if the session is unknown.
    Attach,
    /// The upgrading WebSocket received `2probe` (and answered `3probe` itself).
    Probe,
    /// The upgrading WebSocket received `5`: the session moves onto it.
    Upgrade,
    /// One Engine.IO packet the WebSocket carrier received (the text of one message).
    Packet(Bytes),
    /// One binary message the WebSocket carrier received (a message packet with binary
    /// data: an echo session sends it back, a Socket.IO session drops it).
    Binary(Bytes),
    /// The carrier's connection closed.
    Gone,
}

/// What a session's shard answers a carrier.
#[derive(Debug)]
pub enum CarrierAnswer {
    /// A whole HTTP response for the carrier's long-polling request.
    Response { response: Bytes, keep_alive: bool },
    /// WebSocket frames for the upgraded carrier to send.
    Frames(Bytes),
    /// The session ended: the carrier closes.
    Close,
}

/// What one thread asks of a shard.
#[derive(Debug)]
pub enum Command {
    /// For the shard itself: stop accepting, close every connection with 1001, exit after the
    /// drain deadline.
    Shutdown,
    /// To a topic's owner: number and fan out a message. `data` is one JSON value, verbatim.
    /// `reply` is `None` for publishes from outside any connection (the demo feed). With a
    /// `key` seen within the window, the first publish's seq is answered and nothing is
    /// published.
    Publish {
        topic: TopicName,
        data: Bytes,
        reply: Option<PublishReply>,
        key: Option<IdempotencyKey>,
    },
    /// To an owner: create the topics of batch `batch` that do not exist yet, all or none, so
    /// that the batch's publishes cannot be refused afterwards.
    Prepare {
        topics: Vec<TopicName>,
        client: ClientRef,
        batch: u32,
    },
    /// To the batch's shard: an owner's answer to `Prepare`.
    Prepared {
        client: ClientRef,
        batch: u32,
        result: Result<(), OwnerError>,
    },
    /// To the owner: a client of `subscriber.shard` subscribes to `topic`.
    Subscribe {
        topic: TopicName,
        subscriber: ClientRef,
        since: Option<Since>,
    },
    /// To the owner: the next page of a replay, from seq `from` of `epoch` on.
    ReplayMore {
        topic: TopicName,
        subscriber: ClientRef,
        epoch: Epoch,
        from: u64,
    },
    /// To the subscriber's shard: a page of its replay.
    Replayed {
        topic: TopicName,
        subscriber: ClientRef,
        page: ReplayPage,
    },
    /// To the owner: `shard` has no subscriber of `topic` left.
    Unsubscribe { topic: TopicName, shard: u16 },
    /// To a subscribing shard: a message the owner numbered.
    Deliver { message: Message },
    /// Clustered, from the NATS bridge to a topic's owner: message `seq` of `topic` as
    /// JetStream numbered it (published on any node), to keep and fan out. `local` when this
    /// node published it: its `message.published` webhook event is this node's to send.
    Ingest {
        topic: TopicName,
        seq: u64,
        data: Bytes,
        local: bool,
    },
    /// Clustered, from the NATS bridge to every shard, in order with `Ingest`: JetStream's
    /// history was lost (the stream was deleted and made anew); every topic starts again at 0
    /// in `epoch`.
    ClusterEpoch { epoch: Epoch },
    /// To a subscribing shard, from the owner after `ClusterEpoch` (in order with its
    /// deliveries): the topic's seqs start again at 0 in `epoch`; its subscribers get `reset`.
    TopicRestarted { topic: TopicName, epoch: Epoch },
    /// To the subscriber's shard: the owner's answer to `Subscribe`.
    Subscribed {
        topic: TopicName,
        subscriber: ClientRef,
        answer: Result<SubscribeAnswer, OwnerError>,
    },
    /// To the publisher's shard: the seq the owner gave the message, or why it refused; with
    /// the publish's key, for the acknowledgement of a WebSocket publish that had an id.
    Published {
        reply: PublishReply,
        result: Result<u64, OwnerError>,
        key: Option<IdempotencyKey>,
    },
    /// To a Socket.IO session's shard: what one of its carriers received.
    ToSession {
        session: SessionAddress,
        carrier: ClientRef,
        request: CarrierRequest,
    },
    /// To a carrier's shard: the session's answer.
    ToCarrier {
        carrier: ClientRef,
        answer: CarrierAnswer,
    },
}

impl ClientRef {
    /// One number per client, for tables keyed by client (topic creation limits).
    pub fn key(self) -> u64 {
        (u64::from(self.shard) << 48) | (u64::from(self.generation) << 32) | u64::from(self.slot)
    }
}

impl Command {
    /// Publishes wait in a queue of their own, which a shard stops taking from while it cannot
    /// hand on what they produce; everything else must always be taken (see `shard::mailbox`).
    pub fn is_publish(&self) -> bool {
        // A message from the cluster makes deliveries like a publish, so it waits for the owner's
        // room the same way (the bridge holds it meanwhile).
        matches!(
            self,
            Command::Publish { .. } | Command::Ingest { .. } | Command::ClusterEpoch { .. }
        )
    }
}
