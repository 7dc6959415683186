//! compressed-tensors checkpoints with more than one config group: each MoE projection set
//! takes the scheme of the group whose `targets` match it, as compressed-tensors decides
//! (exact names, then `re:` patterns anchored at the start, then the `Linear` class), and
//! `ignore` leaves a module unquantized. Written by the test in llm-compressor's names.

mod ckpt;

use ckpt::cases;
use ckpt::harness::{config, E, H, I};
use ckpt::{experts, max_rel, router, write_config, Lin, Writer};
use fleetmoe::checkpoint::inspect::inspect;
use fleetmoe::checkpoint::Checkpoint;
use fleetmoe::quant::QuantScheme;
use safetensors::Dtype;
use serde_json::{json, Value};

const SI: usize = 64;

fn fp8_group(targets: Value) -> Value {
    json!({"targets": targets, "format": "float-quantized",
        "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": true},
        "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true, "symmetric": true}})
}

fn int4_group(targets: Value) -> Value {
    json!({"targets": targets, "format": "pack-quantized",
        "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32, "symmetric": true}})
}

/// A Qwen2-MoE layer 1: routed experts in `routed`, the shared expert in `shared`.
fn write(
    routed: Lin,
    shared: Lin,
    q: Value,
) -> (tempfile::TempDir, ckpt::Expected, ckpt::Expected) {
    let mut c = config("Qwen2MoeForCausalLM", Some(q));
    c["shared_expert_intermediate_size"] = json!(SI);
    let dir = tempfile::tempdir().unwrap();
    let mut r = ckpt::rng(17);
    let mut wr = Writer::default();
    let block = "model.layers.1.mlp";
    let names = ["gate_proj", "up_proj", "down_proj"];
    let want = experts(
        &mut wr,
        routed,
        E,
        H,
        I,
        &|e, p| format!("{block}.experts.{e}.{}", names[p]),
        &mut r,
    );
    let want_shared = experts(
        &mut wr,
        shared,
        1,
        H,
        SI,
        &|_, p| format!("{block}.shared_expert.{}", names[p]),
        &mut r,
    );
    wr.floats(
        &format!("{block}.shared_expert_gate.weight"),
        Dtype::BF16,
        &[1, H],
        &ckpt::gaussian(&mut r, H, 0.1),
    );
    router(&mut wr, &format!("{block}.gate.weight"), E, H, &mut r);
    wr.write(dir.path(), 1);
    write_config(dir.path(), &c);
    (dir, want, want_shared)
}

#[test]
fn the_shared_expert_takes_its_own_group_and_ignore_leaves_it_unquantized() {
    // fp8 routed experts by pattern, an int4 shared expert by pattern; then the same with
    // the shared expert ignored (bf16); then a per-tensor fp8 shared expert whose gate and
    // up scales differ, which loads as per-channel fp8.
    let q = json!({"quant_method": "compressed-tensors", "config_groups": {
        "group_0": fp8_group(json!(["re:.*mlp\\.experts\\..*"])),
        "group_1": int4_group(json!(["re:.*shared_expert\\..*"]))},
        "ignore": ["lm_head", "re:.*shared_expert_gate"]});
    let int4 = Lin::CtInt4 {
        group: 32,
        zp: false,
    };
    let mut fp8_tensor = fp8_group(json!(["re:.*shared_expert\\..*"]));
    fp8_tensor["weights"]["strategy"] = json!("tensor");
    for (q, shared, shared_scheme, ignore) in [
        (
            q,
            int4,
            "w4a16-g32",
            "config group ignore: lm_head, re:.*shared_expert_gate\n",
        ),
        (
            json!({"quant_method": "compressed-tensors", "config_groups": {"group_0": fp8_group(json!(["Linear"]))},
                   "ignore": ["lm_head", "re:.*shared_expert\\."]}),
            Lin::Bf16,
            "bf16",
            "config group ignore: lm_head, re:.*shared_expert\\.\n",
        ),
        (
            json!({"quant_method": "compressed-tensors", "config_groups": {
                "group_0": fp8_group(json!(["re:.*mlp\\.experts\\..*"])),
                "group_1": fp8_tensor.clone()},
                "ignore": ["lm_head", "re:.*shared_expert_gate"]}),
            Lin::Fp8Tensor { input: false },
            "fp8-channel",
            "config group ignore: lm_head, re:.*shared_expert_gate\n",
        ),
    ] {
        let (dir, want, want_shared) = write(Lin::Fp8Channel, shared, q);
        let l = Checkpoint::open(dir.path()).unwrap().load_layer(1).unwrap();
        assert_eq!(l.weights.scheme, QuantScheme::parse("fp8-channel").unwrap());
        let d = l.weights.dequantize().unwrap();
        assert!(max_rel(&d.w13, &want.w13) < 1e-6 && max_rel(&d.w2, &want.w2) < 1e-6);
        let sh = l.shared.expect("a shared expert");
        assert_eq!(
            sh.weights.scheme,
            QuantScheme::parse(shared_scheme).unwrap()
        );
        let ds = sh.weights.dequantize().unwrap();
        assert!(max_rel(&ds.w13, &want_shared.w13) < 1e-6);
        assert!(max_rel(&ds.w2, &want_shared.w2) < 1e-6);
        let ins = inspect(dir.path()).unwrap();
        let report = ins.report;
        assert!(ins.problems.is_empty(), "{report}");
        assert!(
            report.contains("config group group_0: compressed-tensors float-quantized fp8"),
            "{report}"
        );
        // The whole ignore list, in the config's order.
        assert!(report.contains(ignore), "no '{ignore}' in:\n{report}");
        // Each projection set's scheme: the routed experts, and the shared expert as it
        // loads (its own group, ignored, or per-tensor halves that differ).
        assert!(
            report.contains("scheme       fp8-channel on layers 1\n"),
            "{report}"
        );
        let line = format!("shared       shared_expert scheme {shared_scheme} on layers 1\n");
        assert!(report.contains(&line), "no '{line}' in:\n{report}");
        // Layer 0 has no MoE block in these files.
        assert!(
            report
                .contains("dense        layers 0 (no mlp.gate.weight tensor): not MoE, not read\n"),
            "{report}"
        );
    }
}

#[test]
fn an_exact_name_outranks_a_pattern_and_a_class() {
    // group_0 claims every Linear, group_1 the shared expert by pattern, group_2 its down
    // projection by exact name: a down projection in int4 beside fp8 gate and up is two
    // schemes in one shared expert, refused by name.
    let q = json!({"quant_method": "compressed-tensors", "config_groups": {
        "group_0": fp8_group(json!(["Linear"])),
        "group_1": fp8_group(json!(["re:.*shared_expert\\..*"])),
        "group_2": int4_group(json!(["model.layers.1.mlp.shared_expert.down_proj"]))}});
    let (dir, _, _) = write(Lin::Fp8Channel, Lin::Fp8Channel, q);
    cases::expect(
        cases::load(dir.path()).map(|_| ()),
        "shared_expert.down_proj",
        &["pack-quantized"],
    );
}

#[test]
fn routed_experts_in_two_schemes_are_refused_by_name() {
    let q = json!({"quant_method": "compressed-tensors", "config_groups": {
        "group_0": fp8_group(json!(["Linear"])),
        "group_1": int4_group(json!(["re:.*experts\\.3\\..*"]))}});
    let (dir, _, _) = write(Lin::Fp8Channel, Lin::Fp8Channel, q);
    cases::expect(
        cases::load(dir.path()).map(|_| ()),
        "mlp.experts.3.",
        &["more than one scheme"],
    );
}

#[test]
fn a_pattern_regex_cannot_match_is_refused_when_the_config_is_read() {
    let q = json!({"quant_method": "compressed-tensors", "config_groups": {
        "group_0": fp8_group(json!(["re:(?!lm_head).*"]))}});
    let (dir, _, _) = write(Lin::Fp8Channel, Lin::Fp8Channel, q);
    cases::expect(
        Checkpoint::open(dir.path()).map(|_| ()),
        "config_groups",
        &["re:(?!lm_head).*"],
    );
}
