//! PEFT LoRA adapters on transformers 5's fused expert parameters (`target_parameters`,
//! PEFT's `ParamWrapper`), and `rank_pattern` / `alpha_pattern`. Each adapter is written
//! here in PEFT's names and shapes (`lora_A` `[r·E, in]`, `lora_B` `[out, r·E]`; with both
//! parameters targeted gate_up_proj's pair under `experts.base_layer`), and every loaded
//! per-expert delta is checked against one computed here from PEFT's reshape
//! (A → `[E, r, in]`, B → `[out, r, E]`, `ΔW[e] = scaling · Σ_k B[:, k, e] ⊗ A[e, k, :]`).

mod ckpt;

use ckpt::{experts, gaussian, rng, router, write_config, Lin, Writer};
use fleetmoe::checkpoint::inspect::{run_model, RunModel};
use fleetmoe::checkpoint::{load_adapter, Checkpoint};
use fleetmoe::moe::{LoraAdapter, LoraProj};
use fleetmoe::Error;
use rand_chacha::ChaCha8Rng;
use safetensors::Dtype;
use serde_json::{json, Value};
use std::path::Path;

const E: usize = 4;
const H: usize = 64;
/// I ≠ H and 2I ≠ H, so a pair read with in and out swapped has other shapes.
const I: usize = 48;
/// The shared expert's intermediate size (Qwen2-MoE).
const SI: usize = 40;
const L: &str = "model.layers.0";

/// The base checkpoints the adapters are applied to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Base {
    /// transformers 5's `mlp.experts.gate_up_proj` `[E, 2I, H]`, `down_proj` `[E, H, I]`.
    Qwen3Fused,
    /// `mlp.experts.N.gate_proj / up_proj / down_proj`.
    Qwen3PerExpert,
    /// transformers 4's `block_sparse_moe.experts.N.w1 / w3 / w2` (transformers 5 holds
    /// the block as `mlp`, which is where the adapter's names put it).
    MixtralPerExpert,
    /// `mlp.experts.gate_up_proj` `[E, H, 2I]` (gate / up interleaved), `down_proj`
    /// `[E, I, H]`, biases, router bias.
    GptOss,
    /// Qwen2-MoE, fused, with a shared expert and its gate.
    Qwen2FusedShared,
}

fn bf16s(wr: &mut Writer, name: &str, shape: &[usize], r: &mut ChaCha8Rng) {
    let n = shape.iter().product();
    wr.floats(name, Dtype::BF16, shape, &gaussian(r, n, 0.05));
}

fn base_model(base: Base) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(61);
    let mut wr = Writer::default();
    let mlp = format!("{L}.mlp");
    let arch = match base {
        Base::Qwen3Fused | Base::Qwen2FusedShared => {
            bf16s(
                &mut wr,
                &format!("{mlp}.experts.gate_up_proj"),
                &[E, 2 * I, H],
                &mut r,
            );
            bf16s(
                &mut wr,
                &format!("{mlp}.experts.down_proj"),
                &[E, H, I],
                &mut r,
            );
            router(&mut wr, &format!("{mlp}.gate.weight"), E, H, &mut r);
            if base == Base::Qwen2FusedShared {
                for (p, shape) in [
                    ("gate_proj", [SI, H]),
                    ("up_proj", [SI, H]),
                    ("down_proj", [H, SI]),
                ] {
                    bf16s(
                        &mut wr,
                        &format!("{mlp}.shared_expert.{p}.weight"),
                        &shape,
                        &mut r,
                    );
                }
                bf16s(
                    &mut wr,
                    &format!("{mlp}.shared_expert_gate.weight"),
                    &[1, H],
                    &mut r,
                );
                "Qwen2MoeForCausalLM"
            } else {
                "Qwen3MoeForCausalLM"
            }
        }
        Base::Qwen3PerExpert => {
            let names = ["gate_proj", "up_proj", "down_proj"];
            experts(
                &mut wr,
                Lin::Bf16,
                E,
                H,
                I,
                &|e, p| format!("{mlp}.experts.{e}.{}", names[p]),
                &mut r,
            );
            router(&mut wr, &format!("{mlp}.gate.weight"), E, H, &mut r);
            "Qwen3MoeForCausalLM"
        }
        Base::MixtralPerExpert => {
            let block = format!("{L}.block_sparse_moe");
            experts(
                &mut wr,
                Lin::Bf16,
                E,
                H,
                I,
                &|e, p| format!("{block}.experts.{e}.{}", ["w1", "w3", "w2"][p]),
                &mut r,
            );
            router(&mut wr, &format!("{block}.gate.weight"), E, H, &mut r);
            "MixtralForCausalLM"
        }
        Base::GptOss => {
            bf16s(
                &mut wr,
                &format!("{mlp}.experts.gate_up_proj"),
                &[E, H, 2 * I],
                &mut r,
            );
            bf16s(
                &mut wr,
                &format!("{mlp}.experts.gate_up_proj_bias"),
                &[E, 2 * I],
                &mut r,
            );
            bf16s(
                &mut wr,
                &format!("{mlp}.experts.down_proj"),
                &[E, I, H],
                &mut r,
            );
            bf16s(
                &mut wr,
                &format!("{mlp}.experts.down_proj_bias"),
                &[E, H],
                &mut r,
            );
            router(&mut wr, &format!("{mlp}.router.weight"), E, H, &mut r);
            bf16s(&mut wr, &format!("{mlp}.router.bias"), &[E], &mut r);
            "GptOssForCausalLM"
        }
    };
    wr.write(dir.path(), 1);
    let mut c = json!({"architectures": [arch], "num_hidden_layers": 1,
        "num_local_experts": E, "num_experts": E, "num_experts_per_tok": 2, "hidden_size": H,
        "intermediate_size": I, "moe_intermediate_size": I});
    if base == Base::Qwen2FusedShared {
        c["shared_expert_intermediate_size"] = json!(SI);
    }
    write_config(dir.path(), &c);
    dir
}

