//! HTTP/1.1 requests with bodies, read from the byte stream of one connection (RFC 9112).
//!
//! Sans-IO like [`super::session`]: the driver hands every read to
//! [`RequestReader::handle_read`] and drives the returned [`RequestEvents`] until
//! `next_event` yields `None`, answering each event in order before asking for the next:
//!
//! - [`HttpEvent::Request`]: a whole request, head and body; answer it, and close afterwards
//!   unless [`RequestHead::keep_alive`]. Pipelined requests follow in later events.
//! - [`HttpEvent::ContinueExpected`]: the client sent `Expect: 100-continue` and waits for
//!   [`CONTINUE_RESPONSE`] before sending its body. Write it, or refuse the head (a final error
//!   status) and close.
//! - [`HttpEvent::Upgrade`]: a WebSocket upgrade. The reader is done: the bytes of this read
//!   from `rest_start` on are the WebSocket's. Re-parse [`RequestHead::bytes`] with
//!   [`super::head::parse_request_head`] for `accept_upgrade`, then drop the reader.
//! - `Err`: the stream cannot be read as requests any more; write the error and close. The
//!   rest of the read is discarded and later reads yield nothing.
//!
//! Every byte of a read is consumed before `next_event` yields `None` (except after an
//! upgrade), so the driver can hand its receive buffer back to the kernel at once. A request
//! whose head and `Content-Length` body lie whole in one read is lent straight from that read,
//! with no copy: the common case of small publishes. A request cut across reads, and every
//! chunked body (whose data is interleaved with chunk framing), is assembled in buffers from the
//! shard's [`BufferPool`]: one for the head, one for the decoded body. They are lent to the event
//! that completes the request and handed back to the pool on the next call, so a connection
//! between requests holds no buffer.

use super::error::HandshakeError;
use super::head::{self, HEADERS_COUNT_MAX};
use crate::protocol::pool::{BufferPool, PooledBuffer};

/// The interim response a client that sent `Expect: 100-continue` waits for before its body.
pub const CONTINUE_RESPONSE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Hex digits in a chunk size. Sixteen spell any `u64`; more can only be leading zeros, which
/// no client sends and which would let a size line grow without bound.
const CHUNK_SIZE_DIGITS_MAX: u8 = 16;
/// Bytes of chunk extensions (`;name=value`) on one size line. No client we serve sends any;
/// they are skipped, and the limit keeps skipped bytes, which count against no other limit,
/// bounded.
const CHUNK_EXTENSION_BYTES_MAX: usize = 1024;

/// The limits a reader enforces; the driver builds them once from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest request head (`ProtocolLimits::header_bytes_max`), answered with 431 beyond.
    /// It also bounds the trailer section of a chunked body, which is a second header block.
    pub header_bytes_max: usize,
    /// Largest request body, by `Content-Length` or decoded chunks, answered with 413 beyond.
    /// A body cut across reads is held in one pooled buffer, so the pool's largest class must
    /// hold it.
    pub body_bytes_max: usize,
}

/// How a request says where its body ends (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// Neither `Content-Length` nor `Transfer-Encoding`: no body.
    None,
    /// `Content-Length`, already checked against `body_bytes_max`.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Where a field of the head lies, relative to the head's first byte. The head is parsed once
/// and its fields kept as spans, so they can be read back from wherever the head is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    /// The span of `part`, a slice of `base`.
    fn within(base: &[u8], part: &[u8]) -> Self {
        let start = (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
        assert!(start <= base.len() && part.len() <= base.len() - start);
        Self {
            start,
            end: start + part.len(),
        }
    }

    fn of(self, bytes: &[u8]) -> &[u8] {
        &bytes[self.start..self.end]
    }
}

/// What the reader and the router need of a request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HeadLayout {
    head_bytes: usize,
    method: Span,
    path: Span,
    query: Option<Span>,
    content_type: Option<Span>,
    version_minor: u8,
    framing: BodyFraming,
    keep_alive: bool,
    expects_continue: bool,
    websocket_upgrade: bool,
}

impl HeadLayout {
    /// Reads the fields of `request`, parsed from `head`, and checks its body framing.
    fn new(
        head: &[u8],
        request: &head::Request<'_, '_>,
        limits: &RequestLimits,
    ) -> Result<Self, HandshakeError> {
        let version_minor = request.version_minor();
        let framing = body_framing(request, limits)?;
        let websocket_upgrade = request.is_websocket_upgrade();
        if websocket_upgrade && !matches!(framing, BodyFraming::None | BodyFraming::Length(0)) {
            return Err(HandshakeError::UpgradeWithBody);
        }
        let keep_alive = if version_minor >= 1 {
            !request.has_token("connection", "close")
        } else {
            request.has_token("connection", "keep-alive")
        };
        // HTTP/1.0 clients cannot expect an interim response (RFC 9110 §10.1.1).
        let expects_continue = version_minor >= 1
            && request
                .header("expect")
                .is_some_and(|value| value.trim_ascii().eq_ignore_ascii_case(b"100-continue"));
        Ok(Self {
            head_bytes: request.head_bytes(),
            method: Span::within(head, request.method().as_bytes()),
            path: Span::within(head, request.path().as_bytes()),
            query: request
                .query()
                .map(|query| Span::within(head, query.as_bytes())),
            content_type: request
                .header("content-type")
                .map(|value| Span::within(head, value)),
            version_minor,
            framing,
            keep_alive,
            expects_continue,
            websocket_upgrade,
        })
    }
}

/// `Content-Length` and `Transfer-Encoding` read together, refusing every combination a proxy
/// in front of us could read differently (RFC 9112 §6.3, §11.2).
fn body_framing(
    request: &head::Request<'_, '_>,
    limits: &RequestLimits,
) -> Result<BodyFraming, HandshakeError> {
    let mut length: Option<u64> = None;
    let elements = request
        .header_values("content-length")
        .flat_map(|value| value.split(|&byte| byte == b','));
    for element in elements {
        let parsed = parse_content_length(element.trim_ascii())?;
        if length.is_some_and(|previous| previous != parsed) {
            return Err(HandshakeError::ConflictingContentLengths);
        }
        length = Some(parsed);
    }
    let chunked = request.header("transfer-encoding").is_some();
    if chunked {
        if length.is_some() {
            return Err(HandshakeError::ContentLengthWithTransferEncoding);
        }
        if request.version_minor() == 0 {
            return Err(HandshakeError::TransferEncodingInHttp10);
        }
        check_transfer_codings(request)?;
        return Ok(BodyFraming::Chunked);
    }
    match length {
        None => Ok(BodyFraming::None),
        Some(body_bytes) if body_bytes > limits.body_bytes_max as u64 => {
            Err(HandshakeError::BodyTooLarge {
                body_bytes,
                body_bytes_max: limits.body_bytes_max,
            })
        }
        Some(body_bytes) => Ok(BodyFraming::Length(body_bytes as usize)),
    }
}

