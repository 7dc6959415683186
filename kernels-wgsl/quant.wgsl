// The driver's element-wise kernels of kernels-cuda/quant.cu, argument for argument:
//
//   fm_scale_rows   dst[t, :] = round(src[t, :] * w[t]) in the model dtype
//   fm_shared_gate  gate[t] = sigmoid(x[t, :] · g)
//   fm_finalize     out[i] = round(acc[i]) in the model dtype; acc[i] = 0 behind
//   fm_clamp_slots  dst[i] = src[i] if it is an adapter slot (0 .. adapters), else -1
//
// Model-dtype tensors (bf16, or f16 when `is_f16`) hold two values per u32, low half
// first; an invocation always writes whole words, so no two write halves of one word. The
// conversions are bit arithmetic, round to nearest even, exactly as quant.cu's (WGSL's
// f32 -> f16 conversion leaves the rounding to the implementation). The quantizers only
// the CUDA experts use are not here; the wgpu experts' own are in act.wgsl.
//
// Each kernel declares its own bindings (WGSL allows one binding number per entry point
// to be a different variable).

override WG_X: u32 = 64u;
override WG_Y: u32 = 1u;
override WG_Z: u32 = 1u;

const MAX_THREADS: u32 = 1024u;

// fm_scale_rows and fm_shared_gate: (x, rows, cols, vector, is_f16, out).
@group(0) @binding(0) var<storage, read_write> rows_in: array<u32>;
@group(0) @binding(1) var<storage, read_write> row_vec: array<f32>;
@group(0) @binding(2) var<storage, read_write> rows_out: array<u32>;
@group(0) @binding(2) var<storage, read_write> gate: array<f32>;
struct RowParams {
    rows: i32,
    cols: i32,
    is_f16: i32,
    present: u32,
}
@group(0) @binding(3) var<storage, read> pr: RowParams;

// fm_finalize: (acc, n: i64, is_f16, out).
@group(0) @binding(0) var<storage, read_write> acc: array<f32>;
@group(0) @binding(1) var<storage, read_write> fin_out: array<u32>;
struct FinalizeParams {
    n_lo: u32,
    n_hi: u32,
    is_f16: i32,
    present: u32,
}
@group(0) @binding(2) var<storage, read> pf: FinalizeParams;

// fm_clamp_slots: (src, n, adapters, dst).
@group(0) @binding(0) var<storage, read_write> slots_in: array<i32>;
@group(0) @binding(1) var<storage, read_write> slots_out: array<i32>;
struct ClampParams {
    n: i32,
    adapters: i32,
    present: u32,
}
@group(0) @binding(2) var<storage, read> pc: ClampParams;

var<workgroup> red: array<f32, MAX_THREADS>;

fn bf16_to_f32(h: u32) -> f32 {
    return bitcast<f32>(h << 16u);
}

// Round to nearest even; NaN stays NaN.
fn f32_to_bf16(f: f32) -> u32 {
    let u = bitcast<u32>(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return ((u >> 16u) | 0x40u) & 0xffffu;
    }
    return ((u + 0x7fffu + ((u >> 16u) & 1u)) >> 16u) & 0xffffu;
}

