//! One connection as the shard driver sees it: the endpoint that speaks its protocol, the
//! transport under it, the queue of bytes to send, and where its ring operations and close
//! sequence stand.
//!
//! Nothing here touches the ring: the shard reads these fields to decide which operations to
//! submit, and updates them from their completions.

use crate::endpoint::outbound::{Outbound, QueueMemory, Reported};
use crate::endpoint::{Endpoint, EndpointKind, Next};
use crate::protocol::prefetch::prefetch;
use crate::transport::Transport;

/// Where a connection's close sequence stands. Sockets are shut down before their descriptor is
/// closed: an armed multishot receive otherwise keeps the socket open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closing {
    Open,
    /// Send what is queued, then shut down.
    AfterFlush,
    /// `shutdown` submitted.
    ShuttingDown,
    /// Shut down (or the peer is gone); close once the receive and any send have completed.
    ShutDown,
    /// `close` submitted; the slot is freed on its completion.
    Closing,
}

/// Every slot of a shard's connection table holds a `Connection` inline, written the first time
/// the slot is used (`connections_per_shard_max` of them: 16,000 per shard in the
/// million-connection run, so each byte here is 1 MB at a million connections). Rarely used
/// state is boxed or pooled (a Socket.IO endpoint, a held poll, an inflater, a WebSocket's
/// buffers, a stream's topic positions, a request body cut across reads, a kept close
/// reason), and this bound keeps it so.
const CONNECTION_BYTES_MAX: usize = 272;
const _: () = assert!(size_of::<Connection>() <= CONNECTION_BYTES_MAX);

/// A connection's yes-or-no states, one bit each of its flag word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Flag {
    /// A multishot receive is armed for the socket.
    ReceiveArmed = 1 << 0,
    /// Reading is paused because replies to this peer piled up past the queue limits.
    ReadingPaused = 1 << 1,
    /// Reading is paused because this publisher's shard cannot hand its publishes on (another
    /// shard's mailbox is full); resumed when the outbox empties.
    PublisherPaused = 1 << 2,
    /// Queued in the shard's list of connections with something to send.
    SendListed = 1 << 3,
    /// Queued in the shard's list of TLS connections waiting for a ciphertext buffer.
    TlsWaiting = 1 << 4,
    /// Queued in the shard's list of connections owed something at the end of the turn.
    TurnListed = 1 << 5,
    /// The connection was closed for a stalled queue (the stall deadline no longer applies).
    StallClosed = 1 << 6,
    /// Bytes waited to be sent (frames, or a TLS connection's ciphertext) when the shard last
    /// accounted for the connection: the stall clock starts when they appear. A TLS handshake
    /// flight is unsent bytes with no frame queued, so the queue's report alone misses it.
    Unsent = 1 << 7,
    /// An Engine.IO long-polling session: a client of the broker with no socket (in a slot
    /// beyond the connection table), whose queue the connections carrying it take
    /// (`shard::sessions`). No ring operation ever names its slot.
    Detached = 1 << 8,
}

/// The connection's flags in one word: as nine bools, with the fields around them, they took
/// a slot 8 bytes more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Flags(u16);

/// One connection of a shard.
#[derive(Debug)]
pub struct Connection {
    generation: u16,
    pub(super) endpoint: Endpoint,
    pub(super) transport: Transport,
    pub(super) outbound: Outbound,
    pub(super) closing: Closing,
    /// When the close sequence must be over (set when it starts).
    pub(super) close_deadline_ms: u64,
    /// The deadline last mirrored into the shard's timer wheel.
    pub(super) scheduled_ms: u64,
    /// What the queue last reported to the shard's queue memory.
    pub(super) reported: Reported,
    flags: Flags,
    /// When the queue last made progress: bytes sent, or frames queued to an empty queue. A
    /// queue with frames and no progress for `send_stall_timeout_ms` closes the connection.
    pub(super) send_progress_ms: u64,
    /// The kind it was first a client of the broker as (`connection.opened` recorded then, if a
    /// webhook wants it); `None` while it is plain HTTP.
    pub(super) announced: Option<EndpointKind>,
}

impl Connection {
    pub fn new(generation: u16, endpoint: Endpoint) -> Connection {
        Connection {
            generation,
            endpoint,
            transport: Transport::Plain,
            outbound: Outbound::default(),
            closing: Closing::Open,
            close_deadline_ms: 0,
            scheduled_ms: u64::MAX,
            reported: Reported::default(),
            flags: Flags::default(),
            send_progress_ms: 0,
            announced: None,
        }
    }

    pub fn generation(&self) -> u16 {
        self.generation
    }

    pub fn flag(&self, flag: Flag) -> bool {
        self.flags.0 & flag as u16 != 0
    }

