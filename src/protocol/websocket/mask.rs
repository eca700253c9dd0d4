//! Payload masking (RFC 6455 §5.3): every byte of a client frame's payload is XORed with one byte
//! of a 4-byte key, `payload[i] ^= key[(offset + i) % 4]`.
//!
//! Every byte a client sends passes through here once, so this is one of the few loops whose
//! speed is proportional to traffic. The operation is a XOR with a repeating pattern: no data
//! dependencies between bytes, no branches, which is exactly what vector registers are for. A
//! 256-bit register covers eight repetitions of the key, so one load, one XOR and one store do
//! the work of 32 byte-wise steps.
//!
//! Frames arrive split across socket reads, so every function here takes `offset`, the position
//! of the key that `payload[0]` sits at, and works in place on a slice of any length and any
//! alignment. Masking and unmasking are the same operation.
//!
//! # Implementations
//! - [`apply_mask_reference`]: byte by byte, straight from the RFC; the others are tested
//!   against it.
//! - [`apply_mask_word`]: eight bytes at a time in a `u64`, portable and free of `unsafe`.
//! - `apply_mask_sse2`, `apply_mask_avx2` (x86_64 only): 16 and 32 bytes at a time.
//!
//! Vector loads and stores may be unaligned, but on large payloads a register that straddles two
//! cache lines is slow enough to matter, so from `ALIGNED_LOOP_PAYLOAD_BYTES_MIN` (4 KiB) on the
//! vector paths mask a short head with the word path first and run their loop on aligned
//! addresses with the key rotated to match.
//!
//! # Dispatch
//! [`apply_mask`] asks the CPU which vector extensions it has on its first call and caches the
//! answer in a static, so later calls pay one relaxed atomic load and a predictable branch, and
//! never allocate. Calling [`selected_implementation`] at start-up makes the choice before any
//! traffic and reports it. Payloads shorter than 128 bytes go to the word path directly, because
//! the vector set-up and tail would not pay for themselves. Targets other than x86_64 use the
//! word path. AVX-512 is left out: on the Zen 5 test machine it measured within noise of aligned
//! AVX2 at 64 KiB and slower below, and its intrinsics need Rust 1.89 where this crate supports
//! 1.85.

use std::sync::atomic::{AtomicU8, Ordering};

/// Bytes in a masking key.
pub const MASK_BYTES: usize = 4;

/// Payloads shorter than this go to the word path in [`apply_mask`]. Below it the AVX2 loop runs
/// only a few times and its tail, up to 31 bytes through the word path, dominates, while the word
/// loop itself is vectorized by the compiler; measured on an AMD EPYC (Zen 5), the word path wins
/// at 125 bytes and AVX2 from about 200.
const VECTOR_PAYLOAD_BYTES_MIN: usize = 128;

/// The ways [`apply_mask`] can do its work; [`selected_implementation`] says which one it uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MaskImplementation {
    /// Byte by byte ([`apply_mask_reference`]); never chosen by detection.
    Reference = 1,
    /// Eight bytes at a time in a `u64` ([`apply_mask_word`]).
    Word = 2,
    /// 16 bytes at a time in SSE2 registers ([`apply_mask_sse2`]).
    #[cfg(target_arch = "x86_64")]
    Sse2 = 3,
    /// 32 bytes at a time in AVX2 registers ([`apply_mask_avx2`]).
    #[cfg(target_arch = "x86_64")]
    Avx2 = 4,
}

impl MaskImplementation {
    /// The inverse of `implementation as u8`; `None` for the "not detected yet" marker.
    fn from_discriminant(discriminant: u8) -> Option<MaskImplementation> {
        match discriminant {
            1 => Some(MaskImplementation::Reference),
            2 => Some(MaskImplementation::Word),
            #[cfg(target_arch = "x86_64")]
            3 => Some(MaskImplementation::Sse2),
            #[cfg(target_arch = "x86_64")]
            4 => Some(MaskImplementation::Avx2),
            _ => None,
        }
    }
}

