//! Quantized experts in transformers 5's fused layout (issue 16): tiny checkpoints written
//! here in the producers' exact tensor names, dtypes and shapes, each loaded and compared to
//! a dequantise-in-f64 reference of the same file (and run against the f64 forward by
//! `check`), and the formats no producer writes fused refused by name.
//!
//! transformers 5 fine-grained FP8 (`src/transformers/integrations/finegrained_fp8.py`
//! `FP8Experts`, `integrations/finegrained.py` `_alloc_expert_proj` / `FineGrainedExperts`,
//! `Fp8Quantize`): `experts.gate_up_proj` F8_E4M3 `[E, 2I, H]` (gate rows then up rows),
//! `experts.down_proj` F8_E4M3 `[E, H, I]`, F32 `*_scale_inv` multiplied to dequantize:
//! `[E, ceil(out/128), ceil(in/128)]` with `weight_block_size`, else `[E, 1, 1]` (one per
//! expert) or `[E, 2, 1]` for gate_up (`min_scale_out = 2`: gate's, then up's); static
//! activations add F32 `*_activation_scale` `[E]`.

mod ckpt;

use ckpt::cases;
use ckpt::harness::{check, config, E, I};
use ckpt::{router, write_config, Expected, Writer};
use fleetmoe::checkpoint::inspect::inspect;
use fleetmoe::checkpoint::Checkpoint;
use fleetmoe::formats::{MiniFloat, F8E4M3};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use safetensors::Dtype;
use serde_json::{json, Value};
use std::process::Command;

const BLOCK: &str = "model.layers.1.mlp";

/// How the fused fp8 scales are stored.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scales {
    /// `weight_block_size [128, 128]`: block grids, F32 or (`scale_fmt: "ue8m0"`) F8_E8M0.
    Block { ue8m0: bool },
    /// One scale per expert, `[E, 1, 1]`.
    PerExpert,
    /// `[E, 2, 1]` for gate_up: gate's and up's; `differ` makes them unequal.
    Halves { differ: bool },
}

/// Random e4m3 codes, every one finite (no NaN byte).
fn codes(r: &mut ChaCha8Rng, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            let x: f32 = r.random_range(-440.0f32..440.0);
            F8E4M3::from_f32(x).to_bits()
        })
        .collect()
}

fn positive_scales(r: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| r.random_range(1e-4f32..1e-3)).collect()
}

/// `code · scale(e, row, col)` in f64, as f32 only at the end.
fn dequant(
    codes: &[u8],
    (e, rows, cols): (usize, usize, usize),
    scale: impl Fn(usize, usize, usize) -> f64,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(e * rows * cols);
    for ex in 0..e {
        for row in 0..rows {
            for col in 0..cols {
                let c = codes[(ex * rows + row) * cols + col];
                let v = F8E4M3::from_bits(c).to_f32() as f64 * scale(ex, row, col);
                out.push(v as f32);
            }
        }
    }
    out
}

