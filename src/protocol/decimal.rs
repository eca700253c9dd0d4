//! Decimal numbers written without a heap-allocated string.

use bytes::BytesMut;

/// `value` in decimal, written at the end of `digits` (no heap-allocated string).
pub fn decimal(mut value: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &digits[start..];
        }
    }
}

/// Appends `value` in decimal without going through a heap-allocated string.
pub fn write_decimal(value: u64, out: &mut BytesMut) {
    let mut digits = [0u8; 20];
    out.extend_from_slice(decimal(value, &mut digits));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves decimals are written for zero, one digit and the largest value.
    #[test]
    fn decimals_are_written_without_allocation() {
        for value in [0, 7, 10, 431, u64::MAX] {
            let mut out = BytesMut::new();
            write_decimal(value, &mut out);
            assert_eq!(out, value.to_string().as_bytes());
        }
    }
}
