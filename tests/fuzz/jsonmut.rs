//! JSON edits for `config.json`, `quantization_config`, `hf_quant_config.json`, the shard
//! index and `adapter_config.json`: drop a key, change a value's type, edge numbers,
//! NaN-as-string, unknown or other known enum strings, add a known key, swap architectures.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

const ARCHS: [&str; 9] = [
    "MixtralForCausalLM",
    "Qwen2MoeForCausalLM",
    "Qwen3MoeForCausalLM",
    "DeepseekV2ForCausalLM",
    "DeepseekV3ForCausalLM",
    "Glm4MoeForCausalLM",
    "GptOssForCausalLM",
    "Llama4ForConditionalGeneration",
    "LlamaForCausalLM",
];

/// Strings a config field might hold: enum values of every producer, and nonsense.
const WORDS: [&str; 34] = [
    "NaN",
    "inf",
    "-inf",
    "",
    "bogus",
    "sigmoid",
    "softmax",
    "group",
    "channel",
    "tensor",
    "block",
    "token",
    "tensor_group",
    "fp4",
    "fp6_e3m2",
    "fp6_e2m3",
    "fp8_e4m3",
    "gptq",
    "gptq_v2",
    "greedy",
    "noaux_tc",
    "static",
    "dynamic",
    "local",
    "float",
    "int",
    "pack-quantized",
    "float-quantized",
    "nvfp4-pack-quantized",
    "compressed-tensors",
    "modelopt",
    "quark",
    "mxfp4",
    "weight",
];

/// Keys the loaders read that the seeds may not have.
const KEYS: [&str; 22] = [
    "n_group",
    "topk_group",
    "routed_scaling_factor",
    "swiglu_limit",
    "n_shared_experts",
    "shared_expert_intermediate_size",
    "first_k_dense_replace",
    "norm_topk_prob",
    "scoring_func",
    "topk_method",
    "num_experts_per_tok",
    "experts_per_token",
    "num_local_experts",
    "num_experts",
    "n_routed_experts",
    "moe_intermediate_size",
    "intermediate_size",
    "hidden_size",
    "num_hidden_layers",
    "text_config",
    "quantization_config",
    "model_type",
];

fn edge(r: &mut ChaCha8Rng) -> Value {
    let v: [Value; 30] = [
        json!(0),
        json!(-1),
        json!(1),
        json!(2),
        json!(3),
        json!(4),
        json!(5),
        json!(7),
        json!(8),
        json!(16),
        json!(32),
        json!(33),
        json!(64),
        json!(127),
        json!(128),
        json!(129),
        json!(256),
        json!(1u64 << 31),
        json!(1u64 << 32),
        json!(1u64 << 53),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e308),
        json!(-1e308),
        json!(1e-300),
        json!(0.5),
        json!(-0.5),
        json!(-7.0),
        json!(2.5),
        json!(1e30),
    ];
    v[r.random_range(0..v.len())].clone()
}

fn any(r: &mut ChaCha8Rng) -> Value {
    match r.random_range(0..10) {
        0..5 => edge(r),
        5..8 => json!(WORDS[r.random_range(0..WORDS.len())]),
        8 => json!(r.random_bool(0.5)),
        _ => [
            json!(null),
            json!([]),
            json!({}),
            json!([128, 64]),
            json!([0, 0]),
        ][r.random_range(0..5)]
        .clone(),
    }
}

/// Every node's path (object keys and array indices).
fn paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                at.push(k.clone());
                out.push(at.clone());
                paths(x, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (k, x) in a.iter().enumerate() {
                at.push(k.to_string());
                out.push(at.clone());
                paths(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn node<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| match v {
        Value::Object(o) => o.get_mut(k),
        Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
        _ => None,
    })
}

/// Applies one edit to `v`; returns what was done.
pub fn mutate_json(v: &mut Value, is_config: bool, r: &mut ChaCha8Rng) -> String {
    if is_config && r.random_bool(0.08) {
        let a = ARCHS[r.random_range(0..ARCHS.len())];
        v["architectures"] = json!([a]);
        return format!("architectures = [{a}]");
    }
    if r.random_bool(0.12) {
        // a known key with an edge value, at the root or in text_config
        let key = if is_config {
            KEYS[r.random_range(0..KEYS.len())]
        } else {
            ["r", "lora_alpha", "use_rslora", "group_size", "quant_algo"][r.random_range(0..5)]
        };
        let val = any(r);
        let target = match v.get_mut("text_config") {
            Some(t) if t.is_object() => t,
            _ => v,
        };
        if let Some(o) = target.as_object_mut() {
            o.insert(key.to_string(), val.clone());
        }
        return format!("set {key} = {val}");
    }
    let mut all = Vec::new();
    paths(v, &mut Vec::new(), &mut all);
    if all.is_empty() {
        *v = any(r);
        return format!("whole document = {v}");
    }
    let path = all[r.random_range(0..all.len())].clone();
    let at = path.join(".");
    if r.random_bool(0.2) {
        if let Some(parent) = node(v, &path[..path.len() - 1]) {
            let last = &path[path.len() - 1];
            match parent {
                Value::Object(o) => {
                    o.remove(last);
                }
                Value::Array(a) => {
                    if let Ok(i) = last.parse::<usize>() {
                        if i < a.len() {
                            a.remove(i);
                        }
                    }
                }
                _ => {}
            }
            return format!("delete {at}");
        }
    }
    let Some(n) = node(v, &path) else {
        return format!("no node {at}");
    };
    let new = match n {
        Value::Number(_) if r.random_bool(0.8) => edge(r),
        Value::String(_) if r.random_bool(0.7) => json!(WORDS[r.random_range(0..WORDS.len())]),
        Value::Bool(b) if r.random_bool(0.5) => json!(!*b),
        Value::Array(a) if r.random_bool(0.5) => {
            let mut a = a.clone();
            if r.random_bool(0.5) {
                a.pop();
            } else {
                a.push(edge(r));
            }
            Value::Array(a)
        }
        _ => any(r),
    };
    let d = format!("{at}: {n} -> {new}");
    *n = new;
    d
}
