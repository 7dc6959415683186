//! The wgpu runtime and the driver's WGSL kernels on whatever adapter is present (lavapipe
//! on CI): memory round trips, the launch convention of kernels-wgsl/README.md, compile
//! errors as `Err`, and `fm_route` / `fm_align` / quant.wgsl against the host. Without an
//! adapter every test prints `skipped: <reason>` and passes.
#![cfg(feature = "wgpu")]

use fleetmoe::backends::wgpu::kernels;
use fleetmoe::device::wgpu::WgpuDevice;
use fleetmoe::device::{Arg, Buffer, LaunchConfig, ModuleSource, Runtime};
use fleetmoe::moe::{GroupScoring, LayerConfig, Router, Routing};
use fleetmoe::Error;
use half::{bf16, f16};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::OnceLock;

/// One device for the whole file (tests run in parallel on it). No adapter: `None`, after
/// saying so — unless `FLEETMOE_REQUIRE_WGPU` is set (CI, with lavapipe), then it fails.
fn device() -> Option<&'static WgpuDevice> {
    static DEV: OnceLock<Result<WgpuDevice, String>> = OnceLock::new();
    match DEV.get_or_init(|| WgpuDevice::new(0).map_err(|e| e.to_string())) {
        Ok(d) => Some(d),
        Err(e) if std::env::var_os("FLEETMOE_REQUIRE_WGPU").is_some() => {
            panic!("FLEETMOE_REQUIRE_WGPU is set and no wgpu adapter opens: {e}")
        }
        Err(e) => {
            println!("skipped: {e}");
            None
        }
    }
}

fn bytes(rng: &mut ChaCha8Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.random()).collect()
}

fn gaussian(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
            scale * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect()
}

#[test]
fn memory_round_trips() {
    let Some(dev) = device() else { return };
    let s = dev.stream();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for n in [1usize, 2, 3, 4, 5, 7, 16, 17, 255, 1000, 65_537] {
        let data = bytes(&mut rng, n);
        let a = dev.alloc(n).unwrap();
        let addr = dev.address(&a);
        dev.upload(addr, &data, s).unwrap();
        let mut back = vec![0u8; n];
        dev.download(addr, &mut back, s).unwrap();
        assert_eq!(back, data, "{n} bytes");

        // Writes and zeroes inside, at odd offsets and lengths: neighbours are kept.
        let mut model = data.clone();
        for _ in 0..6 {
            let at = rng.random_range(0..n);
            let len = rng.random_range(0..=(n - at));
            if rng.random() {
                let patch = bytes(&mut rng, len);
                dev.upload(addr + at as u64, &patch, s).unwrap();
                model[at..at + len].copy_from_slice(&patch);
            } else {
                dev.zero(addr + at as u64, len, s).unwrap();
                model[at..at + len].iter_mut().for_each(|b| *b = 0);
            }
        }
        // A download at an odd offset.
        let at = n / 3;
        let mut part = vec![0u8; n - at];
        dev.download(addr + at as u64, &mut part, s).unwrap();
        assert_eq!(part, model[at..], "{n} bytes, from {at}");
        dev.synchronize(s).unwrap();
    }

    let b = Buffer::<WgpuDevice>::from_slice(dev, &[1u16, 2, 3]).unwrap();
    assert_eq!(b.to_vec::<u16>(dev).unwrap(), vec![1, 2, 3]);

    // Out of range, unknown and freed addresses are errors.
    let a = dev.alloc(10).unwrap();
    let addr = dev.address(&a);
    let mut out = [0u8; 11];
    assert!(matches!(
        dev.download(addr, &mut out, s),
        Err(Error::Handle(_))
    ));
    assert!(matches!(
        dev.upload(addr + 5, &[0; 6], s),
        Err(Error::Handle(_))
    ));
    assert!(matches!(dev.zero(12345, 4, s), Err(Error::Handle(_))));
    drop(a);
    assert!(matches!(
        dev.download(addr, &mut out[..4], s),
        Err(Error::Handle(_))
    ));
}

