//! A fast scanner for deliveries in the exact form the servers under test send them:
//! `{"topic":"T0003","seq":48,"data":{"counter":7,"sent_ns":99,"step":1,"padding":"xx"}}`
//! (ringcast and the uws peer; NATS carries the `data` object alone). It walks the bytes once
//! against that form and reads the numbers on the way, instead of a full JSON parse per
//! delivery, which cost more CPU than the server's own work per delivery.
//!
//! It accepts only that canonical form, byte for byte: every byte is checked, so what it
//! accepts is valid JSON that `serde_json` reads to the same values (the tests check this on
//! random and mutated frames). Anything else (whitespace, another key order, escapes) gives
//! `None`, and the caller falls back to the full parse. Callers also fully parse a sample of
//! the deliveries the scanner accepted and count any disagreement.

use super::payload::PayloadData;
use super::topic_index;

/// Every how many scanned deliveries a subscriber thread also fully parses one.
pub const FULL_PARSE_EVERY: u64 = 100;

/// What the scanner reads from a delivery of the JSON protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedDelivery {
    pub topic: u32,
    pub seq: u64,
    pub data: PayloadData,
}

/// Reads a delivery of the JSON protocols; `None` when the text is not in canonical form.
pub fn scan_delivery(text: &[u8]) -> Option<ScannedDelivery> {
    let mut cursor = Cursor { bytes: text };
    cursor.literal(b"{\"topic\":\"")?;
    let topic = topic_index(std::str::from_utf8(cursor.until_quote()?).ok()?)?;
    cursor.literal(b",\"seq\":")?;
    let seq = cursor.number()?;
    cursor.literal(b",\"data\":")?;
    let data = cursor.payload()?;
    cursor.literal(b"}")?;
    cursor.end()?;
    Some(ScannedDelivery { topic, seq, data })
}

/// Reads a message's data object alone (NATS payloads); `None` when not in canonical form.
pub fn scan_payload(data: &[u8]) -> Option<PayloadData> {
    let mut cursor = Cursor { bytes: data };
    let payload = cursor.payload()?;
    cursor.end()?;
    Some(payload)
}

