// LoRA deltas for the wgpu experts, from the adapters as `src/gpu/lora.rs` packs them for
// every vendor (A `[adapter, expert][RR, K]`, B transposed and pre-scaled
// `[adapter, expert][RR, N]`). Per expert-sorted slot whose token has an adapter:
//
//   fm_lora_shrink   t[slot, q]     = sum_k A[q, k] * x[row, k]   (row: token or slot)
//   fm_lora_expand   delta[slot, n] = sum_q B[q, n] * t[slot, q]
//
// Slots of padding, of unused blocks or of tokens without an adapter (-1) get zeros, so
// the GEMM epilogues add the delta rows unconditionally. Every launch passes the nine
// pointers below and the scalars of `Params`.

override WG_X: u32 = 64u;
override WG_Y: u32 = 1u;
override WG_Z: u32 = 1u;

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> t: array<f32>;
@group(0) @binding(3) var<storage, read_write> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> delta: array<f32>;
@group(0) @binding(5) var<storage, read_write> sorted: array<i32>;
@group(0) @binding(6) var<storage, read_write> block_expert: array<i32>;
@group(0) @binding(7) var<storage, read_write> num_slots: array<i32>;
@group(0) @binding(8) var<storage, read_write> token_adapter: array<i32>;

struct Params {
    k: u32,          // width of x (and of A)
    x_by_slot: u32,  // x rows by slot (else by token)
    rr: u32,         // rows of A, columns of t
    n: u32,          // outputs of B
    bt: u32,
    pairs: u32,
    top_k: u32,
    experts: u32,
    slots: u32,      // slots in the workspace
    present: u32,
}
@group(0) @binding(9) var<storage, read> p: Params;

fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG_X + lid.x;
}

// The adapter-expert matrix index of `slot` and its input row, or -1 when none.
fn route(slot: u32) -> vec3<i32> {
    let e = block_expert[slot / p.bt];
    if (e < 0 || i32(slot) >= num_slots[0]) { return vec3<i32>(-1, 0, 0); }
    let pair = sorted[slot];
    if (pair < 0 || u32(pair) >= p.pairs) { return vec3<i32>(-1, 0, 0); }
    let token = u32(pair) / p.top_k;
    let ad = token_adapter[token];
    if (ad < 0) { return vec3<i32>(-1, 0, 0); }
    var row = token;
    if (p.x_by_slot != 0u) { row = slot; }
    return vec3<i32>(ad * i32(p.experts) + e, i32(row), 0);
}

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn fm_lora_shrink(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.slots * p.rr) { return; }
    let slot = i / p.rr;
    let q = i % p.rr;
    let r = route(slot);
    var s = 0.0;
    if (r.x >= 0) {
        let abase = (u32(r.x) * p.rr + q) * p.k;
        let xbase = u32(r.y) * p.k;
        for (var c = 0u; c < p.k; c++) { s += a[abase + c] * x[xbase + c]; }
    }
    t[i] = s;
}

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn fm_lora_expand(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.slots * p.n) { return; }
    let slot = i / p.n;
    let n = i % p.n;
    let r = route(slot);
    var s = 0.0;
    if (r.x >= 0) {
        let bbase = u32(r.x) * p.rr * p.n + n;
        for (var q = 0u; q < p.rr; q++) { s += b[bbase + q * p.n] * t[slot * p.rr + q]; }
    }
    delta[i] = s;
}
