//! permessage-deflate: negotiating a `Sec-WebSocket-Extensions` value, and inflating a
//! compressed message cut into pieces (frames and reads) under the inflated-size cap.
//!
//! Invariants, for every input:
//! - no panic, and no allocation beyond the inflater, the pool's buffers and the copies the
//!   harness keeps: a decompression bomb is exactly an unbounded allocation;
//! - an accepted offer has window bits within 8 to 15, and our response's parameters, read as
//!   an offer, are accepted with the same windows;
//! - inflating gives the same result for any cut of the payload;
//! - the result agrees with miniz_oxide (an independent inflater): what we inflate it inflates
//!   to the same bytes; when we refuse a message as too large it inflates past the cap; when
//!   we refuse it as corrupt it fails too, before the cap;
//! - compressing what we inflated and inflating that again gives it back.
//!
//! Input layout: `[header_bytes: u8] [header: header_bytes bytes]`, then the layout of
//! `fuzz/src/reads.rs` whose stream is the compressed payload (without the sync-flush
//! trailer, as it travels); the variant's low bit picks the cap, 1 KiB or 64 KiB.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringcast_fuzz::allocation::{self, AllocationBudget};
use ringcast_fuzz::reads::{self, SplitInput};

// The crate's API, in one place: when modules move, only these lines change.
use ringcast::protocol::pool::{BufferClass, BufferPool, PoolLimits};
use ringcast::protocol::websocket::deflate::{
    Compressor, InflateError, Inflater, SYNC_FLUSH_TRAILER, WINDOW_BITS_MAX, WINDOW_BITS_MIN,
    negotiate,
};

/// The inflater (about 40 KiB with its window), the pool's buffers up to the larger cap, the
/// compressor of the round trip (about 300 KiB at 15 bits), and copies of the output.
const BUDGET: AllocationBudget = AllocationBudget {
    fixed_bytes: 1024 * 1024,
    bytes_per_input_byte: 16,
};
const CAPS: [usize; 2] = [1024, 64 * 1024];
/// A final, empty fixed-Huffman block: appended after the trailer, it ends the stream for the
/// reference inflater, which otherwise reports that it needs more input.
const FINAL_EMPTY_BLOCK: [u8; 2] = [0x03, 0x00];

fuzz_target!(|data: &[u8]| {
    let (header, rest) = match data.split_first() {
        Some((&length, rest)) => rest.split_at(usize::from(length).min(rest.len())),
        None => (&[][..], &[][..]),
    };
    check_negotiation(header);
    let input = SplitInput::parse(rest);
    let cap = CAPS[usize::from(input.variant & 1)];
    let (outcome, _) = allocation::measure(BUDGET, data.len(), || {
        reads::same_for_any_split(&input, |pieces| inflate(pieces, cap))
    });
    compare_with_reference(input.stream, cap, &outcome);
    if let Ok(inflated) = &outcome {
        round_trip(inflated, cap);
    }
});

fn check_negotiation(header: &[u8]) {
    let Some(agreement) = negotiate(std::iter::once(header)) else {
        return;
    };
    let windows = WINDOW_BITS_MIN..=WINDOW_BITS_MAX;
    assert!(windows.contains(&agreement.server_window_bits));
    assert!(
        agreement
            .client_window_bits
            .is_none_or(|bits| windows.contains(&bits))
    );
    let mut response = BytesMut::new();
    agreement.write_response_header(&mut response);
    let line = std::str::from_utf8(&response).expect("our header is ASCII");
    let value = line
        .strip_prefix("Sec-WebSocket-Extensions: ")
        .and_then(|rest| rest.strip_suffix("\r\n"))
        .expect("one header line");
    let again = negotiate(std::iter::once(value.as_bytes())).expect("our answer is an offer");
    assert_eq!(again.server_window_bits, agreement.server_window_bits);
    assert_eq!(again.client_window_bits, agreement.client_window_bits);
}

fn pool() -> BufferPool {
    let classes = [128, 4096, 65_536]
        .map(|buffer_bytes| BufferClass {
            buffer_bytes,
            buffers_max: 2,
        })
        .to_vec();
    BufferPool::new(&PoolLimits {
        inflaters_max: 1,
        classes,
    })
}

/// Inflates the pieces and the trailer as the session does; the inflated bytes, copied out.
fn inflate(pieces: &[&[u8]], cap: usize) -> Result<Vec<u8>, InflateError> {
    let mut pool = pool();
    let mut inflater: Box<Inflater> = pool.acquire_inflater().expect("one inflater");
    let mut out = pool.acquire(1).expect("a buffer");
    let mut result = Ok(());
    for piece in pieces.iter().copied().chain([&SYNC_FLUSH_TRAILER[..]]) {
        result = result.and_then(|()| inflater.inflate(piece, &mut out, cap, &mut pool));
        assert!(
            result.is_err() || out.len() <= cap,
            "past the cap without an error"
        );
    }
    let inflated = out.as_slice().to_vec();
    pool.release(out);
    pool.release_inflater(inflater);
    assert_ne!(
        result,
        Err(InflateError::OutOfBuffers),
        "the pool holds the cap"
    );
    result.map(|()| inflated)
}

fn compare_with_reference(payload: &[u8], cap: usize, ours: &Result<Vec<u8>, InflateError>) {
    let input = [payload, &SYNC_FLUSH_TRAILER, &FINAL_EMPTY_BLOCK].concat();
    let theirs = miniz_oxide::inflate::decompress_to_vec_with_limit(&input, cap + 1);
    // A payload that ends inside a block is read on by the reference into the block it
    // appends, so where the payload is not a whole stream the two agree on a common prefix.
    match (ours, theirs) {
        (Ok(ours), Ok(theirs)) => assert!(theirs.starts_with(ours), "{ours:?} vs {theirs:?}"),
        (Ok(ours), Err(error)) => {
            let theirs = &error.output;
            let agree = theirs.starts_with(ours) || ours.starts_with(theirs);
            assert!(
                agree,
                "we inflated {ours:?}, the reference {theirs:?}: {error:?}"
            );
        }
        (Err(InflateError::TooLarge), Ok(theirs)) => assert!(
            theirs.len() > cap,
            "we refused as too large what inflates to {} bytes",
            theirs.len()
        ),
        (Err(InflateError::TooLarge), Err(error)) => assert!(
            error.output.len() > cap,
            "we refused as too large what fails at {} bytes: {error:?}",
            error.output.len()
        ),
        (Err(InflateError::Corrupt), Ok(theirs)) => {
            panic!(
                "we refused as corrupt what inflates to {} bytes",
                theirs.len()
            )
        }
        (Err(InflateError::Corrupt), Err(error)) => assert!(error.output.len() <= cap + 1),
        (Err(InflateError::OutOfBuffers), _) => unreachable!("checked in inflate"),
    }
}

fn round_trip(inflated: &[u8], cap: usize) {
    let mut compressed = Vec::new();
    Compressor::new(1, WINDOW_BITS_MAX).compress(inflated, &mut compressed);
    let again = inflate(&[&compressed], cap).expect("our own payload inflates");
    assert_eq!(again, inflated);
}
