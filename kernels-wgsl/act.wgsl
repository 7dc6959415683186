// Activation quantize-dequantize for the wgpu experts: what `quant::activation::ActQuant`
// does to a GEMM input, in f32, value for value, so the GEMM multiplies the emulation's
// numbers. Dynamic scales come from amax reductions (max is order-free, so exact); every
// division goes through `div_rn`, a correctly rounded quotient, since WGSL's `/` may be off
// by an ulp or two (lavapipe's is) and a flipped quotient flips a code.
//
//   fm_to_f32      model-dtype rows (bf16 / f16, two per u32) -> f32
//   fm_row_amax    amax of each row (one workgroup per row)
//   fm_amax_total  amax of the whole tensor from the row amaxes (one thread)
//   fm_qdq         the scheme's quantize-dequantize, one element per thread
//   fm_qdq_slots   fp8 with a static scale per expert: a GEMM input row per slot of the
//                  aligned batch, quantized with the scale of the slot's expert

override WG_X: u32 = 64u;
override WG_Y: u32 = 1u;
override WG_Z: u32 = 1u;

@group(0) @binding(0) var<storage, read_write> a0: array<u32>;
@group(0) @binding(1) var<storage, read_write> f1: array<f32>;
@group(0) @binding(2) var<storage, read_write> f2: array<f32>;
@group(0) @binding(3) var<storage, read_write> f3: array<f32>;

struct Params {
    i0: i32, i1: i32, i2: i32, i3: i32, i4: i32, i5: i32,
    f6: f32, f7: f32, i8: i32, i9: i32,
    present: u32,
}
@group(0) @binding(4) var<storage, read> p: Params;

fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG_X + lid.x;
}

fn model_value(i: u32, is_f16: bool) -> f32 {
    let w = a0[i / 2u];
    if (is_f16) {
        return unpack2x16float(w)[i % 2u];
    }
    return bitcast<f32>(((w >> (16u * (i % 2u))) & 0xffffu) << 16u);
}

// Every launch of this module but fm_qdq_slots's passes four pointers (null where unused)
// and ten scalars, so `p` sits at binding 4 for every other entry point.

// fm_to_f32(src model dtype, dst f32, _, _; n, is_f16)
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn fm_to_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= u32(p.i0)) { return; }
    f1[i] = model_value(i, p.i1 != 0);
}

var<workgroup> red: array<f32, 256>;

// NaN-propagating max of magnitudes, as `quant::activation::amax`.
fn amax2(a: f32, b: f32) -> f32 {
    if (a != a || b != b) { return bitcast<f32>(0x7fc00000u); }
    return max(a, b);
}

// fm_row_amax(src f32, amax, _, _; rows, cols)
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn fm_row_amax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.x + wid.y * nwg.x;
    let rows = u32(p.i0);
    let cols = u32(p.i1);
    var m = 0.0;
    if (row < rows) {
        for (var c = lid.x; c < cols; c += WG_X) {
            m = amax2(m, abs(bitcast<f32>(a0[row * cols + c])));
        }
    }
    red[lid.x] = m;
    workgroupBarrier();
    var s = WG_X / 2u;
    loop {
        if (s == 0u) { break; }
        if (lid.x < s) { red[lid.x] = amax2(red[lid.x], red[lid.x + s]); }
        workgroupBarrier();
        s = s / 2u;
    }
    if (lid.x == 0u && row < rows) { f1[row] = red[0]; }
}

// fm_amax_total(_, amax, total, _; rows)
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn fm_amax_total(@builtin(local_invocation_id) lid: vec3<u32>) {
    if (lid.x != 0u) { return; }
    var m = 0.0;
    for (var r = 0u; r < u32(p.i0); r++) { m = amax2(m, f1[r]); }
    f2[0] = m;
}

// Veltkamp's split of an f32 into two halves of 12 significant bits.
fn split(a: f32) -> vec2<f32> {
    let c = 4097.0 * a;
    let hi = c - (c - a);
    return vec2<f32>(hi, a - hi);
}