/// `1*DIGIT`; a number too large for a `u64` is certainly over the body limit.
fn parse_content_length(digits: &[u8]) -> Result<u64, HandshakeError> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HandshakeError::InvalidContentLength);
    }
    let mut value: u64 = 0;
    for digit in digits {
        value = value
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'));
    }
    Ok(value)
}

/// The codings of every `Transfer-Encoding` header, in order, must be exactly one `chunked`.
/// Chunked not last leaves the body's end unknown (400, RFC 9112 §6.3 item 4); other codings
/// we do not decode (501, §6.1).
fn check_transfer_codings(request: &head::Request<'_, '_>) -> Result<(), HandshakeError> {
    let codings = || {
        request
            .header_values("transfer-encoding")
            .flat_map(|value| value.split(|&byte| byte == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|coding| !coding.is_empty())
    };
    let is_chunked = |coding: &[u8]| coding.eq_ignore_ascii_case(b"chunked");
    if !codings().last().is_some_and(is_chunked) || codings().filter(|c| is_chunked(c)).count() > 1
    {
        return Err(HandshakeError::MalformedRequest(
            "chunked must be the last transfer coding, once",
        ));
    }
    if codings().count() > 1 {
        return Err(HandshakeError::UnsupportedTransferEncoding);
    }
    Ok(())
}

/// A complete request head, borrowed from the read or from a pooled buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHead<'a> {
    bytes: &'a [u8],
    layout: HeadLayout,
}

impl<'a> RequestHead<'a> {
    fn text(&self, span: Span) -> &'a str {
        std::str::from_utf8(span.of(self.bytes)).expect("httparse hands out tokens as text")
    }

    /// The method, exactly as sent (methods are case-sensitive).
    pub fn method(&self) -> &'a str {
        self.text(self.layout.method)
    }

    /// The request target up to the first `?`, still percent-encoded.
    pub fn path(&self) -> &'a str {
        self.text(self.layout.path)
    }

    /// The request target after the first `?`, if there was one.
    pub fn query(&self) -> Option<&'a str> {
        self.layout.query.map(|span| self.text(span))
    }

    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub fn version_minor(&self) -> u8 {
        self.layout.version_minor
    }

    /// The first `Content-Type` value, untrimmed.
    pub fn content_type(&self) -> Option<&'a [u8]> {
        self.layout.content_type.map(|span| span.of(self.bytes))
    }

    /// How the body was framed (a POST without framing deserves 411).
    pub fn body_framing(&self) -> BodyFraming {
        self.layout.framing
    }

    /// Whether the connection may carry another request after this one's response: HTTP/1.1
    /// without `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        self.layout.keep_alive
    }

    /// Whether the client sent `Expect: 100-continue` (over HTTP/1.1).
    pub fn expects_continue(&self) -> bool {
        self.layout.expects_continue
    }

    /// Whether the client asks for a WebSocket (see [`head::Request::is_websocket_upgrade`]).
    pub fn is_websocket_upgrade(&self) -> bool {
        self.layout.websocket_upgrade
    }

    /// The whole head, request line to blank line, for [`head::parse_request_head`] when more
    /// than these fields is needed (the upgrade's keys and origin).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// A whole request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub head: RequestHead<'a>,
    /// The body, de-chunked; empty without one.
    pub body: &'a [u8],
}

/// What a read completed. See the module documentation for how to answer each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpEvent<'a> {
    Request(Request<'a>),
    ContinueExpected(RequestHead<'a>),
    /// A WebSocket upgrade request; the bytes of this read from `rest_start` on follow its head.
    Upgrade {
        head: RequestHead<'a>,
        rest_start: usize,
    },
}

/// Where a chunked body's decoder stands; every state is a position in RFC 9112 §7.1's grammar,
/// so the body may be cut across reads anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Size {
        digits: u8,
    },
    /// After the size's digits: optional whitespace, then `;` extensions, up to the CR.
    Extension {
        bytes: usize,
        started: bool,
    },
    SizeLineFeed,
    Data {
        remaining: usize,
    },
    DataCarriageReturn,
    DataLineFeed,
    /// A trailer field line, or the blank line that ends the body. `in_value`: the colon that
    /// ends the field name has been read.
    TrailerLine {
        bytes: usize,
        in_value: bool,
    },
    TrailerLineFeed {
        line_empty: bool,
    },
    Done,
}

#[derive(Clone, Copy, Debug)]
struct ChunkDecoder {
    state: ChunkState,
    /// The size of the chunk whose size line is being read.
    chunk_bytes: usize,
    body_bytes: usize,
    trailer_bytes: usize,
}

impl ChunkDecoder {
    fn new() -> Self {
        Self {
            state: ChunkState::Size { digits: 0 },
            chunk_bytes: 0,
            body_bytes: 0,
            trailer_bytes: 0,
        }
    }

    /// Decodes what `input` holds, appending chunk data to `body`. Returns the bytes consumed:
    /// all of `input`, or fewer once the body is done (the rest is the next request).
    fn decode(
        &mut self,
        input: &[u8],
        body: &mut Option<PooledBuffer>,
        pool: &mut BufferPool,
        limits: &RequestLimits,
    ) -> Result<usize, HandshakeError> {
        let mut index = 0;
        while index < input.len() && self.state != ChunkState::Done {
            if let ChunkState::Data { remaining } = self.state {
                let taken = remaining.min(input.len() - index);
                let buffer = body.as_mut().expect("reserved when the size line ended");
                buffer.extend_from_slice(&input[index..index + taken]);
                index += taken;
                self.body_bytes += taken;
                self.state = match remaining - taken {
                    0 => ChunkState::DataCarriageReturn,
                    remaining => ChunkState::Data { remaining },
                };
                continue;
            }
            if self.step(input[index], limits)? {
                index += 1;
            }
            if self.state == (ChunkState::Data { remaining: 0 }) {
                self.state = ChunkState::Data {
                    remaining: self.chunk_bytes,
                };
                reserve(body, self.body_bytes + self.chunk_bytes, pool)?;
            }
        }
        Ok(index)
    }

