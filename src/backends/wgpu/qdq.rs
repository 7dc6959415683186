//! The activation quantize-dequantize launches of `act.wgsl` (row amax, tensor amax,
//! `fm_qdq`) for one GEMM input, shared by the experts' forward and by the test that
//! checks the shader against `ActQuant::apply` value for value.

use super::experts::{elements, Module, Stream, THREADS};
use super::kernels;
use super::plan::ActPlan;
use crate::device::wgpu::WgpuDevice;
use crate::device::{Arg, Buffer, LaunchConfig, Runtime};
use crate::error::{Error, Result};
use crate::gpu::ExpertsIo;
use crate::quant::{ActQuant, StageQuant};

/// One launch of `act.wgsl`: four pointers and ten scalars, as every entry point takes.
pub(super) fn act_launch(
    dev: &WgpuDevice,
    m: &Module,
    stream: &Stream,
    kernel: &str,
    c: LaunchConfig,
    ptrs: [u64; 4],
    scalars: [Arg<'_>; 10],
) -> Result<()> {
    let mut args: Vec<Arg<'_>> = ptrs.iter().map(|&p| Arg::Ptr(p)).collect();
    args.extend(scalars);
    dev.launch(m, kernel, c, &args, stream)
}

/// Quantize-dequantizes `rows × cols` f32 at `src` by `plan` into `dst` (`amax`: room for
/// a row amax per row, and the tensor's); returns the buffer the GEMM reads (`src` itself
/// when the plan keeps the values).
pub(super) fn qdq(
    dev: &WgpuDevice,
    m: &Module,
    stream: &Stream,
    plan: ActPlan,
    (src, rows, cols): (u64, usize, usize),
    (amax, total): (u64, u64),
    dst: u64,
) -> Result<u64> {
    if !plan.quantizes() {
        return Ok(src);
    }
    let (r, c) = (Arg::I32(rows as i32), Arg::I32(cols as i32));
    let z = Arg::I32(0);
    let dims = [r, c, z, z, z, z, z, z, z, z];
    let launch =
        |kernel, cfg, ptrs, scalars| act_launch(dev, m, stream, kernel, cfg, ptrs, scalars);
    if plan.mode == 2 || (plan.mode == 1 && matches!(plan.rule, 0 | 1)) {
        let cfg = LaunchConfig::blocks(rows, THREADS, 0);
        launch("fm_row_amax", cfg, [src, amax, 0, 0], dims)?;
    }
    if plan.per_tensor() {
        let cfg = LaunchConfig::blocks(1, THREADS, 0);
        launch("fm_amax_total", cfg, [0, amax, total, 0], dims)?;
    }
    let g = plan.grid;
    let scalars = [
        r,
        c,
        Arg::I32(plan.mode),
        Arg::I32(plan.rule),
        Arg::I32(g.mbits),
        Arg::I32(g.emin),
        Arg::F32(g.max),
        Arg::F32(plan.scale),
        Arg::I32(plan.mx_mbits),
        Arg::I32(plan.mx_emax),
    ];
    launch(
        "fm_qdq",
        elements(rows * cols),
        [src, amax, total, dst],
        scalars,
    )?;
    Ok(dst)
}

/// Where `fm_qdq_slots` reads and writes: the aligned batch's slots (`io`'s pair per slot
/// and expert per block), the input `src` (by token for gemm1, by slot for gemm2, `cols`
/// wide), each expert's static scale, and `dst` (`[slots, cols]`).
pub(super) struct SlotRows<'a> {
    pub io: &'a ExpertsIo,
    pub slots: usize,
    pub src: u64,
    pub by_token: bool,
    pub cols: usize,
    pub scales: (u64, usize),
    pub dst: u64,
}

/// Quantize-dequantizes every slot's row of `r.src` by `plan`'s fp8 grid with the static
/// scale of the slot's expert (`fm_qdq_slots`).
pub(super) fn qdq_slots(
    dev: &WgpuDevice,
    m: &Module,
    stream: &Stream,
    plan: ActPlan,
    r: &SlotRows<'_>,
) -> Result<()> {
    let io = r.io;
    let i = |v: usize| Arg::I32(v as i32);
    let args = [
        Arg::Ptr(r.src),
        Arg::Ptr(io.sorted),
        Arg::Ptr(io.block_expert),
        Arg::Ptr(r.scales.0),
        Arg::Ptr(r.dst),
        i(r.slots),
        i(r.cols),
        i(io.block_tokens),
        i(io.top_k),
        i(io.tokens * io.top_k),
        i(r.by_token as usize),
        i(r.scales.1),
        Arg::I32(plan.grid.mbits),
        Arg::I32(plan.grid.emin),
        Arg::F32(plan.grid.max),
    ];
    dev.launch(m, "fm_qdq_slots", elements(r.slots * r.cols), &args, stream)
}

