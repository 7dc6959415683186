//! The emulated MoE layer against a naive f64 implementation written here, for every
//! scheme × activation × routing kind, with and without shared experts and LoRA.

mod common;

use common::*;
use fleetmoe::moe::*;
use fleetmoe::quant::activation::round_to_model_dtype;
use fleetmoe::quant::{ActQuant, DenseExperts, ExpertWeights, QuantScheme, Stage};
use rand::Rng;

const E: usize = 4;
const H: usize = 128;
const I: usize = 128;
const SHARED_I: usize = 128;
const TOKENS: usize = 3;

fn activations() -> Vec<Activation> {
    vec![
        Activation::SiluAndMul,
        Activation::GeluAndMul,
        Activation::GeluTanhAndMul,
        Activation::GPT_OSS,
        Activation::Relu2,
        Activation::Silu,
    ]
}

fn routings(rng: &mut rand_chacha::ChaCha8Rng) -> Vec<(Routing, usize, bool)> {
    vec![
        (Routing::SoftmaxTopK { renormalize: true }, 2, false),
        (Routing::SoftmaxTopK { renormalize: false }, 2, false),
        (Routing::SigmoidTopK { renormalize: true }, 2, false),
        (
            Routing::Grouped {
                num_groups: 2,
                topk_groups: 1,
                scoring: GroupScoring::Sigmoid,
                correction_bias: Some(uniform(rng, E, 0.5)),
                renormalize: true,
                routed_scaling_factor: 2.5,
            },
            2,
            false,
        ),
        (Routing::SigmoidTop1, 1, true),
        (Routing::Given, 3, false),
    ]
}

/// Routing from its definition, in f64.
fn route_ref(routing: &Routing, logits: &[f32], k: usize) -> (Vec<usize>, Vec<f64>) {
    let l: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let softmax = |x: &[f64]| {
        let m = x.iter().cloned().fold(f64::MIN, f64::max);
        let s: f64 = x.iter().map(|v| (v - m).exp()).sum();
        x.iter().map(|v| (v - m).exp() / s).collect::<Vec<_>>()
    };
    let top = |s: &[f64], k: usize| {
        let mut idx: Vec<usize> = (0..s.len()).collect();
        idx.sort_by(|&a, &b| s[b].partial_cmp(&s[a]).unwrap().then(a.cmp(&b)));
        idx.truncate(k);
        idx
    };
    let norm = |w: Vec<f64>| {
        let s: f64 = w.iter().sum();
        w.iter().map(|v| v / s).collect::<Vec<_>>()
    };
    match routing {
        Routing::SoftmaxTopK { renormalize } | Routing::SigmoidTopK { renormalize } => {
            let s = if matches!(routing, Routing::SoftmaxTopK { .. }) {
                softmax(&l)
            } else {
                l.iter().map(|&v| sig(v)).collect()
            };
            let ids = top(&s, k);
            let w = ids.iter().map(|&i| s[i]).collect();
            (ids.clone(), if *renormalize { norm(w) } else { w })
        }
        Routing::Grouped {
            num_groups,
            topk_groups,
            correction_bias,
            renormalize,
            routed_scaling_factor,
            ..
        } => {
            let s: Vec<f64> = l.iter().map(|&v| sig(v)).collect();
            let b = correction_bias.as_ref().unwrap();
            let c: Vec<f64> = s.iter().zip(b).map(|(s, b)| s + *b as f64).collect();
            let per = E / num_groups;
            let gs: Vec<f64> = c
                .chunks(per)
                .map(|g| top(g, 2).iter().map(|&i| g[i]).sum())
                .collect();
            let kept = top(&gs, *topk_groups);
            let masked: Vec<f64> = c
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    if kept.contains(&(i / per)) {
                        v
                    } else {
                        f64::MIN
                    }
                })
                .collect();
            let ids = top(&masked, k);
            let w: Vec<f64> = ids.iter().map(|&i| s[i]).collect();
            let w = if *renormalize { norm(w) } else { w };
            (
                ids,
                w.iter()
                    .map(|v| v * *routed_scaling_factor as f64)
                    .collect(),
            )
        }
        Routing::SigmoidTop1 => {
            let ids = top(&l, 1);
            (ids.clone(), vec![sig(l[ids[0]])])
        }
        Routing::Given => unreachable!(),
    }
}

/// What the reference does to GEMM inputs: nothing (the unquantized truth) or the scheme's
/// rounding and activation quantization at the points the scheme defines.
#[derive(Clone, Copy)]
enum Quant<'a> {
    Exact,
    Scheme(&'a QuantScheme, ActQuant, ActQuant),
}

