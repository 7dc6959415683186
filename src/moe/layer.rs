//! `MoeLayer`: router → prepare → experts → finalize, plus shared experts and LoRA, on the
//! backend the oracle chose for the target. On a GPU the layer is the one GPU driver's
//! `GpuLayer`, whose device-resident forward (`forward_device`, `forward_cuda`) an engine
//! calls on its own buffers and stream; `forward` is the host-memory wrapper over it.

use super::config::{LayerConfig, Routing};
use super::emulation::{check_weights_match, EmulatedExperts};
use super::experts::Experts;
use super::lora::{Lora, LoraBatch, LoraShape};
use super::router::Router;
use super::shared::{shared_lora, SharedExpertWeights, SharedExperts};
use super::target::Target;
use super::topk::TopK;
use crate::backends::cuda::Cuda;
use crate::backends::rocm::Rocm;
use crate::backends::wgpu::Wgpu;
use crate::device::cuda::CudaDevice;
use crate::device::hip::HipDevice;
use crate::device::wgpu::WgpuDevice;
use crate::device::Runtime;
use crate::error::{check_len, Error, Result};
use crate::gpu::layer::{HostRouting, SharedParts};
use crate::gpu::{DeviceBatch, GpuLayer, Vendor};
use crate::oracle::{self, BackendId, Selection};
use crate::quant::ExpertWeights;

