//! `GpuLayer`: one MoE layer on one GPU of either vendor. `forward_device` queues the whole
//! layer — routing, alignment, the routed experts, the shared expert and its gate, the
//! cast to the caller's dtype — on the caller's stream, from and into the caller's device
//! memory, with workspace reserved beforehand: it allocates nothing, reads nothing back
//! and never synchronises, so an engine can capture it in a CUDA graph. `forward` (host
//! memory) uploads, calls it, and downloads once.

use super::io::{DType, DeviceBatch, DeviceRouting, DeviceSlice};
use super::router::GpuRouter;
use super::vendor::{ExpertsIo, KernelFile, Vendor, VendorExperts};
use crate::device::{Arg, Buffer, LaunchConfig, Runtime};
use crate::error::{checked_size, Error, Result};
use crate::moe::{LayerConfig, Lora, Routing, TopK};
use crate::oracle::{BackendId, Selection};
use crate::quant::ExpertWeights;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

type Stream<V> = <<V as Vendor>::R as Runtime>::Stream;
type Scratch<V> = <<V as Vendor>::Experts as VendorExperts>::Scratch;

/// Threads per block of the element-wise kernels (`Q_THREADS` in quant.cu / quant.hip).
const THREADS: u32 = 256;
/// Threads of `fm_align`'s one block.
const ALIGN_THREADS: u32 = 1024;

/// The shared expert on the device: a one-expert MLP every token is routed to, weighted
/// by its gate.
pub struct DeviceShared<V: Vendor> {
    experts: V::Experts,
    /// `[hidden]` f32: the gate's weights, when the output is scaled by `sigmoid(x · g)`.
    gate: Option<Buffer<V::R>>,
}

/// Alignment buffers for one experts object and a maximum batch.
struct Aligned<V: Vendor> {
    sorted: Buffer<V::R>,
    block_expert: Buffer<V::R>,
    num_slots: Buffer<V::R>,
    counts: Buffer<V::R>,
    scratch: Scratch<V>,
}

impl<V: Vendor> Aligned<V> {
    fn reserve(rt: &V::R, experts: &V::Experts, tokens: usize, top_k: usize) -> Result<Self> {
        let (e, _, _) = experts.dims();
        let pairs = checked_size("workspace (tokens × top-k)", &[tokens, top_k])?;
        let (mut blocks, mut slots) = (1, 1);
        for bt in experts.block_token_choices() {
            let b = max_blocks(pairs, bt, e);
            blocks = blocks.max(b);
            slots = slots.max(b * bt);
        }
        Ok(Aligned {
            sorted: Buffer::alloc(rt, slots * 4)?,
            block_expert: Buffer::alloc(rt, blocks * 4)?,
            num_slots: Buffer::alloc(rt, 4)?,
            counts: Buffer::alloc(rt, e * 4)?,
            scratch: experts.reserve(tokens, top_k, slots)?,
        })
    }
}

/// Token blocks the alignment can produce: every expert's run padded to `bt` slots.
fn max_blocks(pairs: usize, bt: usize, experts: usize) -> usize {
    pairs.div_ceil(bt) + experts.min(pairs)
}

/// Everything a forward uses, sized once for `tokens` tokens.
struct Workspace<V: Vendor> {
    tokens: usize,
    /// Routing kernel output `[tokens, top_k]` (ids i32, weights f32).
    ids: Buffer<V::R>,
    weights: Buffer<V::R>,
    /// Hidden states times the router weight (only with the weight on the input).
    x_scaled: Option<Buffer<V::R>>,
    /// `[tokens, hidden]` f32 sum, cast into the caller's dtype at the end by
    /// `fm_finalize`, which leaves it zero for the next forward.
    acc: Buffer<V::R>,
    /// Set while `acc` may not be all zeros (a forward that failed half-queued): the next
    /// forward zeroes it first.
    acc_dirty: AtomicBool,
    /// Clamped adapter slots `[tokens]`.
    slots: Buffer<V::R>,
    routed: Aligned<V>,
    shared: Option<SharedWorkspace<V>>,
    /// Staging for the host `forward`.
    host: HostStaging<V>,
}

struct SharedWorkspace<V: Vendor> {
    /// `[tokens]` i32 zeros: every token to the one expert.
    zeros: Buffer<V::R>,
    /// `[tokens]` f32: the gate per token (ones without a gate).
    gate: Buffer<V::R>,
    aligned: Aligned<V>,
}

