//! Proves the shard's hot path allocates nothing after warm-up: with a counting global allocator
//! in this process, an in-process echo server receives, parses, encodes and sends 20,000
//! messages with zero heap allocations. The client is a raw socket with buffers prepared before
//! counting starts, so every allocation counted would be the server's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ringcast::config::ServerConfig;
use ringcast::protocol::frame::{OpCode, encode_masked_frame};
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
    COUNTING.store(true, Ordering::SeqCst);
    echo_rounds(&mut stream, &frame, &mut echo, 20_000);
    COUNTING.store(false, Ordering::SeqCst);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst);
    drop(stream);
    server.shutdown().unwrap();
    assert_eq!(
        allocations, 0,
        "heap allocations while echoing 20,000 messages"
    );
}
