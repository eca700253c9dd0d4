//! Differential tests: ringcast's `Session` against tungstenite's frame parser on random valid
//! and invalid client streams, and encode → parse round trips in both directions.
//!
//! tungstenite is the reference because it parses the same wire format independently and passes
//! the Autobahn suite. Both parsers read the same bytes; they must deliver the same events up to
//! the first error, and either both fail, in the same frame, or neither does. Where the two
//! differ by design, the difference is listed here and normalised in `check_agreement` only:
//!
//! 1. Failing fast. We check a frame head as soon as its first bytes arrive and validate text as
//!    each piece arrives; tungstenite checks reserved opcodes once the head is whole, and RSV
//!    bits, masking, control-frame rules, sequencing and UTF-8 once the whole frame is buffered.
//!    When the input stops inside the frame we failed in, tungstenite simply waits for more. The
//!    test then hands tungstenite the rest of that frame, completed as benignly as RFC 6455
//!    allows (see `completed_through`), and tungstenite must fail in that frame too.
//! 2. Disallowed close codes. We fail the connection (1002, as Autobahn 7.9.x expects);
//!    tungstenite returns no error but reports the close as 1002 "Protocol violation" and
//!    answers with 1002. On the wire both answer 1002 and stop.
//! 3. Close code 1014 (Bad Gateway) is in the IANA registry and we accept it; tungstenite does
//!    not know it, treats it as invalid and reports it as in (2). Every other code is judged alike.
//! 4. Length encoding of control frames. RFC 6455 §5.2 requires the minimal length encoding, so a
//!    control frame whose length code is 126 or 127 is either over 125 bytes or mis-encoded: we
//!    refuse it on its second byte. tungstenite decodes the extended length and accepts a
//!    control frame of at most 125 bytes however it is encoded.
//! 5. End of input and ping handling are not differences: tungstenite's reader returns
//!    WouldBlock where ours returns `None`, reports `ConnectionClosed` once it has delivered a
//!    close (we stop reading at the close as well), and queues pongs itself (its writes are
//!    discarded here) while ours are owed through `poll_transmit`; both report every ping.

use std::io::{self, Read, Write};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use ringcast::protocol::ProtocolError;
use ringcast::protocol::ProtocolLimits;
use ringcast::protocol::pool::BufferPool;
use ringcast::protocol::pool::PoolLimits;
use ringcast::protocol::websocket::frame::{
    HEAD_BYTES_MAX, OpCode, encode_close_frame, encode_frame,
};
use ringcast::protocol::websocket::session::{Event, MessageKind, Session, SessionState};
use tungstenite::protocol::{Message, Role, WebSocket, WebSocketConfig};

/// Limits small enough that random cases cross them often; the frame limit is below the message
/// limit so that fragmented messages can break the message limit with frames that are allowed.
const FRAME_BYTES_MAX: usize = 1024;
const MESSAGE_BYTES_MAX: usize = 2048;
/// Enough cases to reach every mutation many times while a debug run stays within seconds.
const CASES: u32 = 384;
/// How tungstenite renders a close whose code it does not allow (differences 2 and 3).
const TUNGSTENITE_REFUSED_CLOSE: (u16, &str) = (1002, "Protocol violation");

const RESERVED_OPCODES: [u8; 10] = [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF];
/// Sequences no valid UTF-8 contains, each breaking a different rule.
const INVALID_UTF8_SEQUENCES: [&[u8]; 8] = [
    &[0xFF],                   // never appears in UTF-8
    &[0x80],                   // a continuation byte with no lead
    &[0xC0, 0xAF],             // an overlong '/'
    &[0xED, 0xA0, 0x80],       // a UTF-16 surrogate
    &[0xF4, 0x90, 0x80, 0x80], // above U+10FFFF
    &[0xF5],                   // a lead byte that cannot start anything
    &[0xE2, 0x82],             // a code point cut short (invalid unless completed)
    &[0xC2, 0x41],             // a lead byte followed by ASCII
];
/// Close codes around every boundary of RFC 6455 §7.4 and the IANA registry.
const CLOSE_CODES: [u16; 26] = [
    0, 999, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
    1014, 1015, 1016, 2999, 3000, 3999, 4000, 4999, 5000, 65535,
];

/// An event of either parser with its payload copied out, in a form both can produce.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

impl Seen {
    fn from_event(event: &Event<'_>) -> Seen {
        match *event {
            Event::Message {
                kind: MessageKind::Text,
                payload,
            } => Seen::Text(String::from_utf8(payload.to_vec()).expect("validated text")),
            Event::Message {
                kind: MessageKind::Binary,
                payload,
            } => Seen::Binary(payload.to_vec()),
            Event::Ping(payload) => Seen::Ping(payload.to_vec()),
            Event::Pong(payload) => Seen::Pong(payload.to_vec()),
            Event::Close { code, reason } => {
                Seen::Close(code.map(|code| (code.0, reason.to_owned())))
            }
        }
    }

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

// ---------------------------------------------------------------------------------------------
// Driving both parsers.

fn protocol_config() -> ProtocolLimits {
    ProtocolLimits {
        frame_bytes_max: FRAME_BYTES_MAX,
        message_bytes_max: MESSAGE_BYTES_MAX,
        ..ProtocolLimits::default()
    }
}

/// tungstenite with our limits. Its read buffer is tiny because tungstenite zero-fills the
/// buffer's spare room before every read, and this test reads one byte at a time.
fn tungstenite_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(HEAD_BYTES_MAX + 2)
        .max_frame_size(Some(FRAME_BYTES_MAX))
        .max_message_size(Some(MESSAGE_BYTES_MAX))
        .accept_unmasked_frames(false)
}

