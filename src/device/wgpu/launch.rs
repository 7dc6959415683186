//! One launch as one dispatch, by kernels-wgsl/README.md's convention: pointer arguments
//! become storage bindings 0.., the scalars (and the null-pointer mask) one read-only
//! params buffer after them; the workgroup size is set through the `WG_*` overrides, and a
//! 1-D grid too long for one dimension is folded.

use super::{lock, round_up, Pending, WgpuDevice, WgpuKernels, WgpuStream, RING_BYTES};
use crate::device::{Arg, LaunchConfig, Runtime};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;

/// Dispatches recorded before the encoder is submitted without being asked.
const FLUSH_EVERY: u32 = 128;

/// Workgroups one grid dimension may hold (WebGPU's minimum, so every adapter takes it).
pub const MAX_GRID_DIM: u32 = 65_535;
/// Pointer arguments one launch may have: the bits of `present`.
pub const MAX_POINTERS: usize = 32;

/// A launch's arguments split by the convention.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    /// Device addresses of the pointer arguments, in order (0: null).
    pub pointers: Vec<u64>,
    /// The scalars in order, little-endian, then `present`.
    pub params: Vec<u8>,
}

/// Splits `args`: pointers in order, scalars concatenated (`I64` low word first, a
/// `Struct` as its bytes), then the mask of non-null pointers.
pub fn pack(args: &[Arg<'_>]) -> Result<Packed> {
    let mut pointers = Vec::new();
    let mut params = Vec::with_capacity(4 * args.len() + 4);
    for (i, a) in args.iter().enumerate() {
        match *a {
            Arg::Ptr(p) => pointers.push(p),
            Arg::I32(v) => params.extend_from_slice(&v.to_le_bytes()),
            Arg::U32(v) => params.extend_from_slice(&v.to_le_bytes()),
            Arg::F32(v) => params.extend_from_slice(&v.to_le_bytes()),
            Arg::I64(v) => params.extend_from_slice(&v.to_le_bytes()),
            Arg::Struct(bytes) => {
                if bytes.len() % 4 != 0 {
                    return Err(Error::Config(format!(
                        "wgpu launch argument {i}: a struct of {} bytes; WGSL params take \
                         4-byte fields only",
                        bytes.len()
                    )));
                }
                params.extend_from_slice(bytes);
            }
        }
    }
    if pointers.len() > MAX_POINTERS {
        return Err(Error::Config(format!(
            "a wgpu launch takes at most {MAX_POINTERS} pointer arguments, got {}",
            pointers.len()
        )));
    }
    let present = pointers
        .iter()
        .enumerate()
        .fold(0u32, |m, (i, &p)| if p != 0 { m | 1 << i } else { m });
    params.extend_from_slice(&present.to_le_bytes());
    Ok(Packed { pointers, params })
}

/// The dispatch for `grid`: as given when every dimension fits `max`, a 1-D grid folded
/// into (`MAX_GRID_DIM`, ⌈x / `MAX_GRID_DIM`⌉, 1) when it does not; an empty or
/// unfoldable grid is `Error::Config`.
pub fn fold_grid(grid: (u32, u32, u32), max: u32) -> Result<(u32, u32, u32)> {
    let (x, y, z) = grid;
    if x == 0 || y == 0 || z == 0 {
        return Err(Error::Config(format!(
            "wgpu launch with an empty grid {grid:?}"
        )));
    }
    let max = max.max(1);
    if x <= max && y <= max && z <= max {
        return Ok(grid);
    }
    let fold = MAX_GRID_DIM.min(max);
    if y == 1 && z == 1 && x.div_ceil(fold) <= max {
        return Ok((fold, x.div_ceil(fold), 1));
    }
    Err(Error::Config(format!(
        "wgpu grid {grid:?}: the adapter takes at most {max} workgroups per dimension, and \
         only a 1-D grid is folded"
    )))
}

/// Bind-group and pipeline layouts by pointer count (every kernel with that many
/// pointers shares them, README rule 1).
#[derive(Default)]
pub(super) struct Layouts {
    by_pointers: Mutex<HashMap<usize, (::wgpu::BindGroupLayout, ::wgpu::PipelineLayout)>>,
}

impl Layouts {
    /// The layouts for `pointers` storage read-write bindings and one read-only params
    /// binding after them.
    pub fn get(
        &self,
        device: &::wgpu::Device,
        pointers: usize,
    ) -> (::wgpu::BindGroupLayout, ::wgpu::PipelineLayout) {
        let mut map = self.by_pointers.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(pointers)
            .or_insert_with(|| {
                let entry = |binding: usize, read_only: bool| ::wgpu::BindGroupLayoutEntry {
                    binding: binding as u32,
                    visibility: ::wgpu::ShaderStages::COMPUTE,
                    ty: ::wgpu::BindingType::Buffer {
                        ty: ::wgpu::BufferBindingType::Storage { read_only },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                };
                let entries: Vec<_> = (0..pointers)
                    .map(|b| entry(b, false))
                    .chain(std::iter::once(entry(pointers, true)))
                    .collect();
                let bgl = device.create_bind_group_layout(&::wgpu::BindGroupLayoutDescriptor {
                    label: Some("fleetmoe launch"),
                    entries: &entries,
                });
                let pl = device.create_pipeline_layout(&::wgpu::PipelineLayoutDescriptor {
                    label: Some("fleetmoe launch"),
                    bind_group_layouts: &[Some(&bgl)],
                    immediate_size: 0,
                });
                (bgl, pl)
            })
            .clone()
    }
}

/// A pipeline's cache key: entry point, workgroup size, pointer count.
pub(super) type PipelineKey = (String, (u32, u32, u32), usize);

impl WgpuDevice {
    /// Where a launch's params go: the ring while it has room (submitting first when it
    /// is full), a buffer of their own when they are larger than the ring.
    fn params_binding(&self, p: &mut Pending, params: &[u8]) -> Result<(::wgpu::Buffer, u64)> {
        let len = params.len() as u64;
        if len > RING_BYTES {
            let buffer = self.scoped("create_buffer (launch params)", || {
                self.device.create_buffer(&::wgpu::BufferDescriptor {
                    label: Some("fleetmoe params"),
                    size: len,
                    usage: ::wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: true,
                })
            })?;
            let filled = buffer
                .get_mapped_range_mut(..)
                .map(|mut view| view.copy_from_slice(params))
                .map_err(|e| Error::Device {
                    call: "buffer.get_mapped_range_mut".into(),
                    message: e.to_string(),
                });
            buffer.unmap();
            filled?;
            return Ok((buffer, 0));
        }
        let align = u64::from(self.limits.min_storage_buffer_offset_alignment.max(4));
        if p.ring_used + len > RING_BYTES {
            self.flush(p)?;
        }
        let at = p.ring_used;
        self.queue.write_buffer(&self.ring, at, params);
        p.ring_used = round_up(at + len, align);
        Ok((self.ring.clone(), at))
    }

    /// The pipeline of `kernel` in `module` for `block` and `pointers` bindings, compiled
    /// on first use; a shader that does not fit (no such entry point, bindings that do not
    /// match, a workgroup too large) is `Error::KernelCompile`.
    fn pipeline(
        &self,
        module: &WgpuKernels,
        kernel: &str,
        block: (u32, u32, u32),
        pointers: usize,
    ) -> Result<(::wgpu::ComputePipeline, ::wgpu::BindGroupLayout)> {
        let (bgl, layout) = self.layouts.get(&self.device, pointers);
        let key = (kernel.to_string(), block, pointers);
        let mut cache = lock(&module.pipelines);
        if let Some(p) = cache.get(&key) {
            return Ok((p.clone(), bgl));
        }
        let constants = [
            ("WG_X", f64::from(block.0)),
            ("WG_Y", f64::from(block.1)),
            ("WG_Z", f64::from(block.2)),
        ];
        let pipeline = self
            .scoped("create_compute_pipeline", || {
                self.device
                    .create_compute_pipeline(&::wgpu::ComputePipelineDescriptor {
                        label: Some(kernel),
                        layout: Some(&layout),
                        module: &module.module,
                        entry_point: Some(kernel),
                        compilation_options: ::wgpu::PipelineCompilationOptions {
                            constants: &constants,
                            ..Default::default()
                        },
                        cache: None,
                    })
            })
            .map_err(|e| Error::KernelCompile {
                kernel: format!(
                    "{}::{kernel} (block {block:?}, {pointers} pointers)",
                    module.name
                ),
                target: self.caps.arch.clone(),
                log: match e {
                    Error::Device { message, .. } => message,
                    other => other.to_string(),
                },
            })?;
        cache.insert(key, pipeline.clone());
        Ok((pipeline, bgl))
    }

    /// Checks a launch's workgroup and shared memory against the adapter's limits.
    fn check_block(&self, kernel: &str, config: &LaunchConfig) -> Result<()> {
        let l = &self.limits;
        let (x, y, z) = config.block;
        let threads = u64::from(x) * u64::from(y) * u64::from(z);
        if threads == 0
            || x > l.max_compute_workgroup_size_x
            || y > l.max_compute_workgroup_size_y
            || z > l.max_compute_workgroup_size_z
            || threads > u64::from(l.max_compute_invocations_per_workgroup)
        {
            return Err(Error::Config(format!(
                "{kernel}: workgroup {:?} does not fit the adapter (at most ({}, {}, {}) and \
                 {} invocations)",
                config.block,
                l.max_compute_workgroup_size_x,
                l.max_compute_workgroup_size_y,
                l.max_compute_workgroup_size_z,
                l.max_compute_invocations_per_workgroup
            )));
        }
        if config.shared_mem_bytes > l.max_compute_workgroup_storage_size {
            return Err(Error::Config(format!(
                "{kernel}: {} bytes of workgroup memory asked, the adapter has {}",
                config.shared_mem_bytes, l.max_compute_workgroup_storage_size
            )));
        }
        Ok(())
    }

    /// `Runtime::launch`: checks, packs and binds the arguments, and records the dispatch.
    pub(super) fn record(
        &self,
        module: &WgpuKernels,
        kernel: &str,
        config: LaunchConfig,
        args: &[Arg<'_>],
        stream: &WgpuStream,
    ) -> Result<()> {
        self.check_stream(stream)?;
        if module.device != self.id {
            return Err(Error::Handle(format!(
                "module '{}' was loaded on another wgpu device",
                module.name
            )));
        }
        self.check_block(kernel, &config)?;
        let grid = fold_grid(
            config.grid,
            self.limits.max_compute_workgroups_per_dimension,
        )
        .map_err(|e| Error::Config(format!("{kernel}: {e}")))?;
        let packed = pack(args).map_err(|e| Error::Config(format!("{kernel}: {e}")))?;
        let n = packed.pointers.len();
        if n as u64 + 1 > u64::from(self.limits.max_storage_buffers_per_shader_stage) {
            return Err(Error::Config(format!(
                "{kernel}: {n} pointer arguments and the params need {} storage buffers, the \
                 adapter binds {}",
                n + 1,
                self.limits.max_storage_buffers_per_shader_stage
            )));
        }
        let align = u64::from(self.limits.min_storage_buffer_offset_alignment.max(4));
        let max_binding = self.limits.max_storage_buffer_binding_size / 4 * 4;
        let mut bindings = Vec::with_capacity(n);
        let mut ptr_index = 0;
        for (i, a) in args.iter().enumerate() {
            let Arg::Ptr(addr) = *a else { continue };
            let what = format!("{kernel} argument {i} (pointer {ptr_index})");
            ptr_index += 1;
            if addr == 0 {
                bindings.push((self.dummy.clone(), 0, 16));
                continue;
            }
            let r = self.resolve(addr, 0, &what)?;
            if r.offset % align != 0 {
                return Err(Error::Config(format!(
                    "{what}: offset {} into its allocation is not a multiple of the adapter's \
                     storage offset alignment {align}",
                    r.offset
                )));
            }
            let size = (r.entry.buffer.size() - r.offset).min(max_binding);
            bindings.push((r.entry.buffer, r.offset, size));
        }
        let (pipeline, bgl) = self.pipeline(module, kernel, config.block, n)?;
        let mut p = lock(&self.pending);
        let (pbuf, poff) = self.params_binding(&mut p, &packed.params)?;
        let plen = packed.params.len() as u64;
        let entries: Vec<::wgpu::BindGroupEntry<'_>> = bindings
            .iter()
            .map(|(b, off, size)| (b, *off, *size))
            .chain(std::iter::once((&pbuf, poff, plen)))
            .enumerate()
            .map(|(binding, (buffer, offset, size))| ::wgpu::BindGroupEntry {
                binding: binding as u32,
                resource: ::wgpu::BindingResource::Buffer(::wgpu::BufferBinding {
                    buffer,
                    offset,
                    size: ::wgpu::BufferSize::new(size),
                }),
            })
            .collect();
        let group = self.scoped("create_bind_group", || {
            self.device.create_bind_group(&::wgpu::BindGroupDescriptor {
                label: Some(kernel),
                layout: &bgl,
                entries: &entries,
            })
        })?;
        {
            let encoder = self.encoder(&mut p);
            let mut pass = encoder.begin_compute_pass(&::wgpu::ComputePassDescriptor {
                label: Some(kernel),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(grid.0, grid.1, grid.2);
        }
        p.dispatches += 1;
        if p.dispatches >= FLUSH_EVERY {
            self.flush(&mut p)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_scalars_in_order_with_the_mask_last() {
        let s = [1u8, 0, 0, 0, 2, 0, 0, 0];
        let p = pack(&[
            Arg::Ptr(5),
            Arg::I32(-1),
            Arg::Ptr(0),
            Arg::I64(0x1_0000_0002),
            Arg::F32(1.0),
            Arg::Struct(&s),
            Arg::Ptr(9),
            Arg::U32(7),
        ])
        .unwrap();
        assert_eq!(p.pointers, vec![5, 0, 9]);
        let words: Vec<u32> = p
            .params
            .chunks(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(
            words,
            vec![u32::MAX, 2, 1, 1.0f32.to_bits(), 1, 2, 7, 0b101]
        );
        assert!(pack(&[Arg::Struct(&[1, 2, 3])]).is_err());
        assert!(pack(&vec![Arg::Ptr(1); 33]).is_err());
    }

    #[test]
    fn folds_only_long_1d_grids() {
        assert_eq!(fold_grid((7, 2, 3), 65_535).unwrap(), (7, 2, 3));
        assert_eq!(fold_grid((65_536, 1, 1), 65_535).unwrap(), (65_535, 2, 1));
        assert_eq!(fold_grid((200_000, 1, 1), 65_535).unwrap(), (65_535, 4, 1));
        assert!(fold_grid((70_000, 2, 1), 65_535).is_err());
        assert!(fold_grid((0, 1, 1), 65_535).is_err());
    }
}
