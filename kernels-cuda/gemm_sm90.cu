// The Hopper family of the grouped expert GEMMs (sm_90a): the same swap-AB tiles, slot
// layout, scales and fused epilogue as gemm.cu (this file is compiled after it in the same
// module), with the inner product on warpgroup MMAs (`wgmma.mma_async`, SASS HGMMA /
// QGMMA) reading both operands straight from shared memory instead of mma.sync fed by
// ldmatrix.
//
// One block = two warpgroups (256 threads) = BN = 128 * MI weight rows x BT token slots of
// one expert; warpgroup wg owns rows [wg * 64 * MI, (wg + 1) * 64 * MI), MI m64 tiles each,
// all BT slots as the instruction's N (BT = 64 or 128). Stages of 128 bytes of K per row
// are filled with cp.async by every thread (copy_rows_128: its XOR placement is the
// tensor cores' 128-byte swizzle) STAGES - 2 ahead of the MMAs, so one group of wgmmas
// can still be reading the stage before while the next is issued.
//
// fp8: each k32 MMA writes a fresh partial sum (scale-d = 0; two sets, alternating, so one
// step's MMAs run while the step before is promoted) folded into the f32 `acc` once it
// finishes, outside the MMA (as DeepGEMM promotes, there per 128 K): the fp8
// tensor cores' own accumulation keeps too few bits, and the parity suite saw it (rel L2
// 5-9e-3 against 1e-3 on mma.sync when four k32 MMAs were chained). BLK (128-wide K
// scales): each stage is one K block, and the promotion applies its weight and activation
// scales.
//
// Not yet here (issue 15): TMA loads with mbarriers, producer / consumer warpgroups and a
// persistent tile scheduler; low-bit weights stay on gemm.cu's register expansion.
//
// PTX facts used (PTX ISA 8.x, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate"):
// the shared-memory matrix descriptor is start address >> 4 in bits 0-13, leading byte
// offset >> 4 in 16-29 (unused for swizzled K-major, 1 by convention), stride byte offset
// >> 4 in 32-45 (1024 here: eight 128-byte rows), base offset in 49-51 (0: atoms 1024-byte
// aligned) and the swizzle in 62-63 (1 = 128-byte). A k-step inside the swizzle atom
// advances the start address by its 32 bytes. The m64nN f32 accumulator gives warp w of
// the warpgroup rows 16w + lane/4 (+8) and columns 8j + 2 (lane % 4) (+1) in d[4j..4j+3],
// the mma.sync m16n8 layout repeated, which is why gemm_epilogue serves both families.

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FM_SM90 1
#else
#define FM_SM90 0
#endif

__device__ __forceinline__ u64 sw128_desc(u32 addr) {
  return (u64)((addr & 0x3FFFFu) >> 4) | ((u64)1 << 16) | ((u64)(1024 >> 4) << 32) | ((u64)1 << 62);
}

#if FM_SM90
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// cp.async writes shared memory through the generic proxy and wgmma reads it through the
// async proxy: each writer fences before the barrier that publishes a stage.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
#endif

// Pins accumulator registers at this point of the program (CUTLASS's fence_operand idea):
// the compiler may not move their reads or writes across an MMA that is still in flight.
template <int MI, int NI>
__device__ __forceinline__ void fence_regs(float (&a)[MI][NI][4]) {
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) asm volatile("" : "+f"(a[i][j][r])::"memory");
}

#define FM_D4(j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])
#define FM_D32 FM_D4(0), FM_D4(1), FM_D4(2), FM_D4(3), FM_D4(4), FM_D4(5), FM_D4(6), FM_D4(7)
#define FM_D64 FM_D32, FM_D4(8), FM_D4(9), FM_D4(10), FM_D4(11), FM_D4(12), FM_D4(13), FM_D4(14), FM_D4(15)
#define FM_P32                                                                                    \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, " \
  "%21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define FM_P64                                                                                    \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, " \
  "%21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, "  \
  "%40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, "  \
  "%59, %60, %61, %62, %63}"