/// What our session made of an input.
#[derive(Debug)]
struct RingcastRun {
    events: Vec<Seen>,
    error: Option<ProtocolError>,
    /// End (exclusive) of the read that reported the error; with one-byte reads, the byte after
    /// the one that revealed it.
    error_read_end: usize,
    closed: bool,
}

/// Feeds `input` to a fresh session in reads of the given sizes (cycled), as a recv would: each
/// read is copied into a reused buffer that the session then unmasks in place.
fn run_ringcast(input: &[u8], read_sizes: &[usize]) -> RingcastRun {
    let config = protocol_config();
    let mut pool = BufferPool::new(&PoolLimits::default());
    let mut session = Session::new();
    let mut read_buffer = Vec::with_capacity(input.len());
    let mut run = RingcastRun {
        events: Vec::new(),
        error: None,
        error_read_end: 0,
        closed: false,
    };
    let mut start = 0;
    for &read_size in read_sizes.iter().cycle() {
        if start == input.len() || run.error.is_some() {
            break;
        }
        let end = start.saturating_add(read_size.max(1)).min(input.len());
        read_buffer.clear();
        read_buffer.extend_from_slice(&input[start..end]);
        let mut reader = session.handle_read(&mut read_buffer, &mut pool, &config);
        while let Some(result) = reader.next_event() {
            match result {
                Ok(event) => run.events.push(Seen::from_event(&event)),
                Err(error) => {
                    assert!(run.error.is_none(), "an error is reported once");
                    run.error = Some(error);
                    run.error_read_end = end;
                }
            }
        }
        assert_eq!(
            reader.consumed_bytes(),
            end - start,
            "a read is consumed whole"
        );
        drop(reader);
        start = end;
    }
    run.closed = session.state() == SessionState::Closed;
    session.release_buffers(&mut pool);
    assert!(
        pool.statistics().all(|class| class.buffers_in_use == 0),
        "every pooled buffer came back"
    );
    run
}

/// An in-memory transport for tungstenite: reads serve `input` at most `read_bytes_max` at a
/// time and then report WouldBlock (more may come, as on a non-blocking socket); writes (pongs
/// and close replies) are discarded.
struct MemoryStream<'a> {
    input: &'a [u8],
    position: usize,
    read_bytes_max: usize,
}

impl Read for MemoryStream<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let remaining = &self.input[self.position..];
        if remaining.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let count = remaining.len().min(buffer.len()).min(self.read_bytes_max);
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
    /// Bytes tungstenite took from the stream. Read one at a time, so when it fails this points
    /// just past the byte it failed on (the end of the failing frame, or of its head).
    consumed_bytes: usize,
}

fn run_tungstenite(
    input: &[u8],
    role: Role,
    config: WebSocketConfig,
    read_bytes_max: usize,
) -> TungsteniteRun {
    let stream = MemoryStream {
        input,
        position: 0,
        read_bytes_max,
    };
    let mut websocket = WebSocket::from_raw_socket(stream, role, Some(config));
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
    TungsteniteRun {
        events,
        end,
        consumed_bytes: websocket.get_ref().position,
    }
}

/// tungstenite as the server, fed one byte per read so that its failures can be located.
fn run_tungstenite_server(input: &[u8]) -> TungsteniteRun {
    run_tungstenite(input, Role::Server, tungstenite_config(), 1)
}

// ---------------------------------------------------------------------------------------------
// The test's own structural frame reader: just enough of RFC 6455 §5.2 to find where frames lie
// and unmask payloads, checking no rule, so that early failures can be located without trusting
// either parser under test.

#[derive(Clone, Copy, Debug)]
struct RawHead {
    fin: bool,
    opcode_bits: u8,
    length_code: u8,
    mask: Option<[u8; 4]>,
    payload_bytes: u64,
    head_bytes: usize,
}

/// The head at the start of `bytes`, or `None` when it is cut short.
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
        fin: first & 0x80 != 0,
        opcode_bits: first & 0x0F,
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
    /// `None` when the input ends inside the head.
    head: Option<RawHead>,
    /// The frame's end, or the input's end when the frame runs past it.
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

/// The index of the frame holding byte `offset`.
fn frame_index_at(frames: &[RawFrame], offset: usize) -> usize {
    frames
        .iter()
        .position(|frame| frame.start <= offset && offset < frame.end)
        .expect("frames tile the input")
}

fn xor_mask(bytes: &mut [u8], mask: [u8; 4], offset: usize) {
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte ^= mask[(offset + index) % 4];
    }
}