    /// Takes one framing byte. Returns whether it was consumed (the byte that ends a size's
    /// digits is looked at again as the start of what follows). Entering `Data` is signalled
    /// with `remaining: 0`, for the caller to reserve room for the chunk.
    fn step(&mut self, byte: u8, limits: &RequestLimits) -> Result<bool, HandshakeError> {
        let malformed = HandshakeError::MalformedChunk;
        self.state = match self.state {
            ChunkState::Size { digits } => match (byte as char).to_digit(16) {
                Some(_) if digits == CHUNK_SIZE_DIGITS_MAX => {
                    return Err(malformed("chunk size over 16 hex digits"));
                }
                Some(value) => {
                    self.chunk_bytes = self
                        .chunk_bytes
                        .saturating_mul(16)
                        .saturating_add(value as usize);
                    let body_bytes = self.body_bytes.saturating_add(self.chunk_bytes);
                    if body_bytes > limits.body_bytes_max {
                        return Err(HandshakeError::BodyTooLarge {
                            body_bytes: body_bytes as u64,
                            body_bytes_max: limits.body_bytes_max,
                        });
                    }
                    ChunkState::Size { digits: digits + 1 }
                }
                None if digits == 0 => return Err(malformed("chunk size is not hexadecimal")),
                None => {
                    self.state = ChunkState::Extension {
                        bytes: 0,
                        started: false,
                    };
                    return Ok(false);
                }
            },
            ChunkState::Extension { bytes, started } => match byte {
                b'\r' => ChunkState::SizeLineFeed,
                b'\n' => return Err(malformed("bare line feed after a chunk size")),
                _ if bytes == CHUNK_EXTENSION_BYTES_MAX => {
                    return Err(malformed("chunk extensions over 1024 bytes"));
                }
                b' ' | b'\t' | b';' => ChunkState::Extension {
                    bytes: bytes + 1,
                    started: started || byte == b';',
                },
                _ if started => ChunkState::Extension {
                    bytes: bytes + 1,
                    started,
                },
                _ => return Err(malformed("chunk size is not hexadecimal")),
            },
            ChunkState::SizeLineFeed if byte != b'\n' => {
                return Err(malformed("chunk size line not ended by CRLF"));
            }
            ChunkState::SizeLineFeed if self.chunk_bytes == 0 => ChunkState::TrailerLine {
                bytes: 0,
                in_value: false,
            },
            ChunkState::SizeLineFeed => ChunkState::Data { remaining: 0 },
            ChunkState::DataCarriageReturn if byte == b'\r' => ChunkState::DataLineFeed,
            ChunkState::DataLineFeed if byte == b'\n' => {
                self.chunk_bytes = 0;
                ChunkState::Size { digits: 0 }
            }
            ChunkState::DataCarriageReturn | ChunkState::DataLineFeed => {
                return Err(malformed("chunk data not followed by CRLF"));
            }
            // Trailer lines are field lines (RFC 9112 §7.1.2), checked like a head's (RFC 9110
            // §5.1, §5.5) though their fields are then skipped: bytes that are not HTTP are
            // refused wherever they appear, as httparse refuses them in a head.
            ChunkState::TrailerLine { bytes, in_value } => match byte {
                b'\r' if bytes > 0 && !in_value => {
                    return Err(malformed("trailer line without a colon"));
                }
                b'\r' => ChunkState::TrailerLineFeed {
                    line_empty: bytes == 0,
                },
                b'\n' => return Err(malformed("bare line feed in the trailer")),
                _ if self.trailer_bytes == limits.header_bytes_max => {
                    return Err(HandshakeError::TrailerTooLarge {
                        trailer_bytes_max: limits.header_bytes_max,
                    });
                }
                b':' if !in_value && bytes > 0 => {
                    self.trailer_bytes += 1;
                    ChunkState::TrailerLine {
                        bytes: bytes + 1,
                        in_value: true,
                    }
                }
                _ if !in_value && !is_token_byte(byte) => {
                    return Err(malformed("invalid trailer field name"));
                }
                _ if in_value && !is_field_value_byte(byte) => {
                    return Err(malformed("invalid trailer field value"));
                }
                _ => {
                    self.trailer_bytes += 1;
                    ChunkState::TrailerLine {
                        bytes: bytes + 1,
                        in_value,
                    }
                }
            },
            ChunkState::TrailerLineFeed { line_empty } if byte == b'\n' => match line_empty {
                true => ChunkState::Done,
                false => ChunkState::TrailerLine {
                    bytes: 0,
                    in_value: false,
                },
            },
            ChunkState::TrailerLineFeed { .. } => {
                return Err(malformed("trailer line not ended by CRLF"));
            }
            ChunkState::Data { .. } | ChunkState::Done => unreachable!("handled by decode"),
        };
        Ok(true)
    }
}

/// A `tchar` of a field name (RFC 9110 §5.6.2).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A byte of a field value: visible ASCII, space, tab, or obs-text (RFC 9110 §5.5).
fn is_field_value_byte(byte: u8) -> bool {
    matches!(byte, b'\t' | b' '..=b'~' | 0x80..=0xFF)
}

/// Makes `slot` hold a buffer of at least `bytes`, acquiring or growing it.
fn reserve(
    slot: &mut Option<PooledBuffer>,
    bytes: usize,
    pool: &mut BufferPool,
) -> Result<(), HandshakeError> {
    let exhausted = HandshakeError::BufferPoolExhausted { bytes };
    let reserved = match slot {
        Some(buffer) => pool.grow_in_place(buffer, bytes),
        None => {
            *slot = pool.acquire(bytes);
            slot.is_some()
        }
    };
    if reserved { Ok(()) } else { Err(exhausted) }
}

