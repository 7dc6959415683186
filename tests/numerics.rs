//! The emulation's activation rounding at its edges: ties, the top of the f32 range,
//! underflowing scales, signed zeros. Every expected value is worked out by hand from the
//! producer's rule (cited in `src/quant/activation.rs` and `src/quant/mx.rs`) and written
//! here as a literal or a one-step product, never recomputed by the code under test.

mod common;

use fleetmoe::quant::mx::{shared_exponent, ScaleElem};
use fleetmoe::quant::{ActQuant, ActScale, Fp8Flavor, MxElem, Numerics};

fn fp8(flavor: Fp8Flavor, rule: ActScale, numerics: Numerics) -> ActQuant {
    ActQuant::Fp8 {
        flavor,
        rule,
        static_scale: None,
        numerics,
    }
}

fn qdq(q: ActQuant, x: &[f32], cols: usize) -> Vec<f32> {
    let mut v = x.to_vec();
    q.apply(&mut v, cols).unwrap();
    v
}

/// 2^e as f32, exactly.
fn p2(e: i32) -> f32 {
    (e as f32).exp2()
}

// ---- OCP MX (AMD Quark's "even" rule) ----

#[test]
fn mx_shared_exponent_is_clamped_at_the_top_of_the_f32_range() {
    // Adding half an element ulp to the amax carries into the biased exponent 255 from
    // (2 − 2^−(mbits+1)) · 2^127 up: fp4 (mbits 1) 1.75, e3m2 (2) 1.875, e2m3 and e4m3 (3)
    // 1.9375. Quark clamps the unbiased exponent to 127 there, then subtracts emax
    // (fp4 2, e3m2 4, e2m3 2, e4m3 8).
    let cases = [
        (ScaleElem::Mx(MxElem::Fp4E2M1), 1.75f32, 125),
        (ScaleElem::Mx(MxElem::Fp6E3M2), 1.875, 123),
        (ScaleElem::Mx(MxElem::Fp6E2M3), 1.9375, 125),
        (ScaleElem::Fp8E4M3, 1.9375, 119),
    ];
    for (elem, threshold, want) in cases {
        let at = threshold * p2(127);
        let below = f32::from_bits(at.to_bits() - 1);
        for amax in [below, at, f32::MAX, f32::INFINITY] {
            assert_eq!(
                shared_exponent(amax, elem),
                Some(want),
                "{elem:?} amax {amax:e}"
            );
        }
        // One binade lower the carry is an ordinary one: 2^127 − emax either way.
        assert_eq!(shared_exponent(at / 2.0, elem), Some(want), "{elem:?}");
    }
    assert_eq!(shared_exponent(f32::NAN, ScaleElem::Fp8E4M3), None);
    // A zero or subnormal block takes the smallest scale.
    for amax in [0.0, f32::from_bits(1), f32::MIN_POSITIVE / 2.0] {
        assert_eq!(
            shared_exponent(amax, ScaleElem::Mx(MxElem::Fp4E2M1)),
            Some(-127)
        );
    }
}

#[test]
fn mxfp4_values_near_f32_max_dequantize_with_scale_2_pow_125() {
    // amax f32::MAX → scale 2^125: f32::MAX / 2^125 ≈ 7.99 saturates to 6; 2^124 is
    // 0.5 · 2^125, an e2m1 value. With the unclamped 2^126 it would be 0.25 · 2^126, a tie
    // between 0 and 0.5 that goes to 0.
    let mut x = vec![0.0f32; 32];
    x[0] = f32::MAX;
    x[1] = p2(124);
    x[2] = -1.5 * p2(125);
    let got = qdq(ActQuant::Mx(MxElem::Fp4E2M1), &x, 32);
    assert_eq!(got[0], 6.0 * p2(125));
    assert_eq!(got[1], p2(124));
    assert_eq!(got[2], -1.5 * p2(125));
}