/// The unmasked payload bytes of a frame that the input holds.
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

/// Bytes that turn the cut-short last code point of `text` into a whole one; empty when `text`
/// does not end inside a code point or is invalid already.
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

/// Whether `bytes` is valid UTF-8 or becomes valid with more bytes.
fn is_utf8_prefix(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(error) => error.error_len().is_none(),
    }
}

/// The input up to and including frame `index`, with that frame completed as benignly as
/// RFC 6455 allows: missing length bytes take the smallest value their length code may carry
/// (126, or 65,536), a missing mask is zeros, and missing payload first completes any code point
/// left open in a text message and then pads with spaces. A frame over the size limit is left
/// short: tungstenite refuses it on its head.
fn completed_through(input: &[u8], frames: &[RawFrame], index: usize) -> Vec<u8> {
    let frame = frames[index];
    let mut bytes = input[..frame.end].to_vec();
    let (head, added_head_bytes) = completed_head(input, &frame);
    bytes.extend_from_slice(&added_head_bytes);
    if head.payload_bytes > FRAME_BYTES_MAX as u64 {
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

/// A frame's head, completed if it is cut short (see `completed_through`), with the bytes that
/// completing it added.
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

// ---------------------------------------------------------------------------------------------
// Comparison.

/// Our events as tungstenite renders them: a 1014 close becomes its refused close (difference 3).
fn normalised(events: &[Seen]) -> Vec<Seen> {
    let refused = Seen::Close(Some((
        TUNGSTENITE_REFUSED_CLOSE.0,
        TUNGSTENITE_REFUSED_CLOSE.1.to_owned(),
    )));
    events
        .iter()
        .map(|event| match event {
            Seen::Close(Some((1014, _))) => refused.clone(),
            other => other.clone(),
        })
        .collect()
}

/// Checks the two runs agree, allowing only the differences listed at the top of this file.
/// `ours` comes from one-byte reads, so its error offset is exact.
fn check_agreement(
    input: &[u8],
    ours: &RingcastRun,
    theirs: &TungsteniteRun,
) -> Result<(), TestCaseError> {
    let our_events = normalised(&ours.events);
    let frames = raw_frames(input);
    let Some(error) = &ours.error else {
        prop_assert!(
            !matches!(theirs.end, TungsteniteEnd::Failed(_)),
            "tungstenite refused what we accepted: {:?}",
            theirs.end
        );
        prop_assert_eq!(&our_events, &theirs.events);
        prop_assert_eq!(ours.closed, matches!(theirs.end, TungsteniteEnd::Closed));
        return Ok(());
    };
    let our_frame_index = frame_index_at(&frames, ours.error_read_end - 1);
    let our_frame = frames[our_frame_index];
    // The completed head, because we refuse on the length code before the rest has arrived.
    let (our_head, _) = completed_head(input, &our_frame);
    let mis_encoded_control = matches!(error, ProtocolError::ControlFrameTooLong(_))
        && our_head.length_code > 125
        && our_head.payload_bytes <= 125;
    if mis_encoded_control {
        // Difference 4: tungstenite reads on past this frame.
        prop_assert!(
            theirs.events.starts_with(&our_events),
            "ours {our_events:?}, theirs {:?}",
            theirs.events
        );
        return Ok(());
    }
    match &theirs.end {
        TungsteniteEnd::Failed(their_error) => {
            prop_assert_eq!(&our_events, &theirs.events);
            let their_frame_index = frame_index_at(&frames, theirs.consumed_bytes - 1);
            prop_assert_eq!(
                our_frame_index,
                their_frame_index,
                "failed in different frames: ours {:?}, theirs {:?}",
                error,
                their_error
            );
        }
        TungsteniteEnd::Closed if matches!(error, ProtocolError::InvalidCloseCode(_)) => {
            // Difference 2: tungstenite delivers the close it will answer with.
            let mut expected = our_events.clone();
            expected.push(Seen::Close(Some((
                TUNGSTENITE_REFUSED_CLOSE.0,
                TUNGSTENITE_REFUSED_CLOSE.1.to_owned(),
            ))));
            prop_assert_eq!(&expected, &theirs.events);
            let their_frame_index = frame_index_at(&frames, theirs.consumed_bytes - 1);
            prop_assert_eq!(
                our_frame_index,
                their_frame_index,
                "closed in different frames"
            );
        }
        TungsteniteEnd::NeedMore => {
            // Difference 1: we failed inside the frame the input stops in.
            prop_assert_eq!(&our_events, &theirs.events);
            prop_assert!(
                !our_frame.complete,
                "we refused ({error:?}) a whole frame tungstenite accepted"
            );
            let witness = completed_through(input, &frames, our_frame_index);
            let completed = run_tungstenite_server(&witness);
            prop_assert!(
                matches!(completed.end, TungsteniteEnd::Failed(_)),
                "we failed early ({error:?}) but tungstenite accepts the completed frame: {:?}",
                completed.end
            );
            prop_assert_eq!(&our_events, &completed.events);
            let witness_frames = raw_frames(&witness);
            let their_frame_index = frame_index_at(&witness_frames, completed.consumed_bytes - 1);
            prop_assert_eq!(
                our_frame_index,
                their_frame_index,
                "failed in different frames"
            );
        }
        TungsteniteEnd::Closed => {
            prop_assert!(
                false,
                "we failed ({error:?}) where tungstenite read on to a close"
            )
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Generating client streams.

/// How a frame's payload length is written.
#[derive(Clone, Copy, Debug)]
enum LengthEncoding {
    Minimal,
    /// A 16-bit length even where 7 bits would do (RFC 6455 §5.2 forbids sending this).
    Extended16,
    /// A 64-bit length even where fewer bits would do.
    Extended64,
    /// A 64-bit length with its most significant bit set, which RFC 6455 §5.2 forbids.
    TopBitSet,
}

/// One frame as generated, before encoding.
#[derive(Clone, Debug)]
struct FrameSpec {
    fin: bool,
    reserved_bits: u8,
    opcode_bits: u8,
    mask: Option<[u8; 4]>,
    payload: Vec<u8>,
    length_encoding: LengthEncoding,
}

impl FrameSpec {
    fn new(opcode_bits: u8, fin: bool, payload: Vec<u8>, mask: [u8; 4]) -> FrameSpec {
        FrameSpec {
            fin,
            reserved_bits: 0,
            opcode_bits,
            mask: Some(mask),
            payload,
            length_encoding: LengthEncoding::Minimal,
        }
    }

    /// Writes the frame with the test's own encoder, independent of the code under test.
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.fin) << 7 | self.reserved_bits << 4 | self.opcode_bits);
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let length = self.payload.len() as u64;
        let length_code = match self.length_encoding {
            LengthEncoding::Minimal if length <= 125 => length as u8,
            LengthEncoding::Minimal | LengthEncoding::Extended16 if length <= 0xFFFF => 126,
            _ => 127,
        };
        out.push(mask_bit | length_code);
        match length_code {
            126 => out.extend_from_slice(&(length as u16).to_be_bytes()),
            127 => {
                let top_bit = match self.length_encoding {
                    LengthEncoding::TopBitSet => 1 << 63,
                    _ => 0,
                };
                out.extend_from_slice(&(length | top_bit).to_be_bytes());
            }
            _ => {}
        }
        if let Some(mask) = self.mask {
            out.extend_from_slice(&mask);
        }
        let payload_start = out.len();
        out.extend_from_slice(&self.payload);
        if let Some(mask) = self.mask {
            xor_mask(&mut out[payload_start..], mask, 0);
        }
    }
}

/// A control frame as generated: ping, pong or close, with its payload.
#[derive(Clone, Debug)]
struct Control {
    opcode: OpCode,
    payload: Vec<u8>,
}

/// A logical piece of a client stream.
#[derive(Clone, Debug)]
enum Item {
    /// A data message (text may be invalid UTF-8), cut into fragments at `cuts`, with control
    /// frames interleaved after the fragment each one names.
    Message {
        text: bool,
        payload: Vec<u8>,
        cuts: Vec<Index>,
        controls: Vec<(Index, Control)>,
    },
    Control(Control),
    /// A text message of about `MESSAGE_BYTES_MAX` bytes in frames of `FRAME_BYTES_MAX`, so that
    /// the message limit is met exactly and crossed by one byte.
    AtMessageLimit {
        message_bytes: usize,
    },
}

/// A change to the frame sequence that usually breaks a rule.
#[derive(Clone, Debug)]
enum FrameMutation {
    ReservedBits {
        frame: Index,
        bits: u8,
    },
    ReservedOpcode {
        frame: Index,
        opcode_bits: u8,
    },
    Unmasked {
        frame: Index,
    },
    Length {
        frame: Index,
        encoding: LengthEncoding,
    },
    /// Makes a final frame non-final or the reverse: non-final control frames, messages that
    /// never end, continuations that follow nothing.
    FlipFin {
        frame: Index,
    },
    Insert {
        position: Index,
        frame: FrameSpec,
    },
}

/// One generated case: a stream of items, frame-level mutations, then byte-level ones.
#[derive(Clone, Debug)]
struct Case {
    items: Vec<Item>,
    masks: Vec<[u8; 4]>,
    frame_mutations: Vec<FrameMutation>,
    byte_flips: Vec<(Index, u8)>,
    truncation: Option<Index>,
}

impl Case {
    fn frames(&self) -> Vec<FrameSpec> {
        let mut frames = Vec::new();
        let mut masks = self.masks.iter().copied().cycle();
        for item in &self.items {
            match item {
                Item::Control(control) => frames.push(control_frame(control, &mut masks)),
                Item::Message {
                    text,
                    payload,
                    cuts,
                    controls,
                } => push_message(&mut frames, *text, payload, cuts, controls, &mut masks),
                Item::AtMessageLimit { message_bytes } => {
                    push_limit_message(&mut frames, *message_bytes, &mut masks);
                }
            }
        }
        for mutation in &self.frame_mutations {
            mutate(&mut frames, mutation);
        }
        frames
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for frame in self.frames() {
            frame.encode(&mut bytes);
        }
        if !bytes.is_empty() {
            for (position, bit) in &self.byte_flips {
                let flipped = position.index(bytes.len());
                bytes[flipped] ^= 1 << bit;
            }
        }
        if let Some(truncation) = self.truncation {
            bytes.truncate(truncation.index(bytes.len() + 1));
        }
        bytes
    }
}

fn control_frame(control: &Control, masks: &mut impl Iterator<Item = [u8; 4]>) -> FrameSpec {
    let mask = masks.next().expect("cycled");
    FrameSpec::new(control.opcode as u8, true, control.payload.clone(), mask)
}

fn push_message(
    frames: &mut Vec<FrameSpec>,
    text: bool,
    payload: &[u8],
    cuts: &[Index],
    controls: &[(Index, Control)],
    masks: &mut impl Iterator<Item = [u8; 4]>,
) {
    let mut cut_offsets: Vec<usize> = cuts
        .iter()
        .map(|cut| cut.index(payload.len() + 1))
        .collect();
    cut_offsets.sort_unstable();
    cut_offsets.push(payload.len());
    let fragment_count = cut_offsets.len();
    let mut start = 0;
    for (fragment_index, &end) in cut_offsets.iter().enumerate() {
        let opcode = match (fragment_index, text) {
            (0, true) => OpCode::Text,
            (0, false) => OpCode::Binary,
            _ => OpCode::Continuation,
        };
        let fin = fragment_index + 1 == fragment_count;
        let mask = masks.next().expect("cycled");
        frames.push(FrameSpec::new(
            opcode as u8,
            fin,
            payload[start..end].to_vec(),
            mask,
        ));
        for (after, control) in controls {
            if after.index(fragment_count) == fragment_index {
                frames.push(control_frame(control, masks));
            }
        }
        start = end;
    }
}

fn push_limit_message(
    frames: &mut Vec<FrameSpec>,
    message_bytes: usize,
    masks: &mut impl Iterator<Item = [u8; 4]>,
) {
    let payload = vec![b'L'; message_bytes];
    let piece_count = payload.chunks(FRAME_BYTES_MAX).count();
    for (piece_index, piece) in payload.chunks(FRAME_BYTES_MAX).enumerate() {
        let opcode = if piece_index == 0 {
            OpCode::Text
        } else {
            OpCode::Continuation
        };
        let fin = piece_index + 1 == piece_count;
        let mask = masks.next().expect("cycled");
        frames.push(FrameSpec::new(opcode as u8, fin, piece.to_vec(), mask));
    }
}

fn mutate(frames: &mut Vec<FrameSpec>, mutation: &FrameMutation) {
    if let FrameMutation::Insert { position, frame } = mutation {
        frames.insert(position.index(frames.len() + 1), frame.clone());
        return;
    }
    if frames.is_empty() {
        return;
    }
    let frame_count = frames.len();
    let target = |frame: &Index| frame.index(frame_count);
    match mutation {
        FrameMutation::ReservedBits { frame, bits } => frames[target(frame)].reserved_bits = *bits,
        FrameMutation::ReservedOpcode { frame, opcode_bits } => {
            frames[target(frame)].opcode_bits = *opcode_bits;
        }
        FrameMutation::Unmasked { frame } => frames[target(frame)].mask = None,
        FrameMutation::Length { frame, encoding } => {
            frames[target(frame)].length_encoding = *encoding;
        }
        FrameMutation::FlipFin { frame } => {
            let frame = &mut frames[target(frame)];
            frame.fin = !frame.fin;
        }
        FrameMutation::Insert { .. } => unreachable!("handled above"),
    }
}

fn valid_text_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "\\PC{0,40}",
        1 => "[ -~]{100,1100}",
    ]
}

