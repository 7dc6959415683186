//! LoRA adapters as every vendor's LoRA kernels read them (`kernels-cuda/lora.cu`,
//! `kernels-hip/lora.hip`), written once: each resident adapter's per-expert A and B in
//! f32, padded to the largest rank, B transposed (`[R, N]`, so the expand kernel reads it
//! coalesced) with its columns in the GEMMs' prepared w13 row order and multiplied by the
//! adapter's scaling, so the kernels need no indirection. Only that row order (CUDA's
//! gated GEMM interleaves gate and up in groups of 8; AMD keeps the checkpoint's) and the
//! buffer type differ per vendor.
//!
//! Gate and up share one shrink: A13 stacks `[A_gate; A_up]` (2R rows) and B13 has, for
//! each prepared w13 row, the gate projection's B row in columns `0..R` or the up
//! projection's in `R..2R` (zeros elsewhere), exactly where the emulation adds each delta.

use super::ExpertsIo;
use crate::device::{Arg, Buffer, Runtime};
use crate::error::{Error, Result};
use crate::moe::{Activation, Lora, LoraProj};

/// The packed adapters of one layer, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPack {
    /// `[adapter, expert][2R, hidden]`: gate's A in rows `0..R`, up's in `R..2R`.
    pub a13: Vec<f32>,
    /// `[adapter, expert][2R, w13 rows]`: column `n` is prepared w13 row `n`.
    pub b13: Vec<f32>,
    /// `[adapter, expert][R, intermediate]`.
    pub a2: Vec<f32>,
    /// `[adapter, expert][R, hidden]`.
    pub b2: Vec<f32>,
    /// Largest rank of any adapter (the padding of every A and B).
    pub rank: usize,
    pub adapters: usize,
}

/// Where the expert-sorted slots are, for the LoRA kernels: `lora.cu` and `lora.hip` take
/// the same arguments, so both vendors build them here.
pub struct LoraRoute {
    /// Slots in the workspace (token blocks × `bt`).
    pub slots: usize,
    pub sorted: u64,
    pub num_slots: u64,
    pub block_expert: u64,
    /// Slots per token block.
    pub bt: usize,
    pub pairs: usize,
    pub top_k: usize,
    pub token_adapter: u64,
    pub experts: usize,
}

impl LoraRoute {
    /// The route of one forward's aligned slots, for a layer of `experts` experts.
    pub fn of(io: &ExpertsIo, experts: usize) -> Self {
        LoraRoute {
            slots: io.max_blocks * io.block_tokens,
            sorted: io.sorted,
            num_slots: io.num_slots,
            block_expert: io.block_expert,
            bt: io.block_tokens,
            pairs: io.tokens * io.top_k,
            top_k: io.top_k,
            token_adapter: io.token_adapter,
            experts,
        }
    }

    /// Token blocks in the workspace (the kernels' grid x).
    pub fn blocks(&self) -> usize {
        self.slots / self.bt
    }

    /// The leading arguments of the per-slot kernels (`fm_gather_cols`, `fm_quant_slots`):
    /// the source `src` (`cols` wide, rows by token, or by slot with `by_slot`) and the
    /// route that gives each slot its pair and expert.
    pub fn slot_args(&self, src: u64, cols: usize, by_slot: bool) -> [Arg<'static>; 9] {
        [
            Arg::Ptr(src),
            Arg::I32(cols as i32),
            Arg::I32(by_slot as i32),
            Arg::Ptr(self.sorted),
            Arg::Ptr(self.num_slots),
            Arg::Ptr(self.block_expert),
            Arg::I32(self.bt as i32),
            Arg::I32(self.pairs as i32),
            Arg::I32(self.top_k as i32),
        ]
    }