/// How a forward call is routed.
#[derive(Debug, Clone, Copy)]
pub enum RoutingInput<'a> {
    /// Router logits `[tokens, experts]`; the layer's router picks the experts.
    Logits(&'a [f32]),
    /// Experts already chosen by the caller.
    TopK(&'a TopK),
}

/// What rides along with the routed experts.
#[derive(Debug, Clone, Default)]
pub struct LayerExtras {
    pub shared: Option<SharedExpertWeights>,
    pub lora: Option<Lora>,
    /// Force a backend instead of letting the oracle choose; an error if it cannot run.
    pub backend: Option<BackendId>,
}

/// Where the layer runs: the emulation on the host, or the one GPU driver on a GPU.
enum Engine {
    Host(Box<dyn Experts>),
    Cuda(Box<GpuLayer<Cuda>>),
    Hip(Box<GpuLayer<Rocm>>),
    Wgpu(Box<GpuLayer<Wgpu>>),
}

/// The caller's stream for a device-resident forward: `Arc<cudarc::driver::CudaStream>`
/// on NVIDIA, a `hipStream_t` (`device::hip::HipStream`) on AMD, the device's queue
/// (`device::wgpu::WgpuStream`) on wgpu.
pub enum GpuStream<'a> {
    Cuda(&'a <CudaDevice as Runtime>::Stream),
    Hip(&'a <HipDevice as Runtime>::Stream),
    Wgpu(&'a <WgpuDevice as Runtime>::Stream),
}

/// One MoE layer, ready to run.
pub struct MoeLayer {
    config: LayerConfig,
    router: Router,
    engine: Engine,
    /// The shared expert where it runs emulated on the host (on the CPU, or when its
    /// scheme has no native backend on the GPU); a native one is inside the `GpuLayer`.
    host_shared: Option<SharedExperts>,
    lora: Option<Lora>,
    selection: Selection,
}

impl MoeLayer {
    /// Validates everything, asks the oracle for a backend and prepares the weights in its
    /// layout. A fallback to emulation on a GPU is logged.
    pub fn new(
        config: LayerConfig,
        weights: &ExpertWeights,
        target: &Target,
        extras: LayerExtras,
    ) -> Result<Self> {
        check_weights_match(weights, &config)?;
        weights.validate()?;
        if extras.lora.is_some() && !config.lora {
            return Err(Error::Config(
                "LoRA adapters given but the layer config has lora = false".into(),
            ));
        }
        if extras.shared.is_some() != config.shared_intermediate.is_some() {
            return Err(Error::Config(
                "shared expert weights and config.shared_intermediate must be given together"
                    .into(),
            ));
        }
        if let Some(s) = &extras.shared {
            if Some(s.weights.intermediate) != config.shared_intermediate {
                return Err(Error::shape(
                    "shared expert intermediate",
                    format!("{:?}", config.shared_intermediate),
                    s.weights.intermediate,
                ));
            }
        }
        if let Some(l) = &extras.lora {
            let routed = LoraShape {
                hidden: config.hidden,
                intermediate: config.intermediate,
                gated: config.activation.is_gated(),
            };
            let shared_shape = config.shared_intermediate.map(|i| LoraShape {
                intermediate: i,
                ..routed
            });
            l.validate(config.num_experts, routed, shared_shape)?;
        }
        let router = Router::new(&config)?;
        let mut selection = oracle::select(
            &weights.scheme,
            target.capabilities(),
            &config,
            extras.backend,
        )?;
        if selection.chosen.is_aiter() && !crate::backends::rocm::kernels::built() {
            let note = crate::backends::rocm::kernels::BUILD_NOTE;
            log::warn!(
                "{}: this build has no HIP code objects ({note}); the experts run emulated",
                selection.chosen
            );
            selection.chosen = BackendId::Emulation;
        }
        let shared = Shared::plan(&extras, &config, target)?;
        let lora = extras.lora.as_ref();
        let gpu_shared = shared.as_ref().and_then(Shared::native);
        let engine = match (target, selection.chosen) {
            (_, BackendId::Emulation) => {
                Engine::Host(Box::new(EmulatedExperts::prepare(weights, &config)?))
            }
            (Target::Cuda(dev), id) if id.is_cuda() => Engine::Cuda(Box::new(GpuLayer::new(
                dev, &config, weights, &selection, lora, gpu_shared,
            )?)),
            (Target::Hip(dev), id) if id.is_aiter() => Engine::Hip(Box::new(GpuLayer::new(
                dev, &config, weights, &selection, lora, gpu_shared,
            )?)),
            (Target::Wgpu(dev), id) if id.is_wgpu() => Engine::Wgpu(Box::new(GpuLayer::new(
                dev, &config, weights, &selection, lora, gpu_shared,
            )?)),
            (_, id) => {
                return Err(Error::BackendUnavailable {
                    backend: id.name().to_string(),
                    reasons: format!(
                        "the oracle chose it for {}, which cannot run it (oracle table and \
                         moe::layer disagree)",
                        target.capabilities()
                    ),
                })
            }
        };
        // A native shared expert needs a GPU engine; otherwise it runs on the host.
        let host_shared = match (shared, &engine) {
            (Some(s), Engine::Cuda(_) | Engine::Hip(_) | Engine::Wgpu(_))
                if s.native().is_some() =>
            {
                None
            }
            (Some(s), _) => Some(SharedExperts::prepare(
                s.weights,
                config.activation,
                config.hidden,
            )?),
            (None, _) => None,
        };
        Ok(MoeLayer {
            router,
            config,
            engine,
            host_shared,
            lora: extras.lora,
            selection,
        })
    }

    /// The backend running the shared expert, if the layer has one.
    pub fn shared_backend(&self) -> Option<BackendId> {
        if self.host_shared.is_some() {
            return Some(BackendId::Emulation);
        }
        match &self.engine {
            Engine::Cuda(g) => g.shared_backend(),
            Engine::Hip(g) => g.shared_backend(),
            Engine::Wgpu(g) => g.shared_backend(),
            Engine::Host(_) => None,
        }
    }

    /// Routes logits on the GPU when the experts are there, else on the host (both follow
    /// `Router`'s definition; the GPU parity suite checks they agree).
    pub fn route(&self, logits: &[f32], tokens: usize) -> Result<TopK> {
        match &self.engine {
            Engine::Cuda(g) if g.routes_on_gpu() => g.route(logits, tokens),
            Engine::Hip(g) if g.routes_on_gpu() => g.route(logits, tokens),
            Engine::Wgpu(g) if g.routes_on_gpu() => g.route(logits, tokens),
            _ => self.router.route(logits, tokens),
        }
    }

    /// Whether logits are routed by the GPU routing kernel rather than by `Router` on the
    /// host.
    pub fn routes_on_gpu(&self) -> bool {
        match &self.engine {
            Engine::Cuda(g) => g.routes_on_gpu(),
            Engine::Hip(g) => g.routes_on_gpu(),
            Engine::Wgpu(g) => g.routes_on_gpu(),
            Engine::Host(_) => false,
        }
    }

    /// The oracle's decision, with its reasons.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    pub fn config(&self) -> &LayerConfig {
        &self.config
    }

    /// Runs the layer on `x` (`[tokens, hidden]`); `adapters` gives each token's LoRA
    /// slot (or none). Returns `[tokens, hidden]` in f32. On a GPU: one upload of the
    /// inputs, the device-resident forward, one download.
    pub fn forward(
        &self,
        x: &[f32],
        routing: RoutingInput<'_>,
        adapters: Option<&[Option<usize>]>,
    ) -> Result<Vec<f32>> {
        let h = self.config.hidden;
        if x.len() % h != 0 {
            return Err(Error::shape(
                "hidden states",
                format!("a multiple of hidden = {h}"),
                x.len(),
            ));
        }
        let tokens = x.len() / h;
        if let Some(v) = x.iter().find(|v| !v.is_finite()) {
            return Err(Error::Config(format!("hidden states contain {v}")));
        }
        if let RoutingInput::TopK(t) = routing {
            if t.tokens() != tokens {
                return Err(Error::shape("top-k tokens", tokens, t.tokens()));
            }
            t.check_experts(self.config.num_experts)?;
        }
        let batch = match (adapters, &self.lora) {
            (Some(slots), Some(lora)) => Some(LoraBatch::new(lora, slots, tokens)?),
            (Some(slots), None) => {
                check_len("LoRA adapter slots", slots.len(), tokens)?;
                match slots.iter().flatten().next() {
                    Some(&index) => return Err(Error::AdapterIndex { index, loaded: 0 }),
                    None => None,
                }
            }
            (None, _) => None,
        };
        let mut out = match &self.engine {
            Engine::Host(experts) => {
                let routed;
                let topk = match routing {
                    RoutingInput::Logits(l) => {
                        routed = self.router.route(l, tokens)?;
                        &routed
                    }
                    RoutingInput::TopK(t) => t,
                };
                let mut out = vec![0f32; tokens * h];
                experts.forward(x, topk, batch.as_ref(), &mut out)?;
                out
            }
            Engine::Cuda(g) => self.gpu_forward(g, x, tokens, routing, batch.as_ref())?,
            Engine::Hip(g) => self.gpu_forward(g, x, tokens, routing, batch.as_ref())?,
            Engine::Wgpu(g) => self.gpu_forward(g, x, tokens, routing, batch.as_ref())?,
        };
        if let Some(s) = &self.host_shared {
            s.add_to(x, tokens, batch.as_ref(), &mut out)?;
        }
        check_output(&out, h)?;
        Ok(out)
    }

    fn gpu_forward<V: Vendor>(
        &self,
        g: &GpuLayer<V>,
        x: &[f32],
        tokens: usize,
        routing: RoutingInput<'_>,
        batch: Option<&LoraBatch<'_>>,
    ) -> Result<Vec<f32>> {
        // Each token's adapter slot; LoRA runs only when some token has one.
        let slots: Option<Vec<i32>> = batch
            .filter(|l| l.slots.iter().any(Option::is_some))
            .map(|l| l.slots.iter().map(|s| s.map_or(-1, |a| a as i32)).collect());
        let routed;
        let routing = match routing {
            RoutingInput::Logits(l) if g.routes_on_gpu() => HostRouting::Logits(l),
            RoutingInput::Logits(l) => {
                routed = self.router.route(l, tokens)?;
                HostRouting::TopK(&routed)
            }
            RoutingInput::TopK(t) => HostRouting::TopK(t),
        };
        g.forward(x, routing, slots.as_deref())
    }

    /// Sizes the GPU workspace for forwards of up to `max_tokens` tokens. Call it before
    /// `forward_device` and before capturing a graph (a later call replaces the
    /// workspace, and graphs captured earlier would read the old one). Nothing to do on
    /// the CPU.
    pub fn reserve(&self, max_tokens: usize) -> Result<()> {
        match &self.engine {
            Engine::Host(_) => Ok(()),
            Engine::Cuda(g) => g.reserve(max_tokens),
            Engine::Hip(g) => g.reserve(max_tokens),
            Engine::Wgpu(g) => g.reserve(max_tokens),
        }
    }

    /// The whole layer queued on the caller's `stream`, from and into the caller's device
    /// memory (see `DeviceBatch`): no allocation, no host synchronisation, nothing read
    /// back, so it can be captured in a CUDA graph. Needs `reserve` first and every part
    /// of the layer native on the GPU.
    ///
    /// # Safety
    /// Every address in `batch` must be memory of the layer's GPU holding what it claims
    /// and stay live until the queued work is done; forwards of one layer must be ordered
    /// on the GPU (one stream, or events), since they share its workspace.
    pub unsafe fn forward_device(&self, batch: &DeviceBatch, stream: GpuStream<'_>) -> Result<()> {
        if self.host_shared.is_some() {
            return Err(Error::BackendUnavailable {
                backend: "emulation".into(),
                reasons: "the shared expert's scheme has no native backend here, so it runs \
                          on the host; forward_device needs every part of the layer on the GPU"
                    .into(),
            });
        }
        match (&self.engine, stream) {
            (Engine::Cuda(g), GpuStream::Cuda(s)) => g.forward_device(batch, s),
            (Engine::Hip(g), GpuStream::Hip(s)) => g.forward_device(batch, s),
            (Engine::Wgpu(g), GpuStream::Wgpu(s)) => g.forward_device(batch, s),
            (Engine::Host(_), _) => Err(Error::BackendUnavailable {
                backend: self.selection.chosen.name().into(),
                reasons: "the layer runs emulated on the host; forward_device needs a native \
                          GPU backend"
                    .into(),
            }),
            (Engine::Cuda(_), GpuStream::Hip(_) | GpuStream::Wgpu(_))
            | (Engine::Hip(_), GpuStream::Cuda(_) | GpuStream::Wgpu(_))
            | (Engine::Wgpu(_), GpuStream::Cuda(_) | GpuStream::Hip(_)) => Err(Error::Handle(
                "the stream is of another vendor's GPU than the layer's".into(),
            )),
        }
    }

    /// The CUDA side of the layer's GPU engine, for benchmarks and tests.
    pub fn cuda_layer(&self) -> Option<&GpuLayer<Cuda>> {
        match &self.engine {
            Engine::Cuda(g) => Some(g),
            Engine::Host(_) | Engine::Hip(_) | Engine::Wgpu(_) => None,
        }
    }

    /// The wgpu side of the layer's GPU engine, for benchmarks and tests.
    pub fn wgpu_layer(&self) -> Option<&GpuLayer<Wgpu>> {
        match &self.engine {
            Engine::Wgpu(g) => Some(g),
            Engine::Host(_) | Engine::Cuda(_) | Engine::Hip(_) => None,
        }
    }
}

/// The shared expert's plan: its weights and, when it runs natively on the GPU, its
/// selection and one-expert config.
struct Shared<'a> {
    weights: &'a SharedExpertWeights,
    native: Option<(Selection, LayerConfig, Option<Lora>)>,
}

impl<'a> Shared<'a> {
    /// The shared expert on the best backend for its own scheme (it may differ from the
    /// routed experts'), or emulated when nothing native runs it or emulation was forced.
    fn plan(
        extras: &'a LayerExtras,
        config: &LayerConfig,
        target: &Target,
    ) -> Result<Option<Self>> {
        let Some(s) = &extras.shared else {
            return Ok(None);
        };
        let one = LayerConfig {
            num_experts: 1,
            top_k: 1,
            intermediate: s.weights.intermediate,
            routing: Routing::Given,
            has_bias: s.weights.w13_bias.is_some(),
            apply_router_weight_on_input: false,
            shared_intermediate: None,
            lora: extras.lora.is_some(),
            ..config.clone()
        };
        let selection = oracle::select(&s.weights.scheme, target.capabilities(), &one, None)?;
        let emulated = extras.backend == Some(BackendId::Emulation)
            || selection.chosen == BackendId::Emulation
            || (selection.chosen.is_aiter() && !crate::backends::rocm::kernels::built());
        Ok(Some(Shared {
            weights: s,
            native: (!emulated).then(|| (selection, one, extras.lora.as_ref().map(shared_lora))),
        }))
    }

    fn native(&self) -> Option<SharedParts<'_>> {
        self.native
            .as_ref()
            .map(|(selection, config, lora)| SharedParts {
                weights: &self.weights.weights,
                config: config.clone(),
                selection,
                lora: lora.as_ref(),
                gate: self.weights.gate.as_deref(),
            })
    }
}

