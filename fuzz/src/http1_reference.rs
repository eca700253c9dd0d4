//! A reference reader of pipelined HTTP/1.1 requests that the request reader target agrees with.
//!
//! It reads the whole stream at once, with nothing incremental about it: heads with
//! `httparse::Request`, chunk size lines with `httparse::parse_chunk_size` and trailer sections
//! with `httparse::parse_headers` (none of which our chunked decoder uses), and body framing
//! written here from RFC 9112 §6.3. Our reader's policy where RFC 9112 leaves a choice
//! (refusing `Transfer-Encoding` with `Content-Length`, in HTTP/1.0, or with codings other than
//! one `chunked`; refusing an upgrade with a body) is the same rule written again, so the two
//! must agree on every stream.
//!
//! Where our reader is deliberately stricter than httparse, the reference applies the stricter
//! rule on top of httparse's answer, and each such rule is listed here:
//!
//! 1. A chunk size has at least one hex digit (RFC 9112 §7.1: `chunk-size = 1*HEXDIG`);
//!    httparse reads a size line without digits as 0.
//! 2. A chunk size line carries at most [`CHUNK_EXTENSION_BYTES_MAX`] bytes after the digits.
//! 3. A line feed inside chunk extensions is refused; httparse skips any byte there.
//! 4. Trailer lines end in CRLF; httparse also takes a bare LF.
//! 5. Head lines end in CRLF (RFC 9112 §2.2); httparse also takes a bare LF.
//! 6. An HTTP/1.1 request has exactly one `Host`, an HTTP/1.0 one at most (RFC 9112 §3.2).
//! 7. `Expect` lists nothing but `100-continue` (RFC 9110 §10.1.1: 417 otherwise).
//!
//! Our reader also fails fast: it refuses a request as soon as the bytes present rule it out,
//! where the reference may still be waiting for the end of a line. The comparison allows that
//! difference only at the end of the stream (see [`compare`]).

use std::fmt;

/// How many header fields a request head may carry (`HEADERS_COUNT_MAX` of our head parser).
const HEADERS_COUNT_MAX: usize = 64;
/// Bytes of chunk extensions our reader skips on one size line (difference 2).
pub const CHUNK_EXTENSION_BYTES_MAX: usize = 1024;

/// The limits both readers run with.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_bytes_max: usize,
    pub body_bytes_max: usize,
}

/// One request as both readers can describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exchange {
    Request {
        method: String,
        path: String,
        query: Option<String>,
        version_minor: u8,
        keep_alive: bool,
        body: Vec<u8>,
    },
    /// A WebSocket upgrade; the stream from `rest_start` on belongs to the WebSocket.
    Upgrade { path: String, rest_start: usize },
}

/// How reading a stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The stream stopped between or inside requests.
    NeedMore,
    /// An upgrade took the rest of the stream.
    Upgraded,
    /// The stream cannot be read as requests from here on; the text says why.
    Refused(String),
}

/// The requests a stream holds and how reading it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub exchanges: Vec<Exchange>,
    pub end: End,
}

impl fmt::Display for Outcome {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for exchange in &self.exchanges {
            writeln!(formatter, "    {exchange:?}")?;
        }
        write!(formatter, "    then {:?}", self.end)
    }
}

/// Reads `stream` whole.
pub fn read(stream: &[u8], limits: Limits) -> Outcome {
    let mut exchanges = Vec::new();
    let mut position = 0;
    let end = loop {
        match read_one(stream, position, limits) {
            Ok(Step::Request { exchange, end }) => {
                exchanges.push(exchange);
                position = end;
            }
            Ok(Step::Upgrade(exchange)) => {
                exchanges.push(exchange);
                break End::Upgraded;
            }
            Ok(Step::NeedMore) => break End::NeedMore,
            Err(reason) => break End::Refused(reason),
        }
    };
    Outcome { exchanges, end }
}

enum Step {
    Request { exchange: Exchange, end: usize },
    Upgrade(Exchange),
    NeedMore,
}

/// How a head says its body is framed.
enum Framing {
    None,
    Length(usize),
    Chunked,
}

