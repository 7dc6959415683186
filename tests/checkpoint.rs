//! Loading small checkpoints written in each producer's format: loaded weights against the
//! values written (dequantized independently), and a forward against the f64 reference.

mod ckpt;

use ckpt::{experts, linear, max_rel, rng, router, write_config, Expected, Lin, Writer};
use fleetmoe::checkpoint::inspect::{inspect, run_model, RunModel};
use fleetmoe::checkpoint::Checkpoint;
use fleetmoe::moe::{Activation, Routing};
use fleetmoe::quant::QuantScheme;
use safetensors::Dtype;
use serde_json::{json, Value};
use std::path::Path;

const E: usize = 4;
const H: usize = 128;
const I: usize = 128;

fn config(arch: &str, quant: Option<Value>) -> Value {
    let mut c = json!({
        "architectures": [arch],
        "num_hidden_layers": 2,
        "num_local_experts": E,
        "num_experts": E,
        "n_routed_experts": E,
        "num_experts_per_tok": 2,
        "hidden_size": H,
        "intermediate_size": I,
        "moe_intermediate_size": I,
    });
    if let Some(q) = quant {
        c["quantization_config"] = q;
    }
    c
}

/// Writes a Mixtral/Qwen-style checkpoint with MoE layer 1 in `lin`, checks it.
fn roundtrip(arch: &str, cfg: Value, lin: Lin, shards: usize, scheme: &str) -> Expected {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(7);
    let mut wr = Writer::default();
    let (block, names): (&str, [&str; 3]) = match arch {
        "MixtralForCausalLM" => ("model.layers.1.block_sparse_moe", ["w1", "w3", "w2"]),
        _ => ("model.layers.1.mlp", ["gate_proj", "up_proj", "down_proj"]),
    };
    let want = experts(
        &mut wr,
        lin,
        E,
        H,
        I,
        &|e, p| format!("{block}.experts.{e}.{}", names[p]),
        &mut r,
    );
    router(&mut wr, &format!("{block}.gate.weight"), E, H, &mut r);
    wr.floats(
        "model.layers.0.mlp.down_proj.weight",
        Dtype::BF16,
        &[H, 8],
        &[0.0; H * 8],
    );
    wr.write(dir.path(), shards);
    write_config(dir.path(), &cfg);
    check(dir.path(), 1, &want, scheme);
    want
}

fn check(dir: &Path, layer: usize, want: &Expected, scheme: &str) {
    let ck = Checkpoint::open(dir).unwrap();
    assert_eq!(ck.moe_layers(), vec![layer]);
    let l = ck.load_layer(layer).unwrap();
    assert_eq!(l.weights.scheme, QuantScheme::parse(scheme).unwrap());
    let d = l.weights.dequantize().unwrap();
    assert!(
        max_rel(&d.w13, &want.w13) < 1e-6,
        "w13 differs: {}",
        max_rel(&d.w13, &want.w13)
    );
    assert!(
        max_rel(&d.w2, &want.w2) < 1e-6,
        "w2 differs: {}",
        max_rel(&d.w2, &want.w2)
    );
    let (report, ok) = run_model(&RunModel {
        dir: dir.to_path_buf(),
        layer: Some(layer),
        loras: vec![],
        tokens: 5,
        seed: 3,
    })
    .unwrap();
    assert!(ok, "forward off its reference:\n{report}");
    let text = inspect(dir).unwrap();
    assert!(text.contains(scheme), "{text}");
}

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
        Lin::Fp8Block { inv: false },
        2,
        "fp8-block128",
    );
}

#[test]
fn fp8_static_per_tensor_requantizes_gate_up_and_takes_max_input_scale() {
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
    // w2 is exact; w13 was requantized to one scale per expert (≤ half an fp8 step off).
    let d = l.weights.dequantize().unwrap();
    assert!(max_rel(&d.w2, &want.w2) < 1e-6);
    let err = max_rel(&d.w13, &want.w13);
    assert!(err > 0.0 && err < 0.07, "requantized w13 off by {err}");
    // the maximum of the per-expert input scales, all written in [0.01, 0.02)
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
    assert_eq!(s.w13, w13_in.iter().cloned().fold(0.0, f32::max));
    assert_eq!(s.w2, w2_in.iter().cloned().fold(0.0, f32::max));
}

