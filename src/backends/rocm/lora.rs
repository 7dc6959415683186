//! LoRA on the AMD experts: the adapters packed as every vendor packs them
//! (`crate::gpu::lora`), with B13's columns in the checkpoint's w13 row order (the HIP
//! stage 1 keeps it: the activation is a separate step), and the `lora.hip` shrink /
//! expand launches that fill the delta rows gemm.hip's epilogues add.

use crate::device::hip::{HipDevice, HipKernels};
use crate::device::{LaunchConfig, Runtime};
use crate::error::Result;
use crate::gpu::lora::{DeviceLora, LoraPack, LoraRoute};
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
    route: &LoraRoute,
    (a, b, rows): (u64, u64, usize),
    t: u64,
    (n, delta): (usize, u64),
    stream: &Stream,
) -> Result<()> {
    let shrink = route.shrink_args(x, x_by_slot, is_f16, k, a, rows, t);
    dev.launch(
        m,
        "fm_lora_shrink",
        grid(route.blocks(), rows),
        &shrink,
        stream,
    )?;
    let expand = route.expand_args(t, rows, b, n, delta);
    dev.launch(
        m,
        "fm_lora_expand",
        grid(route.blocks(), n.div_ceil(THREADS as usize)),
        &expand,
        stream,
    )
}
