//! Unmasking throughput: each of our implementations in place, our dispatched path with the copy
//! out of a receive buffer, and tungstenite's public paths that run its mask routine.
//!
//! tungstenite keeps `apply_mask` private, so it is measured through public calls:
//! - `tungstenite_websocket_read`: a server-role `WebSocket::read` of one masked binary frame.
//!   It copies the frame into its read buffer, unmasks it and wraps it as a message.
//! - `tungstenite_frame_socket_read`: `FrameSocket::read`, the same copy without the unmasking
//!   (it hands the payload back still masked), so the gap to the row above is tungstenite's
//!   unmasking plus message handling.
//! - `tungstenite_format_masked`: `Frame::format` with a mask set, the client's send path: mask
//!   the payload in place, then copy it out.
//!
//! `ringcast_copy_unmask` is our like-for-like: copy the payload out of a receive buffer, then
//! unmask it with `apply_mask`.

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use ringcast::protocol::OpCode;
use ringcast::protocol::websocket::frame::{FrameHead, HEAD_BYTES_MAX};
use ringcast::protocol::websocket::mask;
use tungstenite::protocol::frame::coding::{Data, OpCode as TungsteniteOpCode};
use tungstenite::protocol::frame::{Frame, FrameSocket};
use tungstenite::protocol::{Role, WebSocket};

/// The key from the RFC 6455 §5.7 examples.
const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

/// A tiny message, a maximal control payload, a typical batch, a large batch that lives in L2,
/// and a payload past L2.
const PAYLOAD_SIZES_BYTES: [usize; 5] = [16, 125, 1024, 64 * 1024, 1024 * 1024];

/// Our buffers start this far past a 64-byte boundary, as a payload does behind a frame head in
/// a receive buffer; an allocator's alignment would flatter the vector loops.
const PAYLOAD_START_BYTES: usize = 6;

type MaskFunction = fn(&mut [u8], [u8; 4], usize);

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
        .configure_from_args();
    for payload_bytes in PAYLOAD_SIZES_BYTES {
        let mut group = criterion.benchmark_group(format!("unmask/{}", size_label(payload_bytes)));
        group.throughput(Throughput::Bytes(payload_bytes as u64));
        let payload = test_payload(payload_bytes);
        bench_in_place(&mut group, &payload);
        bench_copy_unmask(&mut group, &payload);
        bench_tungstenite(&mut group, &payload);
        group.finish();
    }
    criterion.final_summary();
}

fn size_label(payload_bytes: usize) -> String {
    match payload_bytes {
        bytes if bytes >= 1024 * 1024 => format!("{}MiB", bytes / (1024 * 1024)),
        bytes if bytes >= 1024 => format!("{}KiB", bytes / 1024),
        bytes => format!("{bytes}B"),
    }
}

fn test_payload(payload_bytes: usize) -> Vec<u8> {
    (0..payload_bytes)
        .map(|index| (index * 131 % 251) as u8)
        .collect()
}

/// Our implementations, each masking the same buffer over and over in place.
fn bench_in_place(group: &mut BenchmarkGroup<'_, WallTime>, payload: &[u8]) {
    let mut functions: Vec<(&str, MaskFunction)> = vec![
        ("reference", mask::apply_mask_reference),
        ("word", mask::apply_mask_word),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        functions.push(("sse2", mask::apply_mask_sse2));
        if std::is_x86_feature_detected!("avx2") {
            functions.push(("avx2", mask::apply_mask_avx2));
        }
    }
    functions.push(("apply_mask", mask::apply_mask));
    let mut backing = vec![0; payload.len() + 2 * 64];
    let buffer = misaligned_slice(&mut backing, payload.len());
    buffer.copy_from_slice(payload);
    for (name, function) in functions {
        group.bench_function(name, |bencher| {
            bencher.iter(|| function(black_box(&mut *buffer), black_box(MASK), black_box(0)));
        });
    }
}

/// Copies a masked payload out of a receive buffer into a message buffer and unmasks it there.
fn bench_copy_unmask(group: &mut BenchmarkGroup<'_, WallTime>, payload: &[u8]) {
    let mut receive_backing = vec![0; payload.len() + 2 * 64];
    let receive_buffer = misaligned_slice(&mut receive_backing, payload.len());
    receive_buffer.copy_from_slice(&masked(payload));
    let mut destination = vec![0; payload.len()];
    group.bench_function("ringcast_copy_unmask", |bencher| {
        bencher.iter(|| {
            destination.copy_from_slice(black_box(&*receive_buffer));
            mask::apply_mask(&mut destination, MASK, 0);
            black_box(&destination);
        });
    });
}

