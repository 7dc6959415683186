//! API mutations: config fields, weight data and scales, shared expert, LoRA adapters,
//! and forward inputs (hidden states, logits, a `TopK` built from its public fields,
//! adapter slots, a forced backend).

use super::api::{lora, ApiCase, RawTopK, TOKENS};
use fleetmoe::moe::{Activation, GroupScoring, Lora, LoraExpert, Routing, SharedExpertWeights};
use fleetmoe::oracle::BackendId;
use fleetmoe::quant::{Fp8Flavor, QuantScheme, WeightData};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

fn edge_usize(r: &mut ChaCha8Rng, near: usize) -> usize {
    let v = [
        0,
        1,
        2,
        3,
        near.saturating_add(1),
        near.saturating_sub(1),
        near.saturating_mul(2),
        1 << 20,
        1 << 40,
        usize::MAX,
    ];
    v[r.random_range(0..v.len())]
}

fn edge_f32(r: &mut ChaCha8Rng) -> f32 {
    let v = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -1.0,
        1e30,
        1e-30,
        -7.0,
        1e20,
    ];
    v[r.random_range(0..v.len())]
}

/// Pokes one element of `v` with an edge value; says whether it became non-finite.
fn poke(v: &mut [f32], r: &mut ChaCha8Rng) -> Option<f32> {
    if v.is_empty() {
        return None;
    }
    let x = edge_f32(r);
    let k = r.random_range(0..v.len());
    v[k] = x;
    Some(x)
}

/// As `poke`, with values a caller might really pass: non-finite, zero, negative, ±4.
fn small_poke(v: &mut [f32], r: &mut ChaCha8Rng) -> Option<f32> {
    let x = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -1.0,
        4.0,
        -4.0,
        1e-30,
    ];
    let x = x[r.random_range(0..x.len())];
    let k = r.random_range(0..v.len().max(1));
    *v.get_mut(k)? = x;
    Some(x)
}

