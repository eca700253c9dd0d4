//! tungstenite as the independent WebSocket implementation the session target agrees with.
//!
//! This is the comparison of the workspace's `tests/differential.rs` (proptest-generated
//! streams) applied to the fuzzer's arbitrary streams; the differences between the two parsers
//! are the ones listed and explained at the top of that file, and are normalised here only:
//!
//! 1. We fail fast (a frame head's rule breaks on its first bytes, invalid UTF-8 piece by
//!    piece); tungstenite waits for the whole frame. When the input stops inside the frame we
//!    failed in, tungstenite is handed that frame completed as benignly as RFC 6455 allows and
//!    must then fail in it too.
//! 2. A disallowed close code: we fail with 1002; tungstenite delivers a close it reports as
//!    1002 "Protocol violation".
//! 3. Close code 1014: we accept it, tungstenite reports it as in (2).
//! 4. A control frame whose length uses the 16- or 64-bit encoding: we refuse it on its second
//!    byte; tungstenite decodes the extended length and reads on.

use std::io::{self, Read, Write};

use ringcast::protocol::ProtocolError;
use tungstenite::protocol::{Message, Role, WebSocket, WebSocketConfig};

/// How tungstenite renders a close whose code it does not allow (differences 2 and 3).
const TUNGSTENITE_REFUSED_CLOSE: (u16, &str) = (1002, "Protocol violation");
/// tungstenite zero-fills its read buffer's spare room before every read: a small buffer keeps
/// the many short runs of the bisections fast.
const TUNGSTENITE_READ_BUFFER_BYTES: usize = 4096;

/// An event of either parser with its payload copied out, in a form both can produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

impl Seen {
    fn from_message(message: Message) -> Seen {
        match message {
            Message::Text(text) => Seen::Text(text.as_str().to_owned()),
            Message::Binary(payload) => Seen::Binary(payload.to_vec()),
            Message::Ping(payload) => Seen::Ping(payload.to_vec()),
            Message::Pong(payload) => Seen::Pong(payload.to_vec()),
            Message::Close(frame) => Seen::Close(
                frame.map(|frame| (u16::from(frame.code), frame.reason.as_str().to_owned())),
            ),
            Message::Frame(_) => unreachable!("read() never yields raw frames"),
        }
    }
}

/// The limits both parsers run with.
#[derive(Clone, Copy, Debug)]
pub struct FrameLimits {
    pub frame_bytes_max: usize,
    pub message_bytes_max: usize,
}

/// What our session made of a stream.
#[derive(Debug)]
pub struct OurRun {
    pub events: Vec<Seen>,
    pub error: Option<ProtocolError>,
    pub closed: bool,
}

/// An in-memory transport for tungstenite: reads serve `input` and then report WouldBlock
/// (more may come, as on a non-blocking socket); writes (pongs and close replies) are
/// discarded.
struct MemoryStream<'a> {
    input: &'a [u8],
    position: usize,
}

impl Read for MemoryStream<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let remaining = &self.input[self.position..];
        if remaining.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let count = remaining.len().min(buffer.len());
        buffer[..count].copy_from_slice(&remaining[..count]);
        self.position += count;
        Ok(count)
    }
}

impl Write for MemoryStream<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How tungstenite's reading ended.
#[derive(Debug)]
enum TungsteniteEnd {
    /// The input ran out (WouldBlock).
    NeedMore,
    /// It delivered a close and reads nothing more.
    Closed,
    Failed(tungstenite::Error),
}

#[derive(Debug)]
struct TungsteniteRun {
    events: Vec<Seen>,
    end: TungsteniteEnd,
}

fn tungstenite_config(limits: FrameLimits) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(TUNGSTENITE_READ_BUFFER_BYTES)
        .max_frame_size(Some(limits.frame_bytes_max))
        .max_message_size(Some(limits.message_bytes_max))
        .accept_unmasked_frames(false)
}

