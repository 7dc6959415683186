//! Architectures: tensor names, fused experts, shared experts and routing read from small
//! checkpoints in each architecture's layout.

mod ckpt;

use ckpt::harness::{check, config, E, H, I};
use ckpt::{experts, linear, max_rel, rng, router, write_config, Expected, Lin, Writer};
use fleetmoe::checkpoint::Checkpoint;
use fleetmoe::moe::{Activation, Routing};
use safetensors::Dtype;
use serde_json::json;

#[test]
fn deepseek_v3_native_block_fp8_with_shared_experts_and_correction_bias() {
    deepseek_block_fp8(false);
}

/// DeepSeek-V3.1's `scale_fmt: "ue8m0"`: the same checkpoint with its block scales stored as
/// F8_E8M0 exponent bytes, read by the per-expert fp8 reader.
#[test]
fn deepseek_v31_ue8m0_block_scales() {
    deepseek_block_fp8(true);
}

fn deepseek_block_fp8(ue8m0: bool) {
    let mut q = json!({"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]});
    if ue8m0 {
        q["scale_fmt"] = json!("ue8m0");
    }
    let mut c = config("DeepseekV3ForCausalLM", Some(q));
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
    let lin = Lin::Fp8Block { inv: true, ue8m0 };
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

#[test]
fn deepseek_v2_greedy_awq_experts_with_unquantized_shared_experts() {
    let mut c = config(
        "DeepseekV2ForCausalLM",
        Some(json!({"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": true})),
    );
    c["n_shared_experts"] = json!(2);
    c["n_group"] = json!(2);
    c["topk_group"] = json!(1);
    c["topk_method"] = json!("greedy");
    c["routed_scaling_factor"] = json!(16.0);
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(12);
    let mut wr = Writer::default();
    let block = "model.layers.1.mlp";
    let names = ["gate_proj", "up_proj", "down_proj"];
    let want = experts(
        &mut wr,
        Lin::Awq { group: 64 },
        E,
        H,
        I,
        &|e, p| format!("{block}.experts.{e}.{}", names[p]),
        &mut r,
    );
    // two shared experts of I each are one MLP of 2·I, left in bf16 by the quantizer
    let shared = experts(
        &mut wr,
        Lin::Bf16,
        1,
        H,
        2 * I,
        &|_, p| format!("{block}.shared_experts.{}", names[p]),
        &mut r,
    );
    router(&mut wr, &format!("{block}.gate.weight"), E, H, &mut r);
    wr.write(dir.path(), 1);
    write_config(dir.path(), &c);
    check(dir.path(), 1, &want, "w4a16-g64-zp");
    let l = Checkpoint::open(dir.path()).unwrap().load_layer(1).unwrap();
    let sh = l.shared.unwrap();
    assert_eq!(
        sh.weights.scheme,
        fleetmoe::quant::QuantScheme::parse("bf16").unwrap()
    );
    assert!(max_rel(&sh.weights.dequantize().unwrap().w13, &shared.w13) < 1e-6);
    match l.config.routing {
        Routing::Grouped {
            num_groups: 1,
            topk_groups: 1,
            routed_scaling_factor,
            correction_bias: None,
            ..
        } => {
            assert_eq!(routed_scaling_factor, 16.0)
        }
        other => panic!("routing {other:?}"),
    }
}

#[test]
fn llama4_per_expert_fp8_names_and_lazy_layers() {
    let q = json!({"quant_method": "compressed-tensors", "format": "float-quantized", "config_groups": {"group_0": {
        "weights": {"num_bits": 8, "type": "float", "strategy": "channel"},
        "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true}}}});
    let c = json!({"architectures": ["Llama4ForConditionalGeneration"], "quantization_config": q, "text_config": {
        "num_hidden_layers": 4, "num_local_experts": E, "num_experts_per_tok": 1,
        "hidden_size": H, "intermediate_size": I}});
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(13);
    let mut wr = Writer::default();
    let names = ["gate_proj", "up_proj", "down_proj"];
    let mut wants = Vec::new();
    for layer in [1, 3] {
        let block = format!("language_model.model.layers.{layer}.feed_forward");
        wants.push(experts(
            &mut wr,
            Lin::Fp8Channel,
            E,
            H,
            I,
            &|e, p| format!("{block}.experts.{e}.{}", names[p]),
            &mut r,
        ));
        experts(
            &mut wr,
            Lin::Fp8Channel,
            1,
            H,
            I,
            &|_, p| format!("{block}.shared_expert.{}", names[p]),
            &mut r,
        );
        router(&mut wr, &format!("{block}.router.weight"), E, H, &mut r);
    }
    wr.write(dir.path(), 2);
    write_config(dir.path(), &c);
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ck.moe_layers(), vec![1, 3]);
    let layers: Vec<_> = ck.layers().collect::<fleetmoe::Result<_>>().unwrap();
    for (l, want) in layers.iter().zip(&wants) {
        let d = l.weights.dequantize().unwrap();
        assert!(max_rel(&d.w13, &want.w13) < 1e-6 && max_rel(&d.w2, &want.w2) < 1e-6);
        assert!(l.shared.is_some() && l.config.apply_router_weight_on_input);
    }
    assert_eq!(layers[1].index, 3);
}
