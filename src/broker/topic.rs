//! Topic names: what a name may be (checked the same way wherever a name comes in: the HTTP
//! publish path and body, the WebSocket subscribe and publish operations), the validated
//! [`TopicName`] that every command carries, and the shard that owns a topic.

use std::borrow::Borrow;

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_64;

/// The largest `topic_bytes_max` the config accepts (default 128): names stay small, bounded map
/// keys, and message encoding escapes a name on the stack.
pub const TOPIC_BYTES_LIMIT: usize = 256;

/// Why a topic name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicError {
    Empty,
    TooLong {
        topic_bytes: usize,
    },
    /// A byte outside printable ASCII (0x20..=0x7E): control bytes would corrupt logs and
    /// metrics labels, and non-ASCII would let look-alike names stand for different topics.
    InvalidByte {
        index: usize,
        byte: u8,
    },
}

impl std::fmt::Display for TopicError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => write!(formatter, "topic name is empty"),
            Self::TooLong { topic_bytes } => write!(
                formatter,
                "topic name of {topic_bytes} bytes is over topic_bytes_max"
            ),
            Self::InvalidByte { index, byte } => write!(
                formatter,
                "topic name has byte {byte:#04x} at index {index}: only printable ASCII is allowed"
            ),
        }
    }
}

impl std::error::Error for TopicError {}

impl TopicError {
    /// A fixed reason, for replies that must not carry client bytes (WebSocket `error`).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Empty => "topic name is empty",
            Self::TooLong { .. } => "topic name is longer than topic_bytes_max",
            Self::InvalidByte { .. } => "topic name has a byte outside printable ASCII",
        }
    }
}

/// Checks a topic name: 1..=`topic_bytes_max` bytes of printable ASCII (0x20..=0x7E).
pub fn validate_topic(topic: &str, topic_bytes_max: usize) -> Result<(), TopicError> {
    validate_topic_bytes(topic.as_bytes(), topic_bytes_max)
}

/// [`validate_topic`] for bytes not yet known to be text (a percent-decoded path); a name that
/// passes is ASCII and so valid UTF-8.
pub fn validate_topic_bytes(topic: &[u8], topic_bytes_max: usize) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > topic_bytes_max {
        return Err(TopicError::TooLong {
            topic_bytes: topic.len(),
        });
    }
    match topic.iter().position(|byte| !(0x20..=0x7E).contains(byte)) {
        Some(index) => Err(TopicError::InvalidByte {
            index,
            byte: topic[index],
        }),
        None => Ok(()),
    }
}

/// A topic name that passed [`validate_topic_bytes`]: 1 to `topic_bytes_max` bytes of printable
/// ASCII. Commands, tables and messages carry this type, so that nothing past the entry points
/// needs to check a name again. Cloning shares the bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Bytes);

impl TopicName {
    /// Checks `name` and takes it as a topic name.
    pub fn new(name: Bytes, topic_bytes_max: usize) -> Result<TopicName, TopicError> {
        validate_topic_bytes(&name, topic_bytes_max)?;
        Ok(TopicName(name))
    }

    /// [`TopicName::new`] for a name not yet in a `Bytes` (copies it).
    pub fn copy_from(name: &[u8], topic_bytes_max: usize) -> Result<TopicName, TopicError> {
        validate_topic_bytes(name, topic_bytes_max)?;
        Ok(TopicName(Bytes::copy_from_slice(name)))
    }

    /// The name in a buffer of its own. A name taken from a request shares that request's
    /// buffer (an arena chunk of 64 KiB or more); a table that keeps a name for long must keep
    /// this copy, or one short name would pin the whole chunk.
    pub fn to_kept(&self) -> TopicName {
        TopicName(Bytes::copy_from_slice(&self.0))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The name as text. Every name is ASCII (checked at construction), so this cannot fail.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The shard that owns this topic among `shards` (see [`owner_shard`]).
    pub fn owner(&self, shards: usize) -> usize {
        owner_shard(&self.0, shards)
    }
}

impl Borrow<[u8]> for TopicName {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for TopicName {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "TopicName({:?})", self.as_str())
    }
}

/// Which sequence space a topic's seqs belong to. A topic numbers its messages 1, 2, 3, … from
/// its creation; when that numbering starts anew (a restart without kept history, a topic
/// forgotten and created again) the epoch changes, so that a client resuming with an old seq can
/// tell its seq means nothing any more. Shown as 16 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch's text: 16 lowercase hex digits, written into `out`.
    pub fn text<'a>(&self, out: &'a mut [u8; 16]) -> &'a str {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (index, byte) in out.iter_mut().enumerate() {
            *byte = DIGITS[((self.0 >> (60 - 4 * index)) & 0xF) as usize];
        }
        std::str::from_utf8(out).unwrap_or_default()
    }

    /// Parses the text [`Epoch::text`] writes; `None` for anything else.
    pub fn parse(text: &str) -> Option<Epoch> {
        if text.len() != 16 {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(Epoch)
    }
}

