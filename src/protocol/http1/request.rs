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

#[cfg(test)]
use super::chunked::CHUNK_EXTENSION_BYTES_MAX;
use super::chunked::{ChunkDecoder, reserve};
use super::error::HandshakeError;
use super::head::{self, HEADERS_COUNT_MAX};
use crate::protocol::pool::{BufferPool, PooledBuffer};

/// The interim response a client that sent `Expect: 100-continue` waits for before its body.
pub const CONTINUE_RESPONSE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

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
        // The parser refused every other expectation, so any `100-continue` element is one.
        let expects_continue = version_minor >= 1 && request.has_token("expect", "100-continue");
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

    /// The value of the first header field called `name` (compared ignoring case), trimmed. A
    /// scan of the head's lines, for the fields read once per request (an idempotency key, a
    /// token): the head was checked when it was parsed, so every line is a `name: value` pair.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.header_values(name).next()
    }

    /// The values of every header field called `name` (compared ignoring case), trimmed, in
    /// the order they were sent (several `Cookie` fields, say).
    pub fn header_values<'name>(
        &self,
        name: &'name str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'name> {
        let lines = self.bytes.split(|&byte| byte == b'\n').skip(1);
        lines.filter_map(move |line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&byte| byte == b':')?;
            line[..colon]
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| line[colon + 1..].trim_ascii())
        })
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
            BodyProgress::Chunked(decoder) => decoder.is_done(),
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
    /// Boxed: only a request whose body is cut across reads is here, and inline its head's
    /// layout and the body's progress would make every connection slot 200 bytes larger (a
    /// request whose body arrives in the read that finishes its head never comes here).
    Body(Box<PendingBody>),
    /// The connection speaks WebSocket now; nothing more is read here.
    Upgraded,
    /// An error ended the request stream; everything after it is discarded.
    Failed,
}

/// The request-reading state of one connection: 64 bytes, plus pooled buffers only
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
        self.reader.state = State::Body(Box::new(PendingBody {
            layout,
            head,
            body: None,
            progress,
            continue_offered: false,
        }));
        // The body's buffer is taken as its bytes arrive, not for the length announced: a
        // client announcing a large body and sending it a byte at a time holds a small buffer.
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
                if taken > 0 {
                    let held = pending.body.as_ref().map_or(0, PooledBuffer::len);
                    reserve(&mut pending.body, held + taken, self.pool)?;
                    let body = pending.body.as_mut().expect("reserved above");
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
#[path = "request_tests.rs"]
mod tests;
