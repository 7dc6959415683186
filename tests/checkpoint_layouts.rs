//! Expert layouts as today's tools write them (issue 16): transformers 5's fused experts
//! (`experts.gate_up_proj` `[E, 2I, H]`, `experts.down_proj` `[E, H, I]`, used as
//! `F.linear`, gate first), Mixtral under transformers 5's `mlp` block, and llm-compressor's
//! linearised Mixtral (`experts.N.gate_proj / up_proj / down_proj`). Each is written by the
//! test in the producer's names, dtypes and shapes and must load to the same weights as the
//! per-expert original, and `inspect` must say which layout it found.

mod ckpt;

use ckpt::cases;
use ckpt::harness::{check, config, E, H, I};
use ckpt::{experts, router, write_config, Expected, Lin, Writer};
use fleetmoe::checkpoint::inspect::inspect;
use fleetmoe::checkpoint::{Checkpoint, ExpertLayout};
use safetensors::Dtype;
use serde_json::json;

/// Writes layer 1 of `arch` with fused bf16 experts under `block` (plus the router and a
/// dense layer 0), returns the directory and what the loader must produce.
fn fused_checkpoint(arch: &str, block: &str, seed: u64) -> (tempfile::TempDir, Expected) {
    let dir = tempfile::tempdir().unwrap();
    let mut r = ckpt::rng(seed);
    let mut wr = Writer::default();
    let gu = ckpt::gaussian(&mut r, E * 2 * I * H, 0.05);
    let dn = ckpt::gaussian(&mut r, E * H * I, 0.05);
    let block = format!("model.layers.1.{block}");
    wr.floats(
        &format!("{block}.experts.gate_up_proj"),
        Dtype::BF16,
        &[E, 2 * I, H],
        &gu,
    );
    wr.floats(
        &format!("{block}.experts.down_proj"),
        Dtype::BF16,
        &[E, H, I],
        &dn,
    );
    router(&mut wr, &format!("{block}.gate.weight"), E, H, &mut r);
    wr.floats(
        "model.layers.0.mlp.down_proj.weight",
        Dtype::BF16,
        &[H, 8],
        &[0.0; H * 8],
    );
    wr.write(dir.path(), 1);
    write_config(dir.path(), &config(arch, None));
    // [E, 2I, H] with gate rows first is exactly w13 (gate rows, then up rows).
    let bf = |v: &[f32]| -> Vec<f32> {
        v.iter()
            .map(|&x| half::bf16::from_f32(x).to_f32())
            .collect()
    };
    (
        dir,
        Expected {
            w13: bf(&gu),
            w2: bf(&dn),
        },
    )
}

#[test]
fn fused_bf16_experts_as_transformers_5_holds_them() {
    for (arch, block) in [
        ("MixtralForCausalLM", "mlp"),
        ("Qwen3MoeForCausalLM", "mlp"),
        ("Qwen2MoeForCausalLM", "mlp"),
        ("Glm4MoeForCausalLM", "mlp"),
    ] {
        let (dir, want) = fused_checkpoint(arch, block, 21);
        check(dir.path(), 1, &want, "bf16");
        let ck = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(
            ck.experts.layout,
            ExpertLayout::Fused { transposed: false },
            "{arch}"
        );
        let report = inspect(dir.path()).unwrap().report;
        assert!(
            report.contains("fused: mlp.experts.gate_up_proj [E, 2I, H]"),
            "{arch}: {report}"
        );
    }
}

#[test]
fn a_fused_projection_of_the_wrong_shape_is_named() {
    // [E, H, 2I] (the GPT-OSS / Llama 4 orientation) where Qwen3-MoE stores [E, 2I, H]:
    // with H ≠ 2I the shape check names the tensor.
    let dir = tempfile::tempdir().unwrap();
    let mut r = ckpt::rng(3);
    let mut wr = Writer::default();
    let block = "model.layers.1.mlp";
    let mut c = config("Qwen3MoeForCausalLM", None);
    c["moe_intermediate_size"] = json!(32);
    let (i, h) = (32, H);
    wr.floats(
        &format!("{block}.experts.gate_up_proj"),
        Dtype::BF16,
        &[E, h, 2 * i],
        &ckpt::gaussian(&mut r, E * h * 2 * i, 0.05),
    );
    wr.floats(
        &format!("{block}.experts.down_proj"),
        Dtype::BF16,
        &[E, h, i],
        &ckpt::gaussian(&mut r, E * h * i, 0.05),
    );
    router(&mut wr, &format!("{block}.gate.weight"), E, h, &mut r);
    wr.write(dir.path(), 1);
    write_config(dir.path(), &c);
    cases::expect(
        cases::load(dir.path()).map(|_| ()),
        "experts.gate_up_proj",
        &["[4, 64, 128]"],
    );
}

