//! A Qwen3-MoE-style sparse MoE block on candle CUDA tensors.
//!
//! candle computes the router (`logits = x · Wr^T`); fleetmoe's device-resident forward
//! (`MoeLayer::forward_cuda`) runs routing, the routed experts and the weighted combine on
//! candle's own buffers and stream; candle then computes the same block itself (softmax,
//! top-k, renormalise, SiLU-gated expert MLPs, weighted sum, all in f32) and the two are
//! compared. Exits non-zero when the relative L2 error is above 2e-2 (bf16 in and out).
//!
//! Sizes: hidden 256, intermediate 128, 8 experts, top-2, bf16 weights and activations.

use candle_core::op::BackpropOp;
use candle_core::{CudaStorage, DType, Device, Storage, Tensor, D};
use fleetmoe::moe::{LayerConfig, LayerExtras, LogitsRouting, MoeLayer, Target, TopKRouting};
use fleetmoe::quant::{DenseExperts, ExpertWeights, QuantScheme};
use half::bf16;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::process::ExitCode;

const HIDDEN: usize = 256;
const INTERMEDIATE: usize = 128;
const EXPERTS: usize = 8;
const TOP_K: usize = 2;
const MAX_TOKENS: usize = 64;
const TOLERANCE: f32 = 2e-2;

type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn fm<E: std::fmt::Display>(e: E) -> candle_core::Error {
    candle_core::Error::Msg(format!("fleetmoe: {e}"))
}

/// How the block is routed, on candle tensors.
enum MoeRouting<'a> {
    /// Router logits f32 `[T, E]`: fleetmoe's router picks the experts.
    Logits(&'a Tensor),
    /// The caller's choice: expert ids i32 `[T, k]` and their weights f32 `[T, k]`.
    TopK {
        ids: &'a Tensor,
        weights: &'a Tensor,
    },
}

/// The cudarc views of the routing tensors.
enum RoutingViews<'a> {
    Logits(cudarc::driver::CudaView<'a, f32>),
    TopK(
        cudarc::driver::CudaView<'a, i32>,
        cudarc::driver::CudaView<'a, f32>,
    ),
}

/// The only fleetmoe calls of the forward: cudarc views in, cudarc view out, candle's
/// stream. (Kept apart so a change in fleetmoe's signature touches these lines only.)
fn run_fleetmoe(
    layer: &MoeLayer,
    x: &cudarc::driver::CudaView<'_, bf16>,
    routing: &RoutingViews<'_>,
    out: &mut cudarc::driver::CudaViewMut<'_, bf16>,
    stream: &std::sync::Arc<cudarc::driver::CudaStream>,
) -> fleetmoe::Result<()> {
    let no_adapters = None::<&cudarc::driver::CudaSlice<i32>>;
    match routing {
        RoutingViews::Logits(l) => {
            layer.forward_cuda(x, LogitsRouting::Logits(l), no_adapters, out, stream)
        }
        RoutingViews::TopK(ids, weights) => layer.forward_cuda(
            x,
            TopKRouting::TopK { ids, weights },
            no_adapters,
            out,
            stream,
        ),
    }
}

/// A contiguous CUDA tensor's storage read guard and element range.
fn cuda_parts<'t>(
    t: &'t Tensor,
    what: &str,
) -> candle_core::Result<(candle_core::StorageRef<'t>, usize, usize)> {
    let (s, l) = t.storage_and_layout();
    if !matches!(&*s, Storage::Cuda(_)) {
        candle_core::bail!("{what} must be a CUDA tensor");
    }
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{what} must be contiguous (call .contiguous())");
    };
    Ok((s, start, end))
}

fn cuda_storage<'a>(s: &'a candle_core::StorageRef<'_>) -> &'a CudaStorage {
    match &**s {
        Storage::Cuda(c) => c,
        _ => unreachable!("checked by cuda_parts"),
    }
}