/// Layer 1 of a Qwen3-MoE with hidden size `h` in transformers' fused fine-grained FP8
/// (`activation_scheme` static when `fixed_acts`), plus its router; returns what the
/// loader must produce, dequantized in f64.
fn fused_fp8(
    wr: &mut Writer,
    r: &mut ChaCha8Rng,
    h: usize,
    scales: Scales,
    fixed_acts: bool,
) -> Expected {
    let (gu, dn) = (
        format!("{BLOCK}.experts.gate_up_proj"),
        format!("{BLOCK}.experts.down_proj"),
    );
    let c13 = codes(r, E * 2 * I * h);
    let c2 = codes(r, E * h * I);
    wr.bytes(&gu, Dtype::F8_E4M3, &[E, 2 * I, h], c13.clone());
    wr.bytes(&dn, Dtype::F8_E4M3, &[E, h, I], c2.clone());
    let want = match scales {
        Scales::Block { ue8m0 } => {
            let (g13, g2) = ([E, 2 * I / 128, h / 128], [E, h / 128, I / 128]);
            let mut grid = |name: String, shape: &[usize]| -> Vec<f32> {
                let n = shape.iter().product();
                if ue8m0 {
                    // Exponent bytes: scale 2^(b − 127) (transformers `Fp8Quantize`).
                    let b: Vec<u8> = (0..n).map(|_| r.random_range(110u8..125)).collect();
                    wr.bytes(&name, Dtype::F8_E8M0, shape, b.clone());
                    b.iter()
                        .map(|&x| 2f64.powi(x as i32 - 127) as f32)
                        .collect()
                } else {
                    let v = positive_scales(r, n);
                    wr.floats(&name, Dtype::F32, shape, &v);
                    v
                }
            };
            let s13 = grid(format!("{gu}_scale_inv"), &g13);
            let s2 = grid(format!("{dn}_scale_inv"), &g2);
            Expected {
                w13: dequant(&c13, (E, 2 * I, h), |e, row, col| {
                    s13[(e * g13[1] + row / 128) * g13[2] + col / 128] as f64
                }),
                w2: dequant(&c2, (E, h, I), |e, row, col| {
                    s2[(e * g2[1] + row / 128) * g2[2] + col / 128] as f64
                }),
            }
        }
        Scales::PerExpert | Scales::Halves { .. } => {
            let s2 = positive_scales(r, E);
            wr.floats(&format!("{dn}_scale_inv"), Dtype::F32, &[E, 1, 1], &s2);
            let s13 = match scales {
                Scales::PerExpert => {
                    let s = positive_scales(r, E);
                    wr.floats(&format!("{gu}_scale_inv"), Dtype::F32, &[E, 1, 1], &s);
                    s.iter().flat_map(|&x| [x, x]).collect::<Vec<f32>>()
                }
                _ => {
                    let mut s = positive_scales(r, 2 * E);
                    if scales == (Scales::Halves { differ: false }) {
                        for p in s.chunks_mut(2) {
                            p[1] = p[0];
                        }
                    }
                    wr.floats(&format!("{gu}_scale_inv"), Dtype::F32, &[E, 2, 1], &s);
                    s
                }
            };
            Expected {
                // Rows 0..I are gate (first scale of the pair), I..2I up.
                w13: dequant(&c13, (E, 2 * I, h), |e, row, _| {
                    s13[2 * e + usize::from(row >= I)] as f64
                }),
                w2: dequant(&c2, (E, h, I), |e, _, _| s2[e] as f64),
            }
        }
    };
    if fixed_acts {
        for p in [&gu, &dn] {
            let a = positive_scales(r, E);
            wr.floats(&format!("{p}_activation_scale"), Dtype::F32, &[E], &a);
        }
    }
    router(wr, &format!("{BLOCK}.gate.weight"), E, h, r);
    want
}

/// transformers' `FineGrainedFP8Config.to_dict()`.
fn fp8_config(scales: Scales, fixed_acts: bool) -> Value {
    let block = matches!(scales, Scales::Block { .. });
    json!({
        "quant_method": "fp8",
        "activation_scheme": if fixed_acts { "static" } else { "dynamic" },
        "weight_block_size": if block { json!([128, 128]) } else { Value::Null },
        "scale_fmt": if scales == (Scales::Block { ue8m0: true }) { "ue8m0" } else { "float" },
        "modules_to_not_convert": null,
    })
}

fn write(h: usize, scales: Scales, fixed_acts: bool, seed: u64) -> (tempfile::TempDir, Expected) {
    let dir = tempfile::tempdir().unwrap();
    let mut r = ckpt::rng(seed);
    let mut wr = Writer::default();
    let want = fused_fp8(&mut wr, &mut r, h, scales, fixed_acts);
    wr.write(dir.path(), 1);
    let mut c = config("Qwen3MoeForCausalLM", Some(fp8_config(scales, fixed_acts)));
    c["hidden_size"] = json!(h);
    write_config(dir.path(), &c);
    (dir, want)
}

