//! What a caller hands the device-resident forward: addresses of its own device memory
//! with their element types and lengths, checked against the layer before anything is
//! queued.

use crate::error::{Error, Result};
use std::fmt;

/// Element type of caller memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    Bf16,
    F16,
    F32,
    I32,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::Bf16 | DType::F16 => 2,
            DType::F32 | DType::I32 => 4,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::Bf16 => "bf16",
            DType::F16 => "f16",
            DType::F32 => "f32",
            DType::I32 => "i32",
        })
    }
}

/// Caller device memory: an address on the layer's device, how many elements of `dtype`
/// it holds from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSlice {
    pub addr: u64,
    pub len: usize,
    pub dtype: DType,
}

impl DeviceSlice {
    pub fn new(addr: u64, len: usize, dtype: DType) -> DeviceSlice {
        DeviceSlice { addr, len, dtype }
    }

    /// `Ok` when this holds at least `len` elements of one of `dtypes`, at an address the
    /// kernels can read with 16-byte vectors; otherwise an error naming `what`.
    pub(crate) fn check(&self, what: &str, len: usize, dtypes: &[DType]) -> Result<()> {
        if !dtypes.contains(&self.dtype) {
            let want: Vec<String> = dtypes.iter().map(ToString::to_string).collect();
            return Err(Error::shape(
                format!("{what} dtype"),
                want.join(" or "),
                self.dtype,
            ));
        }
        if self.len < len {
            return Err(Error::shape(
                format!("{what} (device buffer too small)"),
                format!("at least {len} {} elements", self.dtype),
                format!("{} elements", self.len),
            ));
        }
        if len > 0 && (self.addr == 0 || self.addr % 16 != 0) {
            return Err(Error::shape(
                format!("{what} address"),
                "a non-null address aligned to 16 bytes",
                format!("0x{:x}", self.addr),
            ));
        }
        Ok(())
    }
}

/// How a device-resident forward is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRouting {
    /// Router logits `[tokens, experts]`, f32; the layer's routing kernel picks the experts.
    Logits(DeviceSlice),
    /// Experts chosen by the caller: ids `[tokens, k]` i32 and weights `[tokens, k]` f32.
    /// The host never reads them: an id outside `0..experts` contributes nothing.
    TopK {
        ids: DeviceSlice,
        weights: DeviceSlice,
    },
}

/// One device-resident forward: `tokens` rows of hidden states in the layer's model
/// dtype, routing, optional per-token adapter slots (i32, −1 for none; a slot outside the
/// loaded adapters reads as none), and the output `[tokens, hidden]` in the model dtype
/// or f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceBatch {
    pub tokens: usize,
    pub hidden: DeviceSlice,
    pub routing: DeviceRouting,
    pub adapters: Option<DeviceSlice>,
    pub out: DeviceSlice,
}
