// Routing in one launch, the twin of kernels-cuda/route.cu's fm_route: router logits
// [tokens, E] -> top-k expert ids and weights, as fleetmoe::moe::Router defines them (ties
// to the lower index). Four tokens per workgroup, WG_X / 4 invocations ("lanes") each.
//
// mode: 0 softmax top-k, 1 sigmoid top-k, 2 grouped (DeepSeek), 3 sigmoid top-1 (Llama 4).
// Grouped: scores by `group_sigmoid` (else softmax), plus the correction bias when given to
// choose; a group scores the sum of its top two biased scores with a bias, else its max;
// the best `topk_groups` groups are kept; weights are the unbiased scores, renormalized if
// asked, times `scaling`.
//
// Unlike route.cu, nothing per expert is kept in workgroup memory (WGSL sizes it at compile
// time, and 16 KiB is all some adapters give): scores are recomputed from the logits where
// needed (the same expression, so the same value), chosen experts are a bitmask, and any k
// works (each token's lane 0 writes its k results).

override WG_X: u32 = 64u;
override WG_Y: u32 = 1u;
override WG_Z: u32 = 1u;

const TOKENS: u32 = 4u;
const MAX_E: u32 = 1024u;
const MAX_G: u32 = 64u;
const MAX_THREADS: u32 = 1024u;
const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<i32>;
@group(0) @binding(3) var<storage, read_write> weights: array<f32>;

struct Params {
    tokens: i32,
    num_experts: i32,
    k: i32,
    mode: i32,
    renormalize: i32,
    groups: i32,
    topk_groups: i32,
    group_sigmoid: i32,
    scaling: f32,
    present: u32,
}
@group(0) @binding(4) var<storage, read> p: Params;

// Per lane: its best candidate of the round (value, expert).
var<workgroup> red_v: array<f32, MAX_THREADS>;
var<workgroup> red_i: array<u32, MAX_THREADS>;
// Per token: chosen experts (a bit each), kept groups (a bit each), softmax max and sum,
// group scores.
var<workgroup> chosen: array<u32, 128>;  // TOKENS * MAX_E / 32
var<workgroup> kept: array<u32, 8>;      // TOKENS * MAX_G / 32
var<workgroup> stat: array<f32, 8>;      // TOKENS * (max, sum)
var<workgroup> gscore: array<f32, 256>;  // TOKENS * MAX_G

// -inf (a constant expression cannot bitcast).
fn neg_inf() -> f32 {
    return bitcast<f32>(0xff800000u);
}

fn has_bias() -> bool {
    return (p.present & 2u) != 0u;
}

fn sigmoid_scores() -> bool {
    return p.mode == 1 || p.mode == 3 || (p.mode == 2 && p.group_sigmoid != 0);
}

// The score of expert e of the token whose logits start at `row` (slot `tok`).
fn score(row: u32, tok: u32, e: u32) -> f32 {
    let x = logits[row + e];
    if (sigmoid_scores()) {
        return 1.0 / (1.0 + exp(-x));
    }
    return exp(x - stat[tok * 2u]) / stat[tok * 2u + 1u];
}

// What the top-k is taken over, before group masking.
fn choice(row: u32, tok: u32, e: u32) -> f32 {
    if (p.mode == 3) {
        return logits[row + e];
    }
    let s = score(row, tok, e);
    if (p.mode == 2 && has_bias()) {
        return s + bias[e];
    }
    return s;
}

