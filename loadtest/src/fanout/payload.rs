//! The data of every published message: a JSON object with the per-topic counter, the
//! publisher's send time and the step it belongs to, padded to the requested size.
//!
//! `{"counter":12,"sent_ns":81234567890,"step":0,"padding":"xxxx"}`: full names, since the
//! object travels verbatim through every protocol and people read it in packet captures.
//! The `quote` kind puts a market quote before the padding, whose prices and sizes change
//! with every message, so that compression meets what it meets in production rather than a
//! run of `x`.

use serde::{Deserialize, Serialize};

/// What a message's data holds besides the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PayloadKind {
    /// Only `x` padding: the lightest for the subscribers' scanner.
    #[default]
    Padding,
    /// A quote (`symbol`, `bid`, `ask`, their sizes, `last`, `volume`, `exchange`).
    Quote,
}

/// What a subscriber needs from a message's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct PayloadData {
    /// 1, 2, 3, ... per topic, over the whole run.
    pub counter: u64,
    /// CLOCK_MONOTONIC nanoseconds when the publisher queued the message.
    pub sent_ns: u64,
    /// The step of the rate plan the message was published in.
    pub step: u32,
}

/// The data text for `data`, padded with `x` to `payload_bytes` when that is more than the
/// unpadded object needs (the padding field is always present, maybe empty).
pub fn encode(data: PayloadData, payload_bytes: usize, text: &mut String) {
    use std::fmt::Write as _;
    text.clear();
    let _ = write!(
        text,
        "{{\"counter\":{},\"sent_ns\":{},\"step\":{},\"padding\":\"",
        data.counter, data.sent_ns, data.step
    );
    // Two bytes close the string and the object.
    let padding = payload_bytes.saturating_sub(text.len() + 2);
    text.extend(std::iter::repeat_n('x', padding));
    text.push_str("\"}");
}

/// [`encode`] for `kind`: a quote, when asked, comes between the counters and the padding.
pub fn encode_kind(data: PayloadData, kind: PayloadKind, payload_bytes: usize, text: &mut String) {
    if kind == PayloadKind::Padding {
        return encode(data, payload_bytes, text);
    }
    use std::fmt::Write as _;
    // splitmix64 of the counter and time: prices that move, sizes that change.
    let mut mixed =
        (data.counter ^ data.sent_ns.rotate_left(17)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    mixed ^= mixed >> 31;
    let bid_cents = 10_000 + mixed % 40_000;
    let ask_cents = bid_cents + 1 + (mixed >> 20) % 9;
    let last_cents = bid_cents + (mixed >> 24) % (ask_cents - bid_cents + 1);
    let cents = |value: u64| format!("{}.{:02}", value / 100, value % 100);
    text.clear();
    let _ = write!(
        text,
        "{{\"counter\":{},\"sent_ns\":{},\"step\":{},\"symbol\":\"{}\",\"bid\":{},\"ask\":{},\
         \"bid_size\":{},\"ask_size\":{},\"last\":{},\"volume\":{},\"exchange\":\"{}\",\
         \"padding\":\"",
        data.counter,
        data.sent_ns,
        data.step,
        [
            "AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "AVGO"
        ][(mixed >> 8) as usize % 8],
        cents(bid_cents),
        cents(ask_cents),
        100 * (1 + (mixed >> 32) % 50),
        100 * (1 + (mixed >> 40) % 50),
        cents(last_cents),
        1_000_000 + data.counter * 137 + (mixed >> 48) % 1000,
        ["XNAS", "XNYS", "ARCX", "BATS"][(mixed >> 4) as usize % 4],
    );
    let padding = payload_bytes.saturating_sub(text.len() + 2);
    text.extend(std::iter::repeat_n('x', padding));
    text.push_str("\"}");
}

/// The data of a message, or `None` when it is not ours (another publisher's, or corrupt).
pub fn decode(bytes: &[u8]) -> Option<PayloadData> {
    serde_json::from_slice(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encoded data has the requested size (when it fits) and decodes to what was put in.
    #[test]
    fn encodes_padded_and_decodes() {
        let data = PayloadData {
            counter: 42,
            sent_ns: 1_234_567_890_123,
            step: 3,
        };
        let mut text = String::new();
        for payload_bytes in [0, 10, 80, 100, 1000] {
            encode(data, payload_bytes, &mut text);
            assert!(text.len() >= payload_bytes.min(text.len()));
            if payload_bytes >= 80 {
                assert_eq!(text.len(), payload_bytes, "{text}");
            }
            assert_eq!(decode(text.as_bytes()), Some(data), "{text}");
        }
        assert_eq!(decode(b"{\"counter\":1}"), None);
        assert_eq!(decode(b"{\"price\":12.5}"), None);
        assert_eq!(decode(b"not json"), None);
    }

    /// Quotes decode to their counters, change from message to message and are padded to
    /// the size asked for (a quote alone takes about 185 bytes).
    #[test]
    fn quotes_decode_and_vary() {
        let mut texts = Vec::new();
        for counter in 1..=20 {
            let data = PayloadData {
                counter,
                sent_ns: 1_234_567_890_123 + counter * 1000,
                step: 2,
            };
            let mut text = String::new();
            encode_kind(data, PayloadKind::Quote, 200, &mut text);
            assert_eq!(decode(text.as_bytes()), Some(data), "{text}");
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(
                value["ask"].as_f64().unwrap() > value["bid"].as_f64().unwrap(),
                "{text}"
            );
            assert_eq!(text.len(), 200, "{text}");
            texts.push(text);
        }
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), 20);
    }
}
