//! Proves the shard's hot path allocates nothing after warm-up: with a counting global allocator
//! in this process, an in-process echo server receives, parses, encodes and sends 20,000
//! messages with zero heap allocations, and a two-shard broker numbers, keeps in history and
//! fans out 5,000 publishes to 4 and then 16 subscribers with zero heap allocations. Each
//! message has a buffer of its own (so that an old message in history or a stalled queue
//! holds only its own bytes, which is what the budgets count), taken from the owner shard's
//! message pool and returned to it by whichever shard lets go of the message last. The client
//! is a raw socket with buffers prepared before counting starts, so every allocation counted
//! would be the server's. With permessage-deflate on, the same holds while publishes arrive
//! compressed (inflated by the shard's pooled inflaters) and go out compressed once per shard
//! to compressing subscribers beside plain ones (the client's own inflater is made and warmed
//! before counting).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use flate2::{Decompress, FlushDecompress};
use ringcast::config::{BrokerConfig, ServerConfig};
use ringcast::protocol::ProtocolLimits;
use ringcast::protocol::websocket::deflate::{Compressor, SYNC_FLUSH_TRAILER, WINDOW_BITS_MAX};
use ringcast::protocol::websocket::frame::{
    OpCode, encode_masked_frame, encode_masked_frame_with_rsv1,
};
use ringcast::server::Server;

struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator; the counters are atomics.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: `pointer` came from `System.alloc` with this layout.
        unsafe { System.dealloc(pointer, layout) }
    }
    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The two tests share the counters: they take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn count() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

const MESSAGE: &[u8] = br#"{"topic":"AAPL","px":191.2}"#;

/// Sends `rounds` messages one at a time and reads each echo, with no allocation of its own.
fn echo_rounds(stream: &mut TcpStream, frame: &[u8], echo: &mut [u8], rounds: usize) {
    for _ in 0..rounds {
        stream.write_all(frame).unwrap();
        stream.read_exact(echo).unwrap();
        assert_eq!(&echo[2..], MESSAGE);
    }
}

/// Proves zero heap allocations in the server while it echoes 20,000 messages after warm-up.
#[test]
fn echo_hot_path_allocates_nothing_after_warm_up() {
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 1,
        echo: true,
        ..ServerConfig::default()
    };
    let server = Server::start(config).unwrap();
    let mut stream = TcpStream::connect(server.local_address()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let mut frame = Vec::new();
    encode_masked_frame(OpCode::Text, true, MESSAGE, [1, 2, 3, 4], &mut frame);
    let mut echo = vec![0u8; 2 + MESSAGE.len()];
    // Warm-up: queues, pools and the encoder's arena reach their working size.
    echo_rounds(&mut stream, &frame, &mut echo, 20_000);
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    echo_rounds(&mut stream, &frame, &mut echo, 20_000);
    COUNTING.store(false, Ordering::SeqCst);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
    drop(stream);
    server.shutdown().unwrap();
    assert_eq!(
        allocations, 0,
        "heap allocations while echoing 20,000 messages"
    );
}

/// Upgrades a raw client at `/ws`, without allocating after the call returns.
fn upgrade(stream: &mut TcpStream) {
    upgrade_offering(stream, "");
}

/// Upgrades a raw client at `/ws` with `extension_lines` (whole header lines) in the request.
fn upgrade_offering(stream: &mut TcpStream, extension_lines: &str) {
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         {extension_lines}\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut tail = [0u8; 4];
    while &tail != b"\r\n\r\n" {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).unwrap();
        tail.rotate_left(1);
        tail[3] = byte[0];
    }
}

/// Reads one unmasked text frame shorter than 126 bytes into `buffer`; returns its payload.
fn read_small_frame<'a>(stream: &mut TcpStream, buffer: &'a mut [u8; 128]) -> &'a [u8] {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x81, "a final text frame");
    let length = usize::from(head[1]);
    assert!(length < 126);
    stream.read_exact(&mut buffer[..length]).unwrap();
    &buffer[..length]
}

