//! The simulator's matrix instructions read operand codes as AMD's matrix cores do
//! (`kernels-hip/sim/sim_decode.h`, from the CDNA4 ISA guide §7.2 and §7.3 and the HIP
//! fp8 documentation): e8m0 0xFF and e4m3fn 0x7F / 0xFF are NaN, e4m3fnuz 0x80 is NaN on
//! gfx942, and the gfx950 scaled MFMA scales each 32-element block's dot product, not each
//! product. Weights holding NaN codes are refused by `ExpertWeights::validate`, so these
//! tests go round it (`HipExperts::prepare_unchecked_values`, or the GEMM kernel launched by
//! hand): what is checked is that a NaN code the kernels hand to a matrix instruction
//! comes out as NaN where the hardware would put it, and nowhere else.
#![cfg(feature = "rocm")]

mod common;
mod fakehip;

use fakehip::{simulator, use_stand_in};
use fleetmoe::backends::rocm::shuffle::{shuffle_16x16, ShuffleShape};
use fleetmoe::backends::rocm::{fnuz, kernels, scale_shuffle, HipExperts, Rocm};
use fleetmoe::device::hip::HipDevice;
use fleetmoe::device::{Arg, Buffer, LaunchConfig, Runtime};
use fleetmoe::gpu::layer::HostRouting;
use fleetmoe::gpu::GpuLayer;
use fleetmoe::moe::{LayerConfig, Target, TopK};
use fleetmoe::oracle::{self, BackendId};
use fleetmoe::quant::{DenseExperts, ExpertWeights, Fp8Flavor, MxElem, QuantScheme, WeightData};

/// The layer shape of these tests: 4 experts, top-2, hidden 128, intermediate 256.
fn config() -> LayerConfig {
    LayerConfig::new(4, 2, 128, 256)
}

/// Expert, w2 row (an output column) and intermediate column that get the NaN code.
const E: usize = 1;
const ROW: usize = 37;
const COL: usize = 200;

/// `HipExperts` for `w` on the current stand-in, run on seeded tokens routed so that some
/// reach expert `E` and some do not; returns the output and, per token, whether it
/// reached `E`.
fn run_experts(w: &ExpertWeights, backend: BackendId) -> fleetmoe::Result<(Vec<f32>, Vec<bool>)> {
    let config = config();
    let target = Target::hip(0).expect("the stand-in opens as an AMD GPU");
    let dev = target.hip_device().unwrap();
    let selection = oracle::select(&w.scheme, dev.capabilities(), &config, Some(backend))?;
    let experts = HipExperts::prepare_unchecked_values(dev, w, &config, &selection)?;
    let layer = GpuLayer::<Rocm>::from_experts(dev, &config, experts, None)?;
    let (x, topk) = tokens(&config);
    let out = layer.forward(&x, HostRouting::TopK(&topk), None)?;
    let reached = (0..topk.tokens())
        .map(|t| topk.ids()[t * topk.k()..(t + 1) * topk.k()].contains(&(E as u32)))
        .collect();
    Ok((out, reached))
}

fn tokens(config: &LayerConfig) -> (Vec<f32>, TopK) {
    let tokens = 6;
    let mut rng = common::rng(5);
    let x = common::uniform(&mut rng, tokens * config.hidden, 1.5);
    // Token t goes to experts t % 4 and (t + 1) % 4: tokens 0, 1, 4, 5 reach expert 1.
    let ids = (0..tokens)
        .flat_map(|t| [(t % 4) as u32, ((t + 1) % 4) as u32])
        .collect();
    let topk = TopK::new(tokens, 2, ids, vec![0.5; 2 * tokens], config.num_experts).unwrap();
    (x, topk)
}