/// Valid text with one invalid sequence put in at any byte (even inside a code point).
fn invalid_text_strategy() -> impl Strategy<Value = Vec<u8>> {
    (
        valid_text_strategy(),
        select(&INVALID_UTF8_SEQUENCES[..]),
        any::<Index>(),
    )
        .prop_map(|(text, sequence, position)| {
            let mut bytes = text.into_bytes();
            let at = position.index(bytes.len() + 1);
            bytes.splice(at..at, sequence.iter().copied());
            bytes
        })
}

fn binary_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..200),
        1 => vec(any::<u8>(), 900..2400),
    ]
}

fn ping_or_pong_strategy() -> impl Strategy<Value = Control> {
    (
        select(&[OpCode::Ping, OpCode::Pong][..]),
        vec(any::<u8>(), 0..=125),
    )
        .prop_map(|(opcode, payload)| Control { opcode, payload })
}

/// Close payloads: empty, one byte, or a code with a reason (valid or not), at most 125 bytes.
fn close_strategy() -> impl Strategy<Value = Control> {
    let code = prop_oneof![3 => select(&CLOSE_CODES[..]), 1 => any::<u16>()];
    let reason = prop_oneof![
        3 => "\\PC{0,30}".prop_map(String::into_bytes),
        1 => invalid_text_strategy(),
    ];
    let payload = prop_oneof![
        1 => Just(Vec::new()),
        1 => any::<u8>().prop_map(|byte| vec![byte]),
        6 => (code, reason).prop_map(|(code, reason)| {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice(&reason[..reason.len().min(123)]);
            payload
        }),
    ];
    payload.prop_map(|payload| Control {
        opcode: OpCode::Close,
        payload,
    })
}