// Whether (v, i) beats (bv, bi): larger, or equal and a lower index; NONE loses to all.
fn better(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    if (i == NONE) {
        return false;
    }
    return bi == NONE || v > bv || (v == bv && i < bi);
}

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn fm_route(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lanes = max(WG_X / TOKENS, 1u);
    let tok = lid / lanes;
    let lane = lid % lanes;
    let t = (wid.x + wid.y * nwg.x) * TOKENS + tok;
    let ne = u32(max(p.num_experts, 0));
    let k = u32(max(p.k, 0));
    let live = tok < TOKENS && t < u32(max(p.tokens, 0)) && ne <= MAX_E;
    let row = t * ne;
    let threads = WG_X * WG_Y * WG_Z;

    for (var i = lid; i < 128u; i += threads) {
        chosen[i] = 0u;
    }
    if (lid < 8u) {
        kept[lid] = 0xffffffffu;
    }

    // Softmax: the row's max, then the sum of exp(x - max) (lane-strided, then in lane
    // order: a fixed order, so every run gives the same sum).
    if (!sigmoid_scores()) {
        var m = neg_inf();
        if (live) {
            for (var e = lane; e < ne; e += lanes) {
                m = max(m, logits[row + e]);
            }
        }
        red_v[lid] = m;
        workgroupBarrier();
        if (live && lane == 0u) {
            var mm = neg_inf();
            for (var l = 0u; l < lanes; l++) {
                mm = max(mm, red_v[lid + l]);
            }
            stat[tok * 2u] = mm;
        }
        workgroupBarrier();
        var s = 0.0;
        if (live) {
            let mx = stat[tok * 2u];
            for (var e = lane; e < ne; e += lanes) {
                s += exp(logits[row + e] - mx);
            }
        }
        red_v[lid] = s;
        workgroupBarrier();
        if (live && lane == 0u) {
            var ss = 0.0;
            for (var l = 0u; l < lanes; l++) {
                ss += red_v[lid + l];
            }
            stat[tok * 2u + 1u] = ss;
        }
    }
    workgroupBarrier();

    // Grouped: score each group, keep the best topk_groups (ties to the lower group).
    if (p.mode == 2) {
        let groups = u32(max(p.groups, 1));
        let per = ne / groups;
        if (live && groups <= MAX_G) {
            for (var g = lane; g < groups; g += lanes) {
                var a = neg_inf();
                var b = neg_inf();
                for (var e = g * per; e < (g + 1u) * per; e++) {
                    let v = choice(row, tok, e);
                    if (v > a) {
                        b = a;
                        a = v;
                    } else if (v > b) {
                        b = v;
                    }
                }
                var gs = a;
                if (has_bias() && per >= 2u) {
                    gs = a + b;
                }
                gscore[tok * MAX_G + g] = gs;
            }
        }
        workgroupBarrier();
        if (live && lane == 0u && groups <= MAX_G) {
            var mask = vec2<u32>(0u, 0u);
            for (var r = 0; r < p.topk_groups; r++) {
                var best = NONE;
                for (var g = 0u; g < groups; g++) {
                    let taken = (mask[g / 32u] >> (g % 32u)) & 1u;
                    if (taken == 0u && (best == NONE || gscore[tok * MAX_G + g] > gscore[tok * MAX_G + best])) {
                        best = g;
                    }
                }
                if (best != NONE) {
                    mask[best / 32u] |= 1u << (best % 32u);
                }
            }
            kept[tok * 2u] = mask.x;
            kept[tok * 2u + 1u] = mask.y;
        }
        workgroupBarrier();
    }

    // k rounds: each lane's best unchosen candidate, then lane 0 takes the best of them.
    let groups = u32(max(p.groups, 1));
    let per = max(ne / groups, 1u);
    var sum = 0.0;
    for (var r = 0u; r < k; r++) {
        var bv = neg_inf();
        var bi = NONE;
        if (live) {
            for (var e = lane; e < ne; e += lanes) {
                if (((chosen[tok * 32u + e / 32u] >> (e % 32u)) & 1u) != 0u) {
                    continue;
                }
                var v = choice(row, tok, e);
                if (p.mode == 2) {
                    let g = e / per;
                    if (((kept[tok * 2u + g / 32u] >> (g % 32u)) & 1u) == 0u) {
                        v = neg_inf();
                    }
                }
                if (better(v, e, bv, bi)) {
                    bv = v;
                    bi = e;
                }
            }
        }
        red_v[lid] = bv;
        red_i[lid] = bi;
        workgroupBarrier();
        if (live && lane == 0u) {
            for (var l = 1u; l < lanes; l++) {
                if (better(red_v[lid + l], red_i[lid + l], bv, bi)) {
                    bv = red_v[lid + l];
                    bi = red_i[lid + l];
                }
            }
            // Every expert is a candidate until chosen, so with k <= E (the driver checks)
            // bi is an expert; past E the slot says so (-1, weight 0) rather than read out
            // of bounds.
            var w = 0.0;
            var id = -1;
            if (bi != NONE) {
                w = score(row, tok, bi);
                id = i32(bi);
                chosen[tok * 32u + bi / 32u] |= 1u << (bi % 32u);
            }
            ids[t * k + r] = id;
            weights[t * k + r] = w;
            sum += w;
        }
        workgroupBarrier();
    }

    if (live && lane == 0u) {
        for (var r = 0u; r < k; r++) {
            var w = weights[t * k + r];
            if (p.renormalize != 0 && p.mode != 3 && sum > 0.0) {
                w = w / sum;
            }
            if (p.mode == 2) {
                w = w * p.scaling;
            }
            weights[t * k + r] = w;
        }
    }
}
