//! The shard's io_uring: set-up, the operation tag carried in `user_data`, submission that
//! never drops an entry, and a batched harvest of completions.
//!
//! Completions are copied out of the completion queue into a preallocated batch and handled
//! after the harvest, never while iterating the kernel's queue (TigerBeetle's
//! `flush_completions`): handling one completion may submit more work.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use io_uring::{IoUring, cqueue, squeue, types};

/// How many rounds `submit_before_exit` takes at most: each submits a full queue, so a few
/// empty any backlog a shard may have.
const EXIT_SUBMIT_ATTEMPTS_MAX: usize = 64;

/// What an in-flight request is; stored in the top byte of its `user_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Operation {
    /// The multishot accept on the shard's listener.
    Accept = 1,
    /// A connection's multishot receive on the buffer ring.
    Receive = 2,
    /// A connection's send (one at a time per connection).
    Send = 3,
    /// `shutdown(SHUT_RDWR)` on a connection, which also ends its armed receive.
    Shutdown = 4,
    /// Closing a connection's direct descriptor.
    Close = 5,
    /// A `msg_ring` wake-up from another thread: the mailbox has commands.
    Wake = 6,
    /// Cancelling the multishot accept at shutdown.
    CancelAccept = 7,
    /// Cancelling a connection's multishot receive to pause reading (backpressure).
    CancelReceive = 8,
    /// The multishot accept into process descriptors while the connection table is full.
    RefusingAccept = 9,
    /// Sending the 503 to a connection refused while the table is full; the slot field holds
    /// its process descriptor.
    RefusalSend = 10,
    /// Closing a refused connection's process descriptor (generation 1: after its 503).
    RefusalClose = 11,
    /// The multishot accept on the shard's TLS listener.
    TlsAccept = 12,
    /// The TLS listener's accept into process descriptors while the table is full (each such
    /// connection is closed at once: a 503 in plain text means nothing to a TLS client).
    TlsRefusingAccept = 13,
}

impl Operation {
    fn from_tag(tag: u8) -> Option<Operation> {
        Some(match tag {
            1 => Operation::Accept,
            2 => Operation::Receive,
            3 => Operation::Send,
            4 => Operation::Shutdown,
            5 => Operation::Close,
            6 => Operation::Wake,
            7 => Operation::CancelAccept,
            8 => Operation::CancelReceive,
            9 => Operation::RefusingAccept,
            10 => Operation::RefusalSend,
            11 => Operation::RefusalClose,
            12 => Operation::TlsAccept,
            13 => Operation::TlsRefusingAccept,
            _ => return None,
        })
    }
}

/// The `user_data` of a request: operation, connection slot and the slot's generation (so a
/// completion that outlives its connection is recognised and dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub operation: Operation,
    pub generation: u16,
    pub slot: u32,
}

impl Tag {
    pub fn new(operation: Operation, slot: u32, generation: u16) -> Self {
        Self {
            operation,
            generation,
            slot,
        }
    }

    pub fn encode(self) -> u64 {
        (u64::from(self.operation as u8) << 56)
            | (u64::from(self.generation) << 32)
            | u64::from(self.slot)
    }

    /// `None` for a value no request of ours carries (a kernel bug or memory corruption).
    pub fn decode(user_data: u64) -> Option<Tag> {
        let operation = Operation::from_tag((user_data >> 56) as u8)?;
        Some(Tag {
            operation,
            generation: (user_data >> 32) as u16,
            slot: user_data as u32,
        })
    }
}

/// One completion, copied out of the completion queue.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    pub user_data: u64,
    pub result: i32,
    pub flags: u32,
}