    pub fn set_flag(&mut self, flag: Flag, on: bool) {
        match on {
            true => self.flags.0 |= flag as u16,
            false => self.flags.0 &= !(flag as u16),
        }
    }

    /// Whether messages may be queued to this connection: its endpoint takes them and it has
    /// not started closing.
    pub fn takes_messages(&self) -> bool {
        self.closing == Closing::Open && self.endpoint.takes_messages()
    }

    /// The one deadline the shard's timer wheel holds for this connection: the endpoint's (or
    /// the queue's stall deadline, if sooner) while open, the close sequence's while it flushes,
    /// and none (`u64::MAX`) once the socket is being shut down: what remains is waiting for the
    /// kernel's completions.
    pub fn deadline_ms(&self, send_stall_timeout_ms: u64) -> u64 {
        match self.closing {
            Closing::Open => self
                .endpoint
                .deadline_ms()
                .min(self.stall_deadline_ms(send_stall_timeout_ms)),
            Closing::AfterFlush => self.close_deadline_ms,
            Closing::ShuttingDown | Closing::ShutDown | Closing::Closing => u64::MAX,
        }
    }

    /// When a queue that makes no progress counts as stalled; `u64::MAX` when nothing waits.
    pub fn stall_deadline_ms(&self, send_stall_timeout_ms: u64) -> u64 {
        // A session's queue waits for its next poll; the heartbeat ends a session not polled.
        match !self.has_unsent() || self.flag(Flag::StallClosed) || self.flag(Flag::Detached) {
            true => u64::MAX,
            false => self.send_progress_ms.saturating_add(send_stall_timeout_ms),
        }
    }

    /// Whether a send should be submitted now: something to send, and no send in flight. For
    /// TLS, ciphertext waiting, or plaintext queued that may be sealed.
    pub fn has_sendable(&self) -> bool {
        if self.flag(Flag::Detached) {
            return false;
        }
        match self.transport.tls() {
            None => self.outbound.is_sendable(),
            Some(tls) => {
                !tls.send_in_flight()
                    && (tls.has_sendable() || (tls.can_seal() && !self.outbound.is_empty()))
            }
        }
    }

    /// Whether everything queued has gone out (or never can: a TLS connection that cannot seal
    /// any more), with no send in flight: the close sequence may go on.
    pub fn is_flushed(&self) -> bool {
        match self.transport.tls() {
            None => self.outbound.is_idle(),
            Some(tls) => !tls.has_unsent() && (self.outbound.is_empty() || !tls.can_seal()),
        }
    }

    /// Whether a send is in flight (the kernel reads the connection's memory).
    pub fn send_in_flight(&self) -> bool {
        match self.transport.tls() {
            None => self.outbound.in_flight(),
            Some(tls) => tls.send_in_flight(),
        }
    }

    /// Whether bytes wait to be sent: queued frames, or ciphertext.
    pub fn has_unsent(&self) -> bool {
        !self.outbound.is_empty() || self.transport.tls().is_some_and(|tls| tls.has_unsent())
    }

    /// Brings the shard's queue memory up to date with this connection's queue (and what its
    /// transport holds for it), and starts the stall clock when the queue stops being empty.
    pub fn account(&mut self, memory: &mut QueueMemory, now_ms: u64) {
        let transport_bytes = self.transport.held_bytes();
        memory.sync_with_transport(&self.outbound, transport_bytes, &mut self.reported);
        let had_unsent = self.flag(Flag::Unsent);
        self.set_flag(Flag::Unsent, self.has_unsent());
        if !had_unsent && self.flag(Flag::Unsent) {
            self.send_progress_ms = now_ms;
        }
    }

    /// Acts on what an endpoint asked for. Returns whether the socket must be shut down now.
    pub fn follow(&mut self, next: Next, now_ms: u64, close_timeout_ms: u64) -> bool {
        match next {
            Next::Continue => false,
            Next::CloseAfterFlush => {
                self.close_after_flush(now_ms, close_timeout_ms);
                false
            }
            Next::ShutDownNow => true,
        }
    }

    /// Starts closing: send what is queued, then shut down, within the close timeout.
    pub fn close_after_flush(&mut self, now_ms: u64, close_timeout_ms: u64) {
        if self.closing == Closing::Open {
            self.closing = Closing::AfterFlush;
            self.close_deadline_ms = now_ms + close_timeout_ms;
        }
    }
}