#[test]
fn fused_fp8_block_scales_load_on_the_fused_grid() {
    // H 256: a 2×2 block grid for gate_up per expert, so both axes of the grid are used.
    let (dir, want) = write(256, Scales::Block { ue8m0: false }, false, 31);
    check(dir.path(), 1, &want, "fp8-block128");
    let report = inspect(dir.path()).unwrap().report;
    for s in [
        "fused: mlp.experts.gate_up_proj [E, 2I, H]",
        "gate_up_proj_scale_inv F32 [4, 2, 2]",
        "down_proj_scale_inv F32 [4, 2, 1]",
        "fp8-block128 on layers 1",
    ] {
        assert!(report.contains(s), "missing '{s}' in:\n{report}");
    }
}

/// `scale_fmt: "ue8m0"` (DeepSeek-V4 style): the block scales as F8_E8M0 exponent bytes.
#[test]
fn fused_fp8_ue8m0_block_scales_load_exactly() {
    let (dir, want) = write(256, Scales::Block { ue8m0: true }, false, 37);
    check(dir.path(), 1, &want, "fp8-block128");
    let report = inspect(dir.path()).unwrap().report;
    assert!(
        report.contains("gate_up_proj_scale_inv F8_E8M0 [4, 2, 2]"),
        "{report}"
    );
}

#[test]
fn fused_fp8_per_tensor_one_scale_per_expert() {
    let (dir, want) = write(128, Scales::PerExpert, false, 32);
    check(dir.path(), 1, &want, "fp8");
}

#[test]
fn fused_fp8_equal_halves_stay_per_tensor() {
    let (dir, want) = write(128, Scales::Halves { differ: false }, false, 33);
    check(dir.path(), 1, &want, "fp8");
    assert!(Checkpoint::open(dir.path())
        .unwrap()
        .notes(1)
        .unwrap()
        .fp8_per_channel
        .is_empty());
}

#[test]
fn fused_fp8_differing_halves_load_per_channel_exactly() {
    let (dir, want) = write(128, Scales::Halves { differ: true }, false, 34);
    check(dir.path(), 1, &want, "fp8-wchannel-atensor");
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(
        ck.notes(1).unwrap().fp8_per_channel,
        (0..E).collect::<Vec<_>>()
    );
    let report = inspect(dir.path()).unwrap().report;
    assert!(
        report.contains("loaded as per-channel fp8") && report.contains("[4, 2, 1]"),
        "{report}"
    );
}

#[test]
fn fused_fp8_static_activation_scales_per_expert() {
    let (dir, want) = write(128, Scales::Halves { differ: true }, true, 35);
    check(dir.path(), 1, &want, "fp8-wchannel-astatic");
    // The per-expert activation scales are kept per expert (they were written distinct).
    let ck = Checkpoint::open(dir.path()).unwrap();
    let l = ck.load_layer(1).unwrap();
    let read = |n: &str| {
        ck.shards
            .get(&format!("{BLOCK}.experts.{n}_activation_scale"))
            .unwrap()
            .f32s()
            .unwrap()
    };
    let (a13, a2) = (read("gate_up_proj"), read("down_proj"));
    assert!(a13.iter().any(|&x| x != a13[0]), "{a13:?}");
    let s = l.weights.input_scales.unwrap();
    assert_eq!(s.w13, a13);
    assert!(s.w2 == a2 || (s.w2.len() == 1 && a2.iter().all(|&x| x == s.w2[0])));
    let notes = ck.notes(1).unwrap().lines().join("\n");
    assert!(
        !notes.contains("static input scales differ across experts"),
        "{notes}"
    );
}