fn run_tungstenite(input: &[u8], limits: FrameLimits) -> TungsteniteRun {
    let stream = MemoryStream { input, position: 0 };
    let config = tungstenite_config(limits);
    let mut websocket = WebSocket::from_raw_socket(stream, Role::Server, Some(config));
    let mut events = Vec::new();
    let end = loop {
        match websocket.read() {
            Ok(message) => events.push(Seen::from_message(message)),
            Err(tungstenite::Error::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                break TungsteniteEnd::NeedMore;
            }
            Err(tungstenite::Error::ConnectionClosed) => break TungsteniteEnd::Closed,
            Err(error) => break TungsteniteEnd::Failed(error),
        }
    };
    TungsteniteRun { events, end }
}

// ---------------------------------------------------------------------------------------------
// A structural frame reader: just enough of RFC 6455 §5.2 to find where frames lie and unmask
// payloads, checking no rule, so that failures can be located without trusting either parser.

#[derive(Clone, Copy, Debug)]
struct RawHead {
    opcode_bits: u8,
    fin: bool,
    length_code: u8,
    mask: Option<[u8; 4]>,
    payload_bytes: u64,
    head_bytes: usize,
}

fn raw_head(bytes: &[u8]) -> Option<RawHead> {
    let [first, second, ..] = *bytes else {
        return None;
    };
    let length_code = second & 0x7F;
    let length_bytes = match length_code {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let masked = second & 0x80 != 0;
    let head_bytes = 2 + length_bytes + if masked { 4 } else { 0 };
    if bytes.len() < head_bytes {
        return None;
    }
    let payload_bytes = match length_bytes {
        0 => u64::from(length_code),
        _ => bytes[2..2 + length_bytes]
            .iter()
            .fold(0, |length, &byte| length << 8 | u64::from(byte)),
    };
    let mask = masked.then(|| {
        bytes[2 + length_bytes..head_bytes]
            .try_into()
            .expect("four bytes")
    });
    Some(RawHead {
        opcode_bits: first & 0x0F,
        fin: first & 0x80 != 0,
        length_code,
        mask,
        payload_bytes,
        head_bytes,
    })
}

/// Where one frame lies in an input. Frames tile the input; only the last may be incomplete.
#[derive(Clone, Copy, Debug)]
struct RawFrame {
    start: usize,
    head: Option<RawHead>,
    end: usize,
    complete: bool,
}

fn raw_frames(input: &[u8]) -> Vec<RawFrame> {
    let mut frames = Vec::new();
    let mut start = 0;
    while start < input.len() {
        let head = raw_head(&input[start..]);
        let declared_end =
            head.map(|head| ((start + head.head_bytes) as u64).saturating_add(head.payload_bytes));
        let complete = declared_end.is_some_and(|end| end <= input.len() as u64);
        let end = if complete {
            declared_end.expect("complete") as usize
        } else {
            input.len()
        };
        frames.push(RawFrame {
            start,
            head,
            end,
            complete,
        });
        start = end;
    }
    frames
}

fn xor_mask(bytes: &mut [u8], mask: [u8; 4], offset: usize) {
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte ^= mask[(offset + index) % 4];
    }
}

fn unmasked_payload(input: &[u8], frame: &RawFrame) -> Vec<u8> {
    let Some(head) = frame.head else {
        return Vec::new();
    };
    let mut payload = input[frame.start + head.head_bytes..frame.end].to_vec();
    if let Some(mask) = head.mask {
        xor_mask(&mut payload, mask, 0);
    }
    payload
}

/// The unmasked bytes so far of the text message still open before frame `index`, if any.
fn open_text_before(input: &[u8], frames: &[RawFrame], index: usize) -> Option<Vec<u8>> {
    let mut open: Option<(bool, Vec<u8>)> = None;
    for frame in &frames[..index] {
        let head = frame.head.expect("frames before the last are whole");
        match head.opcode_bits {
            0x1 | 0x2 => open = Some((head.opcode_bits == 0x1, unmasked_payload(input, frame))),
            0x0 => {
                if let Some((_, bytes)) = &mut open {
                    bytes.extend(unmasked_payload(input, frame));
                }
            }
            _ => continue,
        }
        if head.fin {
            open = None;
        }
    }
    open.filter(|(text, _)| *text).map(|(_, bytes)| bytes)
}

