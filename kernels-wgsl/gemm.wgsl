// The wgpu experts' grouped GEMMs, weights dequantized in the shader from the one layout
// of `src/backends/wgpu/layout.rs`:
//   w = ((lut[code] - zero) * s1[e, n / gn, kgroup]) [rounded to bf16] [* s2[e, n / gn2]]
// f32 accumulation over 16 x 16 tiles in workgroup memory, in the emulation's order. One workgroup: 16 output
// columns x one token block of the aligned batch (`fm_align`: 16 slots of one expert).
//
//   fm_gemm_up    gemm1 + bias + LoRA delta, rounded to the model dtype, the activation
//                 (gate and up rows read together), rounded again -> inter [slots, I]
//   fm_gemm_down  gemm2 + bias + LoRA delta, times the router weight -> y [pairs, H]
//   fm_combine    out[t] += sum_j y[t * top_k + j], in j order (no f32 atomics)
//
// Every launch passes the fourteen pointers below (null where unused) and the scalars of
// `Params`, so `p` sits at binding 14 for every entry point.

override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
override WG_Z: u32 = 1u;

@group(0) @binding(0) var<storage, read_write> codes: array<u32>;
@group(0) @binding(1) var<storage, read_write> lut: array<f32>;
@group(0) @binding(2) var<storage, read_write> scales: array<f32>;
@group(0) @binding(3) var<storage, read_write> zeros: array<f32>;
@group(0) @binding(4) var<storage, read_write> g_idx: array<u32>;
@group(0) @binding(5) var<storage, read_write> outer: array<f32>;
@group(0) @binding(6) var<storage, read_write> bias: array<f32>;
@group(0) @binding(7) var<storage, read_write> x: array<f32>;
@group(0) @binding(8) var<storage, read_write> sorted: array<i32>;
@group(0) @binding(9) var<storage, read_write> block_expert: array<i32>;
@group(0) @binding(10) var<storage, read_write> num_slots: array<i32>;
@group(0) @binding(11) var<storage, read_write> delta: array<f32>;
@group(0) @binding(12) var<storage, read_write> topk_weights: array<f32>;
@group(0) @binding(13) var<storage, read_write> out: array<f32>;

struct Params {
    n: u32,            // rows of the weight (N)
    k: u32,            // columns (K)
    wpr: u32,          // code words per row
    bits: u32,
    float16: u32,      // 1 bf16, 2 f16, 0 lut
    group_n: u32,
    group_k: u32,
    n_groups: u32,     // ceil(N / group_n)
    k_groups: u32,
    zero: f32,
    round_bf16: u32,
    outer_group_n: u32,
    outer_groups: u32,
    top_k: u32,
    pairs: u32,
    bt: u32,           // slots per token block
    act_kind: i32,     // gpu::activation_code
    alpha: f32,
    limit: f32,
    inter: u32,        // I: gemm1's output columns
    model_f16: u32,
    weighted: u32,     // gemm2: multiply by the router weight
    tokens: u32,
    hidden: u32,
    x_by_slot: u32,    // gemm1: x holds a row per slot (per-expert static fp8), not per token
    present: u32,
}
@group(0) @binding(14) var<storage, read> p: Params;

const T: u32 = 16u;

fn has(arg: u32) -> bool {
    return (p.present & (1u << arg)) != 0u;
}

fn bf16(v: f32) -> f32 {
    let b = bitcast<u32>(v);
    if (v != v) { return v; }
    return bitcast<f32>((b + 0x7fffu + ((b >> 16u) & 1u)) & 0xffff0000u);
}

fn to_model(v: f32) -> f32 {
    if (p.model_f16 != 0u) { return quantizeToF16(v); }
    return bf16(v);
}