/// The discriminant of the implementation [`apply_mask`] uses, or 0 before the first detection.
/// Relaxed ordering is enough: the value publishes no other memory, and two threads racing
/// through detection compute and store the same value.
static SELECTED_IMPLEMENTATION: AtomicU8 = AtomicU8::new(0);

/// Unmasks (or masks) `payload` in place with the fastest implementation this CPU supports;
/// `payload[0]` sits at position `offset` (0..=3) of the key.
///
/// # Panics
/// If `offset` is not a key position (4 or more).
#[inline]
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    if payload.len() < VECTOR_PAYLOAD_BYTES_MIN {
        apply_mask_word(payload, mask, offset);
        return;
    }
    match selected_implementation() {
        MaskImplementation::Reference => apply_mask_reference(payload, mask, offset),
        MaskImplementation::Word => apply_mask_word(payload, mask, offset),
        #[cfg(target_arch = "x86_64")]
        MaskImplementation::Sse2 => apply_mask_sse2(payload, mask, offset),
        #[cfg(target_arch = "x86_64")]
        MaskImplementation::Avx2 => {
            let key = rotated_key(mask, offset);
            // SAFETY: `detect_implementation` selects AVX2 only after
            // `is_x86_feature_detected!("avx2")` returned true, and the CPU does not lose
            // features while the process runs.
            unsafe { x86::apply_key_avx2(payload, key) }
        }
    }
}

/// The implementation [`apply_mask`] dispatches to on this CPU. The first call detects it; later
/// calls read the cached answer.
#[inline]
pub fn selected_implementation() -> MaskImplementation {
    let discriminant = SELECTED_IMPLEMENTATION.load(Ordering::Relaxed);
    match MaskImplementation::from_discriminant(discriminant) {
        Some(implementation) => implementation,
        None => detect_and_cache_implementation(),
    }
}

/// Kept out of line so that the cached path of [`selected_implementation`] stays a load and a
/// branch.
#[cold]
#[inline(never)]
fn detect_and_cache_implementation() -> MaskImplementation {
    let implementation = detect_implementation();
    SELECTED_IMPLEMENTATION.store(implementation as u8, Ordering::Relaxed);
    implementation
}

