//! Bounds on published JSON that serde_json does not enforce when it only validates.
//!
//! A publish's `data` is validated as JSON and kept verbatim ([`serde_json::value::RawValue`]).
//! Validation alone accepts values that break the parsers of the subscribers it is replayed to:
//! nesting 100,000 deep (serde_json's own 128-level limit applies only when it builds a tree, a
//! browser's `JSON.parse` or a recursive parser overflows its stack), a number of 60,000 digits
//! (quadratic to convert in many parsers), and escapes of unpaired UTF-16 surrogates (`"\ud800"`,
//! which no UTF-8 string can hold: strict parsers refuse the whole message). [`check`] refuses
//! all three in one linear pass over bytes serde_json already accepted, with no allocation and
//! no recursion, so it costs a publish no more than reading it once.

/// The bounds [`check`] enforces; the broker's `publish_json_*` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonBounds {
    /// Most arrays and objects open at once: `1`, `"a"` are depth 0, `[1]` is 1, `{"a":[1]}` 2.
    pub depth_max: usize,
    /// Longest number, in characters of its text (sign, digits, point and exponent).
    pub number_bytes_max: usize,
}

/// Which bound a JSON value broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonBoundError {
    TooDeep,
    NumberTooLong,
    /// A `\uD800`–`\uDBFF` escape not followed at once by a `\uDC00`–`\uDFFF` one, or the
    /// latter without the former.
    UnpairedSurrogate,
}

impl JsonBoundError {
    /// Why the data was refused, for an error reply (plain ASCII, no quotes to escape).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooDeep => "data is nested deeper than publish_json_depth_max",
            Self::NumberTooLong => "data has a number longer than publish_json_number_bytes_max",
            Self::UnpairedSurrogate => "data has an unpaired UTF-16 surrogate escape",
        }
    }
}

/// Checks one JSON value (or document) that serde_json has already accepted against `bounds`.
/// Outside strings, brackets count depth and a run starting with `-` or a digit is a number;
/// inside strings only escapes matter. On text that is not JSON the answer is meaningless but
/// the pass still ends without a panic.
pub fn check(json: &[u8], bounds: &JsonBounds) -> Result<(), JsonBoundError> {
    let mut depth: usize = 0;
    let mut index = 0;
    while let Some(&byte) = json.get(index) {
        match byte {
            b'[' | b'{' => {
                depth += 1;
                if depth > bounds.depth_max {
                    return Err(JsonBoundError::TooDeep);
                }
                index += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                index += 1;
            }
            b'"' => index = string_end(json, index + 1)?,
            b'-' | b'0'..=b'9' => {
                let end = number_end(json, index);
                if end - index > bounds.number_bytes_max {
                    return Err(JsonBoundError::NumberTooLong);
                }
                index = end;
            }
            // Whitespace, separators and the letters of true, false and null.
            _ => index += 1,
        }
    }
    Ok(())
}

