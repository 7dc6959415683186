//! A loaded layer's forward against a naive MoE written here, and PEFT LoRA adapters.

mod ckpt;

use ckpt::cases::{expect, proj, write, writer, QWEN};
use ckpt::harness::{config, H as HH, I as II};
use ckpt::{experts, gaussian, rng, write_config, Lin, Writer};
use fleetmoe::checkpoint::inspect::{run_model, RunModel};
use fleetmoe::checkpoint::{load_adapter, Checkpoint};
use fleetmoe::moe::{LayerExtras, Lora, MoeLayer, RoutingInput, Target};
use fleetmoe::Error;
use safetensors::Dtype;
use serde_json::{json, Value};
use std::path::Path;

const E: usize = 4;
const H: usize = 64;
const I: usize = 32;
const BLOCK: &str = "model.layers.0.block_sparse_moe";

fn base_model(dir: &Path) -> (ckpt::Expected, Vec<f32>) {
    let mut r = rng(21);
    let mut wr = Writer::default();
    let want = experts(
        &mut wr,
        Lin::Bf16,
        E,
        H,
        I,
        &|e, p| format!("{BLOCK}.experts.{e}.{}", ["w1", "w3", "w2"][p]),
        &mut r,
    );
    let rw = ckpt::gaussian(&mut r, E * H, 0.2);
    wr.floats(&format!("{BLOCK}.gate.weight"), Dtype::F32, &[E, H], &rw);
    wr.write(dir, 1);
    write_config(
        dir,
        &json!({"architectures": ["MixtralForCausalLM"], "num_hidden_layers": 1,
        "num_local_experts": E, "num_experts_per_tok": 2, "hidden_size": H, "intermediate_size": I}),
    );
    (want, rw)
}

/// Softmax over the router logits, top-2, renormalised; SiLU-and-mul experts, in f64.
fn naive_moe(want: &ckpt::Expected, router: &[f32], x: &[f32]) -> Vec<f64> {
    let mut out = vec![0f64; x.len()];
    for (t, xt) in x.chunks(H).enumerate() {
        let logits: Vec<f64> = (0..E)
            .map(|e| {
                (0..H)
                    .map(|k| router[e * H + k] as f64 * xt[k] as f64)
                    .sum()
            })
            .collect();
        let mut ids: Vec<usize> = (0..E).collect();
        ids.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let top = &ids[..2];
        let z: f64 = top.iter().map(|&e| logits[e].exp()).sum();
        for &e in top {
            let w = logits[e].exp() / z;
            let m13 = &want.w13[e * 2 * I * H..(e + 1) * 2 * I * H];
            let m2 = &want.w2[e * H * I..(e + 1) * H * I];
            let h: Vec<f64> = (0..2 * I)
                .map(|n| (0..H).map(|k| m13[n * H + k] as f64 * xt[k] as f64).sum())
                .collect();
            let a: Vec<f64> = (0..I)
                .map(|j| h[j] / (1.0 + (-h[j]).exp()) * h[I + j])
                .collect();
            for n in 0..H {
                out[t * H + n] += w * (0..I).map(|j| m2[n * I + j] as f64 * a[j]).sum::<f64>();
            }
        }
    }
    out
}

#[test]
fn loaded_layer_forward_matches_a_naive_moe() {
    let dir = tempfile::tempdir().unwrap();
    let (want, rw) = base_model(dir.path());
    let l = Checkpoint::open(dir.path()).unwrap().load_layer(0).unwrap();
    let x = ckpt::gaussian(&mut rng(4), 6 * H, 1.0);
    let logits = l.router_logits(&x).unwrap();
    let layer = MoeLayer::new(
        l.config.clone(),
        &l.weights,
        &Target::detect(),
        LayerExtras::default(),
    )
    .unwrap();
    let y = layer
        .forward(&x, RoutingInput::Logits(&logits), None)
        .unwrap();
    let err = fleetmoe::moe::reference::rel_l2(&y, &naive_moe(&want, &rw, &x));
    assert!(err < 1e-2, "rel L2 {err}");
}