#[cfg(target_arch = "x86_64")]
fn detect_implementation() -> MaskImplementation {
    if std::is_x86_feature_detected!("avx2") {
        MaskImplementation::Avx2
    } else {
        MaskImplementation::Sse2
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_implementation() -> MaskImplementation {
    MaskImplementation::Word
}

/// Unmasks (or masks) `payload` in place one byte at a time; `payload[0]` sits at position
/// `offset` (0..=3) of the key. Slow, but a direct transcription of RFC 6455 §5.3.
///
/// # Panics
/// If `offset` is not a key position (4 or more).
pub fn apply_mask_reference(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    assert_key_position(offset);
    for (index, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[(offset + index) % MASK_BYTES];
    }
}

/// Unmasks (or masks) `payload` in place eight bytes at a time, on any target and without
/// `unsafe`; `payload[0]` sits at position `offset` (0..=3) of the key. The compiler usually
/// vectorizes the loop with the target's baseline vector unit (SSE2 on x86_64), so on large
/// payloads this runs close to `apply_mask_sse2` there.
///
/// # Panics
/// If `offset` is not a key position (4 or more).
pub fn apply_mask_word(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    apply_key_word(payload, rotated_key(mask, offset));
}

/// Unmasks `payload` in place eight bytes at a time and reports whether every unmasked byte is
/// ASCII: one pass where unmasking and then checking would read the payload twice. For small
/// text frames, whose text is then known valid without a UTF-8 validator (market-data JSON is
/// nearly always ASCII).
///
/// # Panics
/// If `offset` is not a key position (4 or more).
pub fn apply_mask_checking_ascii(payload: &mut [u8], mask: [u8; 4], offset: usize) -> bool {
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let key = rotated_key(mask, offset);
    let key_word = u64::from_ne_bytes(repeated_key(key));
    let mut combined = 0u64;
    let mut words = payload.chunks_exact_mut(size_of::<u64>());
    for word in &mut words {
        let bytes: [u8; 8] = (*word)
            .try_into()
            .expect("chunks_exact_mut yields 8-byte chunks");
        let unmasked = u64::from_ne_bytes(bytes) ^ key_word;
        combined |= unmasked;
        word.copy_from_slice(&unmasked.to_ne_bytes());
    }
    let rest = words.into_remainder();
    apply_key_bytes(rest, key);
    let rest_combined = rest.iter().fold(0u8, |combined, byte| combined | byte);
    combined & HIGH_BITS == 0 && rest_combined < 0x80
}

/// Unmasks (or masks) `payload` in place 16 bytes at a time with SSE2; `payload[0]` sits at
/// position `offset` (0..=3) of the key.
///
/// # Panics
/// If `offset` is not a key position (4 or more).
#[cfg(target_arch = "x86_64")]
pub fn apply_mask_sse2(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    x86::apply_key_sse2(payload, rotated_key(mask, offset));
}

/// Unmasks (or masks) `payload` in place 32 bytes at a time with AVX2; `payload[0]` sits at
/// position `offset` (0..=3) of the key.
///
/// # Panics
/// If `offset` is not a key position (4 or more), or if the CPU lacks AVX2. The feature check
/// is a load and a bit test of a cached value; [`apply_mask`] skips it because it checked once.
#[cfg(target_arch = "x86_64")]
pub fn apply_mask_avx2(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    assert!(
        std::is_x86_feature_detected!("avx2"),
        "apply_mask_avx2 needs a CPU with AVX2"
    );
    let key = rotated_key(mask, offset);
    // SAFETY: the assertion above proved that this CPU supports AVX2.
    unsafe { x86::apply_key_avx2(payload, key) }
}

fn assert_key_position(offset: usize) {
    assert!(
        offset < MASK_BYTES,
        "mask offset {offset} is not a key position (0..=3)"
    );
}

/// The key as seen from `payload[0]`: rotated so that position `offset` comes first. All the
/// fast paths work on a rotated key and so only ever start at position 0.
fn rotated_key(mask: [u8; 4], offset: usize) -> [u8; 4] {
    assert_key_position(offset);
    // In little-endian order byte `offset` moves to the front when the word rotates right by
    // that many bytes. One instruction, where `<[u8]>::rotate_left` with a run-time count
    // compiles to calls to memcpy and memmove.
    let rotation_bits = 8 * offset as u32;
    u32::from_le_bytes(mask)
        .rotate_right(rotation_bits)
        .to_le_bytes()
}

/// `KEY_COPIES_BYTES` bytes holding the key again and again, to fill a word or a register.
fn repeated_key<const KEY_COPIES_BYTES: usize>(key: [u8; 4]) -> [u8; KEY_COPIES_BYTES] {
    const { assert!(KEY_COPIES_BYTES.is_multiple_of(MASK_BYTES)) };
    std::array::from_fn(|index| key[index % MASK_BYTES])
}

/// Payloads at least this long get their vector loop aligned to the register size by
/// [`mask_until_aligned`]. Unaligned registers that straddle two cache lines cost the AVX2 loop a
/// third of its speed on large payloads (measured on an AMD EPYC, Zen 5: 64 KiB starting 7 bytes
/// past a boundary unmasked at about 96 GiB/s unaligned against 145 GiB/s aligned), while below
/// 2 to 4 KiB masking the head separately costs more than it saves.
const ALIGNED_LOOP_PAYLOAD_BYTES_MIN: usize = 4096;

/// For payloads of at least [`ALIGNED_LOOP_PAYLOAD_BYTES_MIN`], masks the bytes before the first
/// address that is a multiple of `alignment` with the word path. Returns the bytes still to mask
/// and the key as seen from the first of them.
#[inline]
fn mask_until_aligned(payload: &mut [u8], key: [u8; 4], alignment: usize) -> (&mut [u8], [u8; 4]) {
    if payload.len() < ALIGNED_LOOP_PAYLOAD_BYTES_MIN {
        return (payload, key);
    }
    let head_bytes = payload.as_ptr().align_offset(alignment).min(payload.len());
    let (head, body) = payload.split_at_mut(head_bytes);
    apply_key_word(head, key);
    (body, rotated_key(key, head_bytes % MASK_BYTES))
}

/// XORs `payload` with `key`, which starts at `payload[0]`, eight bytes at a time.
#[inline]
fn apply_key_word(payload: &mut [u8], key: [u8; 4]) {
    let key_word = u64::from_ne_bytes(repeated_key(key));
    let mut words = payload.chunks_exact_mut(size_of::<u64>());
    for word in &mut words {
        let bytes: [u8; 8] = (*word)
            .try_into()
            .expect("chunks_exact_mut yields 8-byte chunks");
        word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ key_word).to_ne_bytes());
    }
    // Eight is a multiple of the key length, so the rest starts at key position 0 again.
    apply_key_bytes(words.into_remainder(), key);
}

