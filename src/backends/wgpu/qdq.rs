//! The activation quantize-dequantize launches of `act.wgsl` (row amax, tensor amax,
//! `fm_qdq`) for one GEMM input, shared by the experts' forward and by the test that
//! checks the shader against `ActQuant::apply` value for value.

use super::experts::{elements, Module, Stream, THREADS};
use super::kernels;
use super::plan::ActPlan;
use crate::device::wgpu::WgpuDevice;
use crate::device::{Arg, Buffer, LaunchConfig, Runtime};
use crate::error::Result;
use crate::quant::ActQuant;

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
