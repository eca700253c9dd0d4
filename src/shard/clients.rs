//! The broker's view of this shard's connections: [`ShardClients`] implements
//! `broker::Clients` over the connection table, framing each delivery for the connection's
//! endpoint through the shard's frame cache, counting each shared frame once in the shard's
//! queue memory, and listing connections for the next send and for the end of the turn.

use super::connection::{Connection, ConnectionTable, Flag};
use crate::broker::owner::OwnerError;
use crate::broker::{Clients, Message, QueueLimits, Reply, ShardMemory};
use crate::endpoint::frame_cache::FrameCache;
use crate::endpoint::outbound::QueueMemory;
use crate::endpoint::{Context, EndpointKind, Next};
use crate::protocol::CloseCode;

/// The parts of a shard the broker's decisions reach, borrowed apart from the broker itself.
pub(super) struct ShardClients<'a> {
    pub connections: &'a mut ConnectionTable,
    pub context: &'a mut Context,
    pub send_list: &'a mut Vec<u32>,
    /// Connections whose state changed beyond their queue, for `after_activity`.
    pub touched: &'a mut Vec<u32>,
    /// Connections whose endpoint owes something at the end of the turn.
    pub turn_list: &'a mut Vec<u32>,
    /// Deliveries per transport (`EndpointKind::TRANSPORTS`).
    pub deliveries: &'a mut [u64; crate::broker::TRANSPORT_COUNT],
    pub frame_cache: &'a mut FrameCache,
    pub memory: &'a mut QueueMemory,
    pub close_timeout_ms: u64,
}

/// Borrows the parts of `$shard` (a `Shard`) that make its `ShardClients`, leaving its broker
/// free to be borrowed beside them.
macro_rules! shard_clients {
    ($shard:expr) => {
        $crate::shard::clients::ShardClients {
            connections: &mut $shard.connections,
            context: &mut $shard.context,
            send_list: &mut $shard.send_list,
            touched: &mut $shard.touched,
            turn_list: &mut $shard.turn_list,
            deliveries: &mut $shard.counters.transport_deliveries,
            frame_cache: &mut $shard.frame_cache,
            memory: &mut $shard.queue_memory,
            close_timeout_ms: $shard.config.close_timeout_ms,
        }
    };
}
pub(super) use shard_clients;

impl ShardClients<'_> {
    fn connection(&self, client: u32) -> &Connection {
        self.connections[client as usize]
            .as_ref()
            .expect("the broker names only open clients")
    }

    /// Queues `message` to `client`, counted once in the shard's memory, unless `limits` say
    /// there is no room. Returns whether it was queued.
    fn queue_message(
        &mut self,
        client: u32,
        message: &Message,
        limits: Option<QueueLimits>,
    ) -> bool {
        let connection = self.connections[client as usize]
            .as_mut()
            .expect("the broker names only open clients");
        let kind = connection.endpoint.kind();
        if let Some(index) = kind.transport_index() {
            self.deliveries[index] += 1;
        }
        if kind == EndpointKind::Poll {
            // A poll collects the message into its answer (or leaves it for the next poll).
            connection
                .endpoint
                .took_message(message, &mut connection.outbound, self.context);
            turn_list(connection, client, self.turn_list);
            return true;
        }
        let compression_bytes_min = self.context.settings.protocol.compression_message_bytes_min;
        let key = connection
            .endpoint
            .framing_key(message, compression_bytes_min);
        let pool = &mut self.context.frames;
        let compressors = &mut self.context.compressors;
        let Some(frame) = self.frame_cache.frame(key, message, pool, compressors) else {
            return false;
        };
        if limits.is_some_and(|limits| !connection.outbound.has_room(frame.len(), limits)) {
            return false;
        }
        let Some(slot) =
            self.frame_cache
                .shared_slot(key, message, pool, compressors, &mut self.memory.shared)
        else {
            return false;
        };
        connection
            .outbound
            .push_shared_always(frame, slot, &mut self.memory.shared);
        if connection
            .endpoint
            .took_message(message, &mut connection.outbound, self.context)
        {
            turn_list(connection, client, self.turn_list);
        }
        queued(
            connection,
            client,
            self.memory,
            self.send_list,
            self.context.now_ms,
        );
        true
    }

    /// Hands `reply` to `client`'s endpoint, which queues it in its own framing.
    fn queue_reply(&mut self, client: u32, reply: &Reply) {
        let connection = self.connections[client as usize]
            .as_mut()
            .expect("the broker names only open clients");
        if connection
            .endpoint
            .reply(reply, &mut connection.outbound, self.context)
        {
            turn_list(connection, client, self.turn_list);
        }
        queued(
            connection,
            client,
            self.memory,
            self.send_list,
            self.context.now_ms,
        );
    }

    /// Acts on what the connection's endpoint asked for after the broker reached it.
    fn follow(&mut self, client: u32, next: Next) {
        // Closing and answering never ask for an immediate shutdown (only a deadline does).
        debug_assert_ne!(next, Next::ShutDownNow);
        let (now_ms, close_timeout_ms) = (self.context.now_ms, self.close_timeout_ms);
        let connection = self.connections[client as usize]
            .as_mut()
            .expect("the broker names only open clients");
        let _ = connection.follow(next, now_ms, close_timeout_ms);
        queued(connection, client, self.memory, self.send_list, now_ms);
        self.touched.push(client);
    }
}