#[derive(Debug)]
enum BodyProgress {
    Length { remaining: usize },
    Chunked(ChunkDecoder),
}

/// A request whose head is complete and whose body is still arriving (or being de-chunked).
#[derive(Debug)]
struct PendingBody {
    layout: HeadLayout,
    head: PooledBuffer,
    /// Acquired with the first body byte to store; `None` for an empty body.
    body: Option<PooledBuffer>,
    progress: BodyProgress,
    continue_offered: bool,
}

impl PendingBody {
    fn is_complete(&self) -> bool {
        match &self.progress {
            BodyProgress::Length { remaining } => *remaining == 0,
            BodyProgress::Chunked(decoder) => decoder.state == ChunkState::Done,
        }
    }
}

#[derive(Debug, Default)]
enum State {
    /// Nothing stored: the next byte starts a request.
    #[default]
    BetweenRequests,
    /// A head cut across reads, stored so far.
    Head(PooledBuffer),
    Body(PendingBody),
    /// The connection speaks WebSocket now; nothing more is read here.
    Upgraded,
    /// An error ended the request stream; everything after it is discarded.
    Failed,
}

/// The request-reading state of one connection: about 150 bytes, plus pooled buffers only
/// while a request is cut across reads.
#[derive(Debug, Default)]
pub struct RequestReader {
    state: State,
    /// Buffers lent to the last event, handed back on the next call.
    lent_head: Option<PooledBuffer>,
    lent_body: Option<PooledBuffer>,
}

impl RequestReader {
    /// A reader for a connection that has sent nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one read. Drive the events until `next_event` yields `None`.
    pub fn handle_read<'r>(
        &'r mut self,
        input: &'r [u8],
        pool: &'r mut BufferPool,
        limits: &'r RequestLimits,
    ) -> RequestEvents<'r> {
        self.release_lent(pool);
        RequestEvents {
            reader: self,
            pool,
            limits,
            input,
            position: 0,
        }
    }

    /// Whether an upgrade was handed out: the connection belongs to the WebSocket now.
    pub fn is_upgraded(&self) -> bool {
        matches!(self.state, State::Upgraded)
    }

    /// Whether a request is partly received (for timeouts: a client that stalls mid-request).
    pub fn is_mid_request(&self) -> bool {
        matches!(self.state, State::Head(_) | State::Body(_))
    }

    /// Hands every pooled buffer back; call when the connection is torn down or upgraded.
    pub fn release_buffers(&mut self, pool: &mut BufferPool) {
        self.release_lent(pool);
        match std::mem::take(&mut self.state) {
            State::Head(head) => pool.release(head),
            State::Body(pending) => {
                pool.release(pending.head);
                if let Some(body) = pending.body {
                    pool.release(body);
                }
            }
            state @ (State::BetweenRequests | State::Upgraded | State::Failed) => {
                self.state = state;
            }
        }
    }

    /// Whether the reader holds any pooled buffer (for leak checks).
    pub fn holds_buffers(&self) -> bool {
        self.lent_head.is_some()
            || self.lent_body.is_some()
            || matches!(self.state, State::Head(_) | State::Body(_))
    }

    fn release_lent(&mut self, pool: &mut BufferPool) {
        for buffer in [self.lent_head.take(), self.lent_body.take()]
            .into_iter()
            .flatten()
        {
            pool.release(buffer);
        }
    }
}

/// Where a completed event's head and body lie; turned into an [`HttpEvent`] once the loop that
/// found it has ended, so that the borrow checker sees one borrow of the reader.
#[derive(Clone, Copy, Debug)]
enum Ready {
    /// Head and body both in the read: no copy.
    InInput {
        layout: HeadLayout,
        head_start: usize,
        body_start: usize,
        body_end: usize,
    },
    /// Head and body in the lent buffers.
    Lent { layout: HeadLayout },
    /// The pending body's head asks for a 100 Continue.
    Continue { layout: HeadLayout },
    Upgrade {
        layout: HeadLayout,
        /// `Some(start)` in the read, `None` in the lent head buffer.
        head_start: Option<usize>,
        rest_start: usize,
    },
}

enum Step {
    NeedMore,
    Continue,
    Ready(Ready),
}

/// The events of one read, yielded one at a time (a lending iterator: each event borrows the
/// reader until the next call).
pub struct RequestEvents<'r> {
    reader: &'r mut RequestReader,
    pool: &'r mut BufferPool,
    limits: &'r RequestLimits,
    input: &'r [u8],
    position: usize,
}