fn apply_q(q: Quant<'_>, stage: Stage, rows: &mut [f64], cols: usize) {
    let Quant::Scheme(scheme, a1, a2) = q else {
        return;
    };
    let mut v: Vec<f32> = rows.iter().map(|&x| x as f32).collect();
    round_to_model_dtype(scheme, &mut v);
    match stage {
        Stage::W13 => a1.apply(&mut v, cols).unwrap(),
        Stage::W2 => a2.apply(&mut v, cols).unwrap(),
    }
    rows.iter_mut().zip(v).for_each(|(r, x)| *r = x as f64);
}

fn round_model(q: Quant<'_>, v: &mut [f64]) {
    if let Quant::Scheme(scheme, ..) = q {
        let mut f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        round_to_model_dtype(scheme, &mut f);
        v.iter_mut().zip(f).for_each(|(r, x)| *r = x as f64);
    }
}

struct RefMlp<'a> {
    dense: &'a DenseExperts,
    act: Activation,
}

impl RefMlp<'_> {
    /// Pair inputs `[p, H]` through experts `es[p]` with optional per-pair LoRA.
    fn run(
        &self,
        q: Quant<'_>,
        mut inputs: Vec<f64>,
        es: &[usize],
        lora: &[Option<(&LoraExpert, usize, f32)>],
    ) -> Vec<f64> {
        let d = self.dense;
        let (h, i) = (d.hidden, d.intermediate);
        let rows13 = d.w13_rows();
        let lora_in = inputs.clone();
        apply_q(q, Stage::W13, &mut inputs, h);
        let mut acts = Vec::new();
        for (p, &e) in es.iter().enumerate() {
            let x = &inputs[p * h..(p + 1) * h];
            let mut g = matvec(&d.w13[e * rows13 * h..(e + 1) * rows13 * h], rows13, h, x);
            if let Some(b) = &d.w13_bias {
                g.iter_mut()
                    .zip(&b[e * rows13..])
                    .for_each(|(v, b)| *v += *b as f64);
            }
            if let Some((ad, rank, s)) = lora[p] {
                for (proj, is_gate) in [(&ad.gate, true), (&ad.up, false)] {
                    if let Some(proj) = proj {
                        let delta = lora_ref(proj, rank, s, &lora_in[p * h..(p + 1) * h], i);
                        for j in 0..i {
                            let at = match (self.act, is_gate) {
                                (Activation::GPT_OSS, true) => 2 * j,
                                (Activation::GPT_OSS, false) => 2 * j + 1,
                                (a, false) if a.is_gated() => i + j,
                                _ => j,
                            };
                            g[at] += delta[j];
                        }
                    }
                }
            }
            round_model(q, &mut g);
            let mut a = act_ref(self.act, &g, i);
            round_model(q, &mut a);
            acts.extend(a);
        }
        let pre = acts.clone();
        apply_q(q, Stage::W2, &mut acts, i);
        let mut y = Vec::new();
        for (p, &e) in es.iter().enumerate() {
            let mut o = matvec(
                &d.w2[e * h * i..(e + 1) * h * i],
                h,
                i,
                &acts[p * i..(p + 1) * i],
            );
            if let Some(b) = &d.w2_bias {
                o.iter_mut()
                    .zip(&b[e * h..])
                    .for_each(|(v, b)| *v += *b as f64);
            }
            if let Some((ad, rank, s)) = lora[p] {
                if let Some(down) = &ad.down {
                    let delta = lora_ref(down, rank, s, &pre[p * i..(p + 1) * i], h);
                    o.iter_mut().zip(delta).for_each(|(v, d)| *v += d);
                }
            }
            y.extend(o);
        }
        y
    }
}

struct Case {
    scheme: QuantScheme,
    act: Activation,
    routing: Routing,
    k: usize,
    on_input: bool,
    shared: bool,
    lora: bool,
    bias: bool,
}

