//! One connection of the io_uring client: its stage, its TLS session (wss://, https://), the
//! upgrade answer so far, the partial frame carried between receives, a fragmented message
//! being put together, and its two send buffers (one being filled, one in flight).

use rustls::ClientConnection;

use super::{Handler, Kind, Message};
use crate::protocol::Cause;
use crate::websocket::deflate::Inflater;
use crate::websocket::frame::{self, FrameHead, MaskKeys};
use crate::websocket::handshake::ClientKey;

/// A carried partial frame keeps its buffer up to this size; a larger one is freed once
/// used, so that a million connections do not each keep the largest message they ever got.
const CARRY_KEPT_BYTES_MAX: usize = 4096;

/// Bytes queued to send on one connection at most: a handler that queues more is broken.
const OUTBOUND_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Where a connection is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stage {
    /// Not opened yet.
    #[default]
    Idle,
    Connecting,
    /// Connected; the upgrade request is out, the answer not yet complete (raw connections
    /// over TLS: the TLS handshake is under way).
    Upgrading,
    Open,
    /// Failed or shut down; requests may still be completing.
    Ended,
}

pub struct Client {
    pub fd: libc::c_int,
    pub stage: Stage,
    pub kind: Kind,
    pub attempted_at: std::time::Instant,
    pub key: ClientKey,
    /// The TLS session between the socket and the codec (wss://, https://), boxed so that a
    /// plain connection pays one pointer for it.
    pub tls: Option<Box<ClientConnection>>,
    /// The upgrade answer received so far.
    head: Vec<u8>,
    /// The start of a frame whose end has not arrived yet.
    carry: Vec<u8>,
    /// A fragmented data message so far.
    fragments: Option<Fragments>,
    /// permessage-deflate, once the server agreed to it: boxed, so that a connection
    /// without it pays one pointer.
    inflater: Option<Box<Inflater>>,
    /// Bytes queued for the next send.
    pub outbound: Vec<u8>,
    /// Bytes of the send in flight, of which `sent_bytes` are already sent.
    pub sending: Vec<u8>,
    pub sent_bytes: usize,
    /// Requests in flight that refer to `fd`.
    pub operations: u8,
    pub receive_armed: bool,
    /// In the engine's send list.
    pub listed: bool,
}

impl Default for Client {
    fn default() -> Self {
        Self {
            fd: -1,
            stage: Stage::Idle,
            kind: Kind::WebSocket,
            attempted_at: std::time::Instant::now(),
            key: ClientKey::new([0; 16]),
            tls: None,
            head: Vec::new(),
            carry: Vec::new(),
            fragments: None,
            inflater: None,
            outbound: Vec::new(),
            sending: Vec::new(),
            sent_bytes: 0,
            operations: 0,
            receive_armed: false,
            listed: false,
        }
    }
}

/// A data message whose frames have not all arrived.
struct Fragments {
    text: bool,
    /// RSV1 on its first frame: the payload is compressed.
    compressed: bool,
    payload: Vec<u8>,
    /// Bytes of its frames on the wire so far, heads included.
    wire_bytes: usize,
}

/// What a connection needs from the engine while it takes in bytes.
pub struct Context<'a> {
    pub index: u32,
    pub received_ns: u64,
    pub message_bytes_max: usize,
    pub keys: &'a mut MaskKeys,
    /// Whether the upgrade request offered permessage-deflate.
    pub deflate_offered: bool,
    /// The thread's one buffer for inflated messages.
    pub inflated: &'a mut Vec<u8>,
}

/// Where a handler queues what a connection is to send: masked WebSocket frames, or raw bytes.
pub struct Outbound<'a> {
    bytes: &'a mut Vec<u8>,
    keys: &'a mut MaskKeys,
}

impl<'a> Outbound<'a> {
    pub fn new(bytes: &'a mut Vec<u8>, keys: &'a mut MaskKeys) -> Self {
        Self { bytes, keys }
    }

    /// Queues a text frame (masked, as a client must).
    pub fn text(&mut self, payload: &[u8]) {
        self.frame(frame::TEXT, payload);
    }

    /// Queues a binary frame (masked).
    pub fn binary(&mut self, payload: &[u8]) {
        self.frame(frame::BINARY, payload);
    }

    /// Queues bytes as they are (raw connections).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Bytes queued and not yet handed to the kernel.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.len()
    }

    fn frame(&mut self, opcode: u8, payload: &[u8]) {
        let key = self.keys.key();
        frame::write_frame(self.bytes, opcode, payload, Some(key));
    }
}

