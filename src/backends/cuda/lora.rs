//! LoRA adapters on the device for the CUDA experts: every resident adapter's per-expert
//! A and B in f32, padded to the largest rank, B transposed (`[R, N]`, so the expand
//! kernel reads it coalesced) with its columns in the GEMMs' prepared row order
//! and multiplied by the adapter's scaling, so `lora.cu` needs no indirection.
//!
//! Gate and up share one shrink: A13 stacks `[A_gate; A_up]` (2R rows) and B13 has, for
//! each prepared w13 row, the gate projection's B row in columns `0..R` or the up
//! projection's in `R..2R` (zeros elsewhere), exactly where the emulation adds each delta.

use super::layout::w13_row_order;
use crate::device::cuda::CudaDevice;
use crate::device::Buffer;
use crate::error::{Error, Result};
use crate::moe::{Activation, Lora, LoraProj};

/// The adapters of one layer on the device.
pub struct DeviceLora {
    pub a13: Buffer<CudaDevice>,
    pub b13: Buffer<CudaDevice>,
    pub a2: Buffer<CudaDevice>,
    pub b2: Buffer<CudaDevice>,
    /// Largest rank of any adapter (the padding of every A and B).
    pub rank: usize,
    pub adapters: usize,
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

impl DeviceLora {
    /// Uploads `lora` (already validated against the layer by `MoeLayer::new`).
    pub fn upload(
        dev: &CudaDevice,
        lora: &Lora,
        experts: usize,
        hidden: usize,
        intermediate: usize,
        activation: Activation,
    ) -> Result<Self> {
        let (h, i) = (hidden, intermediate);
        let n_ad = lora.adapters.len();
        let rank = lora
            .adapters
            .iter()
            .map(|a| a.rank)
            .max()
            .unwrap_or(0)
            .max(1);
        let order = w13_row_order(activation, i)?;
        let role = roles(activation, i);
        let n1 = order.len();
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
                for (pr, &src) in order.iter().enumerate() {
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
        Ok(DeviceLora {
            a13: Buffer::from_slice(dev, &a13)?,
            b13: Buffer::from_slice(dev, &b13)?,
            a2: Buffer::from_slice(dev, &a2)?,
            b2: Buffer::from_slice(dev, &b2)?,
            rank,
            adapters: n_ad,
        })
    }
}