fn item_strategy() -> impl Strategy<Value = Item> {
    let payload = prop_oneof![
        3 => valid_text_strategy().prop_map(|text| (true, text.into_bytes())),
        2 => invalid_text_strategy().prop_map(|bytes| (true, bytes)),
        3 => binary_strategy().prop_map(|bytes| (false, bytes)),
    ];
    let interleaved = prop_oneof![8 => ping_or_pong_strategy(), 1 => close_strategy()];
    let message = (
        payload,
        vec(any::<Index>(), 0..5),
        vec((any::<Index>(), interleaved), 0..3),
    )
        .prop_map(|((text, payload), cuts, controls)| Item::Message {
            text,
            payload,
            cuts,
            controls,
        });
    let at_message_limit = (MESSAGE_BYTES_MAX - 1..=MESSAGE_BYTES_MAX + 1)
        .prop_map(|message_bytes| Item::AtMessageLimit { message_bytes });
    prop_oneof![
        12 => message,
        4 => ping_or_pong_strategy().prop_map(Item::Control),
        2 => close_strategy().prop_map(Item::Control),
        1 => at_message_limit,
    ]
}

/// Frames that break a rule wherever they land (or, for the data frames, only inside a
/// fragmented message, and for the size limit, only just over it).
fn inserted_frame_strategy() -> impl Strategy<Value = FrameSpec> {
    let control_opcodes = vec![OpCode::Close as u8, OpCode::Ping as u8, OpCode::Pong as u8];
    prop_oneof![
        (
            select(control_opcodes),
            vec(any::<u8>(), 126..=200),
            any::<[u8; 4]>()
        )
            .prop_map(|(opcode, payload, mask)| FrameSpec::new(opcode, true, payload, mask)),
        (vec(any::<u8>(), 0..10), any::<[u8; 4]>()).prop_map(|(payload, mask)| {
            FrameSpec::new(OpCode::Ping as u8, false, payload, mask)
        }),
        (any::<bool>(), vec(any::<u8>(), 0..20), any::<[u8; 4]>())
            .prop_map(|(fin, payload, mask)| FrameSpec::new(0x0, fin, payload, mask)),
        (1u8..=2, any::<bool>(), "[a-z]{0,20}", any::<[u8; 4]>()).prop_map(
            |(opcode, fin, text, mask)| FrameSpec::new(opcode, fin, text.into_bytes(), mask)
        ),
        (FRAME_BYTES_MAX..=FRAME_BYTES_MAX + 1, any::<[u8; 4]>())
            .prop_map(|(length, mask)| FrameSpec::new(0x2, true, vec![0x5A; length], mask)),
    ]
}

