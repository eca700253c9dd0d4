//! Messages through the real server in echo mode: every size class of the frame length, messages
//! fragmented and pipelined, control frames in between, and the message limit.

mod support;

use support::server::{
    OPCODE_BINARY, OPCODE_CLOSE, OPCODE_CONTINUATION, OPCODE_PING, OPCODE_PONG, OPCODE_TEXT,
    RawClient, ServerProcess, client_frame, connect_websocket, mask_from, masked_frame,
};
use tungstenite::{Bytes, Message};

/// Sizes at each edge of the frame length encodings (7-bit, 16-bit, 64-bit), a message larger
/// than many receive buffers, and the 16 MiB that --echo admits.
const MESSAGE_SIZES: [usize; 8] = [0, 1, 125, 126, 65_535, 65_536, 1 << 20, 16 << 20];

/// Text of exactly `length` bytes mixing one- to four-byte characters, so that characters
/// straddle the server's receive buffer boundaries and its UTF-8 check must carry state across.
fn text_of_length(length: usize) -> String {
    let characters = ['a', 'é', '€', '𝄞', 'z'];
    let mut text = String::with_capacity(length);
    for character in characters.iter().cycle() {
        let left = length - text.len();
        if left == 0 {
            break;
        }
        text.push(if character.len_utf8() <= left {
            *character
        } else {
            'a'
        });
    }
    text
}

fn binary_of_length(length: usize) -> Vec<u8> {
    (0..length)
        .map(|index| (index.wrapping_mul(31) + 7) as u8)
        .collect()
}

/// Proves text and binary messages of every size up to 16 MiB come back unchanged.
#[test]
fn echoes_text_and_binary_of_every_size() {
    let server = ServerProcess::start(&["--echo"]);
    let mut socket = connect_websocket(server.address, "/any/path");
    for size in MESSAGE_SIZES {
        let text = text_of_length(size);
        assert_eq!(text.len(), size);
        socket.send(Message::text(text.clone())).unwrap();
        match socket.read().unwrap() {
            Message::Text(echoed) => assert!(echoed.as_str() == text, "text of {size} bytes"),
            other => panic!("text of {size} bytes: got {other:?}"),
        }
        let binary = binary_of_length(size);
        socket.send(Message::binary(binary.clone())).unwrap();
        match socket.read().unwrap() {
            Message::Binary(echoed) => assert!(echoed[..] == binary[..], "binary of {size} bytes"),
            other => panic!("binary of {size} bytes: got {other:?}"),
        }
    }
}

/// Proves a ping is answered with a pong carrying the same payload, empty and full (125 bytes).
#[test]
fn ping_is_answered_with_the_same_payload() {
    let server = ServerProcess::start(&["--echo"]);
    let mut socket = connect_websocket(server.address, "/");
    for payload in [Vec::new(), b"market open".to_vec(), vec![0xA5; 125]] {
        socket
            .send(Message::Ping(Bytes::from(payload.clone())))
            .unwrap();
        assert_eq!(socket.read().unwrap(), Message::Pong(Bytes::from(payload)));
    }
}

/// Proves a ping between fragments is answered before the message ends, then echoed as one.
#[test]
fn ping_between_fragments_is_answered_before_the_message_ends() {
    let server = ServerProcess::start(&["--echo"]);
    let mut client = RawClient::upgraded(server.address, "/");
    client.send_frame(OPCODE_TEXT, false, "first ".as_bytes());
    client.send_frame(OPCODE_CONTINUATION, false, "sécond ".as_bytes());
    client.send_frame(OPCODE_PING, true, b"between");
    let pong = client.read_frame();
    assert_eq!(
        (pong.opcode, pong.payload),
        (OPCODE_PONG, b"between".to_vec())
    );
    client.send_frame(OPCODE_CONTINUATION, true, "third".as_bytes());
    let message = client.read_frame();
    assert!(message.fin);
    assert_eq!(message.opcode, OPCODE_TEXT);
    assert_eq!(message.payload, "first sécond third".as_bytes());
}

/// Proves fragments and a ping sent in one write come back as the pong, then the message.
#[test]
fn fragments_and_ping_in_one_write_come_back_in_order() {
    let server = ServerProcess::start(&["--echo"]);
    let mut client = RawClient::upgraded(server.address, "/");
    let mut bytes = client_frame(OPCODE_TEXT, false, b"one-");
    bytes.extend(client_frame(OPCODE_CONTINUATION, false, b"two-"));
    bytes.extend(client_frame(OPCODE_PING, true, b"ping"));
    bytes.extend(client_frame(OPCODE_CONTINUATION, true, b"three"));
    client.write(&bytes);
    let pong = client.read_frame();
    assert_eq!((pong.opcode, pong.payload), (OPCODE_PONG, b"ping".to_vec()));
    let message = client.read_frame();
    assert!(message.fin);
    assert_eq!(
        (message.opcode, message.payload),
        (OPCODE_TEXT, b"one-two-three".to_vec())
    );
}

