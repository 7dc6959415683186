//! LoRA on the AMD experts: the adapters packed as every vendor packs them
//! (`crate::gpu::lora`), with B13's columns in the checkpoint's w13 row order (the HIP
//! stage 1 keeps it: the activation is a separate step), and the `lora.hip` shrink /
//! expand launches that fill the delta rows gemm.hip's epilogues add.

use crate::device::hip::{HipDevice, HipKernels};
use crate::device::{Arg, LaunchConfig, Runtime};
use crate::error::Result;
use crate::gpu::lora::{DeviceLora, LoraPack};
use crate::moe::{Activation, Lora};

type Stream = <HipDevice as Runtime>::Stream;

/// Threads of both LoRA kernels (`L_THREADS` in lora.hip).
const THREADS: u32 = 256;

/// Uploads `lora` (already validated against the layer by `MoeLayer::new`).
pub(super) fn upload(
    dev: &HipDevice,
    lora: &Lora,
    experts: usize,
    hidden: usize,
    intermediate: usize,
    activation: Activation,
) -> Result<DeviceLora<HipDevice>> {
    let order: Vec<usize> = (0..activation.w13_rows(intermediate)).collect();
    let pack = LoraPack::new(lora, experts, hidden, intermediate, activation, &order)?;
    DeviceLora::from_pack(dev, &pack)
}

/// Where the expert-sorted slots are, for the LoRA kernels.
pub(super) struct Route {
    /// Token blocks in the workspace (the grid's x).
    pub blocks: usize,
    pub sorted: u64,
    pub num_slots: u64,
    pub block_expert: u64,
    pub bt: usize,
    pub pairs: usize,
    pub top_k: usize,
    pub token_adapter: u64,
    pub experts: usize,
}

fn grid(x: usize, y: usize) -> LaunchConfig {
    LaunchConfig {
        grid: (x.max(1) as u32, y.max(1) as u32, 1),
        block: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `t = A · x` (`rows` rows of A, `k` wide) for every slot whose token has an adapter,
/// then `delta = B · t` (`n` outputs per slot).
#[allow(clippy::too_many_arguments)]
pub(super) fn shrink_expand(
    dev: &HipDevice,
    m: &HipKernels,
    (x, x_by_slot, is_f16, k): (u64, bool, bool, usize),
    route: &Route,
    (a, b, rows): (u64, u64, usize),
    t: u64,
    (n, delta): (usize, u64),
    stream: &Stream,
) -> Result<()> {
    let shrink = [
        Arg::Ptr(x),
        Arg::I32(x_by_slot as i32),
        Arg::I32(is_f16 as i32),
        Arg::I32(k as i32),
        Arg::Ptr(route.sorted),
        Arg::Ptr(route.num_slots),
        Arg::Ptr(route.block_expert),
        Arg::I32(route.bt as i32),
        Arg::I32(route.pairs as i32),
        Arg::I32(route.top_k as i32),
        Arg::Ptr(route.token_adapter),
        Arg::I32(route.experts as i32),
        Arg::Ptr(a),
        Arg::I32(rows as i32),
        Arg::Ptr(t),
    ];
    dev.launch(
        m,
        "fm_lora_shrink",
        grid(route.blocks, rows),
        &shrink,
        stream,
    )?;
    let expand = [
        Arg::Ptr(t),
        Arg::I32(rows as i32),
        Arg::Ptr(route.sorted),
        Arg::Ptr(route.num_slots),
        Arg::Ptr(route.block_expert),
        Arg::I32(route.bt as i32),
        Arg::I32(route.pairs as i32),
        Arg::I32(route.top_k as i32),
        Arg::Ptr(route.token_adapter),
        Arg::I32(route.experts as i32),
        Arg::Ptr(b),
        Arg::I32(n as i32),
        Arg::Ptr(delta),
    ];
    dev.launch(
        m,
        "fm_lora_expand",
        grid(route.blocks, n.div_ceil(THREADS as usize)),
        &expand,
        stream,
    )
}