fn frame_mutation_strategy() -> impl Strategy<Value = FrameMutation> {
    let encodings = vec![
        LengthEncoding::Extended16,
        LengthEncoding::Extended64,
        LengthEncoding::TopBitSet,
    ];
    prop_oneof![
        1 => (any::<Index>(), 1u8..=7)
            .prop_map(|(frame, bits)| FrameMutation::ReservedBits { frame, bits }),
        1 => (any::<Index>(), select(&RESERVED_OPCODES[..])).prop_map(|(frame, opcode_bits)| {
            FrameMutation::ReservedOpcode { frame, opcode_bits }
        }),
        1 => any::<Index>().prop_map(|frame| FrameMutation::Unmasked { frame }),
        1 => (any::<Index>(), select(encodings))
            .prop_map(|(frame, encoding)| FrameMutation::Length { frame, encoding }),
        1 => any::<Index>().prop_map(|frame| FrameMutation::FlipFin { frame }),
        2 => (any::<Index>(), inserted_frame_strategy())
            .prop_map(|(position, frame)| FrameMutation::Insert { position, frame }),
    ]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let frame_mutations = prop_oneof![
        2 => Just(Vec::new()),
        3 => vec(frame_mutation_strategy(), 1..3),
    ];
    let byte_flips = prop_oneof![
        3 => Just(Vec::new()),
        1 => vec((any::<Index>(), 0u8..8), 1..3),
    ];
    let truncation = prop_oneof![3 => Just(None), 1 => any::<Index>().prop_map(Some)];
    (
        vec(item_strategy(), 0..6),
        vec(any::<[u8; 4]>(), 1..6),
        frame_mutations,
        byte_flips,
        truncation,
    )
        .prop_map(
            |(items, masks, frame_mutations, byte_flips, truncation)| Case {
                items,
                masks,
                frame_mutations,
                byte_flips,
                truncation,
            },
        )
}

