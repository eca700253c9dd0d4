//! Idempotent publishing: a publish may carry a key (HTTP's `Idempotency-Key` header, a
//! WebSocket publish's `"id"`), and the topic's owner remembers which seq each key got, for a
//! window, so that a retry after a lost answer is answered with the original seq instead of
//! being published twice.
//!
//! The table is bounded by `idempotency_keys_max` entries and `idempotency_window_ms`: past
//! either, the oldest keys are forgotten first (a retry later than that may publish again,
//! which the README states).

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use super::topic::{TopicError, TopicName, validate_topic_bytes};

/// The longest key a client may give: room for a UUID or a client's own counter with a prefix.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;

/// A client's idempotency key: 1 to 128 bytes of printable ASCII (checked like a topic name:
/// it is echoed in acknowledgements and must not carry control bytes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(Bytes);

impl IdempotencyKey {
    pub fn new(key: Bytes) -> Result<IdempotencyKey, TopicError> {
        validate_topic_bytes(&key, IDEMPOTENCY_KEY_BYTES_MAX)?;
        Ok(IdempotencyKey(key))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The key of item `index` of a batch published under this key.
    pub fn for_item(&self, index: usize) -> IdempotencyKey {
        let mut key = Vec::with_capacity(self.0.len() + 8);
        key.extend_from_slice(&self.0);
        key.push(b'#');
        key.extend_from_slice(index.to_string().as_bytes());
        IdempotencyKey(Bytes::from(key))
    }
}

/// The seqs recent keys got, per topic.
#[derive(Debug)]
pub struct IdempotencyKeys {
    seqs: HashMap<(TopicName, IdempotencyKey), u64>,
    /// Keys in the order they were remembered, with when they are forgotten.
    order: VecDeque<(u64, TopicName, IdempotencyKey)>,
    keys_max: usize,
    window_ms: u64,
}

impl IdempotencyKeys {
    pub fn new(keys_max: usize, window_ms: u64) -> IdempotencyKeys {
        IdempotencyKeys {
            seqs: HashMap::new(),
            order: VecDeque::new(),
            keys_max,
            window_ms,
        }
    }

    /// The seq `key` got on `topic`, if it was used within the window.
    pub fn seq_of(&mut self, topic: &TopicName, key: &IdempotencyKey, now_ms: u64) -> Option<u64> {
        self.forget_expired(now_ms);
        self.seqs.get(&(topic.clone(), key.clone())).copied()
    }

    /// Remembers that `key` got `seq` on `topic`. Both are copied into buffers of their own:
    /// they are kept for the window, and slices of the request they came in would pin it.
    pub fn remember(&mut self, topic: &TopicName, key: IdempotencyKey, seq: u64, now_ms: u64) {
        if self.keys_max == 0 {
            return;
        }
        while self.seqs.len() >= self.keys_max {
            self.forget_oldest();
        }
        let (topic, key) = (
            topic.to_kept(),
            IdempotencyKey(Bytes::copy_from_slice(&key.0)),
        );
        self.seqs.insert((topic.clone(), key.clone()), seq);
        self.order.push_back((now_ms + self.window_ms, topic, key));
    }

    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    fn forget_expired(&mut self, now_ms: u64) {
        while self
            .order
            .front()
            .is_some_and(|(expires_ms, _, _)| *expires_ms <= now_ms)
        {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, topic, key)) = self.order.pop_front() {
            self.seqs.remove(&(topic, key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> IdempotencyKey {
        IdempotencyKey::new(Bytes::copy_from_slice(text.as_bytes())).unwrap()
    }

    fn topic(text: &str) -> TopicName {
        TopicName::copy_from(text.as_bytes(), 128).unwrap()
    }

    /// Proves a key is remembered per topic within the window, forgotten after it, and the
    /// table never holds more than its maximum.
    #[test]
    fn keys_are_remembered_per_topic_within_bounds() {
        let mut keys = IdempotencyKeys::new(3, 1000);
        keys.remember(&topic("A"), key("k1"), 7, 0);
        assert_eq!(keys.seq_of(&topic("A"), &key("k1"), 999), Some(7));
        assert_eq!(keys.seq_of(&topic("B"), &key("k1"), 999), None, "per topic");
        assert_eq!(keys.seq_of(&topic("A"), &key("k1"), 1000), None, "expired");
        for index in 0..10 {
            keys.remember(&topic("A"), key(&format!("x{index}")), index, 2000);
            assert!(keys.len() <= 3);
        }
        assert_eq!(keys.seq_of(&topic("A"), &key("x9"), 2000), Some(9));
        assert_eq!(
            keys.seq_of(&topic("A"), &key("x0"), 2000),
            None,
            "the oldest went"
        );
    }

    /// Proves keys are checked like names: no control bytes, no more than 128 bytes.
    #[test]
    fn keys_are_checked() {
        assert!(IdempotencyKey::new(Bytes::from_static(b"a\nb")).is_err());
        assert!(IdempotencyKey::new(Bytes::from(vec![b'k'; 129])).is_err());
        assert_eq!(key("batch-1").for_item(12).as_str(), "batch-1#12");
    }
}
