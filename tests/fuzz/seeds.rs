//! Seed model directories, one per producer format and architecture, each small enough
//! that loading and running it costs well under a millisecond in release, and each
//! loading and running cleanly before any mutation.

use super::files::{from_writer, Model};
use crate::ckpt::{experts, gaussian, linear, rng, router, Lin, Writer};
use rand_chacha::ChaCha8Rng;
use safetensors::Dtype;
use serde_json::{json, Value};

const NAMES: [&str; 3] = ["gate_proj", "up_proj", "down_proj"];

#[derive(Clone, Copy)]
struct Dims {
    e: usize,
    h: usize,
    i: usize,
    k: usize,
}

const SMALL: Dims = Dims {
    e: 4,
    h: 64,
    i: 32,
    k: 2,
};

/// 128×128 fp8 blocks with per-128-group activations need H and I of 128.
const BLOCK: Dims = Dims {
    e: 4,
    h: 128,
    i: 128,
    k: 2,
};

fn config(arch: &str, quant: Option<Value>, d: Dims) -> Value {
    let mut c = json!({
        "architectures": [arch], "num_hidden_layers": 2,
        "num_local_experts": d.e, "num_experts": d.e, "n_routed_experts": d.e,
        "num_experts_per_tok": d.k, "hidden_size": d.h,
        "intermediate_size": d.i, "moe_intermediate_size": d.i,
    });
    if let Some(q) = quant {
        c["quantization_config"] = q;
    }
    c
}

fn block_of(arch: &str) -> (&'static str, [&'static str; 3]) {
    match arch {
        "MixtralForCausalLM" => ("model.layers.1.block_sparse_moe", ["w1", "w3", "w2"]),
        _ => ("model.layers.1.mlp", NAMES),
    }
}

/// Routed experts of layer 1 in `lin`, its router, and a dense layer 0 tensor.
fn routed(wr: &mut Writer, arch: &str, lin: Lin, d: Dims, r: &mut ChaCha8Rng) -> String {
    let (block, names) = block_of(arch);
    experts(
        wr,
        lin,
        d.e,
        d.h,
        d.i,
        &|e, p| format!("{block}.experts.{e}.{}", names[p]),
        r,
    );
    router(wr, &format!("{block}.gate.weight"), d.e, d.h, r);
    wr.floats(
        "model.layers.0.mlp.down_proj.weight",
        Dtype::BF16,
        &[d.h, 8],
        &vec![0.0; d.h * 8],
    );
    block.to_string()
}

fn model(label: &'static str, cfg: Value, wr: &Writer, block: String, mx: bool) -> Model {
    Model {
        label,
        jsons: vec![("config.json".into(), cfg)],
        raw_json: vec![],
        files: vec![from_writer(wr, "model.safetensors", mx)],
        block,
        adapter: false,
    }
}

/// A split-expert checkpoint of `arch` with every projection in `lin`.
fn split(label: &'static str, arch: &str, q: Option<Value>, lin: Lin, d: Dims) -> Model {
    let mut r = rng(label.len() as u64);
    let mut wr = Writer::default();
    let block = routed(&mut wr, arch, lin, d, &mut r);
    let mx = matches!(lin, Lin::Mxfp4Quark { .. } | Lin::Mxfp6Quark { .. });
    model(label, config(arch, q, d), &wr, block, mx)
}

fn ct(format: &str, group: Value) -> Value {
    json!({"quant_method": "compressed-tensors", "format": format, "config_groups": {"group_0": group}})
}

fn ct_fp8(strategy: &str, act: Value) -> Value {
    let mut w = json!({"num_bits": 8, "type": "float", "strategy": strategy});
    if strategy == "block" {
        w["block_structure"] = json!([128, 128]);
    }
    ct(
        "float-quantized",
        json!({"weights": w, "input_activations": act}),
    )
}

fn ct_int(bits: u32, strategy: &str, group: Option<usize>, sym: bool, act: bool) -> Value {
    let mut w = json!({"num_bits": bits, "type": "int", "strategy": strategy, "group_size": group, "symmetric": sym});
    if act {
        w["actorder"] = json!("group");
    }
    ct("pack-quantized", json!({"weights": w}))
}

