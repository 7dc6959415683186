//! The CPU device through the `Device` trait: memory, streams, host kernels, and the
//! errors it must give instead of panicking.

use fleetmoe::device::cpu::{CpuDevice, HostModule};
use fleetmoe::device::{Arg, Buffer, Device, LaunchConfig, ModuleSource, Stream, Vendor};
use fleetmoe::Error;

const ONE: LaunchConfig = LaunchConfig {
    grid: (1, 1, 1),
    block: (1, 1, 1),
    shared_mem_bytes: 0,
};

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// `y[i] = a · x[i] + y[i]` over little-endian f32 buffers (x, y), scalar a.
fn saxpy(_: &LaunchConfig, args: &[Arg], bufs: &mut [&mut [u8]]) -> fleetmoe::Result<()> {
    let [Arg::Buffer(_), Arg::Buffer(_), Arg::F32(a)] = args else {
        return Err(Error::Config("saxpy takes (x, y, a)".into()));
    };
    let [x, y] = bufs else {
        return Err(Error::Config("saxpy takes two buffers".into()));
    };
    for (xi, yi) in x.chunks_exact(4).zip(y.chunks_exact_mut(4)) {
        let xv = f32::from_le_bytes([xi[0], xi[1], xi[2], xi[3]]);
        let yv = f32::from_le_bytes([yi[0], yi[1], yi[2], yi[3]]);
        yi.copy_from_slice(&(a * xv + yv).to_le_bytes());
    }
    Ok(())
}

/// Writes 1 into its buffer, then fails: the buffer must still come back.
fn fail_after_write(_: &LaunchConfig, _: &[Arg], bufs: &mut [&mut [u8]]) -> fleetmoe::Result<()> {
    bufs[0][0] = 1;
    Err(Error::Config("kernel failed on purpose".into()))
}

static MODULE: HostModule = HostModule {
    name: "blas",
    kernels: &[("saxpy", saxpy), ("fail_after_write", fail_after_write)],
};

#[test]
fn capabilities_are_the_host() {
    let dev = CpuDevice::new();
    let caps = dev.capabilities();
    assert_eq!(caps.vendor, Vendor::Cpu);
    assert!(caps.fp8.is_none() && !caps.supports_mx);
    if std::path::Path::new("/proc/meminfo").exists() {
        assert!(caps.memory_bytes > 0, "MemTotal should have been read");
    }
}

#[test]
fn alloc_zero_fills_and_round_trips() {
    let dev = CpuDevice::new();
    let buf = dev.alloc(16).unwrap();
    assert_eq!(buf.bytes, 16);
    let mut out = [0xAAu8; 16];
    dev.read(buf, 0, &mut out, Stream::DEFAULT).unwrap();
    assert_eq!(out, [0u8; 16]);

    dev.write(buf, 4, &[1, 2, 3, 4], Stream::DEFAULT).unwrap();
    let mut part = [0u8; 6];
    dev.read(buf, 2, &mut part, Stream::DEFAULT).unwrap();
    assert_eq!(part, [0, 0, 1, 2, 3, 4]);

    let other = dev.alloc(8).unwrap();
    assert_ne!(other.id, buf.id);
    dev.free(buf).unwrap();
    dev.free(other).unwrap();
}

#[test]
fn out_of_bounds_is_a_shape_error_naming_the_buffer() {
    let dev = CpuDevice::new();
    let buf = dev.alloc(8).unwrap();
    let err = dev.write(buf, 6, &[0; 4], Stream::DEFAULT).unwrap_err();
    match &err {
        Error::Shape { what, got, .. } => {
            assert!(what.contains(&format!("#{}", buf.id)), "{err}");
            assert!(got.contains("6..10"), "{err}");
        }
        other => panic!("expected a shape error, got {other}"),
    }
    let mut out = [0u8; 2];
    assert!(matches!(
        dev.read(buf, 7, &mut out, Stream::DEFAULT),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        dev.read(buf, usize::MAX, &mut out, Stream::DEFAULT),
        Err(Error::Shape { .. })
    ));
    // An empty access at the very end is in bounds.
    dev.read(buf, 8, &mut [], Stream::DEFAULT).unwrap();
}

#[test]
fn freed_and_foreign_handles_are_handle_errors() {
    let dev = CpuDevice::new();
    let buf = dev.alloc(4).unwrap();
    dev.free(buf).unwrap();
    assert!(matches!(dev.free(buf), Err(Error::Handle(_))));
    assert!(matches!(
        dev.write(buf, 0, &[1], Stream::DEFAULT),
        Err(Error::Handle(_))
    ));
    let mut out = [0u8; 1];
    assert!(matches!(
        dev.read(buf, 0, &mut out, Stream::DEFAULT),
        Err(Error::Handle(_))
    ));

    let live = dev.alloc(4).unwrap();
    let forged = Buffer {
        id: live.id,
        bytes: 1024,
    };
    assert!(matches!(
        dev.read(forged, 0, &mut out, Stream::DEFAULT),
        Err(Error::Handle(_))
    ));
}

