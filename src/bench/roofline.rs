//! The roofline floor of one MoE layer forward on the lent H100, defined as in
//! `../shared/reference/h100-anchors.md` so our ratios and the peers' are comparable:
//! `max(weight bytes of the experts hit ÷ copy bandwidth, 2·M·k·3·H·I ÷ matrix rate)`.

/// Copy bandwidth of the H100 80GB HBM3 (read + write), bytes per second.
pub const H100_COPY_BYTES_PER_S: f64 = 3.0e12;
/// Dense bf16 matrix rate measured on it, flop/s.
pub const H100_BF16_FLOPS: f64 = 726e12;
/// Dense fp8 matrix rate measured on it, flop/s.
pub const H100_FP8_FLOPS: f64 = 1267e12;

/// The floor in microseconds for `tokens` tokens routed to `top_k` experts each, touching
/// `experts_hit` experts of size `hidden × intermediate` (gated: 3 matrices) stored at
/// `weight_bytes` bytes per element, on tensor cores of `flops` per second.
pub fn floor_us(
    tokens: usize,
    top_k: usize,
    hidden: usize,
    intermediate: usize,
    experts_hit: usize,
    weight_bytes: f64,
    flops: f64,
) -> f64 {
    let matrix = 3.0 * hidden as f64 * intermediate as f64;
    let bytes = experts_hit as f64 * matrix * weight_bytes;
    let work = 2.0 * tokens as f64 * top_k as f64 * matrix;
    (bytes / H100_COPY_BYTES_PER_S).max(work / flops) * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_anchor_table() {
        // Mixtral-8x7B bf16, M = 1: both experts of the token read once (anchor: 234.7 µs).
        let f = floor_us(1, 2, 4096, 14336, 2, 2.0, H100_BF16_FLOPS);
        assert!((f - 234.9).abs() < 1.0, "{f}");
        // Mixtral fp8 at M = 4096 is compute bound (anchor: 2277.5 µs).
        let f = floor_us(4096, 2, 4096, 14336, 8, 1.0, H100_FP8_FLOPS);
        assert!((f - 2277.5).abs() < 5.0, "{f}");
    }
}
