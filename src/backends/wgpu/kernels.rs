//! The WGSL sources of `kernels-wgsl/`, embedded; wgpu compiles them for the adapter.

use crate::device::ModuleSource;

/// The module of kernels-wgsl file `file` (`align`, `route`, `quant`, `gemm`, `act`,
/// `lora`); an unknown name gives an empty module, which fails to load with its name.
pub fn module(file: &'static str) -> ModuleSource<'static> {
    let source = match file {
        "align" => include_str!("../../../kernels-wgsl/align.wgsl"),
        "route" => include_str!("../../../kernels-wgsl/route.wgsl"),
        "quant" => include_str!("../../../kernels-wgsl/quant.wgsl"),
        "gemm" => include_str!("../../../kernels-wgsl/gemm.wgsl"),
        "act" => include_str!("../../../kernels-wgsl/act.wgsl"),
        "lora" => include_str!("../../../kernels-wgsl/lora.wgsl"),
        _ => "",
    };
    ModuleSource::Wgsl { name: file, source }
}