#[test]
fn streams_of_another_device_are_refused() {
    let Some(dev) = device() else { return };
    dev.check_stream(dev.stream()).unwrap();
    dev.check_stream(&dev.new_stream()).unwrap();
    let other = WgpuDevice::new(0).unwrap();
    assert!(matches!(
        dev.check_stream(other.stream()),
        Err(Error::Handle(_))
    ));
    let caps = dev.capabilities();
    assert_eq!(caps.vendor, fleetmoe::device::Vendor::Other);
    assert!(caps.arch.starts_with("wgpu-"), "{}", caps.arch);
    assert!(caps.fp8.is_none() && !caps.supports_mx && !caps.bf16_tensor_cores);
    println!("adapter: {caps}; warp {}", caps.warp_size);
}

/// Echoes its params and a few pointers' contents, to check the convention word for word.
const PROBE: &str = r#"
override WG_X: u32 = 64u;
override WG_Y: u32 = 1u;
override WG_Z: u32 = 1u;
@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@group(0) @binding(1) var<storage, read_write> nothing: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
struct Params { x: i32, y_lo: u32, y_hi: u32, f: f32, s0: u32, s1: u32, z: u32, present: u32 }
@group(0) @binding(3) var<storage, read> p: Params;

@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn probe(@builtin(local_invocation_index) lid: u32) {
    if (lid == 0u) {
        out[0] = bitcast<u32>(p.x);
        out[1] = p.y_lo;
        out[2] = p.y_hi;
        out[3] = bitcast<u32>(p.f * 2.0);
        out[4] = p.s0;
        out[5] = p.s1;
        out[6] = p.z;
        out[7] = p.present;
        out[8] = a[0] + a[1];
        out[9] = WG_X * 1000u + WG_Y * 10u + WG_Z;
        out[10] = arrayLength(&a);
    }
}

// Workgroup g of a 1-D grid (folded or not) writes g into its slot.
struct CountParams { n: u32, present: u32 }
@group(0) @binding(1) var<storage, read> pc: CountParams;
@compute @workgroup_size(WG_X, WG_Y, WG_Z)
fn count(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = wid.x + wid.y * nwg.x;
    if (lid == 0u && g < pc.n) {
        a[g] = g + 1u;
    }
}
"#;

#[test]
fn launch_convention() {
    let Some(dev) = device() else { return };
    let s = dev.stream();
    let m = dev
        .load(&ModuleSource::Wgsl {
            name: "probe",
            source: PROBE,
        })
        .unwrap();
    let align = dev.limits().min_storage_buffer_offset_alignment as usize;
    let a = Buffer::<WgpuDevice>::from_slice(dev, &[40u32, 2, 0, 0]).unwrap();
    // The output at an aligned offset inside a larger allocation.
    let big = Buffer::<WgpuDevice>::alloc(dev, align + 64).unwrap();
    dev.zero(big.addr(), big.bytes(), s).unwrap();
    let st: [u32; 2] = [0xdead, 0xbeef];
    let args = [
        Arg::Ptr(a.addr()),
        Arg::I32(-7),
        Arg::Ptr(0),
        Arg::I64(0x0000_0005_0000_0009),
        Arg::F32(1.5),
        Arg::Struct(bytemuck::cast_slice(&st)),
        Arg::Ptr(big.addr() + align as u64),
        Arg::U32(77),
    ];
    let cfg = LaunchConfig {
        grid: (1, 1, 1),
        block: (32, 2, 1),
        shared_mem_bytes: 0,
    };
    dev.launch(&m, "probe", cfg, &args, s).unwrap();
    let all: Vec<u32> = big.to_vec(dev).unwrap();
    let got = &all[align / 4..align / 4 + 11];
    assert_eq!(
        got,
        [
            (-7i32) as u32,
            9,
            5,
            3.0f32.to_bits(),
            0xdead,
            0xbeef,
            77,
            0b101,
            42,
            32_021,
            4
        ]
    );
    assert!(
        all[..align / 4].iter().all(|&w| w == 0),
        "wrote before the offset"
    );

    // A misaligned pointer is an error naming the argument.
    let mut bad = args;
    bad[6] = Arg::Ptr(big.addr() + 4);
    match dev.launch(&m, "probe", cfg, &bad, s) {
        Err(Error::Config(msg)) => assert!(msg.contains("argument 6"), "{msg}"),
        other => panic!("misaligned pointer: {other:?}"),
    }
    // A pointer to freed or unknown memory.
    bad[6] = Arg::Ptr(0x1234);
    assert!(matches!(
        dev.launch(&m, "probe", cfg, &bad, s),
        Err(Error::Handle(_))
    ));
    // A workgroup over the adapter's limit.
    let huge = LaunchConfig {
        block: (4096, 1, 1),
        ..cfg
    };
    assert!(matches!(
        dev.launch(&m, "probe", huge, &args, s),
        Err(Error::Config(_))
    ));

    // A 1-D grid of more workgroups than one dimension holds is folded.
    let n = 70_001usize;
    let slots = Buffer::<WgpuDevice>::alloc(dev, n * 4).unwrap();
    dev.zero(slots.addr(), n * 4, s).unwrap();
    let cfg = LaunchConfig::blocks(n, 64, 0);
    let args = [Arg::Ptr(slots.addr()), Arg::U32(n as u32)];
    dev.launch(&m, "count", cfg, &args, s).unwrap();
    let got: Vec<u32> = slots.to_vec(dev).unwrap();
    let wrong = (0..n).find(|&g| got[g] != g as u32 + 1);
    assert_eq!(wrong, None, "workgroup numbering of a folded grid");

    // Many launches in one batch (past the flush threshold and the params ring).
    let ones = Buffer::<WgpuDevice>::alloc(dev, 4 * 300).unwrap();
    for i in 0..300u32 {
        let args = [Arg::Ptr(ones.addr()), Arg::U32(i + 1)];
        dev.launch(
            &m,
            "count",
            LaunchConfig::blocks(i as usize + 1, 64, 0),
            &args,
            s,
        )
        .unwrap();
    }
    let got: Vec<u32> = ones.to_vec(dev).unwrap();
    assert_eq!(got, (1..=300).collect::<Vec<u32>>());
}