/// AMD Quark 0.13 quantizes linear layers only (it unfuses transformers 5's experts first,
/// `QuarkExperts`): fused parameters it never unfused stay bf16 beside its MX config, and
/// load as what they are. Fused parameters quantized in a format whose producer never writes
/// them fused (compressed-tensors linearises experts first) are refused by name; fused
/// fine-grained fp8 loads (`tests/checkpoint_fused_quant.rs`).
#[test]
fn fused_experts_load_as_stored_and_quantized_fused_ones_are_refused() {
    let quark = json!({"quant_method": "quark", "global_quant_config": {
        "weight": {"dtype": "fp4", "qscheme": "per_group", "group_size": 32, "ch_axis": -1,
                   "scale_format": "e8m0", "is_dynamic": false, "round_method": "half_even"},
        "input_tensors": null, "output_tensors": null}});
    let (dir, want) = fused_checkpoint("Qwen3MoeForCausalLM", "mlp", 5);
    write_config(dir.path(), &config("Qwen3MoeForCausalLM", Some(quark)));
    check(dir.path(), 1, &want, "bf16");

    let (dir, _) = fused_checkpoint("Qwen3MoeForCausalLM", "mlp", 6);
    let q = json!({"quant_method": "compressed-tensors", "format": "float-quantized", "config_groups": {"group_0": {
        "targets": ["Linear"],
        "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": true},
        "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true, "symmetric": true}}}});
    write_config(dir.path(), &config("Qwen3MoeForCausalLM", Some(q)));
    // Rewrite gate_up_proj as fp8 codes.
    let mut wr = Writer::default();
    let mut r = ckpt::rng(6);
    let block = "model.layers.1.mlp";
    wr.bytes(
        &format!("{block}.experts.gate_up_proj"),
        Dtype::F8_E4M3,
        &[E, 2 * I, H],
        vec![0x38; E * 2 * I * H],
    );
    wr.floats(
        &format!("{block}.experts.down_proj"),
        Dtype::BF16,
        &[E, H, I],
        &ckpt::gaussian(&mut r, E * H * I, 0.05),
    );
    router(&mut wr, &format!("{block}.gate.weight"), E, H, &mut r);
    wr.write(dir.path(), 1);
    cases::expect(
        cases::load(dir.path()).map(|_| ()),
        "experts.gate_up_proj",
        &["fused experts in compressed-tensors", "LinearExperts2D"],
    );
}

#[test]
fn mixtral_as_llm_compressor_and_transformers_5_name_it() {
    let q = json!({"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"group_0": {
        "targets": ["Linear"],
        "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32, "symmetric": true}}}});
    // transformers 5's block name with llm-compressor's projection names, and the hybrid a
    // reverted rename would leave (`block_sparse_moe` with `gate_proj` names).
    for block in ["mlp", "block_sparse_moe"] {
        let dir = tempfile::tempdir().unwrap();
        let mut r = ckpt::rng(11);
        let mut wr = Writer::default();
        let base = format!("model.layers.1.{block}");
        let names = ["gate_proj", "up_proj", "down_proj"];
        let want = experts(
            &mut wr,
            Lin::CtInt4 {
                group: 32,
                zp: false,
            },
            E,
            H,
            I,
            &|e, p| format!("{base}.experts.{e}.{}", names[p]),
            &mut r,
        );
        router(&mut wr, &format!("{base}.gate.weight"), E, H, &mut r);
        wr.write(dir.path(), 2);
        write_config(dir.path(), &config("MixtralForCausalLM", Some(q.clone())));
        check(dir.path(), 1, &want, "w4a16-g32");
        let report = inspect(dir.path()).unwrap().report;
        assert!(
            report.contains(&format!(
                "per expert: {block}.experts.N.gate_proj / up_proj / down_proj"
            )),
            "{report}"
        );
    }
}

/// compressed-tensors `int-quantized`: one int8 per value, int4 unpacked — the format its
/// W4AFP8 preset is saved in by default (`COMPRESSION_FORMAT_PRIORITY` puts it before
/// `pack-quantized`), and a valid format for any int weights.
#[test]
fn compressed_tensors_int_quantized_weights_load() {
    let group = |bits: u32, g: usize, zp: bool| json!({"num_bits": bits, "type": "int", "strategy": "group", "group_size": g, "symmetric": !zp});
    let ct = |weights: serde_json::Value, acts: Option<serde_json::Value>| {
        let mut g = json!({"targets": ["Linear"], "weights": weights});
        if let Some(a) = acts {
            g["input_activations"] = a;
        }
        json!({"quant_method": "compressed-tensors", "format": "int-quantized",
               "config_groups": {"group_0": g}})
    };
    let fp8_token = json!({"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true, "symmetric": true});
    for (cfg, lin, scheme) in [
        (
            ct(group(4, 128, false), Some(fp8_token)),
            Lin::CtIntQuantized {
                bits: 4,
                group: 128,
                zp: false,
            },
            "w4a8",
        ),
        (
            ct(group(4, 32, true), None),
            Lin::CtIntQuantized {
                bits: 4,
                group: 32,
                zp: true,
            },
            "w4a16-g32-zp",
        ),
        (
            ct(group(8, 64, false), None),
            Lin::CtIntQuantized {
                bits: 8,
                group: 64,
                zp: false,
            },
            "w8a16-g64",
        ),
    ] {
        ckpt::harness::roundtrip(
            "Qwen3MoeForCausalLM",
            config("Qwen3MoeForCausalLM", Some(cfg)),
            lin,
            1,
            scheme,
        );
    }
}

#[test]
fn an_int_quantized_value_outside_its_bits_is_named() {
    let q = json!({"quant_method": "compressed-tensors", "format": "int-quantized", "config_groups": {"group_0": {
        "targets": ["Linear"],
        "weights": {"num_bits": 4, "type": "int", "strategy": "channel", "symmetric": true}}}});
    let dir = tempfile::tempdir().unwrap();
    let mut r = ckpt::rng(4);
    let mut wr = Writer::default();
    let block = "model.layers.1.mlp";
    experts(
        &mut wr,
        Lin::CtIntQuantized {
            bits: 4,
            group: H,
            zp: false,
        },
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
    // An int8 value of 9 where int4 ends at 7.
    let name = format!("{block}.experts.0.gate_proj.weight");
    wr.tensors.get_mut(&name).unwrap().2[5] = 9;
    router(&mut wr, &format!("{block}.gate.weight"), E, H, &mut r);
    wr.write(dir.path(), 1);
    write_config(dir.path(), &config("Qwen3MoeForCausalLM", Some(q)));
    cases::expect(
        cases::load(dir.path()).map(|_| ()),
        &name,
        &["value 9 at index 5", "[-8, 7]"],
    );
}