#[test]
fn mxfp6_saturates_at_the_top_of_the_range() {
    // e2m3: amax 1.9375 · 2^127 → scale 2^125; 1.9375 · 4 = 7.75 saturates to 7.5.
    // e3m2: amax 1.875 · 2^127 → scale 2^123; 1.875 · 16 = 30 saturates to 28.
    for (elem, amax, want) in [
        (MxElem::Fp6E2M3, 1.9375 * p2(127), 7.5 * p2(125)),
        (MxElem::Fp6E3M2, 1.875 * p2(127), 28.0 * p2(123)),
    ] {
        let mut x = vec![1.0f32; 32];
        x[5] = amax;
        let got = qdq(ActQuant::Mx(elem), &x, 32);
        assert_eq!(got[5], want, "{elem:?}");
    }
}

#[test]
fn mx_keeps_the_sign_of_zero() {
    // OCP MX fp4 / fp6 have −0 codes and the hardware (and Quark's CUDA kernel) keep them;
    // Quark's CPU path drops the sign. Amax 4 → scale 1; −1e−30 rounds to −0.
    for elem in [MxElem::Fp4E2M1, MxElem::Fp6E3M2, MxElem::Fp6E2M3] {
        let mut x = vec![0.5f32; 32];
        x[0] = 4.0;
        x[1] = -1e-30;
        x[2] = -0.0;
        x[3] = 1e-30;
        let got = qdq(ActQuant::Mx(elem), &x, 32);
        for (i, negative) in [(1, true), (2, true), (3, false)] {
            assert_eq!(got[i], 0.0, "{elem:?}");
            assert_eq!(got[i].is_sign_negative(), negative, "{elem:?} element {i}");
        }
    }
}

// ---- NVFP4 (compressed-tensors; vLLM's reference behind Numerics::Vllm) ----

fn nvfp4(input_scale: f32, numerics: Numerics) -> ActQuant {
    ActQuant::Nvfp4 {
        input_scale,
        numerics,
    }
}

#[test]
fn nvfp4_exact_ties_go_to_even_and_vllm_lands_on_the_other_side() {
    // Global 1, amax 45: block scale e4m3(45 / 6) = 7.5 exactly, step 7.5.
    // −37.5 / 7.5 = −5, a tie between e2m1 4 and 6: to even (4) → −30 (compressed-tensors).
    // vLLM multiplies by 1/7.5 = 0.13333334 (f32, above 2/15): −37.5 · that rounds to
    // −5.0000005, past the tie → 6 → −45.
    let mut x = vec![0.0f32; 16];
    x[0] = 45.0;
    x[1] = -37.5;
    x[2] = 11.25; // 1.5 exactly: no tie, both agree
    let ct = qdq(nvfp4(1.0, Numerics::Producer), &x, 16);
    let vllm = qdq(nvfp4(1.0, Numerics::Vllm), &x, 16);
    assert_eq!((ct[0], ct[1], ct[2]), (45.0, -30.0, 11.25));
    assert_eq!((vllm[0], vllm[1], vllm[2]), (45.0, -45.0, 11.25));
}

#[test]
fn nvfp4_block_whose_scale_underflows_gives_signed_zeros() {
    // Global 1, amax 1e−5: 1e−5 / 6 is far below e4m3's smallest subnormal 2^−9, so the
    // block scale rounds to 0. compressed-tensors replaces it with e4m3's eps 0.125 and
    // the values round to ±0 with their sign (torch.sign(x) · 0); vLLM's reciprocal of 0
    // is 0, giving ±0 too.
    let mut x = vec![2e-6f32; 16];
    x[0] = 1e-5;
    x[1] = -1e-5;
    x[2] = -0.0;
    for numerics in [Numerics::Producer, Numerics::Vllm] {
        let got = qdq(nvfp4(1.0, numerics), &x, 16);
        for (i, v) in got.iter().enumerate() {
            assert_eq!(*v, 0.0, "{numerics:?}");
            assert_eq!(
                v.is_sign_negative(),
                x[i].is_sign_negative(),
                "{numerics:?} {i}"
            );
        }
    }
}

#[test]
fn nvfp4_global_from_a_reciprocal_input_scale_still_ties_to_even() {
    // input_scale 1/3 (f32 0.33333334): the global 1 / that rounds back to exactly 3 in
    // f32. amax 6: block scale e4m3(3 · (6 / 6)) = 3, step 3 / 3 = 1; 2.5 is a tie between
    // e2m1 2 and 3 → 2 (even).
    let mut x = vec![0.0f32; 16];
    x[0] = 6.0;
    x[1] = 2.5;
    let got = qdq(nvfp4(1.0 / 3.0, Numerics::Producer), &x, 16);
    assert_eq!((got[0], got[1]), (6.0, 2.0));
}

