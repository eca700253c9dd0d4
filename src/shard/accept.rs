//! The shard's multishot accept into direct descriptors, and opening a connection.

use std::io;

use io_uring::{opcode, types};
use tracing::warn;

use super::connection::Connection;
use super::ring::{Completion, Operation, Tag};
use super::{LISTENER_SLOT, Shard};
use crate::endpoint::Endpoint;

impl Shard {
    pub(super) fn arm_accept(&mut self) -> io::Result<()> {
        let entry = opcode::AcceptMulti::new(types::Fixed(LISTENER_SLOT))
            .allocate_file_index(true)
            .build()
            .user_data(Tag::new(Operation::Accept, 0, 0).encode());
        self.accept_armed = true;
        // SAFETY: an accept into a direct descriptor points at no memory of ours.
        unsafe { self.ring.push(&entry) }
    }

    /// Ends the multishot accept (shutdown).
    pub(super) fn cancel_accept(&mut self) -> io::Result<()> {
        let cancel = opcode::AsyncCancel::new(Tag::new(Operation::Accept, 0, 0).encode())
            .build()
            .user_data(Tag::new(Operation::CancelAccept, 0, 0).encode());
        // SAFETY: a cancel names a request by its user data and points at no memory.
        unsafe { self.ring.push(&cancel) }
    }

    pub(super) fn handle_accept(&mut self, completion: Completion) -> io::Result<()> {
        if !completion.more() {
            self.accept_armed = false;
        }
        match completion.result {
            slot if slot >= 0 => self.open_connection(slot as u32)?,
            error => match -error {
                // The file table is full: the kernel dropped this connection and ended the
                // accept. It is re-armed when a slot frees (in `free_connection`).
                libc::ENFILE => {
                    self.counters.accept_table_full += 1;
                    self.log_table_full();
                    return Ok(());
                }
                // Cancelled at shutdown.
                libc::ECANCELED => return Ok(()),
                // Errors of the connection being accepted (reset before accept, a protocol
                // error, out of memory for its socket, the process's limits): count and go
                // on; the multishot accept usually stays armed, and is re-armed below if not.
                libc::ECONNABORTED
                | libc::EPROTO
                | libc::EPERM
                | libc::ENOMEM
                | libc::ENOBUFS
                | libc::EMFILE
                | libc::EINTR
                | libc::EAGAIN => {
                    warn!(errno = -error, "accept failed");
                }
                // Nothing else is documented for accept on a listening TCP socket; keep
                // accepting rather than end the shard over it.
                errno => warn!(errno, "accept failed with an unexpected error"),
            },
        }
        if !self.accept_armed && self.accepting {
            self.arm_accept()?;
        }
        Ok(())
    }

    fn log_table_full(&mut self) {
        let interval = self.config.log_interval_ms;
        if self
            .last_table_full_log_ms
            .is_none_or(|last| self.context.now_ms >= last + interval)
        {
            self.last_table_full_log_ms = Some(self.context.now_ms);
            warn!(
                connections = self.connection_count,
                connections_per_shard_max = self.config.connections_per_shard_max,
                refused_total = self.counters.accept_table_full,
                "connection table full: refusing connections until slots free"
            );
        }
    }

    fn open_connection(&mut self, slot: u32) -> io::Result<()> {
        let index = slot as usize;
        assert!(
            self.connections[index].is_none(),
            "kernel reused a slot we still hold"
        );
        self.generations[index] = self.generations[index].wrapping_add(1);
        let generation = self.generations[index];
        let endpoint = Endpoint::new(self.context.now_ms, &self.context.settings);
        self.connections[index] = Some(Connection::new(generation, endpoint));
        self.fanout.open_client(slot, generation);
        self.connection_count += 1;
        self.counters.connections_accepted += 1;
        self.sync_deadline(slot);
        if self.drain_deadline_ms.is_some() {
            let (now_ms, close_timeout_ms) = (self.context.now_ms, self.config.close_timeout_ms);
            self.connection_mut(slot)
                .close_after_flush(now_ms, close_timeout_ms);
            self.sync_deadline(slot);
            return self.advance_close(slot);
        }
        self.arm_receive(slot)
    }
}