/// Proves many messages pipelined in one write are all echoed, in order, with their kinds.
#[test]
fn pipelined_messages_are_echoed_in_order() {
    const MESSAGE_COUNT: usize = 500;
    let server = ServerProcess::start(&["--echo"]);
    let mut client = RawClient::upgraded(server.address, "/");
    let messages: Vec<(u8, Vec<u8>)> = (0..MESSAGE_COUNT)
        .map(|index| {
            let opcode = if index % 2 == 0 {
                OPCODE_TEXT
            } else {
                OPCODE_BINARY
            };
            let payload = format!("message {index} {}", "x".repeat(index % 300)).into_bytes();
            (opcode, payload)
        })
        .collect();
    let mut bytes = Vec::new();
    for (index, (opcode, payload)) in messages.iter().enumerate() {
        bytes.extend(masked_frame(
            0x80 | opcode,
            payload,
            mask_from(index as u32),
        ));
    }
    client.write(&bytes);
    for (index, (opcode, payload)) in messages.iter().enumerate() {
        let frame = client.read_frame();
        assert_eq!(frame.opcode, *opcode, "message {index}: {frame:?}");
        assert!(frame.payload == *payload, "message {index}");
    }
}

/// Proves a frame over --frame-bytes-max closes the connection with 1009 (message too big).
#[test]
fn frame_over_the_limit_is_closed_with_1009() {
    let server = ServerProcess::start(&[
        "--echo",
        "--message-bytes-max",
        "1024",
        "--frame-bytes-max",
        "1024",
    ]);
    let mut client = RawClient::upgraded(server.address, "/");
    client.send_frame(OPCODE_BINARY, true, &[7; 1024]);
    assert_eq!(client.read_frame().payload, vec![7; 1024], "at the limit");
    client.send_frame(OPCODE_BINARY, true, &[7; 2000]);
    assert_eq!(client.read_close_code(), Some(1009));
    client.expect_eof();
}

/// Proves fragments that each fit but together exceed --message-bytes-max close with 1009.
#[test]
fn fragments_over_the_message_limit_are_closed_with_1009() {
    let server = ServerProcess::start(&[
        "--echo",
        "--message-bytes-max",
        "1024",
        "--frame-bytes-max",
        "1024",
    ]);
    let mut client = RawClient::upgraded(server.address, "/");
    client.send_frame(OPCODE_BINARY, false, &[1; 800]);
    client.send_frame(OPCODE_CONTINUATION, true, &[2; 800]);
    let frame = client.read_frame();
    assert_eq!(frame.opcode, OPCODE_CLOSE, "{frame:?}");
    assert_eq!(
        frame.close_code_and_reason().map(|(code, _)| code),
        Some(1009)
    );
    client.expect_eof();
}

/// Proves 2,000 empty messages (12 KiB) pipelined in one write are all echoed to a reading client.
#[test]
fn small_messages_pipelined_past_the_frame_limit_are_all_echoed() {
    const MESSAGE_COUNT: usize = 2_000;
    let server = ServerProcess::start(&["--echo"]);
    let mut client = RawClient::upgraded(server.address, "/");
    let bytes: Vec<u8> = (0..MESSAGE_COUNT)
        .flat_map(|index| masked_frame(0x80 | OPCODE_BINARY, &[], mask_from(index as u32)))
        .collect();
    client.write(&bytes);
    for index in 0..MESSAGE_COUNT {
        let frame = client.read_frame();
        assert_eq!(
            (frame.opcode, frame.payload.len()),
            (OPCODE_BINARY, 0),
            "message {index} of {MESSAGE_COUNT}: {frame:?}"
        );
    }
}

/// Proves reading pauses and resumes under a flood: 100,000 messages (about 3 MB) written by one
/// thread while another reads come back complete and in order, where a queue limit alone would
/// either close this client or grow without bound.
#[test]
fn a_flood_is_paced_by_backpressure_not_dropped() {
    const MESSAGE_COUNT: u32 = 100_000;
    let server = ServerProcess::start(&["--echo"]);
    let mut client = RawClient::upgraded(server.address, "/");
    let mut writer = client.stream.try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        use std::io::Write;
        let mut batch = Vec::new();
        for index in 0..MESSAGE_COUNT {
            let payload = format!("tick {index:08}");
            batch.extend(masked_frame(
                0x80 | OPCODE_TEXT,
                payload.as_bytes(),
                mask_from(index),
            ));
            if batch.len() > 64 * 1024 || index + 1 == MESSAGE_COUNT {
                writer.write_all(&batch).unwrap();
                batch.clear();
            }
        }
    });
    for index in 0..MESSAGE_COUNT {
        let frame = client.read_frame();
        assert_eq!(frame.opcode, OPCODE_TEXT, "message {index}: {frame:?}");
        assert_eq!(
            frame.payload,
            format!("tick {index:08}").as_bytes(),
            "message {index}"
        );
    }
    writing.join().unwrap();
    drop(client);
    let mut server = server;
    assert_eq!(server.terminate().code(), Some(0));
    let log = server.stderr_text();
    // The shards log their counters when they stop: the flood must have paused reading.
    let pauses: u64 = log
        .match_indices("reading_pauses=")
        .map(|(at, key)| {
            log[at + key.len()..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert!(pauses > 0, "reading never paused: {log}");
    assert!(
        !log.contains("slow_consumer_closes="),
        "a reading client was closed: {log}"
    );
}