fn weight(e: u32, n: u32, k: u32) -> f32 {
    let per = 32u / p.bits;
    let word = codes[(e * p.n + n) * p.wpr + k / per];
    let code = (word >> ((k % per) * p.bits)) & ((1u << p.bits) - 1u);
    var v: f32;
    if (p.float16 == 1u) {
        v = bitcast<f32>(code << 16u);
    } else if (p.float16 == 2u) {
        v = unpack2x16float(code).x;
    } else {
        v = lut[code];
    }
    var kg = k / p.group_k;
    if (has(4u)) { kg = g_idx[e * p.k + k]; }
    let s = (e * p.n_groups + n / p.group_n) * p.k_groups + kg;
    var zero = p.zero;
    if (has(3u)) { zero = zeros[s]; }
    var w = (v - zero) * scales[s];
    if (p.round_bf16 != 0u) { w = bf16(w); }
    if (has(5u)) { w = w * outer[e * p.outer_groups + n / p.outer_group_n]; }
    return w;
}

fn erf_(x: f32) -> f32 {
    // Chebyshev fit of erfc (fractional error below 1.2e-7).
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277)))))))));
    if (x >= 0.0) { return 1.0 - r; }
    return r - 1.0;
}

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

fn activation(g: f32, u: f32) -> f32 {
    switch p.act_kind {
        case 0: { return silu(g) * u; }
        case 1: { return 0.5 * g * (1.0 + erf_(g * 0.70710677)) * u; }
        case 2: {
            let a = clamp(0.7978846 * (g + 0.044715 * g * g * g), -15.0, 15.0);
            return 0.5 * g * (1.0 + tanh(a)) * u;
        }
        case 3: {
            let gg = min(g, p.limit);
            let uu = clamp(u, -p.limit, p.limit);
            return (uu + 1.0) * gg / (1.0 + exp(-p.alpha * gg));
        }
        case 4: { let m = max(g, 0.0); return m * m; }
        default: { return silu(g); }
    }
}

// The weight rows gemm1 column j reads: (gate, up); up = gate when not gated.
fn gate_up(j: u32) -> vec2<u32> {
    switch p.act_kind {
        case 0, 1, 2: { return vec2<u32>(j, p.inter + j); }
        case 3: { return vec2<u32>(2u * j, 2u * j + 1u); }
        default: { return vec2<u32>(j, j); }
    }
}

fn gated() -> bool {
    return p.act_kind <= 3;
}

var<workgroup> xs: array<f32, 256>;
var<workgroup> wa: array<f32, 256>;
var<workgroup> wb: array<f32, 256>;
var<workgroup> wg_expert: i32;
var<workgroup> wg_slots: i32;

struct Tile {
    acc_a: f32,
    acc_b: f32,
    expert: u32,
    valid_block: bool,
}

// Shared by both GEMMs: the block's expert, and the K loop over 16-wide tiles. Thread
// (tx, ty) loads input element (slot ty, k0 + tx) — gemm1 (`two`) reads the slot's token
// row (the slot's own row when `x_by_slot`), gemm2 the slot's own row — and weight
// element (column ty, k0 + tx): gemm1 column j reads its gate and up rows, gemm2 column n
// row n; `cols` columns exist.
fn tile(lid: vec3<u32>, wid: vec3<u32>, two: bool, cols: u32) -> Tile {
    let tx = lid.x;
    let ty = lid.y;
    let b = wid.y;
    if (tx == 0u && ty == 0u) {
        wg_expert = block_expert[b];
        wg_slots = num_slots[0];
    }
    let e_i = workgroupUniformLoad(&wg_expert);
    let ns = workgroupUniformLoad(&wg_slots);
    var t: Tile;
    t.acc_a = 0.0;
    t.acc_b = 0.0;
    t.valid_block = e_i >= 0 && b * p.bt < u32(max(ns, 0));
    t.expert = u32(max(e_i, 0));
    if (!t.valid_block) { return t; }
    let slot = b * p.bt + ty;
    let pair = u32(max(sorted[slot], 0));
    let slot_ok = pair < p.pairs;
    let wcol = wid.x * T + ty;
    var rows = vec2<u32>(wcol, wcol);
    if (two) { rows = gate_up(wcol); }
    let wcol_ok = wcol < cols;
    let kk = p.k;
    // The emulation's dot product (`moe::emulation::dot`): eight lanes over K rounded down
    // to a multiple of 8, each in K order, summed lane by lane, then the tail in order;
    // with the same weights and inputs the sums are then the same f32 values.
    let k8 = kk - kk % 8u;
    var la: array<f32, 8>;
    var lb: array<f32, 8>;
    var ta = 0.0;
    var tb = 0.0;
    for (var k0 = 0u; k0 < kk; k0 += T) {
        let kx = k0 + tx;
        var xv = 0.0;
        if (slot_ok && kx < kk) {
            var r = slot;
            if (two && p.x_by_slot == 0u) { r = pair / p.top_k; }
            xv = x[r * kk + kx];
        }
        xs[ty * T + tx] = xv;
        var a = 0.0;
        var c = 0.0;
        if (wcol_ok && kx < kk) {
            a = weight(t.expert, rows.x, kx);
            if (two && gated()) { c = weight(t.expert, rows.y, kx); }
        }
        wa[ty * T + tx] = a;
        wb[ty * T + tx] = c;
        workgroupBarrier();
        for (var q = 0u; q < T; q++) {
            let xq = xs[ty * T + q];
            let pa = wa[tx * T + q] * xq;
            let pb = wb[tx * T + q] * xq;
            if (k0 + q < k8) {
                la[q & 7u] += pa;
                lb[q & 7u] += pb;
            } else {
                ta += pa;
                tb += pb;
            }
        }
        workgroupBarrier();
    }
    for (var l = 0u; l < 8u; l++) {
        t.acc_a += la[l];
        t.acc_b += lb[l];
    }
    t.acc_a += ta;
    t.acc_b += tb;
    return t;
}