// One wgmma: SHAPE_TYPES e.g. "m64n128k16.f32.bf16.bf16", IMM the trailing immediates
// (scale-a, scale-b, and for 16-bit types the two transposes); A, B, S the operand
// numbers of the two descriptors and the accumulate flag, after the accumulators.
#define FM_WGMMA(SHAPE_TYPES, PH, IMM, A, B, S, OPS)                                       \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #S ", 0;\n"                            \
               "wgmma.mma_async.sync.aligned." SHAPE_TYPES " " PH ", %" #A ", %" #B ", p, " IMM ";\n}\n" \
               : OPS                                                                        \
               : "l"(da), "l"(db), "r"(accumulate))

// d (+)= A (64 rows x 32 bytes of K, descriptor da) x B (N slots, descriptor db)^T;
// `accumulate` = 0 overwrites d.
template <int DT, int N>
__device__ __forceinline__ void wgmma_32B(float (&d)[N / 8][4], u64 da, u64 db, int accumulate) {
#if FM_SM90
  static_assert(N == 64 || N == 128, "wgmma tile width");
  if constexpr (N == 128) {
    if constexpr (DT == 0) FM_WGMMA("m64n128k16.f32.bf16.bf16", FM_P64, "1, 1, 0, 0", 64, 65, 66, FM_D64);
    else if constexpr (DT == 1) FM_WGMMA("m64n128k16.f32.f16.f16", FM_P64, "1, 1, 0, 0", 64, 65, 66, FM_D64);
    else FM_WGMMA("m64n128k32.f32.e4m3.e4m3", FM_P64, "1, 1", 64, 65, 66, FM_D64);
  } else {
    if constexpr (DT == 0) FM_WGMMA("m64n64k16.f32.bf16.bf16", FM_P32, "1, 1, 0, 0", 32, 33, 34, FM_D32);
    else if constexpr (DT == 1) FM_WGMMA("m64n64k16.f32.f16.f16", FM_P32, "1, 1, 0, 0", 32, 33, 34, FM_D32);
    else FM_WGMMA("m64n64k32.f32.e4m3.e4m3", FM_P32, "1, 1", 32, 33, 34, FM_D32);
  }
#else
  __trap();
#endif
}