#[test]
fn compile_errors_are_errors() {
    let Some(dev) = device() else { return };
    let broken = ModuleSource::Wgsl {
        name: "broken",
        source: "fn main( { let x = ; }",
    };
    match dev.load(&broken) {
        Err(Error::KernelCompile { kernel, log, .. }) => {
            assert_eq!(kernel, "broken");
            assert!(!log.is_empty());
        }
        other => panic!("a WGSL syntax error loaded: {other:?}"),
    }
    let cuda = ModuleSource::Cuda {
        name: "x",
        source: "",
    };
    assert!(dev.load(&cuda).is_err());
    // A missing entry point is an error at launch.
    let m = dev
        .load(&ModuleSource::Wgsl {
            name: "probe",
            source: PROBE,
        })
        .unwrap();
    let b = Buffer::<WgpuDevice>::alloc(dev, 64).unwrap();
    let cfg = LaunchConfig::blocks(1, 64, 0);
    assert!(matches!(
        dev.launch(
            &m,
            "nope",
            cfg,
            &[Arg::Ptr(b.addr()), Arg::U32(1)],
            dev.stream()
        ),
        Err(Error::KernelCompile { .. })
    ));
    // Bindings that do not match the shader (params where a pointer is declared).
    assert!(dev
        .launch(&m, "count", cfg, &[Arg::U32(1)], dev.stream())
        .is_err());
    dev.synchronize(dev.stream()).unwrap();

    // Params shorter than the shader's struct: wgpu refuses the batch at submit, and the
    // device still works afterwards (its own device, so other tests never see the error).
    let dev = WgpuDevice::new(0).unwrap();
    let m = dev
        .load(&ModuleSource::Wgsl {
            name: "probe",
            source: PROBE,
        })
        .unwrap();
    let b = Buffer::<WgpuDevice>::alloc(&dev, 64).unwrap();
    let short = [Arg::Ptr(b.addr()), Arg::Ptr(0), Arg::Ptr(b.addr())];
    dev.launch(&m, "probe", cfg, &short, dev.stream()).unwrap();
    assert!(dev.synchronize(dev.stream()).is_err());
    let ok = [Arg::Ptr(b.addr()), Arg::U32(3)];
    dev.zero(b.addr(), 64, dev.stream()).unwrap();
    dev.launch(&m, "count", cfg, &ok, dev.stream()).unwrap();
    assert_eq!(b.to_vec::<u32>(&dev).unwrap()[..2], [1, 0]);
}

