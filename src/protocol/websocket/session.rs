//! The WebSocket state machine of one server-side connection, after the handshake.
//!
//! Sans-IO in the manner of quinn-proto: the driver hands every read to
//! [`Session::handle_read`] and drives the returned [`Reader`] until it yields `None`. After each
//! event it takes the control frames now owed with [`Reader::poll_transmit`] (so replies keep the
//! order of what caused them), and after the read, or after [`Session::close`], with
//! [`Session::poll_transmit`]. Reading is what creates pongs and close replies to transmit.
//!
//! Every byte of a read is consumed before the reader finishes, so the driver can hand its
//! receive buffer back to the kernel at once. A frame that lies whole in one read is unmasked in
//! place and handed out as a slice of that read (no copy). A frame cut across reads, a fragmented
//! message, and a control frame cut across reads are assembled in buffers from the shard's
//! [`BufferPool`]; an incomplete frame head (at most 14 bytes) waits inside the session.

use super::close::CloseCode;
use super::deflate::{InflateError, Inflater, SYNC_FLUSH_TRAILER};
use super::error::ProtocolError;
use super::frame::{CONTROL_PAYLOAD_BYTES_MAX, FrameHead, HEAD_BYTES_MAX, OpCode};
use super::mask::{apply_mask, apply_mask_checking_ascii};
use super::utf8::{self, Utf8Validator};
use crate::protocol::limits::ProtocolLimits;
use crate::protocol::pool::{BufferPool, HeldBuffers, PooledBuffer};

/// Whole text frames up to this size are unmasked and checked for ASCII in one pass (larger ones
/// are unmasked with SIMD and validated separately, which is faster at that size).
const FUSED_TEXT_PAYLOAD_BYTES_MAX: usize = 128;

/// Where a connection stands in the close handshake (RFC 6455 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Messages flow both ways.
    Open,
    /// We sent (or owe) a close frame and wait for the peer's; its data messages are discarded.
    CloseSent,
    /// Nothing more is read. Send what [`Session::poll_transmit`] still gives, then close the
    /// transport (the server closes TCP first, RFC 6455 §7.1.1).
    Closed,
}

/// The kind of a data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// Valid UTF-8 (checked before the message is handed out).
    Text,
    Binary,
}

/// What a read completed.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole data message, unmasked (and for text, validated).
    Message {
        kind: MessageKind,
        payload: &'a [u8],
    },
    /// A ping; its pong is already owed and comes out of `poll_transmit`.
    Ping(&'a [u8]),
    /// A pong (proof of life for heartbeats).
    Pong(&'a [u8]),
    /// The peer's close frame; the reply, if one is due, comes out of `poll_transmit`.
    Close {
        code: Option<CloseCode>,
        reason: &'a str,
    },
}

/// A control frame to send, encoded on the stack (unmasked: server frames are never masked).
#[derive(Clone, Copy)]
pub struct ControlFrame {
    bytes: [u8; 2 + CONTROL_PAYLOAD_BYTES_MAX],
    length: u8,
}

impl ControlFrame {
    fn new(opcode: OpCode, payload: &[u8]) -> Self {
        assert!(payload.len() <= CONTROL_PAYLOAD_BYTES_MAX);
        let mut bytes = [0u8; 2 + CONTROL_PAYLOAD_BYTES_MAX];
        bytes[0] = 0x80 | opcode as u8;
        bytes[1] = payload.len() as u8;
        bytes[2..2 + payload.len()].copy_from_slice(payload);
        Self {
            bytes,
            length: 2 + payload.len() as u8,
        }
    }

    /// The whole encoded frame.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.length)]
    }

    /// Close, ping or pong.
    pub fn opcode(&self) -> OpCode {
        OpCode::from_bits(self.bytes[0] & 0x0F).expect("encoded by us")
    }
}

impl std::fmt::Debug for ControlFrame {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "ControlFrame({:?}, {:02x?})",
            self.opcode(),
            self.as_bytes()
        )
    }
}

