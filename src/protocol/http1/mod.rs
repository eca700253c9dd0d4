//! HTTP/1.1 (RFC 9112) as the server needs it: request heads parsed without copying, bodies
//! framed by Content-Length or chunked coding, pipelined requests read in order, and responses.

mod chunked;
pub mod error;
pub mod head;
pub mod query;
pub mod request;
pub mod response;

pub use error::HandshakeError;
pub use head::{HEADERS_COUNT_MAX, Request as RequestHeadFields, parse_request_head};
pub use request::{
    BodyFraming, CONTINUE_RESPONSE, HttpEvent, Request, RequestEvents, RequestHead, RequestLimits,
    RequestReader,
};