#[test]
fn streams_are_handed_out_and_checked() {
    let dev = CpuDevice::new();
    dev.synchronize(Stream::DEFAULT).unwrap();
    let s1 = dev.create_stream().unwrap();
    let s2 = dev.create_stream().unwrap();
    assert_ne!(s1, s2);
    assert_ne!(s1, Stream::DEFAULT);
    dev.synchronize(s1).unwrap();
    dev.synchronize(s2).unwrap();
    assert!(matches!(
        dev.synchronize(Stream(1_000)),
        Err(Error::Handle(_))
    ));
    let buf = dev.alloc(4).unwrap();
    assert!(matches!(
        dev.write(buf, 0, &[1], Stream(1_000)),
        Err(Error::Handle(_))
    ));
}

#[test]
fn saxpy_runs_through_the_trait_object() {
    let cpu = CpuDevice::new();
    let dev: &dyn Device = &cpu;
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let y = [10.0f32, 20.0, 30.0, 40.0];
    let bx = dev.alloc(16).unwrap();
    let by = dev.alloc(16).unwrap();
    dev.write(bx, 0, &f32_bytes(&x), Stream::DEFAULT).unwrap();
    dev.write(by, 0, &f32_bytes(&y), Stream::DEFAULT).unwrap();

    let module = dev.load_module(&ModuleSource::Host(&MODULE)).unwrap();
    let stream = dev.create_stream().unwrap();
    let args = [Arg::Buffer(bx), Arg::Buffer(by), Arg::F32(2.0)];
    dev.launch(module, "saxpy", ONE, &args, stream).unwrap();
    dev.synchronize(stream).unwrap();

    let mut out = [0u8; 16];
    dev.read(by, 0, &mut out, stream).unwrap();
    assert_eq!(bytes_f32(&out), vec![12.0, 24.0, 36.0, 48.0]);
    // x is back in the registry, untouched.
    dev.read(bx, 0, &mut out, stream).unwrap();
    assert_eq!(bytes_f32(&out), x.to_vec());
}

#[test]
fn buffers_come_back_after_a_failing_kernel() {
    let dev = CpuDevice::new();
    let buf = dev.alloc(4).unwrap();
    let module = dev.load_module(&ModuleSource::Host(&MODULE)).unwrap();
    let err = dev
        .launch(
            module,
            "fail_after_write",
            ONE,
            &[Arg::Buffer(buf)],
            Stream::DEFAULT,
        )
        .unwrap_err();
    assert!(err.to_string().contains("on purpose"), "{err}");
    let mut out = [0u8; 4];
    dev.read(buf, 0, &mut out, Stream::DEFAULT).unwrap();
    assert_eq!(out, [1, 0, 0, 0]);
}

#[test]
fn launch_errors_name_what_was_wrong() {
    let dev = CpuDevice::new();
    let module = dev.load_module(&ModuleSource::Host(&MODULE)).unwrap();
    let buf = dev.alloc(16).unwrap();

    let err = dev
        .launch(module, "dgemm", ONE, &[], Stream::DEFAULT)
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Device { .. }), "{msg}");
    assert!(msg.contains("dgemm") && msg.contains("blas"), "{msg}");

    let twice = [Arg::Buffer(buf), Arg::Buffer(buf), Arg::F32(1.0)];
    let err = dev
        .launch(module, "saxpy", ONE, &twice, Stream::DEFAULT)
        .unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");

    let gone = dev.alloc(16).unwrap();
    dev.free(gone).unwrap();
    let args = [Arg::Buffer(buf), Arg::Buffer(gone), Arg::F32(1.0)];
    assert!(matches!(
        dev.launch(module, "saxpy", ONE, &args, Stream::DEFAULT),
        Err(Error::Handle(_))
    ));
    // The buffer taken before the failure is back.
    dev.write(buf, 0, &[7; 16], Stream::DEFAULT).unwrap();

    assert!(matches!(
        dev.launch(
            fleetmoe::device::Module(999),
            "saxpy",
            ONE,
            &[],
            Stream::DEFAULT
        ),
        Err(Error::Handle(_))
    ));
}

#[test]
fn non_host_modules_are_refused_clearly() {
    let dev = CpuDevice::new();
    let sources = [
        (
            ModuleSource::Cuda {
                name: "moe_fp8",
                source: "__global__ void k() {}",
            },
            "CUDA",
        ),
        (
            ModuleSource::Hip {
                name: "moe_gfx942",
                code_objects: &[],
            },
            "HIP",
        ),
        (
            ModuleSource::Wgsl {
                name: "moe_wgsl",
                source: "",
            },
            "WGSL",
        ),
    ];
    for (source, kind) in sources {
        match dev.load_module(&source) {
            Err(Error::Device { call, message }) => {
                assert_eq!(call, "load_module");
                assert!(message.contains("host modules only"), "{message}");
                assert!(message.contains(kind), "{message}");
                assert!(message.contains(source.name()), "{message}");
            }
            other => panic!("expected a device error, got {other:?}"),
        }
    }
}
