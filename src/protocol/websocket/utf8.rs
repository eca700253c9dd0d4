//! UTF-8 validation of text messages, incremental across fragments and partial reads.
//!
//! A text message may arrive in many pieces, and a piece may end inside a code point. The
//! validator carries those (at most three) trailing bytes to the next piece and fails as soon as
//! a sequence can no longer become valid, so that a peer sending invalid text is closed with 1007
//! at once rather than after it has sent the rest of a large message (Autobahn 6.4.x checks
//! this). Whole pieces are checked with simdutf8; the carried code point is completed by hand.

/// The longest UTF-8 encoding of a code point.
const CODE_POINT_BYTES_MAX: usize = 4;

/// A text payload was not valid UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utf8Error;

/// Payloads up to this size are first checked for plain ASCII eight bytes at a time (see
/// [`validate`]).
const ASCII_FIRST_PAYLOAD_BYTES_MAX: usize = 512;

/// Validates a complete payload (the fast path: a whole message in one piece).
///
/// Small payloads were just unmasked with eight-byte stores; reading them back at once with
/// simdutf8's 32-byte loads stalls on store forwarding (the loads straddle several pending
/// stores), which made validation most of the cost of a 100-byte message. Reading eight-byte
/// words at the same offsets forwards cleanly, and market-data JSON is nearly always ASCII, so
/// small payloads are checked for ASCII that way first and go to simdutf8 only if a byte is not.
pub fn validate(payload: &[u8]) -> Result<(), Utf8Error> {
    if payload.len() <= ASCII_FIRST_PAYLOAD_BYTES_MAX && is_ascii_by_words(payload) {
        return Ok(());
    }
    validate_str(payload).map(drop)
}

/// Validates a complete payload and returns it as text (close reasons).
pub fn validate_str(payload: &[u8]) -> Result<&str, Utf8Error> {
    simdutf8::basic::from_utf8(payload).map_err(|_| Utf8Error)
}

/// Whether every byte is ASCII, read in eight-byte words from the start of `bytes`.
fn is_ascii_by_words(bytes: &[u8]) -> bool {
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    let mut combined = 0u64;
    for word in words.by_ref() {
        combined |= u64::from_ne_bytes(word.try_into().expect("eight bytes"));
    }
    let tail = words
        .remainder()
        .iter()
        .fold(0u8, |combined, byte| combined | byte);
    combined & HIGH_BITS == 0 && tail < 0x80
}

/// State of a validation in progress: the bytes of an incomplete trailing code point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    carry: [u8; CODE_POINT_BYTES_MAX],
    carry_bytes: u8,
}

impl Utf8Validator {
    /// Forgets any carried bytes, ready for a new message.
    pub fn reset(&mut self) {
        self.carry_bytes = 0;
    }

    /// Validates the next piece of a message. Fails if the piece, together with what came before,
    /// can no longer be valid UTF-8 whatever follows.
    pub fn feed(&mut self, piece: &[u8]) -> Result<(), Utf8Error> {
        let rest = if self.carry_bytes > 0 {
            self.complete_carry(piece)?
        } else {
            piece
        };
        // One pass of the fast validator over everything but a code point cut at the end, then
        // a prefix check of that cut code point (at most three bytes).
        let cut = incomplete_tail_start(rest);
        simdutf8::basic::from_utf8(&rest[..cut]).map_err(|_| Utf8Error)?;
        let tail = &rest[cut..];
        if tail.is_empty() {
            return Ok(());
        }
        match simdutf8::compat::from_utf8(tail) {
            Err(error) if error.error_len().is_none() && error.valid_up_to() == 0 => {
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_bytes = tail.len() as u8;
                Ok(())
            }
            _ => Err(Utf8Error),
        }
    }

    /// Ends the message: a code point left incomplete is an error.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let incomplete = self.carry_bytes > 0;
        self.reset();
        if incomplete { Err(Utf8Error) } else { Ok(()) }
    }

    /// Moves bytes from `piece` into the carried code point until it is complete (then checks it)
    /// or `piece` runs out (then checks the prefix). Returns what is left of `piece`.
    fn complete_carry<'a>(&mut self, piece: &'a [u8]) -> Result<&'a [u8], Utf8Error> {
        let carried = usize::from(self.carry_bytes);
        let needed = sequence_bytes(self.carry[0]) - carried;
        let taken = needed.min(piece.len());
        self.carry[carried..carried + taken].copy_from_slice(&piece[..taken]);
        let filled = carried + taken;
        match simdutf8::compat::from_utf8(&self.carry[..filled]) {
            Ok(_) => self.carry_bytes = 0,
            Err(error) if error.error_len().is_none() => self.carry_bytes = filled as u8,
            Err(_) => return Err(Utf8Error),
        }
        Ok(&piece[taken..])
    }
}