/// Writes a PEFT adapter for every expert's w1/w3/w2; returns the A of expert 1's w1.
fn adapter(dir: &Path, r_cfg: usize, r_real: usize, extra_expert: bool) -> Vec<f32> {
    let mut r = rng(31);
    let mut wr = Writer::default();
    let mut a1 = Vec::new();
    let n = if extra_expert { E + 1 } else { E };
    for e in 0..n {
        for (p, (fan_in, fan_out)) in [("w1", (H, I)), ("w3", (H, I)), ("w2", (I, H))] {
            let m = format!("base_model.model.{BLOCK}.experts.{e}.{p}");
            let a = ckpt::gaussian(&mut r, r_real * fan_in, 0.1);
            let b = ckpt::gaussian(&mut r, fan_out * r_real, 0.1);
            if e == 1 && p == "w1" {
                a1 = a.clone();
            }
            wr.floats(
                &format!("{m}.lora_A.weight"),
                Dtype::F32,
                &[r_real, fan_in],
                &a,
            );
            wr.floats(
                &format!("{m}.lora_B.weight"),
                Dtype::F32,
                &[fan_out, r_real],
                &b,
            );
        }
    }
    wr.write(dir, 1);
    std::fs::rename(
        dir.join("model.safetensors"),
        dir.join("adapter_model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        dir.join("adapter_config.json"),
        json!({"peft_type": "LORA", "r": r_cfg, "lora_alpha": 16, "target_modules": ["w1", "w2", "w3"]}).to_string(),
    )
    .unwrap();
    a1
}

#[test]
fn peft_adapter_loads_into_slots_and_changes_the_output() {
    let dir = tempfile::tempdir().unwrap();
    base_model(dir.path());
    let ad = tempfile::tempdir().unwrap();
    let a1 = adapter(ad.path(), 4, 4, false);
    let ck = Checkpoint::open(dir.path()).unwrap();
    let mut l = ck.load_layer(0).unwrap();
    let lora = load_adapter(ad.path(), &ck, &l).unwrap();
    assert_eq!((lora.rank, lora.scaling), (4, 4.0));
    assert_eq!(lora.experts[1].gate.as_ref().unwrap().a, a1);
    assert!(lora
        .experts
        .iter()
        .all(|x| x.up.is_some() && x.down.is_some()));
    l.config.lora = true;
    let extras = LayerExtras {
        lora: Some(Lora {
            adapters: vec![lora],
        }),
        ..LayerExtras::default()
    };
    let layer = MoeLayer::new(l.config.clone(), &l.weights, &Target::detect(), extras).unwrap();
    let x = ckpt::gaussian(&mut rng(5), 3 * H, 1.0);
    let logits = l.router_logits(&x).unwrap();
    let none = layer
        .forward(&x, RoutingInput::Logits(&logits), Some(&[None, None, None]))
        .unwrap();
    let with = layer
        .forward(
            &x,
            RoutingInput::Logits(&logits),
            Some(&[None, Some(0), None]),
        )
        .unwrap();
    assert_eq!(none[..H], with[..H]);
    assert_ne!(none[H..2 * H], with[H..2 * H]);
    let (report, ok) = run_model(&RunModel {
        dir: dir.path().into(),
        layer: None,
        loras: vec![ad.path().into()],
        tokens: 4,
        seed: 0,
        backend: None,
        reps: 0,
    })
    .unwrap();
    assert!(ok && report.contains("lora"), "{report}");
}

#[test]
fn adapters_that_do_not_fit_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    base_model(dir.path());
    let ck = Checkpoint::open(dir.path()).unwrap();
    let l = ck.load_layer(0).unwrap();
    // config says r = 8, tensors have rank 4
    let ad = tempfile::tempdir().unwrap();
    adapter(ad.path(), 8, 4, false);
    match load_adapter(ad.path(), &ck, &l) {
        Err(Error::Checkpoint { tensor, file, .. }) => {
            assert!(
                tensor.contains("lora_A") && file.ends_with("adapter_model.safetensors"),
                "{tensor} {file}"
            )
        }
        other => panic!("expected a rank error, got {other:?}"),
    }
    // an expert the layer does not have
    let ad = tempfile::tempdir().unwrap();
    adapter(ad.path(), 4, 4, true);
    match load_adapter(ad.path(), &ck, &l) {
        Err(Error::Checkpoint { tensor, .. }) => {
            assert!(tensor.contains(&format!("experts.{E}.")), "{tensor}")
        }
        other => panic!("expected a target error, got {other:?}"),
    }
}