// a - c * b, exactly enough to compare candidates (Dekker's product, no fma needed: an
// adapter's fma may be a multiply and an add).
fn residual(a: f32, c: f32, b: f32) -> f32 {
    let p = c * b;
    let x = split(c);
    let y = split(b);
    let e = ((x.x * y.x - p) + x.x * y.y + x.y * y.x) + x.y * y.y;
    return (a - p) - e;
}

// a / b rounded to nearest (a quotient is never exactly halfway): WGSL's `/` may be an
// ulp or two off, so the neighbours of its answer are tried and the closest kept.
fn div_rn(a: f32, b: f32) -> f32 {
    let q = a / b;
    let aa = abs(a);
    let ab = abs(b);
    let aq = abs(q);
    if (!(aq > 1e-30 && aq < 1e30 && ab > 1e-30 && ab < 1e30 && aa > 1e-30 && aa < 1e30)) {
        return q;
    }
    let bits = bitcast<u32>(aq);
    var best = aq;
    var err = abs(residual(aa, aq, ab));
    let lo = bitcast<f32>(bits - 1u);
    let el = abs(residual(aa, lo, ab));
    if (el < err) { best = lo; err = el; }
    let hi = bitcast<f32>(bits + 1u);
    let eh = abs(residual(aa, hi, ab));
    if (eh < err) { best = hi; }
    return bitcast<f32>(bitcast<u32>(best) | ((bitcast<u32>(a) ^ bitcast<u32>(b)) & 0x80000000u));
}

// Rounds to the grid of a minifloat with `mbits` mantissa bits, smallest normal exponent
// `emin`, saturating at `gmax`; ties to even (WGSL's `round`).
fn round_grid(x: f32, mbits: i32, emin: i32, gmax: f32) -> f32 {
    let a = abs(x);
    if (a == 0.0 || a != a) { return x; }
    let eb = i32((bitcast<u32>(a) >> 23u) & 0xffu) - 127;
    let e = max(eb, emin);
    let q = round(ldexp(a, mbits - e));
    let r = min(ldexp(q, e - mbits), gmax);
    return bitcast<f32>(bitcast<u32>(r) | (bitcast<u32>(x) & 0x80000000u));
}

// The fp8 rule of `ActQuant::Fp8` with scale `s`: e4m3(clamp(v / s, ±gmax)) · s.
fn fp8_qdq(v: f32, s: f32, mbits: i32, emin: i32, gmax: f32) -> f32 {
    return round_grid(clamp(div_rn(v, s), -gmax, gmax), mbits, emin, gmax) * s;
}

fn src(i: u32) -> f32 {
    return bitcast<f32>(a0[i]);
}

fn group_amax(start: u32, len: u32) -> f32 {
    var m = 0.0;
    for (var c = 0u; c < len; c++) { m = amax2(m, abs(src(start + c))); }
    return m;
}

fn nan() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

// Quark's "even" shared exponent (`quant::mx::shared_exponent`); 1000 for a NaN amax.
fn mx_exponent(amax: f32, mbits: i32, emax: i32) -> i32 {
    if (amax != amax) { return 1000; }
    let bits = (bitcast<u32>(abs(amax)) + (1u << u32(23 - mbits - 1))) & 0xff800000u;
    var log2 = -126;
    if (bitcast<f32>(bits) != 0.0) {
        log2 = min(i32((bits >> 23u) & 0xffu) - 127, 127);
    }
    return clamp(log2 - emax, -127, 127);
}

