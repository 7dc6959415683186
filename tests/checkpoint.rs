//! Loading small checkpoints written in each producer's format: loaded weights against the
//! values written (dequantized independently), and a forward against the f64 reference.

mod ckpt;

use ckpt::harness::{check, config, roundtrip, E, H, I};
use ckpt::{experts, rng, router, write_config, Lin, Writer};
use fleetmoe::checkpoint::inspect::{run_model, RunModel};
use fleetmoe::checkpoint::Checkpoint;
use fleetmoe::quant::QuantScheme;
use serde_json::{json, Value};

#[test]
fn mixtral_bf16_three_shards_with_index() {
    let want = roundtrip(
        "MixtralForCausalLM",
        config("MixtralForCausalLM", None),
        Lin::Bf16,
        3,
        "bf16",
    );
    assert_eq!(want.w13.len(), E * 2 * I * H);
}

#[test]
fn compressed_tensors_fp8_channel_dynamic() {
    let q = json!({"quant_method": "compressed-tensors", "format": "float-quantized", "config_groups": {"group_0": {
        "targets": ["Linear"],
        "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": true, "dynamic": false},
        "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true}}}});
    roundtrip(
        "Qwen3MoeForCausalLM",
        config("Qwen3MoeForCausalLM", Some(q)),
        Lin::Fp8Channel,
        1,
        "fp8-channel",
    );
}

#[test]
fn compressed_tensors_fp8_block() {
    let q = json!({"quant_method": "compressed-tensors", "format": "float-quantized", "config_groups": {"group_0": {
        "weights": {"num_bits": 8, "type": "float", "strategy": "block", "block_structure": [128, 128]},
        "input_activations": {"num_bits": 8, "type": "float", "strategy": "group", "group_size": 128, "dynamic": true}}}});
    roundtrip(
        "Glm4MoeForCausalLM",
        config("Glm4MoeForCausalLM", Some(q)),
        Lin::Fp8Block {
            inv: false,
            ue8m0: false,
        },
        2,
        "fp8-block128",
    );
}

#[test]
fn fp8_static_per_tensor_differing_gate_up_loads_per_channel_exactly_and_takes_max_input_scale() {
    let q = json!({"quant_method": "compressed-tensors", "format": "float-quantized", "config_groups": {"group_0": {
        "weights": {"num_bits": 8, "type": "float", "strategy": "tensor"},
        "input_activations": {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": false}}}});
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(1);
    let mut wr = Writer::default();
    let block = "model.layers.0.mlp";
    let want = experts(
        &mut wr,
        Lin::Fp8Tensor { input: true },
        E,
        H,
        I,
        &|e, p| {
            format!(
                "{block}.experts.{e}.{}",
                ["gate_proj", "up_proj", "down_proj"][p]
            )
        },
        &mut r,
    );
    router(&mut wr, &format!("{block}.gate.weight"), E, H, &mut r);
    wr.write(dir.path(), 1);
    write_config(dir.path(), &config("Qwen3MoeForCausalLM", Some(q)));
    let ck = Checkpoint::open(dir.path()).unwrap();
    let l = ck.load_layer(0).unwrap();
    // gate and up scales differ, so the layer is per-channel fp8 with the activation rule
    // kept, and dequantizes bit-exactly to what was written.
    assert_eq!(
        l.weights.scheme,
        QuantScheme::parse("fp8-wchannel-astatic").unwrap()
    );
    assert_eq!(ck.scheme(0).unwrap(), l.weights.scheme);
    let d = l.weights.dequantize().unwrap();
    assert_eq!(d.w2, want.w2);
    assert_eq!(d.w13, want.w13);
    // each expert's input scales (gate and up: the larger), all written in [0.01, 0.02)
    let mut w13_in = Vec::new();
    let mut w2_in = Vec::new();
    for e in 0..E {
        let g = ck
            .shards
            .get(&format!("{block}.experts.{e}.gate_proj.input_scale"))
            .unwrap()
            .scalar()
            .unwrap();
        let u = ck
            .shards
            .get(&format!("{block}.experts.{e}.up_proj.input_scale"))
            .unwrap()
            .scalar()
            .unwrap();
        w13_in.push(g.max(u));
        w2_in.push(
            ck.shards
                .get(&format!("{block}.experts.{e}.down_proj.input_scale"))
                .unwrap()
                .scalar()
                .unwrap(),
        );
    }
    let s = l.weights.input_scales.unwrap();
    assert!(w13_in.iter().any(|&v| v != w13_in[0]), "{w13_in:?}");
    assert_eq!(s.w13, w13_in);
    assert_eq!(s.w2, w2_in);
}

#[test]
fn compressed_tensors_int4_asymmetric_zero_points() {
    roundtrip(
        "Qwen3MoeForCausalLM",
        config(
            "Qwen3MoeForCausalLM",
            Some(ct_int(4, "group", Some(64), false)),
        ),
        Lin::CtInt4 {
            group: 64,
            zp: true,
        },
        1,
        "w4a16-g64-zp",
    );
}

#[test]
fn compressed_tensors_int8_channel() {
    roundtrip(
        "MixtralForCausalLM",
        config("MixtralForCausalLM", Some(ct_int(8, "channel", None, true))),
        Lin::CtInt8Channel,
        1,
        "w8a16-channel",
    );
}

#[test]
fn compressed_tensors_w4a8() {
    let q = json!({"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"group_0": {
        "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128, "symmetric": true},
        "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true}}}});
    roundtrip(
        "Qwen3MoeForCausalLM",
        config("Qwen3MoeForCausalLM", Some(q)),
        Lin::W4A8,
        1,
        "w4a8",
    );
}

#[test]
fn gptq_act_order_and_asymmetric() {
    let q = json!({"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": true, "sym": false, "checkpoint_format": "gptq"});
    roundtrip(
        "MixtralForCausalLM",
        config("MixtralForCausalLM", Some(q)),
        Lin::Gptq {
            group: 32,
            sym: false,
            act_order: true,
            bits: 4,
            v2: false,
        },
        2,
        "w4a16-g32-zp-actorder",
    );
    let q = json!({"quant_method": "gptq", "bits": 4, "group_size": 64, "desc_act": false, "sym": true});
    roundtrip(
        "Qwen3MoeForCausalLM",
        config("Qwen3MoeForCausalLM", Some(q)),
        Lin::Gptq {
            group: 64,
            sym: true,
            act_order: false,
            bits: 4,
            v2: false,
        },
        1,
        "w4a16-g64",
    );
}

#[test]
fn awq_nibble_order() {
    let q = json!({"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": true, "version": "gemm"});
    roundtrip(
        "Qwen3MoeForCausalLM",
        config("Qwen3MoeForCausalLM", Some(q)),
        Lin::Awq { group: 64 },
        1,
        "w4a16-g64-zp",
    );
}

#[test]
fn compressed_tensors_nvfp4_w4a4_and_weight_only() {
    let q = |acts: bool| {
        let mut g = json!({"weights": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16}});
        if acts {
            g["input_activations"] = json!({"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16, "dynamic": "local"});
        }
        json!({"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized", "config_groups": {"group_0": g}})
    };
    roundtrip(
        "Qwen3MoeForCausalLM",
        config("Qwen3MoeForCausalLM", Some(q(true))),
        Lin::Nvfp4Ct { input: true },
        1,
        "nvfp4",
    );
    roundtrip(
        "Qwen3MoeForCausalLM",
        config("Qwen3MoeForCausalLM", Some(q(false))),
        Lin::Nvfp4Ct { input: false },
        1,
        "nvfp4-a16",
    );
}

#[test]
fn modelopt_nvfp4_from_hf_quant_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(5);
    let mut wr = Writer::default();
    let block = "model.layers.1.block_sparse_moe";
    let want = experts(
        &mut wr,
        Lin::Nvfp4Modelopt,
        E,
        H,
        I,
        &|e, p| format!("{block}.experts.{e}.{}", ["w1", "w3", "w2"][p]),
        &mut r,
    );
    router(&mut wr, &format!("{block}.gate.weight"), E, H, &mut r);
    wr.write(dir.path(), 1);
    write_config(dir.path(), &config("MixtralForCausalLM", None));
    std::fs::write(dir.path().join("hf_quant_config.json"), json!({"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "NVFP4", "group_size": 16}}).to_string()).unwrap();
    check(dir.path(), 1, &want, "nvfp4");
}

#[test]
fn modelopt_fp8_static() {
    let q = json!({"quant_method": "modelopt", "quant_algo": "FP8"});
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(6);
    let mut wr = Writer::default();
    let block = "model.layers.1.mlp";
    experts(
        &mut wr,
        Lin::Fp8Tensor { input: true },
        E,
        H,
        I,
        &|e, p| {
            format!(
                "{block}.experts.{e}.{}",
                ["gate_proj", "up_proj", "down_proj"][p]
            )
        },
        &mut r,
    );
    router(&mut wr, &format!("{block}.gate.weight"), E, H, &mut r);
    wr.write(dir.path(), 1);
    write_config(dir.path(), &config("Qwen3MoeForCausalLM", Some(q)));
    let l = Checkpoint::open(dir.path()).unwrap().load_layer(1).unwrap();
    // the writer gives every projection its own scale: per-channel, static activations
    assert_eq!(
        l.weights.scheme,
        QuantScheme::parse("fp8-wchannel-astatic").unwrap()
    );
    let (report, ok) = run_model(&RunModel {
        dir: dir.path().to_path_buf(),
        layer: None,
        loras: vec![],
        tokens: 4,
        seed: 1,
        backend: None,
        reps: 0,
    })
    .unwrap();
    assert!(ok, "{report}");
}

#[test]
fn quark_mxfp4_with_mx_and_fp8_activations() {
    let q = |input: Value| {
        json!({"quant_method": "quark", "global_quant_config": {
        "weight": {"dtype": "fp4", "qscheme": "per_group", "group_size": 32, "scale_format": "e8m0"},
        "input_tensors": input}})
    };
    let mx = json!({"dtype": "fp4", "qscheme": "per_group", "group_size": 32, "is_dynamic": true});
    roundtrip(
        "Qwen3MoeForCausalLM",
        config("Qwen3MoeForCausalLM", Some(q(mx))),
        Lin::Mxfp4Quark { input_fp8: false },
        1,
        "mxfp4-a-mxfp4",
    );
    let f8 = json!({"dtype": "fp8_e4m3", "qscheme": "per_tensor", "is_dynamic": false});
    roundtrip(
        "Qwen3MoeForCausalLM",
        config("Qwen3MoeForCausalLM", Some(q(f8))),
        Lin::Mxfp4Quark { input_fp8: true },
        1,
        "mxfp4-a-fp8",
    );
    roundtrip(
        "Qwen3MoeForCausalLM",
        config("Qwen3MoeForCausalLM", Some(q(Value::Null))),
        Lin::Mxfp4Quark { input_fp8: false },
        1,
        "mxfp4",
    );
}

fn ct_int(bits: u32, strategy: &str, group: Option<usize>, symmetric: bool) -> Value {
    json!({"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"group_0": {
        "weights": {"num_bits": bits, "type": "int", "strategy": strategy, "group_size": group, "symmetric": symmetric}}}})
}

#[test]
fn quark_mxfp6_both_element_types() {
    for (dtype, e3m2, scheme) in [
        ("fp6_e3m2", true, "mxfp6-e3m2"),
        ("fp6_e2m3", false, "mxfp6-e2m3"),
    ] {
        let q = json!({"quant_method": "quark", "global_quant_config": {
            "weight": {"dtype": dtype, "qscheme": "per_group", "group_size": 32, "scale_format": "e8m0"},
            "input_tensors": {"dtype": dtype, "qscheme": "per_group", "group_size": 32, "is_dynamic": true}}});
        roundtrip(
            "Qwen3MoeForCausalLM",
            config("Qwen3MoeForCausalLM", Some(q)),
            Lin::Mxfp6Quark { e3m2 },
            1,
            scheme,
        );
    }
}

#[test]
fn native_fp8_per_tensor_dynamic() {
    let q = json!({"quant_method": "fp8", "activation_scheme": "dynamic"});
    // gate and up were written with different scales: per-channel, exact
    roundtrip(
        "MixtralForCausalLM",
        config("MixtralForCausalLM", Some(q)),
        Lin::Fp8Tensor { input: false },
        1,
        "fp8-wchannel-atensor",
    );
}

#[test]
fn gptq_int8_and_gptq_v2_zero_points() {
    let q = json!({"quant_method": "gptq", "bits": 8, "group_size": 64, "desc_act": false, "sym": true});
    let lin = Lin::Gptq {
        group: 64,
        sym: true,
        act_order: false,
        bits: 8,
        v2: false,
    };
    roundtrip(
        "Qwen3MoeForCausalLM",
        config("Qwen3MoeForCausalLM", Some(q)),
        lin,
        1,
        "w8a16-g64",
    );
    let q = json!({"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": false, "sym": false,
        "checkpoint_format": "gptq_v2"});
    let lin = Lin::Gptq {
        group: 32,
        sym: false,
        act_order: false,
        bits: 4,
        v2: true,
    };
    roundtrip(
        "MixtralForCausalLM",
        config("MixtralForCausalLM", Some(q)),
        lin,
        1,
        "w4a16-g32-zp",
    );
}

#[test]
fn compressed_tensors_int4_act_order() {
    let q = json!({"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"group_0": {
        "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32, "symmetric": true,
            "actorder": "group"}}}});
    roundtrip(
        "Qwen3MoeForCausalLM",
        config("Qwen3MoeForCausalLM", Some(q)),
        Lin::CtInt4Act { group: 32 },
        1,
        "w4a16-g32-actorder",
    );
}