/// Read sizes as a driver sees them: single bytes, pieces of frames, whole buffers.
fn read_sizes_strategy() -> impl Strategy<Value = Vec<usize>> {
    vec(
        prop_oneof![1usize..16, 16usize..600, Just(usize::MAX)],
        1..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Proves ringcast and tungstenite agree on random valid and invalid client streams: the
    /// same events up to the first error, and both fail in the same frame or neither fails.
    #[test]
    fn agrees_with_tungstenite(case in case_strategy(), read_sizes in read_sizes_strategy()) {
        let input = case.encode();
        let ours = run_ringcast(&input, &read_sizes);
        let ours_byte_at_a_time = run_ringcast(&input, &[1]);
        prop_assert_eq!(&ours.events, &ours_byte_at_a_time.events, "reads changed the events");
        prop_assert_eq!(&ours.error, &ours_byte_at_a_time.error, "reads changed the error");
        let theirs = run_tungstenite_server(&input);
        check_agreement(&input, &ours_byte_at_a_time, &theirs)?;
    }
}

// ---------------------------------------------------------------------------------------------
// The documented differences, pinned on fixed inputs so that a change on either side shows.

fn masked_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let spec = FrameSpec {
        fin: first_byte & 0x80 != 0,
        reserved_bits: (first_byte >> 4) & 0x7,
        opcode_bits: first_byte & 0x0F,
        mask: Some([0x12, 0x34, 0x56, 0x78]),
        payload: payload.to_vec(),
        length_encoding: LengthEncoding::Minimal,
    };
    let mut bytes = Vec::new();
    spec.encode(&mut bytes);
    bytes
}

/// Proves difference 1: a frame with RSV bits fails on its first byte here and only once whole
/// in tungstenite.
#[test]
fn difference_fail_fast_on_reserved_bits() {
    let frame = masked_frame(0x80 | 0x40 | 0x1, b"hello");
    let ours = run_ringcast(&frame[..1], &[1]);
    assert_eq!(ours.error, Some(ProtocolError::ReservedBitsSet));
    let partial = run_tungstenite_server(&frame[..frame.len() - 1]);
    assert!(matches!(partial.end, TungsteniteEnd::NeedMore));
    let whole = run_tungstenite_server(&frame);
    assert!(matches!(whole.end, TungsteniteEnd::Failed(_)));
}

/// Proves differences 2 and 3: tungstenite reports a disallowed code (and 1014) as a 1002 close
/// rather than an error, while we refuse the first and accept 1014.
#[test]
fn difference_close_codes() {
    let refused = Seen::Close(Some((1002, "Protocol violation".to_owned())));
    let invalid = masked_frame(0x88, &[0x03, 0xEC]); // 1004
    let ours = run_ringcast(&invalid, &[usize::MAX]);
    assert_eq!(ours.error, Some(ProtocolError::InvalidCloseCode(1004)));
    let theirs = run_tungstenite_server(&invalid);
    assert_eq!(theirs.events, std::slice::from_ref(&refused));
    let bad_gateway = masked_frame(0x88, &[0x03, 0xF6]); // 1014
    let ours = run_ringcast(&bad_gateway, &[usize::MAX]);
    assert_eq!(ours.events, [Seen::Close(Some((1014, String::new())))]);
    assert_eq!(run_tungstenite_server(&bad_gateway).events, [refused]);
}

/// Proves difference 4: a ping of 5 bytes with a 16-bit length is refused here, read there.
#[test]
fn difference_non_minimal_control_length() {
    let spec = FrameSpec {
        length_encoding: LengthEncoding::Extended16,
        ..FrameSpec::new(OpCode::Ping as u8, true, b"hello".to_vec(), [1, 2, 3, 4])
    };
    let mut frame = Vec::new();
    spec.encode(&mut frame);
    let ours = run_ringcast(&frame, &[usize::MAX]);
    assert_eq!(ours.error, Some(ProtocolError::ControlFrameTooLong(126)));
    let theirs = run_tungstenite_server(&frame);
    assert_eq!(theirs.events, [Seen::Ping(b"hello".to_vec())]);
}

/// Proves a control frame whose head ends a read, its payload coming whole in the next read,
/// hands its pooled buffer back (found by `agrees_with_tungstenite`: the session used to drop a
/// buffer it had taken for the empty first piece, so the pool lost a buffer for good).
#[test]
fn control_frame_split_after_its_head_returns_its_buffer() {
    let ping = masked_frame(0x89, b"x");
    let head_bytes = ping.len() - 1;
    let ours = run_ringcast(&ping, &[head_bytes, 1]);
    assert_eq!(ours.events, [Seen::Ping(b"x".to_vec())]);
    assert_eq!(ours.error, None);
}

// ---------------------------------------------------------------------------------------------
// Round trips.

fn data_message_strategy() -> impl Strategy<Value = Seen> {
    let large_binary = (65_530usize..65_545, any::<u8>()).prop_map(|(length, seed)| {
        (0..length)
            .map(|index| (index as u8).wrapping_mul(31) ^ seed)
            .collect()
    });
    prop_oneof![
        4 => "\\PC{0,80}".prop_map(Seen::Text),
        4 => vec(any::<u8>(), 0..300).prop_map(Seen::Binary),
        1 => ("\\PC{1,16}", 200usize..70_000)
            .prop_map(|(piece, length)| Seen::Text(piece.repeat(length / piece.len() + 1))),
        1 => large_binary.prop_map(Seen::Binary),
    ]
}