/// XORs `payload` with `key`, which starts at `payload[0]`, one byte at a time; for the few
/// bytes left over by the wider paths.
fn apply_key_bytes(payload: &mut [u8], key: [u8; 4]) {
    for (index, byte) in payload.iter_mut().enumerate() {
        *byte ^= key[index % MASK_BYTES];
    }
}

/// The x86_64 vector bodies. Each works on a rotated key (see [`rotated_key`]) and leaves the
/// tail shorter than a register to the word path; every register length is a multiple of four
/// bytes, so the tail starts at key position 0.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm_loadu_si128, _mm_storeu_si128, _mm_xor_si128, _mm256_loadu_si256,
        _mm256_storeu_si256, _mm256_xor_si256,
    };

    use super::{apply_key_word, mask_until_aligned, repeated_key};

    // SSE2 is part of the x86_64 baseline; the SSE2 body relies on the compiler knowing that.
    const _: () = assert!(cfg!(target_feature = "sse2"));

    const SSE2_BYTES: usize = size_of::<__m128i>();
    const AVX2_BYTES: usize = size_of::<__m256i>();

    pub(super) fn apply_key_sse2(payload: &mut [u8], key: [u8; 4]) {
        let (payload, key) = mask_until_aligned(payload, key, SSE2_BYTES);
        let key_bytes: [u8; SSE2_BYTES] = repeated_key(key);
        // SAFETY: `key_bytes` is 16 bytes, which the unaligned load reads exactly; SSE2 is
        // enabled for the whole crate on x86_64 (asserted above).
        let key_vector = unsafe { _mm_loadu_si128(key_bytes.as_ptr().cast()) };
        let mut blocks = payload.chunks_exact_mut(SSE2_BYTES);
        for block in &mut blocks {
            let pointer = block.as_mut_ptr().cast::<__m128i>();
            // SAFETY: `block` is exactly 16 bytes, so the unaligned 128-bit load and store
            // stay inside it, and `block` is borrowed mutably so nothing else aliases it. SSE2
            // is enabled for the whole crate on x86_64.
            unsafe {
                let masked = _mm_xor_si128(_mm_loadu_si128(pointer), key_vector);
                _mm_storeu_si128(pointer, masked);
            }
        }
        apply_key_word(blocks.into_remainder(), key);
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn apply_key_avx2(payload: &mut [u8], key: [u8; 4]) {
        let (payload, key) = mask_until_aligned(payload, key, AVX2_BYTES);
        let key_bytes: [u8; AVX2_BYTES] = repeated_key(key);
        // SAFETY: `key_bytes` is 32 bytes, which the unaligned load reads exactly; the caller
        // guarantees AVX2.
        let key_vector = unsafe { _mm256_loadu_si256(key_bytes.as_ptr().cast()) };
        let mut blocks = payload.chunks_exact_mut(AVX2_BYTES);
        for block in &mut blocks {
            let pointer = block.as_mut_ptr().cast::<__m256i>();
            // SAFETY: `block` is exactly 32 bytes, so the unaligned 256-bit load and store
            // stay inside it, and `block` is borrowed mutably so nothing else aliases it. The
            // caller guarantees AVX2.
            unsafe {
                let masked = _mm256_xor_si256(_mm256_loadu_si256(pointer), key_vector);
                _mm256_storeu_si256(pointer, masked);
            }
        }
        apply_key_word(blocks.into_remainder(), key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type MaskFunction = fn(&mut [u8], [u8; 4], usize);

    /// The sweep covers every tail length of every vector width, many times over.
    const PAYLOAD_BYTES_MAX: usize = if cfg!(miri) { 80 } else { 1024 };
    /// Starts 0..=63 put the payload at every position within a cache line.
    const START_MAX: usize = if cfg!(miri) { 7 } else { 63 };

    /// Every implementation this CPU can run, the dispatched one included.
    fn implementations() -> Vec<(&'static str, MaskFunction)> {
        let mut implementations: Vec<(&'static str, MaskFunction)> =
            vec![("word", apply_mask_word), ("apply_mask", apply_mask)];
        #[cfg(target_arch = "x86_64")]
        {
            implementations.push(("sse2", apply_mask_sse2));
            if std::is_x86_feature_detected!("avx2") {
                implementations.push(("avx2", apply_mask_avx2));
            }
        }
        implementations
    }

    /// Deterministic bytes that differ from each other and from seed to seed (xorshift64).
    fn test_bytes(count: usize, seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next_byte = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        };
        (0..count).map(|_| next_byte()).collect()
    }

    fn test_mask(seed: u64) -> [u8; 4] {
        test_bytes(MASK_BYTES, seed).try_into().expect("four bytes")
    }

    /// Checks every implementation against the reference for each length, start and offset.
    fn assert_all_match_reference(lengths_bytes: impl Iterator<Item = usize>) {
        let implementations = implementations();
        for (case, payload_bytes) in lengths_bytes.enumerate() {
            let source = test_bytes(payload_bytes + START_MAX, case as u64);
            let mut expected = source.clone();
            let mut actual = source.clone();
            for start in 0..=START_MAX {
                for offset in 0..MASK_BYTES {
                    let mask = test_mask((case * 1000 + start * 4 + offset) as u64);
                    let range = start..start + payload_bytes;
                    expected.copy_from_slice(&source);
                    apply_mask_reference(&mut expected[range.clone()], mask, offset);
                    for (name, function) in &implementations {
                        actual.copy_from_slice(&source);
                        function(&mut actual[range.clone()], mask, offset);
                        assert!(
                            actual == expected,
                            "{name}: {payload_bytes} bytes at start {start}, offset {offset}"
                        );
                    }
                }
            }
        }
    }

    /// Proves the ASCII-checking unmask equals the reference and detects any non-ASCII byte.
    #[test]
    fn checking_ascii_equals_reference() {
        let mask = [0x9b, 0x01, 0x7f, 0xe3];
        for length in 0..=64 {
            for offset in 0..MASK_BYTES {
                for odd in std::iter::once(None).chain((0..length).map(Some)) {
                    let mut plain: Vec<u8> =
                        (0..length).map(|index| b'a' + (index % 26) as u8).collect();
                    if let Some(position) = odd {
                        plain[position] = 0xC3;
                    }
                    let mut masked = plain.clone();
                    apply_mask_reference(&mut masked, mask, offset);
                    let ascii = apply_mask_checking_ascii(&mut masked, mask, offset);
                    assert_eq!(masked, plain, "length {length} offset {offset}");
                    assert_eq!(
                        ascii,
                        odd.is_none(),
                        "length {length} offset {offset} odd {odd:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn reference_unmasks_the_rfc_example() {
        // Proves the reference itself against RFC 6455 §5.7: a masked "Hello" from a client.
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask_reference(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn every_implementation_matches_the_reference() {
        // Proves each implementation equals the reference for every short length, offset and
        // alignment.
        assert_all_match_reference(0..=PAYLOAD_BYTES_MAX);
    }

    #[test]
    fn every_implementation_matches_the_reference_on_aligned_loops() {
        // Proves the aligned-loop path (a separately masked head, then a rotated key) equals
        // the reference around its threshold and well above it.
        let threshold = ALIGNED_LOOP_PAYLOAD_BYTES_MIN;
        let lengths_bytes_max = if cfg!(miri) { 1 } else { 67 };
        let around_threshold = threshold - 1..=threshold + lengths_bytes_max;
        assert_all_match_reference(around_threshold.chain([64 * 1024 + 13]));
    }

    #[test]
    fn masking_twice_restores_the_payload() {
        // Proves masking is its own inverse in every implementation.
        for (name, function) in implementations() {
            for payload_bytes in 0..=PAYLOAD_BYTES_MAX.min(300) {
                let original = test_bytes(payload_bytes, payload_bytes as u64);
                for offset in 0..MASK_BYTES {
                    let mask = test_mask(offset as u64);
                    let mut payload = original.clone();
                    function(&mut payload, mask, offset);
                    function(&mut payload, mask, offset);
                    assert!(
                        payload == original,
                        "{name}: {payload_bytes} bytes, offset {offset}"
                    );
                }
            }
        }
    }

    #[test]
    fn split_calls_equal_one_call() {
        // Proves that unmasking a payload in two pieces, as when a frame spans two socket
        // reads, gives the same bytes as one call, whatever the split point and offset.
        let large_payload_bytes = ALIGNED_LOOP_PAYLOAD_BYTES_MIN + 300;
        for payload_bytes in [PAYLOAD_BYTES_MAX.min(300), large_payload_bytes] {
            let original = test_bytes(payload_bytes, 7);
            let mask = test_mask(payload_bytes as u64);
            for offset in 0..MASK_BYTES {
                let mut expected = original.clone();
                apply_mask_reference(&mut expected, mask, offset);
                for (name, function) in implementations() {
                    for split_index in (0..=payload_bytes).step_by(if cfg!(miri) { 29 } else { 3 })
                    {
                        let mut payload = original.clone();
                        let (first, rest) = payload.split_at_mut(split_index);
                        function(first, mask, offset);
                        function(rest, mask, (offset + split_index) % MASK_BYTES);
                        assert!(
                            payload == expected,
                            "{name}: {payload_bytes} bytes split at {split_index}, offset {offset}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn offsets_beyond_the_key_are_refused() {
        // Proves every implementation panics on an offset that is not a key position.
        let reference: (&'static str, MaskFunction) = ("reference", apply_mask_reference);
        for (name, function) in implementations().into_iter().chain([reference]) {
            let result = std::panic::catch_unwind(|| function(&mut [0; 64], [1, 2, 3, 4], 4));
            assert!(result.is_err(), "{name} accepted offset 4");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn dispatch_uses_avx2_when_the_cpu_has_it() {
        // Proves this machine runs the vector path it can: AVX2 when detected, SSE2 otherwise,
        // and that the choice is cached after the first call.
        let has_avx2 = std::is_x86_feature_detected!("avx2");
        let selected = selected_implementation();
        eprintln!("avx2 detected: {has_avx2}; apply_mask dispatches to {selected:?}");
        let expected = if has_avx2 {
            MaskImplementation::Avx2
        } else {
            MaskImplementation::Sse2
        };
        assert_eq!(selected, expected);
        assert_eq!(
            SELECTED_IMPLEMENTATION.load(Ordering::Relaxed),
            expected as u8
        );
        assert_eq!(selected_implementation(), expected);
    }
}
