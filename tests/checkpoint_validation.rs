//! Nothing malformed gets through the checkpoint loader: each test feeds one kind of bad
//! config value or tensor and asserts the exact error (variant, the field or tensor it
//! names, the bad value), and the two approximations kept to match vLLM are measured.

mod ckpt;

use ckpt::harness::{config, E, H, I};
use ckpt::{experts, gaussian, max_rel, rng, router, write_config, Expected, Lin, Writer};
use fleetmoe::checkpoint::inspect::inspect;
use fleetmoe::checkpoint::{load_adapter, Checkpoint};
use fleetmoe::device::Capabilities;
use fleetmoe::moe::reference::{forward_f64, rel_l2};
use fleetmoe::moe::TopK;
use fleetmoe::oracle::Unmet;
use fleetmoe::quant::{InputScales, QuantScheme};
use fleetmoe::Error;
use safetensors::Dtype;
use serde_json::{json, Value};
use std::path::Path;

const QWEN: &str = "Qwen3MoeForCausalLM";
const BLOCK: &str = "model.layers.1.mlp";

fn proj(e: usize, p: usize) -> String {
    format!(
        "{BLOCK}.experts.{e}.{}",
        ["gate_proj", "up_proj", "down_proj"][p]
    )
}

/// A one-MoE-layer (layer 1) checkpoint in `lin`, before it is written.
fn writer(lin: Lin, seed: u64) -> (Writer, Expected) {
    let mut r = rng(seed);
    let mut wr = Writer::default();
    let want = experts(&mut wr, lin, E, H, I, &proj, &mut r);
    router(&mut wr, &format!("{BLOCK}.gate.weight"), E, H, &mut r);
    (wr, want)
}

fn write(wr: &Writer, cfg: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    wr.write(dir.path(), 1);
    write_config(dir.path(), cfg);
    dir
}

fn load(dir: &Path) -> fleetmoe::Result<fleetmoe::checkpoint::LoadedLayer> {
    Checkpoint::open(dir)?.load_layer(1)
}

/// The result is `Error::Checkpoint` whose tensor (or field) contains `what` and whose
/// message contains every one of `says`.
#[track_caller]
fn expect<T: std::fmt::Debug>(r: fleetmoe::Result<T>, what: &str, says: &[&str]) {
    match r {
        Err(Error::Checkpoint { tensor, why, file }) => {
            assert!(
                tensor.contains(what),
                "names '{tensor}', expected '{what}' ({why})"
            );
            for s in says {
                assert!(
                    why.contains(s),
                    "'{why}' should say '{s}' ({tensor} in {file})"
                );
            }
        }
        other => panic!("expected a checkpoint error naming {what}, got {other:?}"),
    }
}

fn gptq(extra: Value) -> Value {
    let mut q = json!({"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": false, "sym": true});
    for (k, v) in extra.as_object().unwrap() {
        q[k] = v.clone();
    }
    q
}

fn gptq_lin(sym: bool, act_order: bool) -> Lin {
    Lin::Gptq {
        group: 32,
        sym,
        act_order,
        bits: 4,
        v2: false,
    }
}

// ---- 1. config fields: understood or refused; defaults documented and visible ----