// gemm1: x [tokens, K] f32 (quantize-dequantized), or [slots, K] (`x_by_slot`: each
// slot's row quantized with its expert's static scale), out = inter [slots, I].
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn fm_gemm_up(@builtin(local_invocation_id) lid: vec3<u32>,
              @builtin(workgroup_id) wid: vec3<u32>) {
    let t = tile(lid, wid, true, p.inter);
    let j = wid.x * T + lid.x;
    let slot = wid.y * p.bt + lid.y;
    if (j >= p.inter) { return; }
    var v = 0.0;
    if (t.valid_block) {
        let pair = u32(max(sorted[slot], 0));
        if (pair < p.pairs) {
            let rows = gate_up(j);
            var g = t.acc_a;
            var u = t.acc_b;
            if (has(6u)) {
                g = g + bias[t.expert * p.n + rows.x];
                u = u + bias[t.expert * p.n + rows.y];
            }
            if (has(11u)) {
                g = g + delta[slot * p.n + rows.x];
                u = u + delta[slot * p.n + rows.y];
            }
            v = to_model(activation(to_model(g), to_model(u)));
        }
    }
    out[slot * p.inter + j] = v;
}

// gemm2: x = the intermediate [slots, I] f32, out = y [pairs, H] (pairs no expert took
// stay as the driver zeroed them).
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn fm_gemm_down(@builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(workgroup_id) wid: vec3<u32>) {
    let t = tile(lid, wid, false, p.n);
    let n = wid.x * T + lid.x;
    let slot = wid.y * p.bt + lid.y;
    if (n >= p.n || !t.valid_block) { return; }
    let pair = u32(max(sorted[slot], 0));
    if (pair >= p.pairs) { return; }
    var y = t.acc_a;
    if (has(6u)) { y = y + bias[t.expert * p.n + n]; }
    if (has(11u)) { y = y + delta[slot * p.n + n]; }
    var w = 1.0;
    if (p.weighted != 0u) { w = topk_weights[pair]; }
    out[pair * p.n + n] = w * y;
}

// out [tokens, hidden] += the token's pair rows of y (x), in choice order.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn fm_combine(@builtin(local_invocation_id) lid: vec3<u32>,
              @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = (wid.x + wid.y * nwg.x) * (WG_X * WG_Y) + lid.y * WG_X + lid.x;
    if (i >= p.tokens * p.hidden) { return; }
    let tok = i / p.hidden;
    let h = i % p.hidden;
    var s = 0.0;
    for (var j = 0u; j < p.top_k; j++) {
        s += x[(tok * p.top_k + j) * p.hidden + h];
    }
    out[i] = out[i] + s;
}