impl Completion {
    /// Whether a multishot request stays armed after this completion.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer this completion filled, if any.
    pub fn buffer_id(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// The ring of one shard. Created inside the shard's thread: with SINGLE_ISSUER, every enter and
/// register call must come from the thread that created it.
pub struct Ring {
    ring: IoUring,
    /// Requests that found the submission queue full while the kernel could not take more
    /// (its completion queue must be reaped first): they go in first at the next submit, in
    /// order. Bounded by what one loop turn queues.
    backlog: VecDeque<squeue::Entry>,
}

impl Ring {
    /// A ring with `submission_entries` SQEs and four times as many CQEs (multishot requests
    /// post many completions per submission).
    pub fn new(submission_entries: u32) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            .setup_cqsize(submission_entries * 4)
            .build(submission_entries)?;
        Ok(Ring {
            ring,
            backlog: VecDeque::new(),
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    pub fn submitter(&self) -> io_uring::Submitter<'_> {
        self.ring.submitter()
    }

    /// Queues a request. When the submission queue is full, it is flushed to the kernel first,
    /// so no request is ever dropped.
    ///
    /// # Safety
    /// Every buffer, iovec, `msghdr` and descriptor `entry` points at must stay valid, and not
    /// be moved or freed, until the request's final completion has been harvested (for a
    /// multishot request, the completion without `F_MORE`). The shard keeps this by owning
    /// everything its requests point at: frames stay in their connection's queue while a send
    /// is in flight, send slots are freed on the send's completion, and a connection's slot is
    /// freed only after its close completed.
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // Behind a backlog, a request waits its turn (order matters: a cancel must follow what
        // it cancels).
        if self.backlog.is_empty() {
            // SAFETY: the caller keeps what `entry` points at alive until its completion (this
            // function's contract).
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.submit_pending()?;
            // SAFETY: as above.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
        }
        self.backlog.push_back(entry.clone());
        Ok(())
    }

    /// Whether requests wait for room in the submission queue.
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Moves backlogged requests into the submission queue while it has room.
    fn drain_backlog(&mut self) {
        while let Some(entry) = self.backlog.front() {
            // SAFETY: every backlogged entry came through `push`, whose caller keeps what it
            // points at alive until its completion.
            if unsafe { self.ring.submission().push(entry) }.is_err() {
                return;
            }
            self.backlog.pop_front();
        }
    }

    /// Hands queued requests to the kernel without waiting.
    pub fn submit_pending(&mut self) -> io::Result<()> {
        match self.ring.submit() {
            Ok(_) => Ok(()),
            // The completion queue is full (only without NODROP) or the kernel is short of
            // memory: completions must be reaped first; the caller's loop does that next.
            Err(error) if error.raw_os_error() == Some(libc::EBUSY) => Ok(()),
            Err(error) if error.raw_os_error() == Some(libc::EINTR) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Hands every request still queued (backlog included) to the kernel before the ring is
    /// dropped: a shard's last turn may have queued wake-ups for other shards (the
    /// unsubscribes of its last closed connections), and a wake-up never submitted leaves that
    /// shard asleep with its wake-up flag set, deaf to every later wake-up, shutdown included.
    /// A finished shard has no connection and no accept left, so what is queued is wake-ups,
    /// which point at no memory of the shard's.
    pub fn submit_before_exit(&mut self) -> io::Result<()> {
        for _ in 0..EXIT_SUBMIT_ATTEMPTS_MAX {
            self.drain_backlog();
            match self.ring.submit() {
                Ok(_) if !self.has_backlog() && self.ring.submission().is_empty() => return Ok(()),
                Ok(_) => {}
                Err(error) if matches!(error.raw_os_error(), Some(libc::EBUSY | libc::EINTR)) => {}
                Err(error) => return Err(error),
            }
            // Completions are not reaped any more: let them be dropped rather than block.
            self.ring.completion().for_each(drop);
        }
        Err(io::Error::other("requests left unsubmitted at exit"))
    }

    /// Submits and waits for at least one completion or until `timeout`.
    pub fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.drain_backlog();
        // With requests still waiting for room, only look: the loop comes back to submit them
        // as soon as completions are reaped.
        let timeout = match self.has_backlog() {
            true => Some(Duration::ZERO),
            false => timeout,
        };
        let result = match timeout {
            Some(timeout) => {
                let timespec = types::Timespec::from(timeout);
                let arguments = types::SubmitArgs::new().timespec(&timespec);
                self.ring.submitter().submit_with_args(1, &arguments)
            }
            None => self.ring.submit_and_wait(1),
        };
        match result {
            Ok(_) => Ok(()),
            Err(error) => match error.raw_os_error() {
                // ETIME: the wait timed out (a timer is due). EINTR: a signal. EBUSY: completions
                // must be reaped first. All three mean: go and look at the completion queue.
                Some(libc::ETIME | libc::EINTR | libc::EBUSY) => Ok(()),
                _ => Err(error),
            },
        }
    }

    /// Moves every ready completion into `batch` (up to its capacity; the rest wait for the next
    /// harvest). Returns how many were taken.
    pub fn harvest(&mut self, batch: &mut Vec<Completion>) -> usize {
        let room = batch.capacity() - batch.len();
        let mut completion_queue = self.ring.completion();
        let before = batch.len();
        for entry in completion_queue.by_ref().take(room) {
            batch.push(Completion {
                user_data: entry.user_data(),
                result: entry.result(),
                flags: entry.flags(),
            });
        }
        completion_queue.sync();
        batch.len() - before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves tags round-trip through `user_data` and unknown operations are refused.
    #[test]
    fn tag_round_trip() {
        let tag = Tag::new(Operation::Send, 19_999, 65_535);
        assert_eq!(Tag::decode(tag.encode()), Some(tag));
        assert_eq!(Tag::decode(0), None);
        assert_eq!(Tag::decode(u64::MAX), None);
    }
}