fn run_case(c: &Case, seed: u64) {
    let mut rng = rng(seed);
    let mut cfg = LayerConfig::new(E, c.k, H, I);
    cfg.activation = c.act;
    cfg.routing = c.routing.clone();
    cfg.apply_router_weight_on_input = c.on_input;
    cfg.has_bias = c.bias;
    cfg.lora = c.lora;
    cfg.shared_intermediate = c.shared.then_some(SHARED_I);
    let dense = DenseExperts::random(&cfg, seed);
    let x = uniform(&mut rng, TOKENS * H, 1.0);
    let logits = uniform(&mut rng, TOKENS * E, 2.0);
    let given = random_topk(&mut rng, TOKENS, c.k, E);
    let (ids, wts): (Vec<Vec<usize>>, Vec<Vec<f64>>) = match c.routing {
        Routing::Given => (0..TOKENS)
            .map(|t| {
                (
                    (0..c.k).map(|j| given.id(t, j)).collect(),
                    (0..c.k).map(|j| given.weight(t, j) as f64).collect(),
                )
            })
            .unzip(),
        _ => (0..TOKENS)
            .map(|t| route_ref(&c.routing, &logits[t * E..(t + 1) * E], c.k))
            .unzip(),
    };
    let mut weights = ExpertWeights::quantize(&dense, c.scheme).unwrap();
    let calib_topk = TopK::new(
        TOKENS,
        c.k,
        ids.iter().flatten().map(|&e| e as u32).collect(),
        wts.iter().flatten().map(|&w| w as f32).collect(),
        E,
    )
    .unwrap();
    calibrate(&mut weights, &cfg, &x, &calib_topk).unwrap();

    let mut shared_cfg = cfg.clone();
    shared_cfg.num_experts = 1;
    shared_cfg.top_k = 1;
    shared_cfg.intermediate = SHARED_I;
    shared_cfg.routing = Routing::Given;
    shared_cfg.apply_router_weight_on_input = false;
    let shared_dense = DenseExperts::random(&shared_cfg, seed + 1);
    let shared_gate = uniform(&mut rng, H, 0.2);
    let shared = c.shared.then(|| {
        let mut w = ExpertWeights::quantize(&shared_dense, c.scheme).unwrap();
        let tk = TopK::new(TOKENS, 1, vec![0; TOKENS], vec![1.0; TOKENS], 1).unwrap();
        calibrate(&mut w, &shared_cfg, &x, &tk).unwrap();
        SharedExpertWeights {
            weights: w,
            gate: Some(shared_gate.clone()),
        }
    });
    let lora = c.lora.then(|| Lora {
        adapters: (0..2)
            .map(|_| {
                random_adapter(
                    &mut rng,
                    4,
                    E,
                    H,
                    I,
                    c.act.is_gated(),
                    c.shared.then_some(SHARED_I),
                )
            })
            .collect(),
    });
    let slots: Vec<Option<usize>> = (0..TOKENS)
        .map(|t| [Some(0), None, Some(1)][t % 3])
        .collect();

    let layer = MoeLayer::new(
        cfg.clone(),
        &weights,
        &Target::cpu(),
        LayerExtras {
            shared: shared.clone(),
            lora: lora.clone(),
            backend: None,
        },
    )
    .unwrap();
    assert_eq!(
        layer.selection().chosen,
        fleetmoe::oracle::BackendId::Emulation
    );
    let routing = match c.routing {
        Routing::Given => RoutingInput::TopK(&given),
        _ => RoutingInput::Logits(&logits),
    };
    let got = layer
        .forward(&x, routing, c.lora.then_some(&slots[..]))
        .unwrap();

    // The f64 reference, twice: with the scheme's activation handling on the dequantized
    // weights (tight), and unquantized on the original f32 weights (the scheme's budget).
    let deq = weights.dequantize_as_kernels().unwrap();
    let shared_deq = shared
        .as_ref()
        .map(|s| s.weights.dequantize_as_kernels().unwrap());
    let reference = |q_routed: Quant<'_>,
                     q_shared: Quant<'_>,
                     d: &DenseExperts,
                     sd: Option<&DenseExperts>|
     -> Vec<f64> {
        let mlp = RefMlp {
            dense: d,
            act: c.act,
        };
        let mut inputs = Vec::new();
        let mut es = Vec::new();
        let mut pl = Vec::new();
        for t in 0..TOKENS {
            for j in 0..c.k {
                let mut row: Vec<f64> = x[t * H..(t + 1) * H].iter().map(|&v| v as f64).collect();
                round_model(q_routed, &mut row);
                if c.on_input {
                    row.iter_mut().for_each(|v| *v *= wts[t][j] as f32 as f64);
                    round_model(q_routed, &mut row);
                }
                inputs.extend(row);
                es.push(ids[t][j]);
                let ad = lora.as_ref().and_then(|l| slots[t].map(|s| &l.adapters[s]));
                pl.push(ad.map(|a| (&a.experts[ids[t][j]], a.rank, a.scaling)));
            }
        }
        let y = mlp.run(q_routed, inputs, &es, &pl);
        let mut out = vec![0f64; TOKENS * H];
        for t in 0..TOKENS {
            for j in 0..c.k {
                let w = if c.on_input {
                    1.0
                } else {
                    wts[t][j] as f32 as f64
                };
                for hh in 0..H {
                    out[t * H + hh] += w * y[(t * c.k + j) * H + hh];
                }
            }
        }
        if let Some(sd) = sd {
            let smlp = RefMlp {
                dense: sd,
                act: c.act,
            };
            let mut inputs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            round_model(q_shared, &mut inputs);
            let gates: Vec<f64> = inputs
                .chunks(H)
                .map(|r| {
                    1.0 / (1.0
                        + (-r
                            .iter()
                            .zip(&shared_gate)
                            .map(|(a, b)| a * *b as f64)
                            .sum::<f64>())
                        .exp())
                })
                .collect();
            let pl: Vec<_> = (0..TOKENS)
                .map(|t| {
                    lora.as_ref()
                        .and_then(|l| slots[t].map(|s| &l.adapters[s]))
                        .map(|a| (a.shared.as_ref().unwrap(), a.rank, a.scaling))
                })
                .collect();
            let y = smlp.run(q_shared, inputs, &[0; TOKENS], &pl);
            for t in 0..TOKENS {
                for hh in 0..H {
                    out[t * H + hh] += gates[t] * y[t * H + hh];
                }
            }
        }
        out
    };
    let qr = Quant::Scheme(
        &weights.scheme,
        ActQuant::for_scheme(&weights.scheme, Stage::W13, weights.input_scales.as_ref()).unwrap(),
        ActQuant::for_scheme(&weights.scheme, Stage::W2, weights.input_scales.as_ref()).unwrap(),
    );
    let qs = match &shared {
        Some(s) => Quant::Scheme(
            &s.weights.scheme,
            ActQuant::for_scheme(
                &s.weights.scheme,
                Stage::W13,
                s.weights.input_scales.as_ref(),
            )
            .unwrap(),
            ActQuant::for_scheme(
                &s.weights.scheme,
                Stage::W2,
                s.weights.input_scales.as_ref(),
            )
            .unwrap(),
        ),
        None => Quant::Exact,
    };
    let tight = reference(qr, qs, &deq, shared_deq.as_ref());
    let err = rel_l2(&got, &tight);
    let name = format!(
        "{} {} {} k={} shared={} lora={} bias={}",
        c.scheme,
        c.act.name(),
        c.routing.name(),
        c.k,
        c.shared,
        c.lora,
        c.bias
    );
    // Only accumulation order differs, which can flip a bf16 rounding and, downstream, an
    // activation code; a scheme that quantizes activations magnifies such a flip.
    let tol = if c.scheme.quantizes_activations() {
        1e-2
    } else {
        2e-3
    };
    assert!(
        err < tol,
        "{name}: emulation vs f64 reference (same quantization): rel err {err:.2e} > {tol}"
    );
    let truth = reference(
        Quant::Exact,
        Quant::Exact,
        &dense,
        c.shared.then_some(&shared_dense),
    );
    let budget = output_budget(&c.scheme);
    let err = rel_l2(&got, &truth);
    assert!(
        err < budget,
        "{name}: emulation vs unquantized f64: rel err {err:.3} over the scheme's budget {budget}"
    );
}