/// Makes a distinct epoch for every sequence space a shard starts: a seed taken once per
/// process (so that a restarted server's epochs differ from the last run's) mixed with a
/// counter (so that a topic created again gets a new one).
#[derive(Debug)]
pub struct EpochSource {
    seed: u64,
    counter: u64,
}

impl EpochSource {
    pub fn new(seed: u64) -> EpochSource {
        EpochSource { seed, counter: 0 }
    }

    pub fn next_epoch(&mut self) -> Epoch {
        self.counter += 1;
        // SplitMix64: consecutive counters give unrelated-looking values.
        let mut mixed = self
            .seed
            .wrapping_add(self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Epoch(mixed ^ (mixed >> 31))
    }
}

/// The shard that owns `topic` among `shards`: XXH3-64 of the name's bytes (seed 0), modulo the
/// shard count. A fixed, specified function rather than std's `DefaultHasher`, whose algorithm
/// may change between Rust releases: every thread, every run and every build (and later every
/// node of a cluster) must agree on a topic's owner.
pub fn owner_shard(topic: &[u8], shards: usize) -> usize {
    (xxh3_64(topic) % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC_BYTES_MAX: usize = 128;

    /// Proves the bounds of the length and of the byte range, both ends included.
    #[test]
    fn length_and_bytes_are_bounded() {
        let longest = "x".repeat(TOPIC_BYTES_MAX);
        for topic in ["A", " ", "~", "fx/EUR USD", "a%b", longest.as_str()] {
            assert_eq!(validate_topic(topic, TOPIC_BYTES_MAX), Ok(()), "{topic:?}");
        }
        assert_eq!(validate_topic("", TOPIC_BYTES_MAX), Err(TopicError::Empty));
        let too_long = "x".repeat(TOPIC_BYTES_MAX + 1);
        assert_eq!(
            validate_topic(&too_long, TOPIC_BYTES_MAX),
            Err(TopicError::TooLong { topic_bytes: 129 })
        );
        for (topic, index, byte) in [("a\x1f", 1, 0x1f), ("\x7f", 0, 0x7f), ("é", 0, 0xc3)] {
            assert_eq!(
                validate_topic(topic, TOPIC_BYTES_MAX),
                Err(TopicError::InvalidByte { index, byte })
            );
        }
        assert!(validate_topic_bytes(b"\xff", TOPIC_BYTES_MAX).is_err());
    }

    /// Proves the owner function is XXH3-64: the published value for the empty input, and pinned
    /// values for ticker names, so that a change of hash (which would move every topic to
    /// another shard) fails here.
    #[test]
    fn owner_hash_is_xxh3_with_known_values() {
        // XXH3-64 of the empty input with seed 0, from the xxHash specification's test vectors.
        assert_eq!(xxh3_64(b""), 0x2D06_8005_38D3_94C2);
        let owners_of_7 = ["AAPL", "MSFT", "EUR/USD"].map(|name| owner_shard(name.as_bytes(), 7));
        assert_eq!(owners_of_7, [0, 5, 4]);
    }

    /// Proves ownership is spread over the shards and stable for a name.
    #[test]
    fn owner_is_stable_and_spread() {
        let mut counts = [0usize; 4];
        for index in 0..4000 {
            let topic = format!("T{index}");
            let owner = owner_shard(topic.as_bytes(), 4);
            assert_eq!(owner, owner_shard(topic.as_bytes(), 4));
            counts[owner] += 1;
        }
        assert!(counts.iter().all(|&count| count > 800), "{counts:?}");
    }

    /// Proves a topic name is checked at construction and borrows as its bytes.
    #[test]
    fn topic_name_is_validated() {
        assert!(TopicName::copy_from(b"", 8).is_err());
        assert!(TopicName::copy_from(b"toolongname", 8).is_err());
        let name = TopicName::copy_from(b"AAPL", 8).unwrap();
        assert_eq!(name.as_str(), "AAPL");
        let map: std::collections::HashMap<TopicName, u32> = [(name, 1)].into();
        assert_eq!(map.get(&b"AAPL"[..]), Some(&1));
    }

    /// Proves an epoch's text round-trips and epochs of one source all differ.
    #[test]
    fn epochs_round_trip_and_differ() {
        let mut source = EpochSource::new(42);
        let epochs: Vec<Epoch> = (0..1000).map(|_| source.next_epoch()).collect();
        let distinct: std::collections::HashSet<u64> = epochs.iter().map(|epoch| epoch.0).collect();
        assert_eq!(distinct.len(), 1000);
        let mut text = [0u8; 16];
        for epoch in epochs {
            assert_eq!(Epoch::parse(epoch.text(&mut text)), Some(epoch));
        }
        assert_eq!(Epoch::parse("xyz"), None);
        assert_ne!(
            EpochSource::new(1).next_epoch(),
            EpochSource::new(2).next_epoch()
        );
    }
}
