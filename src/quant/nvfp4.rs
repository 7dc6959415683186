//! NVFP4 weights: e2m1 values in 16-element blocks along K, an e4m3 scale per block and an
//! f32 scale per tensor, in ModelOpt's convention `w = fp4 · block_scale · global_scale`
//! (compressed-tensors stores the reciprocal; the checkpoint loader converts).

use crate::formats::{pack_fp4, unpack_fp4, MiniFloat, F4E2M1, F8E4M3};

/// Elements per block scale.
pub const BLOCK: usize = 16;
/// e4m3 max × e2m1 max: the largest magnitude a block can hold per unit of global scale.
pub const RANGE: f32 = 448.0 * 6.0;

/// Quantizes one expert's `[rows, cols]` matrix; returns (packed, block_scales, global).
pub fn quantize(w: &[f32], rows: usize, cols: usize) -> (Vec<u8>, Vec<u8>, f32) {
    let amax = w.iter().fold(0f32, |m, x| m.max(x.abs()));
    let global = if amax > 0.0 { amax / RANGE } else { 1.0 };
    let blocks = cols / BLOCK;
    let mut codes = vec![0u8; rows * cols];
    let mut block_scales = vec![0u8; rows * blocks];
    for r in 0..rows {
        for b in 0..blocks {
            let xs = &w[r * cols + b * BLOCK..r * cols + (b + 1) * BLOCK];
            let bamax = xs.iter().fold(0f32, |m, x| m.max(x.abs()));
            let bs = F8E4M3::from_f32(bamax / 6.0 / global);
            block_scales[r * blocks + b] = bs.to_bits();
            let step = bs.to_f32() * global;
            if step > 0.0 {
                for (i, x) in xs.iter().enumerate() {
                    codes[r * cols + b * BLOCK + i] = F4E2M1::from_f32(x / step).to_bits();
                }
            }
        }
    }
    (
        pack_fp4(&codes).expect("cols is a multiple of 16"),
        block_scales,
        global,
    )
}

/// Dequantizes one expert's matrix into `out`.
pub fn dequantize(
    packed: &[u8],
    block_scales: &[u8],
    global: f32,
    rows: usize,
    cols: usize,
    out: &mut [f32],
) {
    let codes = unpack_fp4(packed);
    let blocks = cols / BLOCK;
    for r in 0..rows {
        for c in 0..cols {
            let bs = F8E4M3::from_bits(block_scales[r * blocks + c / BLOCK]).to_f32();
            out[r * cols + c] = F4E2M1::from_bits(codes[r * cols + c]).to_f32() * bs * global;
        }
    }
}