/// Where the number starting at `start` ends: the bytes JSON's number grammar uses.
fn number_end(json: &[u8], start: usize) -> usize {
    let length = json[start..]
        .iter()
        .take_while(|byte| matches!(byte, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        .count();
    start + length
}

/// Where the string whose contents start at `start` ends (after its closing quote), checking
/// that its `\u` escapes pair their surrogates.
fn string_end(json: &[u8], start: usize) -> Result<usize, JsonBoundError> {
    // Whether the last unit was a high surrogate escape, which the next must complete.
    let mut high_surrogate_open = false;
    let mut index = start;
    while let Some(&byte) = json.get(index) {
        let unit = match byte {
            b'\\' if json.get(index + 1) == Some(&b'u') => {
                let unit = json.get(index + 2..index + 6).and_then(hex_unit);
                index += 6;
                unit
            }
            b'\\' => {
                index += 2;
                None
            }
            b'"' if high_surrogate_open => return Err(JsonBoundError::UnpairedSurrogate),
            b'"' => return Ok(index + 1),
            _ => {
                index += 1;
                None
            }
        };
        high_surrogate_open = match (high_surrogate_open, unit) {
            (false, Some(0xD800..=0xDBFF)) => true,
            (true, Some(0xDC00..=0xDFFF)) => false,
            (false, Some(0xDC00..=0xDFFF)) | (true, _) => {
                return Err(JsonBoundError::UnpairedSurrogate);
            }
            (false, _) => false,
        };
    }
    // Unterminated: not JSON, which the caller vouched for; nothing more to check.
    Ok(index)
}

/// Four hex digits as a UTF-16 code unit.
fn hex_unit(digits: &[u8]) -> Option<u16> {
    digits.iter().try_fold(0u16, |unit, &digit| {
        let value = (digit as char).to_digit(16)?;
        Some(unit << 4 | value as u16)
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    const BOUNDS: JsonBounds = JsonBounds {
        depth_max: 64,
        number_bytes_max: 64,
    };

    fn checked(json: &str) -> Result<(), JsonBoundError> {
        check(json.as_bytes(), &BOUNDS)
    }

    /// Proves depth counts arrays and objects open at once, up to the bound and not past it,
    /// and that brackets inside strings do not count.
    #[test]
    fn depth_is_bounded() {
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(checked(&nested(64)), Ok(()));
        assert_eq!(checked(&nested(65)), Err(JsonBoundError::TooDeep));
        assert_eq!(checked(&nested(100_000)), Err(JsonBoundError::TooDeep));
        let objects = format!("{}1{}", r#"{"a":"#.repeat(65), "}".repeat(65));
        assert_eq!(checked(&objects), Err(JsonBoundError::TooDeep));
        let wide = format!("[{}]", "[1],".repeat(1000) + "[2]");
        assert_eq!(checked(&wide), Ok(()), "siblings do not add up");
        let in_string = format!(r#"["{}"]"#, "[{".repeat(1000));
        assert_eq!(checked(&in_string), Ok(()));
    }

    /// Proves a number's whole text counts (sign, fraction, exponent), numbers in strings do
    /// not, and the literals' letters are no number.
    #[test]
    fn number_length_is_bounded() {
        let digits = |count: usize| "9".repeat(count);
        assert_eq!(checked(&digits(64)), Ok(()));
        assert_eq!(checked(&digits(65)), Err(JsonBoundError::NumberTooLong));
        assert_eq!(
            checked(&format!("[1, {}]", digits(60_000))),
            Err(JsonBoundError::NumberTooLong)
        );
        let exponent = format!("-{}.5e+10", digits(57));
        assert_eq!(exponent.len(), 64);
        assert_eq!(checked(&exponent), Ok(()));
        assert_eq!(
            checked(&format!("-{exponent}")),
            Err(JsonBoundError::NumberTooLong)
        );
        assert_eq!(
            checked(&format!(r#"{{"{}":"{}"}}"#, digits(99), digits(99))),
            Ok(())
        );
        assert_eq!(checked("[true,false,null,1e5]"), Ok(()));
    }

    /// Proves surrogate escapes must pair: high then low at once; alone, reversed or split by
    /// anything else they are refused, in keys as in values; an escaped backslash is no escape.
    #[test]
    fn surrogates_must_pair() {
        let valid = [
            r#""\ud83d\ude00""#,
            r#""a\uD83D\uDE00b""#,
            r#"{"\ud83d\ude00":"\u0041\u00e9"}"#,
            r#""\\ud800""#,
            r#""\"\ud83d\ude00\"""#,
        ];
        for json in valid {
            assert_eq!(checked(json), Ok(()), "{json}");
        }
        let unpaired = [
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ude00\ud83d""#,
            r#""\ud83d x\ude00""#,
            r#""\ud83d\u0041""#,
            r#""\ud83d\ud83d\ude00""#,
            r#""\ud83d\n""#,
            r#"{"\ud800":1}"#,
            r#"["ok", "\udfff"]"#,
        ];
        for json in unpaired {
            assert_eq!(
                checked(json),
                Err(JsonBoundError::UnpairedSurrogate),
                "{json}"
            );
        }
    }

    /// Proves bytes that are not JSON never panic the checker (it runs only after serde_json,
    /// but must stay total).
    #[test]
    fn truncated_input_does_not_panic() {
        for json in [r#""\u"#, r#""\ud8"#, r#""\"#, "[[", "]]]", "-", r#""abc"#] {
            let _ = checked(json);
        }
    }

    /// The depth of a value and its longest number's text, the way serde_json writes it.
    fn shape(value: &Value) -> (usize, usize) {
        match value {
            Value::Array(items) => items
                .iter()
                .map(shape)
                .fold((1, 0), |(depth, number), item| {
                    (depth.max(item.0 + 1), number.max(item.1))
                }),
            Value::Object(fields) => fields.values().map(shape).fold((1, 0), |acc, item| {
                (acc.0.max(item.0 + 1), acc.1.max(item.1))
            }),
            Value::Number(number) => (0, number.to_string().len()),
            _ => (0, 0),
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |float| float.is_finite())
                .prop_map(Value::from),
            "[ -~\u{e9}\u{1f600}\"\\\\]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(12, 128, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z0-9\\[\\]{}\"]{0,6}", inner, 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    /// One piece of a JSON string's contents: text, an escape, or a surrogate escape.
    fn string_piece() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("a"),
            Just("é"),
            Just(r"\n"),
            Just(r"\\"),
            Just(r#"\""#),
            Just(r"\u0041"),
            Just(r"\ud83d"),
            Just(r"\uDBFF"),
            Just(r"\ude00"),
            Just(r"\uDC00"),
            Just(r"\\ud800"),
        ]
    }

    proptest! {
        /// Proves, on random JSON as serde_json writes it, that the checker measures depth and
        /// number length exactly: the value passes at its own depth and longest number, and is
        /// refused one below either.
        #[test]
        fn bounds_match_serde_json_values(value in json_value(), pretty in any::<bool>()) {
            let text = match pretty {
                true => serde_json::to_string_pretty(&value).unwrap(),
                false => serde_json::to_string(&value).unwrap(),
            };
            let (depth, number_bytes) = shape(&value);
            let exact = JsonBounds { depth_max: depth, number_bytes_max: number_bytes };
            prop_assert_eq!(check(text.as_bytes(), &exact), Ok(()));
            if depth > 0 {
                let shallower = JsonBounds { depth_max: depth - 1, ..exact };
                prop_assert_eq!(check(text.as_bytes(), &shallower), Err(JsonBoundError::TooDeep));
            }
            if number_bytes > 0 {
                let shorter = JsonBounds { number_bytes_max: number_bytes - 1, ..exact };
                prop_assert_eq!(
                    check(text.as_bytes(), &shorter),
                    Err(JsonBoundError::NumberTooLong)
                );
            }
        }

        /// Proves the surrogate rule is serde_json's own for UTF-8 strings: a string literal
        /// passes the checker exactly when serde_json can decode it into a `String`.
        #[test]
        fn surrogates_match_serde_json_strings(
            pieces in proptest::collection::vec(string_piece(), 0..12),
        ) {
            let literal = format!("\"{}\"", pieces.concat());
            let decodes = serde_json::from_str::<String>(&literal).is_ok();
            prop_assert_eq!(checked(&literal).is_ok(), decodes, "{}", literal);
            // The same literal as a key and inside an array is judged the same way.
            let nested = format!("[{{{literal}:[{literal}]}}]");
            prop_assert_eq!(checked(&nested).is_ok(), decodes, "{}", nested);
        }
    }
}
