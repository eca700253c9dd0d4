//! The broker's view of this shard's connections: [`ShardClients`] implements
//! `broker::Clients` over the connection table, framing each delivery for the connection's
//! endpoint through the shard's frame cache and listing connections for the next send.

use bytes::Bytes;

use super::connection::Connection;
use crate::broker::{Clients, Message, QueueLimits, Reply};
use crate::endpoint::frame_cache::{FrameCache, reply_frame};
use crate::endpoint::{Context, Next};
use crate::protocol::CloseCode;

/// The parts of a shard the broker's decisions reach, borrowed apart from the broker itself.
pub(super) struct ShardClients<'a> {
    pub connections: &'a mut [Option<Connection>],
    pub context: &'a mut Context,
    pub send_list: &'a mut Vec<u32>,
    /// Connections whose state changed beyond their queue, for `after_activity`.
    pub touched: &'a mut Vec<u32>,
    pub frame_cache: &'a mut FrameCache,
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
            frame_cache: &mut $shard.frame_cache,
            close_timeout_ms: $shard.config.close_timeout_ms,
        }
    };
}
pub(super) use shard_clients;

impl ShardClients<'_> {
    fn connection(&mut self, client: u32) -> &mut Connection {
        self.connections[client as usize]
            .as_mut()
            .expect("the broker names only open clients")
    }

    /// Queues `frame` and lists the connection for the next send.
    fn queue(&mut self, client: u32, frame: Bytes) -> usize {
        let bytes = frame.len();
        let connection = self.connections[client as usize]
            .as_mut()
            .expect("the broker names only open clients");
        connection.outbound.push_control(frame);
        list_for_send(connection, client, self.send_list);
        bytes
    }

    /// Acts on what the connection's endpoint asked for after the broker reached it.
    fn follow(&mut self, client: u32, next: Next) {
        // Closing and answering never ask for an immediate shutdown (only a deadline does).
        debug_assert_ne!(next, Next::ShutDownNow);
        let (now_ms, close_timeout_ms) = (self.context.now_ms, self.close_timeout_ms);
        let _ = self
            .connection(client)
            .follow(next, now_ms, close_timeout_ms);
        self.touched.push(client);
    }
}

impl Clients for ShardClients<'_> {
    fn takes_messages(&self, client: u32) -> bool {
        self.connections[client as usize]
            .as_ref()
            .is_some_and(Connection::takes_messages)
    }

    fn offer(&mut self, client: u32, message: &Message, limits: QueueLimits) -> Option<usize> {
        let connection = self.connections[client as usize]
            .as_mut()
            .expect("the broker names only open clients");
        let frame = self.frame_cache.frame(connection.endpoint.kind(), message);
        let bytes = frame.len();
        connection
            .outbound
            .push(frame, limits.bytes_max, limits.frames_max)
            .ok()?;
        list_for_send(connection, client, self.send_list);
        Some(bytes)
    }

    fn push(&mut self, client: u32, message: &Message) -> usize {
        let kind = self.connection(client).endpoint.kind();
        let frame = self.frame_cache.frame(kind, message);
        self.queue(client, frame)
    }

    fn is_within(&self, client: u32, limits: QueueLimits) -> bool {
        self.connections[client as usize]
            .as_ref()
            .is_some_and(|connection| {
                !connection
                    .outbound
                    .is_over(limits.bytes_max, limits.frames_max)
            })
    }

    fn reply(&mut self, client: u32, reply: &Reply) {
        let kind = self.connection(client).endpoint.kind();
        if let Some(frame) = reply_frame(kind, reply) {
            self.queue(client, frame);
        }
    }

    fn answer_publish(&mut self, client: u32, ticket: u32, result: Result<u64, &'static str>) {
        let connection = self.connection(client);
        let next = connection
            .endpoint
            .answer_publish(ticket, result, &mut connection.outbound);
        self.follow(client, next);
    }

    fn close(&mut self, client: u32, code: CloseCode, reason: &'static str) {
        let connections = &mut *self.connections;
        let connection = connections[client as usize]
            .as_mut()
            .expect("the broker names only open clients");
        let next = connection
            .endpoint
            .close(code, reason, &mut connection.outbound, self.context);
        self.follow(client, next);
    }
}

/// Lists `connection` for the next send, once.
pub(super) fn list_for_send(connection: &mut Connection, slot: u32, send_list: &mut Vec<u32>) {
    if !connection.send_listed {
        connection.send_listed = true;
        send_list.push(slot);
    }
}