/// The unread rest of the text.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn literal(&mut self, expected: &[u8]) -> Option<()> {
        self.bytes = self.bytes.strip_prefix(expected)?;
        Some(())
    }

    fn end(&self) -> Option<()> {
        self.bytes.is_empty().then_some(())
    }

    /// The bytes up to the next quote, which is consumed. A backslash (an escape) or a
    /// control character is not canonical.
    fn until_quote(&mut self) -> Option<&'a [u8]> {
        let end = self.bytes.iter().position(|byte| *byte == b'"')?;
        let (inside, rest) = self.bytes.split_at(end);
        if inside.iter().any(|byte| *byte == b'\\' || *byte < 0x20) {
            return None;
        }
        self.bytes = &rest[1..];
        Some(inside)
    }

    /// A JSON integer that fits a u64: digits, no sign, no leading zero, no fraction.
    fn number(&mut self) -> Option<u64> {
        let digits = self
            .bytes
            .iter()
            .position(|byte| !byte.is_ascii_digit())
            .unwrap_or(self.bytes.len());
        if digits == 0 || (digits > 1 && self.bytes[0] == b'0') {
            return None;
        }
        let mut value = 0u64;
        for byte in &self.bytes[..digits] {
            value = value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
        }
        self.bytes = &self.bytes[digits..];
        Some(value)
    }

    /// `{"counter":N,"sent_ns":N,"step":N,"padding":"x…"}`: the padding only `x`.
    fn payload(&mut self) -> Option<PayloadData> {
        self.literal(b"{\"counter\":")?;
        let counter = self.number()?;
        self.literal(b",\"sent_ns\":")?;
        let sent_ns = self.number()?;
        self.literal(b",\"step\":")?;
        let step = u32::try_from(self.number()?).ok()?;
        self.literal(b",\"padding\":\"")?;
        let padding = self.bytes.iter().take_while(|byte| **byte == b'x').count();
        self.bytes = &self.bytes[padding..];
        self.literal(b"\"}")?;
        Some(PayloadData {
            counter,
            sent_ns,
            step,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::payload::{self, encode};
    use crate::fanout::topic_name;
    use crate::fanout::wire::{Incoming, decode_json};

    /// splitmix64: reproducible randomness without a dependency.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut value = self.0;
            value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            value ^ (value >> 31)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }

        /// Small, large and edge values alike.
        fn number(&mut self) -> u64 {
            match self.below(4) {
                0 => self.below(10),
                1 => self.below(1_000_000),
                2 => u64::MAX - self.below(3),
                _ => self.next(),
            }
        }
    }

    fn random_frame(random: &mut Random) -> String {
        let data = PayloadData {
            counter: random.number(),
            sent_ns: random.number(),
            step: random.number() as u32,
        };
        let mut text = String::new();
        encode(data, random.below(200) as usize, &mut text);
        let topic = topic_name(random.below(20_000) as u32);
        let seq = random.number();
        format!("{{\"topic\":\"{topic}\",\"seq\":{seq},\"data\":{text}}}")
    }

    /// What the full parse makes of a frame, in the scanner's terms.
    fn full_parse(frame: &[u8]) -> Option<ScannedDelivery> {
        match decode_json(frame) {
            Incoming::Delivery {
                topic,
                seq: Some(seq),
                data,
            } => Some(ScannedDelivery { topic, seq, data }),
            _ => None,
        }
    }

    /// Canonical frames with random values scan to exactly what serde_json reads.
    #[test]
    fn canonical_frames_scan_like_serde() {
        let mut random = Random(1);
        for _ in 0..20_000 {
            let frame = random_frame(&mut random);
            let scanned = scan_delivery(frame.as_bytes());
            assert!(scanned.is_some(), "{frame}");
            assert_eq!(scanned, full_parse(frame.as_bytes()), "{frame}");
        }
    }

    /// Frames with a byte changed, removed or inserted anywhere: whenever the scanner still
    /// accepts one, serde_json reads the same values from it. The scanner may refuse what
    /// serde accepts (that falls back to serde), never the reverse with other values.
    #[test]
    fn mutated_frames_never_scan_differently() {
        let mut random = Random(2);
        let alphabet = b"0123456789x\"{}:,\\ Tt-.e\x01\xff";
        let mut accepted = 0;
        for _ in 0..50_000 {
            let mut frame = random_frame(&mut random).into_bytes();
            let position = random.below(frame.len() as u64) as usize;
            let byte = alphabet[random.below(alphabet.len() as u64) as usize];
            match random.below(3) {
                0 => frame[position] = byte,
                1 => {
                    frame.remove(position);
                }
                _ => frame.insert(position, byte),
            }
            if let Some(scanned) = scan_delivery(&frame) {
                accepted += 1;
                assert_eq!(
                    Some(scanned),
                    full_parse(&frame),
                    "{:?}",
                    String::from_utf8_lossy(&frame)
                );
            }
        }
        // Digit changes and padding changes keep frames canonical: the test does see some.
        assert!(accepted > 1000, "{accepted}");
    }

    /// The data object alone (NATS) scans like the payload decoder reads it.
    #[test]
    fn payloads_scan_like_serde() {
        let mut random = Random(3);
        for _ in 0..5_000 {
            let data = PayloadData {
                counter: random.number(),
                sent_ns: random.number(),
                step: random.below(64) as u32,
            };
            let mut text = String::new();
            encode(data, random.below(150) as usize, &mut text);
            assert_eq!(scan_payload(text.as_bytes()), Some(data));
            assert_eq!(payload::decode(text.as_bytes()), Some(data));
        }
        for other in [
            &b"{\"counter\":1,\"sent_ns\":2,\"step\":3}"[..],
            b"{\"counter\":01,\"sent_ns\":2,\"step\":3,\"padding\":\"\"}",
            b"{\"counter\":1,\"sent_ns\":2,\"step\":3,\"padding\":\"\"} ",
            b"{\"counter\":1.0,\"sent_ns\":2,\"step\":3,\"padding\":\"\"}",
            b"{\"counter\":18446744073709551616,\"sent_ns\":2,\"step\":3,\"padding\":\"\"}",
            b"{\"counter\":1,\"sent_ns\":2,\"step\":4294967296,\"padding\":\"\"}",
        ] {
            assert_eq!(
                scan_payload(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