    /// `fm_lora_shrink`'s arguments: `t = A · x` (`rows` rows of A, `k` wide; x rows by
    /// token, or by slot with `x_by_slot`).
    #[allow(clippy::too_many_arguments)]
    pub fn shrink_args(
        &self,
        x: u64,
        x_by_slot: bool,
        is_f16: bool,
        k: usize,
        a: u64,
        rows: usize,
        t: u64,
    ) -> [Arg<'static>; 15] {
        [
            Arg::Ptr(x),
            Arg::I32(x_by_slot as i32),
            Arg::I32(is_f16 as i32),
            Arg::I32(k as i32),
            Arg::Ptr(self.sorted),
            Arg::Ptr(self.num_slots),
            Arg::Ptr(self.block_expert),
            Arg::I32(self.bt as i32),
            Arg::I32(self.pairs as i32),
            Arg::I32(self.top_k as i32),
            Arg::Ptr(self.token_adapter),
            Arg::I32(self.experts as i32),
            Arg::Ptr(a),
            Arg::I32(rows as i32),
            Arg::Ptr(t),
        ]
    }

    /// `fm_lora_expand`'s arguments: `delta = B · t` (`rank` columns of t, `n` outputs).
    pub fn expand_args(
        &self,
        t: u64,
        rank: usize,
        b: u64,
        n: usize,
        delta: u64,
    ) -> [Arg<'static>; 13] {
        [
            Arg::Ptr(t),
            Arg::I32(rank as i32),
            Arg::Ptr(self.sorted),
            Arg::Ptr(self.num_slots),
            Arg::Ptr(self.block_expert),
            Arg::I32(self.bt as i32),
            Arg::I32(self.pairs as i32),
            Arg::I32(self.top_k as i32),
            Arg::Ptr(self.token_adapter),
            Arg::I32(self.experts as i32),
            Arg::Ptr(b),
            Arg::I32(n as i32),
            Arg::Ptr(delta),
        ]
    }
}

/// Which projection's delta lands on a checkpoint w13 row, per activation layout.
#[derive(Clone, Copy)]
enum Role {
    Gate(usize),
    Up(usize),
    /// Non-gated: both the (optional) gate and the up projection add to feature j.
    Single(usize),
}

fn roles(activation: Activation, intermediate: usize) -> Vec<Role> {
    let rows = activation.w13_rows(intermediate);
    let mut role = vec![Role::Single(0); rows];
    for j in 0..intermediate {
        match activation.gate_up_index(j, intermediate) {
            (g, Some(u)) => {
                role[g] = Role::Gate(j);
                role[u] = Role::Up(j);
            }
            (g, None) => role[g] = Role::Single(j),
        }
    }
    role
}

/// Copies `proj`'s A (`[rank, fan_in]`) into `dst` rows starting at `row0`.
fn put_a(dst: &mut [f32], row0: usize, fan_in: usize, rank: usize, proj: &LoraProj) {
    for r in 0..rank {
        dst[(row0 + r) * fan_in..(row0 + r + 1) * fan_in]
            .copy_from_slice(&proj.a[r * fan_in..(r + 1) * fan_in]);
    }
}

/// `scaling · B[j, :]` into column `col` of a transposed `[R, n]` matrix, rows
/// `row0..row0 + rank`.
#[allow(clippy::too_many_arguments)]
fn put_b_col(
    dst: &mut [f32],
    n: usize,
    col: usize,
    row0: usize,
    rank: usize,
    scaling: f32,
    proj: &LoraProj,
    j: usize,
) {
    for r in 0..rank {
        dst[(row0 + r) * n + col] = scaling * proj.b[j * rank + r];
    }
}