/// One LoRA pair as PEFT saves it, values fresh and never zero.
struct Pair {
    /// `[rows, in]`.
    a: Vec<f32>,
    /// `[out, cols]`.
    b: Vec<f32>,
    a_shape: [usize; 2],
    b_shape: [usize; 2],
}

/// A `ParamWrapper` pair of rank `r` per expert: A `[r·E, in]`, B `[out, r·E]`.
fn fused_pair(r: &mut ChaCha8Rng, rank: usize, fan_in: usize, fan_out: usize) -> Pair {
    pair(r, [rank * E, fan_in], [fan_out, rank * E])
}

fn pair(r: &mut ChaCha8Rng, a_shape: [usize; 2], b_shape: [usize; 2]) -> Pair {
    Pair {
        a: gaussian(r, a_shape[0] * a_shape[1], 0.1),
        b: gaussian(r, b_shape[0] * b_shape[1], 0.1),
        a_shape,
        b_shape,
    }
}

/// Writes `adapter_model.safetensors` (`module` → pair, under `base_model.model.`) and
/// `adapter_config.json`.
fn write_adapter(pairs: &[(String, &Pair)], cfg: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut wr = Writer::default();
    for (m, p) in pairs {
        let m = format!("base_model.model.{m}");
        wr.floats(&format!("{m}.lora_A.weight"), Dtype::F32, &p.a_shape, &p.a);
        wr.floats(&format!("{m}.lora_B.weight"), Dtype::F32, &p.b_shape, &p.b);
    }
    wr.write(dir.path(), 1);
    std::fs::rename(
        dir.path().join("model.safetensors"),
        dir.path().join("adapter_model.safetensors"),
    )
    .unwrap();
    std::fs::write(dir.path().join("adapter_config.json"), cfg.to_string()).unwrap();
    dir
}

fn load(base: &Path, adapter: &Path) -> fleetmoe::Result<LoraAdapter> {
    let ck = Checkpoint::open(base).unwrap();
    let l = ck.load_layer(0).unwrap();
    load_adapter(adapter, &ck, &l)
}

/// Expert `e`'s delta `[out, in]` of a fused pair, from PEFT's reshape: A `[r·E, in]` →
/// `[E, r, in]`, B `[out, r·E]` → `[out, r, E]`.
fn fused_delta(p: &Pair, rank: usize, e: usize, scaling: f64) -> Vec<f64> {
    let ([_, fan_in], [fan_out, _]) = (p.a_shape, p.b_shape);
    let a3 = |ex: usize, k: usize, c: usize| p.a[(ex * rank + k) * fan_in + c] as f64;
    let b3 = |o: usize, k: usize, ex: usize| p.b[(o * rank + k) * E + ex] as f64;
    let mut d = vec![0f64; fan_out * fan_in];
    for o in 0..fan_out {
        for c in 0..fan_in {
            d[o * fan_in + c] = scaling * (0..rank).map(|k| b3(o, k, e) * a3(e, k, c)).sum::<f64>();
        }
    }
    d
}