/// Validated weights within `MAX_WEIGHT_MAGNITUDE` keep f32 arithmetic finite for
/// ordinary input, but an f16 layer rounds its intermediates to f16, whose range ends at
/// 65504: rather than hand back an infinity, the layer says its output overflowed.
fn check_output(out: &[f32], hidden: usize) -> Result<()> {
    match out.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(p) => Err(Error::Value {
            what: format!(
                "layer output [token {}, element {}]",
                p / hidden,
                p % hidden
            ),
            value: out[p],
            expected:
                "a finite output (an intermediate overflowed the model dtype; f16 ends at 65504)",
        }),
    }
}

/// Sets static input scales from a calibration batch: runs the emulation without
/// activation quantization and takes the amax of each GEMM's input.
pub fn calibrate(
    weights: &mut ExpertWeights,
    config: &LayerConfig,
    x: &[f32],
    topk: &TopK,
) -> Result<()> {
    if !weights.scheme.needs_static_input_scales() {
        return Ok(());
    }
    let mut probe = weights.clone();
    probe.input_scales = Some(crate::quant::InputScales::uniform(1.0, 1.0));
    let (_, amax1, amax2) =
        EmulatedExperts::prepare(&probe, config)?.forward_with_stats(x, topk, None, false)?;
    let s1 = crate::quant::ActQuant::static_scale_for(&weights.scheme, amax1);
    let s2 = crate::quant::ActQuant::static_scale_for(&weights.scheme, amax2);
    weights.input_scales = Some(crate::quant::InputScales::uniform(s1, s2));
    Ok(())
}