/// A frame whose payload is still arriving. Its lengths fit 32 bits: a frame is admitted only
/// within `frame_bytes_max`, which is held below 4 GiB (16 bytes where 64-bit lengths took 24,
/// in every connection slot).
#[derive(Clone, Copy, Debug)]
struct FrameProgress {
    opcode: OpCode,
    fin: bool,
    mask: [u8; 4],
    payload_bytes: u32,
    received_bytes: u32,
}

/// A close frame we owe the peer. `code: None` is an empty close payload.
#[derive(Clone, Copy, Debug)]
struct OwedClose {
    code: Option<CloseCode>,
    reason: &'static str,
}

/// Which of a session's held buffers (its index in [`HeldBuffers`]).
#[derive(Clone, Copy, Debug)]
enum Held {
    /// Payload of the data message being received, when it did not arrive whole in one read.
    Message,
    /// Payload of a control frame cut across reads.
    Control,
    /// Payload of the pong owed for the latest ping.
    OwedPong,
}

/// The protocol state of one connection. About 80 bytes; buffers are borrowed from the pool
/// only while a message or control frame is incomplete or a pong is owed, and kept in a holder
/// lent from the pool with the first of them.
#[derive(Debug)]
pub struct Session {
    state: SessionState,
    head_stash: [u8; HEAD_BYTES_MAX],
    head_stash_bytes: u8,
    frame: Option<FrameProgress>,
    /// The data message being received, from its first frame until its final frame completes.
    message_kind: Option<MessageKind>,
    /// The buffers of [`Held`], while any is held; given back to the pool when none is.
    held: Option<Box<HeldBuffers>>,
    utf8: Utf8Validator,
    owed_close: Option<OwedClose>,
    /// Whether permessage-deflate was negotiated: RSV1 may then start a compressed message.
    compression: bool,
    /// Whether the message being received is compressed (its first frame had RSV1).
    message_compressed: bool,
    /// The shard's inflater, lent from a compressed message's first frame to its last.
    inflater: Option<Box<Inflater>>,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    /// A session for a connection whose handshake just completed.
    pub fn new() -> Self {
        Self {
            state: SessionState::Open,
            head_stash: [0; HEAD_BYTES_MAX],
            head_stash_bytes: 0,
            frame: None,
            message_kind: None,
            held: None,
            utf8: Utf8Validator::default(),
            owed_close: None,
            compression: false,
            message_compressed: false,
            inflater: None,
        }
    }

    /// Marks permessage-deflate as negotiated in the upgrade: the peer may then compress
    /// messages (RSV1 on their first frame). Without it RSV1 is refused with 1002.
    pub fn set_compression(&mut self, negotiated: bool) {
        self.compression = negotiated;
    }