// ---- FP8 dynamic and static activation scales ----

#[test]
fn fp8_dynamic_scale_floors_the_amax_at_1e_minus_12_like_the_kernels() {
    // amax 1e−13 < 1e−12: scale = 1e−12 / 448; 1e−13 / scale = 44.8 → e4m3 44 (grid 4 in
    // [32, 64)); the amax no longer maps to 448. A zero row stays zero.
    let s = 1e-12f32 / 448.0;
    let got = qdq(
        fp8(
            Fp8Flavor::E4M3Fn,
            ActScale::DynamicPerToken,
            Numerics::Producer,
        ),
        &[1e-13, 0.0, 0.0, 0.0, 0.0, -0.0, 0.0, 0.0],
        4,
    );
    assert_eq!(got[0], 44.0 * s);
    assert_eq!(&got[1..4], &[0.0; 3]);
    assert!(got[4..].iter().all(|v| *v == 0.0));
    assert!(got[5].is_sign_negative());
}

#[test]
fn fp8_vllm_rule_clamps_small_scales_to_1_over_448_times_512() {
    // amax 2^−12 < 2^−9: vLLM's scale is 1 / (448 · 512) instead of 2^−12 / 448, so the
    // row uses only the bottom of the e4m3 range. x = 1.3 · 2^−18 / 448:
    //   fleetmoe: x / (2^−12 / 448) = 1.3 · 2^−6 (normal, grid 2^−9) → 1.25 · 2^−6;
    //   vLLM: x · 448 · 512 = 1.3 · 2^−9 (subnormal, grid 2^−9) → 2^−9.
    let x = [p2(-12), 1.3 * p2(-18) / 448.0, 0.0, 0.0];
    let ours = qdq(
        fp8(
            Fp8Flavor::E4M3Fn,
            ActScale::DynamicPerToken,
            Numerics::Producer,
        ),
        &x,
        4,
    );
    let vllm = qdq(
        fp8(Fp8Flavor::E4M3Fn, ActScale::DynamicPerToken, Numerics::Vllm),
        &x,
        4,
    );
    assert_eq!(ours[1], 1.25 * p2(-6) * (p2(-12) / 448.0));
    assert_eq!(vllm[1], p2(-9) * (1.0 / (448.0 * 512.0)));
    assert_eq!(ours[0], p2(-12));
    assert_eq!(vllm[0], p2(-12));
}

#[test]
fn fp8_vllm_multiplies_by_the_reciprocal_except_for_128_groups() {
    // amax 3360 → scale 7.5. 157.5 / 7.5 = 21, a tie between e4m3 20 and 22 → 20 (even)
    // → 150. vLLM's per-token and per-tensor paths multiply by 1/7.5 = 0.13333334:
    // 157.5 · that = 21.0000019 (f32), past the tie → 22 → 165. Its 128-group path divides.
    let mut x = vec![0.0f32; 128];
    x[0] = 3360.0;
    x[1] = 157.5;
    for (rule, numerics, want) in [
        (ActScale::DynamicPerToken, Numerics::Producer, 150.0),
        (ActScale::DynamicPerTensor, Numerics::Producer, 150.0),
        (ActScale::DynamicPerGroup128, Numerics::Producer, 150.0),
        (ActScale::DynamicPerToken, Numerics::Vllm, 165.0),
        (ActScale::DynamicPerTensor, Numerics::Vllm, 165.0),
        (ActScale::DynamicPerGroup128, Numerics::Vllm, 150.0),
    ] {
        let got = qdq(fp8(Fp8Flavor::E4M3Fn, rule, numerics), &x, 128);
        assert_eq!(got[1], want, "{rule:?} {numerics:?}");
        assert_eq!(got[0], 3360.0, "{rule:?} {numerics:?}");
    }
    // Static scales: the same reciprocal in vLLM's `quant_fp8`.
    for (numerics, want) in [(Numerics::Producer, 150.0), (Numerics::Vllm, 165.0)] {
        let q = ActQuant::Fp8 {
            flavor: Fp8Flavor::E4M3Fn,
            rule: ActScale::StaticPerTensor,
            static_scale: Some(7.5),
            numerics,
        };
        assert_eq!(qdq(q, &[157.5, 1.0], 2)[0], want, "{numerics:?}");
    }
}