/// The routed-experts part of the block on candle tensors: `x` bf16 `[T, H]` and the
/// routing (contiguous, any start offset), result bf16 `[T, H]`, all on one CUDA device.
/// Queued on candle's stream: no host synchronisation.
fn fleetmoe_moe(
    layer: &MoeLayer,
    x: &Tensor,
    routing: MoeRouting<'_>,
) -> candle_core::Result<Tensor> {
    let (t, h) = x.dims2()?;
    if h != layer.config().hidden || x.dtype() != DType::BF16 {
        candle_core::bail!(
            "x: {:?} {:?}, want [T, {}] bf16",
            x.shape(),
            x.dtype(),
            layer.config().hidden
        );
    }
    let dev = x.device().as_cuda_device()?.clone();
    let stream = dev.cuda_stream();

    // Read locks on the input storages, held until the work is queued.
    let (xs, x0, x1) = cuda_parts(x, "x")?;
    let x_view = cuda_storage(&xs).as_cuda_slice::<bf16>()?.slice(x0..x1);
    let (guards, views);
    match routing {
        MoeRouting::Logits(logits) => {
            if logits.dims2()? != (t, layer.config().num_experts) || logits.dtype() != DType::F32 {
                candle_core::bail!(
                    "logits: {:?} {:?}, want [T, E] f32",
                    logits.shape(),
                    logits.dtype()
                );
            }
            let (ls, l0, l1) = cuda_parts(logits, "logits")?;
            guards = vec![ls];
            views = RoutingViews::Logits(
                cuda_storage(&guards[0])
                    .as_cuda_slice::<f32>()?
                    .slice(l0..l1),
            );
        }
        MoeRouting::TopK { ids, weights } => {
            let k = layer.config().top_k;
            if ids.dims2()? != (t, k) || ids.dtype() != DType::I32 {
                candle_core::bail!("ids: {:?} {:?}, want [T, k] i32", ids.shape(), ids.dtype());
            }
            if weights.dims2()? != (t, k) || weights.dtype() != DType::F32 {
                candle_core::bail!(
                    "weights: {:?} {:?}, want [T, k] f32",
                    weights.shape(),
                    weights.dtype()
                );
            }
            let (is, i0, i1) = cuda_parts(ids, "ids")?;
            let (ws, w0, w1) = cuda_parts(weights, "weights")?;
            guards = vec![is, ws];
            views = RoutingViews::TopK(
                cuda_storage(&guards[0])
                    .as_cuda_slice::<i32>()?
                    .slice(i0..i1),
                cuda_storage(&guards[1])
                    .as_cuda_slice::<f32>()?
                    .slice(w0..w1),
            );
        }
    }

    // The output: a fresh candle allocation (every element is written by fleetmoe).
    let mut out = dev.alloc_zeros::<bf16>(t * h)?;
    {
        let mut out_view = out.slice_mut(..);
        run_fleetmoe(layer, &x_view, &views, &mut out_view, &stream).map_err(fm)?;
    }
    drop(views);
    drop(guards);
    let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(out, dev));
    Ok(Tensor::from_storage(
        storage,
        (t, h),
        BackpropOp::none(),
        false,
    ))
}

/// Softmax over the experts, top-k, renormalised (Qwen3-MoE's `norm_topk_prob`), in candle:
/// the probabilities `[T, E]`, the ids as u32 and as i32 `[T, k]`, their weights f32 `[T, k]`.
fn candle_topk(logits: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor, Tensor)> {
    let logits = logits.to_dtype(DType::F32)?;
    let m = logits.max_keepdim(D::Minus1)?;
    let ex = logits.broadcast_sub(&m)?.exp()?;
    let probs = ex.broadcast_div(&ex.sum_keepdim(D::Minus1)?)?;
    let ids = probs
        .arg_sort_last_dim(false)?
        .narrow(D::Minus1, 0, TOP_K)?
        .contiguous()?;
    let w = probs.gather(&ids, D::Minus1)?;
    let w = w.broadcast_div(&w.sum_keepdim(D::Minus1)?)?;
    // candle has no u32 -> i32 cast kernel; the ids are tiny, so go through the host.
    let (t, k) = ids.dims2()?;
    let ids_i32: Vec<i32> = ids
        .flatten_all()?
        .to_vec1::<u32>()?
        .into_iter()
        .map(|i| i as i32)
        .collect();
    let ids_i32 = Tensor::from_vec(ids_i32, (t, k), logits.device())?;
    Ok((probs, ids, ids_i32, w.contiguous()?))
}

/// The same block, entirely in candle and in f32: softmax over the experts, top-k,
/// renormalise, then `Σ_k w_k · down_k(silu(gate_k x) · up_k x)`. Computed densely (every
/// expert on every token, weight 0 where not chosen): fine for a check.
fn candle_reference(
    x: &Tensor,
    logits: &Tensor,
    w13: &Tensor,
    w2: &Tensor,
) -> candle_core::Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    // The same top-k as `candle_topk` (arg_sort: exactly k per token even where bf16
    // logits tie), as a dense [T, E] weight matrix with zeros where not chosen.
    let (_, ids, _, topw) = candle_topk(logits)?;
    let ids = ids.to_dtype(DType::F32)?;
    let w13 = w13.to_dtype(DType::F32)?;
    let w2 = w2.to_dtype(DType::F32)?;
    let mut out = x.zeros_like()?;
    for e in 0..EXPERTS {
        let w13e = w13.get(e)?; // [2I, H]: gate rows, then up rows
        let gate = x.matmul(&w13e.narrow(0, 0, INTERMEDIATE)?.t()?)?;
        let up = x.matmul(&w13e.narrow(0, INTERMEDIATE, INTERMEDIATE)?.t()?)?;
        let act = (gate.silu()? * up)?;
        let y = act.matmul(&w2.get(e)?.t()?)?; // w2[e]: [H, I]
        let we = (ids.eq(e as f64)?.to_dtype(DType::F32)? * &topw)?.sum_keepdim(1)?; // [T, 1]
        out = (out + y.broadcast_mul(&we)?)?;
    }
    Ok(out)
}

fn rel_l2(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    let a = a.to_dtype(DType::F32)?;
    let b = b.to_dtype(DType::F32)?;
    let num = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f32>()?;
    let den = b.sqr()?.sum_all()?.to_scalar::<f32>()?;
    Ok((num / den.max(f32::MIN_POSITIVE)).sqrt())
}