fn fleetmoe(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_fleetmoe"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn inspect_and_run_model_on_fused_fp8() {
    let (dir, _) = write(256, Scales::Block { ue8m0: false }, false, 36);
    let d = dir.path().to_str().unwrap();
    let (ok, out) = fleetmoe(&["inspect", d]);
    assert!(ok, "{out}");
    for want in [
        "fused: mlp.experts.gate_up_proj [E, 2I, H]",
        "gate_up_proj F8_E4M3 [4, 256, 256]",
        "fp8-block128 on layers 1",
    ] {
        assert!(out.contains(want), "missing '{want}' in:\n{out}");
    }
    let (ok, out) = fleetmoe(&["run", "--model", d, "--layer", "1", "--tokens", "4"]);
    assert!(
        ok && out.contains("error ") && out.contains("fp8-block128"),
        "{out}"
    );
}

/// A fused fp8 checkpoint with `edit` applied to its tensors before writing, loaded.
fn with_tensor(
    h: usize,
    scales: Scales,
    cfg: Value,
    edit: impl FnOnce(&mut Writer),
) -> fleetmoe::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let mut r = ckpt::rng(40);
    let mut wr = Writer::default();
    fused_fp8(&mut wr, &mut r, h, scales, false);
    edit(&mut wr);
    wr.write(dir.path(), 1);
    let mut c = config("Qwen3MoeForCausalLM", Some(cfg));
    c["hidden_size"] = json!(h);
    write_config(dir.path(), &c);
    cases::load(dir.path()).map(|_| ())
}

#[test]
fn what_fused_fp8_cannot_hold_is_named() {
    let gu_scale = format!("{BLOCK}.experts.gate_up_proj_scale_inv");
    let block = Scales::Block { ue8m0: true };
    // A UE8M0 byte 0xFF is NaN, not a scale.
    let r = with_tensor(256, block, fp8_config(block, false), |wr| {
        let mut b = vec![120; E * 4];
        b[5] = 0xFF;
        wr.bytes(&gu_scale, Dtype::F8_E8M0, &[E, 2, 2], b);
    });
    cases::expect(
        r,
        "gate_up_proj_scale_inv",
        &["scale NaN", "finite positive"],
    );
    // An unknown `scale_fmt` is named with the values fleetmoe knows.
    let mut cfg = fp8_config(block, false);
    cfg["scale_fmt"] = json!("e5m2");
    let r = with_tensor(256, block, cfg, |_| {});
    cases::expect(r, "scale_fmt", &["e5m2", "ue8m0"]);
    let block = Scales::Block { ue8m0: false };
    // transformers' `min_scale_out = 2` floor on a grid that should have one block row is
    // not fleetmoe's grid: named with the shape it should have.
    let r = with_tensor(256, block, fp8_config(block, false), |wr| {
        wr.floats(&gu_scale, Dtype::F32, &[E, 3, 2], &[1e-3; E * 6]);
    });
    cases::expect(
        r,
        "gate_up_proj_scale_inv",
        &["[4, 3, 2]", "expected [4, 2, 2]"],
    );
    // A zero scale has no meaning.
    let r = with_tensor(
        128,
        Scales::Halves { differ: true },
        fp8_config(Scales::Halves { differ: true }, false),
        |wr| {
            let mut v = vec![1e-3; 2 * E];
            v[3] = 0.0;
            wr.floats(&gu_scale, Dtype::F32, &[E, 2, 1], &v);
        },
    );
    cases::expect(r, "gate_up_proj_scale_inv", &["scale 0", "finite positive"]);
    // A static activation scale beside a dynamic config would be ignored.
    let r = with_tensor(
        128,
        Scales::PerExpert,
        fp8_config(Scales::PerExpert, false),
        |wr| {
            let name = format!("{BLOCK}.experts.down_proj_activation_scale");
            wr.floats(&name, Dtype::F32, &[E], &[0.01; E]);
        },
    );
    cases::expect(r, "down_proj_activation_scale", &["activation_scheme"]);
}

