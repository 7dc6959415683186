//! Nothing malformed gets through the checkpoint loader: each test feeds one kind of bad
//! config value or tensor and asserts the exact error (variant, the field or tensor it
//! names, the bad value). Scale representations are in `checkpoint_representation.rs`,
//! PEFT adapter checks in `checkpoint_lora.rs`.

mod ckpt;

use ckpt::cases::{expect, load, proj, write, writer, BLOCK, QWEN};
use ckpt::harness::{config, E, H, I};
use ckpt::{experts, max_rel, rng, write_config, Lin, Writer};
use fleetmoe::checkpoint::inspect::inspect;
use fleetmoe::checkpoint::Checkpoint;
use fleetmoe::quant::QuantScheme;
use fleetmoe::Error;
use safetensors::Dtype;
use serde_json::{json, Value};

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
    let text = inspect(dir.path()).unwrap().report;
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
    // router weights with a NaN
    let (mut wr, _) = writer(Lin::Bf16, 27);
    let mut w = vec![0.01f32; E * H];
    w[H + 3] = f32::NAN;
    wr.floats(&format!("{BLOCK}.gate.weight"), Dtype::F32, &[E, H], &w);
    expect(
        load(write(&wr, &config("Qwen3MoeForCausalLM", None)).path()),
        "gate.weight",
        &[&format!("value NaN at index {}", H + 3)],
    );
}