/// One API mutation; returns its description and, for non-finite data, what must be refused.
pub fn mutate(c: &mut ApiCase, r: &mut ChaCha8Rng) -> (String, Option<String>) {
    let (e, h, i) = c.dims;
    let mut refuse = None;
    let mut bad = |what: &str, x: Option<f32>| {
        if x.is_some_and(|x| !x.is_finite()) {
            refuse = Some(format!("non-finite {what}"));
        }
        format!("{what} = {x:?}")
    };
    let d = match r.random_range(0..24) {
        0 => {
            c.config.num_experts = edge_usize(r, e);
            format!("config.num_experts = {}", c.config.num_experts)
        }
        1 => {
            c.config.top_k = edge_usize(r, c.config.top_k);
            format!("config.top_k = {}", c.config.top_k)
        }
        2 => {
            c.config.hidden = edge_usize(r, h);
            format!("config.hidden = {}", c.config.hidden)
        }
        3 => {
            c.config.intermediate = edge_usize(r, i);
            format!("config.intermediate = {}", c.config.intermediate)
        }
        4 => {
            c.config.activation = match r.random_range(0..4) {
                0 => Activation::SwigluOai {
                    alpha: 1.702,
                    limit: edge_f32(r),
                },
                1 => Activation::SwigluOai {
                    alpha: edge_f32(r),
                    limit: 7.0,
                },
                2 => Activation::Silu,
                _ => Activation::GeluTanhAndMul,
            };
            format!("config.activation = {:?}", c.config.activation)
        }
        5 => {
            let groups = edge_usize(r, 2);
            let topk_groups = edge_usize(r, 1);
            let mut bias = Some(vec![0.0; e]);
            let bias_what = match r.random_range(0..3) {
                0 => bias.as_mut().map(|b| poke(b, r)).unwrap_or(None),
                1 => {
                    bias = Some(vec![0.0; e + 1]);
                    None
                }
                _ => None,
            };
            let scale = if r.random_bool(0.3) { edge_f32(r) } else { 1.0 };
            c.config.routing = Routing::Grouped {
                num_groups: groups,
                topk_groups,
                scoring: GroupScoring::Softmax,
                correction_bias: bias,
                renormalize: r.random_bool(0.5),
                routed_scaling_factor: scale,
            };
            c.topk = None;
            bad(
                &format!("grouped routing groups {groups} kept {topk_groups} scale {scale}, bias"),
                bias_what,
            )
        }
        6 => {
            c.config.has_bias ^= true;
            c.config.apply_router_weight_on_input ^= r.random_bool(0.5);
            c.config.lora ^= r.random_bool(0.3);
            format!(
                "config flags {:?}",
                (
                    c.config.has_bias,
                    c.config.apply_router_weight_on_input,
                    c.config.lora
                )
            )
        }
        7 => {
            c.config.shared_intermediate =
                [None, Some(0), Some(31), Some(32), Some(1 << 40)][r.random_range(0..5)];
            format!(
                "config.shared_intermediate = {:?}",
                c.config.shared_intermediate
            )
        }
        8 => {
            let all = QuantScheme::all_representative();
            c.weights.scheme = all[r.random_range(0..all.len())];
            format!("weights.scheme = {}", c.weights.scheme)
        }
        9 => {
            match r.random_range(0..5) {
                0 => c.weights.num_experts = edge_usize(r, e),
                1 => c.weights.hidden = edge_usize(r, h),
                2 => c.weights.w13.rows = edge_usize(r, 2 * i),
                3 => c.weights.w2.cols = edge_usize(r, i),
                _ => c.weights.gated ^= true,
            }
            "weights dims".to_string()
        }
        10 | 11 => weight_data(c, r, &mut refuse),
        12 => {
            let x = match c.weights.input_scales.as_mut() {
                // One scale per expert (sometimes one short), one of them an edge value.
                Some(s) if r.random_bool(0.5) => {
                    s.w13 = vec![s.w13[0]; e.max(1)];
                    if r.random_bool(0.2) {
                        s.w13.pop();
                    }
                    poke(&mut s.w13, r)
                }
                Some(s) => {
                    s.w13 = vec![edge_f32(r)];
                    Some(s.w13[0])
                }
                None => None,
            };
            bad("input_scales.w13", x)
        }
        13 => {
            let b = c
                .weights
                .w13_bias
                .get_or_insert_with(|| vec![0.0; e * 2 * i]);
            if r.random_bool(0.5) {
                b.pop();
                "w13 bias one short".into()
            } else {
                let x = poke(b, r);
                bad("w13 bias", x)
            }
        }
        14 => match c.shared.as_mut() {
            Some(s) if r.random_bool(0.5) => {
                let x = s.gate.as_mut().and_then(|g| poke(g, r));
                bad("shared gate", x)
            }
            Some(s) => {
                s.gate = Some(vec![0.0; r.random_range(0..70)]);
                format!("shared gate of length {}", s.gate.as_ref().unwrap().len())
            }
            None => {
                c.shared = Some(SharedExpertWeights {
                    weights: c.weights.clone(),
                    gate: None,
                });
                "shared = the routed weights".into()
            }
        },
        15 => lora_mut(c, r, &mut refuse),
        16 => {
            let x = small_poke(&mut c.x, r);
            bad("hidden states", x)
        }
        17 => {
            let n = [0, 1, 63, 65, 64 * 64][r.random_range(0..5)];
            c.x = super::check::input(1, n);
            format!("hidden states of length {n}")
        }
        18 => {
            if r.random_bool(0.5) {
                c.logits.truncate(r.random_range(0..c.logits.len().max(1)));
                format!("logits of length {}", c.logits.len())
            } else {
                // -inf is a mask, +inf is judged by the output; NaN must be refused
                let x = poke(&mut c.logits, r);
                c.topk = None;
                bad("router logits", x.filter(|x| x.is_nan()))
            }
        }
        19 | 20 => {
            let mut t = c.topk.take().unwrap_or(RawTopK {
                tokens: TOKENS,
                k: 2,
                ids: vec![0, 1, 2, 3, 0, 1],
                weights: vec![0.5; 6],
            });
            let what = match r.random_range(0..6) {
                0 => {
                    t.ids[0] = [e as u32, u32::MAX, 1000][r.random_range(0..3)];
                    format!("top-k id {}", t.ids[0])
                }
                1 => {
                    let x = small_poke(&mut t.weights, r);
                    bad("top-k weight", x)
                }
                2 => {
                    t.k = edge_usize(r, t.k);
                    format!("TopK.k = {}", t.k)
                }
                3 => {
                    t.tokens = edge_usize(r, t.tokens);
                    format!("TopK.tokens = {}", t.tokens)
                }
                4 => {
                    t.ids.pop();
                    "TopK.ids one short".into()
                }
                _ => {
                    t.weights.truncate(1);
                    "TopK.weights of length 1".into()
                }
            };
            c.topk = Some(t);
            what
        }
        21 => {
            let s = [None, Some(1), Some(2), Some(usize::MAX)][r.random_range(0..4)];
            let n = [TOKENS, 0, TOKENS + 1][r.random_range(0..3)];
            c.slots = Some(vec![s; n]);
            format!("slots [{s:?}; {n}]")
        }
        22 => {
            let id = BackendId::ALL[r.random_range(0..BackendId::ALL.len())];
            c.backend = Some(id);
            format!("forced backend {}", id.name())
        }
        _ => {
            c.config.routing = [
                Routing::SigmoidTop1,
                Routing::Given,
                Routing::SigmoidTopK { renormalize: true },
            ][r.random_range(0..3)]
            .clone();
            format!("routing = {:?}", c.config.routing)
        }
    };
    (d, refuse)
}

