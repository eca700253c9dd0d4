//! Fuzzer-chosen read boundaries: one input carries a byte stream and the sizes of the reads to
//! cut it into, so that libFuzzer mutates both and every parser is driven the way a socket
//! drives it (a frame cut after its first byte, a head arriving a byte at a time, a chunk size
//! split from its CRLF).
//!
//! The layout of an input:
//!
//! ```text
//! [variant: u8] [schedule_bytes: u8] [schedule: schedule_bytes bytes] [stream ...]
//! ```
//!
//! - `variant` is the target's to interpret (typically which limits to run with).
//! - Each schedule byte is one read size: 0 to 239 bytes as written (0 is an empty read), and
//!   240 to 255 mean 2^8 to 2^23 bytes, so that a large frame can arrive whole after a small
//!   piece. The schedule repeats until the stream runs out: a schedule of `[1]` trickles the
//!   stream a byte at a time. An empty schedule is one read of the whole stream. Empty reads in
//!   a row count as one, so the reads number at most twice the stream's bytes plus one.
//! - An input too short for its header is read as that much header and an empty stream.
//!
//! [`SplitInput::encode`] writes this layout, for seeds.

/// Read sizes from this schedule byte on are powers of two (see the module documentation).
const POWER_OF_TWO_FROM: u8 = 0xF0;
/// The exponent of the read size of schedule byte [`POWER_OF_TWO_FROM`].
const POWER_OF_TWO_FIRST_EXPONENT: u8 = 8;

/// An input taken apart into its variant, its stream and the reads its schedule cuts the
/// stream into. The reads are cut here, before a target measures its allocations, so that the
/// harness's own list of reads does not count against the target.
#[derive(Clone, Debug)]
pub struct SplitInput<'a> {
    pub variant: u8,
    pub stream: &'a [u8],
    /// The read sizes, for targets that cut streams of their own making the same way.
    pub schedule: &'a [u8],
    reads: Vec<&'a [u8]>,
}

impl<'a> SplitInput<'a> {
    /// Takes `input` apart (see the module documentation); never fails.
    pub fn parse(input: &'a [u8]) -> Self {
        let (variant, rest) = match input {
            [variant, rest @ ..] => (*variant, rest),
            [] => (0, input),
        };
        let (schedule_bytes, rest) = match rest {
            [schedule_bytes, rest @ ..] => (usize::from(*schedule_bytes), rest),
            [] => (0, rest),
        };
        let (schedule, stream) = rest.split_at(schedule_bytes.min(rest.len()));
        Self {
            variant,
            stream,
            schedule,
            reads: cut(stream, schedule),
        }
    }

    /// The input that [`SplitInput::parse`] reads as `variant`, `schedule` and `stream`.
    /// Schedule bytes are read sizes as described in the module documentation.
    pub fn encode(variant: u8, schedule: &[u8], stream: &[u8]) -> Vec<u8> {
        let schedule_bytes = u8::try_from(schedule.len()).expect("a schedule of ≤ 255 reads");
        [&[variant, schedule_bytes][..], schedule, stream].concat()
    }

    /// The stream cut into reads by the schedule (see the module documentation).
    pub fn reads(&self) -> &[&'a [u8]] {
        &self.reads
    }
}

/// The read size a schedule byte stands for.
pub fn read_size(schedule_byte: u8) -> usize {
    if schedule_byte < POWER_OF_TWO_FROM {
        usize::from(schedule_byte)
    } else {
        1 << (schedule_byte - POWER_OF_TWO_FROM + POWER_OF_TWO_FIRST_EXPONENT)
    }
}

/// `stream` in reads of the sizes of `schedule`, repeated, with empty reads in a row taken as
/// one. A pass through the schedule that takes nothing (only empty reads) is followed by the
/// rest in one read, so the cutting ends.
pub fn cut<'a>(stream: &'a [u8], schedule: &[u8]) -> Vec<&'a [u8]> {
    let mut reads: Vec<&[u8]> = Vec::new();
    let mut rest = stream;
    if schedule.is_empty() {
        return vec![stream];
    }
    while !rest.is_empty() {
        let before = rest.len();
        for &schedule_byte in schedule {
            let (read, after) = rest.split_at(read_size(schedule_byte).min(rest.len()));
            if !(read.is_empty() && reads.last().is_some_and(|last| last.is_empty())) {
                reads.push(read);
            }
            rest = after;
            if rest.is_empty() {
                break;
            }
        }
        if rest.len() == before {
            reads.push(rest);
            break;
        }
    }
    reads
}

/// Runs `run` over the stream whole and over the fuzzer's cut, and panics unless both give
/// the same result: the invariant that a parser's answer does not depend on where reads end.
/// Returns the result of the whole stream.
pub fn same_for_any_split<T, F>(input: &SplitInput<'_>, mut run: F) -> T
where
    T: PartialEq + std::fmt::Debug,
    F: FnMut(&[&[u8]]) -> T,
{
    let whole = run(&[input.stream]);
    let reads = input.reads();
    let split = run(reads);
    if whole != split {
        let sizes: Vec<usize> = reads.iter().map(|read| read.len()).collect();
        panic!(
            "the result depends on where reads end\n  whole stream: {whole:?}\n  \
             reads of {sizes:?}: {split:?}"
        );
    }
    whole
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the layout round-trips and that short inputs are read without failing.
    #[test]
    fn parse_reads_what_encode_wrote() {
        let input = SplitInput::encode(7, &[1, 2], b"abcdef");
        let parsed = SplitInput::parse(&input);
        assert_eq!((parsed.variant, parsed.stream), (7, &b"abcdef"[..]));
        assert_eq!(parsed.reads(), [&b"a"[..], b"bc", b"d", b"ef"]);
        assert_eq!(SplitInput::parse(&[]).stream, b"");
        assert_eq!(SplitInput::parse(&[1, 200, 3]).stream, b"");
    }

    /// Proves the schedule repeats, empty reads are kept, and a schedule of only empty reads
    /// still ends with the whole rest.
    #[test]
    fn cut_repeats_and_ends() {
        assert_eq!(cut(b"abc", &[1]), [&b"a"[..], b"b", b"c"]);
        assert_eq!(cut(b"abc", &[0, 2]), [&b""[..], b"ab", b"", b"c"]);
        assert_eq!(
            cut(b"abc", &[0, 0, 1]),
            [&b""[..], b"a", b"", b"b", b"", b"c"]
        );
        assert_eq!(cut(b"abc", &[0]), [&b""[..], b"abc"]);
        assert_eq!(cut(b"abc", &[]), [&b"abc"[..]]);
        assert_eq!(read_size(0xF0), 256);
        assert_eq!(read_size(0xFF), 1 << 23);
    }
}
