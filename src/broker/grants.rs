//! What an authenticated connection may do: the topics it may subscribe to and publish on.
//!
//! A token's `subscribe` and `publish` claims are lists of patterns, each an exact topic name, a
//! prefix ending in `*` (`FX.*` grants `FX.EURUSD`), or `*` alone (every topic). They are
//! compiled once, when the token is verified, and shared (`Arc`) by the connection and the
//! broker; a check is a binary search among the exact names and a scan of the prefixes, both
//! bounded by [`GRANT_PATTERNS_MAX`].

use super::topic::validate_topic;

/// Most patterns one claim may list. A token is read once per connection, but its patterns are
/// matched on every subscribe and publish: 1,024 covers an entitlement list of every symbol a
/// desk trades, while keeping a check to a binary search and a short scan.
pub const GRANT_PATTERNS_MAX: usize = 1024;

/// Why a claim's patterns were refused (the token is refused with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    TooManyPatterns,
    /// A pattern that is neither a valid topic name, nor one followed by `*`, nor `*` alone.
    InvalidPattern,
}

impl GrantError {
    pub fn reason(self) -> &'static str {
        match self {
            GrantError::TooManyPatterns => "a grant claim lists more than 1024 patterns",
            GrantError::InvalidPattern => {
                "a grant pattern is a topic name, a prefix ending in *, or * alone"
            }
        }
    }
}

/// One claim's patterns, compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicPatterns {
    /// `*` was listed: every topic.
    every: bool,
    /// Exact names, sorted for binary search.
    exact: Box<[Box<str>]>,
    /// Prefixes without their `*`.
    prefixes: Box<[Box<str>]>,
}

impl TopicPatterns {
    /// No topic at all (an absent claim).
    pub fn none() -> TopicPatterns {
        TopicPatterns::default()
    }

    /// Every topic (what a connection without authentication may do).
    pub fn every() -> TopicPatterns {
        TopicPatterns {
            every: true,
            ..TopicPatterns::default()
        }
    }

    /// Compiles a claim's patterns; `topic_bytes_max` bounds each name as topics are bounded.
    pub fn compile<S: AsRef<str>>(
        patterns: &[S],
        topic_bytes_max: usize,
    ) -> Result<TopicPatterns, GrantError> {
        if patterns.len() > GRANT_PATTERNS_MAX {
            return Err(GrantError::TooManyPatterns);
        }
        let mut compiled = TopicPatterns::none();
        let (mut exact, mut prefixes) = (Vec::new(), Vec::new());
        for pattern in patterns {
            let pattern = pattern.as_ref();
            if pattern == "*" {
                compiled.every = true;
                continue;
            }
            let (name, is_prefix) = match pattern.strip_suffix('*') {
                Some(prefix) => (prefix, true),
                None => (pattern, false),
            };
            // A `*` anywhere else would read as a wildcard it is not.
            if name.contains('*') {
                return Err(GrantError::InvalidPattern);
            }
            validate_topic(name, topic_bytes_max).map_err(|_| GrantError::InvalidPattern)?;
            match is_prefix {
                true => prefixes.push(Box::from(name)),
                false => exact.push(Box::from(name)),
            }
        }
        exact.sort_unstable();
        exact.dedup();
        compiled.exact = exact.into_boxed_slice();
        compiled.prefixes = prefixes.into_boxed_slice();
        Ok(compiled)
    }

    /// Whether `topic` is granted.
    pub fn allows(&self, topic: &str) -> bool {
        self.every
            || self
                .exact
                .binary_search_by(|name| (**name).cmp(topic))
                .is_ok()
            || self
                .prefixes
                .iter()
                .any(|prefix| topic.starts_with(&**prefix))
    }
}

/// What one token grants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    pub subscribe: TopicPatterns,
    pub publish: TopicPatterns,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(patterns: &[&str]) -> TopicPatterns {
        TopicPatterns::compile(patterns, 128).unwrap()
    }

    /// Proves exact names, prefixes and `*` grant what they name and nothing else.
    #[test]
    fn patterns_grant_exact_prefix_and_every() {
        let patterns = compile(&["AAPL", "FX.*", "MSFT"]);
        assert!(patterns.allows("AAPL"));
        assert!(patterns.allows("MSFT"));
        assert!(patterns.allows("FX.EURUSD"));
        assert!(
            patterns.allows("FX."),
            "a prefix grants itself followed by nothing"
        );
        assert!(!patterns.allows("AAPLX"), "an exact name is not a prefix");
        assert!(!patterns.allows("AAP"));
        assert!(!patterns.allows("FX"), "FX.* does not grant FX");
        assert!(!patterns.allows("GOOG"));
        assert!(compile(&["*"]).allows("anything"));
        assert!(!TopicPatterns::none().allows("AAPL"));
        assert!(TopicPatterns::every().allows("AAPL"));
    }

    /// Proves a malformed or oversized claim is refused rather than half-applied.
    #[test]
    fn bad_patterns_are_refused() {
        let invalid = ["", "A\tB", "**", "A*B*", "\u{e9}*"];
        for pattern in invalid {
            assert_eq!(
                TopicPatterns::compile(&[pattern], 128),
                Err(GrantError::InvalidPattern),
                "{pattern:?}"
            );
        }
        let long = "A".repeat(129);
        assert_eq!(
            TopicPatterns::compile(&[long.as_str()], 128),
            Err(GrantError::InvalidPattern)
        );
        let many = vec!["A"; GRANT_PATTERNS_MAX + 1];
        assert_eq!(
            TopicPatterns::compile(&many, 128),
            Err(GrantError::TooManyPatterns)
        );
    }
}