template <int DT, int MI, int BT, int STAGES, int LAG, int MODE, bool BLK>
__device__ __forceinline__ void gemm_sm90_body(const GemmArgs& p) {
#if FM_SM90
  constexpr int ES = DT == 2 ? 1 : 2;
  constexpr int BN = 128 * MI;
  constexpr int NTHR = 256;
  constexpr int NI = BT / 8;
  constexpr int A_STAGE = BN * 128;
  constexpr int B_STAGE = BT * 128;
  // fp8: every k32 MMA is summed apart and promoted into the f32 accumulators (the fp8
  // tensor cores' own accumulation keeps too few bits for the parity suite); its groups
  // are all waited within the stage, so nothing is left in flight across stages.
  constexpr bool PROMOTE = DT == 2;
  constexpr int INFLIGHT = PROMOTE ? 1 : LAG;
  // Stages copied ahead: the buffer refilled at stage kt is the one stage kt - 1 - INFLIGHT
  // read, whose MMAs the wait of the stage before finished.
  constexpr int AHEAD = STAGES - 1 - INFLIGHT;
  static_assert(AHEAD >= 1 && (LAG == 0 || LAG == 1), "pipeline shape");
  extern __shared__ __align__(1024) u8 smem_sm90[];
  // The swizzle atoms must start on 1024-byte boundaries; the host adds 1 KB of slack.
  u8* smem = smem_sm90 + ((1024u - (smem_addr(smem_sm90) & 1023u)) & 1023u);
  u8* sA = smem;
  u8* sB = smem + STAGES * A_STAGE;
  int* s_row = reinterpret_cast<int*>(sB + STAGES * B_STAGE);
  int* s_pair = s_row + BT;

  BlockWork w;
  if (!block_work<BN, BT, NTHR, MODE>(p, s_row, s_pair, w)) return;
  const int e = w.e, n0 = w.n0, kbeg = w.kbeg, kend = w.kend;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wg = warp >> 2;

  const long Kb = (long)p.K * ES;
  const u8* wbase = p.w + (long)e * p.N * Kb;
  const int kb0 = kbeg * ES, kb1 = kend * ES;
  const int ntiles = (kb1 - kb0 + 127) / 128;
  auto load_stage = [&](int stage, int kt) {
    const int kbyte = kb0 + kt * 128;
    copy_rows_128<BN, NTHR>(sA + stage * A_STAGE, tid, kbyte, kb1, p.w, [&](int r) {
      return n0 + r < p.N ? wbase + (long)(n0 + r) * Kb : nullptr;
    });
    copy_rows_128<BT, NTHR>(sB + stage * B_STAGE, tid, kbyte, kb1, p.act, [&](int r) {
      const int row = s_row[r];
      return row >= 0 ? p.act + (long)row * Kb : nullptr;
    });
  };

  float acc[MI][NI][4];
  float part[PROMOTE ? MI : 1][PROMOTE ? NI : 1][4];
  float part2[PROMOTE ? MI : 1][PROMOTE ? NI : 1][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;
  if constexpr (PROMOTE) {
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NI; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) part[i][j][r] = 0.0f;
  }

#pragma unroll
  for (int s = 0; s < AHEAD; ++s) {
    if (s < ntiles) load_stage(s, s);
    cp_async_commit();
  }
  const TileMap map{n0 + wg * MI * 64 + (warp & 3) * 16, 64, 0};

  // Publishes stage kt's buffer and starts the copy AHEAD stages on.
  auto begin_stage = [&](int kt) {
    cp_async_wait<AHEAD - 1>();
    fence_proxy_async();
    __syncthreads();
    const int nk = kt + AHEAD;
    if (nk < ntiles) load_stage(nk % STAGES, nk);
    cp_async_commit();
  };
  if constexpr (PROMOTE) {
    // Two partial sums alternate by k32 step: one step's MMAs run into one while the
    // step before, finished, is promoted from the other (the last step of a stage is
    // promoted in the next, with the scales of its own K block).
    BlockScales<MI, NI> sc;
    for (int kt = 0; kt < ntiles; ++kt) {
      begin_stage(kt);
      BlockScales<MI, NI> sc_new;
      if (BLK) sc_new = block_scales<MI, NI>(p, s_row, e, kbeg / 128 + kt, map, lane);
      const u32 a = smem_addr(sA + (kt % STAGES) * A_STAGE + wg * MI * 64 * 128);
      const u32 b = smem_addr(sB + (kt % STAGES) * B_STAGE);
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        auto& cur = (ks & 1) ? part2 : part;
        auto& prev = (ks & 1) ? part : part2;
        fence_regs<MI, NI>(cur);
        wgmma_fence();
        const u64 db = sw128_desc(b + ks * 32);
#pragma unroll
        for (int i = 0; i < MI; ++i) wgmma_32B<DT, BT>(cur[i], sw128_desc(a + i * 64 * 128 + ks * 32), db, 0);
        wgmma_commit();
        if (kt > 0 || ks > 0) {
          wgmma_wait<1>();
          fence_regs<MI, NI>(prev);
          fold<BLK>(acc, prev, ks == 0 ? sc : sc_new);
        }
      }
      sc = sc_new;
    }
    wgmma_wait<0>();
    fence_regs<MI, NI>(part2);
    fold<BLK>(acc, part2, sc);
  } else {
    for (int kt = 0; kt < ntiles; ++kt) {
      begin_stage(kt);
      const u32 a = smem_addr(sA + (kt % STAGES) * A_STAGE + wg * MI * 64 * 128);
      const u32 b = smem_addr(sB + (kt % STAGES) * B_STAGE);
      fence_regs<MI, NI>(acc);
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        const u64 db = sw128_desc(b + ks * 32);
#pragma unroll
        for (int i = 0; i < MI; ++i) wgmma_32B<DT, BT>(acc[i], sw128_desc(a + i * 64 * 128 + ks * 32), db, 1);
      }
      wgmma_commit();
      wgmma_wait<LAG>();
      fence_regs<MI, NI>(acc);
    }
  }
  wgmma_wait<0>();
  fence_regs<MI, NI>(acc);
  cp_async_wait<0>();

  gemm_epilogue<DT, MI, NI, MODE, BLK>(p, acc, s_row, s_pair, e, blockIdx.x * BT, blockIdx.z, map, lane);
