//! Errors of an HTTP/1.1 request or a WebSocket upgrade, each mapped to an HTTP status.

/// An HTTP request or WebSocket upgrade error. Each variant maps to an HTTP status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The request head grew past `header_bytes_max` before it was complete.
    HeaderBlockTooLarge { header_bytes_max: usize },
    /// More header fields than the parser has room for.
    TooManyHeaders { headers_count_max: usize },
    /// The bytes are not an HTTP/1.x request.
    MalformedRequest(&'static str),
    /// An upgrade request whose method is not GET.
    MethodNotGet,
    /// An upgrade request older than HTTP/1.1.
    HttpVersionTooOld,
    /// An HTTP/1.1 request without a `Host` header (RFC 9112 §3.2).
    MissingHost,
    /// A request with more than one `Host` header (RFC 9112 §3.2).
    DuplicateHost,
    /// An `Expect` header asking for something other than `100-continue` (RFC 9110 §10.1.1).
    ExpectationFailed,
    /// No `Upgrade` header with the token `websocket`: a plain request sent to the WebSocket
    /// endpoint, answered with 426 and the protocol it needs.
    MissingUpgradeWebSocket,
    /// No `Connection` header with the token `upgrade`.
    MissingConnectionUpgrade,
    /// No `Sec-WebSocket-Key`, or more than one.
    MissingKey,
    /// A `Sec-WebSocket-Key` that does not decode to 16 bytes.
    InvalidKey,
    /// `Sec-WebSocket-Version` missing or not 13.
    UnsupportedVersion,
    /// An Origin not in the configured allow-list.
    OriginNotAllowed,
    /// Subprotocols are required and none offered matched.
    NoAcceptableSubprotocol,
    /// No WebSocket endpoint at the requested path.
    NotFound,
    /// A plain request (no upgrade) to the WebSocket endpoint, as a browser's address bar
    /// sends: answered 426 with a hint of where to look instead.
    PlainRequestToWebSocket,
    /// WebSocket is turned off by the server's configuration: clients read the other ways.
    WebSocketDisabled,
    /// A `Content-Length` that is not a plain decimal number (RFC 9110 §8.6).
    InvalidContentLength,
    /// Several `Content-Length` values that differ: the body's end would be ambiguous.
    ConflictingContentLengths,
    /// Both `Content-Length` and `Transfer-Encoding`. RFC 9112 §6.1 lets a server drop the
    /// length, but a front proxy may have read it the other way: refusing closes the door on
    /// request smuggling.
    ContentLengthWithTransferEncoding,
    /// `Transfer-Encoding` on an HTTP/1.0 request, which cannot carry it (RFC 9112 §6.1).
    TransferEncodingInHttp10,
    /// A transfer coding other than a single `chunked` (we decode no compression).
    UnsupportedTransferEncoding,
    /// A body over `body_bytes_max`, known from `Content-Length` or from the chunks so far.
    BodyTooLarge {
        body_bytes: u64,
        body_bytes_max: usize,
    },
    /// A chunked body that breaks RFC 9112 §7.1; the text says where.
    MalformedChunk(&'static str),
    /// A chunked body's trailer section over `trailer_bytes_max`.
    TrailerTooLarge { trailer_bytes_max: usize },
    /// A WebSocket upgrade request with a body: the bytes after its head must be frames.
    UpgradeWithBody,
    /// Our buffer pool had no buffer for a request cut across reads: not the client's fault,
    /// it should retry later.
    BufferPoolExhausted { bytes: usize },
}

impl HandshakeError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Self::HeaderBlockTooLarge { .. } | Self::TooManyHeaders { .. } => 431,
            Self::MethodNotGet => 405,
            Self::UnsupportedVersion
            | Self::MissingUpgradeWebSocket
            | Self::PlainRequestToWebSocket => 426,
            Self::OriginNotAllowed | Self::WebSocketDisabled => 403,
            Self::NotFound => 404,
            Self::BodyTooLarge { .. } => 413,
            Self::TrailerTooLarge { .. } => 431,
            Self::UnsupportedTransferEncoding => 501,
            Self::BufferPoolExhausted { .. } => 503,
            Self::ExpectationFailed => 417,
            Self::InvalidContentLength
            | Self::ConflictingContentLengths
            | Self::ContentLengthWithTransferEncoding
            | Self::TransferEncodingInHttp10
            | Self::MalformedChunk(_)
            | Self::UpgradeWithBody
            | Self::MalformedRequest(_)
            | Self::HttpVersionTooOld
            | Self::MissingHost
            | Self::DuplicateHost
            | Self::MissingConnectionUpgrade
            | Self::MissingKey
            | Self::InvalidKey
            | Self::NoAcceptableSubprotocol => 400,
        }
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::HeaderBlockTooLarge { header_bytes_max } => {
                write!(
                    formatter,
                    "request header block over {header_bytes_max} bytes"
                )
            }
            Self::TooManyHeaders { headers_count_max } => {
                write!(
                    formatter,
                    "request has more than {headers_count_max} header fields"
                )
            }
            Self::MalformedRequest(what) => write!(formatter, "malformed http request: {what}"),
            Self::MethodNotGet => write!(formatter, "websocket upgrade must use GET"),
            Self::HttpVersionTooOld => write!(formatter, "websocket upgrade needs HTTP/1.1"),
            Self::MissingHost => write!(formatter, "request has no Host header"),
            Self::DuplicateHost => write!(formatter, "request has more than one Host header"),
            Self::ExpectationFailed => {
                write!(formatter, "Expect supports only 100-continue")
            }
            Self::MissingUpgradeWebSocket => {
                write!(formatter, "Upgrade header lacks the websocket token")
            }
            Self::MissingConnectionUpgrade => {
                write!(formatter, "Connection header lacks the upgrade token")
            }
            Self::MissingKey => write!(formatter, "need exactly one Sec-WebSocket-Key header"),
            Self::InvalidKey => write!(formatter, "Sec-WebSocket-Key is not 16 bytes of base64"),
            Self::UnsupportedVersion => write!(formatter, "Sec-WebSocket-Version must be 13"),
            Self::OriginNotAllowed => write!(formatter, "Origin is not allowed"),
            Self::NoAcceptableSubprotocol => {
                write!(formatter, "no offered Sec-WebSocket-Protocol is supported")
            }
            Self::NotFound => write!(formatter, "no websocket endpoint at this path"),
            Self::PlainRequestToWebSocket => write!(
                formatter,
                "/ws needs a WebSocket client; in a browser open / for the board, or /sse?topics=AAPL"
            ),
            Self::WebSocketDisabled => {
                write!(
                    formatter,
                    "WebSocket is turned off here; read /sse, /stream or /poll"
                )
            }
            Self::InvalidContentLength => {
                write!(formatter, "Content-Length is not a decimal number")
            }
            Self::ConflictingContentLengths => {
                write!(formatter, "request has differing Content-Length values")
            }
            Self::ContentLengthWithTransferEncoding => write!(
                formatter,
                "request has both Content-Length and Transfer-Encoding"
            ),
            Self::TransferEncodingInHttp10 => {
                write!(formatter, "Transfer-Encoding needs HTTP/1.1")
            }
            Self::UnsupportedTransferEncoding => {
                write!(formatter, "only the chunked transfer coding is supported")
            }
            Self::BodyTooLarge {
                body_bytes,
                body_bytes_max,
            } => write!(
                formatter,
                "request body of at least {body_bytes} bytes is over {body_bytes_max} bytes"
            ),
            Self::MalformedChunk(what) => write!(formatter, "malformed chunked body: {what}"),
            Self::TrailerTooLarge { trailer_bytes_max } => {
                write!(formatter, "chunked trailer over {trailer_bytes_max} bytes")
            }
            Self::UpgradeWithBody => write!(formatter, "websocket upgrade request has a body"),
            Self::BufferPoolExhausted { bytes } => write!(
                formatter,
                "server busy: no pooled buffer for {bytes} bytes of request, try again later"
            ),
        }
    }
}

impl std::error::Error for HandshakeError {}