/// Publishes `rounds` messages and reads each from every subscriber, allocating nothing itself.
fn fanout_rounds(
    publisher: &mut TcpStream,
    frame: &[u8],
    subscribers: &mut [TcpStream],
    rounds: usize,
) {
    let mut buffer = [0u8; 128];
    for _ in 0..rounds {
        publisher.write_all(frame).unwrap();
        for subscriber in subscribers.iter_mut() {
            let payload = read_small_frame(subscriber, &mut buffer);
            assert!(payload.starts_with(br#"{"topic":"AAPL","seq":"#));
        }
    }
}

/// Subscribes `count` new raw clients to AAPL.
fn subscribers(address: std::net::SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut subscribers: Vec<TcpStream> = (0..count)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    let mut subscribe = Vec::new();
    let request = br#"{"op":"subscribe","topics":["AAPL"]}"#;
    encode_masked_frame(OpCode::Text, true, request, [9, 8, 7, 6], &mut subscribe);
    let mut buffer = [0u8; 128];
    for subscriber in &mut subscribers {
        upgrade(subscriber);
        subscriber.write_all(&subscribe).unwrap();
        let reply = read_small_frame(subscriber, &mut buffer);
        assert!(reply.starts_with(br#"{"op":"subscribed""#));
    }
    subscribers
}

/// Counts the heap allocations of `rounds` publishes fanned out to `subscribers`.
fn count_fanout(
    publisher: &mut TcpStream,
    frame: &[u8],
    subscribers: &mut [TcpStream],
    rounds: usize,
) -> u64 {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    fanout_rounds(publisher, frame, subscribers, rounds);
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

/// Proves zero heap allocations in a two-shard broker while it numbers, keeps and fans out
/// 5,000 publishes after warm-up (history on, so the oldest message is evicted as each new one
/// is kept; subscribers on both shards with near certainty), with 4 subscribers and with 16.
#[test]
fn fanout_hot_path_allocates_nothing_after_warm_up() {
    const ROUNDS: usize = 5_000;
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        broker: BrokerConfig {
            history_messages_max: 256,
            ..BrokerConfig::default()
        },
        // The subscribers never send: on a loaded machine the rounds outlast the default 30 s
        // idle timeout, and the reader expects text frames, not the idle ping.
        idle_timeout_ms: 600_000,
        ..ServerConfig::default()
    };
    let server = Server::start(config).unwrap();
    let address = server.local_address();
    let mut subscribers = subscribers(address, 4);
    let mut publisher = TcpStream::connect(address).unwrap();
    upgrade(&mut publisher);
    let mut frame = Vec::new();
    let publish = br#"{"op":"publish","topic":"AAPL","data":{"px":191.2}}"#;
    encode_masked_frame(OpCode::Text, true, publish, [1, 2, 3, 4], &mut frame);
    // Warm-up: history fills, queues and arenas reach their working size.
    fanout_rounds(&mut publisher, &frame, &mut subscribers, ROUNDS);
    let with_four = count_fanout(&mut publisher, &frame, &mut subscribers, ROUNDS);
    subscribers.extend(self::subscribers(address, 12));
    fanout_rounds(&mut publisher, &frame, &mut subscribers, ROUNDS);
    let with_sixteen = count_fanout(&mut publisher, &frame, &mut subscribers, ROUNDS);
    drop(publisher);
    drop(subscribers);
    server.shutdown().unwrap();
    assert_eq!(
        (with_four, with_sixteen),
        (0, 0),
        "heap allocations for {ROUNDS} publishes to 4 and to 16 subscribers"
    );
}

/// The extension line a compressing client sends.
const DEFLATE_OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate\r\n";

/// A subscriber's socket, with what it needs to read compressed frames without allocating:
/// an inflater and an output buffer made (and the inflater's window allocated) before counting.
struct Subscriber {
    stream: TcpStream,
    inflater: Option<(Decompress, Vec<u8>)>,
    /// Compressed frames read so far.
    compressed_count: usize,
}

impl Subscriber {
    fn new(address: std::net::SocketAddr, compressing: bool) -> Subscriber {
        let mut stream = TcpStream::connect(address).unwrap();
        upgrade_offering(&mut stream, if compressing { DEFLATE_OFFER } else { "" });
        let mut subscribe = Vec::new();
        let request = br#"{"op":"subscribe","topics":["AAPL"]}"#;
        encode_masked_frame(OpCode::Text, true, request, [9, 8, 7, 6], &mut subscribe);
        stream.write_all(&subscribe).unwrap();
        let inflater = compressing.then(|| {
            (
                Decompress::new_with_window_bits(false, 15),
                Vec::with_capacity(4096),
            )
        });
        let mut subscriber = Subscriber {
            stream,
            inflater,
            compressed_count: 0,
        };
        let mut buffer = [0u8; 128];
        subscriber.read_message(&mut buffer, |reply| {
            assert!(reply.starts_with(br#"{"op":"subscribed""#));
        });
        subscriber
    }

    /// Reads one small text frame, inflating it when it is compressed, and checks the message.
    fn read_message(&mut self, buffer: &mut [u8; 128], check: impl Fn(&[u8])) {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).unwrap();
        let length = usize::from(head[1]);
        assert!(length < 126);
        self.stream.read_exact(&mut buffer[..length]).unwrap();
        match (head[0], &mut self.inflater) {
            (0x81, _) => check(&buffer[..length]),
            (0xC1, Some((inflater, out))) => {
                inflater.reset(false);
                out.clear();
                for piece in [&buffer[..length], &SYNC_FLUSH_TRAILER[..]] {
                    inflater
                        .decompress_vec(piece, out, FlushDecompress::Sync)
                        .unwrap();
                }
                check(out);
                self.compressed_count += 1;
            }
            (first, _) => panic!("unexpected frame head {first:#x}"),
        }
    }
}

/// Publishes `rounds` compressed messages and reads each from every subscriber.
fn compressed_fanout_rounds(
    publisher: &mut TcpStream,
    frame: &[u8],
    subscribers: &mut [Subscriber],
    rounds: usize,
) {
    let mut buffer = [0u8; 128];
    for _ in 0..rounds {
        publisher.write_all(frame).unwrap();
        for subscriber in subscribers.iter_mut() {
            subscriber.read_message(&mut buffer, |message| {
                assert!(message.starts_with(br#"{"topic":"AAPL","seq":"#));
            });
        }
    }
}

/// Proves zero heap allocations in a two-shard compressing broker while a publisher sends
/// 5,000 compressed publishes after warm-up and they fan out compressed to 6 compressing
/// subscribers and plain to 2: inflaters are lent from the pool, each message is compressed
/// once per shard into a pooled buffer, and the compressor's output buffer is reused.
#[test]
fn compressed_fanout_hot_path_allocates_nothing_after_warm_up() {
    const ROUNDS: usize = 5_000;
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        protocol: ProtocolLimits {
            websocket_compression: true,
            // The messages are short: every one is compressed, so every delivery counts.
            compression_message_bytes_min: 0,
            ..ProtocolLimits::default()
        },
        broker: BrokerConfig {
            history_messages_max: 256,
            ..BrokerConfig::default()
        },
        idle_timeout_ms: 600_000,
        ..ServerConfig::default()
    };
    let server = Server::start(config).unwrap();
    let address = server.local_address();
    let mut subscribers: Vec<Subscriber> = (0..8)
        .map(|index| Subscriber::new(address, index % 4 != 0))
        .collect();
    let mut publisher = TcpStream::connect(address).unwrap();
    upgrade_offering(&mut publisher, DEFLATE_OFFER);
    let publish = br#"{"op":"publish","topic":"AAPL","data":{"px":191.2,"bid":191.1}}"#;
    let mut compressed = Vec::new();
    Compressor::new(6, WINDOW_BITS_MAX).compress(publish, &mut compressed);
    let mut frame = Vec::new();
    encode_masked_frame_with_rsv1(
        OpCode::Text,
        true,
        true,
        &compressed,
        [1, 2, 3, 4],
        &mut frame,
    );
    // Warm-up: history, queues, arenas, pools and the inflaters reach their working size.
    compressed_fanout_rounds(&mut publisher, &frame, &mut subscribers, ROUNDS);
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    compressed_fanout_rounds(&mut publisher, &frame, &mut subscribers, ROUNDS);
    COUNTING.store(false, Ordering::SeqCst);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
    let compressed_counts: Vec<usize> = subscribers
        .iter()
        .map(|subscriber| subscriber.compressed_count)
        .collect();
    drop(publisher);
    drop(subscribers);
    server.shutdown().unwrap();
    assert_eq!(
        compressed_counts,
        // Every compressing subscriber read the warm-up and the counted rounds compressed.
        [0, 1, 1, 1, 0, 1, 1, 1].map(|compressing| compressing * 2 * ROUNDS),
        "compressing subscribers read only compressed messages"
    );
    assert_eq!(
        allocations, 0,
        "heap allocations for {ROUNDS} compressed publishes to 8 subscribers"
    );
}
