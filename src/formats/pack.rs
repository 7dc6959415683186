//! Bit packing of sub-byte codes as checkpoints store them.

use crate::error::Error;
use crate::Result;

/// Fails unless `len` is a multiple of `group`.
fn check_multiple(what: &str, len: usize, group: usize) -> Result<()> {
    if len % group == 0 {
        Ok(())
    } else {
        Err(Error::shape(
            what,
            format!("a multiple of {group} elements"),
            format!("{len} elements"),
        ))
    }
}

/// Fails if any value does not fit in `bits` bits, naming the first offender.
fn check_range(what: &str, values: &[u8], bits: u32) -> Result<()> {
    let limit = (1u16 << bits) - 1;
    match values.iter().position(|&v| u16::from(v) > limit) {
        None => Ok(()),
        Some(i) => Err(Error::shape(
            format!("{what} (element {i})"),
            format!("a value in 0..={limit}"),
            values[i],
        )),
    }
}

/// Two 4-bit values per byte: element `2i` in the low nibble, `2i + 1` in the high one.
fn pack_nibbles(what: &str, values: &[u8]) -> Result<Vec<u8>> {
    check_multiple(what, values.len(), 2)?;
    check_range(what, values, 4)?;
    Ok(values.chunks_exact(2).map(|p| p[0] | (p[1] << 4)).collect())
}

/// Inverse of [`pack_nibbles`].
fn unpack_nibbles(packed: &[u8]) -> Vec<u8> {
    packed.iter().flat_map(|&b| [b & 0x0F, b >> 4]).collect()
}

/// Packs FP4 (e2m1) codes two per byte, element `2i` in the low nibble (the layout of
/// NVFP4 and MXFP4 checkpoints). The length must be even and every code below 16.
pub fn pack_fp4(codes: &[u8]) -> Result<Vec<u8>> {
    pack_nibbles("fp4 codes", codes)
}

/// Unpacks two FP4 codes per byte, low nibble first.
pub fn unpack_fp4(packed: &[u8]) -> Vec<u8> {
    unpack_nibbles(packed)
}

/// Packs FP6 codes four to three bytes: the four codes form a 24-bit little-endian word
/// with code `i` in bits `6i..6i+6`, i.e. byte 0 = c0 | c1 << 6, byte 1 = c1 >> 2 |
/// c2 << 4, byte 2 = c2 >> 4 | c3 << 2.
///
/// This is the order of AMD Quark's `Pack_fp6` (quark/torch/utils/pack.py, amd-quark
/// 0.10 and the current amd/Quark tree), used for the `fp6_e2m3` / `fp6_e3m2` dtypes
/// and documented there as the layout gfx950's scaled MFMA expects. Quark's older
/// `Pack_mxfp6` (dtype "mx") is a different, plane-split layout and is not this one.
/// The length must be a multiple of 4 and every code below 64.
pub fn pack_fp6(codes: &[u8]) -> Result<Vec<u8>> {
    check_multiple("fp6 codes", codes.len(), 4)?;
    check_range("fp6 codes", codes, 6)?;
    let mut out = Vec::with_capacity(codes.len() / 4 * 3);
    for quad in codes.chunks_exact(4) {
        let word = quad
            .iter()
            .enumerate()
            .fold(0u32, |w, (i, &c)| w | (u32::from(c) << (6 * i)));
        out.extend_from_slice(&word.to_le_bytes()[..3]);
    }
    Ok(out)
}

/// Inverse of [`pack_fp6`]; the length must be a multiple of 3.
pub fn unpack_fp6(packed: &[u8]) -> Result<Vec<u8>> {
    check_multiple("packed fp6 bytes", packed.len(), 3)?;
    let mut out = Vec::with_capacity(packed.len() / 3 * 4);
    for triple in packed.chunks_exact(3) {
        let word = u32::from_le_bytes([triple[0], triple[1], triple[2], 0]);
        out.extend((0..4).map(|i| ((word >> (6 * i)) & 0x3F) as u8));
    }
    Ok(out)
}

/// Packs unsigned 4-bit values eight per i32, value `j` of each group in bits
/// `4j..4j+4` (GPTQ / compressed-tensors order along K). The length must be a multiple
/// of 8 and every value at most 15.
pub fn pack_int4_i32(values: &[u8]) -> Result<Vec<i32>> {
    check_multiple("int4 values", values.len(), 8)?;
    check_range("int4 values", values, 4)?;
    Ok(values
        .chunks_exact(8)
        .map(|group| {
            group
                .iter()
                .enumerate()
                .fold(0u32, |w, (j, &v)| w | (u32::from(v) << (4 * j))) as i32
        })
        .collect())
}

/// Inverse of [`pack_int4_i32`]: eight values per word, lowest nibble first.
pub fn unpack_int4_i32(words: &[i32]) -> Vec<u8> {
    words
        .iter()
        .flat_map(|&w| {
            let w = w as u32;
            (0..8).map(move |j| ((w >> (4 * j)) & 0x0F) as u8)
        })
        .collect()
}

/// Packs unsigned 4-bit values two per byte, element `2i` in the low nibble. The length
/// must be even and every value at most 15.
pub fn pack_int4_u8(values: &[u8]) -> Result<Vec<u8>> {
    pack_nibbles("int4 values", values)
}

/// Inverse of [`pack_int4_u8`].
pub fn unpack_int4_u8(packed: &[u8]) -> Vec<u8> {
    unpack_nibbles(packed)
}

/// Reads a nibble (high bits ignored) as two's complement, giving −8..=7.
pub fn int4_signed(nibble: u8) -> i8 {
    ((nibble << 4) as i8) >> 4
}

/// The two's complement nibble of `v`; values outside −8..=7 wrap modulo 16.
pub fn int4_from_signed(v: i8) -> u8 {
    (v as u8) & 0x0F
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp6_bytes_by_hand() {
        // c0 = 0b000001, c1 = 0b000010, c2 = 0b000011, c3 = 0b111111
        let packed = pack_fp6(&[1, 2, 3, 63]).unwrap();
        assert_eq!(packed, vec![0b1000_0001, 0b0011_0000, 0b1111_1100]);
        assert_eq!(unpack_fp6(&packed).unwrap(), vec![1, 2, 3, 63]);
    }

    #[test]
    fn signed_nibbles() {
        for v in -8i8..=7 {
            assert_eq!(int4_signed(int4_from_signed(v)), v);
        }
        assert_eq!(int4_signed(0x0F), -1);
        assert_eq!(int4_signed(0x08), -8);
        assert_eq!(int4_signed(0xF7), 7);
    }
}
