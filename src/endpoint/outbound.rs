//! A connection's queue of encoded bytes to send (frames, responses), and the send in flight.
//!
//! Items are shared `Bytes`: a message encoded once sits in many connections' queues. Endpoints
//! push; the shard gathers the front of the queue into one send and accounts what the kernel
//! took. The queue counts only its own bytes; what those bytes cost in memory is the broker's
//! business (a shared frame is held once however many queues list it).

use std::collections::VecDeque;

use bytes::Bytes;

/// Why the outbound queue refused a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull;

/// The frames waiting to be sent, and the send in flight. Frames are shared `Bytes`: a frame
/// encoded once can sit in many connections' queues.
#[derive(Debug, Default)]
pub struct Outbound {
    frames: VecDeque<Bytes>,
    queued_bytes: usize,
    /// Bytes of the front frame already sent (a partial send).
    front_offset: usize,
    /// Frames (from the front) that the send in flight carries; 0 when no send is in flight.
    frames_in_flight: usize,
}

impl Outbound {
    /// Queues a data frame within the limits. An empty queue takes any frame, so a message larger
    /// than the byte limit still goes out when the peer keeps up.
    pub fn push(
        &mut self,
        frame: Bytes,
        bytes_max: usize,
        frames_max: usize,
    ) -> Result<(), QueueFull> {
        let over = self.queued_bytes + frame.len() > bytes_max || self.frames.len() >= frames_max;
        if over && !self.frames.is_empty() {
            return Err(QueueFull);
        }
        self.push_control(frame);
        Ok(())
    }

    /// Queues a control frame or HTTP response. Never refused: pongs and closes are not dropped.
    pub fn push_control(&mut self, frame: Bytes) {
        self.queued_bytes += frame.len();
        self.frames.push_back(frame);
    }

    /// Nothing queued and nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.frames.is_empty() && self.frames_in_flight == 0
    }

    /// Something queued and no send in flight.
    pub fn is_sendable(&self) -> bool {
        !self.frames.is_empty() && self.frames_in_flight == 0
    }

    /// Frames queued, including those of the send in flight.
    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    pub fn in_flight(&self) -> bool {
        self.frames_in_flight > 0
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Whether the queue holds more than `bytes_max` bytes or `frames_max` frames.
    pub fn is_over(&self, bytes_max: usize, frames_max: usize) -> bool {
        self.queued_bytes > bytes_max || self.frames.len() > frames_max
    }

    /// Drops queued frames that are not part of the send in flight (the peer is gone).
    pub fn discard_unsent(&mut self) {
        while self.frames.len() > self.frames_in_flight {
            let frame = self.frames.pop_back().expect("len checked");
            // The front frame's sent part was already taken off `queued_bytes`.
            let sent = if self.frames.is_empty() {
                std::mem::take(&mut self.front_offset)
            } else {
                0
            };
            self.queued_bytes -= frame.len() - sent;
        }
    }

    /// Describes up to `iovecs.len()` queued frames for one gathered send and marks it in
    /// flight. Returns how many iovecs were filled.
    pub fn gather(&mut self, iovecs: &mut [libc::iovec]) -> usize {
        assert!(self.frames_in_flight == 0 && !self.frames.is_empty());
        let mut count = 0;
        for (index, frame) in self.frames.iter().take(iovecs.len()).enumerate() {
            let skip = if index == 0 { self.front_offset } else { 0 };
            iovecs[index] = libc::iovec {
                iov_base: frame[skip..].as_ptr() as *mut libc::c_void,
                iov_len: frame.len() - skip,
            };
            count += 1;
        }
        self.frames_in_flight = count;
        count
    }

    /// The front frame's unsent bytes, for a single-frame send; marks it in flight.
    pub fn front(&mut self) -> &[u8] {
        assert!(self.frames_in_flight == 0);
        self.frames_in_flight = 1;
        &self.frames.front().expect("sendable")[self.front_offset..]
    }

    /// Accounts a completed send of `sent_bytes`.
    pub fn complete(&mut self, mut sent_bytes: usize) {
        assert!(self.frames_in_flight > 0);
        self.frames_in_flight = 0;
        while sent_bytes > 0 {
            let front_left =
                self.frames.front().expect("sent bytes were queued").len() - self.front_offset;
            if sent_bytes < front_left {
                self.front_offset += sent_bytes;
                self.queued_bytes -= sent_bytes;
                return;
            }
            sent_bytes -= front_left;
            self.queued_bytes -= front_left;
            self.front_offset = 0;
            self.frames.pop_front();
        }
    }

    /// Ends the send in flight without progress (it failed).
    pub fn abandon(&mut self) {
        self.frames_in_flight = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves discarding after a partial send takes off only the unsent bytes of the front
    /// frame (its sent part was already counted out), so the byte count cannot underflow.
    #[test]
    fn discard_after_a_partial_send_keeps_the_count() {
        let mut outbound = Outbound::default();
        outbound.push_control(Bytes::from_static(b"0123456789"));
        outbound.push_control(Bytes::from_static(b"abc"));
        assert_eq!(outbound.front().len(), 10);
        outbound.complete(4);
        assert_eq!(outbound.queued_bytes(), 9);
        outbound.discard_unsent();
        assert_eq!(outbound.queued_bytes(), 0);
        assert!(outbound.is_idle());
        outbound.push_control(Bytes::from_static(b"xy"));
        assert_eq!(
            outbound.front(),
            b"xy",
            "a new frame starts at its first byte"
        );
    }
}