fn quark(elem: &str, input: Value) -> Value {
    json!({"quant_method": "quark", "global_quant_config": {
        "weight": {"dtype": elem, "qscheme": "per_group", "group_size": 32, "scale_format": "e8m0"},
        "input_tensors": input}})
}

fn gptq(bits: usize, group: usize, desc_act: bool, sym: bool, v2: bool) -> (Value, Lin) {
    let fmt = if v2 { "gptq_v2" } else { "gptq" };
    let q = json!({"quant_method": "gptq", "bits": bits, "group_size": group, "desc_act": desc_act, "sym": sym, "checkpoint_format": fmt});
    let lin = Lin::Gptq {
        group,
        sym,
        act_order: desc_act,
        bits,
        v2,
    };
    (q, lin)
}

/// Every model seed, adapters included.
pub fn models() -> Vec<Model> {
    let dyn_token = json!({"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true});
    let dyn_group = json!({"num_bits": 8, "type": "float", "strategy": "group", "group_size": 128, "dynamic": true});
    let static_t = json!({"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": false});
    let nvfp4 = |acts: bool| {
        let mut g = json!({"weights": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16}});
        if acts {
            g["input_activations"] = json!({"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16, "dynamic": "local"});
        }
        ct("nvfp4-pack-quantized", g)
    };
    let mx_in =
        |d: &str| json!({"dtype": d, "qscheme": "per_group", "group_size": 32, "is_dynamic": true});
    let fp8_in = json!({"dtype": "fp8_e4m3", "qscheme": "per_tensor", "is_dynamic": false});
    let (mix, qw3, glm) = (
        "MixtralForCausalLM",
        "Qwen3MoeForCausalLM",
        "Glm4MoeForCausalLM",
    );
    let w4a8 = ct(
        "pack-quantized",
        json!({"weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128, "symmetric": true},
        "input_activations": dyn_token}),
    );
    let w4a8_dims = Dims {
        e: 2,
        h: 128,
        i: 128,
        k: 2,
    };
    let int4 = |group, zp| Lin::CtInt4 { group, zp };
    let mut v = vec![
        split("bf16-mixtral", mix, None, Lin::Bf16, SMALL),
        f16_model(),
        split(
            "ct-fp8-tensor",
            qw3,
            Some(ct_fp8("tensor", dyn_token.clone())),
            Lin::Fp8Tensor { input: false },
            SMALL,
        ),
        split(
            "ct-fp8-channel",
            qw3,
            Some(ct_fp8("channel", dyn_token.clone())),
            Lin::Fp8Channel,
            SMALL,
        ),
        split(
            "ct-fp8-block-glm",
            glm,
            Some(ct_fp8("block", dyn_group)),
            Lin::Fp8Block {
                inv: false,
                ue8m0: false,
            },
            BLOCK,
        ),
        split(
            "ct-fp8-static",
            qw3,
            Some(ct_fp8("tensor", static_t)),
            Lin::Fp8Tensor { input: true },
            SMALL,
        ),
        split(
            "ct-int4-g32-zp",
            qw3,
            Some(ct_int(4, "group", Some(32), false, false)),
            int4(32, true),
            SMALL,
        ),
        split(
            "ct-int8-channel",
            mix,
            Some(ct_int(8, "channel", None, true, false)),
            Lin::CtInt8Channel,
            SMALL,
        ),
        split(
            "ct-int4-actorder",
            qw3,
            Some(ct_int(4, "group", Some(32), true, true)),
            Lin::CtInt4Act { group: 32 },
            SMALL,
        ),
        split("ct-w4a8", qw3, Some(w4a8), Lin::W4A8, w4a8_dims),
        split(
            "ct-nvfp4",
            qw3,
            Some(nvfp4(true)),
            Lin::Nvfp4Ct { input: true },
            SMALL,
        ),
        split(
            "ct-nvfp4-a16",
            qw3,
            Some(nvfp4(false)),
            Lin::Nvfp4Ct { input: false },
            SMALL,
        ),
        split(
            "modelopt-fp8",
            qw3,
            Some(json!({"quant_method": "modelopt", "quant_algo": "FP8"})),
            Lin::Fp8Tensor { input: true },
            SMALL,
        ),
        modelopt_nvfp4(),
        split(
            "quark-mxfp4-a-mx",
            qw3,
            Some(quark("fp4", mx_in("fp4"))),
            Lin::Mxfp4Quark { input_fp8: false },
            SMALL,
        ),
        split(
            "quark-mxfp4-a-fp8",
            qw3,
            Some(quark("fp4", fp8_in)),
            Lin::Mxfp4Quark { input_fp8: true },
            SMALL,
        ),
        split(
            "quark-mxfp4-a-bf16",
            qw3,
            Some(quark("fp4", Value::Null)),
            Lin::Mxfp4Quark { input_fp8: false },
            SMALL,
        ),
        split(
            "quark-mxfp6-e3m2",
            qw3,
            Some(quark("fp6_e3m2", mx_in("fp6_e3m2"))),
            Lin::Mxfp6Quark { e3m2: true },
            SMALL,
        ),
        split(
            "quark-mxfp6-e2m3",
            qw3,
            Some(quark("fp6_e2m3", mx_in("fp6_e2m3"))),
            Lin::Mxfp6Quark { e3m2: false },
            SMALL,
        ),
        split(
            "fp8-native-tensor",
            mix,
            Some(json!({"quant_method": "fp8", "activation_scheme": "dynamic"})),
            Lin::Fp8Tensor { input: false },
            SMALL,
        ),
        split(
            "awq-g32",
            qw3,
            Some(
                json!({"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": true, "version": "gemm"}),
            ),
            Lin::Awq { group: 32 },
            SMALL,
        ),
        gpt_oss(),
        deepseek_v3(),
        qwen2_shared(),
        llama4(),
    ];
    for (label, (q, lin)) in [
        ("gptq-v1-actorder", gptq(4, 32, true, false, false)),
        ("gptq-v2-asym", gptq(4, 32, false, false, true)),
        ("gptq-int8", gptq(8, 32, false, true, false)),
    ] {
        v.push(split(label, mix, Some(q), lin, SMALL));
    }
    v.push(with_adapter(
        "lora-mixtral",
        split("", mix, None, Lin::Bf16, SMALL),
    ));
    v.push(with_adapter("lora-qwen2-shared", qwen2_shared()));
    v
}

fn f16_model() -> Model {
    let mut m = split("f16-qwen3", "Qwen3MoeForCausalLM", None, Lin::Bf16, SMALL);
    for t in &mut m.files[0].tensors {
        if t.dtype == "BF16" && t.name.contains("experts") {
            t.data = t
                .data
                .chunks(2)
                .flat_map(|b| {
                    let x = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
                    half::f16::from_f32(x).to_le_bytes()
                })
                .collect();
            t.dtype = "F16".into();
        }
    }
    m
}

fn modelopt_nvfp4() -> Model {
    let mut m = split(
        "modelopt-nvfp4",
        "MixtralForCausalLM",
        None,
        Lin::Nvfp4Modelopt,
        SMALL,
    );
    m.jsons.push((
        "hf_quant_config.json".into(),
        json!({"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "NVFP4", "group_size": 16}}),
    ));
    m
}

/// DeepSeek-V3: 128×128 block fp8 (`weight_scale_inv`), grouped sigmoid routing with
/// `e_score_correction_bias`, a shared expert, in two shards with an index.
fn deepseek_v3() -> Model {
    let q = json!({"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]});
    let mut c = config("DeepseekV3ForCausalLM", Some(q), BLOCK);
    for (k, v) in [
        ("n_shared_experts", json!(1)),
        ("n_group", json!(2)),
        ("topk_group", json!(1)),
        ("routed_scaling_factor", json!(2.5)),
        ("scoring_func", json!("sigmoid")),
        ("first_k_dense_replace", json!(1)),
        ("norm_topk_prob", json!(true)),
    ] {
        c[k] = v;
    }
    let mut r = rng(2);
    let mut wr = Writer::default();
    let lin = Lin::Fp8Block {
        inv: true,
        ue8m0: false,
    };
    let block = routed(&mut wr, "DeepseekV3ForCausalLM", lin, BLOCK, &mut r);
    let module = format!("{block}.shared_experts");
    experts(
        &mut wr,
        lin,
        1,
        128,
        128,
        &|_, p| format!("{module}.{}", NAMES[p]),
        &mut r,
    );
    wr.floats(
        &format!("{block}.gate.e_score_correction_bias"),
        Dtype::F32,
        &[4],
        &[0.1, -0.2, 0.3, 0.0],
    );
    let mut m = model("deepseek-v3-fp8-block", c, &wr, block, false);
    // two shards and an index naming each tensor's file
    let all = std::mem::take(&mut m.files[0].tensors);
    let (a, b): (Vec<_>, Vec<_>) = all.into_iter().enumerate().partition(|(k, _)| k % 2 == 0);
    let mut map = serde_json::Map::new();
    m.files.clear();
    for (n, part) in [a, b].into_iter().enumerate() {
        let path = format!("model-0000{}-of-00002.safetensors", n + 1);
        for (_, t) in &part {
            map.insert(t.name.clone(), json!(path));
        }
        m.files.push(super::files::StFile {
            path,
            tensors: part.into_iter().map(|(_, t)| t).collect(),
            raw: vec![],
        });
    }
    m.jsons.push((
        "model.safetensors.index.json".into(),
        json!({"metadata": {}, "weight_map": map}),
    ));
    m
}

fn shared(wr: &mut Writer, lin: Lin, module: &str, i: usize, r: &mut ChaCha8Rng) {
    let d = SMALL;
    experts(
        wr,
        lin,
        1,
        d.h,
        i,
        &|_, p| format!("{module}.{}", NAMES[p]),
        r,
    );
}

/// Qwen2-MoE: int4 pack-quantized experts, a shared expert and its sigmoid gate.
fn qwen2_shared() -> Model {
    let q = ct_int(4, "group", Some(32), true, false);
    let mut c = config("Qwen2MoeForCausalLM", Some(q), SMALL);
    c["shared_expert_intermediate_size"] = json!(32);
    let mut r = rng(3);
    let mut wr = Writer::default();
    let lin = Lin::CtInt4 {
        group: 32,
        zp: false,
    };
    let block = routed(&mut wr, "Qwen2MoeForCausalLM", lin, SMALL, &mut r);
    shared(&mut wr, lin, &format!("{block}.shared_expert"), 32, &mut r);
    let gate = gaussian(&mut r, SMALL.h, 0.1);
    wr.floats(
        &format!("{block}.shared_expert_gate.weight"),
        Dtype::BF16,
        &[1, SMALL.h],
        &gate,
    );
    model("qwen2-moe-shared-int4", c, &wr, block, false)
}

/// GPT-OSS: fused `[E, rows, cols/32, 16]` mxfp4 blocks, e8m0 scales, biases, router bias.
fn gpt_oss() -> Model {
    let d = SMALL;
    let mut c = config(
        "GptOssForCausalLM",
        Some(json!({"quant_method": "mxfp4", "modules_to_not_convert": ["router"]})),
        d,
    );
    c["swiglu_limit"] = json!(7.0);
    let mut r = rng(8);
    let mut wr = Writer::default();
    let block = "model.layers.1.mlp";
    let mut scratch = Writer::default();
    let mut fused = |name: &str, rows: usize, cols: usize, r: &mut ChaCha8Rng| {
        let (mut blocks, mut scales) = (Vec::new(), Vec::new());
        for e in 0..d.e {
            let w = gaussian(r, rows * cols, 0.05);
            let lin = Lin::Mxfp4Quark { input_fp8: false };
            linear(&mut scratch, lin, &format!("x{e}"), &w, rows, cols, r);
            blocks.extend(scratch.tensors[&format!("x{e}.weight")].2.clone());
            scales.extend(scratch.tensors[&format!("x{e}.weight_scale")].2.clone());
        }
        let shape = [d.e, rows, cols / 32, 16];
        wr.bytes(&format!("{name}_blocks"), Dtype::U8, &shape, blocks);
        let shape = [d.e, rows, cols / 32];
        wr.bytes(&format!("{name}_scales"), Dtype::U8, &shape, scales);
    };
    fused(
        &format!("{block}.experts.gate_up_proj"),
        2 * d.i,
        d.h,
        &mut r,
    );
    fused(&format!("{block}.experts.down_proj"), d.h, d.i, &mut r);
    let b13 = gaussian(&mut r, d.e * 2 * d.i, 0.1);
    let b2 = gaussian(&mut r, d.e * d.h, 0.1);
    let name = format!("{block}.experts.gate_up_proj_bias");
    wr.floats(&name, Dtype::BF16, &[d.e, 2 * d.i], &b13);
    let name = format!("{block}.experts.down_proj_bias");
    wr.floats(&name, Dtype::BF16, &[d.e, d.h], &b2);
    router(&mut wr, &format!("{block}.router.weight"), d.e, d.h, &mut r);
    let rb = [0.1, 0.0, -0.1, 0.2];
    wr.floats(&format!("{block}.router.bias"), Dtype::BF16, &[d.e], &rb);
    wr.floats("model.layers.0.mlp.router.x", Dtype::BF16, &[4], &[0.0; 4]);
    model("gpt-oss-mxfp4", c, &wr, block.into(), true)
}

/// Llama 4: fused bf16 `gate_up_proj [E, H, 2I]`, `down_proj [E, I, H]`, a shared expert.
fn llama4() -> Model {
    let d = SMALL;
    let c = json!({"architectures": ["Llama4ForConditionalGeneration"], "text_config": {
        "num_hidden_layers": 2, "num_local_experts": d.e, "num_experts_per_tok": 1,
        "hidden_size": d.h, "intermediate_size": d.i, "interleave_moe_layer_step": 2}});
    let mut r = rng(9);
    let mut wr = Writer::default();
    let block = "language_model.model.layers.1.feed_forward";
    let gu = gaussian(&mut r, d.e * d.h * 2 * d.i, 0.05);
    let dn = gaussian(&mut r, d.e * d.i * d.h, 0.05);
    let name = format!("{block}.experts.gate_up_proj");
    wr.floats(&name, Dtype::BF16, &[d.e, d.h, 2 * d.i], &gu);
    let name = format!("{block}.experts.down_proj");
    wr.floats(&name, Dtype::BF16, &[d.e, d.i, d.h], &dn);
    shared(
        &mut wr,
        Lin::Bf16,
        &format!("{block}.shared_expert"),
        d.i,
        &mut r,
    );
    router(&mut wr, &format!("{block}.router.weight"), d.e, d.h, &mut r);
    model("llama4-fused-bf16", c, &wr, block.into(), false)
}

/// Adds a PEFT LoRA adapter (rank 2, f32) on every routed expert projection, and on the
/// shared expert when the model has one, under `adapter/`.
fn with_adapter(label: &'static str, mut m: Model) -> Model {
    let mut r = rng(31);
    let mut wr = Writer::default();
    let d = SMALL;
    let rank = 2;
    let (names, si) = if m.block.contains("block_sparse_moe") {
        (["w1", "w3", "w2"], None)
    } else {
        (NAMES, Some(32))
    };
    let mut modules: Vec<(String, usize)> = (0..d.e)
        .flat_map(|e| (0..3).map(move |p| (format!("experts.{e}.{}", names[p]), d.i)))
        .collect();
    if let Some(si) = si {
        modules.extend((0..3).map(|p| (format!("shared_expert.{}", NAMES[p]), si)));
    }
    for (k, (module, inter)) in modules.iter().enumerate() {
        let (fan_in, fan_out) = if k % 3 == 2 {
            (*inter, d.h)
        } else {
            (d.h, *inter)
        };
        let base = format!("base_model.model.{}.{module}", m.block);
        let a = gaussian(&mut r, rank * fan_in, 0.1);
        let b = gaussian(&mut r, fan_out * rank, 0.1);
        wr.floats(
            &format!("{base}.lora_A.weight"),
            Dtype::F32,
            &[rank, fan_in],
            &a,
        );
        wr.floats(
            &format!("{base}.lora_B.weight"),
            Dtype::F32,
            &[fan_out, rank],
            &b,
        );
    }
    m.files
        .push(from_writer(&wr, "adapter/adapter_model.safetensors", false));
    m.jsons.push((
        "adapter/adapter_config.json".into(),
        json!({"peft_type": "LORA", "r": rank, "lora_alpha": 4, "use_rslora": false,
            "target_modules": ["w1", "w2", "w3", "gate_proj", "up_proj", "down_proj"]}),
    ));
    m.label = label;
    m.adapter = true;
    m
}