/// `payload_bytes` of `backing`, starting [`PAYLOAD_START_BYTES`] past a 64-byte boundary.
fn misaligned_slice(backing: &mut [u8], payload_bytes: usize) -> &mut [u8] {
    let start = backing.as_ptr().align_offset(64) + PAYLOAD_START_BYTES;
    &mut backing[start..start + payload_bytes]
}

/// tungstenite's public paths that reach its private `apply_mask`.
fn bench_tungstenite(group: &mut BenchmarkGroup<'_, WallTime>, payload: &[u8]) {
    // Long-lived sockets reading the same frame over and over, as a server connection does:
    // their buffers are allocated once and reused, so the figures show copying and unmasking,
    // not allocation and page faults.
    let frame_bytes = masked_frame(payload);
    let stream = RepeatingStream::new(frame_bytes.clone());
    let mut websocket = WebSocket::from_raw_socket(stream.clone(), Role::Server, None);
    group.bench_function("tungstenite_websocket_read", |bencher| {
        bencher.iter(|| websocket.read().expect("a masked binary frame"));
    });
    let mut frame_socket = FrameSocket::new(stream);
    group.bench_function("tungstenite_frame_socket_read", |bencher| {
        bencher.iter(|| {
            frame_socket
                .read(None)
                .expect("a valid frame")
                .expect("a whole frame")
        });
    });
    // `Frame::format` consumes its frame, so each one is built outside the timing; the output
    // buffer is reused.
    let mut output = Vec::with_capacity(frame_bytes.len());
    group.bench_function("tungstenite_format_masked", |bencher| {
        bencher.iter_batched(
            || masked_tungstenite_frame(payload),
            |frame| {
                output.clear();
                frame
                    .format(&mut output)
                    .expect("writing to a Vec cannot fail");
                black_box(&output);
            },
            batch_size(payload.len()),
        );
    });
}

/// Small inputs are built many per batch; large ones one at a time, so that a batch of set-up
/// copies does not push the data under test out of the caches.
fn batch_size(payload_bytes: usize) -> BatchSize {
    if payload_bytes <= 64 * 1024 {
        BatchSize::SmallInput
    } else {
        BatchSize::LargeInput
    }
}

fn masked(payload: &[u8]) -> Vec<u8> {
    let mut masked_payload = payload.to_vec();
    mask::apply_mask_reference(&mut masked_payload, MASK, 0);
    masked_payload
}

/// One final binary frame carrying `payload`, masked as a client sends it.
fn masked_frame(payload: &[u8]) -> Vec<u8> {
    let head = FrameHead {
        fin: true,
        rsv1: false,
        opcode: OpCode::Binary,
        mask: Some(MASK),
        payload_bytes: payload.len() as u64,
        head_bytes: 0,
    };
    let mut head_buffer = [0; HEAD_BYTES_MAX];
    let head_bytes = head.encode(&mut head_buffer);
    let mut frame = head_buffer[..head_bytes].to_vec();
    frame.extend_from_slice(&masked(payload));
    frame
}

fn masked_tungstenite_frame(payload: &[u8]) -> Frame {
    let opcode = TungsteniteOpCode::Data(Data::Binary);
    let mut frame = Frame::message(Bytes::from(payload.to_vec()), opcode, true);
    frame.header_mut().mask = Some(MASK);
    frame
}

/// An endless socket that always has data: every read fills the whole buffer with back-to-back
/// copies of `frame`. This is a reader's best case, with its per-read costs (tungstenite zeroes
/// the free part of its read buffer before each read) shared by as many frames as fit.
#[derive(Clone)]
struct RepeatingStream {
    frame: Vec<u8>,
    position: usize,
}

impl RepeatingStream {
    fn new(frame: Vec<u8>) -> RepeatingStream {
        assert!(!frame.is_empty(), "a frame has at least a head");
        RepeatingStream { frame, position: 0 }
    }
}

impl Read for RepeatingStream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let mut filled_bytes = 0;
        while filled_bytes < buffer.len() {
            let remaining = &self.frame[self.position..];
            let count = remaining.len().min(buffer.len() - filled_bytes);
            buffer[filled_bytes..filled_bytes + count].copy_from_slice(&remaining[..count]);
            filled_bytes += count;
            self.position = (self.position + count) % self.frame.len();
        }
        Ok(filled_bytes)
    }
}

/// The server never answers a binary frame, but `WebSocket` wants a writable stream.
impl Write for RepeatingStream {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        Ok(buffer.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