#[test]
fn fnuz_uses_240_and_vllm_uses_224() {
    // Row amax 224 on e4m3fnuz. fleetmoe (and Quark): scale 224 / 240; 100 / scale =
    // 107.14 → 104 (grid 8 in [64, 128)) → 104 · 224 / 240. vLLM: scale 224 / 224 = 1;
    // 100 is a tie between 96 and 104 → 96 (even).
    let x = [224.0f32, 100.0];
    let ours = qdq(
        fp8(
            Fp8Flavor::E4M3Fnuz,
            ActScale::DynamicPerToken,
            Numerics::Producer,
        ),
        &x,
        2,
    );
    let vllm = qdq(
        fp8(
            Fp8Flavor::E4M3Fnuz,
            ActScale::DynamicPerToken,
            Numerics::Vllm,
        ),
        &x,
        2,
    );
    assert_eq!(ours[1], 104.0 * (224.0f32 / 240.0));
    assert_eq!(vllm, vec![224.0, 96.0]);
    // vLLM clamps at 224 too: a static scale of 1 saturates 300 to 224, fleetmoe to 240.
    for (numerics, want) in [(Numerics::Producer, 240.0), (Numerics::Vllm, 224.0)] {
        let q = ActQuant::Fp8 {
            flavor: Fp8Flavor::E4M3Fnuz,
            rule: ActScale::StaticPerTensor,
            static_scale: Some(1.0),
            numerics,
        };
        assert_eq!(qdq(q, &[300.0, 1.0], 2)[0], want, "{numerics:?}");
    }
}

#[test]
fn with_numerics_changes_only_fp8_and_nvfp4() {
    let mx = ActQuant::Mx(MxElem::Fp4E2M1);
    assert_eq!(mx.with_numerics(Numerics::Vllm), mx);
    assert_eq!(
        nvfp4(0.5, Numerics::Producer).with_numerics(Numerics::Vllm),
        nvfp4(0.5, Numerics::Vllm)
    );
    assert_eq!(Numerics::default(), Numerics::Producer);
}

// ---- How far vLLM's rules are from ours, on ordinary activations ----

/// Gaussian-ish bf16 activations with a few outliers, as hidden states look.
fn activations(seed: u64, n: usize) -> Vec<f32> {
    let mut r = common::rng(seed);
    let mut x = common::uniform(&mut r, n, 1.0);
    let big = common::uniform(&mut r, n / 64, 30.0);
    for (i, b) in big.iter().enumerate() {
        x[i * 64 + 7] = *b;
    }
    x.iter()
        .map(|v| half::bf16::from_f32(*v).to_f32())
        .collect()
}

/// (fraction of elements that differ, rel L2 of the difference).
fn difference(a: &[f32], b: &[f32]) -> (f64, f64) {
    let differ = a.iter().zip(b).filter(|(x, y)| x != y).count();
    let want: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    (differ as f64 / a.len() as f64, common::rel_l2(a, &want))
}