fn read_one(stream: &[u8], start: usize, limits: Limits) -> Result<Step, String> {
    let rest = &stream[start..];
    if rest.is_empty() {
        return Ok(Step::NeedMore);
    }
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let mut request = httparse::Request::new(&mut headers);
    let head_bytes = match request.parse(rest) {
        Ok(httparse::Status::Complete(bytes)) if bytes > limits.header_bytes_max => {
            return Err("head over header_bytes_max".into());
        }
        Ok(httparse::Status::Complete(bytes)) => bytes,
        Ok(httparse::Status::Partial) if rest.len() > limits.header_bytes_max => {
            return Err("incomplete head over header_bytes_max".into());
        }
        Ok(httparse::Status::Partial) => return Ok(Step::NeedMore),
        Err(error) => return Err(format!("httparse: {error}")),
    };
    let version_minor = request.version.expect("complete");
    let target = request.path.expect("complete");
    if rest[..head_bytes]
        .windows(2)
        .any(|pair| pair[1] == b'\n' && pair[0] != b'\r')
        || rest[0] == b'\n'
    {
        return Err("a head line ended by a bare LF (difference 5)".into());
    }
    let hosts = request
        .headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case("host"))
        .count();
    if hosts > 1 || (hosts == 0 && version_minor >= 1) {
        return Err("not exactly one Host (difference 6)".into());
    }
    let unmet_expectation = request
        .headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case("expect"))
        .flat_map(|header| header.value.split(|&byte| byte == b','))
        .map(trim_whitespace)
        .any(|element| !element.is_empty() && !element.eq_ignore_ascii_case(b"100-continue"));
    if unmet_expectation {
        return Err("an expectation other than 100-continue (difference 7)".into());
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target.to_owned(), None),
    };
    let values = |name: &str| -> Vec<&[u8]> {
        request
            .headers
            .iter()
            .filter(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| header.value)
            .collect()
    };
    let framing = framing(&values("content-length"), &values("transfer-encoding"))?;
    let framing = match framing {
        Framing::Chunked if version_minor == 0 => {
            return Err("Transfer-Encoding in HTTP/1.0".into());
        }
        Framing::Length(bytes) if bytes > limits.body_bytes_max => {
            return Err("Content-Length over body_bytes_max".into());
        }
        framing => framing,
    };
    let upgrade = values("upgrade")
        .iter()
        .any(|value| lists_token(value, b"websocket"));
    let body_start = start + head_bytes;
    if upgrade {
        return match framing {
            Framing::None | Framing::Length(0) => Ok(Step::Upgrade(Exchange::Upgrade {
                path,
                rest_start: body_start,
            })),
            _ => Err("upgrade with a body".into()),
        };
    }
    let connection = values("connection");
    let keep_alive = if version_minor >= 1 {
        !connection.iter().any(|value| lists_token(value, b"close"))
    } else {
        connection
            .iter()
            .any(|value| lists_token(value, b"keep-alive"))
    };
    let (body, end) = match framing {
        Framing::None => (Vec::new(), body_start),
        Framing::Length(bytes) if stream.len() - body_start < bytes => {
            return Ok(Step::NeedMore);
        }
        Framing::Length(bytes) => (
            stream[body_start..body_start + bytes].to_vec(),
            body_start + bytes,
        ),
        Framing::Chunked => match read_chunked(stream, body_start, limits)? {
            Some(body_and_end) => body_and_end,
            None => return Ok(Step::NeedMore),
        },
    };
    let exchange = Exchange::Request {
        method: request.method.expect("complete").to_owned(),
        path,
        query,
        version_minor,
        keep_alive,
        body,
    };
    Ok(Step::Request { exchange, end })
}

/// RFC 9112 §6.3: chunked wins only alone; Content-Length values must agree.
fn framing(lengths: &[&[u8]], codings: &[&[u8]]) -> Result<Framing, String> {
    let mut length: Option<u64> = None;
    for element in lengths
        .iter()
        .flat_map(|value| value.split(|&byte| byte == b','))
    {
        let element = trim_whitespace(element);
        if element.is_empty() || !element.iter().all(u8::is_ascii_digit) {
            return Err("Content-Length is not 1*DIGIT".into());
        }
        let value = element.iter().fold(0u64, |value, digit| {
            value
                .saturating_mul(10)
                .saturating_add(u64::from(digit - b'0'))
        });
        if length.is_some_and(|previous| previous != value) {
            return Err("Content-Length values differ".into());
        }
        length = Some(value);
    }
    if !codings.is_empty() {
        if length.is_some() {
            return Err("Content-Length with Transfer-Encoding".into());
        }
        let listed: Vec<&[u8]> = codings
            .iter()
            .flat_map(|value| value.split(|&byte| byte == b','))
            .map(trim_whitespace)
            .filter(|coding| !coding.is_empty())
            .collect();
        return match listed.as_slice() {
            [only] if only.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            _ => Err("transfer codings other than one chunked".into()),
        };
    }
    Ok(match length {
        None => Framing::None,
        Some(bytes) => Framing::Length(usize::try_from(bytes).unwrap_or(usize::MAX)),
    })
}