#else
  __trap();  // the host launches this family on sm_90a only
#endif
}

// Hopper tile shapes, by kernel id: MI (m64 tiles per warpgroup; BN = 128 * MI), BT,
// STAGES, LAG (wgmma groups left in flight across a stage), CTAS (blocks per SM the
// registers are capped for). Must match kernels.rs's SM90_TILES / SM90_FP8_TILES, which
// also say which id stands in for mma.sync tiles 3 (BT = 64) and 4 (BT = 128).
// One 194 KB block per SM, or two of 98 KB that hide each other's fills and epilogues.
#define FM_HTILE_3 2, 64, 5, 1, 1
#define FM_HTILE_4 2, 128, 4, 1, 1
#define FM_HTILE_5 1, 128, 3, 0, 2
#define FM_HTILE_6 1, 64, 4, 0, 2
// fp8 keeps a second accumulator set for the promotion, so 128 rows.
#define FM_HPTILE_3 1, 64, 6, 0, 1
#define FM_HPTILE_4 1, 128, 6, 0, 1
#define FM_HPTILE_6 1, 64, 4, 0, 2

// TILE's last field (CTAS) is for the launch bounds only; the body takes the first four.
#define FM_SM90_BODY_ARGS(MI, BT, ST, LAG, CTAS) MI, BT, ST, LAG
#define FM_SM90_BODY_ARGS_OF(...) FM_SM90_BODY_ARGS(__VA_ARGS__)
#define FM_SM90_CTAS(MI, BT, ST, LAG, CTAS) CTAS
#define FM_SM90_CTAS_OF(...) FM_SM90_CTAS(__VA_ARGS__)
#define FM_SM90_KERNEL(NAME, DT, TILE, MODE, BLK)                                            \
  extern "C" __global__ void __launch_bounds__(256, FM_SM90_CTAS_OF(TILE)) NAME(GemmArgs p) { \
    gemm_sm90_body<DT, FM_SM90_BODY_ARGS_OF(TILE), MODE, BLK>(p);                            \
  }
#define FM_SM90_MODES(PFX, DT, BLK, TS, T)                            \
  FM_SM90_KERNEL(PFX##_g_h##T, DT, TS##T, 0, BLK)                     \
  FM_SM90_KERNEL(PFX##_s_h##T, DT, TS##T, 1, BLK)                     \
  FM_SM90_KERNEL(PFX##_d_h##T, DT, TS##T, 2, BLK)
#define FM_SM90_TILES(PFX, DT, BLK)             \
  FM_SM90_MODES(PFX, DT, BLK, FM_HTILE_, 3)     \
  FM_SM90_MODES(PFX, DT, BLK, FM_HTILE_, 4)     \
  FM_SM90_MODES(PFX, DT, BLK, FM_HTILE_, 5)     \
  FM_SM90_MODES(PFX, DT, BLK, FM_HTILE_, 6)
#define FM_SM90_FP8_TILES(PFX, BLK)              \
  FM_SM90_MODES(PFX, 2, BLK, FM_HPTILE_, 3)      \
  FM_SM90_MODES(PFX, 2, BLK, FM_HPTILE_, 4)      \
  FM_SM90_MODES(PFX, 2, BLK, FM_HPTILE_, 6)

#if !defined(FM_VARIANT) || FM_VARIANT == 0
FM_SM90_TILES(fm_gemm_bf16, 0, false)
#endif
#if !defined(FM_VARIANT) || FM_VARIANT == 1
FM_SM90_TILES(fm_gemm_f16, 1, false)
#endif
#if !defined(FM_VARIANT) || FM_VARIANT == 2
FM_SM90_FP8_TILES(fm_gemm_fp8, false)
#endif
#if !defined(FM_VARIANT) || FM_VARIANT == 3
FM_SM90_FP8_TILES(fm_gemm_fp8blk, true)
#endif
