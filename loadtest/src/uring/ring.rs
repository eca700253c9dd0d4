//! A ring with SINGLE_ISSUER, DEFER_TASKRUN and COOP_TASKRUN (as ringcast's shards), submission
//! that never drops an entry, and a harvest that copies every ready completion out of the
//! queue before any is handled: handling one may submit more work.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use io_uring::{IoUring, cqueue, squeue, types};

/// Attempts to make room in a full submission queue before giving up.
const PUSH_ATTEMPTS_MAX: usize = 1000;

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

/// `user_data` of a request: an operation code in the top byte, an index below.
pub fn tag(operation: u8, index: u32) -> u64 {
    u64::from(operation) << 56 | u64::from(index)
}

/// The operation code and index of a `user_data` made by [`tag`].
pub fn untag(user_data: u64) -> (u8, u32) {
    ((user_data >> 56) as u8, user_data as u32)
}

/// The ring of one thread. With SINGLE_ISSUER every enter must come from the thread that
/// created it, so it is made inside that thread.
pub struct Ring {
    ring: IoUring,
}

impl Ring {
    /// A ring of `submission_entries` SQEs and four times as many CQEs (multishot requests
    /// post many completions per submission).
    pub fn new(submission_entries: u32) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            .setup_cqsize(submission_entries * 4)
            .build(submission_entries)?;
        Ok(Ring { ring })
    }

    pub fn submitter(&self) -> io_uring::Submitter<'_> {
        self.ring.submitter()
    }

    /// Queues a request; a full submission queue is handed to the kernel first.
    ///
    /// # Safety
    /// Every buffer and address the entry points at must stay valid and unmoved until the
    /// request's last completion.
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        for _ in 0..PUSH_ATTEMPTS_MAX {
            // SAFETY: the caller guarantees what the entry points at outlives the request.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            match self.ring.submit() {
                Ok(_) => {}
                // A signal (EINTR) or completions to reap first (EBUSY): the kernel took
                // nothing this time; try again, bounded.
                Err(error) if matches!(error.raw_os_error(), Some(libc::EBUSY | libc::EINTR)) => {
                    std::thread::yield_now();
                }
                Err(error) => return Err(error),
            }
        }
        Err(io::Error::other("the submission queue stayed full"))
    }

    /// Submits what is queued and waits for at least one completion or until `timeout`.
    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        let timespec = types::Timespec::from(timeout);
        let arguments = types::SubmitArgs::new().timespec(&timespec);
        match self.ring.submitter().submit_with_args(1, &arguments) {
            Ok(_) => Ok(()),
            // ETIME: the wait timed out. EINTR: a signal. EBUSY: completions must be reaped
            // first. All three mean: look at the completion queue now.
            Err(error)
                if matches!(
                    error.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Moves every ready completion into `batch`, up to its capacity (the rest wait for the
    /// next harvest). Returns how many were taken.
    pub fn harvest(&mut self, batch: &mut Vec<Completion>) -> usize {
        let room = batch.capacity() - batch.len();
        let mut queue = self.ring.completion();
        let before = batch.len();
        for entry in queue.by_ref().take(room) {
            batch.push(Completion {
                user_data: entry.user_data(),
                result: entry.result(),
                flags: entry.flags(),
            });
        }
        queue.sync();
        batch.len() - before
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tags keep the operation and the whole 32-bit index apart.
    #[test]
    fn tags_round_trip() {
        for (operation, index) in [(1, 0), (7, u32::MAX), (255, 12_345)] {
            assert_eq!(untag(tag(operation, index)), (operation, index));
        }
    }
}