/// A linear module's delta `[out, in]`: `scaling · B A`.
fn module_delta(p: &Pair, scaling: f64) -> Vec<f64> {
    let ([rank, fan_in], [fan_out, _]) = (p.a_shape, p.b_shape);
    let mut d = vec![0f64; fan_out * fan_in];
    for o in 0..fan_out {
        for c in 0..fan_in {
            d[o * fan_in + c] = scaling
                * (0..rank)
                    .map(|k| p.b[o * rank + k] as f64 * p.a[k * fan_in + c] as f64)
                    .sum::<f64>();
        }
    }
    d
}

/// Rows `rows` of a `[_, cols]` matrix.
fn rows(m: &[f64], cols: usize, rows: impl Iterator<Item = usize>) -> Vec<f64> {
    rows.flat_map(|r| m[r * cols..(r + 1) * cols].iter().copied())
        .collect()
}

/// The loaded projection's delta `adapter.scaling · B A` `[out, in]`.
fn loaded(ad: &LoraAdapter, p: &Option<LoraProj>, fan_in: usize, what: &str) -> Vec<f64> {
    let p = p
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no LoRA loaded"));
    let r = ad.rank;
    assert_eq!(p.a.len(), r * fan_in, "{what}: A");
    let fan_out = p.b.len() / r;
    let mut d = vec![0f64; fan_out * fan_in];
    for o in 0..fan_out {
        for c in 0..fan_in {
            d[o * fan_in + c] = ad.scaling as f64
                * (0..r)
                    .map(|k| p.b[o * r + k] as f64 * p.a[k * fan_in + c] as f64)
                    .sum::<f64>();
        }
    }
    d
}

#[track_caller]
fn close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: sizes");
    let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
    assert!(scale > 0.0, "{what}: a zero delta tests nothing");
    let err = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()))
        / scale;
    assert!(err <= 1e-6, "{what}: relative error {err}");
}

/// Checks every expert's gate / up (from `gu`) and down (from `dn`) against PEFT's reshape;
/// `interleaved` is GPT-OSS's gate / up order.
fn check_fused(
    ad: &LoraAdapter,
    gu: Option<(&Pair, usize, f64)>,
    dn: Option<(&Pair, usize, f64)>,
    interleaved: bool,
) {
    assert_eq!(ad.experts.len(), E);
    for (e, x) in ad.experts.iter().enumerate() {
        match gu {
            Some((p, rank, s)) => {
                let d = fused_delta(p, rank, e, s);
                let (g, u) = if interleaved {
                    (
                        rows(&d, H, (0..I).map(|j| 2 * j)),
                        rows(&d, H, (0..I).map(|j| 2 * j + 1)),
                    )
                } else {
                    (rows(&d, H, 0..I), rows(&d, H, I..2 * I))
                };
                close(
                    &loaded(ad, &x.gate, H, "gate"),
                    &g,
                    &format!("expert {e} gate"),
                );
                close(&loaded(ad, &x.up, H, "up"), &u, &format!("expert {e} up"));
            }
            None => assert!(x.gate.is_none() && x.up.is_none(), "expert {e}"),
        }
        match dn {
            Some((p, rank, s)) => close(
                &loaded(ad, &x.down, I, "down"),
                &fused_delta(p, rank, e, s),
                &format!("expert {e} down"),
            ),
            None => assert!(x.down.is_none(), "expert {e}"),
        }
    }
}

fn runs_with(base: &Path, adapter: &Path) {
    let (report, ok) = run_model(&RunModel {
        dir: base.into(),
        layer: None,
        loras: vec![adapter.into()],
        tokens: 5,
        seed: 1,
        backend: None,
        reps: 0,
    })
    .unwrap();
    assert!(ok && report.contains("lora"), "{report}");
}