/// `fm_route` against `Router` on the host: every routing kind, expert counts from 8 to
/// 1024, top-k from 1 to 40 (route.wgsl takes any k, whatever the subgroup size); ids
/// identical, weights within 1e-6.
#[test]
fn route_matches_host() {
    let Some(dev) = device() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let mut cases = Vec::new();
    for &(e, k) in &[
        (8usize, 2usize),
        (60, 4),
        (128, 8),
        (256, 8),
        (1024, 6),
        (64, 16),
        (40, 40),
    ] {
        cases.push((e, k, Routing::SoftmaxTopK { renormalize: true }));
        cases.push((e, k, Routing::SoftmaxTopK { renormalize: false }));
        cases.push((e, k, Routing::SigmoidTopK { renormalize: true }));
        cases.push((e, k, Routing::SigmoidTopK { renormalize: false }));
        cases.push((e, 1, Routing::SigmoidTop1));
        for (groups, kept) in [(4usize, 2usize), (8, 3)] {
            if e % groups != 0 {
                continue;
            }
            for bias in [true, false] {
                for scoring in [GroupScoring::Sigmoid, GroupScoring::Softmax] {
                    let correction_bias = bias.then(|| gaussian(&mut rng, e, 0.1));
                    cases.push((
                        e,
                        k.min(kept * e / groups),
                        Routing::Grouped {
                            num_groups: groups,
                            topk_groups: kept,
                            scoring,
                            correction_bias,
                            renormalize: bias,
                            routed_scaling_factor: 2.5,
                        },
                    ));
                }
            }
        }
    }
    // More tokens than one workgroup's four, not a multiple of four.
    let tokens = 37;
    for (e, k, routing) in cases {
        let config = LayerConfig {
            routing: routing.clone(),
            ..LayerConfig::new(e, k, 128, 128)
        };
        let logits = gaussian(&mut rng, tokens * e, 2.0);
        let want = Router::new(&config)
            .unwrap()
            .route(&logits, tokens)
            .unwrap();
        let got = fleetmoe::gpu::GpuRouter::<fleetmoe::backends::wgpu::Wgpu>::new(dev, &config)
            .unwrap()
            .unwrap()
            .route(dev, &logits, tokens)
            .unwrap();
        assert_eq!(got.ids(), want.ids(), "{} E={e} k={k}", routing.name());
        for (g, w) in got.weights().iter().zip(want.weights()) {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{} E={e} k={k}: weight {g} vs {w}",
                routing.name()
            );
        }
    }
}

/// fm_align's contract on the host: per expert its pairs in ascending order, padded with
/// `pairs` to a multiple of `bt`; the expert of every block, -1 after; slots in use; counts.
fn align_host(
    ids: &[i32],
    e: usize,
    bt: usize,
    max_blocks: usize,
) -> (Vec<i32>, Vec<i32>, usize, Vec<i32>) {
    let pairs = ids.len();
    let mut sorted = Vec::new();
    let mut blocks = Vec::new();
    let mut counts = vec![0i32; e];
    for x in 0..e {
        let mine: Vec<i32> = (0..pairs)
            .filter(|&p| ids[p] == x as i32)
            .map(|p| p as i32)
            .collect();
        counts[x] = mine.len() as i32;
        let padded = mine.len().div_ceil(bt) * bt;
        sorted.extend(&mine);
        sorted.extend(std::iter::repeat_n(pairs as i32, padded - mine.len()));
        blocks.extend(std::iter::repeat_n(x as i32, padded / bt));
    }
    let total = sorted.len();
    blocks.resize(max_blocks, -1);
    (sorted, blocks, total, counts)
}

