// Routing alignment, the twin of kernels-cuda/align.cu's fm_align: (token, choice) pairs
// sorted by expert, each expert's run padded to a multiple of the GEMM's token tile. One
// workgroup, no host synchronisation.
//
// Outputs:
//   sorted[slot]       pair id (token * top_k + choice) or `pairs` for a padding slot
//   block_expert[b]    expert of token block b, -1 past the last used block
//   num_slots[0]       slots in use (a multiple of bt)
//   expert_counts[e]   pairs routed to expert e (for expert parallelism; may be null)
//
// Within an expert the pairs are in ascending order (align.cu's order there depends on its
// atomics): each chunk of WG_X pairs ranks its pairs among the chunk's earlier ones, so
// the output is deterministic and a host re-implementation can check it slot for slot.
// At most MAX_E experts and MAX_THREADS invocations (workgroup memory is sized at compile
// time); past that nothing is routed (num_slots 0, every block -1).

override WG_X: u32 = 64u;
override WG_Y: u32 = 1u;
override WG_Z: u32 = 1u;

const MAX_E: u32 = 1024u;
const MAX_THREADS: u32 = 1024u;
const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<storage, read_write> ids: array<i32>;
@group(0) @binding(1) var<storage, read_write> sorted: array<i32>;
@group(0) @binding(2) var<storage, read_write> block_expert: array<i32>;
@group(0) @binding(3) var<storage, read_write> num_slots: array<i32>;
@group(0) @binding(4) var<storage, read_write> expert_counts: array<i32>;

struct Params {
    pairs: i32,
    num_experts: i32,
    bt: i32,
    max_blocks: i32,
    present: u32,
}
@group(0) @binding(5) var<storage, read> p: Params;

// Counts per expert, then (reset) each expert's cursor.
var<workgroup> cnt: array<atomic<u32>, MAX_E>;
// Padded exclusive prefix of the counts: expert e's slots are off[e] .. off[e + 1].
var<workgroup> off: array<u32, 1025>;
// The experts of the current chunk of pairs (NONE: no pair, or an id out of range).
var<workgroup> chunk_e: array<u32, MAX_THREADS>;

fn set_sorted(s: u32, v: i32) {
    if (s < arrayLength(&sorted)) {
        sorted[s] = v;
    }
}

fn set_block(b: u32, v: i32, max_blocks: u32) {
    if (b < max_blocks && b < arrayLength(&block_expert)) {
        block_expert[b] = v;
    }
}

fn expert_of(pair: u32, pairs: u32, ne: u32) -> u32 {
    if (pair >= pairs) {
        return NONE;
    }
    let e = ids[pair];
    if (e >= 0 && u32(e) < ne) {
        return u32(e);
    }
    return NONE;
}

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn fm_align(@builtin(local_invocation_index) lid: u32) {
    let threads = WG_X * WG_Y * WG_Z;
    let pairs = u32(max(p.pairs, 0));
    let ne = u32(max(p.num_experts, 0));
    let bt = u32(max(p.bt, 1));
    let max_blocks = u32(max(p.max_blocks, 0));

    if (ne > MAX_E || threads > MAX_THREADS) {
        for (var b = lid; b < max_blocks; b += threads) {
            set_block(b, -1, max_blocks);
        }
        if (lid == 0u) {
            num_slots[0] = 0;
        }
        return;
    }

    for (var e = lid; e < ne; e += threads) {
        atomicStore(&cnt[e], 0u);
    }
    workgroupBarrier();
    for (var i = lid; i < pairs; i += threads) {
        let e = expert_of(i, pairs, ne);
        if (e != NONE) {
            atomicAdd(&cnt[e], 1u);
        }
    }
    workgroupBarrier();

    // The padded prefix, in order by one invocation (E <= 1024 additions).
    if (lid == 0u) {
        off[0] = 0u;
        for (var e = 0u; e < ne; e++) {
            let c = atomicLoad(&cnt[e]);
            off[e + 1u] = off[e] + (c + bt - 1u) / bt * bt;
        }
    }
    workgroupBarrier();
    let total = off[ne];

    for (var e = lid; e < ne; e += threads) {
        let c = atomicLoad(&cnt[e]);
        if ((p.present & 16u) != 0u && e < arrayLength(&expert_counts)) {
            expert_counts[e] = i32(c);
        }
        for (var b = off[e] / bt; b < off[e + 1u] / bt; b++) {
            set_block(b, i32(e), max_blocks);
        }
        for (var s = off[e] + c; s < off[e + 1u]; s++) {
            set_sorted(s, i32(pairs));
        }
    }
    for (var b = total / bt + lid; b < max_blocks; b += threads) {
        set_block(b, -1, max_blocks);
    }
    workgroupBarrier();
    for (var e = lid; e < ne; e += threads) {
        atomicStore(&cnt[e], 0u);
    }
    workgroupBarrier();

    // Place the pairs, chunk by chunk: a pair's slot is its expert's start, plus the
    // pairs of that expert in earlier chunks (the cursor), plus those earlier in its chunk.
    for (var base = 0u; base < pairs; base += threads) {
        let i = base + lid;
        let e = expert_of(i, pairs, ne);
        chunk_e[lid] = e;
        workgroupBarrier();
        if (e != NONE) {
            var rank = 0u;
            for (var j = 0u; j < lid; j++) {
                if (chunk_e[j] == e) {
                    rank++;
                }
            }
            set_sorted(off[e] + atomicLoad(&cnt[e]) + rank, i32(i));
        }
        workgroupBarrier();
        if (e != NONE) {
            atomicAdd(&cnt[e], 1u);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        num_slots[0] = i32(total);
    }
}