fn weight_data(c: &mut ApiCase, r: &mut ChaCha8Rng, refuse: &mut Option<String>) -> String {
    // The NaN code of the scheme's fp8 flavour (0x7F is 240 in e4m3fnuz, a valid value).
    let nan_code = match c.weights.scheme.fp8_flavor() {
        Some(Fp8Flavor::E4M3Fnuz) => 0x80,
        _ => 0x7F,
    };
    let t = if r.random_bool(0.5) {
        &mut c.weights.w13
    } else {
        &mut c.weights.w2
    };
    let grow = r.random_bool(0.2);
    let mut nonfinite = |what: &str, x: Option<f32>| {
        if x.is_some_and(|x| !x.is_finite()) {
            *refuse = Some(format!("non-finite {what}"));
        }
        format!("{what} = {x:?}")
    };
    match &mut t.data {
        WeightData::Bf16(v) if grow => {
            v.pop();
            "bf16 weights one short".into()
        }
        WeightData::Bf16(v) => {
            let x = edge_f32(r);
            let k = r.random_range(0..v.len());
            v[k] = half::bf16::from_f32(x);
            nonfinite("bf16 weight", Some(x))
        }
        WeightData::F16(v) => {
            v.truncate(1);
            "f16 weights of length 1".into()
        }
        WeightData::Fp8 { codes, scales } => {
            if r.random_bool(0.5) {
                let k = r.random_range(0..codes.len());
                codes[k] = nan_code;
                *refuse = Some(format!("fp8 NaN code {nan_code:#04x}"));
                format!("fp8 code {nan_code:#04x}")
            } else {
                let x = poke(scales, r);
                nonfinite("fp8 weight scale", x)
            }
        }
        WeightData::Nvfp4 {
            block_scales,
            global_scales,
            ..
        } => {
            if r.random_bool(0.5) {
                let k = r.random_range(0..block_scales.len());
                block_scales[k] = [0x7F, 0x7E, 0x00, 0xFE][r.random_range(0..4)];
                format!("nvfp4 block scale {:#04x}", block_scales[k])
            } else {
                let x = poke(global_scales, r);
                nonfinite("nvfp4 global scale", x)
            }
        }
        WeightData::Mx { packed, scales } => {
            if grow {
                packed.pop();
                return "mx packed one short".into();
            }
            let k = r.random_range(0..scales.len());
            scales[k] = [0xFF, 0xFE, 0xF0, 0x00][r.random_range(0..4)];
            if scales[k] == 0xFF {
                *refuse = Some("e8m0 NaN".into());
            }
            format!("e8m0 scale {:#04x}", scales[k])
        }
        WeightData::Int(w) => match r.random_range(0..5) {
            0 => {
                let x = poke(&mut w.scales, r);
                nonfinite("int scale", x)
            }
            1 => {
                w.group = edge_usize(r, w.group);
                format!("int group = {}", w.group)
            }
            2 => {
                let g = w.g_idx.get_or_insert_with(|| vec![0; t.experts * t.cols]);
                let k = r
                    .random_range(0..g.len().max(1))
                    .min(g.len().saturating_sub(1));
                if let Some(x) = g.get_mut(k) {
                    *x = [1000, u32::MAX, 2][r.random_range(0..3)];
                }
                "g_idx entry out of range".into()
            }
            3 => {
                w.zeros = Some(vec![255; r.random_range(0..8)]);
                "zeros of the wrong length".into()
            }
            _ => {
                w.packed4.truncate(1);
                w.bytes.truncate(1);
                "int codes truncated".into()
            }
        },
    }
}

fn lora_mut(c: &mut ApiCase, r: &mut ChaCha8Rng, refuse: &mut Option<String>) -> String {
    let (e, h, i) = c.dims;
    let lora = c.lora.get_or_insert_with(|| Lora {
        adapters: vec![lora(e, h, i, 2, None)],
    });
    c.config.lora = true;
    let Some(ad) = lora.adapters.last_mut() else {
        return "no adapter".into();
    };
    match r.random_range(0..5) {
        0 => {
            ad.rank = edge_usize(r, ad.rank);
            format!("lora rank = {}", ad.rank)
        }
        1 => {
            ad.scaling = edge_f32(r);
            if !ad.scaling.is_finite() {
                *refuse = Some("non-finite LoRA scaling".into());
            }
            format!("lora scaling = {}", ad.scaling)
        }
        2 => {
            let p = ad.experts.first_mut().and_then(|x| x.down.as_mut());
            match p.map(|p| poke(&mut p.b, r)) {
                Some(Some(x)) if !x.is_finite() => {
                    *refuse = Some("non-finite LoRA B".into());
                    format!("lora B = {x}")
                }
                x => format!("lora B = {x:?}"),
            }
        }
        3 => {
            if let Some(p) = ad.experts.first_mut().and_then(|x| x.gate.as_mut()) {
                p.a.pop();
            }
            "lora A one short".into()
        }
        _ => {
            ad.shared = Some(lora_shared(h, i));
            "lora on a shared expert".into()
        }
    }
}

fn lora_shared(h: usize, i: usize) -> LoraExpert {
    let one = lora(1, h, i, 2, None);
    one.experts.into_iter().next().unwrap_or_default()
}