/// Bytes that turn the cut-short last code point of `text` into a whole one.
fn utf8_completion(text: &[u8]) -> Vec<u8> {
    let Err(error) = std::str::from_utf8(text) else {
        return Vec::new();
    };
    if error.error_len().is_some() {
        return Vec::new();
    }
    let mut tail = text[error.valid_up_to()..].to_vec();
    let carried = tail.len();
    while std::str::from_utf8(&tail).is_err() {
        let next = (0x80..=0xBF)
            .find(|&byte| is_utf8_prefix(&[&tail[..], &[byte]].concat()))
            .expect("a valid prefix can always be continued");
        tail.push(next);
    }
    tail.split_off(carried)
}

fn is_utf8_prefix(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(error) => error.error_len().is_none(),
    }
}

/// The input through frame `index`, that frame completed as benignly as RFC 6455 allows.
fn completed_through(
    input: &[u8],
    frames: &[RawFrame],
    index: usize,
    limits: FrameLimits,
) -> Vec<u8> {
    let frame = frames[index];
    let mut bytes = input[..frame.end].to_vec();
    let (head, added_head_bytes) = completed_head(input, &frame);
    bytes.extend_from_slice(&added_head_bytes);
    if head.payload_bytes > limits.frame_bytes_max as u64 {
        return bytes;
    }
    let present = unmasked_payload(input, &frame);
    let missing_bytes = head.payload_bytes as usize - present.len();
    let text_so_far = match head.opcode_bits {
        0x1 => Some(present.clone()),
        0x0 => open_text_before(input, frames, index).map(|text| [text, present.clone()].concat()),
        _ => None,
    };
    let mut padding = text_so_far.map_or_else(Vec::new, |text| utf8_completion(&text));
    padding.truncate(missing_bytes);
    padding.resize(missing_bytes, b' ');
    if let Some(mask) = head.mask {
        xor_mask(&mut padding, mask, present.len());
    }
    bytes.extend_from_slice(&padding);
    bytes
}

fn completed_head(input: &[u8], frame: &RawFrame) -> (RawHead, Vec<u8>) {
    if let Some(head) = frame.head {
        return (head, Vec::new());
    }
    let present = &input[frame.start..frame.end];
    let mut head = present.to_vec();
    if head.len() < 2 {
        head.push(0x80);
    }
    let length_bytes = match head[1] & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let smallest_length: u64 = if length_bytes == 2 { 126 } else { 65_536 };
    let smallest_encoded = smallest_length.to_be_bytes();
    while head.len() < 2 + length_bytes {
        head.push(smallest_encoded[8 - length_bytes + head.len() - 2]);
    }
    let mask_bytes = if head[1] & 0x80 != 0 { 4 } else { 0 };
    head.resize(2 + length_bytes + mask_bytes, 0);
    let parsed = raw_head(&head).expect("completed");
    (parsed, head.split_off(present.len()))
}

/// Our events as tungstenite renders them: a 1014 close becomes its refused close.
fn normalised(events: &[Seen]) -> Vec<Seen> {
    events
        .iter()
        .map(|event| match event {
            Seen::Close(Some((1014, _))) => refused_close(),
            other => other.clone(),
        })
        .collect()
}

fn refused_close() -> Seen {
    Seen::Close(Some((
        TUNGSTENITE_REFUSED_CLOSE.0,
        TUNGSTENITE_REFUSED_CLOSE.1.to_owned(),
    )))
}

macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}