/// Quantized random weights for `scheme`, calibrated where the scheme needs static scales.
fn weights(scheme: &str) -> ExpertWeights {
    let config = config();
    let dense = DenseExperts::random(&config, 9);
    let mut w = ExpertWeights::quantize(&dense, QuantScheme::parse(scheme).unwrap()).unwrap();
    if w.scheme.needs_static_input_scales() {
        let (x, topk) = tokens(&config);
        fleetmoe::moe::calibrate(&mut w, &config, &x, &topk).unwrap();
    }
    w
}

/// Asserts that exactly the outputs `(t, ROW)` of tokens that reached expert `E` are NaN
/// and every other output is finite.
fn assert_nan_exactly_where_read(what: &str, out: &[f32], reached: &[bool]) {
    let h = config().hidden;
    assert!(reached.iter().any(|&r| r) && reached.iter().any(|&r| !r));
    for (t, &r) in reached.iter().enumerate() {
        for n in 0..h {
            let v = out[t * h + n];
            if r && n == ROW {
                assert!(v.is_nan(), "{what}: token {t} column {n} is {v}, not NaN");
            } else {
                assert!(v.is_finite(), "{what}: token {t} column {n} is {v}");
            }
        }
    }
    println!("{what}: NaN exactly at column {ROW} of the tokens routed to expert {E}");
}

#[test]
fn an_e8m0_nan_scale_is_nan_where_the_scaled_mfma_reads_its_block() {
    let Some((clang, mut stand_ins)) = simulator() else {
        return;
    };
    use_stand_in(&clang, &mut stand_ins, 950);
    for scheme in [
        "mxfp4-a-mxfp4",
        "mxfp4-a-fp8",
        "mxfp6-e3m2",
        "mxfp6-e2m3-a-fp8",
    ] {
        let mut w = weights(scheme);
        let (rows, blocks) = (w.w2.rows, w.w2.cols / 32);
        let WeightData::Mx { scales, .. } = &mut w.w2.data else {
            panic!("{scheme}: not MX weights");
        };
        scales[(E * rows + ROW) * blocks + COL / 32] = 0xFF;
        let (out, reached) = run_experts(&w, BackendId::AiterMxNative).unwrap();
        assert_nan_exactly_where_read(&format!("{scheme} e8m0 0xFF"), &out, &reached);
    }
}

#[test]
fn an_fp8_nan_code_reaches_the_output_through_the_fp8_mfma() {
    let Some((clang, mut stand_ins)) = simulator() else {
        return;
    };
    let cols = config().intermediate;
    let at = (E * config().hidden + ROW) * cols + COL;
    let with_code = |mut w: ExpertWeights, code: u8| {
        let WeightData::Fp8 { codes, .. } = &mut w.w2.data else {
            panic!("not fp8 weights");
        };
        codes[at] = code;
        w
    };
    // gfx950 reads OCP e4m3fn: 0x7F and 0xFF are NaN.
    use_stand_in(&clang, &mut stand_ins, 950);
    for scheme in ["fp8", "fp8-channel", "fp8-block128"] {
        for code in [0x7F, 0xFF] {
            let w = with_code(weights(scheme), code);
            let backend = if scheme == "fp8-block128" {
                BackendId::AiterFp8Block128
            } else {
                BackendId::AiterFp8
            };
            let (out, reached) = run_experts(&w, backend).unwrap();
            let what = format!("gfx950 {scheme} e4m3fn 0x{code:02X}");
            assert_nan_exactly_where_read(&what, &out, &reached);
        }
    }
    // gfx942 reads e4m3fnuz: 0x80 is its NaN, and an e4m3fnuz checkpoint keeps its bytes.
    use_stand_in(&clang, &mut stand_ins, 942);
    for scheme in ["fp8", "fp8-channel"] {
        let mut w = weights(scheme);
        if let QuantScheme::Fp8 { flavor, .. } = &mut w.scheme {
            *flavor = Fp8Flavor::E4M3Fnuz;
        }
        if let WeightData::Fp8 { codes, scales } = &mut w.w13.data {
            fnuz::fn_to_fnuz(codes, scales).unwrap();
        }
        if let WeightData::Fp8 { codes, scales } = &mut w.w2.data {
            fnuz::fn_to_fnuz(codes, scales).unwrap();
        }
        let (out, reached) = run_experts(&with_code(w, 0x80), BackendId::AiterFp8).unwrap();
        assert_nan_exactly_where_read(&format!("gfx942 {scheme} e4m3fnuz 0x80"), &out, &reached);
        // An e4m3fn NaN has no e4m3fnuz code (it would read as ±240): refused, not run.
        let w = with_code(weights(scheme), 0x7F);
        let err = match run_experts(&w, BackendId::AiterFp8) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("gfx942 {scheme}: an e4m3fn NaN code was prepared"),
        };
        assert!(err.contains("0x7F"), "{err}");
    }
}