impl Clients for ShardClients<'_> {
    fn prefetch(&self, client: u32) {
        self.connections.prefetch(client as usize);
    }

    fn takes_messages(&self, client: u32) -> bool {
        self.connections[client as usize]
            .as_ref()
            .is_some_and(Connection::takes_messages)
    }

    fn transport(&self, client: u32) -> usize {
        self.connection(client)
            .endpoint
            .kind()
            .transport_index()
            .unwrap_or(0)
    }

    fn offer(&mut self, client: u32, message: &Message, limits: QueueLimits) -> bool {
        self.queue_message(client, message, Some(limits))
    }

    fn push(&mut self, client: u32, message: &Message) {
        self.queue_message(client, message, None);
    }

    fn is_within(&self, client: u32, limits: QueueLimits) -> bool {
        !self.connection(client).outbound.is_over(limits)
    }

    fn queued_bytes(&self, client: u32) -> usize {
        self.connection(client).outbound.queued_bytes()
    }

    fn memory(&self) -> ShardMemory {
        ShardMemory {
            bytes: self.memory.bytes(),
            nonempty_queues: self.memory.nonempty_queues(),
        }
    }

    fn reply(&mut self, client: u32, reply: &Reply) {
        self.queue_reply(client, reply);
    }

    fn answer_publish(&mut self, client: u32, ticket: u32, result: Result<u64, OwnerError>) {
        let connection = self.connections[client as usize]
            .as_mut()
            .expect("the broker names only open clients");
        let next = connection.endpoint.answer_publish(
            ticket,
            result,
            &mut connection.outbound,
            self.context,
        );
        self.follow(client, next);
    }

    fn close(&mut self, client: u32, code: CloseCode, reason: &'static str) {
        let connection = self.connections[client as usize]
            .as_mut()
            .expect("the broker names only open clients");
        let next = connection
            .endpoint
            .close(code, reason, &mut connection.outbound, self.context);
        self.follow(client, next);
    }
}

/// After `connection`'s queue grew: its memory counted, and listed for the next send.
fn queued(
    connection: &mut Connection,
    slot: u32,
    memory: &mut QueueMemory,
    send_list: &mut Vec<u32>,
    now_ms: u64,
) {
    connection.account(memory, now_ms);
    list_for_send(connection, slot, send_list);
}

/// Lists `connection` for the end of the turn, once.
fn turn_list(connection: &mut Connection, slot: u32, turn_list: &mut Vec<u32>) {
    if !connection.flag(Flag::TurnListed) {
        connection.set_flag(Flag::TurnListed, true);
        turn_list.push(slot);
    }
}

/// Lists `connection` for the next send, once.
/// A session with frames queued is listed too: its carrier, if any, takes them then.
pub(super) fn list_for_send(connection: &mut Connection, slot: u32, send_list: &mut Vec<u32>) {
    let session_queued = connection.flag(Flag::Detached) && !connection.outbound.is_empty();
    if !connection.flag(Flag::SendListed) && (connection.has_sendable() || session_queued) {
        connection.set_flag(Flag::SendListed, true);
        send_list.push(slot);
    }
}