#[test]
fn vllm_rules_differ_from_ours_only_at_ties() {
    // The README's numerics notes quote these figures (printed with --nocapture); the
    // bounds hold them to it: the differences are rare ties, each one e4m3 / e2m1 step.
    let (cols, x) = (2048, activations(5, 64 * 2048));
    let cases = [
        ("fp8 per-token", ActScale::DynamicPerToken, 1e-4, 1e-4),
        ("fp8 per-tensor", ActScale::DynamicPerTensor, 1e-4, 1e-4),
        (
            "fp8 per-128-group",
            ActScale::DynamicPerGroup128,
            1e-9,
            1e-9,
        ),
    ];
    for (name, rule, max_frac, max_rel) in cases {
        let ours = qdq(fp8(Fp8Flavor::E4M3Fn, rule, Numerics::Producer), &x, cols);
        let vllm = qdq(fp8(Fp8Flavor::E4M3Fn, rule, Numerics::Vllm), &x, cols);
        let (frac, rel) = difference(&vllm, &ours);
        println!("{name}: {:.2e} of elements differ, rel L2 {rel:.2e}", frac);
        assert!(frac <= max_frac && rel <= max_rel, "{name}: {frac} {rel}");
    }
    let ours = qdq(
        fp8(
            Fp8Flavor::E4M3Fnuz,
            ActScale::DynamicPerToken,
            Numerics::Producer,
        ),
        &x,
        cols,
    );
    let vllm = qdq(
        fp8(
            Fp8Flavor::E4M3Fnuz,
            ActScale::DynamicPerToken,
            Numerics::Vllm,
        ),
        &x,
        cols,
    );
    let (frac, rel) = difference(&vllm, &ours);
    println!("fnuz 224 vs 240: {frac:.2e} of elements differ, rel L2 {rel:.2e}");
    assert!(frac > 0.1 && rel < 5e-2, "fnuz: {frac} {rel}");
    let ours = qdq(nvfp4(1.0 / 64.0, Numerics::Producer), &x, cols);
    let vllm = qdq(nvfp4(1.0 / 64.0, Numerics::Vllm), &x, cols);
    let (frac, rel) = difference(&vllm, &ours);
    println!("nvfp4: {frac:.2e} of elements differ, rel L2 {rel:.2e}");
    assert!(frac <= 1e-4 && rel <= 1e-3, "nvfp4: {frac} {rel}");
}

#[test]
fn rounding_qdq_activations_to_bf16_costs_what_the_readme_says() {
    // vLLM's emulation returns quantize-dequantized activations in the model dtype; native
    // kernels feed the fp8 codes to the MMA and apply the f32 scale to the f32 sum, which is
    // what keeping code · scale in f32 models. The bf16 rounding vLLM adds on top:
    let (cols, x) = (2048, activations(6, 64 * 2048));
    let ours = qdq(
        fp8(
            Fp8Flavor::E4M3Fn,
            ActScale::DynamicPerToken,
            Numerics::Producer,
        ),
        &x,
        cols,
    );
    let bf16: Vec<f32> = ours
        .iter()
        .map(|v| half::bf16::from_f32(*v).to_f32())
        .collect();
    let (frac, rel) = difference(&bf16, &ours);
    println!("bf16 output: {frac:.2e} of elements differ, rel L2 {rel:.2e}");
    assert!(rel > 1e-4 && rel < 3e-3, "{rel}");
}

#[test]
fn emulated_experts_take_vllm_numerics_on_request() {
    use fleetmoe::moe::{EmulatedExperts, Experts, LayerConfig, TopK};
    use fleetmoe::quant::{DenseExperts, ExpertWeights, QuantScheme};
    // e4m3fnuz per-token activations: vLLM's 224 moves most values (see above), so the
    // layer output must change with Numerics::Vllm and stay bit-identical without it.
    let config = LayerConfig::new(4, 2, 64, 128);
    let dense = DenseExperts::random(&config, 3);
    let weights = ExpertWeights::quantize(
        &dense,
        QuantScheme::parse("fp8-wtensor-atoken-fnuz").unwrap(),
    )
    .unwrap();
    let x = activations(8, 3 * 64);
    let topk = TopK::new(3, 2, vec![0, 1, 2, 3, 1, 2], vec![0.5; 6], 4).unwrap();
    let run = |e: &EmulatedExperts| {
        let mut out = vec![0f32; 3 * 64];
        e.forward(&x, &topk, None, &mut out).unwrap();
        out
    };
    let plain = EmulatedExperts::prepare(&weights, &config).unwrap();
    let producer = EmulatedExperts::prepare(&weights, &config)
        .unwrap()
        .with_numerics(Numerics::Producer);
    let vllm = EmulatedExperts::prepare(&weights, &config)
        .unwrap()
        .with_numerics(Numerics::Vllm);
    let (a, b, c) = (run(&plain), run(&producer), run(&vllm));
    assert_eq!(a, b);
    let (frac, rel) = difference(&c, &a);
    assert!(frac > 0.5 && rel > 1e-3 && rel < 0.1, "{frac} {rel}");
}