#[test]
fn wrong_typed_and_out_of_range_config_values_are_errors_not_defaults() {
    let (wr, _) = writer(gptq_lin(true, false), 1);
    let open = |cfg: Value| Checkpoint::open(write(&wr, &cfg).path()).map(|_| ());
    let ds = |k: &str, v: Value| {
        let mut c = config("DeepseekV3ForCausalLM", Some(gptq(json!({}))));
        c["n_group"] = json!(2);
        c["topk_group"] = json!(1);
        c[k] = v;
        c
    };
    expect(
        open(config(QWEN, Some(gptq(json!({"group_size": "8"}))))),
        "quantization_config.group_size",
        &["\"8\"", "not an integer"],
    );
    expect(
        open(ds("routed_scaling_factor", json!("x"))),
        "routed_scaling_factor",
        &["\"x\"", "not a finite number"],
    );
    expect(
        open(ds("n_group", json!(0))),
        "n_group",
        &["0 does not divide"],
    );
    expect(
        open(ds("n_group", json!(3))),
        "n_group",
        &["3 does not divide the 4"],
    );
    expect(
        open(ds("topk_group", json!(3))),
        "topk_group",
        &["3 must be in 1..=2"],
    );
    expect(
        open(ds("num_experts_per_tok", json!(0))),
        "num_experts_per_tok",
        &["top-k 0"],
    );
    expect(
        open(ds("norm_topk_prob", json!("yes"))),
        "norm_topk_prob",
        &["\"yes\"", "not true or false"],
    );
    expect(
        open(ds("routed_scaling_factor", json!(-1.0))),
        "routed_scaling_factor",
        &["-1", "positive"],
    );
    let mut c = config(QWEN, None);
    c["hidden_size"] = json!(-128);
    expect(
        open(c),
        "hidden_size",
        &["-128", "not a non-negative integer"],
    );
    // DeepSeek-V3 without n_group takes transformers' 8, which cannot split 4 experts:
    // the default is applied and then checked, never widened to fit.
    let mut c = config("DeepseekV3ForCausalLM", None);
    c["topk_group"] = json!(1);
    expect(open(c), "n_group", &["8 does not divide the 4"]);
    expect(
        open(config(QWEN, Some(gptq(json!({"group_size": 0}))))),
        "quantization_config.group_size",
        &["0, expected -1"],
    );
    expect(
        open(config(
            QWEN,
            Some(json!({"quant_method": "gptq", "group_size": 32})),
        )),
        "quantization_config.bits",
        &["missing"],
    );
}