/// A chunked body from `start`: the decoded body and where it ends, or `None` when the stream
/// stops first.
fn read_chunked(
    stream: &[u8],
    start: usize,
    limits: Limits,
) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut position = start;
    loop {
        let (line_bytes, size) = match httparse::parse_chunk_size(&stream[position..]) {
            Ok(httparse::Status::Complete(parsed)) => parsed,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err("httparse: invalid chunk size line".into()),
        };
        check_size_line(&stream[position..position + line_bytes])?;
        position += line_bytes;
        let body_bytes = (body.len() as u64).saturating_add(size);
        if body_bytes > limits.body_bytes_max as u64 {
            return Err("chunked body over body_bytes_max".into());
        }
        if size == 0 {
            break;
        }
        let size = size as usize;
        let data_end = position + size;
        if stream.len() < data_end + 2 {
            return Ok(None);
        }
        if &stream[data_end..data_end + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        body.extend_from_slice(&stream[position..data_end]);
        position = data_end + 2;
    }
    match read_trailers(&stream[position..], limits)? {
        Some(trailer_bytes) => Ok(Some((body, position + trailer_bytes))),
        None => Ok(None),
    }
}

/// Differences 1 to 3, on a size line httparse accepted (`line` ends with its CRLF).
fn check_size_line(line: &[u8]) -> Result<(), String> {
    let digits = line
        .iter()
        .take_while(|byte| byte.is_ascii_hexdigit())
        .count();
    if digits == 0 {
        return Err("chunk size without digits (difference 1)".into());
    }
    let extension = &line[digits..line.len() - 2];
    if extension.len() > CHUNK_EXTENSION_BYTES_MAX {
        return Err("chunk extensions over the limit (difference 2)".into());
    }
    if extension.contains(&b'\n') {
        return Err("line feed in chunk extensions (difference 3)".into());
    }
    Ok(())
}

/// The trailer section (field lines and the blank line): its length, or `None` when the stream
/// stops first.
fn read_trailers(rest: &[u8], limits: Limits) -> Result<Option<usize>, String> {
    // A trailer line holds at least 2 bytes besides its line end ("a:"), and ours counts those
    // bytes against header_bytes_max, so this many fields always fit.
    let mut headers = vec![httparse::EMPTY_HEADER; limits.header_bytes_max / 2 + 1];
    let (section_bytes, fields) = match httparse::parse_headers(rest, &mut headers) {
        Ok(httparse::Status::Complete(parsed)) => parsed,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(format!("httparse: trailer: {error}")),
    };
    let section = &rest[..section_bytes];
    let line_ends = section.iter().filter(|&&byte| byte == b'\n').count();
    let carriage_returns = section.windows(2).filter(|pair| pair == b"\r\n").count();
    if carriage_returns != line_ends {
        return Err("trailer line ended by a bare LF (difference 4)".into());
    }
    debug_assert_eq!(line_ends, fields.len() + 1);
    if section_bytes - 2 * line_ends > limits.header_bytes_max {
        return Err("trailers over header_bytes_max".into());
    }
    Ok(Some(section_bytes))
}

/// Whether a comma-separated value lists `token`, ignoring case and whitespace around it.
fn lists_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&byte| byte == b',')
        .any(|element| trim_whitespace(element).eq_ignore_ascii_case(token))
}

/// Optional whitespace (RFC 9110 §5.6.3: spaces and tabs) trimmed from both ends.
fn trim_whitespace(bytes: &[u8]) -> &[u8] {
    let is_whitespace = |byte: &u8| *byte == b' ' || *byte == b'\t';
    let start = bytes.iter().position(|byte| !is_whitespace(byte));
    let end = bytes.iter().rposition(|byte| !is_whitespace(byte));
    match (start, end) {
        (Some(start), Some(end)) => &bytes[start..=end],
        _ => &[],
    }
}

/// Checks our outcome against the reference's on the same stream. They must hold the same
/// requests and end the same way, except that ours may refuse a stream the reference still
/// waits on (failing fast, at the end of the stream). `Err` says how they disagree.
pub fn compare(ours: &Outcome, reference: &Outcome) -> Result<(), String> {
    let agree = match (&ours.end, &reference.end) {
        (End::Refused(_), End::NeedMore) => ours.exchanges == reference.exchanges,
        (End::Refused(_), End::Refused(_)) | (End::NeedMore, End::NeedMore) => {
            ours.exchanges == reference.exchanges
        }
        (End::Upgraded, End::Upgraded) => ours.exchanges == reference.exchanges,
        _ => false,
    };
    if agree {
        Ok(())
    } else {
        Err(format!(
            "our reader and the reference disagree\n  ours:\n{ours}\n  reference:\n{reference}"
        ))
    }
}
