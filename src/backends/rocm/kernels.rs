//! The HIP code objects, built ahead of time by `build.rs` from `kernels-hip/*.hip` for
//! gfx90a, gfx942 and gfx950 and embedded here; `HipDevice::load_module` picks the one
//! matching the device's `gcnArchName`.

use crate::device::ModuleSource;

/// A gfx target and the code object built for it.
pub type CodeObject = (&'static str, &'static [u8]);

include!(concat!(env!("OUT_DIR"), "/hip/code_objects.rs"));

/// The module of kernels-hip file `file` (`align`, `route`, `quant`, `gemm`, `lora`).
pub fn module(file: &'static str) -> ModuleSource<'static> {
    let code_objects = CODE_OBJECTS
        .iter()
        .find(|(f, _)| *f == file)
        .map_or(&[][..], |(_, objs)| *objs);
    ModuleSource::Hip {
        name: file,
        code_objects,
    }
}

/// Whether this build embeds code objects at all.
pub fn built() -> bool {
    CODE_OBJECTS.iter().all(|(_, objs)| !objs.is_empty())
}