// fm_qdq(src f32 bits, row amax, total amax, dst; rows, cols, mode, rule, mbits, emin,
//        gmax, scale, mx_mbits, mx_emax)
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn fm_qdq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    let rows = u32(p.i0);
    let cols = u32(p.i1);
    if (i >= rows * cols) { return; }
    let row = i / cols;
    let col = i % cols;
    let mode = p.i2;
    let mbits = p.i4;
    let emin = p.i5;
    let gmax = p.f6;
    let v = src(i);
    var out = v;
    if (mode == 1) {
        // fp8: dynamic scale max(amax, 1e-12) / fp8_max, or the static one.
        var s = p.f7;
        if (p.i3 != 3) {
            var m = 0.0;
            if (p.i3 == 0) {
                m = f2[0];
            } else if (p.i3 == 1) {
                m = f1[row];
            } else {
                let g0 = (col / 128u) * 128u;
                m = group_amax(row * cols + g0, min(128u, cols - g0));
            }
            if (m != m) { s = nan(); } else { s = div_rn(max(m, 1e-12), gmax); }
        }
        out = fp8_qdq(v, s, mbits, emin, gmax);
    } else if (mode == 2) {
        // int8 per token, symmetric.
        let s = div_rn(f1[row], 127.0);
        if (s > 0.0) {
            out = clamp(round(div_rn(v, s)), -128.0, 127.0) * s;
        }
    } else if (mode == 3) {
        // NVFP4, compressed-tensors' fake quantization with a static global scale.
        let g0 = (col / 16u) * 16u;
        let m = group_amax(row * cols + g0, 16u);
        let global = p.f7;
        var scale = round_grid(clamp(global * div_rn(m, 6.0), -448.0, 448.0), 3, -6, 448.0);
        if (scale == 0.0) { scale = 0.125; }
        let step = div_rn(scale, global);
        out = round_grid(clamp(div_rn(v, step), -6.0, 6.0), mbits, emin, gmax) * step;
    } else if (mode == 4) {
        // OCP MX, 32-element blocks sharing a power of two.
        let g0 = (col / 32u) * 32u;
        let m = group_amax(row * cols + g0, 32u);
        let e = mx_exponent(m, p.i8, p.i9);
        if (e == 1000) {
            out = nan();
        } else if (m != 0.0) {
            out = ldexp(round_grid(ldexp(v, -e), mbits, emin, gmax), e);
        }
    }
    f3[i] = out;
}

// fm_qdq_slots takes five pointers, so its scalars sit at binding 5 (binding 4 is its
// output here, `p` for every other entry point: one variable per entry point).
@group(0) @binding(1) var<storage, read_write> slot_pair: array<i32>;
@group(0) @binding(2) var<storage, read_write> slot_block_expert: array<i32>;
@group(0) @binding(4) var<storage, read_write> slot_out: array<f32>;

struct SlotParams {
    slots: i32, cols: i32, bt: i32, top_k: i32, pairs: i32, by_token: i32,
    experts: i32, mbits: i32, emin: i32, gmax: f32,
    present: u32,
}
@group(0) @binding(5) var<storage, read> ps: SlotParams;

// fm_qdq_slots(src f32 bits, sorted, block_expert, expert scales, dst; slots, cols, bt,
//              top_k, pairs, by_token, experts, mbits, emin, gmax)
// dst[slot, :] = fp8_qdq(src[row, :], scales[e]) with e the expert of the slot's block and
// row the slot's token (`by_token`, gemm1's input: hidden states [tokens, cols]) or the
// slot itself (gemm2's: the intermediate [slots, cols]); slots without a pair get 0.
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn fm_qdq_slots(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    let cols = u32(max(ps.cols, 0));
    if (cols == 0u || i >= u32(max(ps.slots, 0)) * cols) { return; }
    let slot = i / cols;
    let col = i % cols;
    let e = slot_block_expert[slot / u32(max(ps.bt, 1))];
    let pair = slot_pair[slot];
    var out = 0.0;
    if (e >= 0 && e < ps.experts && pair >= 0 && pair < ps.pairs) {
        var row = slot;
        if (ps.by_token != 0) { row = u32(pair) / u32(max(ps.top_k, 1)); }
        out = fp8_qdq(src(row * cols + col), f3[e], ps.mbits, ps.emin, ps.gmax);
    }
    slot_out[i] = out;
}