/// Both fused parameters targeted (rank 3, alpha 16): the inner (gate_up_proj) wrapper's
/// pair under `experts.base_layer`, the outer (down_proj) under `experts`. The same adapter
/// applies to the fused checkpoint, to a per-expert one, and to transformers 4's Mixtral
/// (`block_sparse_moe`, which transformers 5 holds as `mlp`).
#[test]
fn both_fused_parameters_on_every_layout() {
    let mut r = rng(71);
    let gu = fused_pair(&mut r, 3, H, 2 * I);
    let dn = fused_pair(&mut r, 3, I, H);
    let cfg = json!({"peft_type": "LORA", "r": 3, "lora_alpha": 16, "lora_dropout": 0.05,
        "target_modules": null, "peft_version": "0.19.1",
        "target_parameters": ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]});
    let ad = write_adapter(
        &[
            (format!("{L}.mlp.experts.base_layer"), &gu),
            (format!("{L}.mlp.experts"), &dn),
        ],
        &cfg,
    );
    for base in [
        Base::Qwen3Fused,
        Base::Qwen3PerExpert,
        Base::MixtralPerExpert,
    ] {
        let dir = base_model(base);
        let lora = load(dir.path(), ad.path()).unwrap_or_else(|e| panic!("{base:?}: {e}"));
        assert_eq!(lora.rank, 3, "{base:?}");
        assert!((lora.scaling - 16.0 / 3.0).abs() < 1e-6, "{base:?}");
        assert!(lora.shared.is_none());
        let s = 16.0 / 3.0;
        check_fused(&lora, Some((&gu, 3, s)), Some((&dn, 3, s)), false);
        if base == Base::Qwen3Fused {
            runs_with(dir.path(), ad.path());
        }
    }
}

/// Only down_proj targeted (a bare parameter name matches by suffix): its pair is
/// `experts.lora_*`, with no `base_layer`; gate and up have no LoRA.
#[test]
fn down_proj_alone() {
    let dir = base_model(Base::Qwen3Fused);
    let mut r = rng(72);
    let dn = fused_pair(&mut r, 2, I, H);
    let cfg = json!({"r": 2, "lora_alpha": 5, "target_parameters": ["down_proj"]});
    let ad = write_adapter(&[(format!("{L}.mlp.experts"), &dn)], &cfg);
    let lora = load(dir.path(), ad.path()).unwrap();
    assert_eq!((lora.rank, lora.scaling), (2, 2.5));
    check_fused(&lora, None, Some((&dn, 2, 2.5)), false);
    runs_with(dir.path(), ad.path());
}

/// GPT-OSS stores gate_up_proj `[E, H, 2I]` used as `x @ W` (`is_transposed`): PEFT reads
/// it as `[E, in, out]`, so in is H and out 2I as for the others, and out row j is gate row
/// j/2 when even, up row j/2 when odd. PEFT 0.18 read these modules the same way.
#[test]
fn gpt_oss_interleaved_gate_up() {
    let dir = base_model(Base::GptOss);
    let mut r = rng(73);
    let gu = fused_pair(&mut r, 4, H, 2 * I);
    let dn = fused_pair(&mut r, 4, I, H);
    let cfg = json!({"r": 4, "lora_alpha": 4, "use_rslora": true, "peft_version": "0.18.0",
        "target_parameters": ["gate_up_proj", "down_proj"]});
    let ad = write_adapter(
        &[
            (format!("{L}.mlp.experts.base_layer"), &gu),
            (format!("{L}.mlp.experts"), &dn),
        ],
        &cfg,
    );
    let lora = load(dir.path(), ad.path()).unwrap();
    assert_eq!((lora.rank, lora.scaling), (4, 2.0));
    check_fused(&lora, Some((&gu, 4, 2.0)), Some((&dn, 4, 2.0)), true);
    runs_with(dir.path(), ad.path());
}