fn f16_to_f32(h: u32) -> f32 {
    let s = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        // Zero or subnormal: m * 2^-24, exact in f32.
        return bitcast<f32>(s | bitcast<u32>(f32(m) * 5.9604644775390625e-8));
    }
    if (e == 31u) {
        return bitcast<f32>(s | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(s | ((e + 112u) << 23u) | (m << 13u));
}

// Round to nearest even, overflow to infinity; NaN stays NaN.
fn f32_to_f16(f: f32) -> u32 {
    let u = bitcast<u32>(f);
    let s = (u >> 16u) & 0x8000u;
    let a = u & 0x7fffffffu;
    if (a > 0x7f800000u) {
        return s | 0x7e00u | ((a >> 13u) & 0x3ffu);
    }
    if (a >= 0x477ff000u) {
        return s | 0x7c00u;
    }
    if (a >= 0x38800000u) {
        return s | ((a - 0x38000000u + 0xfffu + ((a >> 13u) & 1u)) >> 13u);
    }
    // Subnormal (or zero): the nearest multiple of 2^-24, ties to even.
    return s | u32(round(bitcast<f32>(a) * 16777216.0));
}

fn decode(h: u32, is_f16: bool) -> f32 {
    if (is_f16) {
        return f16_to_f32(h);
    }
    return bf16_to_f32(h);
}

fn encode(f: f32, is_f16: bool) -> u32 {
    if (is_f16) {
        return f32_to_f16(f);
    }
    return f32_to_bf16(f);
}

fn half_of(word: u32, i: u32) -> u32 {
    return (word >> (16u * (i & 1u))) & 0xffffu;
}

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn fm_scale_rows(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let rows = u32(max(pr.rows, 0));
    let cols = u32(max(pr.cols, 0));
    let r = row_of(wid, nwg);
    if (r >= rows || cols == 0u) {
        return;
    }
    let f16 = pr.is_f16 != 0;
    let n = rows * cols;
    // This row's workgroup writes the words whose low half is in the row (the last may
    // end in the next row, whose weight then scales that half).
    let first = (r * cols + 1u) / 2u;
    let last = ((r + 1u) * cols + 1u) / 2u;
    let s = row_vec[r];
    let threads = WG_X * WG_Y * WG_Z;
    for (var w = first + lid; w < last; w += threads) {
        let x = rows_in[w];
        let lo = encode(decode(half_of(x, 0u), f16) * s, f16);
        var hi = half_of(rows_out[w], 1u);
        if (2u * w + 1u < n) {
            hi = encode(decode(half_of(x, 1u), f16) * row_vec[(2u * w + 1u) / cols], f16);
        }
        rows_out[w] = lo | (hi << 16u);
    }
}

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn fm_shared_gate(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let rows = u32(max(pr.rows, 0));
    let cols = u32(max(pr.cols, 0));
    let r = row_of(wid, nwg);
    if (r >= rows) {
        return;
    }
    let f16 = pr.is_f16 != 0;
    let threads = min(WG_X * WG_Y * WG_Z, MAX_THREADS);
    var s = 0.0;
    if (lid < threads) {
        for (var c = lid; c < cols; c += threads) {
            let i = r * cols + c;
            s += decode(half_of(rows_in[i / 2u], i), f16) * row_vec[c];
        }
        red[lid] = s;
    }
    workgroupBarrier();
    // Tree sum: fold onto the largest power of two, then halve (a fixed order).
    var p2 = 1u;
    while (p2 * 2u <= threads) {
        p2 *= 2u;
    }
    if (lid >= p2 && lid < threads) {
        red[lid - p2] += red[lid];
    }
    workgroupBarrier();
    for (var h = p2 / 2u; h > 0u; h /= 2u) {
        if (lid < h) {
            red[lid] += red[lid + h];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        gate[r] = 1.0 / (1.0 + exp(-red[0]));
    }
}

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn fm_finalize(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    var n = pf.n_lo;
    if (pf.n_hi != 0u) {
        n = 0xffffffffu;
    }
    n = min(n, arrayLength(&acc));
    let f16 = pf.is_f16 != 0;
    let words = n / 2u + (n & 1u);
    let threads = WG_X * WG_Y * WG_Z;
    let stride = nwg.x * nwg.y * nwg.z * threads;
    for (var w = row_of(wid, nwg) * threads + lid; w < words; w += stride) {
        let i = 2u * w;
        let lo = encode(acc[i], f16);
        acc[i] = 0.0;
        var hi = half_of(fin_out[w], 1u);
        if (i + 1u < n) {
            hi = encode(acc[i + 1u], f16);
            acc[i + 1u] = 0.0;
        }
        fin_out[w] = lo | (hi << 16u);
    }
}

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn fm_clamp_slots(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let n = u32(max(pc.n, 0));
    let threads = WG_X * WG_Y * WG_Z;
    let stride = nwg.x * nwg.y * nwg.z * threads;
    for (var i = row_of(wid, nwg) * threads + lid; i < n; i += stride) {
        let a = slots_in[i];
        if (a >= 0 && a < pc.adapters) {
            slots_out[i] = a;
        } else {
            slots_out[i] = -1;
        }
    }
}