impl LoraPack {
    /// Packs `lora` (already validated against the layer by `MoeLayer::new`) for GEMMs
    /// whose prepared w13 row `n` is checkpoint row `w13_order[n]`.
    pub fn new(
        lora: &Lora,
        experts: usize,
        hidden: usize,
        intermediate: usize,
        activation: Activation,
        w13_order: &[usize],
    ) -> Result<Self> {
        let (h, i) = (hidden, intermediate);
        let rows = activation.w13_rows(i);
        if w13_order.len() != rows || w13_order.iter().any(|&r| r >= rows) {
            return Err(Error::shape(
                "LoRA w13 row order",
                format!("a permutation of {rows} rows"),
                format!("{} rows", w13_order.len()),
            ));
        }
        let n_ad = lora.adapters.len();
        let rank = lora
            .adapters
            .iter()
            .map(|a| a.rank)
            .max()
            .unwrap_or(0)
            .max(1);
        let role = roles(activation, i);
        let n1 = w13_order.len();
        let r2 = 2 * rank;
        let mut a13 = vec![0f32; n_ad * experts * r2 * h];
        let mut b13 = vec![0f32; n_ad * experts * n1 * r2];
        let mut a2 = vec![0f32; n_ad * experts * rank * i];
        let mut b2 = vec![0f32; n_ad * experts * h * rank];
        for (a, ad) in lora.adapters.iter().enumerate() {
            if ad.experts.len() != experts {
                return Err(Error::shape(
                    "LoRA adapter experts",
                    experts,
                    ad.experts.len(),
                ));
            }
            for (e, ex) in ad.experts.iter().enumerate() {
                let ae = a * experts + e;
                let a13e = &mut a13[ae * r2 * h..(ae + 1) * r2 * h];
                if let Some(g) = &ex.gate {
                    put_a(a13e, 0, h, ad.rank, g);
                }
                if let Some(u) = &ex.up {
                    put_a(a13e, rank, h, ad.rank, u);
                }
                // B13 transposed: [2R, N1], column `pr` is prepared row `pr`.
                let b13e = &mut b13[ae * n1 * r2..(ae + 1) * n1 * r2];
                for (pr, &src) in w13_order.iter().enumerate() {
                    let (gate_j, up_j) = match role[src] {
                        Role::Gate(j) => (Some(j), None),
                        Role::Up(j) => (None, Some(j)),
                        Role::Single(j) => (Some(j), Some(j)),
                    };
                    if let (Some(j), Some(g)) = (gate_j, &ex.gate) {
                        put_b_col(b13e, n1, pr, 0, ad.rank, ad.scaling, g, j);
                    }
                    if let (Some(j), Some(u)) = (up_j, &ex.up) {
                        put_b_col(b13e, n1, pr, rank, ad.rank, ad.scaling, u, j);
                    }
                }
                if let Some(d) = &ex.down {
                    put_a(
                        &mut a2[ae * rank * i..(ae + 1) * rank * i],
                        0,
                        i,
                        ad.rank,
                        d,
                    );
                    let b2e = &mut b2[ae * h * rank..(ae + 1) * h * rank];
                    for n in 0..h {
                        put_b_col(b2e, h, n, 0, ad.rank, ad.scaling, d, n);
                    }
                }
            }
        }
        Ok(LoraPack {
            a13,
            b13,
            a2,
            b2,
            rank,
            adapters: n_ad,
        })
    }
}

/// The adapters of one layer on a device, as `LoraPack` lays them out.
pub struct DeviceLora<R: Runtime> {
    pub a13: Buffer<R>,
    pub b13: Buffer<R>,
    pub a2: Buffer<R>,
    pub b2: Buffer<R>,
    /// Largest rank of any adapter (the padding of every A and B).
    pub rank: usize,
    pub adapters: usize,
}

