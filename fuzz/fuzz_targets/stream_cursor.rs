//! The resume cursor (`broker::cursor`): what a stream or poll client hands back in
//! `Last-Event-ID`, `?last_event_id=` or `?cursor=`, read by `decode` before anything else of
//! the request is trusted.
//!
//! The input picks a list of topics and one of three ways to build the cursor text, so that the
//! fuzzer reaches past the base64 and the topic-list digest it could not forge by mutation:
//! - `Text`: the rest of the input is the cursor text as sent (any bytes, valid UTF-8 or not);
//! - `Body`: the rest is the binary layout after the header; the target writes the version and
//!   the list's digest in front and encodes it in base64url, as the server would;
//! - `Positions`: the rest is read as positions (flag, epoch, seq), encoded with `encode`.
//!
//! Invariants, for every input:
//! - no panic, and memory within a fixed amount plus a multiple of the input;
//! - a decoded cursor has one position per topic, and encoding what was decoded gives back the
//!   very text decoded (one text per cursor: no second spelling of the same positions);
//! - every encoded cursor fits `cursor_text_bytes_max`, is base64url text, decodes to the
//!   positions it was made from (a position without an epoch, a bare `since`, included) and
//!   is refused for any other list of topics.

#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use ringcast_fuzz::allocation::{self, AllocationBudget};

// The crate's API, in one place: when modules move, only these lines change.
use ringcast::broker::TopicName;
use ringcast::broker::cursor::{
    CURSOR_TOPICS_LIMIT, CursorError, Position, cursor_text_bytes_max, decode, encode,
    topics_digest,
};
use ringcast::broker::owner::Since;
use ringcast::broker::topic::Epoch;

/// The topic list, the decoded positions and the texts, each a few KiB at most.
const BUDGET: AllocationBudget = AllocationBudget {
    fixed_bytes: 256 * 1024,
    bytes_per_input_byte: 16,
};
const VERSION: u8 = 1;

fuzz_target!(|data: &[u8]| {
    let [mode, count, rest @ ..] = data else {
        return;
    };
    let topics = topic_list(usize::from(*count).min(CURSOR_TOPICS_LIMIT));
    allocation::measure(BUDGET, data.len(), || match mode % 3 {
        0 => check_text(rest, &topics),
        1 => check_text(
            URL_SAFE_NO_PAD
                .encode(with_header(rest, &topics))
                .as_bytes(),
            &topics,
        ),
        _ => check_positions(&positions(rest, topics.len()), &topics),
    });
});

/// `T0`, `T1`, …: the names do not matter to the cursor, only their order (the digest).
fn topic_list(count: usize) -> Vec<TopicName> {
    (0..count)
        .map(|index| TopicName::copy_from(format!("T{index}").as_bytes(), 128).unwrap())
        .collect()
}

/// `body` behind the version and the digest of `topics`, as `encode` lays a cursor out.
fn with_header(body: &[u8], topics: &[TopicName]) -> Vec<u8> {
    let mut binary = vec![VERSION];
    binary.extend_from_slice(&topics_digest(topics).to_le_bytes());
    binary.extend_from_slice(body);
    binary
}

/// Decodes `text`; what decodes must encode back to itself.
fn check_text(text: &[u8], topics: &[TopicName]) {
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(positions) = decode(text, topics) else {
        return;
    };
    assert_eq!(positions.len(), topics.len());
    assert_eq!(
        encoded(&positions, topics),
        text,
        "a cursor with a second spelling"
    );
}

/// Up to one position per topic from `bytes`: a flag byte (bit 0: a position), then 8 bytes of
/// epoch and 8 of seq; the flag's bit 1 leaves the epoch out (a bare seq, as `since` gives).
fn positions(mut bytes: &[u8], count: usize) -> Vec<Position> {
    let mut positions = Vec::with_capacity(count);
    while positions.len() < count {
        let Some((&flag, rest)) = bytes.split_first() else {
            positions.push(None);
            continue;
        };
        bytes = rest;
        if flag & 1 == 0 {
            positions.push(None);
            continue;
        }
        let mut take = || {
            let (number, rest) = bytes.split_first_chunk::<8>().unwrap_or((&[0; 8], &[]));
            bytes = rest;
            u64::from_le_bytes(*number)
        };
        let epoch = take();
        let seq = take();
        let epoch = (flag & 2 == 0).then_some(Epoch(epoch));
        positions.push(Some(Since { seq, epoch }));
    }
    positions
}

/// Encodes `positions` and checks the text: bounded, base64url, decoding to the same positions
/// (an epoch-less one is a bare `since` not yet answered, kept as asked) for these topics only.
fn check_positions(positions: &[Position], topics: &[TopicName]) {
    let text = encoded(positions, topics);
    assert!(text.len() <= cursor_text_bytes_max(topics.len()));
    assert!(
        text.bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    );
    assert_eq!(decode(&text, topics), Ok(positions.to_vec()));
    // Fewer topics may also make the text too long for them (refused as malformed).
    if let Some((_, fewer)) = topics.split_last() {
        assert!(decode(&text, fewer).is_err());
    }
    let mut reversed = topics.to_vec();
    reversed.reverse();
    if reversed.len() > 1 {
        assert_eq!(decode(&text, &reversed), Err(CursorError::OtherTopics));
    }
}

fn encoded(positions: &[Position], topics: &[TopicName]) -> String {
    let mut out = vec![0u8; cursor_text_bytes_max(positions.len())];
    let length = encode(topics_digest(topics), positions, &mut out);
    String::from_utf8(out[..length].to_vec()).expect("base64 is ASCII")
}