#[test]
fn align_matches_host() {
    let Some(dev) = device() else { return };
    let s = dev.stream();
    let m = dev.load(&kernels::module("align")).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for &(pairs, e, bt, skew) in &[
        (1usize, 8usize, 16usize, false),
        (37 * 2, 8, 16, false),
        (300, 60, 8, true),
        (5000, 128, 64, true),
        (3000, 1024, 16, false),
        (2048, 3, 1, true),
    ] {
        // Some ids out of range (-1, E): align skips them.
        let ids: Vec<i32> = (0..pairs)
            .map(|_| match rng.random_range(0..40) {
                0 => -1,
                1 => e as i32,
                _ if skew => (rng.random_range(0..e * e) as f64).sqrt() as i32,
                _ => rng.random_range(0..e) as i32,
            })
            .collect();
        let max_blocks = pairs.div_ceil(bt) + e.min(pairs);
        let slots = max_blocks * bt;
        let ids_b = Buffer::<WgpuDevice>::from_slice(dev, &ids).unwrap();
        let sorted = Buffer::<WgpuDevice>::from_slice(dev, &vec![-7i32; slots]).unwrap();
        let blocks = Buffer::<WgpuDevice>::from_slice(dev, &vec![-7i32; max_blocks]).unwrap();
        let num = Buffer::<WgpuDevice>::alloc(dev, 4).unwrap();
        let counts = Buffer::<WgpuDevice>::alloc(dev, e * 4).unwrap();
        for with_counts in [true, false] {
            let args = [
                Arg::Ptr(ids_b.addr()),
                Arg::I32(pairs as i32),
                Arg::I32(e as i32),
                Arg::I32(bt as i32),
                Arg::I32(max_blocks as i32),
                Arg::Ptr(sorted.addr()),
                Arg::Ptr(blocks.addr()),
                Arg::Ptr(num.addr()),
                Arg::Ptr(if with_counts { counts.addr() } else { 0 }),
            ];
            let cfg = LaunchConfig::blocks(1, 1024, ((3 * e + 1) * 4) as u32);
            dev.launch(&m, "fm_align", cfg, &args, s).unwrap();
        }
        let (want_sorted, want_blocks, total, want_counts) = align_host(&ids, e, bt, max_blocks);
        let got_sorted: Vec<i32> = sorted.to_vec(dev).unwrap();
        let what = format!("pairs={pairs} E={e} bt={bt}");
        assert_eq!(
            num.to_vec::<i32>(dev).unwrap(),
            vec![total as i32],
            "{what}"
        );
        assert_eq!(got_sorted[..total], want_sorted[..], "{what}");
        assert!(
            got_sorted[total..].iter().all(|&v| v == -7),
            "{what}: past the slots"
        );
        assert_eq!(blocks.to_vec::<i32>(dev).unwrap(), want_blocks, "{what}");
        assert_eq!(counts.to_vec::<i32>(dev).unwrap(), want_counts, "{what}");
    }
}

fn encode(v: f32, is_f16: bool) -> u16 {
    if is_f16 {
        f16::from_f32(v).to_bits()
    } else {
        bf16::from_f32(v).to_bits()
    }
}

fn decode(h: u16, is_f16: bool) -> f32 {
    if is_f16 {
        f16::from_bits(h).to_f32()
    } else {
        bf16::from_bits(h).to_f32()
    }
}

/// Values that test the roundings: normal, f16-subnormal, overflowing, ties.
fn awkward(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match i % 7 {
            0 => rng.random_range(-1e-5..1e-5),
            1 => rng.random_range(-9e4..9e4),
            2 => f32::from_bits(0x3f80_1000 | (rng.random::<u32>() & 0x8000_e000)),
            _ => rng.random_range(-8.0..8.0),
        })
        .collect()
}