impl RequestEvents<'_> {
    /// The next event, `None` once the read is used up, or the error that ended the request
    /// stream (reported once; the connection should be answered and closed).
    pub fn next_event(&mut self) -> Option<Result<HttpEvent<'_>, HandshakeError>> {
        self.reader.release_lent(self.pool);
        let ready = loop {
            match self.step() {
                Ok(Step::NeedMore) => return None,
                Ok(Step::Continue) => continue,
                Ok(Step::Ready(ready)) => break ready,
                Err(error) => {
                    self.reader.release_buffers(self.pool);
                    self.reader.state = State::Failed;
                    self.position = self.input.len();
                    return Some(Err(error));
                }
            }
        };
        Some(Ok(self.event(ready)))
    }

    /// How far into the read the events so far reach.
    pub fn position(&self) -> usize {
        self.position
    }

    fn step(&mut self) -> Result<Step, HandshakeError> {
        match self.reader.state {
            State::BetweenRequests => self.start_request(),
            State::Head(_) => self.continue_head(),
            State::Body(_) => self.continue_body(),
            State::Upgraded => Ok(Step::NeedMore),
            State::Failed => {
                self.position = self.input.len();
                Ok(Step::NeedMore)
            }
        }
    }

    /// Parses a head at the current position of the read: lends the request when it is whole
    /// here, else stores what there is.
    fn start_request(&mut self) -> Result<Step, HandshakeError> {
        let input = self.input;
        let remaining = &input[self.position..];
        if remaining.is_empty() {
            return Ok(Step::NeedMore);
        }
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let parsed =
            head::parse_request_head(remaining, &mut headers, self.limits.header_bytes_max)?;
        let Some(request) = parsed else {
            let mut head = self.acquire(remaining.len())?;
            head.extend_from_slice(remaining);
            self.reader.state = State::Head(head);
            self.position = input.len();
            return Ok(Step::NeedMore);
        };
        let layout = HeadLayout::new(remaining, &request, self.limits)?;
        let head_start = self.position;
        self.position += layout.head_bytes;
        if layout.websocket_upgrade {
            self.reader.state = State::Upgraded;
            return Ok(Step::Ready(Ready::Upgrade {
                layout,
                head_start: Some(head_start),
                rest_start: self.position,
            }));
        }
        let body_start = self.position;
        let body_bytes = match layout.framing {
            BodyFraming::None => Some(0),
            BodyFraming::Length(bytes) if bytes <= input.len() - body_start => Some(bytes),
            BodyFraming::Length(_) | BodyFraming::Chunked => None,
        };
        if let Some(body_bytes) = body_bytes {
            self.position += body_bytes;
            return Ok(Step::Ready(Ready::InInput {
                layout,
                head_start,
                body_start,
                body_end: self.position,
            }));
        }
        let mut head = self.acquire(layout.head_bytes)?;
        head.extend_from_slice(&input[head_start..body_start]);
        self.start_body(layout, head)?;
        Ok(Step::Continue)
    }

    /// Adds the read to a stored partial head, up to one byte past the limit (so the parser can
    /// say 431), and parses the whole again.
    fn continue_head(&mut self) -> Result<Step, HandshakeError> {
        let State::Head(head) = &mut self.reader.state else {
            unreachable!()
        };
        let remaining = &self.input[self.position..];
        if remaining.is_empty() {
            return Ok(Step::NeedMore);
        }
        let stored_bytes = head.len();
        let taken = remaining
            .len()
            .min(self.limits.header_bytes_max + 1 - stored_bytes);
        if !self.pool.grow_in_place(head, stored_bytes + taken) {
            return Err(HandshakeError::BufferPoolExhausted {
                bytes: stored_bytes + taken,
            });
        }
        head.extend_from_slice(&remaining[..taken]);
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let bytes = head.as_slice();
        let layout =
            match head::parse_request_head(bytes, &mut headers, self.limits.header_bytes_max)? {
                Some(request) => HeadLayout::new(bytes, &request, self.limits)?,
                None => {
                    self.position += taken;
                    return Ok(Step::NeedMore);
                }
            };
        // The head never ends in bytes stored before this read: they were parsed already.
        head.truncate(layout.head_bytes);
        self.position += layout.head_bytes - stored_bytes;
        let State::Head(head) = std::mem::take(&mut self.reader.state) else {
            unreachable!()
        };
        if layout.websocket_upgrade {
            self.reader.state = State::Upgraded;
            self.reader.lent_head = Some(head);
            return Ok(Step::Ready(Ready::Upgrade {
                layout,
                head_start: None,
                rest_start: self.position,
            }));
        }
        self.start_body(layout, head)?;
        Ok(Step::Continue)
    }

    /// Stores a complete head whose body is still to be read (possibly empty).
    fn start_body(&mut self, layout: HeadLayout, head: PooledBuffer) -> Result<(), HandshakeError> {
        let progress = match layout.framing {
            BodyFraming::None => BodyProgress::Length { remaining: 0 },
            BodyFraming::Length(bytes) => BodyProgress::Length { remaining: bytes },
            BodyFraming::Chunked => BodyProgress::Chunked(ChunkDecoder::new()),
        };
        self.reader.state = State::Body(PendingBody {
            layout,
            head,
            body: None,
            progress,
            continue_offered: false,
        });
        // Stored first, so that a failure here releases the head with the rest of the state.
        if let BodyFraming::Length(bytes @ 1..) = layout.framing {
            let State::Body(pending) = &mut self.reader.state else {
                unreachable!()
            };
            reserve(&mut pending.body, bytes, self.pool)?;
        }
        Ok(())
    }

    /// Adds the read to a stored body; lends the request once it is whole.
    fn continue_body(&mut self) -> Result<Step, HandshakeError> {
        let State::Body(pending) = &mut self.reader.state else {
            unreachable!()
        };
        let remaining = &self.input[self.position..];
        let consumed = match &mut pending.progress {
            BodyProgress::Length {
                remaining: body_remaining,
            } => {
                let taken = (*body_remaining).min(remaining.len());
                if let Some(body) = pending.body.as_mut() {
                    body.extend_from_slice(&remaining[..taken]);
                }
                *body_remaining -= taken;
                taken
            }
            BodyProgress::Chunked(decoder) => {
                decoder.decode(remaining, &mut pending.body, self.pool, self.limits)?
            }
        };
        self.position += consumed;
        if !pending.is_complete() {
            assert_eq!(
                self.position,
                self.input.len(),
                "an incomplete body takes it all"
            );
            if pending.layout.expects_continue && !pending.continue_offered {
                pending.continue_offered = true;
                return Ok(Step::Ready(Ready::Continue {
                    layout: pending.layout,
                }));
            }
            return Ok(Step::NeedMore);
        }
        let State::Body(pending) = std::mem::take(&mut self.reader.state) else {
            unreachable!()
        };
        self.reader.lent_head = Some(pending.head);
        self.reader.lent_body = pending.body;
        Ok(Step::Ready(Ready::Lent {
            layout: pending.layout,
        }))
    }

    fn acquire(&mut self, bytes: usize) -> Result<PooledBuffer, HandshakeError> {
        self.pool
            .acquire(bytes)
            .ok_or(HandshakeError::BufferPoolExhausted { bytes })
    }

    fn event(&self, ready: Ready) -> HttpEvent<'_> {
        let lent_head = || {
            self.reader
                .lent_head
                .as_ref()
                .expect("lent with the event")
                .as_slice()
        };
        match ready {
            Ready::InInput {
                layout,
                head_start,
                body_start,
                body_end,
            } => HttpEvent::Request(Request {
                head: RequestHead {
                    bytes: &self.input[head_start..body_start],
                    layout,
                },
                body: &self.input[body_start..body_end],
            }),
            Ready::Lent { layout } => HttpEvent::Request(Request {
                head: RequestHead {
                    bytes: lent_head(),
                    layout,
                },
                body: self
                    .reader
                    .lent_body
                    .as_ref()
                    .map_or(&[][..], PooledBuffer::as_slice),
            }),
            Ready::Continue { layout } => {
                let State::Body(pending) = &self.reader.state else {
                    unreachable!()
                };
                HttpEvent::ContinueExpected(RequestHead {
                    bytes: pending.head.as_slice(),
                    layout,
                })
            }
            Ready::Upgrade {
                layout,
                head_start,
                rest_start,
            } => {
                let bytes = match head_start {
                    Some(start) => &self.input[start..start + layout.head_bytes],
                    None => lent_head(),
                };
                HttpEvent::Upgrade {
                    head: RequestHead { bytes, layout },
                    rest_start,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::pool::PoolLimits;

    const LIMITS: RequestLimits = RequestLimits {
        header_bytes_max: 8 * 1024,
        body_bytes_max: 1024 * 1024,
    };

    /// An event copied out of the reader, to compare runs fed with different splits.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Seen {
        Request {
            method: String,
            path: String,
            body: Vec<u8>,
            keep_alive: bool,
        },
        Continue {
            path: String,
        },
        /// The upgrade's path and every byte after its head, from all reads.
        Upgrade {
            path: String,
            rest: Vec<u8>,
        },
        Error(HandshakeError),
    }

    fn pool() -> BufferPool {
        BufferPool::new(&PoolLimits::default())
    }

    fn buffers_in_use(pool: &BufferPool) -> usize {
        pool.statistics().map(|class| class.buffers_in_use).sum()
    }

    fn buffers_created(pool: &BufferPool) -> usize {
        pool.statistics().map(|class| class.buffers_created).sum()
    }

    /// Feeds `reads` in order, checking that each read is consumed whole, and copies out what
    /// the reader saw.
    fn run(
        reader: &mut RequestReader,
        pool: &mut BufferPool,
        limits: &RequestLimits,
        reads: &[&[u8]],
    ) -> Vec<Seen> {
        let mut seen = Vec::new();
        for (read_index, input) in reads.iter().enumerate() {
            if let Some(Seen::Upgrade { rest, .. }) = seen.last_mut() {
                rest.extend_from_slice(input);
                continue;
            }
            let mut events = reader.handle_read(input, pool, limits);
            let mut upgraded = false;
            while let Some(event) = events.next_event() {
                seen.push(match event {
                    Ok(HttpEvent::Request(request)) => Seen::Request {
                        method: request.head.method().to_owned(),
                        path: request.head.path().to_owned(),
                        body: request.body.to_vec(),
                        keep_alive: request.head.keep_alive(),
                    },
                    Ok(HttpEvent::ContinueExpected(head)) => Seen::Continue {
                        path: head.path().to_owned(),
                    },
                    Ok(HttpEvent::Upgrade { head, rest_start }) => {
                        upgraded = true;
                        Seen::Upgrade {
                            path: head.path().to_owned(),
                            rest: input[rest_start..].to_vec(),
                        }
                    }
                    Err(error) => Seen::Error(error),
                });
                if upgraded {
                    break;
                }
            }
            if !upgraded {
                assert_eq!(
                    events.position(),
                    input.len(),
                    "read {read_index} not consumed"
                );
            }
        }
        seen
    }

    fn run_whole(reads: &[&[u8]]) -> Vec<Seen> {
        let mut pool = pool();
        let mut reader = RequestReader::new();
        let seen = run(&mut reader, &mut pool, &LIMITS, reads);
        reader.release_buffers(&mut pool);
        assert_eq!(buffers_in_use(&pool), 0);
        seen
    }

    fn request(method: &str, path: &str, body: &[u8]) -> Seen {
        Seen::Request {
            method: method.into(),
            path: path.into(),
            body: body.to_vec(),
            keep_alive: true,
        }
    }

    /// A stream with one request of every framing, an extension, a trailer and a query.
    const STREAM: &[u8] = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n\
        POST /publish/AAPL HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
        Content-Length: 12\r\n\r\n{\"px\":101.5}\
        POST /publish?x=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
        4;name=value\r\n[1,2\r\nA\r\n,3,4,5,6,7\r\n1\r\n]\r\n0\r\nChecksum: none\r\n\r\n\
        POST /publish/MSFT HTTP/1.1\r\nContent-Length: 0\r\n\r\n\
        GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n";

    fn stream_requests() -> Vec<Seen> {
        let mut last = request("GET", "/metrics", b"");
        if let Seen::Request { keep_alive, .. } = &mut last {
            *keep_alive = false;
        }
        vec![
            request("GET", "/health", b""),
            request("POST", "/publish/AAPL", b"{\"px\":101.5}"),
            request("POST", "/publish", b"[1,2,3,4,5,6,7]"),
            request("POST", "/publish/MSFT", b""),
            last,
        ]
    }

    /// Proves pipelined requests of every framing in one read come out in order.
    #[test]
    fn pipelined_requests_in_one_read() {
        assert_eq!(run_whole(&[STREAM]), stream_requests());
    }

    /// Proves a stream cut at every byte, or at every pair of bytes, reads the same, and that
    /// no buffer is left on loan between requests.
    #[test]
    fn every_split_point_reads_the_same() {
        let expected = stream_requests();
        for split in 0..=STREAM.len() {
            let (first, second) = STREAM.split_at(split);
            assert_eq!(run_whole(&[first, second]), expected, "split at {split}");
        }
        for first_split in (0..=STREAM.len()).step_by(3) {
            for second_split in first_split..=STREAM.len() {
                let reads = [
                    &STREAM[..first_split],
                    &STREAM[first_split..second_split],
                    &STREAM[second_split..],
                ];
                assert_eq!(run_whole(&reads), expected, "{first_split}, {second_split}");
            }
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(run_whole(&bytes), expected, "byte by byte");
    }

    /// Proves a request whole in one read is lent from the read itself: no buffer is created
    /// and the body points into the input.
    #[test]
    fn whole_request_is_lent_without_copy() {
        let input = b"POST /publish/AAPL HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        let mut pool = pool();
        let mut reader = RequestReader::new();
        let mut events = reader.handle_read(input, &mut pool, &LIMITS);
        let Some(Ok(HttpEvent::Request(request))) = events.next_event() else {
            panic!("expected a request");
        };
        assert_eq!(request.body, b"{}");
        assert!(input.as_ptr_range().contains(&request.body.as_ptr()));
        assert!(
            input
                .as_ptr_range()
                .contains(&request.head.bytes().as_ptr())
        );
        assert!(events.next_event().is_none());
        assert_eq!(buffers_created(&pool), 0);
    }

    /// Proves the buffers of a request cut across reads are on loan while it is pending and
    /// while its event is out, and back in the pool after the next call.
    #[test]
    fn pooled_buffers_are_returned() {
        let input = b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let mut pool = pool();
        let mut reader = RequestReader::new();
        assert_eq!(run(&mut reader, &mut pool, &LIMITS, &[&input[..41]]), []);
        assert_eq!(buffers_in_use(&pool), 2, "head and body");
        assert!(reader.is_mid_request() && reader.holds_buffers());
        let mut events = reader.handle_read(&input[41..], &mut pool, &LIMITS);
        assert!(matches!(
            events.next_event(),
            Some(Ok(HttpEvent::Request(_)))
        ));
        assert!(events.next_event().is_none());
        assert_eq!(buffers_in_use(&pool), 0);
        assert!(!reader.holds_buffers());

        // A head cut across reads, then torn down mid-body.
        run(
            &mut reader,
            &mut pool,
            &LIMITS,
            &[b"POST /p HT", b"TP/1.1\r\n"],
        );
        assert_eq!(buffers_in_use(&pool), 1);
        run(
            &mut reader,
            &mut pool,
            &LIMITS,
            &[b"Transfer-Encoding: chunked\r\n\r\n3\r\nab"],
        );
        assert_eq!(buffers_in_use(&pool), 2);
        reader.release_buffers(&mut pool);
        assert_eq!(buffers_in_use(&pool), 0);

        // An error mid-body hands everything back at once.
        let seen = run(
            &mut reader,
            &mut pool,
            &LIMITS,
            &[
                b"POST /p HTTP/1.1\r\n",
                b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcd",
            ],
        );
        assert!(matches!(
            seen.as_slice(),
            [Seen::Error(HandshakeError::MalformedChunk(_))]
        ));
        assert_eq!(buffers_in_use(&pool), 0);
    }

    /// Proves a client that expects 100-continue is offered it once, only when its body is
    /// not already here, and never over HTTP/1.0.
    #[test]
    fn expect_continue_is_offered_before_the_body() {
        let head = b"POST /publish/A HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
        let continued = Seen::Continue {
            path: "/publish/A".into(),
        };
        let published = request("POST", "/publish/A", b"null");
        assert_eq!(
            run_whole(&[head, b"nu", b"ll"]),
            [continued.clone(), published.clone()]
        );
        let whole = [&head[..], b"null"].concat();
        assert_eq!(run_whole(&[&whole]), std::slice::from_ref(&published));
        let chunked = b"POST /publish/A HTTP/1.1\r\nExpect: 100-Continue\r\n\
            Transfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            run_whole(&[chunked, b"4\r\nnull\r\n0\r\n\r\n"]),
            [continued, published]
        );
        let old = b"POST /publish/A HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
        assert!(matches!(
            run_whole(&[old, b"null"]).as_slice(),
            [Seen::Request { .. }]
        ));
    }

    /// Proves an upgrade request is recognised whole or cut, and that the bytes after its head
    /// (early frames) are left for the WebSocket.
    #[test]
    fn upgrade_hands_over_the_rest() {
        let input = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\n\r\n\x81\x80";
        let expected = [Seen::Upgrade {
            path: "/ws".into(),
            rest: b"\x81\x80".to_vec(),
        }];
        for split in 0..=input.len() {
            let (first, second) = input.split_at(split);
            assert_eq!(run_whole(&[first, second]), expected, "split at {split}");
        }
        let with_body = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(
            run_whole(&[with_body]),
            [Seen::Error(HandshakeError::UpgradeWithBody)]
        );
    }

    /// Proves keep-alive follows the version and the Connection header.
    #[test]
    fn keep_alive_follows_version_and_connection() {
        let cases: [(&[u8], bool); 5] = [
            (b"GET / HTTP/1.1\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            (b"GET / HTTP/1.0\r\nConnection: close\r\n\r\n", false),
        ];
        for (input, keep_alive) in cases {
            let seen = run_whole(&[input]);
            let [
                Seen::Request {
                    keep_alive: seen, ..
                },
            ] = seen.as_slice()
            else {
                panic!("{seen:?}");
            };
            assert_eq!(*seen, keep_alive, "{}", String::from_utf8_lossy(input));
        }
    }

    /// Proves chunked bodies decode with upper-case hex, leading zeros, extensions, several
    /// trailers and an empty body.
    #[test]
    fn chunked_bodies_decode() {
        let cases: [(&[u8], &[u8]); 5] = [
            (b"0\r\n\r\n", b""),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"0003 ; a=b;c\r\nabc\r\n000\r\n\r\n", b"abc"),
            (b"1\r\nx\r\n0\r\nA: 1\r\nB: 2\r\n\r\n", b"x"),
            (b"1\t;x\r\ny\r\n0;end\r\n\r\n", b"y"),
        ];
        for (chunks, body) in cases {
            let input = [
                b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                chunks,
            ]
            .concat();
            for split in 0..=input.len() {
                let (first, second) = input.split_at(split);
                assert_eq!(
                    run_whole(&[first, second]),
                    [request("POST", "/p", body)],
                    "split at {split}"
                );
            }
        }
    }

    /// Proves every malformed chunked body is refused with 400 (413 or 431 for the limits),
    /// whatever the split.
    #[test]
    fn malformed_chunked_bodies_are_refused() {
        let long_extension = [
            &b"1;"[..],
            &[b'x'; CHUNK_EXTENSION_BYTES_MAX],
            b"\r\na\r\n0\r\n\r\n",
        ]
        .concat();
        let long_trailer = [&b"0\r\nA: "[..], &[b'x'; 80], b"\r\n\r\n"].concat();
        let cases: [(&[u8], u16); 11] = [
            (b"x\r\n", 400),
            (b";a\r\n", 400),
            (b"1x\r\n", 400),
            (b"1\na\r\n", 400),
            (b"1\rxa", 400),
            (b"1\r\nab\r\n", 400),
            (b"1\r\na\n0\r\n\r\n", 400),
            (b"00000000000000001\r\n", 400),
            (b"100001\r\n", 413),
            (&long_extension, 400),
            (&long_trailer, 431),
        ];
        let limits = RequestLimits {
            header_bytes_max: 64,
            body_bytes_max: 0x10_0000,
        };
        for (chunks, status) in cases {
            let input = [
                b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                chunks,
            ]
            .concat();
            for split in 0..=input.len() {
                let mut pool = pool();
                let mut reader = RequestReader::new();
                let (first, second) = input.split_at(split);
                let seen = run(&mut reader, &mut pool, &limits, &[first, second]);
                let [Seen::Error(error)] = seen.as_slice() else {
                    panic!("{}: {seen:?}", String::from_utf8_lossy(chunks));
                };
                assert_eq!(error.status(), status, "{error}");
                assert_eq!(buffers_in_use(&pool), 0);
            }
        }
    }

    /// Proves trailer lines must be field lines, as in a head, whatever the split, and that
    /// valid trailers still pass. Found by the `http1_request` fuzz target: every byte but CR
    /// and LF used to be skipped, so `0\r\n\0\0\r\n\r\n` ended a body that httparse refuses.
    #[test]
    fn trailer_lines_must_be_field_lines() {
        let refused: [&[u8]; 6] = [
            b"0\r\n\0\0\r\n\r\n",
            b"0\r\nno colon\r\n\r\n",
            b"0\r\n: empty name\r\n\r\n",
            b"0\r\n folded: x\r\n\r\n",
            b"0\r\nName : x\r\n\r\n",
            b"0\r\nA: \x7f\r\n\r\n",
        ];
        let accepted: [&[u8]; 3] = [
            b"0\r\nA:\r\n\r\n",
            b"0\r\nX-Sum: a\tb c\xff:\r\n\r\n",
            b"0\r\n!#$%&'*+-.^_`|~09az: v\r\nB: 2\r\n\r\n",
        ];
        let head = b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (trailer, valid) in refused
            .iter()
            .map(|trailer| (trailer, false))
            .chain(accepted.iter().map(|trailer| (trailer, true)))
        {
            let input = [&head[..], trailer].concat();
            for split in 0..=input.len() {
                let (first, second) = input.split_at(split);
                let seen = run_whole(&[first, second]);
                match seen.as_slice() {
                    [Seen::Request { body, .. }] if valid => assert!(body.is_empty()),
                    [Seen::Error(error)] if !valid => assert_eq!(error.status(), 400, "{error}"),
                    _ => panic!("{}: {seen:?}", String::from_utf8_lossy(trailer)),
                }
            }
        }
    }

    /// Proves each framing or head error gets its status, and that nothing is read after it.
    #[test]
    fn request_errors_map_to_statuses() {
        let too_long_head = [&b"GET /"[..], &[b'a'; 9000], b" HTTP/1.1\r\n\r\n"].concat();
        let cases: [(&[u8], HandshakeError); 11] = [
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                HandshakeError::ContentLengthWithTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                HandshakeError::ConflictingContentLengths,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n",
                HandshakeError::ConflictingContentLengths,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                HandshakeError::InvalidContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
                HandshakeError::InvalidContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n",
                HandshakeError::BodyTooLarge {
                    body_bytes: 1_048_577,
                    body_bytes_max: 1_048_576,
                },
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                HandshakeError::UnsupportedTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
                HandshakeError::MalformedRequest("chunked must be the last transfer coding, once"),
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                HandshakeError::TransferEncodingInHttp10,
            ),
            (
                b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
                HandshakeError::MalformedRequest("invalid header name"),
            ),
            (
                &too_long_head,
                HandshakeError::HeaderBlockTooLarge {
                    header_bytes_max: 8192,
                },
            ),
        ];
        let statuses = [400, 400, 400, 400, 400, 413, 501, 400, 400, 400, 431];
        for ((input, error), status) in cases.into_iter().zip(statuses) {
            assert_eq!(error.status(), status, "{error}");
            let trailing = [input, b"GET / HTTP/1.1\r\n\r\n"].concat();
            let expected = [Seen::Error(error)];
            assert_eq!(run_whole(&[&trailing]), expected);
            let pieces: Vec<&[u8]> = trailing.chunks(7).collect();
            assert_eq!(run_whole(&pieces), expected, "in pieces");
        }
        let agreeing = b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\nabcde";
        assert_eq!(run_whole(&[agreeing]), [request("POST", "/", b"abcde")]);
    }

    /// Proves an exhausted pool refuses a request cut across reads with 503, and one whole in
    /// a read is still served.
    #[test]
    fn exhausted_pool_answers_503() {
        let mut pool = BufferPool::new(&PoolLimits {
            classes: vec![crate::protocol::pool::BufferClass {
                buffer_bytes: 128,
                buffers_max: 1,
            }],
        });
        let mut reader = RequestReader::new();
        let whole = b"POST /p HTTP/1.1\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(
            run(&mut reader, &mut pool, &LIMITS, &[whole]),
            [request("POST", "/p", b"x")]
        );
        let seen = run(
            &mut reader,
            &mut pool,
            &LIMITS,
            &[&whole[..20], &whole[20..]],
        );
        let [Seen::Error(error)] = seen.as_slice() else {
            panic!("{seen:?}");
        };
        assert_eq!(error.status(), 503);
        assert_eq!(buffers_in_use(&pool), 0);
    }

    /// Proves a thousand pipelined publishes in one read are read without a single pooled
    /// buffer (a sanity check of the no-copy path, not a timing).
    #[test]
    fn pipelined_publishes_need_no_buffer() {
        let one = b"POST /publish/AAPL HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
            Content-Length: 12\r\n\r\n{\"px\":101.5}";
        let input = one.repeat(1000);
        let mut pool = pool();
        let mut reader = RequestReader::new();
        let mut events = reader.handle_read(&input, &mut pool, &LIMITS);
        let mut count = 0;
        while let Some(event) = events.next_event() {
            assert!(matches!(event, Ok(HttpEvent::Request(request)) if request.body.len() == 12));
            count += 1;
        }
        assert_eq!(count, 1000);
        assert_eq!(buffers_created(&pool), 0);
    }
}