/// The first frame whose end (the input's end, for the last frame) makes `happened` true for
/// the input up to it, read whole; found by bisection, since whatever a parser did within a
/// prefix it still does within a longer one. Locates where either parser failed.
fn first_frame_where(frames: &[RawFrame], happened: impl Fn(usize) -> bool) -> usize {
    let (mut low, mut high) = (0, frames.len() - 1);
    while low < high {
        let middle = (low + high) / 2;
        if happened(frames[middle].end) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    low
}

/// Checks tungstenite agrees with `ours` on `input`, allowing only the differences listed in
/// the module documentation. `fails_within(length)` says whether our session reports an error
/// on the first `length` bytes of the input read whole; it locates our error.
/// `Err` says how they disagree.
pub fn check_agreement(
    input: &[u8],
    ours: &OurRun,
    limits: FrameLimits,
    fails_within: impl Fn(usize) -> bool,
) -> Result<(), String> {
    let theirs = run_tungstenite(input, limits);
    let our_events = normalised(&ours.events);
    let Some(error) = &ours.error else {
        ensure!(
            !matches!(theirs.end, TungsteniteEnd::Failed(_)),
            "tungstenite refused what we accepted: {:?}",
            theirs.end
        );
        ensure!(
            our_events == theirs.events,
            "events differ: ours {our_events:?}, theirs {:?}",
            theirs.events
        );
        ensure!(
            ours.closed == matches!(theirs.end, TungsteniteEnd::Closed),
            "closed: ours {}, theirs {:?}",
            ours.closed,
            theirs.end
        );
        return Ok(());
    };
    let frames = raw_frames(input);
    let our_frame_index = first_frame_where(&frames, fails_within);
    let their_frame_index = |end_of: fn(&TungsteniteEnd) -> bool| {
        first_frame_where(&frames, |length| {
            end_of(&run_tungstenite(&input[..length], limits).end)
        })
    };
    let our_frame = frames[our_frame_index];
    let (our_head, _) = completed_head(input, &our_frame);
    let mis_encoded_control = matches!(error, ProtocolError::ControlFrameTooLong(_))
        && our_head.length_code > 125
        && our_head.payload_bytes <= 125;
    if mis_encoded_control {
        // Difference 4: tungstenite reads on past this frame.
        ensure!(
            theirs.events.starts_with(&our_events),
            "ours {our_events:?}, theirs {:?}",
            theirs.events
        );
        return Ok(());
    }
    match &theirs.end {
        TungsteniteEnd::Failed(their_error) => {
            ensure!(
                our_events == theirs.events,
                "events before the error differ: ours {our_events:?}, theirs {:?}",
                theirs.events
            );
            let their_frame_index =
                their_frame_index(|end| matches!(end, TungsteniteEnd::Failed(_)));
            ensure!(
                our_frame_index == their_frame_index,
                "failed in different frames: ours {error:?} in {our_frame_index}, theirs \
                 {their_error:?} in {their_frame_index}"
            );
        }
        TungsteniteEnd::Closed if matches!(error, ProtocolError::InvalidCloseCode(_)) => {
            // Difference 2: tungstenite delivers the close it will answer with.
            let mut expected = our_events.clone();
            expected.push(refused_close());
            ensure!(
                expected == theirs.events,
                "ours {expected:?}, theirs {:?}",
                theirs.events
            );
            let their_frame_index = their_frame_index(|end| matches!(end, TungsteniteEnd::Closed));
            ensure!(
                our_frame_index == their_frame_index,
                "closed in different frames: ours {our_frame_index}, theirs {their_frame_index}"
            );
        }
        TungsteniteEnd::NeedMore => {
            // Difference 1: we failed inside the frame the input stops in. tungstenite read
            // every frame before it without complaint, so it must fail in the completed one.
            ensure!(
                our_events == theirs.events,
                "events differ: ours {our_events:?}, theirs {:?}",
                theirs.events
            );
            ensure!(
                !our_frame.complete,
                "we refused ({error:?}) a whole frame tungstenite accepted"
            );
            let witness = completed_through(input, &frames, our_frame_index, limits);
            let completed = run_tungstenite(&witness, limits);
            ensure!(
                matches!(completed.end, TungsteniteEnd::Failed(_)),
                "we failed early ({error:?}) but tungstenite accepts the completed frame: {:?}",
                completed.end
            );
            ensure!(
                our_events == completed.events,
                "events differ on the completed frame: ours {our_events:?}, theirs {:?}",
                completed.events
            );
        }
        TungsteniteEnd::Closed => {
            return Err(format!(
                "we failed ({error:?}) where tungstenite read on to a close"
            ));
        }
    }
    Ok(())
}
