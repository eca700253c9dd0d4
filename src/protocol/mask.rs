//! (being written on the mask branch; a byte-wise version stands in until it lands)
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    for (index, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[(offset + index) & 3];
    }
}