impl Client {
    /// Resets the connection for an attempt of `kind` with a fresh handshake nonce.
    pub fn start(&mut self, kind: Kind, nonce: [u64; 2]) {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&nonce[0].to_ne_bytes());
        bytes[8..].copy_from_slice(&nonce[1].to_ne_bytes());
        self.kind = kind;
        self.key = ClientKey::new(bytes);
        self.stage = Stage::Connecting;
        self.attempted_at = std::time::Instant::now();
    }

    /// Whether a send should start: something queued (by the handler, or by TLS: handshake
    /// messages), nothing in flight, still usable.
    pub fn wants_send(&self) -> bool {
        let tls_wants_write = self.tls.as_ref().is_some_and(|tls| tls.wants_write());
        (!self.outbound.is_empty() || tls_wants_write)
            && self.sending.is_empty()
            && matches!(self.stage, Stage::Upgrading | Stage::Open)
    }

    /// The cause when the server closes or breaks the connection now.
    pub fn closed_cause(&self) -> Cause {
        let tls_handshaking = self.tls.as_ref().is_some_and(|tls| tls.is_handshaking());
        match self.stage {
            Stage::Upgrading if tls_handshaking => Cause::TlsHandshakeFailed,
            Stage::Upgrading => Cause::HandshakeFailed,
            _ => Cause::ClosedEarly,
        }
    }

    /// Moves what is queued into `sending` for the next send: as it is, or sealed by TLS
    /// together with whatever else TLS has to send.
    pub fn take_queued(&mut self) {
        match self.tls.as_deref_mut() {
            None => std::mem::swap(&mut self.outbound, &mut self.sending),
            Some(session) => {
                crate::transport::encrypt(session, &self.outbound, &mut self.sending);
                self.outbound.clear();
            }
        }
        self.sent_bytes = 0;
    }

    /// Frees what an ended connection no longer needs (not `sending`: a send may be in
    /// flight).
    pub fn release_buffers(&mut self) {
        self.tls = None;
        self.head = Vec::new();
        self.carry = Vec::new();
        self.fragments = None;
        self.inflater = None;
        self.outbound = Vec::new();
    }

    /// Takes in received bytes: the upgrade answer, then frames. After the upgrade answer is
    /// complete the stage is `Open` and any frames that came with it wait in the carry until
    /// the engine has run `Handler::opened` and calls [`Client::take_early_frames`].
    pub fn absorb(
        &mut self,
        bytes: &[u8],
        context: &mut Context<'_>,
        handler: &mut impl Handler,
    ) -> Result<(), Cause> {
        match (self.stage, self.kind) {
            (Stage::Open, Kind::WebSocket) => self.frames(bytes, context, handler),
            (Stage::Open, Kind::Raw) => {
                let message = Message {
                    text: false,
                    payload: bytes,
                    received_ns: context.received_ns,
                    wire_bytes: bytes.len(),
                    compressed: false,
                };
                let mut out = Outbound::new(&mut self.outbound, context.keys);
                handler.message(context.index, message, &mut out)?;
                self.check_outbound()
            }
            (Stage::Upgrading, _) => self.upgrade(bytes, context.deflate_offered),
            (Stage::Idle | Stage::Connecting | Stage::Ended, _) => Ok(()),
        }
    }

    fn upgrade(&mut self, bytes: &[u8], deflate_offered: bool) -> Result<(), Cause> {
        self.head.extend_from_slice(bytes);
        let head_bytes = match self.key.check_response_deflate(&self.head, deflate_offered) {
            Ok(None) => return Ok(()),
            Ok(Some((length, negotiated))) => {
                self.inflater = negotiated.map(|negotiated| Box::new(Inflater::new(negotiated)));
                length
            }
            Err(_) => return Err(Cause::HandshakeFailed),
        };
        self.stage = Stage::Open;
        let head = std::mem::take(&mut self.head);
        self.carry.extend_from_slice(&head[head_bytes..]);
        Ok(())
    }

    /// Frames that arrived together with the upgrade answer, handled once `opened` ran.
    pub fn take_early_frames(
        &mut self,
        context: &mut Context<'_>,
        handler: &mut impl Handler,
    ) -> Result<(), Cause> {
        if self.carry.is_empty() {
            return Ok(());
        }
        let carry = std::mem::take(&mut self.carry);
        self.frames(&carry, context, handler)
    }

    /// Handles every complete frame in the carried bytes plus `bytes`; keeps the partial rest.
    fn frames(
        &mut self,
        bytes: &[u8],
        context: &mut Context<'_>,
        handler: &mut impl Handler,
    ) -> Result<(), Cause> {
        if self.carry.is_empty() {
            let consumed = self.frames_in(bytes, context, handler)?;
            self.carry.extend_from_slice(&bytes[consumed..]);
        } else {
            let mut carry = std::mem::take(&mut self.carry);
            carry.extend_from_slice(bytes);
            let consumed = self.frames_in(&carry, context, handler)?;
            carry.drain(..consumed);
            if carry.is_empty() && carry.capacity() > CARRY_KEPT_BYTES_MAX {
                carry = Vec::new();
            }
            self.carry = carry;
        }
        self.check_outbound()
    }

    /// Handles the complete frames at the start of `input`; returns the bytes they took.
    fn frames_in(
        &mut self,
        input: &[u8],
        context: &mut Context<'_>,
        handler: &mut impl Handler,
    ) -> Result<usize, Cause> {
        let mut offset = 0;
        while offset < input.len() {
            let deflate = self.inflater.is_some();
            let head = match frame::parse_head_compressed(
                &input[offset..],
                context.message_bytes_max,
                deflate,
            ) {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(_) => return Err(protocol_error("a malformed frame")),
            };
            if head.mask.is_some() {
                return Err(protocol_error("a masked frame from the server"));
            }
            let end = offset + head.frame_bytes();
            if end > input.len() {
                break;
            }
            self.frame(
                head,
                &input[offset + head.head_bytes..end],
                context,
                handler,
            )?;
            offset = end;
        }
        Ok(offset)
    }

    fn frame(
        &mut self,
        head: FrameHead,
        payload: &[u8],
        context: &mut Context<'_>,
        handler: &mut impl Handler,
    ) -> Result<(), Cause> {
        match head.opcode {
            frame::TEXT | frame::BINARY if self.fragments.is_some() => {
                Err(protocol_error("a new message inside a fragmented one"))
            }
            frame::TEXT | frame::BINARY if head.fin => self.deliver(
                head.opcode == frame::TEXT,
                head.compressed,
                payload,
                head.frame_bytes(),
                context,
                handler,
            ),
            frame::TEXT | frame::BINARY => {
                if payload.len() > context.message_bytes_max {
                    return Err(protocol_error("a message over the size limit"));
                }
                self.fragments = Some(Fragments {
                    text: head.opcode == frame::TEXT,
                    compressed: head.compressed,
                    payload: payload.to_vec(),
                    wire_bytes: head.frame_bytes(),
                });
                Ok(())
            }
            frame::CONTINUATION => self.continuation(head, payload, context, handler),
            frame::PING => {
                let key = context.keys.key();
                frame::write_frame(&mut self.outbound, frame::PONG, payload, Some(key));
                Ok(())
            }
            frame::PONG => Ok(()),
            frame::CLOSE => {
                log_close(payload);
                Err(Cause::ClosedEarly)
            }
            other => unreachable!("parse_head refuses opcode {other}"),
        }
    }

    fn continuation(
        &mut self,
        head: FrameHead,
        payload: &[u8],
        context: &mut Context<'_>,
        handler: &mut impl Handler,
    ) -> Result<(), Cause> {
        let Some(so_far) = &mut self.fragments else {
            return Err(protocol_error("a continuation without a message"));
        };
        if so_far.payload.len() + payload.len() > context.message_bytes_max {
            return Err(protocol_error("a message over the size limit"));
        }
        so_far.payload.extend_from_slice(payload);
        so_far.wire_bytes += head.frame_bytes();
        if !head.fin {
            return Ok(());
        }
        let whole = self.fragments.take().expect("checked above");
        self.deliver(
            whole.text,
            whole.compressed,
            &whole.payload,
            whole.wire_bytes,
            context,
            handler,
        )
    }

    /// Hands one whole data message to the handler, inflated first when compressed.
    fn deliver(
        &mut self,
        text: bool,
        compressed: bool,
        payload: &[u8],
        wire_bytes: usize,
        context: &mut Context<'_>,
        handler: &mut impl Handler,
    ) -> Result<(), Cause> {
        let payload = if compressed {
            let inflater = self
                .inflater
                .as_mut()
                .expect("RSV1 is refused without deflate");
            inflater
                .inflate(&[payload], context.inflated, context.message_bytes_max)
                .map_err(|_| protocol_error("a compressed message that does not inflate"))?;
            &context.inflated[..]
        } else {
            payload
        };
        let message = Message {
            text,
            payload,
            received_ns: context.received_ns,
            wire_bytes,
            compressed,
        };
        let mut out = Outbound::new(&mut self.outbound, context.keys);
        handler.message(context.index, message, &mut out)
    }

    fn check_outbound(&self) -> Result<(), Cause> {
        if self.outbound.len() > OUTBOUND_BYTES_MAX {
            return Err(protocol_error("more than 4 MiB queued to send"));
        }
        Ok(())
    }
}

/// A protocol violation by the server: counted as the server breaking the connection; the
/// first few are printed with what was wrong.
fn protocol_error(what: &str) -> Cause {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const LOGGED_MAX: usize = 3;
    static LOGGED: AtomicUsize = AtomicUsize::new(0);
    if LOGGED.fetch_add(1, Ordering::Relaxed) < LOGGED_MAX {
        eprintln!("worker {}: the server sent {what}", std::process::id());
    }
    Cause::ClosedEarly
}

/// A close from the server before the end counts as `closed_early`; the first few are
/// printed with their code and reason, which usually say why.
fn log_close(payload: &[u8]) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const LOGGED_MAX: usize = 3;
    static LOGGED: AtomicUsize = AtomicUsize::new(0);
    if LOGGED.fetch_add(1, Ordering::Relaxed) < LOGGED_MAX {
        let code = match payload {
            [high, low, ..] => u16::from_be_bytes([*high, *low]),
            _ => 0,
        };
        let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
        eprintln!(
            "worker {}: the server closed a connection: code {code} {reason:?}",
            std::process::id()
        );
    }
}