/// e2m1 magnitudes by code (sign bit 8).
const FP4: [f64; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];

/// One scaled-MFMA GEMM (`fm_gemm_mx_up`, MXFP4 weights and activations, K = 128: one
/// instruction per tile) on 16 weight rows and 2 tokens, with the codes and e8m0 scales
/// given: `w[n][k]`, `sw[n][block]`, `x[t][k]`, `sx[t][block]`. Returns `[t][n]`.
fn scaled_gemm(
    w: &[[u8; 128]; 16],
    sw: &[[u8; 4]; 16],
    x: &[[u8; 128]; 2],
    sx: &[[u8; 4]; 2],
) -> Vec<f32> {
    let target = Target::hip(0).expect("the stand-in opens as an AMD GPU");
    let dev = target.hip_device().unwrap();
    let pack = |row: &[u8; 128]| -> Vec<u8> { row.chunks(2).map(|p| p[0] | (p[1] << 4)).collect() };
    let packed: Vec<u8> = w.iter().flat_map(pack).collect();
    let shape = ShuffleShape {
        matrices: 1,
        rows: 16,
        cols: 64,
        elem_bytes: 1,
    };
    let wdata = shuffle_16x16(&packed, shape).unwrap();
    let wscales = scale_shuffle::shuffle_e8m0(sw.as_flattened(), 16, 4).unwrap();
    let act: Vec<u8> = x.iter().flat_map(pack).collect();
    // Slots 0 and 1 hold tokens 0 and 1 (top-1), the other 14 are padding (pair >= 2).
    let sorted: Vec<i32> = (0..16i32).map(|s| s.min(2)).collect();
    let buf = |bytes: &[u8]| Buffer::<HipDevice>::from_slice(dev, bytes).unwrap();
    let (wb, sb, ab, asb) = (
        buf(&wdata),
        buf(&wscales),
        buf(&act),
        buf(sx.as_flattened()),
    );
    let (sortb, blockb) = (
        buf(bytemuck::cast_slice(&sorted)),
        buf(bytemuck::bytes_of(&0i32)),
    );
    let topw = buf(bytemuck::cast_slice(&[1f32, 1f32]));
    let out = Buffer::<HipDevice>::alloc(dev, 16 * 16 * 4).unwrap();
    let gemm = dev.load(&kernels::module("gemm")).unwrap();
    let (null, i) = (Arg::Ptr(0), Arg::I32);
    let args = [
        Arg::Ptr(wb.addr()),
        null,
        i(0),
        Arg::Ptr(sb.addr()),
        null,
        Arg::Ptr(ab.addr()),
        Arg::Ptr(asb.addr()),
        i(0),
        Arg::F32(1.0),
        Arg::Ptr(sortb.addr()),
        Arg::Ptr(blockb.addr()),
        Arg::Ptr(topw.addr()),
        Arg::Ptr(out.addr()),
        i(16),  // N
        i(128), // K
        i(1),   // top_k
        i(2),   // pairs
        i(0),   // fnuz
        i(0),   // is_f16
        i(4),   // weight format: fp4
        i(4),   // activation format: fp4
        i(0),   // weight on input
        null,   // LoRA delta rows: none
        null,   // token adapters
        null,   // integer zero points: none
        null,   // act-order g_idx: none
        i(0),   // integer group size
        i(0),   // integer bits
        null,   // W4A8 channel scales: none
        i(0),   // gemm1 input by token (not by slot)
    ];
    let launch = LaunchConfig {
        grid: (1, 1, 1),
        block: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    dev.launch(&gemm, "fm_gemm_mx_up", launch, &args, dev.stream())
        .unwrap();
    let mut y = vec![0f32; 2 * 16];
    dev.download(out.addr(), bytemuck::cast_slice_mut(&mut y), dev.stream())
        .unwrap();
    y
}

/// The scaled MFMA as the ISA defines it, in f64: per block, the dot product of the
/// decoded codes times 2^(ea - 127) · 2^(eb - 127); NaN if either scale is 0xFF.
fn per_block(w: &[u8; 128], sw: &[u8; 4], x: &[u8; 128], sx: &[u8; 4]) -> f64 {
    let v = |c: u8| {
        if c & 8 != 0 {
            -FP4[(c & 7) as usize]
        } else {
            FP4[c as usize]
        }
    };
    (0..4)
        .map(|b| {
            if sw[b] == 0xFF || sx[b] == 0xFF {
                return f64::NAN;
            }
            let dot: f64 = (32 * b..32 * b + 32).map(|k| v(w[k]) * v(x[k])).sum();
            dot * 2f64.powi(sw[b] as i32 - 127) * 2f64.powi(sx[b] as i32 - 127)
        })
        .sum()
}

#[test]
fn the_scaled_mfma_scales_block_dot_products_not_products() {
    let Some((clang, mut stand_ins)) = simulator() else {
        return;
    };
    use_stand_in(&clang, &mut stand_ins, 950);
    let (mut w, mut sw) = ([[0u8; 128]; 16], [[127u8; 4]; 16]);
    let (mut x, mut sx) = ([[0u8; 128]; 2], [[127u8; 4]; 2]);
    // Token 0, block 0: all 6.0 at scale 2^-127; token 1: 1.0 in blocks 1..3.
    x[0][..32].fill(0x7);
    sx[0][0] = 0;
    x[1][32..].fill(0x2);
    // Row 0: 6.0 at scale 2^127 in block 0. Per product, 6 · 2^127 overflows f32; per block,
    // the scales cancel: 32 · 36 = 1152.
    w[0][..32].fill(0x7);
    sw[0][0] = 254;
    // Row 1: the same values at scale 1: 1152 · 2^-127, a normal f32.
    w[1][..32].fill(0x7);
    // Row 2: a NaN scale on block 2 of positive values read by token 1 (per product this
    // was +inf): NaN for both tokens, whatever their values.
    w[2][64..96].fill(0x2);
    sw[2][2] = 0xFF;
    // Row 3: a NaN scale on an all-zero block: still NaN.
    sw[3][3] = 0xFF;
    // Rows 4..15: seeded codes and scales around 1.
    let mut rng = common::rng(11);
    for n in 4..16 {
        let codes = common::uniform(&mut rng, 132, 8.0);
        for k in 0..128 {
            w[n][k] = (codes[k] + 8.0) as u8 & 0xF;
        }
        for b in 0..4 {
            sw[n][b] = (123.0 + codes[128 + b].abs()) as u8;
        }
    }
    let got = scaled_gemm(&w, &sw, &x, &sx);
    for t in 0..2 {
        for n in 0..16 {
            let (g, want) = (got[t * 16 + n], per_block(&w[n], &sw[n], &x[t], &sx[t]));
            if want.is_nan() {
                assert!(g.is_nan(), "token {t} row {n}: {g}, want NaN");
            } else {
                assert!(want.is_finite(), "token {t} row {n}: reference {want}");
                let err = (g as f64 - want).abs();
                assert!(
                    err <= 1e-6 * want.abs(),
                    "token {t} row {n}: {g}, want {want}"
                );
            }
        }
    }
    assert_eq!(got[0], 1152.0);
    assert_eq!(got[1], (1152.0 * 2f64.powi(-127)) as f32);
    // What scaling each product would have given for row 0, token 0.
    let per_product = 6.0f32 * 2f32.powi(127) * 6.0 * 2f32.powi(-127);
    assert_eq!(per_product, f32::INFINITY);
    println!(
        "row 0: per block {} (per product would be {per_product})",
        got[0]
    );
}

/// `fm_mx_quant_rows` on one row of 32-element bf16 blocks: (codes, e8m0 scales).
fn mx_quant(x: &[u16], fmt: i32, bits: usize) -> (Vec<u8>, Vec<u8>) {
    let target = Target::hip(0).expect("the stand-in opens as an AMD GPU");
    let dev = target.hip_device().unwrap();
    let sb = Buffer::<HipDevice>::from_slice(dev, bytemuck::cast_slice::<u16, u8>(x)).unwrap();
    let blocks = x.len() / 32;
    let (codes, scales) = (
        Buffer::<HipDevice>::alloc(dev, x.len() * bits / 8).unwrap(),
        Buffer::<HipDevice>::alloc(dev, blocks).unwrap(),
    );
    let quant = dev.load(&kernels::module("quant")).unwrap();
    let args = [
        Arg::Ptr(sb.addr()),
        Arg::I32(1),
        Arg::I32(x.len() as i32),
        Arg::Ptr(0),
        Arg::Ptr(0),
        Arg::I32(0),
        Arg::I32(fmt),
        Arg::I32(0),
        Arg::Ptr(codes.addr()),
        Arg::Ptr(scales.addr()),
    ];
    let launch = LaunchConfig {
        grid: (1, 1, 1),
        block: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    dev.launch(&quant, "fm_mx_quant_rows", launch, &args, dev.stream())
        .unwrap();
    let mut c = vec![0u8; x.len() * bits / 8];
    let mut s = vec![0u8; blocks];
    dev.download(codes.addr(), &mut c, dev.stream()).unwrap();
    dev.download(scales.addr(), &mut s, dev.stream()).unwrap();
    (c, s)
}

#[test]
fn mx_activation_scales_match_the_emulation_at_the_top_of_the_range_and_for_nan() {
    use fleetmoe::quant::mx::{shared_exponent, ScaleElem};
    let Some((clang, mut stand_ins)) = simulator() else {
        return;
    };
    use_stand_in(&clang, &mut stand_ins, 950);
    let bf16 = |v: f32| half::bf16::from_f32(v).to_bits();
    // Block 0: amax 1.75 · 2^127 (bf16 0x7F60) rounds into f32 exponent 255; Quark and
    // quant::mx clamp it to 2^127, so fp4's scale is 2^125 (code 252), never 2^126.
    // Block 1: an ordinary block. Block 2: a NaN, which fmax alone would skip.
    let mut x = vec![bf16(0.75); 96];
    x[3] = 0x7F60;
    x[32 + 5] = bf16(5.5);
    x[64 + 9] = 0x7FC0;
    let (_, scales) = mx_quant(&x, 4, 4);
    let want = |amax: f32| {
        shared_exponent(amax, ScaleElem::Mx(MxElem::Fp4E2M1)).map_or(0xFF, |e| (e + 127) as u8)
    };
    assert_eq!(scales[0], 252);
    assert_eq!(scales[0], want(f32::from_bits(0x7F60_0000)));
    assert_eq!(scales[1], want(5.5));
    assert_eq!(scales[2], 0xFF);
    assert_eq!(want(f32::NAN), 0xFF);
}