#[test]
fn quant_kernels_match_host() {
    let Some(dev) = device() else { return };
    let s = dev.stream();
    let m = dev.load(&kernels::module("quant")).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for is_f16 in [false, true] {
        // fm_scale_rows: odd cols, so words straddle rows.
        let (rows, cols) = (5usize, 7usize);
        let src: Vec<u16> = awkward(&mut rng, rows * cols)
            .iter()
            .map(|&v| encode(v, is_f16))
            .collect();
        let w: Vec<f32> = (0..rows).map(|_| rng.random_range(0.1..3.0)).collect();
        let src_b = Buffer::<WgpuDevice>::from_slice(dev, &src).unwrap();
        let w_b = Buffer::<WgpuDevice>::from_slice(dev, &w).unwrap();
        let dst = Buffer::<WgpuDevice>::alloc(dev, rows * cols * 2).unwrap();
        let args = [
            Arg::Ptr(src_b.addr()),
            Arg::I32(rows as i32),
            Arg::I32(cols as i32),
            Arg::Ptr(w_b.addr()),
            Arg::I32(is_f16 as i32),
            Arg::Ptr(dst.addr()),
        ];
        let cfg = LaunchConfig::blocks(rows, 256, 0);
        dev.launch(&m, "fm_scale_rows", cfg, &args, s).unwrap();
        let want: Vec<u16> = (0..rows * cols)
            .map(|i| encode(decode(src[i], is_f16) * w[i / cols], is_f16))
            .collect();
        assert_eq!(
            dst.to_vec::<u16>(dev).unwrap(),
            want,
            "fm_scale_rows f16={is_f16}"
        );

        // fm_shared_gate.
        let (rows, cols) = (3usize, 1001usize);
        let x: Vec<u16> = gaussian(&mut rng, rows * cols, 1.0)
            .iter()
            .map(|&v| encode(v, is_f16))
            .collect();
        let g = gaussian(&mut rng, cols, 0.05);
        let x_b = Buffer::<WgpuDevice>::from_slice(dev, &x).unwrap();
        let g_b = Buffer::<WgpuDevice>::from_slice(dev, &g).unwrap();
        let gate = Buffer::<WgpuDevice>::alloc(dev, rows * 4).unwrap();
        let args = [
            Arg::Ptr(x_b.addr()),
            Arg::I32(rows as i32),
            Arg::I32(cols as i32),
            Arg::Ptr(g_b.addr()),
            Arg::I32(is_f16 as i32),
            Arg::Ptr(gate.addr()),
        ];
        dev.launch(
            &m,
            "fm_shared_gate",
            LaunchConfig::blocks(rows, 256, 0),
            &args,
            s,
        )
        .unwrap();
        let got: Vec<f32> = gate.to_vec(dev).unwrap();
        for r in 0..rows {
            let dot: f64 = (0..cols)
                .map(|c| decode(x[r * cols + c], is_f16) as f64 * g[c] as f64)
                .sum();
            let want = 1.0 / (1.0 + (-dot).exp());
            assert!(
                (got[r] as f64 - want).abs() < 1e-5,
                "gate {r}: {} vs {want}",
                got[r]
            );
        }

        // fm_finalize: an odd count over a grid-stride loop; the sum is zeroed behind.
        let n = 3 * 256 * 2 * 2 + 3;
        let acc = awkward(&mut rng, n);
        let acc_b = Buffer::<WgpuDevice>::from_slice(dev, &acc).unwrap();
        let out = Buffer::<WgpuDevice>::alloc(dev, n * 2).unwrap();
        let args = [
            Arg::Ptr(acc_b.addr()),
            Arg::I64(n as i64),
            Arg::I32(is_f16 as i32),
            Arg::Ptr(out.addr()),
        ];
        dev.launch(&m, "fm_finalize", LaunchConfig::blocks(3, 256, 0), &args, s)
            .unwrap();
        let want: Vec<u16> = acc.iter().map(|&v| encode(v, is_f16)).collect();
        assert_eq!(
            out.to_vec::<u16>(dev).unwrap(),
            want,
            "fm_finalize f16={is_f16}"
        );
        assert!(acc_b.to_vec::<f32>(dev).unwrap().iter().all(|&v| v == 0.0));
    }

    // fm_clamp_slots.
    let n = 1000;
    let src: Vec<i32> = (0..n).map(|_| rng.random_range(-5..8)).collect();
    let src_b = Buffer::<WgpuDevice>::from_slice(dev, &src).unwrap();
    let dst = Buffer::<WgpuDevice>::alloc(dev, n * 4).unwrap();
    let args = [
        Arg::Ptr(src_b.addr()),
        Arg::I32(n as i32),
        Arg::I32(3),
        Arg::Ptr(dst.addr()),
    ];
    dev.launch(
        &m,
        "fm_clamp_slots",
        LaunchConfig::blocks(2, 256, 0),
        &args,
        s,
    )
    .unwrap();
    let want: Vec<i32> = src
        .iter()
        .map(|&a| if (0..3).contains(&a) { a } else { -1 })
        .collect();
    assert_eq!(dst.to_vec::<i32>(dev).unwrap(), want);
}