/// Where a code point that the end of `bytes` cuts short begins (`bytes.len()` when none is):
/// the last non-continuation byte within the final three, if its sequence runs past the end.
fn incomplete_tail_start(bytes: &[u8]) -> usize {
    let length = bytes.len();
    for back in 1..=length.min(CODE_POINT_BYTES_MAX - 1) {
        let byte = bytes[length - back];
        if byte & 0xC0 != 0x80 {
            let sequence = match byte {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            return if sequence > back {
                length - back
            } else {
                length
            };
        }
    }
    length
}

/// The length of the sequence a valid lead byte starts. Only lead bytes of valid prefixes are
/// ever carried, so other bytes cannot reach here.
fn sequence_bytes(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => unreachable!("carried a byte that is not a lead byte: {lead:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn validate_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<(), Utf8Error> {
        let mut validator = Utf8Validator::default();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, bytes.len());
            validator.feed(&bytes[start..cut])?;
            start = cut;
        }
        validator.feed(&bytes[start..])?;
        validator.finish()
    }

    /// Proves every split of a multi-byte text validates like the whole.
    #[test]
    fn every_split_point_of_valid_text() {
        let text = "κόσμε 株価 €100 𝄞 ascii".as_bytes();
        for first in 0..=text.len() {
            for second in first..=text.len() {
                assert_eq!(validate_in_pieces(text, &[first, second]), Ok(()));
            }
        }
    }

    /// Proves whole-payload validation agrees with std around the ASCII-first size limit, for
    /// ASCII, multi-byte and invalid payloads with the odd byte at every position.
    #[test]
    fn whole_payload_agrees_with_std() {
        for length in [0, 1, 7, 8, 9, 100, 511, 512, 513, 1000] {
            let ascii = vec![b'a'; length];
            assert_eq!(validate(&ascii), Ok(()));
            for position in 0..length {
                for odd in [0x80u8, 0xC3, 0xFF] {
                    let mut bytes = ascii.clone();
                    bytes[position] = odd;
                    let expected = std::str::from_utf8(&bytes).is_ok();
                    assert_eq!(
                        validate(&bytes).is_ok(),
                        expected,
                        "length {length} at {position}"
                    );
                }
            }
        }
        assert_eq!(validate("price €191.20 株価".as_bytes()), Ok(()));
    }

    /// Proves an invalid byte fails in the piece that carries it, before the message ends.
    #[test]
    fn fails_fast_on_invalid_piece() {
        let mut validator = Utf8Validator::default();
        validator.feed("κόσμε".as_bytes()).unwrap();
        assert_eq!(
            validator.feed(&[0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xED]),
            Ok(())
        );
        // 0xED 0xA0 starts a surrogate: invalid as soon as the second byte is seen.
        assert_eq!(validator.feed(&[0xA0]), Err(Utf8Error));
        // A lone continuation byte and a byte that never appears in UTF-8.
        assert_eq!(Utf8Validator::default().feed(&[0x80]), Err(Utf8Error));
        assert_eq!(Utf8Validator::default().feed(&[b'a', 0xFF]), Err(Utf8Error));
        // An impossible lead byte at the end of a piece fails at once, not at the next piece.
        assert_eq!(Utf8Validator::default().feed(&[b'a', 0xF5]), Err(Utf8Error));
    }

    /// Proves a message that ends inside a code point is refused at its end.
    #[test]
    fn incomplete_code_point_at_end_fails() {
        let mut validator = Utf8Validator::default();
        validator.feed(&[0xF0, 0x9D]).unwrap();
        validator.feed(&[0x84]).unwrap();
        assert_eq!(validator.finish(), Err(Utf8Error));
    }

    proptest! {
        /// Proves piecewise validation agrees with std on arbitrary bytes and cut points.
        #[test]
        fn agrees_with_std(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                           cuts in proptest::collection::vec(0usize..64, 0..6)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let expected = std::str::from_utf8(&bytes).is_ok();
            prop_assert_eq!(validate_in_pieces(&bytes, &cuts).is_ok(), expected);
        }

        /// Proves the same on valid text cut anywhere (including inside code points).
        #[test]
        fn valid_text_cut_anywhere(text in "\\PC{0,40}", cuts in proptest::collection::vec(0usize..160, 0..8)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(validate_in_pieces(text.as_bytes(), &cuts), Ok(()));
        }
    }
}
