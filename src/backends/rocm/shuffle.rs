//! AITER's 16×16 weight shuffle for MFMA ("preshuffled" B operand).
//!
//! Fact source (read, not copied): ROCm/aiter `aiter/ops/shuffle.py`, `shuffle_weight` with
//! `layout=(16, 16)`. For a `[.., N, K]` matrix of elements of `s` bytes it uses
//! `BN = 16` rows, `BK = 32` elements and `KP = 16 / s` elements (16 bytes, one lane's
//! load), views the matrix as `[N/16, 16, K/BK, BK/KP, KP]` and permutes it to
//! `[N/16, K/BK, BK/KP, 16, KP]`. So each 16-row × 32-element tile is stored as
//! `BK/KP` slabs, each slab the 16 rows' 16-byte chunks one after another. Packed
//! sub-byte data (MXFP4 two per byte) is shuffled as bytes (`s = 1`), as AITER does.

use crate::error::{Error, Result};

/// Rows per tile.
pub const BN: usize = 16;
/// Elements per tile along K.
pub const BK: usize = 32;
/// Bytes one lane loads at once.
pub const LANE_BYTES: usize = 16;

/// Shape of one shuffle: `matrices` row-major `[rows, cols]` matrices of `elem_bytes`-byte
/// elements, laid out one after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShuffleShape {
    pub matrices: usize,
    pub rows: usize,
    pub cols: usize,
    pub elem_bytes: usize,
}

impl ShuffleShape {
    fn check(&self, len: usize) -> Result<()> {
        if !matches!(self.elem_bytes, 1 | 2 | 4) {
            return Err(Error::shape(
                "shuffle element size",
                "1, 2 or 4 bytes",
                self.elem_bytes,
            ));
        }
        if self.rows % BN != 0 {
            return Err(Error::GroupSize {
                group: BN,
                dim: self.rows,
                dim_name: "rows (N) for the 16×16 weight shuffle".into(),
            });
        }
        if self.cols % BK != 0 {
            return Err(Error::GroupSize {
                group: BK,
                dim: self.cols,
                dim_name: "cols (K, in elements) for the 16×16 weight shuffle".into(),
            });
        }
        let bytes = self.matrices * self.rows * self.cols * self.elem_bytes;
        crate::error::check_len("shuffled weight bytes", len, bytes)
    }

    /// Byte offset in the shuffled layout of element (`m`, `n`, `k`)'s first byte.
    pub fn shuffled_offset(&self, m: usize, n: usize, k: usize) -> usize {
        let kp = LANE_BYTES / self.elem_bytes;
        let slabs = BK / kp;
        let (n1, n0) = (n / BN, n % BN);
        let (k1, rest) = (k / BK, k % BK);
        let (k2, k0) = (rest / kp, rest % kp);
        let k_tiles = self.cols / BK;
        let elem =
            ((((m * (self.rows / BN) + n1) * k_tiles + k1) * slabs + k2) * BN + n0) * kp + k0;
        elem * self.elem_bytes
    }
}

/// Shuffles checkpoint-layout bytes into AITER's 16×16 layout.
pub fn shuffle_16x16(data: &[u8], shape: ShuffleShape) -> Result<Vec<u8>> {
    move_elements(data, shape, true)
}

/// The exact inverse of [`shuffle_16x16`].
pub fn unshuffle_16x16(data: &[u8], shape: ShuffleShape) -> Result<Vec<u8>> {
    move_elements(data, shape, false)
}

/// Copies every element between its checkpoint offset and its shuffled offset, towards
/// the shuffled layout or back: one walk, so the two directions cannot disagree.
fn move_elements(data: &[u8], shape: ShuffleShape, to_shuffled: bool) -> Result<Vec<u8>> {
    shape.check(data.len())?;
    let mut out = vec![0u8; data.len()];
    let s = shape.elem_bytes;
    for m in 0..shape.matrices {
        for n in 0..shape.rows {
            for k in 0..shape.cols {
                let plain = ((m * shape.rows + n) * shape.cols + k) * s;
                let shuffled = shape.shuffled_offset(m, n, k);
                let (src, dst) = if to_shuffled {
                    (plain, shuffled)
                } else {
                    (shuffled, plain)
                };
                out[dst..dst + s].copy_from_slice(&data[src..src + s]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_tile_order_matches_aiter_view_permute() {
        // One 16×32 fp8 tile: KP = 16, two slabs; slab 0 is the 16 rows' first 16 bytes.
        let shape = ShuffleShape {
            matrices: 1,
            rows: 16,
            cols: 32,
            elem_bytes: 1,
        };
        let data: Vec<u8> = (0..512).map(|i| (i % 251) as u8).collect();
        let out = shuffle_16x16(&data, shape).unwrap();
        for n in 0..16 {
            for k in 0..16 {
                assert_eq!(out[n * 16 + k], data[n * 32 + k]);
                assert_eq!(out[256 + n * 16 + k], data[n * 32 + 16 + k]);
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let s = ShuffleShape {
            matrices: 1,
            rows: 8,
            cols: 32,
            elem_bytes: 1,
        };
        assert!(shuffle_16x16(&[0; 256], s).is_err());
        let s = ShuffleShape {
            matrices: 1,
            rows: 16,
            cols: 32,
            elem_bytes: 1,
        };
        assert!(shuffle_16x16(&[0; 100], s).is_err());
        let s = ShuffleShape {
            matrices: 1,
            rows: 16,
            cols: 32,
            elem_bytes: 3,
        };
        assert!(unshuffle_16x16(&[0; 1536], s).is_err());
    }
}