/// Splits a message payload at the given cuts (any byte, even inside a code point).
fn fragments<'a>(payload: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut offsets: Vec<usize> = cuts
        .iter()
        .map(|cut| cut.index(payload.len() + 1))
        .collect();
    offsets.sort_unstable();
    offsets.push(payload.len());
    let mut start = 0;
    offsets
        .into_iter()
        .map(|end| {
            let fragment = &payload[start..end];
            start = end;
            fragment
        })
        .collect()
}

fn data_parts(message: &Seen) -> (OpCode, &[u8]) {
    match message {
        Seen::Text(text) => (OpCode::Text, text.as_bytes()),
        Seen::Binary(bytes) => (OpCode::Binary, bytes),
        other => unreachable!("not a data message: {other:?}"),
    }
}

/// A masked client frame whose head comes from our encoder (`FrameHead::encode`).
fn client_frame(opcode: OpCode, fin: bool, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    ringcast::protocol::websocket::frame::encode_masked_frame(opcode, fin, payload, mask, out);
}

/// A close code the server may send and the reason it gives.
fn server_close_strategy() -> impl Strategy<Value = (u16, String)> {
    let codes = vec![
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1013, 3000, 4999,
    ];
    (select(codes), "\\PC{0,60}")
}

/// The reason as `encode_close_frame` must cut it: whole characters within 123 bytes.
fn reason_within_limit(reason: &str) -> String {
    let mut kept = String::new();
    for character in reason.chars() {
        if kept.len() + character.len_utf8() > 123 {
            break;
        }
        kept.push(character);
    }
    kept
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES / 2))]

    /// Proves random messages, encoded as masked client frames with our head encoder, cut into
    /// random fragments with pings between them and read in random sizes, come back unchanged.
    #[test]
    fn client_frames_round_trip_through_session(
        messages in vec((data_message_strategy(), vec(any::<Index>(), 0..4)), 1..5),
        mask in any::<[u8; 4]>(),
        read_sizes in read_sizes_strategy(),
    ) {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for (message_index, (message, cuts)) in messages.iter().enumerate() {
            let (opcode, payload) = data_parts(message);
            let pieces = fragments(payload, cuts);
            for (piece_index, piece) in pieces.iter().enumerate() {
                let opcode = if piece_index == 0 { opcode } else { OpCode::Continuation };
                let fin = piece_index + 1 == pieces.len();
                client_frame(opcode, fin, piece, mask, &mut input);
                if !fin {
                    let ping = [message_index as u8, piece_index as u8];
                    client_frame(OpCode::Ping, true, &ping, mask, &mut input);
                    expected.push(Seen::Ping(ping.to_vec()));
                }
            }
            expected.push(message.clone());
        }
        let config = ProtocolLimits::default();
        let mut pool = BufferPool::new(&PoolLimits::default());
        let mut session = Session::new();
        let mut events = Vec::new();
        let mut start = 0;
        for &read_size in read_sizes.iter().cycle() {
            if start == input.len() {
                break;
            }
            let end = start.saturating_add(read_size).min(input.len());
            let mut read = input[start..end].to_vec();
            let mut reader = session.handle_read(&mut read, &mut pool, &config);
            while let Some(result) = reader.next_event() {
                events.push(Seen::from_event(&result.expect("valid frames")));
            }
            drop(reader);
            start = end;
        }
        prop_assert_eq!(events, expected);
    }

    /// Proves our server frames (`encode_frame`, `encode_close_frame`), fragmented at random,
    /// read as the same messages in tungstenite acting as the client.
    #[test]
    fn server_frames_parse_in_tungstenite(
        messages in vec((data_message_strategy(), vec(any::<Index>(), 0..4)), 1..5),
        ping in vec(any::<u8>(), 0..=125),
        close in proptest::option::of(server_close_strategy()),
    ) {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for (message, cuts) in &messages {
            let (opcode, payload) = data_parts(message);
            let pieces = fragments(payload, cuts);
            for (piece_index, piece) in pieces.iter().enumerate() {
                let opcode = if piece_index == 0 { opcode } else { OpCode::Continuation };
                let fin = piece_index + 1 == pieces.len();
                input.extend_from_slice(&encode_frame(opcode, fin, piece));
            }
            expected.push(message.clone());
        }
        input.extend_from_slice(&encode_frame(OpCode::Ping, true, &ping));
        expected.push(Seen::Ping(ping));
        if let Some((code, reason)) = &close {
            input.extend_from_slice(&encode_close_frame(*code, reason));
            expected.push(Seen::Close(Some((*code, reason_within_limit(reason)))));
        }
        let theirs = run_tungstenite(&input, Role::Client, WebSocketConfig::default(), 4096);
        prop_assert!(matches!(theirs.end, TungsteniteEnd::NeedMore), "{:?}", theirs.end);
        prop_assert_eq!(theirs.events, expected);
    }
}