    /// Where the close handshake stands.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// Takes one read. Drive the reader until `next_event` yields `None`: by then every byte of
    /// `input` has been consumed (`input` is unmasked in place on the way).
    pub fn handle_read<'r>(
        &'r mut self,
        input: &'r mut [u8],
        pool: &'r mut BufferPool,
        config: &'r ProtocolLimits,
    ) -> Reader<'r> {
        Reader {
            session: self,
            pool,
            config,
            input,
            position: 0,
            release_message: false,
            release_control: false,
        }
    }

    /// Starts the close handshake from our side (shutdown, idle timeout, policy). The close frame
    /// comes out of `poll_transmit`; the session then waits for the peer's close.
    pub fn close(&mut self, code: CloseCode, reason: &'static str) {
        if self.state == SessionState::Open {
            self.owed_close = Some(OwedClose {
                code: Some(code),
                reason,
            });
            self.state = SessionState::CloseSent;
        }
    }

    /// The next control frame owed to the peer: a pong, then a close. Nothing follows a close.
    pub fn poll_transmit(&mut self, pool: &mut BufferPool) -> Option<ControlFrame> {
        if let Some(pong) = self.take_held(Held::OwedPong) {
            let frame = ControlFrame::new(OpCode::Pong, pong.as_slice());
            pool.release(pong);
            self.give_back_holder(pool);
            return Some(frame);
        }
        let close = self.owed_close.take()?;
        let mut payload = [0u8; CONTROL_PAYLOAD_BYTES_MAX];
        let payload_bytes = match close.code {
            Some(code) => super::frame::encode_close_payload(code.0, close.reason, &mut payload),
            None => 0,
        };
        Some(ControlFrame::new(OpCode::Close, &payload[..payload_bytes]))
    }

    /// Hands every pooled buffer back; call when the connection is torn down.
    pub fn release_buffers(&mut self, pool: &mut BufferPool) {
        if let Some(mut holder) = self.held.take() {
            for buffer in holder.iter_mut().filter_map(Option::take) {
                pool.release(buffer);
            }
            pool.release_holder(holder);
        }
        if let Some(inflater) = self.inflater.take() {
            pool.release_inflater(inflater);
        }
    }

    /// Whether a frame (data or control) or a fragmented message has begun and not ended: its
    /// bytes are held here until the rest comes.
    pub fn is_mid_message(&self) -> bool {
        self.frame.is_some() || self.message_kind.is_some() || self.head_stash_bytes > 0
    }

    /// Whether the session holds any pooled buffer (for leak checks).
    pub fn holds_buffers(&self) -> bool {
        self.held.is_some() || self.inflater.is_some()
    }

    fn held(&self, which: Held) -> Option<&PooledBuffer> {
        self.held.as_ref()?[which as usize].as_ref()
    }

    /// Takes a buffer out, leaving its holder (see [`Session::give_back_holder`]).
    fn take_held(&mut self, which: Held) -> Option<PooledBuffer> {
        self.held.as_mut()?[which as usize].take()
    }

    /// Keeps `buffer` as `which`, borrowing a holder from the pool when none is lent yet.
    fn put_held(&mut self, which: Held, buffer: PooledBuffer, pool: &mut BufferPool) {
        let holder = self.held.get_or_insert_with(|| pool.acquire_holder());
        assert!(holder[which as usize].is_none(), "a held buffer replaced");
        holder[which as usize] = Some(buffer);
    }

    /// Hands the holder back once it holds nothing: after every read and every pong sent, so
    /// that between reads only a session that keeps a buffer keeps a holder.
    fn give_back_holder(&mut self, pool: &mut BufferPool) {
        if self
            .held
            .as_ref()
            .is_some_and(|holder| holder.iter().all(Option::is_none))
        {
            pool.release_holder(self.held.take().expect("checked"));
        }
    }

    /// Checks a new frame head against the sequencing rules and limits.
    fn admit(
        &mut self,
        head: FrameHead,
        config: &ProtocolLimits,
    ) -> Result<FrameProgress, ProtocolError> {
        let mask = head.mask.ok_or(ProtocolError::UnmaskedFrame)?;
        // RSV1 marks a compressed message, on its first frame only (RFC 7692 §6.1); control
        // frames with it never get here (`FrameHead::parse` refuses them).
        if head.rsv1 && !self.compression {
            return Err(ProtocolError::ReservedBitsSet);
        }
        if head.rsv1 && head.opcode == OpCode::Continuation {
            return Err(ProtocolError::CompressedContinuation);
        }
        match head.opcode {
            OpCode::Continuation if self.message_kind.is_none() => {
                return Err(ProtocolError::ContinuationWithoutStart);
            }
            OpCode::Text | OpCode::Binary if self.message_kind.is_some() => {
                return Err(ProtocolError::DataFrameInsideFragmentedMessage);
            }
            OpCode::Text | OpCode::Binary => {
                let kind = if head.opcode == OpCode::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                self.message_kind = Some(kind);
                self.utf8.reset();
                self.message_compressed = head.rsv1;
            }
            _ => {}
        }
        if !head.opcode.is_control() {
            let message_bytes_so_far = match self.message_compressed {
                // Its compressed bytes so far, which `frame_bytes_max`/`message_bytes_max`
                // bound like an uncompressed message's (the inflated bytes are bounded by
                // `message_bytes_max` too). The inflater lent for the message counts them:
                // a session holds nothing for it between compressed messages.
                true => self
                    .inflater
                    .as_ref()
                    .map_or(0, |inflater| inflater.compressed_bytes()),
                false => self.held(Held::Message).map_or(0, PooledBuffer::len),
            };
            check_data_limits(&head, message_bytes_so_far, config)?;
        }
        // Control payloads are at most 125 bytes and data frames were held to
        // `frame_bytes_max` above; a limit set past 32 bits in code is refused the same way.
        let payload_bytes =
            u32::try_from(head.payload_bytes).map_err(|_| ProtocolError::FrameTooLarge {
                frame_bytes: head.payload_bytes,
                frame_bytes_max: config.frame_bytes_max,
            })?;
        Ok(FrameProgress {
            opcode: head.opcode,
            fin: head.fin,
            mask,
            payload_bytes,
            received_bytes: 0,
        })
    }

    /// Owes a pong for a ping; checks a close frame and advances the close handshake.
    fn handle_control(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        pool: &mut BufferPool,
    ) -> Result<(), ProtocolError> {
        match opcode {
            OpCode::Ping if self.state == SessionState::Open => {
                // Only the latest ping needs an answer (RFC 6455 §5.5.3), so one slot suffices.
                let mut pong = match self.take_held(Held::OwedPong) {
                    Some(pong) => pong,
                    None => acquire(pool, CONTROL_PAYLOAD_BYTES_MAX)?,
                };
                pong.clear();
                pong.extend_from_slice(payload);
                self.put_held(Held::OwedPong, pong, pool);
            }
            OpCode::Close => {
                let (code, _) = parse_close_payload(payload)?;
                if self.state == SessionState::Open {
                    self.owed_close = Some(OwedClose { code, reason: "" });
                }
                self.state = SessionState::Closed;
            }
            _ => {}
        }
        Ok(())
    }

    /// Records a protocol error: owe the matching close and read nothing more.
    fn fail(&mut self, error: &ProtocolError) {
        if self.state == SessionState::Open {
            self.owed_close = Some(OwedClose {
                code: Some(error.close_code()),
                reason: error.close_reason(),
            });
        }
        self.state = SessionState::Closed;
    }
}