#[test]
fn deepseek_v3_native_block_fp8_with_shared_experts_and_correction_bias() {
    let mut c = config(
        "DeepseekV3ForCausalLM",
        Some(
            json!({"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}),
        ),
    );
    c["n_shared_experts"] = json!(1);
    c["n_group"] = json!(2);
    c["topk_group"] = json!(1);
    c["routed_scaling_factor"] = json!(2.5);
    c["scoring_func"] = json!("sigmoid");
    c["first_k_dense_replace"] = json!(1);
    c["norm_topk_prob"] = json!(true);
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(2);
    let mut wr = Writer::default();
    let block = "model.layers.1.mlp";
    let lin = Lin::Fp8Block { inv: true };
    let want = experts(
        &mut wr,
        lin,
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
    let shared = experts(
        &mut wr,
        lin,
        1,
        H,
        I,
        &|_, p| {
            format!(
                "{block}.shared_experts.{}",
                ["gate_proj", "up_proj", "down_proj"][p]
            )
        },
        &mut r,
    );
    router(&mut wr, &format!("{block}.gate.weight"), E, H, &mut r);
    let bias = [0.1f32, -0.2, 0.3, 0.0];
    wr.floats(
        &format!("{block}.gate.e_score_correction_bias"),
        Dtype::F32,
        &[E],
        &bias,
    );
    wr.write(dir.path(), 2);
    write_config(dir.path(), &c);
    check(dir.path(), 1, &want, "fp8-block128");
    let l = Checkpoint::open(dir.path()).unwrap().load_layer(1).unwrap();
    let sh = l.shared.as_ref().unwrap();
    let d = sh.weights.dequantize().unwrap();
    assert!(max_rel(&d.w13, &shared.w13) < 1e-6 && max_rel(&d.w2, &shared.w2) < 1e-6);
    match &l.config.routing {
        Routing::Grouped {
            num_groups: 2,
            topk_groups: 1,
            correction_bias: Some(b),
            routed_scaling_factor,
            renormalize: true,
            ..
        } => {
            assert_eq!(b, &bias.to_vec());
            assert_eq!(*routed_scaling_factor, 2.5);
        }
        other => panic!("routing {other:?}"),
    }
}

#[test]
fn qwen2_moe_shared_expert_with_sigmoid_gate_int4_pack_quantized() {
    let q = json!({"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"group_0": {
        "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32, "symmetric": true}}}});
    let mut c = config("Qwen2MoeForCausalLM", Some(q));
    c["shared_expert_intermediate_size"] = json!(64);
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(3);
    let mut wr = Writer::default();
    let block = "model.layers.1.mlp";
    let lin = Lin::CtInt4 {
        group: 32,
        zp: false,
    };
    let want = experts(
        &mut wr,
        lin,
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
    let shared = experts(
        &mut wr,
        lin,
        1,
        H,
        64,
        &|_, p| {
            format!(
                "{block}.shared_expert.{}",
                ["gate_proj", "up_proj", "down_proj"][p]
            )
        },
        &mut r,
    );
    let gate = ckpt::gaussian(&mut r, H, 0.1);
    wr.floats(
        &format!("{block}.shared_expert_gate.weight"),
        Dtype::BF16,
        &[1, H],
        &gate,
    );
    router(&mut wr, &format!("{block}.gate.weight"), E, H, &mut r);
    wr.write(dir.path(), 1);
    write_config(dir.path(), &c);
    check(dir.path(), 1, &want, "w4a16-g32");
    let l = Checkpoint::open(dir.path()).unwrap().load_layer(1).unwrap();
    assert_eq!(l.config.shared_intermediate, Some(64));
    assert_eq!(
        l.config.routing,
        Routing::SoftmaxTopK { renormalize: false }
    );
    let sh = l.shared.unwrap();
    assert!(max_rel(&sh.weights.dequantize().unwrap().w2, &shared.w2) < 1e-6);
    let g16: Vec<f32> = gate
        .iter()
        .map(|&x| half::bf16::from_f32(x).to_f32())
        .collect();
    assert_eq!(sh.gate.unwrap(), g16);
}

fn ct_int(bits: u32, strategy: &str, group: Option<usize>, symmetric: bool) -> Value {
    json!({"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"group_0": {
        "weights": {"num_bits": bits, "type": "int", "strategy": strategy, "group_size": group, "symmetric": symmetric}}}})
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
    assert_eq!(l.weights.scheme, QuantScheme::parse("fp8-static").unwrap());
    let (report, ok) = run_model(&RunModel {
        dir: dir.path().to_path_buf(),
        layer: None,
        loras: vec![],
        tokens: 4,
        seed: 1,
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

#[test]
fn gpt_oss_mxfp4_fused_interleaved_with_biases() {
    let mut c = config(
        "GptOssForCausalLM",
        Some(json!({"quant_method": "mxfp4", "modules_to_not_convert": ["router"]})),
    );
    c["swiglu_limit"] = json!(7.0);
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(8);
    let mut wr = Writer::default();
    let block = "model.layers.1.mlp";
    // Write fused [E, rows, cols/32, 16] blocks by stacking per-expert Quark-style mxfp4.
    let mut scratch = Writer::default();
    let mut fused =
        |name: &str, rows: usize, cols: usize, r: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
            let (mut blocks, mut scales, mut want) = (Vec::new(), Vec::new(), Vec::new());
            for e in 0..E {
                let w = ckpt::gaussian(r, rows * cols, 0.05);
                want.extend(linear(
                    &mut scratch,
                    Lin::Mxfp4Quark { input_fp8: false },
                    &format!("x{e}"),
                    &w,
                    rows,
                    cols,
                    r,
                ));
                blocks.extend(scratch.tensors[&format!("x{e}.weight")].2.clone());
                scales.extend(scratch.tensors[&format!("x{e}.weight_scale")].2.clone());
            }
            wr.bytes(
                &format!("{name}_blocks"),
                Dtype::U8,
                &[E, rows, cols / 32, 16],
                blocks,
            );
            wr.bytes(
                &format!("{name}_scales"),
                Dtype::U8,
                &[E, rows, cols / 32],
                scales,
            );
            want
        };
    let w13 = fused(&format!("{block}.experts.gate_up_proj"), 2 * I, H, &mut r);
    let w2 = fused(&format!("{block}.experts.down_proj"), H, I, &mut r);
    let b13 = ckpt::gaussian(&mut r, E * 2 * I, 0.1);
    let b2 = ckpt::gaussian(&mut r, E * H, 0.1);
    wr.floats(
        &format!("{block}.experts.gate_up_proj_bias"),
        Dtype::BF16,
        &[E, 2 * I],
        &b13,
    );
    wr.floats(
        &format!("{block}.experts.down_proj_bias"),
        Dtype::BF16,
        &[E, H],
        &b2,
    );
    router(&mut wr, &format!("{block}.router.weight"), E, H, &mut r);
    wr.floats(
        &format!("{block}.router.bias"),
        Dtype::BF16,
        &[E],
        &[0.1, 0.0, -0.1, 0.2],
    );
    wr.write(dir.path(), 1);
    write_config(dir.path(), &c);
    check(dir.path(), 1, &Expected { w13, w2 }, "mxfp4");
    let l = Checkpoint::open(dir.path()).unwrap().load_layer(1).unwrap();
    assert!(matches!(l.config.activation, Activation::SwigluOai { .. }));
    assert!(l.config.has_bias);
    let b16: Vec<f32> = b13
        .iter()
        .map(|&x| half::bf16::from_f32(x).to_f32())
        .collect();
    assert_eq!(
        l.weights.w13_bias.unwrap(),
        b16,
        "interleaved gate/up rows kept in place"
    );
}

#[test]
fn llama4_fused_bf16_transposed_with_shared_expert() {
    let c = json!({"architectures": ["Llama4ForConditionalGeneration"], "text_config": {
        "num_hidden_layers": 2, "num_local_experts": E, "num_experts_per_tok": 1,
        "hidden_size": H, "intermediate_size": I, "interleave_moe_layer_step": 2}});
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(9);
    let mut wr = Writer::default();
    let block = "language_model.model.layers.1.feed_forward";
    // transformers: gate_up_proj [E, H, 2I] used as x @ W, first I columns gate.
    let gu = ckpt::gaussian(&mut r, E * H * 2 * I, 0.05);
    let dn = ckpt::gaussian(&mut r, E * I * H, 0.05);
    wr.floats(
        &format!("{block}.experts.gate_up_proj"),
        Dtype::BF16,
        &[E, H, 2 * I],
        &gu,
    );
    wr.floats(
        &format!("{block}.experts.down_proj"),
        Dtype::BF16,
        &[E, I, H],
        &dn,
    );
    let bf = |x: f32| half::bf16::from_f32(x).to_f32();
    let mut w13 = vec![0f32; E * 2 * I * H];
    let mut w2 = vec![0f32; E * H * I];
    for e in 0..E {
        for k in 0..H {
            for n in 0..2 * I {
                w13[(e * 2 * I + n) * H + k] = bf(gu[(e * H + k) * 2 * I + n]);
            }
        }
        for k in 0..I {
            for n in 0..H {
                w2[(e * H + n) * I + k] = bf(dn[(e * I + k) * H + n]);
            }
        }
    }
    experts(
        &mut wr,
        Lin::Bf16,
        1,
        H,
        I,
        &|_, p| {
            format!(
                "{block}.shared_expert.{}",
                ["gate_proj", "up_proj", "down_proj"][p]
            )
        },
        &mut r,
    );
    router(&mut wr, &format!("{block}.router.weight"), E, H, &mut r);
    wr.write(dir.path(), 1);
    write_config(dir.path(), &c);
    check(dir.path(), 1, &Expected { w13, w2 }, "bf16");
    let l = Checkpoint::open(dir.path()).unwrap().load_layer(1).unwrap();
    assert!(l.config.apply_router_weight_on_input);
    assert_eq!(l.config.routing, Routing::SigmoidTop1);
    assert_eq!(l.config.shared_intermediate, Some(I));
}
