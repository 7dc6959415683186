//! The device-resident forward on cudarc's own types (feature `cuda`): what a candle or
//! mistral.rs user passes — the slices of CUDA tensors (`CudaSlice`, `CudaView`,
//! `CudaViewMut`) and their `Arc<CudaStream>` — with lengths, dtypes and devices checked
//! from the types themselves, so no `unsafe` is needed on the caller's side.

use super::layer::{GpuStream, MoeLayer};
use crate::error::{Error, Result};
use crate::gpu::{DType, DeviceBatch, DeviceRouting, DeviceSlice};
use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut};
use std::sync::Arc;

/// An element type the layer reads or writes.
pub trait DeviceElem {
    const DTYPE: DType;
}

impl DeviceElem for half::bf16 {
    const DTYPE: DType = DType::Bf16;
}
impl DeviceElem for half::f16 {
    const DTYPE: DType = DType::F16;
}
impl DeviceElem for f32 {
    const DTYPE: DType = DType::F32;
}
impl DeviceElem for i32 {
    const DTYPE: DType = DType::I32;
}

/// How a `forward_cuda` is routed: router logits `[tokens, experts]`, or the caller's
/// top-k ids and weights `[tokens, k]`.
pub enum CudaRouting<'a, L: DevicePtr<f32>, I: DevicePtr<i32>, W: DevicePtr<f32>> {
    Logits(&'a L),
    TopK { ids: &'a I, weights: &'a W },
}

/// The routing type of a forward routed from logits (`I`, `W` unused).
pub type LogitsRouting<'a, L> =
    CudaRouting<'a, L, cudarc::driver::CudaSlice<i32>, cudarc::driver::CudaSlice<f32>>;
/// The routing type of a forward with the caller's top-k (`L` unused).
pub type TopKRouting<'a, I, W> = CudaRouting<'a, cudarc::driver::CudaSlice<f32>, I, W>;

impl MoeLayer {
    /// `forward_device` on cudarc slices and views: hidden states `[tokens, hidden]` in the
    /// layer's model dtype, routing, optional adapter slots (−1: none), and the output in
    /// the model dtype or f32, all queued on `stream`. Every buffer must be of the layer's
    /// GPU; the token count is `x.len() / hidden`.
    pub fn forward_cuda<X, O, L, I, W, A>(
        &self,
        x: &X,
        routing: CudaRouting<'_, L, I, W>,
        adapters: Option<&A>,
        out: &mut O,
        stream: &Arc<CudaStream>,
    ) -> Result<()>
    where
        X: DevicePtr<X::Elem> + HasElem,
        O: DevicePtrMut<O::Elem> + HasElem,
        L: DevicePtr<f32>,
        I: DevicePtr<i32>,
        W: DevicePtr<f32>,
        A: DevicePtr<i32>,
    {
        let h = self.config().hidden;
        if x.len() % h != 0 {
            return Err(Error::shape(
                "hidden states",
                format!("a multiple of hidden = {h}"),
                x.len(),
            ));
        }
        let tokens = x.len() / h;
        let same = |what: &str, s: &Arc<CudaStream>| -> Result<()> {
            if s.context().cu_ctx() == stream.context().cu_ctx() {
                Ok(())
            } else {
                Err(Error::Handle(format!(
                    "{what} is on CUDA device {}, the stream on device {}",
                    s.context().ordinal(),
                    stream.context().ordinal()
                )))
            }
        };
        same("the hidden states", x.stream())?;
        same("the output", out.stream())?;
        let (xp, _x) = x.device_ptr(stream);
        let hidden = DeviceSlice::new(xp, x.len(), X::Elem::DTYPE);
        let (out_len, out_stream) = (out.len(), out.stream().clone());
        same("the output", &out_stream)?;
        // The guards record cudarc's access events (when the caller's context tracks
        // them) once dropped, after the layer's work is queued.
        let mut guards = Vec::new();
        let routing = match routing {
            CudaRouting::Logits(l) => {
                same("the router logits", l.stream())?;
                let (p, g) = l.device_ptr(stream);
                guards.push(g);
                DeviceRouting::Logits(DeviceSlice::new(p, l.len(), DType::F32))
            }
            CudaRouting::TopK { ids, weights } => {
                same("the top-k ids", ids.stream())?;
                same("the top-k weights", weights.stream())?;
                let (ip, gi) = ids.device_ptr(stream);
                let (wp, gw) = weights.device_ptr(stream);
                guards.extend([gi, gw]);
                DeviceRouting::TopK {
                    ids: DeviceSlice::new(ip, ids.len(), DType::I32),
                    weights: DeviceSlice::new(wp, weights.len(), DType::F32),
                }
            }
        };
        let adapters = match adapters {
            Some(a) => {
                same("the adapter slots", a.stream())?;
                let (p, g) = a.device_ptr(stream);
                guards.push(g);
                Some(DeviceSlice::new(p, a.len(), DType::I32))
            }
            None => None,
        };
        let (op, _o) = out.device_ptr_mut(stream);
        let batch = DeviceBatch {
            tokens,
            hidden,
            routing,
            adapters,
            out: DeviceSlice::new(op, out_len, O::Elem::DTYPE),
        };
        // SAFETY: every address comes from a cudarc slice or view of the stream's device
        // (checked above) with its own length; the borrows keep them alive until this
        // returns and the caller's cudarc keeps them alive until the stream is done; the
        // output is borrowed mutably, so it cannot alias an input.
        unsafe { self.forward_device(&batch, GpuStream::Cuda(stream)) }
    }
}

/// The element type of a cudarc slice or view.
pub trait HasElem {
    type Elem: DeviceElem;
}

impl<T: DeviceElem> HasElem for cudarc::driver::CudaSlice<T> {
    type Elem = T;
}
impl<T: DeviceElem> HasElem for cudarc::driver::CudaView<'_, T> {
    type Elem = T;
}
impl<T: DeviceElem> HasElem for cudarc::driver::CudaViewMut<'_, T> {
    type Elem = T;
}
