//! Shared helpers of the integration tests: client frame encoding and session driving.

use ringcast::protocol::ProtocolLimits;
use ringcast::protocol::pool::BufferPool;
use ringcast::protocol::pool::PoolLimits;
use ringcast::protocol::websocket::frame::{OpCode, encode_masked_frame};
use ringcast::protocol::websocket::session::{Event, MessageKind, Session};
use ringcast::protocol::{CloseCode, ProtocolError};

/// Encodes a masked client frame, as a browser would send it.
pub fn client_frame(opcode: OpCode, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::new();
    encode_masked_frame(opcode, fin, payload, mask, &mut frame);
    frame
}

/// An event with its payload copied out, so it outlives the read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owned {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
    Error(CloseCode),
}

/// A session with its pool and limits, fed by tests.
pub struct Harness {
    pub session: Session,
    pub pool: BufferPool,
    pub config: ProtocolLimits,
    pub errors: Vec<ProtocolError>,
}

impl Harness {
    pub fn new(config: ProtocolLimits) -> Self {
        let pool = BufferPool::new(&PoolLimits::for_message_bytes_max(config.message_bytes_max));
        Self {
            session: Session::new(),
            pool,
            config,
            errors: Vec::new(),
        }
    }

    /// Feeds one read and collects its events.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Owned> {
        let mut input = bytes.to_vec();
        let mut events = Vec::new();
        let mut reader = self
            .session
            .handle_read(&mut input, &mut self.pool, &self.config);
        while let Some(result) = reader.next_event() {
            match result {
                Ok(event) => events.push(own(&event)),
                Err(error) => {
                    events.push(Owned::Error(error.close_code()));
                    self.errors.push(error);
                }
            }
        }
        assert_eq!(
            reader.consumed_bytes(),
            bytes.len(),
            "a read must be consumed whole"
        );
        drop(reader);
        events
    }

    /// Feeds `bytes` in the given chunk sizes (cycled) and collects every event.
    pub fn feed_in_chunks(&mut self, bytes: &[u8], chunk_sizes: &[usize]) -> Vec<Owned> {
        let mut events = Vec::new();
        let mut start = 0;
        for &size in chunk_sizes.iter().cycle() {
            if start >= bytes.len() {
                break;
            }
            let end = (start + size.max(1)).min(bytes.len());
            events.extend(self.feed(&bytes[start..end]));
            start = end;
        }
        events
    }

    /// Every control frame the session owes, as raw bytes.
    pub fn transmits(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.session.poll_transmit(&mut self.pool))
            .map(|frame| frame.as_bytes().to_vec())
            .collect()
    }
}

pub fn own(event: &Event<'_>) -> Owned {
    match event {
        Event::Message {
            kind: MessageKind::Text,
            payload,
        } => Owned::Text(String::from_utf8(payload.to_vec()).expect("validated text")),
        Event::Message {
            kind: MessageKind::Binary,
            payload,
        } => Owned::Binary(payload.to_vec()),
        Event::Ping(payload) => Owned::Ping(payload.to_vec()),
        Event::Pong(payload) => Owned::Pong(payload.to_vec()),
        Event::Close { code, reason } => Owned::Close(code.map(|code| code.0), reason.to_string()),
    }
}