/// `rank_pattern` / `alpha_pattern` with rsLoRA over fused parameters and the shared
/// expert's linear modules: the first matching key in the file's order wins (here a key
/// that sorts later comes first), alpha does not follow the rank's key, and each
/// projection keeps its own rank and scaling through the adapter's common ones.
#[test]
fn rank_and_alpha_patterns_with_rslora() {
    let dir = base_model(Base::Qwen2FusedShared);
    let mut r = rng(74);
    // name → (rank, alpha) as PEFT's get_pattern_key gives them:
    // experts.gate_up_proj: r 4 (no rank key), alpha 3; experts.down_proj: r 2 (the first
    // key, though "down_proj" sorts before it), alpha 8; shared gate_proj: r 4, alpha 8;
    // shared up_proj: r 6, alpha 10; shared down_proj: r 5 ("down_proj"), alpha 8.
    let gu = fused_pair(&mut r, 4, H, 2 * I);
    let dn = fused_pair(&mut r, 2, I, H);
    let sg = pair(&mut r, [4, H], [SI, 4]);
    let su = pair(&mut r, [6, H], [SI, 6]);
    let sd = pair(&mut r, [5, SI], [H, 5]);
    let text = r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_rslora": true,
        "target_modules": ["gate_proj", "up_proj", "down_proj"],
        "target_parameters": ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
        "rank_pattern": {"layers.0.mlp.experts.down_proj": 2, "down_proj": 5,
                         "shared_expert.up_proj": 6, "layers.1.mlp.experts.gate_up_proj": 7},
        "alpha_pattern": {"experts.gate_up_proj": 3, "shared_expert.up_proj": 10}}"#;
    let cfg: Value = serde_json::from_str(text).unwrap();
    let sh = format!("{L}.mlp.shared_expert");
    let ad = write_adapter(
        &[
            (format!("{L}.mlp.experts.base_layer"), &gu),
            (format!("{L}.mlp.experts"), &dn),
            (format!("{sh}.gate_proj"), &sg),
            (format!("{sh}.up_proj"), &su),
            (format!("{sh}.down_proj"), &sd),
        ],
        &cfg,
    );
    // serde_json's Value sorts keys: write the file's own text, whose order PEFT follows.
    std::fs::write(ad.path().join("adapter_config.json"), text).unwrap();
    let lora = load(dir.path(), ad.path()).unwrap();
    let rs = |alpha: f64, rank: usize| alpha / (rank as f64).sqrt();
    assert_eq!(lora.rank, 6, "the largest rank");
    assert!(
        (lora.scaling as f64 - rs(8.0, 2)).abs() < 1e-6,
        "the largest scaling: {}",
        lora.scaling
    );
    check_fused(
        &lora,
        Some((&gu, 4, rs(3.0, 4))),
        Some((&dn, 2, rs(8.0, 2))),
        false,
    );
    let shared = lora.shared.as_ref().expect("shared expert LoRA");
    close(
        &loaded(&lora, &shared.gate, H, "sg"),
        &module_delta(&sg, rs(8.0, 4)),
        "shared gate",
    );
    close(
        &loaded(&lora, &shared.up, H, "su"),
        &module_delta(&su, rs(10.0, 6)),
        "shared up",
    );
    close(
        &loaded(&lora, &shared.down, SI, "sd"),
        &module_delta(&sd, rs(8.0, 5)),
        "shared down",
    );
    runs_with(dir.path(), ad.path());
}

/// A per-module `rank_pattern` key (plain dotted name) gives one expert's projection its
/// own rank; others keep `r`.
#[test]
fn rank_pattern_on_per_expert_modules() {
    let dir = base_model(Base::Qwen3PerExpert);
    let mut r = rng(75);
    let g0 = pair(&mut r, [2, H], [I, 2]);
    let g1 = pair(&mut r, [4, H], [I, 4]);
    let cfg = json!({"r": 4, "lora_alpha": 8, "rank_pattern": {"experts.0.gate_proj": 2}});
    let ad = write_adapter(
        &[
            (format!("{L}.mlp.experts.0.gate_proj"), &g0),
            (format!("{L}.mlp.experts.1.gate_proj"), &g1),
        ],
        &cfg,
    );
    let lora = load(dir.path(), ad.path()).unwrap();
    assert_eq!((lora.rank, lora.scaling), (4, 4.0));
    close(
        &loaded(&lora, &lora.experts[0].gate, H, "g0"),
        &module_delta(&g0, 4.0),
        "expert 0",
    );
    close(
        &loaded(&lora, &lora.experts[1].gate, H, "g1"),
        &module_delta(&g1, 2.0),
        "expert 1",
    );
    assert!(lora.experts[2].gate.is_none() && lora.experts[0].up.is_none());
}

#[track_caller]
fn refused(r: fleetmoe::Result<LoraAdapter>, file: &str, what: &str, says: &[&str]) {
    match r {
        Err(Error::Checkpoint {
            file: f,
            tensor,
            why,
        }) => {
            assert!(f.ends_with(file), "file {f}, expected {file} ({why})");
            assert_eq!(tensor, what, "{why}");
            for s in says {
                assert!(why.contains(s), "'{why}' should say '{s}'");
            }
        }
        other => panic!("expected an error naming {what}, got {other:?}"),
    }
}