/// `fm_qdq_slots` on host rows `x` (`cols` wide), row `r` by the rule of expert
/// `experts[r]` of `a` (static fp8, one scale per expert), for tests that check the
/// shader against `StageQuant::apply` directly. Each row is its own one-slot block.
#[doc(hidden)]
pub fn qdq_slots_host(
    dev: &WgpuDevice,
    a: &StageQuant,
    x: &[f32],
    cols: usize,
    experts: &[usize],
) -> Result<Vec<f32>> {
    let rows = experts.len();
    if cols == 0 || x.len() != rows * cols {
        return Err(Error::shape(
            "rows",
            format!("{rows} rows of {cols}"),
            x.len(),
        ));
    }
    let count = experts.iter().max().map_or(0, |e| e + 1);
    let mut scales = Vec::with_capacity(count);
    let mut plan = None;
    for e in 0..count {
        match a.of(e) {
            ActQuant::Fp8 {
                static_scale: Some(s),
                ..
            } => {
                scales.push(s);
                plan = Some(ActPlan::new(&a.of(e))?);
            }
            other => {
                return Err(Error::Config(format!(
                    "fm_qdq_slots takes static fp8 rules, expert {e} has {other:?}"
                )))
            }
        }
    }
    let Some(plan) = plan else {
        return Ok(Vec::new());
    };
    let ids = |v: Vec<usize>| -> Vec<i32> { v.into_iter().map(|e| e as i32).collect() };
    let m = dev.load(&kernels::module("act"))?;
    let src = Buffer::from_slice(dev, x)?;
    let sorted = Buffer::from_slice(dev, &ids((0..rows).collect()))?;
    let blocks = Buffer::from_slice(dev, &ids(experts.to_vec()))?;
    let sc = Buffer::from_slice(dev, &scales)?;
    let dst = Buffer::<WgpuDevice>::alloc(dev, x.len() * 4)?;
    let io = ExpertsIo {
        tokens: rows,
        top_k: 1,
        x: 0,
        topk_weights: 0,
        sorted: sorted.addr(),
        block_expert: blocks.addr(),
        num_slots: 0,
        block_tokens: 1,
        max_blocks: rows,
        token_adapter: 0,
        out: 0,
    };
    let r = SlotRows {
        io: &io,
        slots: rows,
        src: src.addr(),
        by_token: false,
        cols,
        scales: (sc.addr(), count),
        dst: dst.addr(),
    };
    qdq_slots(dev, &m, dev.stream(), plan, &r)?;
    let mut out = vec![0f32; x.len()];
    dev.download(dst.addr(), bytemuck::cast_slice_mut(&mut out), dev.stream())?;
    Ok(out)
}

/// `act.wgsl`'s quantize-dequantize of host values `x` (`cols` wide) by the emulation's
/// rule `a`, for tests that check the shader against `ActQuant::apply` directly.
#[doc(hidden)]
pub fn qdq_host(dev: &WgpuDevice, a: &ActQuant, x: &[f32], cols: usize) -> Result<Vec<f32>> {
    let plan = ActPlan::new(a)?;
    let rows = x.len() / cols.max(1);
    let m = dev.load(&kernels::module("act"))?;
    let src = Buffer::from_slice(dev, x)?;
    let dst = Buffer::<WgpuDevice>::alloc(dev, x.len() * 4)?;
    let amax = Buffer::<WgpuDevice>::alloc(dev, rows.max(1) * 4)?;
    let total = Buffer::<WgpuDevice>::alloc(dev, 4)?;
    let at = qdq(
        dev,
        &m,
        dev.stream(),
        plan,
        (src.addr(), rows, cols),
        (amax.addr(), total.addr()),
        dst.addr(),
    )?;
    let mut out = vec![0f32; x.len()];
    dev.download(at, bytemuck::cast_slice_mut(&mut out), dev.stream())?;
    Ok(out)
}
