//! Reading client frames: ringcast's `Session` against tungstenite's `WebSocket` on the same
//! bytes, for a stream of small subscription messages (messages per second) and for a stream of
//! 64 KiB binary messages (bytes per second).
//!
//! Both sides are long-lived server connections fed in reads of at most 64 KiB, the size of one
//! provided receive buffer. Each side copies every read once: ringcast from the "kernel" bytes
//! into its reused receive buffer (as a recv completion would, and unmasking happens in place
//! there), tungstenite from its stream into its own read buffer. Nothing is rebuilt per
//! iteration: the session and the tungstenite socket persist, and only the stream's position is
//! rewound, so plain `iter` measures exactly the reading and no setup needs excluding.

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcast::protocol::ProtocolLimits;
use ringcast::protocol::pool::BufferPool;
use ringcast::protocol::pool::PoolLimits;
use ringcast::protocol::websocket::frame::{OpCode, encode_masked_frame};
use ringcast::protocol::websocket::session::{Event, Session};
use tungstenite::protocol::{Message, Role, WebSocket, WebSocketConfig};

/// One receive buffer's worth: the most either side gets per read.
const READ_BYTES_MAX: usize = 64 * 1024;
/// Small messages per iteration: about 104 KiB of frames, so two reads.
const SMALL_MESSAGE_COUNT: usize = 1_000;
const SMALL_MESSAGE_BYTES: usize = 100;
/// Large messages per iteration: 1 MiB of payload, each frame cut across reads.
const LARGE_MESSAGE_COUNT: usize = 16;
const LARGE_MESSAGE_BYTES: usize = 64 * 1024;

/// A client's subscription request padded with JSON whitespace to exactly 100 bytes, the size of
/// typical control traffic from market-data clients.
fn subscription_message() -> Vec<u8> {
    let mut message =
        br#"{"op":"subscribe","id":4711,"topics":["AAPL","MSFT","NVDA","AMZN","GOOG","TSLA"]"#
            .to_vec();
    message.resize(SMALL_MESSAGE_BYTES - 1, b' ');
    message.push(b'}');
    message
}

/// Masked client frames carrying `payloads`, each with its own mask as browsers do.
fn client_stream<'a>(opcode: OpCode, payloads: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut stream = Vec::new();
    for (index, payload) in payloads.enumerate() {
        let mask = (index as u32).wrapping_mul(0x9E37_79B9).to_le_bytes();
        encode_masked_frame(opcode, true, payload, mask, &mut stream);
    }
    stream
}

/// A ringcast connection: session, the shard's pool and a reused receive buffer.
struct RingcastConnection {
    session: Session,
    pool: BufferPool,
    config: ProtocolLimits,
    read_buffer: Vec<u8>,
}

impl RingcastConnection {
    fn new() -> Self {
        Self {
            session: Session::new(),
            pool: BufferPool::new(&PoolLimits::default()),
            config: ProtocolLimits::default(),
            read_buffer: vec![0; READ_BYTES_MAX],
        }
    }

    /// Reads the whole stream as recv completions of at most 64 KiB; returns the message count.
    fn read_all(&mut self, stream: &[u8]) -> usize {
        let mut message_count = 0;
        for received in stream.chunks(READ_BYTES_MAX) {
            let read = &mut self.read_buffer[..received.len()];
            read.copy_from_slice(received);
            let mut reader = self.session.handle_read(read, &mut self.pool, &self.config);
            while let Some(event) = reader.next_event() {
                match event {
                    Ok(Event::Message { payload, .. }) => {
                        black_box(payload);
                        message_count += 1;
                    }
                    other => panic!("unexpected event: {other:?}"),
                }
            }
        }
        message_count
    }
}

/// The bytes tungstenite reads, served at most 64 KiB per read; writes are discarded.
struct MemoryStream {
    input: Vec<u8>,
    position: usize,
}

impl Read for MemoryStream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let remaining = &self.input[self.position..];
        if remaining.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let count = remaining.len().min(buffer.len()).min(READ_BYTES_MAX);
        buffer[..count].copy_from_slice(&remaining[..count]);
        self.position += count;
        Ok(count)
    }
}

impl Write for MemoryStream {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A tungstenite server connection with our default limits and its default read buffer.
fn tungstenite_connection(stream: Vec<u8>) -> WebSocket<MemoryStream> {
    let limits = ProtocolLimits::default();
    let config = WebSocketConfig::default()
        .max_frame_size(Some(limits.frame_bytes_max))
        .max_message_size(Some(limits.message_bytes_max))
        .accept_unmasked_frames(false);
    let stream = MemoryStream {
        input: stream,
        position: 0,
    };
    WebSocket::from_raw_socket(stream, Role::Server, Some(config))
}

/// Rewinds the stream and reads `message_count` messages from it.
fn tungstenite_read_all(websocket: &mut WebSocket<MemoryStream>, message_count: usize) -> usize {
    websocket.get_mut().position = 0;
    for _ in 0..message_count {
        match websocket.read().expect("valid frames") {
            Message::Text(text) => {
                black_box(text);
            }
            Message::Binary(payload) => {
                black_box(payload);
            }
            other => panic!("unexpected message: {other:?}"),
        }
    }
    message_count
}

fn compare(
    criterion: &mut Criterion,
    group_name: &str,
    throughput: Throughput,
    stream: Vec<u8>,
    message_count: usize,
) {
    let mut group = criterion.benchmark_group(group_name);
    group.throughput(throughput);
    let mut ringcast = RingcastConnection::new();
    assert_eq!(ringcast.read_all(&stream), message_count);
    group.bench_function("ringcast", |bencher| {
        bencher.iter(|| ringcast.read_all(black_box(&stream)))
    });
    let mut websocket = tungstenite_connection(stream);
    group.bench_function("tungstenite", |bencher| {
        bencher.iter(|| tungstenite_read_all(&mut websocket, message_count))
    });
    group.finish();
}

fn small_text_frames(criterion: &mut Criterion) {
    let message = subscription_message();
    assert_eq!(message.len(), SMALL_MESSAGE_BYTES);
    let payloads = std::iter::repeat_n(&message[..], SMALL_MESSAGE_COUNT);
    let stream = client_stream(OpCode::Text, payloads);
    let throughput = Throughput::Elements(SMALL_MESSAGE_COUNT as u64);
    compare(
        criterion,
        "text_100_bytes",
        throughput,
        stream,
        SMALL_MESSAGE_COUNT,
    );
}

fn large_binary_frames(criterion: &mut Criterion) {
    let payload: Vec<u8> = (0..LARGE_MESSAGE_BYTES)
        .map(|index| (index * 7) as u8)
        .collect();
    let payloads = std::iter::repeat_n(&payload[..], LARGE_MESSAGE_COUNT);
    let stream = client_stream(OpCode::Binary, payloads);
    let throughput = Throughput::Bytes(stream.len() as u64);
    compare(
        criterion,
        "binary_64_kib",
        throughput,
        stream,
        LARGE_MESSAGE_COUNT,
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = small_text_frames, large_binary_frames
}
criterion_main!(benches);