/// How far a scheme's quantization may move the layer output from the unquantized one.
fn output_budget(s: &QuantScheme) -> f64 {
    let act = if s.quantizes_activations() {
        2.0 * s.weight_error_bound()
    } else {
        0.0
    };
    3.0 * s.weight_error_bound() + act + 0.01
}

#[test]
fn every_scheme_activation_and_routing_with_shared_and_lora() {
    let mut rng = rng(7);
    let routings = routings(&mut rng);
    let mut n = 0;
    for (si, scheme) in QuantScheme::all_representative().into_iter().enumerate() {
        for (ai, act) in activations().into_iter().enumerate() {
            for (ri, (routing, k, on_input)) in routings.iter().enumerate() {
                let extras = (si + ai + ri) % 4;
                let case = Case {
                    scheme,
                    act,
                    routing: routing.clone(),
                    k: *k,
                    on_input: *on_input,
                    shared: extras & 1 == 1,
                    lora: extras & 2 == 2,
                    bias: act == Activation::GPT_OSS,
                };
                run_case(&case, 1000 + n);
                n += 1;
            }
        }
    }
    assert!(n > 800);
}

#[test]
fn shared_and_lora_all_four_combinations_per_scheme() {
    let mut n = 0;
    for scheme in QuantScheme::all_representative() {
        for extras in 0..4 {
            let case = Case {
                scheme,
                act: Activation::SiluAndMul,
                routing: Routing::SoftmaxTopK { renormalize: true },
                k: 2,
                on_input: false,
                shared: extras & 1 == 1,
                lora: extras & 2 == 2,
                bias: false,
            };
            run_case(&case, 50_000 + n);
            n += 1;
        }
    }
}

#[test]
fn random_inputs_are_not_trivial() {
    // Guards the comparisons above against passing on all-zero outputs.
    let mut r = rng(3);
    let v = uniform(&mut r, 100, 1.0);
    assert!(v.iter().any(|&x| x.abs() > 0.1) && r.random::<f32>() >= 0.0);
}