fn check_data_limits(
    head: &FrameHead,
    message_bytes_so_far: usize,
    config: &ProtocolLimits,
) -> Result<(), ProtocolError> {
    if head.payload_bytes > config.frame_bytes_max as u64 {
        return Err(ProtocolError::FrameTooLarge {
            frame_bytes: head.payload_bytes,
            frame_bytes_max: config.frame_bytes_max,
        });
    }
    let message_bytes = message_bytes_so_far as u64 + head.payload_bytes;
    if message_bytes > config.message_bytes_max as u64 {
        return Err(ProtocolError::MessageTooLarge {
            message_bytes,
            message_bytes_max: config.message_bytes_max,
        });
    }
    Ok(())
}

/// Where a completed event's payload lies; turned into an [`Event`] once the loop that found it
/// has ended (so that the borrow checker sees one borrow of the reader).
#[derive(Clone, Copy, Debug)]
enum Ready {
    MessageInInput {
        kind: MessageKind,
        start: usize,
        end: usize,
    },
    MessageInBuffer {
        kind: MessageKind,
    },
    ControlInInput {
        opcode: OpCode,
        start: usize,
        end: usize,
    },
    ControlInBuffer {
        opcode: OpCode,
    },
}

/// What one step of payload reading came to.
enum Step {
    NeedMore,
    Continue,
    Ready(Ready),
}