struct HostStaging<V: Vendor> {
    x: Buffer<V::R>,
    logits: Buffer<V::R>,
    ids: Buffer<V::R>,
    weights: Buffer<V::R>,
    adapters: Buffer<V::R>,
    out: Buffer<V::R>,
}

/// One MoE layer on one GPU.
pub struct GpuLayer<V: Vendor> {
    rt: Arc<V::R>,
    align: <V::R as Runtime>::Module,
    quant: <V::R as Runtime>::Module,
    router: Option<GpuRouter<V>>,
    experts: V::Experts,
    shared: Option<DeviceShared<V>>,
    num_experts: usize,
    hidden: usize,
    top_k: usize,
    weight_on_input: bool,
    workspace: Mutex<Option<Workspace<V>>>,
}

impl<V: Vendor> GpuLayer<V> {
    /// Prepares the routed experts for `selection`'s backend (and, when given, the shared
    /// expert for `shared`'s), uploads them and loads the kernels. Reserves no workspace.
    pub fn new(
        rt: &Arc<V::R>,
        config: &LayerConfig,
        weights: &ExpertWeights,
        selection: &Selection,
        lora: Option<&Lora>,
        shared: Option<SharedParts<'_>>,
    ) -> Result<Self> {
        let experts = V::prepare(rt, weights, config, selection, lora)?;
        let shared = match shared {
            Some(s) => Some(DeviceShared {
                experts: V::prepare(rt, s.weights, &s.config, s.selection, s.lora)?,
                gate: s.gate.map(|g| Buffer::from_slice(&**rt, g)).transpose()?,
            }),
            None => None,
        };
        Self::from_experts(rt, config, experts, shared)
    }

    /// A layer around experts already prepared (the benchmark makes them directly in the
    /// kernels' layout).
    pub fn from_experts(
        rt: &Arc<V::R>,
        config: &LayerConfig,
        experts: V::Experts,
        shared: Option<DeviceShared<V>>,
    ) -> Result<Self> {
        if config.apply_router_weight_on_input && config.top_k != 1 {
            return Err(Error::Config(format!(
                "router weight on the input needs top-k 1, got {}",
                config.top_k
            )));
        }
        Ok(GpuLayer {
            align: V::module(&**rt, KernelFile::Align)?,
            quant: V::module(&**rt, KernelFile::Quant)?,
            router: GpuRouter::new(&**rt, config)?,
            rt: rt.clone(),
            experts,
            shared,
            num_experts: config.num_experts,
            hidden: config.hidden,
            top_k: config.top_k,
            weight_on_input: config.apply_router_weight_on_input,
            workspace: Mutex::new(None),
        })
    }

    pub fn runtime(&self) -> &Arc<V::R> {
        &self.rt
    }

    pub fn backend(&self) -> BackendId {
        self.experts.backend()
    }

    pub fn shared_backend(&self) -> Option<BackendId> {
        self.shared.as_ref().map(|s| s.experts.backend())
    }

    /// Whether logits are routed by the routing kernel (else the layer's routing is
    /// given by the caller).
    pub fn routes_on_gpu(&self) -> bool {
        self.router.is_some()
    }

    /// The model dtype the hidden states are read in.
    pub fn dtype(&self) -> DType {
        if self.experts.is_f16() {
            DType::F16
        } else {
            DType::Bf16
        }
    }