/// GPT-OSS / Llama 4 hold fused experts `[E, in, out]`; transformers' FP8Experts never
/// does, and Quark refuses such FP8Experts: refused by name, not transposed on a guess.
#[test]
fn transposed_fused_fp8_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = ckpt::rng(41);
    let mut wr = Writer::default();
    let (h, i) = (128, I);
    wr.bytes(
        &format!("{BLOCK}.experts.gate_up_proj"),
        Dtype::F8_E4M3,
        &[E, h, 2 * i],
        codes(&mut r, E * h * 2 * i),
    );
    wr.bytes(
        &format!("{BLOCK}.experts.down_proj"),
        Dtype::F8_E4M3,
        &[E, i, h],
        codes(&mut r, E * i * h),
    );
    router(&mut wr, &format!("{BLOCK}.router.weight"), E, h, &mut r);
    wr.floats(
        &format!("{BLOCK}.router.bias"),
        Dtype::BF16,
        &[E],
        &[0.0; E],
    );
    wr.write(dir.path(), 1);
    write_config(
        dir.path(),
        &config(
            "GptOssForCausalLM",
            Some(fp8_config(Scales::Block { ue8m0: false }, false)),
        ),
    );
    cases::expect(
        cases::load(dir.path()).map(|_| ()),
        "experts.gate_up_proj",
        &["transposed", "FP8Experts"],
    );
}

/// compressed-tensors, Quark and GPTQ write their quantized experts per expert (see
/// `src/checkpoint/fused.rs`); a fused tensor beside their config is refused naming the
/// format and where that producer puts experts.
#[test]
fn formats_no_producer_writes_fused_are_refused_by_name() {
    let ct_int = json!({"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"group_0": {
        "targets": ["Linear"],
        "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32, "symmetric": true}}}});
    let quark = json!({"quant_method": "quark", "global_quant_config": {
        "weight": {"dtype": "fp4", "qscheme": "per_group", "group_size": 32, "ch_axis": -1,
                   "scale_format": "e8m0", "is_dynamic": false, "round_method": "half_even"},
        "input_tensors": null, "output_tensors": null}});
    let gptq = json!({"quant_method": "gptq", "bits": 4, "group_size": 32, "sym": true});
    for (cfg, dtype, says) in [
        (
            ct_int,
            Dtype::I32,
            ["compressed-tensors pack-quantized int", "LinearExperts2D"],
        ),
        (quark, Dtype::U8, ["Quark OCP MX", "QuarkExperts"]),
        (gptq, Dtype::I32, ["GPTQ", "packed along the fused axis"]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut r = ckpt::rng(42);
        let mut wr = Writer::default();
        let words = |n: usize| {
            (0..n)
                .map(|k| (k * 2654435761) as i32)
                .collect::<Vec<i32>>()
        };
        match dtype {
            Dtype::I32 => {
                wr.i32s(
                    &format!("{BLOCK}.experts.gate_up_proj"),
                    &[E, 2 * I, 16],
                    &words(E * 2 * I * 16),
                );
                wr.i32s(
                    &format!("{BLOCK}.experts.down_proj"),
                    &[E, 128, I / 8],
                    &words(E * 128 * I / 8),
                );
            }
            _ => {
                wr.bytes(
                    &format!("{BLOCK}.experts.gate_up_proj"),
                    dtype,
                    &[E, 2 * I, 64],
                    vec![0x21; E * 2 * I * 64],
                );
                wr.bytes(
                    &format!("{BLOCK}.experts.down_proj"),
                    dtype,
                    &[E, 128, I / 2],
                    vec![0x21; E * 128 * I / 2],
                );
            }
        }
        router(&mut wr, &format!("{BLOCK}.gate.weight"), E, 128, &mut r);
        wr.write(dir.path(), 1);
        write_config(dir.path(), &config("Qwen3MoeForCausalLM", Some(cfg)));
        cases::expect(
            cases::load(dir.path()).map(|_| ()),
            "experts.gate_up_proj",
            &["fused experts in", says[0], says[1]],
        );
        // inspect reports the layer's scheme as stored and still says the layout.
        let report = inspect(dir.path()).unwrap().report;
        assert!(
            report.contains("fused: mlp.experts.gate_up_proj"),
            "{report}"
        );
    }
}