/// The shard's connections by file-table slot. Its memory is reserved for every slot at
/// start-up (so that it never reallocates), but written only up to the highest slot used so
/// far: the kernel hands out the lowest free slot, so a shard holding a few thousand
/// connections touches a few thousand slots' pages, not `connections_per_shard_max` of them
/// (about 5.6 MB a shard at 16,000 slots, 360 MB of an idle 64-shard server otherwise).
///
/// Engine.IO long-polling sessions (`shard::sessions`), clients of the broker without a
/// socket, take the slots after the table's, `slots_max..slots_max + sessions_max`, kept apart
/// and written the same way, so that a session does not write the table's unused slots.
#[derive(Debug)]
pub struct ConnectionTable {
    /// Slots up to the highest used so far; beyond them every slot is empty.
    slots: Vec<Option<Connection>>,
    slots_max: usize,
    /// The sessions' slots up to the highest used so far.
    sessions: Vec<Option<Connection>>,
    sessions_max: usize,
    /// What an index past `slots` reads as.
    empty: Option<Connection>,
}

impl ConnectionTable {
    pub fn new(slots_max: usize, sessions_max: usize) -> ConnectionTable {
        ConnectionTable {
            slots: Vec::with_capacity(slots_max),
            slots_max,
            sessions: Vec::with_capacity(sessions_max),
            sessions_max,
            empty: None,
        }
    }

    /// How many of the table's slots were written: the highest used so far, plus one.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The sessions' slots written so far.
    pub fn session_slots(&self) -> std::ops::Range<u32> {
        let start = self.slots_max as u32;
        start..start + self.sessions.len() as u32
    }

    pub fn get(&self, slot: usize) -> Option<&Option<Connection>> {
        (slot < self.slots_max + self.sessions_max).then(|| &self[slot])
    }

    /// Starts loading the slot `slot` (every line of it), which a loop reaches a few steps
    /// from now; nothing for a slot not written yet, or past the table.
    #[inline]
    pub fn prefetch(&self, slot: usize) {
        let (slots, index) = match slot.checked_sub(self.slots_max) {
            None => (&self.slots, slot),
            Some(session) => (&self.sessions, session),
        };
        if index < slots.len() {
            prefetch(
                slots.as_ptr().wrapping_add(index),
                size_of::<Option<Connection>>(),
            );
        }
    }
}

impl std::ops::Index<usize> for ConnectionTable {
    type Output = Option<Connection>;

    #[inline]
    fn index(&self, slot: usize) -> &Option<Connection> {
        let written = match slot.checked_sub(self.slots_max) {
            None => self.slots.get(slot),
            Some(session) if session < self.sessions_max => self.sessions.get(session),
            Some(_) => past_the_table(slot),
        };
        written.unwrap_or(&self.empty)
    }
}

impl std::ops::IndexMut<usize> for ConnectionTable {
    /// Inlined, with the rare growth apart: the shard looks its connection up several times
    /// per message, and a call that also carried the growth was 20 ns of an echo's 3 µs.
    #[inline]
    fn index_mut(&mut self, slot: usize) -> &mut Option<Connection> {
        let (slots, index) = match slot.checked_sub(self.slots_max) {
            None => (&mut self.slots, slot),
            Some(session) if session < self.sessions_max => (&mut self.sessions, session),
            Some(_) => past_the_table(slot),
        };
        if index >= slots.len() {
            write_slots_up_to(slots, index);
        }
        &mut slots[index]
    }
}

#[cold]
#[inline(never)]
fn past_the_table(slot: usize) -> ! {
    panic!("slot {slot} past the table")
}

/// Writes the slots up to `index` (empty), within the capacity reserved at start-up: no
/// allocation.
#[cold]
#[inline(never)]
fn write_slots_up_to(slots: &mut Vec<Option<Connection>>, index: usize) {
    slots.resize_with(index + 1, || None);
}

#[cfg(test)]
mod tests {
    use super::ConnectionTable;

    /// Proves the table writes slots only up to the highest one used, reads every slot past
    /// them as empty, keeps the sessions' slots apart (written the same way), and refuses
    /// slots past its maximum.
    #[test]
    fn table_is_written_only_up_to_the_highest_slot_used() {
        let mut table = ConnectionTable::new(16, 4);
        assert!(table.is_empty());
        assert!(table[15].is_none());
        table[5] = None;
        assert_eq!(table.len(), 6);
        table[2] = None;
        assert_eq!(table.len(), 6, "a lower slot writes nothing more");
        assert!(table.get(15).is_some_and(Option::is_none));
        assert_eq!(table.session_slots(), 16..16);
        table[17] = None;
        assert_eq!(
            table.len(),
            6,
            "a session's slot writes none of the table's"
        );
        assert_eq!(table.session_slots(), 16..18);
        assert!(table.get(19).is_some_and(Option::is_none));
        assert!(table.get(20).is_none());
        let past_the_end = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            table[20] = None;
        }));
        assert!(past_the_end.is_err());
    }
}