#[test]
fn fused_adapters_that_do_not_fit_are_named() {
    let dir = base_model(Base::Qwen3Fused);
    let st = "adapter_model.safetensors";
    let a_name = format!("base_model.model.{L}.mlp.experts.lora_A.weight");
    let b_name = format!("base_model.model.{L}.mlp.experts.lora_B.weight");
    let gate_up = json!({"r": 4, "target_parameters": ["mlp.experts.gate_up_proj"]});
    let mut r = rng(76);
    let one = |p: &Pair, cfg: &Value| {
        let ad = write_adapter(&[(format!("{L}.mlp.experts"), p)], cfg);
        load(dir.path(), ad.path())
    };
    // PEFT before 0.19.1 read [E, 2I, H] as in 2I, out H.
    refused(
        one(&fused_pair(&mut r, 4, 2 * I, H), &gate_up),
        st,
        &a_name,
        &[
            "shape [16, 96]",
            "expected [r·E = 4·4 = 16, in = 64]",
            "before 0.19.1",
            "gate_up_proj",
        ],
    );
    // r·E rows that do not divide by E
    refused(
        one(&pair(&mut r, [4 * E + 2, H], [2 * I, 4 * E + 2]), &gate_up),
        st,
        &a_name,
        &["shape [18, 64]", "18 rows do not divide into the 4 experts"],
    );
    // a rank other than the config's
    refused(
        one(
            &fused_pair(&mut r, 4, H, 2 * I),
            &json!({"r": 2, "target_parameters": ["gate_up_proj"]}),
        ),
        st,
        &a_name,
        &["shape [16, 64]", "expected [r·E = 2·4 = 8"],
    );
    // B of the wrong width
    refused(
        one(&pair(&mut r, [4 * E, H], [2 * I, 4 * E + 1]), &gate_up),
        st,
        &b_name,
        &["shape [96, 17]", "expected [out = 96, r·E = 4·4 = 16]"],
    );
    // PEFT 0.19.0 swapped the other way round
    refused(
        one(
            &fused_pair(&mut r, 4, H, 2 * I),
            &json!({"r": 4, "peft_version": "0.19.0", "target_parameters": ["gate_up_proj"]}),
        ),
        "adapter_config.json",
        "peft_version",
        &["0.19.0", "in and out swapped"],
    );
    // both parameters' pairs, but the config targets down_proj only: the base_layer pair
    // is left over
    let both = write_adapter(
        &[
            (
                format!("{L}.mlp.experts.base_layer"),
                &fused_pair(&mut r, 4, H, 2 * I),
            ),
            (format!("{L}.mlp.experts"), &fused_pair(&mut r, 4, I, H)),
        ],
        &json!({"r": 4, "target_parameters": ["mlp.experts.down_proj"]}),
    );
    refused(
        load(dir.path(), both.path()),
        st,
        &format!("base_model.model.{L}.mlp.experts.base_layer.lora_A.weight"),
        &["does not account for", "experts.base_layer"],
    );
    // fused pairs without target_parameters are not placed either
    refused(
        one(&fused_pair(&mut r, 4, H, 2 * I), &json!({"r": 4})),
        st,
        &a_name,
        &["does not account for"],
    );
}

/// A per-expert module and the fused parameter both adapting expert 0's gate.
#[test]
fn one_projection_adapted_twice_is_named() {
    let dir = base_model(Base::Qwen3PerExpert);
    let mut r = rng(77);
    let ad = write_adapter(
        &[
            (
                format!("{L}.mlp.experts.0.gate_proj"),
                &pair(&mut r, [4, H], [I, 4]),
            ),
            (format!("{L}.mlp.experts"), &fused_pair(&mut r, 4, H, 2 * I)),
        ],
        &json!({"r": 4, "target_parameters": ["gate_up_proj"]}),
    );
    refused(
        load(dir.path(), ad.path()),
        "adapter_model.safetensors",
        &format!("base_model.model.{L}.mlp.experts.lora_A.weight"),
        &["gate_proj", "experts.0.gate_proj.lora_A.weight"],
    );
}
