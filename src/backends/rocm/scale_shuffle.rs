//! AITER's e8m0 scale shuffle for MXFP4 GEMMs on gfx950.
//!
//! Fact source (read, not copied): ROCm/aiter `e8m0_shuffle` (aiter/utility/fp4_utils.py).
//! A `[m, n]` scale matrix is padded to `[round_up(m, 256), round_up(n, 8)]`, viewed as
//! `[m/32, 2, 16, n/8, 2, 4]` and permuted to `[m/32, n/8, 4, 16, 2, 2]`. AITER leaves
//! the padding uninitialised; here it is 127 (scale 1.0), so the output is deterministic.

use crate::error::{check_len, Error, Result};

/// The e4m3fn code of 1.0, NVFP4's block-scale padding.
pub const E4M3_ONE: u8 = 0x38;
/// Padding multiple for rows.
pub const ROW_PAD: usize = 256;
/// Padding multiple for columns.
pub const COL_PAD: usize = 8;
/// The e8m0 code written into padding (2^0).
pub const PAD_CODE: u8 = 127;

/// The padded shape of a `[rows, cols]` scale matrix.
pub fn padded_shape(rows: usize, cols: usize) -> (usize, usize) {
    (
        rows.div_ceil(ROW_PAD) * ROW_PAD,
        cols.div_ceil(COL_PAD) * COL_PAD,
    )
}

/// Index in the shuffled `[pr, pc]` buffer of padded element (`r`, `c`).
pub fn shuffled_index(pc: usize, r: usize, c: usize) -> usize {
    let (a, b, cc) = (r / 32, (r / 16) % 2, r % 16);
    let (d, e, f) = (c / 8, (c / 4) % 2, c % 4);
    ((((a * (pc / 8) + d) * 4 + f) * 16 + cc) * 2 + e) * 2 + b
}

/// Shuffles a row-major `[rows, cols]` e8m0 scale matrix; the result is padded.
pub fn shuffle_e8m0(scales: &[u8], rows: usize, cols: usize) -> Result<Vec<u8>> {
    shuffle_padded(scales, rows, cols, PAD_CODE)
}

/// The same byte permutation for any one-byte scale type, padded with `pad` (NVFP4's
/// e4m3 block scales pad with [`E4M3_ONE`], not 127, which is NaN in e4m3fn).
pub fn shuffle_padded(scales: &[u8], rows: usize, cols: usize, pad: u8) -> Result<Vec<u8>> {
    check_len("e8m0 scales", scales.len(), rows * cols)?;
    if rows == 0 || cols == 0 {
        return Err(Error::shape(
            "e8m0 scale matrix",
            "non-empty",
            format!("[{rows}, {cols}]"),
        ));
    }
    let (pr, pc) = padded_shape(rows, cols);
    let mut out = vec![pad; pr * pc];
    for r in 0..rows {
        for c in 0..cols {
            out[shuffled_index(pc, r, c)] = scales[r * cols + c];
        }
    }
    Ok(out)
}

/// The exact inverse of [`shuffle_e8m0`]: drops the padding and restores row-major order.
pub fn unshuffle_e8m0(shuffled: &[u8], rows: usize, cols: usize) -> Result<Vec<u8>> {
    let (pr, pc) = padded_shape(rows, cols);
    check_len("shuffled e8m0 scales", shuffled.len(), pr * pc)?;
    let mut out = vec![0u8; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            out[r * cols + c] = shuffled[shuffled_index(pc, r, c)];
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_a_permutation_of_the_padded_matrix() {
        let (pr, pc) = padded_shape(300, 12);
        assert_eq!((pr, pc), (512, 16));
        let mut seen = vec![false; pr * pc];
        for r in 0..pr {
            for c in 0..pc {
                let i = shuffled_index(pc, r, c);
                assert!(!seen[i]);
                seen[i] = true;
            }
        }
    }

    #[test]
    fn first_entries_follow_the_permuted_view() {
        // Innermost is the row half (b), then the column half (e), then row-in-16 (cc).
        let pc = 8;
        assert_eq!(shuffled_index(pc, 16, 0), 1);
        assert_eq!(shuffled_index(pc, 0, 4), 2);
        assert_eq!(shuffled_index(pc, 1, 0), 4);
        assert_eq!(shuffled_index(pc, 0, 1), 64);
        assert_eq!(shuffled_index(pc, 32, 0), 256);
    }
}
