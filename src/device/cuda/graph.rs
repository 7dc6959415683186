//! CUDA graphs (capture a stream's work once, replay it with one launch) and event timers,
//! for the decode shapes where launch gaps would otherwise hide kernel time.

use super::{drv_err, CudaDevice};
use crate::device::Stream;
use crate::error::Result;
use cudarc::driver::{result as drv, sys};
use std::sync::Arc;

/// An instantiated graph, replayable on any stream of its device.
pub struct CudaGraph {
    dev: Arc<CudaDevice>,
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
}

// SAFETY: graph handles may be launched from any thread once the context is bound.
unsafe impl Send for CudaGraph {}
// SAFETY: as above; launching does not mutate the host-side handle.
unsafe impl Sync for CudaGraph {}

impl CudaGraph {
    /// Captures everything `work` queues on `stream` into a graph (nothing runs during
    /// capture). `work` must not synchronise or copy to the host.
    pub fn capture(
        dev: &Arc<CudaDevice>,
        stream: Stream,
        work: impl FnOnce() -> Result<()>,
    ) -> Result<CudaGraph> {
        let stream = dev.raw_stream(stream)?;
        dev.bind()?;
        // SAFETY: live stream of this device.
        unsafe {
            drv::stream::begin_capture(
                stream,
                sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            )
        }
        .map_err(drv_err("cuStreamBeginCapture"))?;
        let queued = work();
        // Always end the capture, even when `work` failed, so the stream is usable again.
        // SAFETY: the capture was begun above on this stream.
        let ended = unsafe { drv::stream::end_capture(stream) };
        queued?;
        let graph = ended.map_err(drv_err("cuStreamEndCapture"))?;
        // SAFETY: graph was just captured.
        let exec = match unsafe { drv::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) }
        {
            Ok(e) => e,
            Err(e) => {
                // SAFETY: destroy the graph we own.
                unsafe {
                    let _ = drv::graph::destroy(graph);
                }
                return Err(drv_err("cuGraphInstantiate")(e));
            }
        };
        Ok(CudaGraph {
            dev: dev.clone(),
            graph,
            exec,
        })
    }

    /// Queues one replay on `stream`.
    pub fn launch(&self, stream: Stream) -> Result<()> {
        let stream = self.dev.raw_stream(stream)?;
        self.dev.bind()?;
        // SAFETY: exec is live; stream belongs to the same context.
        unsafe { drv::graph::launch(self.exec, stream) }.map_err(drv_err("cuGraphLaunch"))
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        let _ = self.dev.bind();
        // SAFETY: both handles are owned and destroyed once.
        unsafe {
            let _ = drv::graph::exec_destroy(self.exec);
            let _ = drv::graph::destroy(self.graph);
        }
    }
}

/// A pair of events bracketing work on a stream.
pub struct CudaTimer {
    dev: Arc<CudaDevice>,
    start: sys::CUevent,
    stop: sys::CUevent,
}

impl CudaTimer {
    pub fn new(dev: &Arc<CudaDevice>) -> Result<CudaTimer> {
        dev.bind()?;
        let start = drv::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)
            .map_err(drv_err("cuEventCreate"))?;
        let stop = drv::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)
            .map_err(drv_err("cuEventCreate"))?;
        Ok(CudaTimer {
            dev: dev.clone(),
            start,
            stop,
        })
    }

    pub fn start(&self, stream: Stream) -> Result<()> {
        let stream = self.dev.raw_stream(stream)?;
        self.dev.bind()?;
        // SAFETY: live event and stream.
        unsafe { drv::event::record(self.start, stream) }.map_err(drv_err("cuEventRecord"))
    }

    pub fn stop(&self, stream: Stream) -> Result<()> {
        let stream = self.dev.raw_stream(stream)?;
        self.dev.bind()?;
        // SAFETY: live event and stream.
        unsafe { drv::event::record(self.stop, stream) }.map_err(drv_err("cuEventRecord"))
    }

    /// Waits for the stop event and returns the time between the two, in milliseconds.
    pub fn elapsed_ms(&self) -> Result<f32> {
        self.dev.bind()?;
        // SAFETY: both events were recorded.
        unsafe {
            drv::event::synchronize(self.stop).map_err(drv_err("cuEventSynchronize"))?;
            drv::event::elapsed(self.start, self.stop).map_err(drv_err("cuEventElapsedTime"))
        }
    }
}

impl Drop for CudaTimer {
    fn drop(&mut self) {
        let _ = self.dev.bind();
        // SAFETY: owned events destroyed once.
        unsafe {
            let _ = drv::event::destroy(self.start);
            let _ = drv::event::destroy(self.stop);
        }
    }
}