#[test]
fn unknown_enum_strings_are_errors_that_list_the_known_ones() {
    let (wr, _) = writer(Lin::Bf16, 2);
    let open = |cfg: Value| Checkpoint::open(write(&wr, &cfg).path()).map(|_| ());
    let mut c = config("DeepseekV2ForCausalLM", None);
    c["scoring_func"] = json!("tanh");
    expect(open(c), "scoring_func", &["'tanh'", "softmax, sigmoid"]);
    let mut c = config("DeepseekV2ForCausalLM", None);
    c["topk_method"] = json!("random");
    expect(
        open(c),
        "topk_method",
        &["'random'", "greedy, group_limited_greedy"],
    );
    let quark = json!({"quant_method": "quark", "global_quant_config": {
        "weight": {"dtype": "fp4", "qscheme": "per_group", "group_size": 32},
        "input_tensors": {"dtype": "fp5", "qscheme": "per_group"}}});
    expect(
        open(config(QWEN, Some(quark))),
        "global_quant_config.input_tensors.dtype",
        &["'fp5'", "fp8_e4m3", "fp4"],
    );
    let ct = |w: Value| {
        json!({"quant_method": "compressed-tensors", "format": "pack-quantized",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": w}}})
    };
    expect(
        open(config(
            QWEN,
            Some(ct(
                json!({"num_bits": 4, "type": "int", "strategy": "diagonal"}),
            )),
        )),
        "config_groups.group_0.weights.strategy",
        &[
            "'diagonal'",
            "tensor, channel, group, block, token, tensor_group",
        ],
    );
    expect(
        open(config(
            QWEN,
            Some(ct(json!({"num_bits": 4, "type": "posit"}))),
        )),
        "weights.type",
        &["'posit'", "int, float"],
    );
    expect(
        open(config(
            QWEN,
            Some(ct(
                json!({"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32, "actorder": "random"}),
            )),
        )),
        "weights.actorder",
        &["'random'", "group, weight"],
    );
    expect(
        open(config(
            QWEN,
            Some(json!({"quant_method": "fp8", "activation_scheme": "sometimes"})),
        )),
        "quantization_config.activation_scheme",
        &["'sometimes'", "dynamic, static"],
    );
    expect(
        open(config(
            QWEN,
            Some(gptq(json!({"checkpoint_format": "marlin"}))),
        )),
        "quantization_config.checkpoint_format",
        &["'marlin'", "gptq, gptq_v2"],
    );
}

#[test]
fn absent_fields_take_the_producers_default_and_inspect_says_which() {
    // GPTQ with only `bits`: transformers GPTQConfig's group 128, desc_act false, sym true.
    let lin = Lin::Gptq {
        group: 128,
        sym: true,
        act_order: false,
        bits: 4,
        v2: false,
    };
    let (wr, want) = writer(lin, 3);
    let mut c = config(
        "Glm4MoeForCausalLM",
        Some(json!({"quant_method": "gptq", "bits": 4})),
    );
    c["n_shared_experts"] = json!(0);
    let dir = write(&wr, &c);
    let l = load(dir.path()).unwrap();
    assert_eq!(l.weights.scheme, QuantScheme::parse("w4a16-g128").unwrap());
    let d = l.weights.dequantize().unwrap();
    assert!(max_rel(&d.w13, &want.w13) < 1e-6 && max_rel(&d.w2, &want.w2) < 1e-6);
    let text = inspect(dir.path()).unwrap();
    for line in [
        "setting      quantization_config.group_size = 128 (default of transformers GPTQConfig)",
        "setting      quantization_config.desc_act = false (default of transformers GPTQConfig)",
        "setting      quantization_config.sym = true (default of transformers GPTQConfig)",
        "setting      quantization_config.bits = 4 (from the file)",
        "setting      n_group = 1 (default of transformers Glm4MoeConfig)",
        "setting      n_shared_experts = 0 (from the file)",
    ] {
        assert!(text.contains(line), "missing '{line}' in:\n{text}");
    }
}

// ---- 2. a tensor that a default would ignore must agree with it ----

#[test]
fn tensors_a_default_would_ignore_must_agree_with_it() {
    // GPTQ without `sym` (default true) but asymmetric qzeros in the file.
    let (wr, _) = writer(gptq_lin(false, false), 4);
    let q = json!({"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": false});
    expect(
        load(write(&wr, &config(QWEN, Some(q))).path()),
        "experts.0.gate_proj.qzeros",
        &[
            "zero point",
            "where quantization_config.sym",
            "symmetric zero 8",
        ],
    );
    // GPTQ without `desc_act` (default false) but an act-order g_idx.
    let (wr, _) = writer(gptq_lin(true, true), 5);
    let q = json!({"quant_method": "gptq", "bits": 4, "group_size": 32, "sym": true});
    expect(
        load(write(&wr, &config(QWEN, Some(q))).path()),
        "experts.0.gate_proj.g_idx",
        &["reorders columns", "quantization_config.desc_act"],
    );
    // compressed-tensors without `symmetric` (default true) but zero points written.
    let (wr, _) = writer(
        Lin::CtInt4 {
            group: 32,
            zp: true,
        },
        6,
    );
    let q = json!({"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"group_0": {
        "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32}}}});
    expect(
        load(write(&wr, &config(QWEN, Some(q))).path()),
        "experts.0.gate_proj.weight_zero_point",
        &["zero point", "weights.symmetric"],
    );
    // compressed-tensors without `actorder` but a reordering weight_g_idx.
    let (wr, _) = writer(Lin::CtInt4Act { group: 32 }, 7);
    let q = json!({"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"group_0": {
        "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32}}}});
    expect(
        load(write(&wr, &config(QWEN, Some(q))).path()),
        "experts.0.gate_proj.weight_g_idx",
        &["reorders columns", "weights.actorder"],
    );
    // NVFP4 without input_activations (weight-only) but static input global scales.
    let (wr, _) = writer(Lin::Nvfp4Ct { input: true }, 8);
    let q = json!({"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized", "config_groups": {"group_0": {
        "weights": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16}}}});
    expect(
        load(write(&wr, &config(QWEN, Some(q))).path()),
        "experts.0.gate_proj.input_global_scale",
        &["input_activations", "ignored"],
    );
    // The same files with tensors that agree with the defaults load: symmetric qzeros and
    // the plain g_idx that AutoGPTQ writes anyway.
    let (wr, want) = writer(gptq_lin(true, false), 9);
    let q = json!({"quant_method": "gptq", "bits": 4, "group_size": 32});
    let l = load(write(&wr, &config(QWEN, Some(q))).path()).unwrap();
    assert_eq!(l.weights.dequantize().unwrap().w2, want.w2);
}

// ---- 3. duplicate tensor names ----

#[test]
fn duplicate_tensor_names_are_errors() {
    // In one header: rename expert 1's w1 to expert 0's (same length, same shape).
    let (wr, _) = writer(Lin::Bf16, 10);
    let dir = write(&wr, &config(QWEN, None));
    let path = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let (a, b) = (
        format!("\"{}.weight\"", proj(0, 0)),
        format!("\"{}.weight\"", proj(1, 0)),
    );
    assert!(header.contains(&b));
    bytes[8..8 + n].copy_from_slice(header.replace(&b, &a).as_bytes());
    std::fs::write(&path, &bytes).unwrap();
    match Checkpoint::open(dir.path()) {
        Err(Error::Checkpoint { file, tensor, why }) => {
            assert_eq!(tensor, format!("{}.weight", proj(0, 0)));
            assert!(
                file.ends_with("model.safetensors") && why.contains("named twice"),
                "{why}"
            );
        }
        other => panic!("expected a duplicate-name error, got {:?}", other.err()),
    }
    // In the index's weight_map.
    let dir = tempfile::tempdir().unwrap();
    wr.write(dir.path(), 2);
    write_config(dir.path(), &config(QWEN, None));
    let idx = dir.path().join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&idx).unwrap();
    let name = format!("{}.weight", proj(0, 0));
    let dup = text.replacen(
        "\"weight_map\":{",
        &format!("\"weight_map\":{{\"{name}\":\"model-00002-of-00002.safetensors\","),
        1,
    );
    std::fs::write(&idx, dup).unwrap();
    match Checkpoint::open(dir.path()) {
        Err(Error::Checkpoint { file, tensor, why }) => {
            assert_eq!(tensor, name);
            assert!(
                file.ends_with("index.json") && why.contains("twice in weight_map"),
                "{why}"
            );
        }
        other => panic!("expected a duplicate weight_map key, got {:?}", other.err()),
    }
    // In two shard files found without an index.
    std::fs::remove_file(&idx).unwrap();
    let mut extra = Writer::default();
    extra.floats(&name, Dtype::BF16, &[2], &[0.0, 0.0]);
    let side = tempfile::tempdir().unwrap();
    extra.write(side.path(), 1);
    std::fs::copy(
        side.path().join("model.safetensors"),
        dir.path().join("z-extra.safetensors"),
    )
    .unwrap();
    expect(
        Checkpoint::open(dir.path()).map(|_| ()),
        &name,
        &["also stored in"],
    );
}

// ---- 4. size arithmetic ----

#[test]
fn products_of_config_sizes_that_overflow_are_errors() {
    let (wr, _) = writer(Lin::Bf16, 11);
    let open = |cfg: Value| Checkpoint::open(write(&wr, &cfg).path()).map(|_| ());
    let mut c = config(QWEN, None);
    c["hidden_size"] = json!(1u64 << 40);
    c["moe_intermediate_size"] = json!(1u64 << 40);
    expect(
        open(c),
        "num_experts",
        &["overflows", "hidden_size (1099511627776)"],
    );
    let mut c = config("DeepseekV3ForCausalLM", None);
    c["n_group"] = json!(1);
    c["topk_group"] = json!(1);
    c["n_shared_experts"] = json!(1u64 << 60);
    expect(
        open(c),
        "n_shared_experts",
        &["n_shared_experts (1152921504606846976) × moe_intermediate_size (128) overflows"],
    );
}

// ---- 5. scales checked at load, before any merge ----

fn set_scalar(wr: &mut Writer, name: &str, v: f32) {
    assert!(wr.tensors.contains_key(name), "{name} not written");
    wr.floats(name, Dtype::F32, &[], &[v]);
}

#[test]
fn bad_scales_are_errors_naming_tensor_and_value() {
    let fp8 = json!({"quant_method": "fp8", "activation_scheme": "static"});
    for (v, shown) in [
        (f32::NAN, "NaN"),
        (0.0, "scale 0"),
        (-1.0, "scale -1"),
        (f32::INFINITY, "scale inf"),
        (f32::NEG_INFINITY, "scale -inf"),
    ] {
        for p in [0, 1] {
            let (mut wr, _) = writer(Lin::Fp8Tensor { input: true }, 12);
            let name = format!("{}.weight_scale", proj(2, p));
            set_scalar(&mut wr, &name, v);
            expect(
                load(write(&wr, &config(QWEN, Some(fp8.clone()))).path()),
                &name,
                &[shown],
            );
        }
        for p in [0, 1, 2] {
            let (mut wr, _) = writer(Lin::Fp8Tensor { input: true }, 13);
            let name = format!("{}.input_scale", proj(1, p));
            set_scalar(&mut wr, &name, v);
            expect(
                load(write(&wr, &config(QWEN, Some(fp8.clone()))).path()),
                &name,
                &[shown],
            );
        }
    }
    // NVFP4: compressed-tensors' global scale divides (448·6/amax): 0 and inf are refused.
    let ct = json!({"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized", "config_groups": {"group_0": {
        "weights": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16},
        "input_activations": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16, "dynamic": "local"}}}});
    for (t, v, shown) in [
        ("weight_global_scale", 0.0, "scale 0"),
        ("weight_global_scale", f32::INFINITY, "scale inf"),
        ("weight_global_scale", -2.0, "scale -2"),
        ("input_global_scale", f32::NAN, "scale NaN"),
        ("input_global_scale", 1e-40, "reciprocal inf"),
    ] {
        let (mut wr, _) = writer(Lin::Nvfp4Ct { input: true }, 14);
        let name = format!("{}.{t}", proj(3, 1));
        wr.floats(&name, Dtype::F32, &[1], &[v]);
        expect(
            load(write(&wr, &config(QWEN, Some(ct.clone()))).path()),
            &name,
            &[shown],
        );
    }
    // ModelOpt NVFP4 `weight_scale_2` multiplies: zero, negative, NaN refused.
    for (v, shown) in [
        (0.0, "scale 0"),
        (-0.5, "scale -0.5"),
        (f32::NAN, "scale NaN"),
    ] {
        let (mut wr, _) = writer(Lin::Nvfp4Modelopt, 15);
        let name = format!("{}.weight_scale_2", proj(0, 2));
        set_scalar(&mut wr, &name, v);
        let q = json!({"quant_method": "modelopt", "quant_algo": "NVFP4"});
        expect(
            load(write(&wr, &config(QWEN, Some(q))).path()),
            &name,
            &[shown],
        );
    }
}

// ---- 6. exact per-channel fp8; the approximations kept, measured ----

#[test]
fn differing_fp8_gate_up_scales_load_per_channel_and_a_native_backend_runs_it() {
    let q = json!({"quant_method": "fp8", "activation_scheme": "dynamic"});
    let (mut wr, want) = writer(Lin::Fp8Tensor { input: false }, 16);
    let dir = write(&wr, &config(QWEN, Some(q.clone())));
    let ck = Checkpoint::open(dir.path()).unwrap();
    let notes = ck.notes(1).unwrap();
    assert_eq!(notes.fp8_per_channel, (0..E).collect::<Vec<_>>());
    let l = ck.load_layer(1).unwrap();
    assert_eq!(
        l.weights.scheme,
        QuantScheme::parse("fp8-wchannel-atensor").unwrap()
    );
    let d = l.weights.dequantize().unwrap();
    assert_eq!((d.w13, d.w2), (want.w13, want.w2), "bit-exact");
    let text = inspect(dir.path()).unwrap();
    assert!(text.contains("fp8-wchannel-atensor on layers 1"), "{text}");
    assert!(
        text.contains("exact: fp8 gate and up scales differ in 4 expert(s)"),
        "{text}"
    );
    // The oracle picks a native backend for per-channel fp8 with either activation rule
    // wherever it does for per-tensor fp8: the same first backend that lacks nothing but
    // being built into this binary.
    let native = |name: &str, p: &str| {
        let sc = QuantScheme::parse(name).unwrap();
        let caps = Capabilities::preset(p).unwrap();
        let sel = fleetmoe::oracle::select(&sc, &caps, &l.config, None).unwrap();
        if !sel.is_fallback() {
            return Some(sel.chosen);
        }
        sel.rejected
            .iter()
            .find(|r| r.unmet.iter().all(Unmet::is_availability))
            .map(|r| r.backend)
    };
    for p in ["h100", "b200", "mi300x", "mi355x"] {
        for (exact, stored) in [
            ("fp8-wchannel-atensor", "fp8"),
            ("fp8-wchannel-astatic", "fp8-static"),
        ] {
            let got = native(exact, p);
            assert!(got.is_some(), "no native backend for {exact} on {p}");
            assert_eq!(got, native(stored, p), "{exact} vs {stored} on {p}");
        }
    }
    // Equal gate and up scales keep the per-tensor scheme.
    for e in 0..E {
        let g = wr.tensors[&format!("{}.weight_scale", proj(e, 0))].clone();
        wr.tensors.insert(format!("{}.weight_scale", proj(e, 1)), g);
    }
    let dir = write(&wr, &config(QWEN, Some(q)));
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert!(ck.notes(1).unwrap().fp8_per_channel.is_empty());
    assert_eq!(
        ck.load_layer(1).unwrap().weights.scheme,
        QuantScheme::parse("fp8").unwrap()
    );
}

/// Σ_k w · W2 (silu(W1 x) ⊙ W3 x) in f64 over expected (written) matrices.
fn naive(want: &Expected, x: &[f32], topk: &[(usize, f32)], tokens: usize) -> Vec<f64> {
    let k = topk.len() / tokens;
    let mut out = vec![0f64; tokens * H];
    for t in 0..tokens {
        let xr = &x[t * H..(t + 1) * H];
        for &(e, w) in &topk[t * k..(t + 1) * k] {
            let w13 = &want.w13[e * 2 * I * H..(e + 1) * 2 * I * H];
            let w2 = &want.w2[e * H * I..(e + 1) * H * I];
            let dot = |row: &[f32]| -> f64 {
                row.iter().zip(xr).map(|(a, b)| *a as f64 * *b as f64).sum()
            };
            let a: Vec<f64> = (0..I)
                .map(|r| {
                    let g = dot(&w13[r * H..(r + 1) * H]);
                    let u = dot(&w13[(I + r) * H..(I + r + 1) * H]);
                    g / (1.0 + (-g).exp()) * u
                })
                .collect();
            for n in 0..H {
                let y: f64 = (0..I).map(|r| w2[n * I + r] as f64 * a[r]).sum();
                out[t * H + n] += w as f64 * y;
            }
        }
    }
    out
}

const TOKENS: usize = 16;

fn routing() -> (TopK, Vec<(usize, f32)>) {
    let pairs: Vec<(usize, f32)> = (0..TOKENS)
        .flat_map(|t| [(t % E, 0.7f32), ((t + 1) % E, 0.3)])
        .collect();
    let topk = TopK::new(
        TOKENS,
        2,
        pairs.iter().map(|p| p.0 as u32).collect(),
        pairs.iter().map(|p| p.1).collect(),
        E,
    )
    .unwrap();
    (topk, pairs)
}

/// NVFP4 gate/up global scales that differ are folded into e4m3 block scales (vLLM keeps
/// one global per w13): the rounding this costs, measured against the written weights.
const NVFP4_FOLD_BOUND: f64 = 0.03;
/// Static input scales reduced to their maximum across experts (vLLM's kernels take one
/// per tensor): the extra activation-quantization error, measured against each expert
/// quantizing with its own calibrated scales.
const INPUT_SCALE_MAX_BOUND: f64 = 0.1;

#[test]
fn nvfp4_global_scale_fold_costs_a_measured_error() {
    let (mut wr, mut want) = writer(Lin::Nvfp4Ct { input: false }, 17);
    // non-power-of-two ratios between gate and up global scales, so the fold rounds
    for e in 0..E {
        let name = format!("{}.weight_global_scale", proj(e, 1));
        let g = f32::from_le_bytes(wr.tensors[&name].2[..4].try_into().unwrap());
        let f = 1.37 + 0.11 * e as f32;
        wr.floats(&name, Dtype::F32, &[1], &[g * f]);
        // w = fp4 · block / global: up rows shrink by f (f32 division, as the loader's 1/g)
        let gs = 1.0 / (g * f);
        let old = 1.0 / g;
        for v in &mut want.w13[(e * 2 + 1) * I * H..(e * 2 + 2) * I * H] {
            *v = *v / old * gs;
        }
    }
    let q = json!({"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized", "config_groups": {"group_0": {
        "weights": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16}}}});
    let dir = write(&wr, &config(QWEN, Some(q)));
    let text = inspect(dir.path()).unwrap();
    assert!(
        text.contains("approximation: NVFP4 gate and up global scales differ in 4 of 4 experts"),
        "{text}"
    );
    let l = load(dir.path()).unwrap();
    let x = gaussian(&mut rng(18), TOKENS * H, 1.0);
    let (topk, pairs) = routing();
    let got: Vec<f32> = forward_f64(&l.weights, &l.config, &x, &topk, false)
        .unwrap()
        .iter()
        .map(|&v| v as f32)
        .collect();
    let err = rel_l2(&got, &naive(&want, &x, &pairs, TOKENS));
    eprintln!("nvfp4 global-scale fold: rel L2 {err:.3e} (bound {NVFP4_FOLD_BOUND})");
    assert!(err > 0.0 && err < NVFP4_FOLD_BOUND, "rel L2 {err}");
}

#[test]
fn static_input_scale_maximum_costs_a_measured_error() {
    let (wr, _) = writer(Lin::Fp8Tensor { input: true }, 19);
    let q = json!({"quant_method": "fp8", "activation_scheme": "static"});
    let dir = write(&wr, &config(QWEN, Some(q)));
    let text = inspect(dir.path()).unwrap();
    assert!(
        text.contains("approximation: static input scales differ across experts"),
        "{text}"
    );
    assert!(
        text.contains("approximation: static gate and up input scales differ"),
        "{text}"
    );
    let ck = Checkpoint::open(dir.path()).unwrap();
    let l = ck.load_layer(1).unwrap();
    let scalar = |n: String| ck.shards.get(&n).unwrap().scalar().unwrap();
    let x = gaussian(&mut rng(20), TOKENS * H, 1.0);
    let (topk, pairs) = routing();
    let approx: Vec<f32> = forward_f64(&l.weights, &l.config, &x, &topk, true)
        .unwrap()
        .iter()
        .map(|&v| v as f32)
        .collect();
    // Exact: each expert quantizes its input with its own scale (gate/up share one input,
    // so the larger of those two, which is not what is measured here).
    let mut exact = vec![0f64; TOKENS * H];
    for e in 0..E {
        let mut w = l.weights.clone();
        w.input_scales = Some(InputScales {
            w13: scalar(format!("{}.input_scale", proj(e, 0)))
                .max(scalar(format!("{}.input_scale", proj(e, 1)))),
            w2: scalar(format!("{}.input_scale", proj(e, 2))),
        });
        let only = TopK::new(TOKENS, 1, vec![e as u32; TOKENS], vec![1.0; TOKENS], E).unwrap();
        let y = forward_f64(&w, &l.config, &x, &only, true).unwrap();
        for t in 0..TOKENS {
            for &(pe, pw) in &pairs[t * 2..t * 2 + 2] {
                if pe == e {
                    for n in 0..H {
                        exact[t * H + n] += pw as f64 * y[t * H + n];
                    }
                }
            }
        }
    }
    let err = rel_l2(&approx, &exact);
    eprintln!("static input scale maximum: rel L2 {err:.3e} (bound {INPUT_SCALE_MAX_BOUND})");
    assert!(err > 0.0 && err < INPUT_SCALE_MAX_BOUND, "rel L2 {err}");
}

// ---- 7. shared experts and router tensors ----

#[test]
fn partial_shared_expert_and_non_finite_router_tensors_are_errors() {
    let ds = || {
        let mut c = config("DeepseekV3ForCausalLM", None);
        c["n_group"] = json!(1);
        c["topk_group"] = json!(1);
        c["n_shared_experts"] = json!(1);
        c
    };
    let shared = |wr: &mut Writer| {
        let mut r = rng(21);
        experts(
            wr,
            Lin::Bf16,
            1,
            H,
            I,
            &|_, p| {
                format!(
                    "{BLOCK}.shared_experts.{}",
                    ["gate_proj", "up_proj", "down_proj"][p]
                )
            },
            &mut r,
        );
    };
    let (mut wr, _) = writer(Lin::Bf16, 22);
    shared(&mut wr);
    wr.tensors
        .remove(&format!("{BLOCK}.shared_experts.down_proj.weight"));
    expect(
        load(write(&wr, &ds()).path()),
        "shared_experts.down_proj.weight",
        &["2 of its 3 projections"],
    );
    // the file says there is a shared expert; none is stored
    let (wr, _) = writer(Lin::Bf16, 23);
    expect(
        load(write(&wr, &ds()).path()),
        "shared_experts.gate_proj.weight",
        &["no shared-expert tensors", "intermediate size 128"],
    );
    // correction bias with an infinity
    let (mut wr, _) = writer(Lin::Bf16, 24);
    shared(&mut wr);
    wr.floats(
        &format!("{BLOCK}.gate.e_score_correction_bias"),
        Dtype::F32,
        &[E],
        &[0.0, f32::INFINITY, 0.0, 0.0],
    );
    expect(
        load(write(&wr, &ds()).path()),
        "gate.e_score_correction_bias",
        &["value inf at index 1"],
    );
    // Qwen2-MoE shared expert gate with a NaN
    let (mut wr, _) = writer(Lin::Bf16, 25);
    let mut r = rng(26);
    experts(
        &mut wr,
        Lin::Bf16,
        1,
        H,
        64,
        &|_, p| {
            format!(
                "{BLOCK}.shared_expert.{}",
                ["gate_proj", "up_proj", "down_proj"][p]
            )
        },
        &mut r,
    );
    let mut g = vec![0.1f32; H];
    g[5] = f32::NAN;
    wr.floats(
        &format!("{BLOCK}.shared_expert_gate.weight"),
        Dtype::F32,
        &[1, H],
        &g,
    );
    let mut c = config("Qwen2MoeForCausalLM", None);
    c["shared_expert_intermediate_size"] = json!(64);
    expect(
        load(write(&wr, &c).path()),
        "shared_expert_gate.weight",
        &["value NaN at index 5"],
    );
}

// ---- 8. PEFT adapters ----

/// A bf16 model and a rank-4 adapter on expert 0's gate; `cfg` is adapter_config.json.
fn adapter_case(cfg: Value, poison: Option<f32>) -> fleetmoe::Result<fleetmoe::moe::LoraAdapter> {
    let (wr, _) = writer(Lin::Bf16, 27);
    let dir = write(&wr, &config(QWEN, None));
    let ad = tempfile::tempdir().unwrap();
    let mut aw = Writer::default();
    let m = format!("base_model.model.{}", proj(0, 0));
    let mut r = rng(28);
    aw.floats(
        &format!("{m}.lora_A.weight"),
        Dtype::F32,
        &[4, H],
        &gaussian(&mut r, 4 * H, 0.1),
    );
    let mut b = gaussian(&mut r, I * 4, 0.1);
    if let Some(v) = poison {
        b[7] = v;
    }
    aw.floats(&format!("{m}.lora_B.weight"), Dtype::F32, &[I, 4], &b);
    aw.write(ad.path(), 1);
    std::fs::rename(
        ad.path().join("model.safetensors"),
        ad.path().join("adapter_model.safetensors"),
    )
    .unwrap();
    std::fs::write(ad.path().join("adapter_config.json"), cfg.to_string()).unwrap();
    let ck = Checkpoint::open(dir.path()).unwrap();
    let l = ck.load_layer(1).unwrap();
    load_adapter(ad.path(), &ck, &l)
}

#[test]
fn adapter_config_and_weights_are_checked() {
    let ok = adapter_case(json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8}), None).unwrap();
    assert_eq!((ok.rank, ok.scaling), (4, 2.0));
    for (cfg, field, says) in [
        (
            json!({"r": "4"}),
            "r",
            vec!["\"4\"", "not a non-negative integer"],
        ),
        (json!({"r": 0}), "r", vec!["0, expected a positive rank"]),
        (
            json!({"r": -4}),
            "r",
            vec!["-4", "not a non-negative integer"],
        ),
        (
            json!({"r": 4, "lora_alpha": "x"}),
            "lora_alpha",
            vec!["\"x\"", "not a finite number"],
        ),
        (
            json!({"r": 4, "lora_alpha": 0}),
            "lora_alpha",
            vec!["0, expected a positive"],
        ),
        (
            json!({"r": 4, "lora_alpha": -8}),
            "lora_alpha",
            vec!["-8, expected a positive"],
        ),
        (
            json!({"r": 4, "use_dora": true}),
            "use_dora",
            vec!["does not implement"],
        ),
        (
            json!({"r": 4, "fan_in_fan_out": true}),
            "fan_in_fan_out",
            vec!["does not implement"],
        ),
        (json!({"r": 4, "bias": "all"}), "bias", vec!["'all'"]),
        (
            json!({"r": 4, "rank_pattern": {"w1": 2}}),
            "rank_pattern",
            vec!["per-module"],
        ),
        (
            json!({"r": 4, "peft_type": "IA3"}),
            "peft_type",
            vec!["'IA3'"],
        ),
        (
            json!({"r": 1u64 << 62}),
            "r",
            vec!["r (4611686018427387904) × fan-in (128) overflows"],
        ),
    ] {
        match adapter_case(cfg.clone(), None) {
            Err(Error::Checkpoint { file, tensor, why }) => {
                assert_eq!(tensor, field, "{cfg}: {why}");
                assert!(file.ends_with("adapter_config.json"), "{file}");
                for s in says {
                    assert!(why.contains(s), "{cfg}: '{why}' should say '{s}'");
                }
            }
            other => panic!("{cfg}: expected an error on {field}, got {other:?}"),
        }
    }
    // absent r takes PEFT's 8, which these rank-4 tensors do not have: a shape error
    expect(
        adapter_case(json!({}), None),
        "lora_A.weight",
        &["expected [r = 8"],
    );
    for v in [f32::NAN, f32::INFINITY] {
        expect(
            adapter_case(json!({"r": 4}), Some(v)),
            "experts.0.gate_proj.lora_B.weight",
            &[&format!("value {v} at index 7")],
        );
    }
}