/// The events of one read, yielded one at a time (a lending iterator: each event borrows the
/// reader until the next call). Dropping it early is a driver bug: bytes would go unread.
pub struct Reader<'r> {
    session: &'r mut Session,
    pool: &'r mut BufferPool,
    config: &'r ProtocolLimits,
    input: &'r mut [u8],
    position: usize,
    /// The message buffer was lent out by the last event; release it on the next call.
    release_message: bool,
    /// Likewise the control buffer.
    release_control: bool,
}

impl Reader<'_> {
    /// The next event, `None` once the read is used up, or the error that ended the session
    /// (its close frame is then owed; the error is reported once).
    pub fn next_event(&mut self) -> Option<Result<Event<'_>, ProtocolError>> {
        self.release_lent_buffers();
        let ready = loop {
            if self.session.state == SessionState::Closed {
                self.position = self.input.len();
                return None;
            }
            match self.step() {
                Ok(Step::NeedMore) => return None,
                Ok(Step::Continue) => continue,
                Ok(Step::Ready(ready)) => break ready,
                Err(error) => {
                    self.session.fail(&error);
                    self.position = self.input.len();
                    return Some(Err(error));
                }
            }
        };
        Some(Ok(self.event(ready)))
    }

    /// The next control frame owed to the peer (see [`Session::poll_transmit`]). Call it after
    /// each event so replies go out in the order their causes arrived: a pong for a ping that
    /// came before a message precedes that message's response (Autobahn 5.6).
    pub fn poll_transmit(&mut self) -> Option<ControlFrame> {
        self.session.poll_transmit(self.pool)
    }

    /// How many bytes of the read have been consumed.
    pub fn consumed_bytes(&self) -> usize {
        self.position
    }

    fn release_lent_buffers(&mut self) {
        if std::mem::take(&mut self.release_message)
            && let Some(buffer) = self.session.take_held(Held::Message)
        {
            self.pool.release(buffer);
        }
        if std::mem::take(&mut self.release_control)
            && let Some(buffer) = self.session.take_held(Held::Control)
        {
            self.pool.release(buffer);
        }
    }

    /// Reads a head if none is in progress, then as much payload as this read holds.
    fn step(&mut self) -> Result<Step, ProtocolError> {
        let progress = match self.session.frame {
            Some(progress) => progress,
            None => match self.read_head()? {
                Some(head) => self.session.admit(head, self.config)?,
                None => return Ok(Step::NeedMore),
            },
        };
        self.read_payload(progress)
    }

    /// Parses a head from the stash and/or the input. Consumes the head's bytes, or all the
    /// input (into the stash) when the head is not complete yet.
    fn read_head(&mut self) -> Result<Option<FrameHead>, ProtocolError> {
        let session = &mut *self.session;
        let remaining = &self.input[self.position..];
        let stashed = usize::from(session.head_stash_bytes);
        // Without permessage-deflate RSV1 is refused on the first byte, as RSV2 and RSV3 are
        // by the parser, rather than once the whole head is in.
        let first = match stashed {
            0 => remaining.first(),
            _ => session.head_stash.first(),
        };
        if !session.compression && first.is_some_and(|&byte| byte & 0x40 != 0) {
            return Err(ProtocolError::ReservedBitsSet);
        }
        if stashed == 0 {
            let Some(head) = FrameHead::parse(remaining)? else {
                session.head_stash[..remaining.len()].copy_from_slice(remaining);
                session.head_stash_bytes = remaining.len() as u8;
                self.position = self.input.len();
                return Ok(None);
            };
            self.position += usize::from(head.head_bytes);
            return Ok(Some(head));
        }
        let taken = (HEAD_BYTES_MAX - stashed).min(remaining.len());
        session.head_stash[stashed..stashed + taken].copy_from_slice(&remaining[..taken]);
        match FrameHead::parse(&session.head_stash[..stashed + taken])? {
            Some(head) => {
                self.position += usize::from(head.head_bytes) - stashed;
                session.head_stash_bytes = 0;
                Ok(Some(head))
            }
            None => {
                session.head_stash_bytes = (stashed + taken) as u8;
                self.position += taken;
                Ok(None)
            }
        }
    }

    /// Unmasks the part of the frame's payload this read holds and routes it.
    fn read_payload(&mut self, mut progress: FrameProgress) -> Result<Step, ProtocolError> {
        let available = self.input.len() - self.position;
        if available == 0 && progress.received_bytes < progress.payload_bytes {
            // The read ended right after the head. Routing an empty piece would take a pooled
            // buffer for a payload that may yet arrive whole, and a control payload that then
            // does is read from the input while the buffer was dropped instead of released.
            self.session.frame = Some(progress);
            return Ok(Step::NeedMore);
        }
        let taken = available.min((progress.payload_bytes - progress.received_bytes) as usize);
        let start = self.position;
        let end = start + taken;
        let mask_offset = (progress.received_bytes % 4) as usize;
        let whole_in_this_read =
            progress.received_bytes == 0 && taken == progress.payload_bytes as usize;
        let payload = &mut self.input[start..end];
        let small_whole_text = whole_in_this_read
            && progress.fin
            && progress.opcode == OpCode::Text
            && payload.len() <= FUSED_TEXT_PAYLOAD_BYTES_MAX;
        // A small text message read whole is unmasked and checked for ASCII in one pass;
        // everything else is unmasked by the fastest implementation and validated on its own.
        let known_ascii = if small_whole_text {
            apply_mask_checking_ascii(payload, progress.mask, mask_offset)
        } else {
            apply_mask(payload, progress.mask, mask_offset);
            false
        };
        self.position = end;
        // `taken` is at most the frame's remaining length, itself a u32.
        progress.received_bytes += taken as u32;
        let complete = progress.received_bytes == progress.payload_bytes;
        self.session.frame = if complete { None } else { Some(progress) };
        if progress.opcode.is_control() {
            return self.read_control_payload(progress.opcode, start, end, whole_in_this_read);
        }
        if self.session.message_compressed {
            return self.read_compressed_payload(start, end, complete && progress.fin);
        }
        let whole_message =
            whole_in_this_read && progress.fin && self.session.held(Held::Message).is_none();
        if whole_message {
            return self.finish_whole_message(start, end, known_ascii);
        }
        self.append_message_payload(start, end)?;
        if !complete || !progress.fin {
            return Ok(Step::NeedMore.or_continue(complete));
        }
        self.finish_assembled_message()
    }

    fn finish_whole_message(
        &mut self,
        start: usize,
        end: usize,
        known_ascii: bool,
    ) -> Result<Step, ProtocolError> {
        let kind = self
            .session
            .message_kind
            .take()
            .expect("admitted a data frame");
        if kind == MessageKind::Text && !known_ascii {
            utf8::validate(&self.input[start..end]).map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        if self.session.state == SessionState::CloseSent {
            return Ok(Step::Continue);
        }
        Ok(Step::Ready(Ready::MessageInInput { kind, start, end }))
    }

    /// Validates (text) and copies a piece of a message into its pooled buffer.
    fn append_message_payload(&mut self, start: usize, end: usize) -> Result<(), ProtocolError> {
        let session = &mut *self.session;
        let piece = &self.input[start..end];
        if session.message_kind == Some(MessageKind::Text) {
            session
                .utf8
                .feed(piece)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        let buffer = match session.take_held(Held::Message) {
            Some(buffer) => buffer,
            // Sized for what arrived, not for the frame's announced length: a peer that
            // announces a large frame and trickles it holds a small buffer, and must send the
            // bytes to hold a large one. The buffer grows (moving to a larger class) as they come.
            None => acquire(self.pool, piece.len().max(1))?,
        };
        let needed = buffer.len() + piece.len();
        let mut buffer = match self.pool.grow(buffer, needed) {
            Ok(buffer) => buffer,
            Err(buffer) => {
                session.put_held(Held::Message, buffer, self.pool);
                return Err(ProtocolError::BufferPoolExhausted {
                    message_bytes: needed,
                });
            }
        };
        buffer.extend_from_slice(piece);
        session.put_held(Held::Message, buffer, self.pool);
        Ok(())
    }

    /// Inflates a piece of a compressed message into its pooled buffer; at the message's end,
    /// inflates the sync-flush trailer the sender stripped and hands the inflater back.
    fn read_compressed_payload(
        &mut self,
        start: usize,
        end: usize,
        last: bool,
    ) -> Result<Step, ProtocolError> {
        inflate_piece(
            self.session,
            self.pool,
            self.config,
            &self.input[start..end],
        )?;
        if !last {
            let complete = self.session.frame.is_none();
            return Ok(Step::NeedMore.or_continue(complete));
        }
        inflate_piece(self.session, self.pool, self.config, &SYNC_FLUSH_TRAILER)?;
        self.session.message_compressed = false;
        if let Some(inflater) = self.session.inflater.take() {
            self.pool.release_inflater(inflater);
        }
        self.finish_assembled_message()
    }

    fn finish_assembled_message(&mut self) -> Result<Step, ProtocolError> {
        let kind = self
            .session
            .message_kind
            .take()
            .expect("admitted a data frame");
        if kind == MessageKind::Text {
            self.session
                .utf8
                .finish()
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        self.release_message = true;
        if self.session.state == SessionState::CloseSent {
            return Ok(Step::Continue);
        }
        Ok(Step::Ready(Ready::MessageInBuffer { kind }))
    }

    /// Gathers a control payload (from this read, or assembled across reads) and acts on it.
    fn read_control_payload(
        &mut self,
        opcode: OpCode,
        start: usize,
        end: usize,
        whole_in_this_read: bool,
    ) -> Result<Step, ProtocolError> {
        if whole_in_this_read {
            self.act_on_control(opcode, ControlSource::Input { start, end })?;
            return Ok(Step::Ready(Ready::ControlInInput { opcode, start, end }));
        }
        let mut buffer = match self.session.take_held(Held::Control) {
            Some(buffer) => buffer,
            None => acquire(self.pool, CONTROL_PAYLOAD_BYTES_MAX)?,
        };
        buffer.extend_from_slice(&self.input[start..end]);
        self.session.put_held(Held::Control, buffer, self.pool);
        if self.session.frame.is_some() {
            return Ok(Step::NeedMore);
        }
        self.release_control = true;
        self.act_on_control(opcode, ControlSource::Buffer)?;
        Ok(Step::Ready(Ready::ControlInBuffer { opcode }))
    }

    /// Hands the control payload, wherever it lies, to the session.
    fn act_on_control(
        &mut self,
        opcode: OpCode,
        source: ControlSource,
    ) -> Result<(), ProtocolError> {
        let control = match source {
            ControlSource::Buffer => self.session.take_held(Held::Control),
            ControlSource::Input { .. } => None,
        };
        let payload = match (&control, source) {
            (Some(buffer), _) => buffer.as_slice(),
            (None, ControlSource::Input { start, end }) => &self.input[start..end],
            (None, ControlSource::Buffer) => unreachable!("gathered before acting"),
        };
        let result = self.session.handle_control(opcode, payload, self.pool);
        if let Some(buffer) = control {
            self.session.put_held(Held::Control, buffer, self.pool);
        }
        result
    }

    fn event(&self, ready: Ready) -> Event<'_> {
        match ready {
            Ready::MessageInInput { kind, start, end } => Event::Message {
                kind,
                payload: &self.input[start..end],
            },
            Ready::MessageInBuffer { kind } => Event::Message {
                kind,
                payload: self
                    .session
                    .held(Held::Message)
                    .expect("assembled")
                    .as_slice(),
            },
            Ready::ControlInInput { opcode, start, end } => {
                control_event(opcode, &self.input[start..end])
            }
            Ready::ControlInBuffer { opcode } => control_event(
                opcode,
                self.session
                    .held(Held::Control)
                    .expect("gathered")
                    .as_slice(),
            ),
        }
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        self.release_lent_buffers();
        self.session.give_back_holder(self.pool);
    }
}

impl Step {
    /// `Continue` when the frame completed (a non-final fragment), else `NeedMore`.
    fn or_continue(self, complete: bool) -> Step {
        if complete { Step::Continue } else { self }
    }
}

#[derive(Clone, Copy)]
enum ControlSource {
    Input { start: usize, end: usize },
    Buffer,
}

/// Inflates `piece` into the session's message buffer (taking an inflater and a buffer from
/// the pool on the message's first piece) and validates what came out when it is text.
fn inflate_piece(
    session: &mut Session,
    pool: &mut BufferPool,
    config: &ProtocolLimits,
    piece: &[u8],
) -> Result<(), ProtocolError> {
    let mut inflater = match session.inflater.take() {
        Some(inflater) => inflater,
        None => pool
            .acquire_inflater()
            .ok_or(ProtocolError::InflatersExhausted)?,
    };
    inflater.count_compressed(piece.len());
    let mut buffer = match session.take_held(Held::Message) {
        Some(buffer) => buffer,
        None => match acquire(pool, piece.len().max(1)) {
            Ok(buffer) => buffer,
            Err(error) => {
                session.inflater = Some(inflater);
                return Err(error);
            }
        },
    };
    let before_bytes = buffer.len();
    let result = inflater.inflate(piece, &mut buffer, config.message_bytes_max, pool);
    let inflated = &buffer.as_slice()[before_bytes..];
    let utf8 = match (result, session.message_kind) {
        (Ok(()), Some(MessageKind::Text)) => session.utf8.feed(inflated),
        _ => Ok(()),
    };
    session.inflater = Some(inflater);
    session.put_held(Held::Message, buffer, pool);
    match result {
        Ok(()) => utf8.map_err(|_| ProtocolError::InvalidUtf8),
        Err(InflateError::TooLarge) => Err(ProtocolError::InflatedTooLarge {
            message_bytes_max: config.message_bytes_max,
        }),
        Err(InflateError::Corrupt) => Err(ProtocolError::InvalidCompressedData),
        Err(InflateError::OutOfBuffers) => Err(ProtocolError::BufferPoolExhausted {
            message_bytes: session.held(Held::Message).map_or(0, PooledBuffer::len) + 1,
        }),
    }
}

fn acquire(pool: &mut BufferPool, bytes: usize) -> Result<PooledBuffer, ProtocolError> {
    pool.acquire(bytes)
        .ok_or(ProtocolError::BufferPoolExhausted {
            message_bytes: bytes,
        })
}

/// Splits and checks a close payload: empty, or a valid code and a UTF-8 reason.
fn parse_close_payload(payload: &[u8]) -> Result<(Option<CloseCode>, &str), ProtocolError> {
    match payload {
        [] => Ok((None, "")),
        [_] => Err(ProtocolError::CloseFrameTooShort),
        [high, low, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*high, *low]));
            if !code.is_allowed_on_wire() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason =
                utf8::validate_str(reason).map_err(|_| ProtocolError::InvalidCloseReasonUtf8)?;
            Ok((Some(code), reason))
        }
    }
}

/// Builds the event of a control frame whose payload was already checked.
fn control_event(opcode: OpCode, payload: &[u8]) -> Event<'_> {
    match opcode {
        OpCode::Ping => Event::Ping(payload),
        OpCode::Pong => Event::Pong(payload),
        OpCode::Close => {
            let (code, reason) = parse_close_payload(payload).expect("checked when it arrived");
            Event::Close { code, reason }
        }
        _ => unreachable!("not a control opcode: {opcode:?}"),
    }
}
