//! Which pages may open connections: the `Origin` a browser sends (RFC 6454), checked against
//! `allowed_origins`, so that a page of another site cannot open a WebSocket with the user's
//! cookies (Cross-Site WebSocket Hijacking).

/// One entry of `allowed_origins`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginPattern {
    /// `https://app.example.com` (with a port if not the scheme's default), compared ignoring
    /// ASCII case.
    Exact(String),
    /// `https://*.example.com`: any origin of that scheme whose host ends in `.example.com`
    /// (one or more labels before it), on the same port.
    Subdomains {
        /// `https://`
        scheme: String,
        /// `.example.com` (and `:port` when one was given).
        suffix: String,
    },
}

impl OriginPattern {
    /// Reads an entry; an error says what is wrong with it (a start-up configuration error).
    pub fn parse(text: &str) -> Result<OriginPattern, String> {
        let invalid = |why: &str| {
            Err(format!(
                "allowed_origins entry {text:?} {why}; write scheme://host[:port] or \
                 scheme://*.domain[:port]"
            ))
        };
        let Some((scheme, rest)) = text.split_once("://") else {
            return invalid("has no scheme");
        };
        if scheme.is_empty() || !scheme.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
            return invalid("has an invalid scheme");
        }
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return invalid("has no host, or a path");
        }
        let lowered = text.to_ascii_lowercase();
        match rest.strip_prefix("*.") {
            Some(domain) if !domain.is_empty() && !domain.contains('*') => {
                Ok(OriginPattern::Subdomains {
                    scheme: format!("{}://", scheme.to_ascii_lowercase()),
                    suffix: format!(".{}", domain.to_ascii_lowercase()),
                })
            }
            Some(_) => invalid("has a wildcard without a domain after it"),
            None if rest.contains('*') => invalid("has a wildcard not at the host's start"),
            None => Ok(OriginPattern::Exact(lowered)),
        }
    }

    /// Whether the `Origin` header's value `origin` matches.
    pub fn matches(&self, origin: &[u8]) -> bool {
        match self {
            OriginPattern::Exact(exact) => origin.eq_ignore_ascii_case(exact.as_bytes()),
            OriginPattern::Subdomains { scheme, suffix } => {
                let long_enough = origin.len() > scheme.len() + suffix.len();
                let (start, end) = (scheme.as_bytes(), suffix.as_bytes());
                if !long_enough
                    || !origin[..start.len()].eq_ignore_ascii_case(start)
                    || !origin[origin.len() - end.len()..].eq_ignore_ascii_case(end)
                {
                    return false;
                }
                // The labels before the domain: host characters only, so that neither a port
                // nor a path nor another authority hides in them.
                let labels = &origin[start.len()..origin.len() - end.len()];
                labels
                    .iter()
                    .all(|&byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.')
                    && !labels.starts_with(b".")
                    && !labels.ends_with(b".")
            }
        }
    }
}

/// `allowed_origins`, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedOrigins {
    patterns: Vec<OriginPattern>,
}

impl AllowedOrigins {
    pub fn parse(entries: &[String]) -> Result<AllowedOrigins, String> {
        let patterns = entries
            .iter()
            .map(|entry| OriginPattern::parse(entry))
            .collect::<Result<_, _>>()?;
        Ok(AllowedOrigins { patterns })
    }

    /// Whether any origin is configured (else the `Origin` header is not checked).
    pub fn is_set(&self) -> bool {
        !self.patterns.is_empty()
    }

    /// Whether `origin` is listed.
    pub fn allows(&self, origin: &[u8]) -> bool {
        self.patterns.iter().any(|pattern| pattern.matches(origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(entries: &[&str]) -> AllowedOrigins {
        let entries: Vec<String> = entries.iter().map(|entry| entry.to_string()).collect();
        AllowedOrigins::parse(&entries).unwrap()
    }

    /// Proves exact origins and subdomain wildcards admit what they name and nothing that
    /// merely looks like it.
    #[test]
    fn exact_and_wildcard_origins() {
        let allowed = origins(&["https://app.example.com", "https://*.trading.example"]);
        let admitted = [
            "https://app.example.com",
            "HTTPS://APP.example.com",
            "https://eu.trading.example",
            "https://a.b.trading.example",
        ];
        for origin in admitted {
            assert!(allowed.allows(origin.as_bytes()), "{origin}");
        }
        let refused = [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://app.example.com.evil.test",
            "https://evilapp.example.com",
            "https://trading.example",
            "https://.trading.example",
            "https://eviltrading.example",
            "https://x.evil.test/.trading.example",
            "https://evil.test:1@x.trading.example",
            "http://eu.trading.example",
            "null",
            "",
        ];
        for origin in refused {
            assert!(!allowed.allows(origin.as_bytes()), "{origin}");
        }
    }

    /// Proves a malformed entry is a start-up error, not a silent never-match.
    #[test]
    fn malformed_entries_are_refused() {
        for entry in [
            "app.example.com",
            "https://",
            "https://*.",
            "https://a.*.example.com",
            "https://app.example.com/path",
            "://x",
        ] {
            assert!(OriginPattern::parse(entry).is_err(), "{entry}");
        }
    }
}