/// On a failure: the worst token's error and its expert probabilities (a near-tie between
/// the k-th and (k+1)-th expert can legitimately pick another expert).
fn explain_worst(got: &Tensor, want: &Tensor, probs: &Tensor) -> candle_core::Result<()> {
    let got = got.to_dtype(DType::F32)?;
    let d = (&got - want)?.sqr()?.sum_keepdim(1)?.sqrt()?;
    let n = want.sqr()?.sum_keepdim(1)?.sqrt()?;
    let per = (d / n)?.flatten_all()?.to_vec1::<f32>()?;
    let bad = per.iter().filter(|e| **e > TOLERANCE).count();
    let (i, e) = per
        .iter()
        .enumerate()
        .fold((0, 0f32), |a, (i, e)| if *e > a.1 { (i, *e) } else { a });
    let mut p = probs.get(i)?.to_vec1::<f32>()?;
    p.sort_by(|a, b| b.total_cmp(a));
    println!(
        "    {bad} of {} tokens above tolerance; worst token {i}: {e:.3e}, its sorted probs {:?}",
        per.len(),
        &p[..(TOP_K + 2).min(p.len())]
    );
    Ok(())
}

fn round_bf16(v: &mut [f32]) {
    v.iter_mut().for_each(|w| *w = bf16::from_f32(*w).to_f32());
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> AnyResult<bool> {
    // candle's CUDA device: primary context of GPU 0, its own stream. fleetmoe opens the
    // same primary context, so the two share memory and streams.
    let device = Device::new_cuda_with_stream(0)?;

    // Weights, rounded to bf16 on the host so both sides see the same numbers.
    let config = LayerConfig::new(EXPERTS, TOP_K, HIDDEN, INTERMEDIATE); // SiLU, softmax top-k, renormalised
    let mut dense = DenseExperts::random(&config, 7);
    round_bf16(&mut dense.w13);
    round_bf16(&mut dense.w2);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut wr =
        fleetmoe::quant::dense::gaussian(&mut rng, EXPERTS * HIDDEN, 1.0 / (HIDDEN as f32).sqrt());
    round_bf16(&mut wr);

    // candle's copies: router [E, H], w13 [E, 2I, H], w2 [E, H, I], bf16.
    let to_bf16 = |v: &[f32], shape: &[usize]| -> candle_core::Result<Tensor> {
        Tensor::from_slice(v, shape, &device)?.to_dtype(DType::BF16)
    };
    let router_w = to_bf16(&wr, &[EXPERTS, HIDDEN])?;
    let w13 = to_bf16(&dense.w13, &[EXPERTS, 2 * INTERMEDIATE, HIDDEN])?;
    let w2 = to_bf16(&dense.w2, &[EXPERTS, HIDDEN, INTERMEDIATE])?;

    // fleetmoe's layer from the same unquantized bf16 experts.
    let weights = ExpertWeights::quantize(&dense, QuantScheme::parse("bf16")?)?;
    let target = Target::cuda(0)?;
    let layer = MoeLayer::new(config, &weights, &target, LayerExtras::default())?;
    layer.reserve(MAX_TOKENS)?; // workspace sized once, before any forward
    println!("fleetmoe backend: {}", layer.selection().chosen.name());

    let mut ok = true;
    for &tokens in &[1usize, 5, MAX_TOKENS] {
        // Hidden states as a view at a non-zero offset of a larger buffer, as a model's
        // activations often are.
        let pad = 3;
        let all: Vec<f32> =
            fleetmoe::quant::dense::gaussian(&mut rng, (tokens + pad) * HIDDEN, 1.0);
        let x = to_bf16(&all, &[tokens + pad, HIDDEN])?.narrow(0, pad, tokens)?;

        // The model's router, in candle: bf16 linear, logits in f32 (Qwen3-MoE takes the
        // softmax in f32).
        let logits = x.matmul(&router_w.t()?)?.to_dtype(DType::F32)?;

        let want = candle_reference(&x, &logits, &w13, &w2)?;
        // fleetmoe routed from the logits, and fleetmoe on candle's own top-k.
        let from_logits = fleetmoe_moe(&layer, &x, MoeRouting::Logits(&logits))?;
        let (probs, _, ids, weights) = candle_topk(&logits)?;
        let from_topk = fleetmoe_moe(
            &layer,
            &x,
            MoeRouting::TopK {
                ids: &ids,
                weights: &weights,
            },
        )?;
        device.synchronize()?;
        for (name, got) in [
            ("routed from logits", &from_logits),
            ("candle's top-k     ", &from_topk),
        ] {
            let err = rel_l2(got, &want)?;
            let pass = err.is_finite() && err <= TOLERANCE;
            ok &= pass;
            println!(
                "tokens {tokens:>3}, {name}: rel L2 vs candle f32 reference = {err:.3e} (tolerance {TOLERANCE:.0e}) {}",
                if pass { "ok" } else { "FAIL" }
            );
            if !pass {
                explain_worst(got, &want, &probs)?;
            }
        }
    }
    println!("{}", if ok { "PASS" } else { "FAIL" });
    Ok(ok)
}