    /// Routes host logits with the routing kernel (for tests and tools).
    pub fn route(&self, logits: &[f32], tokens: usize) -> Result<TopK> {
        match &self.router {
            Some(r) => r.route(&self.rt, logits, tokens),
            None => Err(routing_given()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Workspace<V>>> {
        self.workspace.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token count the workspace is reserved for (0: none yet).
    pub fn reserved(&self) -> usize {
        self.lock().as_ref().map_or(0, |w| w.tokens)
    }

    /// Sizes the workspace for up to `max_tokens` tokens per forward, replacing any
    /// before. Graphs captured earlier read the old workspace: capture after this.
    pub fn reserve(&self, max_tokens: usize) -> Result<()> {
        let mut slot = self.lock();
        *slot = None;
        *slot = Some(self.make_workspace(max_tokens.max(1))?);
        Ok(())
    }

    fn make_workspace(&self, tokens: usize) -> Result<Workspace<V>> {
        let rt = &*self.rt;
        let (h, e, k) = (self.hidden, self.num_experts, self.top_k);
        let rows = |what: &str, cols: usize, bytes: usize| {
            checked_size(what, &[tokens, cols, bytes]).and_then(|n| Buffer::alloc(rt, n))
        };
        let shared = match &self.shared {
            Some(s) => Some(SharedWorkspace {
                zeros: Buffer::from_slice(rt, &vec![0i32; tokens])?,
                gate: Buffer::from_slice(rt, &vec![1f32; tokens])?,
                aligned: Aligned::reserve(rt, &s.experts, tokens, 1)?,
            }),
            None => None,
        };
        Ok(Workspace {
            tokens,
            ids: rows("routed ids", k, 4)?,
            weights: rows("routed weights", k, 4)?,
            x_scaled: self
                .weight_on_input
                .then(|| rows("scaled hidden states", h, 2))
                .transpose()?,
            acc: {
                let acc = rows("layer sum", h, 4)?;
                rt.zero(acc.addr(), acc.bytes(), rt.stream())?;
                rt.synchronize(rt.stream())?;
                acc
            },
            acc_dirty: AtomicBool::new(false),
            slots: rows("adapter slots", 1, 4)?,
            routed: Aligned::reserve(rt, &self.experts, tokens, k)?,
            shared,
            host: HostStaging {
                x: rows("hidden states", h, 2)?,
                logits: rows("router logits", e, 4)?,
                ids: rows("top-k ids", k, 4)?,
                weights: rows("top-k weights", k, 4)?,
                adapters: rows("adapter slots", 1, 4)?,
                out: rows("output", h, 4)?,
            },
        })
    }

    /// Queues the layer on `stream` for `batch`, all in device memory the caller owns.
    ///
    /// # Safety
    /// Every address in `batch` must be device memory of this layer's GPU holding the
    /// elements it claims, live until the work queued on `stream` is done; the output must
    /// not overlap the inputs. The layer's workspace is shared by its forwards: order them
    /// (one stream, or events), as the GPU runs them.
    pub unsafe fn forward_device(&self, batch: &DeviceBatch, stream: &Stream<V>) -> Result<()> {
        self.rt.check_stream(stream)?;
        let ws = self.lock();
        let ws = ws.as_ref().ok_or_else(|| {
            Error::Config(
                "no workspace reserved: call reserve(max_tokens) before forward_device".into(),
            )
        })?;
        self.enqueue(ws, batch, stream)
    }

    /// Queues the layer; if that fails part way, the sum buffer is marked for zeroing.
    fn enqueue(&self, ws: &Workspace<V>, b: &DeviceBatch, stream: &Stream<V>) -> Result<()> {
        let queued = self.try_enqueue(ws, b, stream);
        if queued.is_err() {
            ws.acc_dirty.store(true, Ordering::Relaxed);
        }
        queued
    }

    /// Checks `batch` against the layer and the workspace, then queues the layer.
    fn try_enqueue(&self, ws: &Workspace<V>, b: &DeviceBatch, stream: &Stream<V>) -> Result<()> {
        let (t, h, e, k) = (b.tokens, self.hidden, self.num_experts, self.top_k);
        if t > ws.tokens {
            return Err(Error::shape(
                "tokens in forward_device (over the reserved workspace)",
                format!("at most {}", ws.tokens),
                t,
            ));
        }
        let model = self.dtype();
        let th = t * h;
        b.hidden.check("hidden states", th, &[model])?;
        b.out.check("output", th, &[model, DType::F32])?;
        let (ids, weights) = match b.routing {
            DeviceRouting::Logits(l) => {
                l.check("router logits", t * e, &[DType::F32])?;
                let router = self.router.as_ref().ok_or_else(routing_given)?;
                router.enqueue(
                    &self.rt,
                    l.addr,
                    t,
                    ws.ids.addr(),
                    ws.weights.addr(),
                    stream,
                )?;
                (ws.ids.addr(), ws.weights.addr())
            }
            DeviceRouting::TopK { ids, weights } => {
                ids.check("top-k ids", t * k, &[DType::I32])?;
                weights.check("top-k weights", t * k, &[DType::F32])?;
                (ids.addr, weights.addr)
            }
        };
        let token_adapter = match (b.adapters, self.experts.adapters()) {
            (None, _) => 0,
            (Some(a), Some(n)) => {
                a.check("adapter slots", t, &[DType::I32])?;
                self.clamp_slots(a, t, n, ws.slots.addr(), stream)?;
                ws.slots.addr()
            }
            (Some(_), None) => {
                return Err(Error::Config(format!(
                    "adapter slots given, but {} runs no LoRA adapters for this layer",
                    self.experts.backend()
                )))
            }
        };
        if t == 0 {
            return Ok(());
        }
        // An f32 output is the sum itself, zeroed here; otherwise the workspace's sum is
        // already zero (fm_finalize leaves it so).
        let direct = b.out.dtype == DType::F32;
        let acc = if direct {
            self.rt.zero(b.out.addr, th * 4, stream)?;
            b.out.addr
        } else {
            if ws.acc_dirty.swap(false, Ordering::Relaxed) {
                self.rt.zero(ws.acc.addr(), ws.acc.bytes(), stream)?;
            }
            ws.acc.addr()
        };
        let x = match &ws.x_scaled {
            Some(scaled) => {
                let args = [
                    Arg::Ptr(b.hidden.addr),
                    Arg::I32(t as i32),
                    Arg::I32(h as i32),
                    Arg::Ptr(weights),
                    Arg::I32(self.experts.is_f16() as i32),
                    Arg::Ptr(scaled.addr()),
                ];
                let cfg = LaunchConfig::blocks(t, THREADS, 0);
                self.rt
                    .launch(&self.quant, "fm_scale_rows", cfg, &args, stream)?;
                scaled.addr()
            }
            None => b.hidden.addr,
        };
        let io = Io {
            tokens: t,
            x,
            token_adapter,
            acc,
        };
        self.run_experts(&self.experts, &ws.routed, &io, k, ids, weights, stream)?;
        if let (Some(s), Some(sw)) = (&self.shared, &ws.shared) {
            if let Some(g) = &s.gate {
                let args = [
                    Arg::Ptr(b.hidden.addr),
                    Arg::I32(t as i32),
                    Arg::I32(h as i32),
                    Arg::Ptr(g.addr()),
                    Arg::I32(self.experts.is_f16() as i32),
                    Arg::Ptr(sw.gate.addr()),
                ];
                let cfg = LaunchConfig::blocks(t, THREADS, 0);
                self.rt
                    .launch(&self.quant, "fm_shared_gate", cfg, &args, stream)?;
            }
            let io = Io {
                x: b.hidden.addr,
                ..io
            };
            let (zeros, gate) = (sw.zeros.addr(), sw.gate.addr());
            self.run_experts(&s.experts, &sw.aligned, &io, 1, zeros, gate, stream)?;
        }
        if !direct {
            let args = [
                Arg::Ptr(acc),
                Arg::I64(th as i64),
                Arg::I32(self.experts.is_f16() as i32),
                Arg::Ptr(b.out.addr),
            ];
            let cfg = LaunchConfig::blocks(th.div_ceil(THREADS as usize).min(4096), THREADS, 0);
            self.rt
                .launch(&self.quant, "fm_finalize", cfg, &args, stream)?;
        }
        Ok(())
    }

    /// Alignment, then one experts object's GEMM pipeline adding into `io.acc`.
    #[allow(clippy::too_many_arguments)]
    fn run_experts(
        &self,
        experts: &V::Experts,
        a: &Aligned<V>,
        io: &Io,
        top_k: usize,
        ids: u64,
        weights: u64,
        stream: &Stream<V>,
    ) -> Result<()> {
        let (e, _, _) = experts.dims();
        let pairs = io.tokens * top_k;
        let bt = experts.block_tokens(pairs);
        let blocks = max_blocks(pairs, bt, e);
        let args = [
            Arg::Ptr(ids),
            Arg::I32(pairs as i32),
            Arg::I32(e as i32),
            Arg::I32(bt as i32),
            Arg::I32(blocks as i32),
            Arg::Ptr(a.sorted.addr()),
            Arg::Ptr(a.block_expert.addr()),
            Arg::Ptr(a.num_slots.addr()),
            Arg::Ptr(a.counts.addr()),
        ];
        let smem = ((3 * e + 1) * 4) as u32;
        let cfg = LaunchConfig::blocks(1, ALIGN_THREADS, smem);
        self.rt
            .launch(&self.align, "fm_align", cfg, &args, stream)?;
        let io = ExpertsIo {
            tokens: io.tokens,
            top_k,
            x: io.x,
            topk_weights: weights,
            sorted: a.sorted.addr(),
            block_expert: a.block_expert.addr(),
            num_slots: a.num_slots.addr(),
            block_tokens: bt,
            max_blocks: blocks,
            token_adapter: io.token_adapter,
            out: io.acc,
        };
        experts.enqueue(&io, &a.scratch, stream)
    }

    fn clamp_slots(
        &self,
        src: DeviceSlice,
        tokens: usize,
        adapters: usize,
        dst: u64,
        stream: &Stream<V>,
    ) -> Result<()> {
        if tokens == 0 {
            return Ok(());
        }
        let args = [
            Arg::Ptr(src.addr),
            Arg::I32(tokens as i32),
            Arg::I32(adapters as i32),
            Arg::Ptr(dst),
        ];
        let cfg = LaunchConfig::blocks(tokens.div_ceil(THREADS as usize), THREADS, 0);
        self.rt
            .launch(&self.quant, "fm_clamp_slots", cfg, &args, stream)
    }

    /// The layer on host memory: `x` `[tokens, hidden]`, routing, each token's adapter
    /// slot (`None`: no token has one); returns the f32 sum. Uploads on the device's own
    /// stream, queues `forward_device`'s work, downloads once. A batch over the reserved
    /// workspace reserves a larger one (invalidating graphs captured before).
    pub fn forward(
        &self,
        x: &[f32],
        routing: HostRouting<'_>,
        adapters: Option<&[i32]>,
    ) -> Result<Vec<f32>> {
        let h = self.hidden;
        let tokens = x.len() / h;
        if tokens == 0 {
            if let HostRouting::Logits(l) = routing {
                crate::moe::router::check_logits(l, 0, self.num_experts)?;
            }
            return Ok(Vec::new());
        }
        let mut slot = self.lock();
        if slot.as_ref().is_none_or(|w| w.tokens < tokens) {
            *slot = None;
            *slot = Some(self.make_workspace(tokens.max(1))?);
        }
        let ws = slot.as_ref().expect("reserved above");
        let rt = &*self.rt;
        let stream = rt.stream();
        let st = &ws.host;
        let model: Vec<u16> = if self.experts.is_f16() {
            x.iter()
                .map(|&v| half::f16::from_f32(v).to_bits())
                .collect()
        } else {
            x.iter()
                .map(|&v| half::bf16::from_f32(v).to_bits())
                .collect()
        };
        rt.upload(st.x.addr(), bytemuck::cast_slice(&model), stream)?;
        let routing = match routing {
            HostRouting::Logits(l) => {
                crate::moe::router::check_logits(l, tokens, self.num_experts)?;
                rt.upload(st.logits.addr(), bytemuck::cast_slice(l), stream)?;
                DeviceRouting::Logits(DeviceSlice::new(st.logits.addr(), l.len(), DType::F32))
            }
            HostRouting::TopK(topk) => {
                let ids: Vec<i32> = topk.ids().iter().map(|&i| i as i32).collect();
                rt.upload(st.ids.addr(), bytemuck::cast_slice(&ids), stream)?;
                rt.upload(
                    st.weights.addr(),
                    bytemuck::cast_slice(topk.weights()),
                    stream,
                )?;
                DeviceRouting::TopK {
                    ids: DeviceSlice::new(st.ids.addr(), ids.len(), DType::I32),
                    weights: DeviceSlice::new(st.weights.addr(), ids.len(), DType::F32),
                }
            }
        };
        let adapters = match adapters {
            Some(a) => {
                rt.upload(st.adapters.addr(), bytemuck::cast_slice(a), stream)?;
                Some(DeviceSlice::new(st.adapters.addr(), a.len(), DType::I32))
            }
            None => None,
        };
        let batch = DeviceBatch {
            tokens,
            hidden: DeviceSlice::new(st.x.addr(), x.len(), self.dtype()),
            routing,
            adapters,
            out: DeviceSlice::new(st.out.addr(), x.len(), DType::F32),
        };
        self.enqueue(ws, &batch, stream)?;
        let mut out = vec![0f32; x.len()];
        rt.download(st.out.addr(), bytemuck::cast_slice_mut(&mut out), stream)?;
        Ok(out)
    }
}

/// Routing of a host forward.
#[derive(Debug, Clone, Copy)]
pub enum HostRouting<'a> {
    Logits(&'a [f32]),
    TopK(&'a TopK),
}

/// The shared expert's parts, as `GpuLayer::new` takes them.
pub struct SharedParts<'a> {
    pub weights: &'a ExpertWeights,
    /// The one-expert layer config it runs as.
    pub config: LayerConfig,
    pub selection: &'a Selection,
    pub lora: Option<&'a Lora>,
    pub gate: Option<&'a [f32]>,
}

/// Where a forward's results go and what it reads, for one experts object.
#[derive(Clone, Copy)]
struct Io {
    tokens: usize,
    x: u64,
    token_adapter: u64,
    acc: u64,
}

fn routing_given() -> Error {
    Error::Config(format!(
        "the layer's routing is {:?}: pass top-k ids and weights, not logits",
        Routing::Given
    ))
}
