//! Close codes (RFC 6455 §7.4) and which of them a peer may send.

/// A WebSocket close status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is going down or the client navigated away.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: the peer sent a kind of data we do not accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no status code was present. Never sent on the wire.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection dropped without a close frame. Never sent on the wire.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a text message or close reason was not valid UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: the peer violated a policy (for example a slow consumer).
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a frame or message was over the configured size limit.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: the server met a condition it did not expect.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1013: the server is overloaded; the client should retry later.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// Whether a peer may put this code in a close frame (RFC 6455 §7.4.1, §7.4.2 and the IANA
    /// registry). 1004, 1005, 1006 and 1015 are reserved or local-only; 1016–2999 are unassigned
    /// or reserved for extensions; 3000–3999 are registered by libraries and 4000–4999 are private.
    pub fn is_allowed_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::CloseCode;

    /// Proves the wire-validity table matches RFC 6455 §7.4 for every 16-bit code.
    #[test]
    fn wire_validity_matches_rfc() {
        for code in 0..=u16::MAX {
            let expected = matches!(code, 1000 | 1001 | 1002 | 1003 | 1007 | 1008 | 1009 | 1010)
                || matches!(code, 1011..=1014)
                || (3000..=4999).contains(&code);
            assert_eq!(
                CloseCode(code).is_allowed_on_wire(),
                expected,
                "code {code}"
            );
        }
        for reserved in [1004, 1005, 1006, 1015, 999, 2999, 5000] {
            assert!(!CloseCode(reserved).is_allowed_on_wire());
        }
    }
}