#[test]
fn adapter_on_the_shared_expert_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(41);
    let mut wr = Writer::default();
    let block = "model.layers.0.mlp";
    let names = ["gate_proj", "up_proj", "down_proj"];
    experts(
        &mut wr,
        Lin::Bf16,
        E,
        H,
        I,
        &|e, p| format!("{block}.experts.{e}.{}", names[p]),
        &mut r,
    );
    experts(
        &mut wr,
        Lin::Bf16,
        1,
        H,
        48,
        &|_, p| format!("{block}.shared_expert.{}", names[p]),
        &mut r,
    );
    wr.floats(
        &format!("{block}.shared_expert_gate.weight"),
        Dtype::BF16,
        &[1, H],
        &ckpt::gaussian(&mut r, H, 0.1),
    );
    wr.floats(
        &format!("{block}.gate.weight"),
        Dtype::BF16,
        &[E, H],
        &ckpt::gaussian(&mut r, E * H, 0.2),
    );
    wr.write(dir.path(), 1);
    write_config(
        dir.path(),
        &json!({"architectures": ["Qwen2MoeForCausalLM"], "num_hidden_layers": 1,
        "num_experts": E, "num_experts_per_tok": 2, "hidden_size": H, "moe_intermediate_size": I,
        "shared_expert_intermediate_size": 48}),
    );
    let ad = tempfile::tempdir().unwrap();
    let mut aw = Writer::default();
    let m = format!("base_model.model.{block}.shared_expert.gate_proj");
    aw.floats(
        &format!("{m}.lora_A.weight"),
        Dtype::F32,
        &[2, H],
        &ckpt::gaussian(&mut r, 2 * H, 0.1),
    );
    aw.floats(
        &format!("{m}.lora_B.weight"),
        Dtype::F32,
        &[48, 2],
        &ckpt::gaussian(&mut r, 96, 0.1),
    );
    aw.write(ad.path(), 1);
    std::fs::rename(
        ad.path().join("model.safetensors"),
        ad.path().join("adapter_model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        ad.path().join("adapter_config.json"),
        json!({"r": 2, "lora_alpha": 2, "use_rslora": true}).to_string(),
    )
    .unwrap();
    let ck = Checkpoint::open(dir.path()).unwrap();
    let l = ck.load_layer(0).unwrap();
    let lora = load_adapter(ad.path(), &ck, &l).unwrap();
    assert!(lora
        .experts
        .iter()
        .all(|x| x.gate.is_none() && x.up.is_none() && x.down.is_none()));
    let shared = lora.shared.as_ref().unwrap();
    assert!(shared.gate.is_some() && shared.up.is_none());
    assert!(
        (lora.scaling - 2.0 / 2f32.sqrt()).abs() < 1e-6,
        "rslora scaling {}",
        lora.scaling
    );
    let (report, ok) = run_model(&RunModel {
        dir: dir.path().into(),
        layer: Some(0),
        loras: vec![ad.path().into()],
        tokens: 3,
        seed: 2,
        backend: None,
        reps: 0,
    })
    .unwrap();
    assert!(ok, "{report}");
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
        &[4, HH],
        &gaussian(&mut r, 4 * HH, 0.1),
    );
    let mut b = gaussian(&mut r, II * 4, 0.1);
    if let Some(v) = poison {
        b[7] = v;
    }
    aw.floats(&format!("{m}.lora_B.weight"), Dtype::F32, &[II, 4], &b);
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
            json!({"r": 4, "rank_pattern": {"(?!down)gate_.*": 2}}),
            "rank_pattern.(?!down)gate_.*",
            vec![
                "'(?!down)gate_.*'",
                "not a regular expression fleetmoe can match",
            ],
        ),
        (
            json!({"r": 4, "rank_pattern": {"gate_proj": 0}}),
            "rank_pattern.gate_proj",
            vec!["expected a positive rank"],
        ),
        (
            json!({"r": 4, "alpha_pattern": {"experts.0.gate_proj": -1}}),
            "alpha_pattern.experts.0.gate_proj",
            vec!["-1", "expected a positive number"],
        ),
        (
            json!({"r": 4, "rank_pattern": ["gate_proj"]}),
            "rank_pattern",
            vec!["is not an object"],
        ),
        (
            json!({"r": 4, "target_parameters": ["self_attn.q_proj.weight"]}),
            "target_parameters",
            vec!["'self_attn.q_proj.weight'", "gate_up_proj or down_proj"],
        ),
        (
            json!({"r": 4, "target_parameters": ["mlp.experts.gate_up_proj_bias"]}),
            "target_parameters",
            vec!["'mlp.experts.gate_up_proj_bias'"],
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