impl<R: Runtime> DeviceLora<R> {
    /// Uploads `pack` to `rt`.
    pub fn from_pack(rt: &R, pack: &LoraPack) -> Result<Self> {
        Ok(DeviceLora {
            a13: Buffer::from_slice(rt, &pack.a13)?,
            b13: Buffer::from_slice(rt, &pack.b13)?,
            a2: Buffer::from_slice(rt, &pack.a2)?,
            b2: Buffer::from_slice(rt, &pack.b2)?,
            rank: pack.rank,
            adapters: pack.adapters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moe::{LoraAdapter, LoraExpert};

    fn proj(seed: usize, rank: usize, fan_in: usize, fan_out: usize) -> LoraProj {
        let v = |n: usize, s: usize| -> Vec<f32> {
            (0..n)
                .map(|k| (((k * 7 + s * 13) % 17) as f32 - 8.0) / 8.0)
                .collect()
        };
        LoraProj {
            a: v(rank * fan_in, seed),
            b: v(fan_out * rank, seed + 1),
        }
    }

    /// What the kernels compute from the pack (shrink then expand, for one adapter and
    /// expert) equals the emulation's deltas at every prepared row, for ranks below the
    /// padding and a shuffled row order.
    #[test]
    fn the_packed_shrink_and_expand_give_the_emulations_deltas() {
        let (h, i, experts) = (8, 4, 2);
        for activation in [
            Activation::SiluAndMul,
            Activation::GPT_OSS,
            Activation::Silu,
        ] {
            let gated = activation.is_gated();
            let adapter = |rank: usize, seed: usize| LoraAdapter {
                rank,
                scaling: 0.5 + seed as f32,
                experts: (0..experts)
                    .map(|e| LoraExpert {
                        gate: gated.then(|| proj(seed + e, rank, h, i)),
                        up: Some(proj(seed + e + 3, rank, h, i)),
                        down: Some(proj(seed + e + 5, rank, i, h)),
                    })
                    .collect(),
                shared: None,
            };
            let lora = Lora {
                adapters: vec![adapter(2, 1), adapter(3, 2)],
            };
            let rows = activation.w13_rows(i);
            // Any permutation: reversed.
            let order: Vec<usize> = (0..rows).rev().collect();
            let p = LoraPack::new(&lora, experts, h, i, activation, &order).unwrap();
            assert_eq!((p.rank, p.adapters), (3, 2));
            let x: Vec<f32> = (0..h).map(|k| k as f32 * 0.25 - 1.0).collect();
            let xi: Vec<f32> = (0..i).map(|k| 1.0 - k as f32 * 0.5).collect();
            let (r, r2) = (p.rank, 2 * p.rank);
            for (a, ad) in lora.adapters.iter().enumerate() {
                for (e, ex) in ad.experts.iter().enumerate() {
                    let ae = a * experts + e;
                    // Shrink and expand of gate | up.
                    let t: Vec<f32> = (0..r2)
                        .map(|q| (0..h).map(|k| p.a13[(ae * r2 + q) * h + k] * x[k]).sum())
                        .collect();
                    let got: Vec<f32> = (0..rows)
                        .map(|n| {
                            (0..r2)
                                .map(|q| p.b13[ae * rows * r2 + q * rows + n] * t[q])
                                .sum()
                        })
                        .collect();
                    // The emulation's deltas, at checkpoint rows.
                    let mut want = vec![0f32; rows];
                    for (proj, is_gate) in [(&ex.gate, true), (&ex.up, false)] {
                        let Some(proj) = proj else { continue };
                        let mut d = vec![0f32; i];
                        proj.add_delta(ad.rank, ad.scaling, &x, &mut d);
                        for (j, v) in d.iter().enumerate() {
                            let (g, u) = activation.gate_up_index(j, i);
                            want[if is_gate { g } else { u.unwrap_or(g) }] += v;
                        }
                    }
                    for n in 0..rows {
                        assert!(
                            (got[n] - want[order[n]]).abs() < 1e-4,
                            "{activation:?} adapter {a} expert {e} row {n}"
                        );
                    }
                    // Down.
                    let t: Vec<f32> = (0..r)
                        .map(|q| (0..i).map(|k| p.a2[(ae * r + q) * i + k] * xi[k]).sum())
                        .collect();
                    let mut want = vec![0f32; h];
                    ex.down
                        .as_ref()
                        .unwrap()
                        .add_delta(ad.rank, ad.scaling, &xi, &mut want);
                    for (n, w) in want.iter().enumerate() {
                        let got: f32 = (0..r).map(|q| p.b2[ae * h * r + q * h + n] * t[q]).sum();
                        assert!(
                            (got - w).abs() < 1e-4,
                            "down adapter {a} expert {e} row {n}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_row_order_of_the_wrong_length_is_an_error() {
        let lora = Lora::default();
        let bad = LoraPack::new(&lora, 1, 8, 4, Activation::SiluAndMul, &[0, 1, 2]);
        assert!(bad.is_err());
        let out_of_range: Vec<usize> = (1..=8).collect();
        assert!(LoraPack::new(&lora, 1, 8, 4, Activation::SiluAndMul, &out_of_range).is_err());
    }
}
