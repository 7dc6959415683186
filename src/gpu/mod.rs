//! The one GPU driver, written once over the `device::Runtime` seam for NVIDIA and AMD:
//! workspace reserved once for a maximum token count, routing, alignment, the shared
//! expert and its gate, the final cast, and the device-resident forward on the caller's
//! buffers and stream, with the host forward as a thin wrapper over it. What differs per
//! vendor — weight layouts, kernel tables, argument packing, the GEMM pipeline's fusion —
//! lives behind `Vendor` in `crate::backends`.

pub mod io;
pub mod layer;
pub mod lora;
pub mod router;
pub mod rows;
pub mod vendor;

pub use io::{DType, DeviceBatch, DeviceRouting, DeviceSlice};
pub use layer::GpuLayer;
pub use router::GpuRouter;
pub use vendor::{activation_code, ExpertsIo, KernelFile, Vendor, VendorExperts};
