//! `MoeLayer`: router → prepare → experts → finalize, plus shared experts and LoRA, on the
//! backend the oracle chose for the target.

use super::config::{LayerConfig, Routing};
use super::emulation::{check_weights_match, EmulatedExperts};
use super::experts::Experts;
use super::lora::{Lora, LoraBatch, LoraShape};
use super::router::Router;
use super::shared::{NativeShared, SharedExpertWeights, SharedExperts};
use super::target::Target;
use super::topk::TopK;
use crate::error::{check_len, Error, Result};
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

/// One MoE layer, ready to run.
pub struct MoeLayer {
    config: LayerConfig,
    router: Router,
    experts: Box<dyn Experts>,
    shared: Option<SharedExperts>,
    lora: Option<Lora>,
    selection: Selection,
    /// Routing on the GPU when the experts run there (`None`: the host router).
    #[cfg(feature = "cuda")]
    gpu_router: Option<crate::backends::cuda::CudaRouter>,
    /// Routing on the AMD GPU when the experts run there natively.
    #[cfg(feature = "rocm")]
    hip_router: Option<crate::backends::rocm::HipRouter>,
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
        let shared = match &extras.shared {
            Some(s) => Some(prepare_shared(
                s,
                &config,
                target,
                extras.backend,
                extras.lora.as_ref(),
            )?),
            None => None,
        };
        let selection = oracle::select(
            &weights.scheme,
            target.capabilities(),
            &config,
            extras.backend,
        )?;
        let experts = build_experts(&selection, weights, &config, target, extras.lora.as_ref())?;
        #[cfg(feature = "cuda")]
        let gpu_router = match (target.cuda_device(), selection.chosen) {
            (Some(dev), id) if id.is_cuda() => {
                crate::backends::cuda::CudaRouter::new(dev, &config)?
            }
            _ => None,
        };
        #[cfg(feature = "rocm")]
        let hip_router = match (target.hip_device(), experts.backend()) {
            (Some(dev), id) if id.is_aiter() => {
                crate::backends::rocm::HipRouter::new(dev, &config)?
            }
            _ => None,
        };
        Ok(MoeLayer {
            #[cfg(feature = "cuda")]
            gpu_router,
            #[cfg(feature = "rocm")]
            hip_router,
            router: Router::new(&config)?,
            config,
            experts,
            shared,
            lora: extras.lora,
            selection,
        })
    }

    /// The backend running the shared expert, if the layer has one.
    pub fn shared_backend(&self) -> Option<BackendId> {
        self.shared.as_ref().map(SharedExperts::backend)
    }

    /// Routes logits on the GPU when the experts are there, else on the host (both follow
    /// `Router`'s definition; the GPU parity suite checks they agree).
    fn route(&self, logits: &[f32], tokens: usize) -> Result<TopK> {
        #[cfg(feature = "cuda")]
        if let Some(r) = &self.gpu_router {
            return r.route(logits, tokens);
        }
        #[cfg(feature = "rocm")]
        if let Some(r) = &self.hip_router {
            return r.route(logits, tokens);
        }
        self.router.route(logits, tokens)
    }

    /// Whether logits are routed by a GPU routing kernel (`CudaRouter`, `HipRouter`) rather
    /// than by `Router` on the host.
    pub fn routes_on_gpu(&self) -> bool {
        #[cfg(feature = "cuda")]
        if self.gpu_router.is_some() {
            return true;
        }
        #[cfg(feature = "rocm")]
        if self.hip_router.is_some() {
            return true;
        }
        false
    }

    /// The oracle's decision, with its reasons.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    pub fn config(&self) -> &LayerConfig {
        &self.config
    }

    /// Runs the layer on `x` (`[tokens, hidden]`); `adapters` gives each token's LoRA
    /// slot (or none). Returns `[tokens, hidden]` in f32.
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
        let routed;
        let topk = match routing {
            RoutingInput::Logits(l) => {
                routed = self.route(l, tokens)?;
                &routed
            }
            RoutingInput::TopK(t) => {
                if t.tokens() != tokens {
                    return Err(Error::shape("top-k tokens", tokens, t.tokens()));
                }
                t.check_experts(self.config.num_experts)?;
                t
            }
        };
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
        let mut out = vec![0f32; tokens * h];
        self.experts.forward(x, topk, batch.as_ref(), &mut out)?;
        if let Some(s) = &self.shared {
            s.add_to(x, tokens, batch.as_ref(), &mut out)?;
        }
        check_output(&out, h)?;
        Ok(out)
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

/// The shared expert on the best backend for its own scheme (it may differ from the routed
/// experts'), or emulated when nothing native runs it or emulation was forced.
fn prepare_shared(
    s: &SharedExpertWeights,
    config: &LayerConfig,
    target: &Target,
    forced: Option<BackendId>,
    lora: Option<&Lora>,
) -> Result<SharedExperts> {
    let one = LayerConfig {
        num_experts: 1,
        top_k: 1,
        intermediate: s.weights.intermediate,
        routing: Routing::Given,
        has_bias: s.weights.w13_bias.is_some(),
        apply_router_weight_on_input: false,
        shared_intermediate: None,
        lora: lora.is_some(),
        ..config.clone()
    };
    let selection = oracle::select(&s.weights.scheme, target.capabilities(), &one, None)?;
    if forced == Some(BackendId::Emulation) || selection.chosen == BackendId::Emulation {
        return SharedExperts::prepare(s, config.activation, config.hidden);
    }
    let shared_lora = lora.map(NativeShared::lora_of);
    let experts = build_experts(&selection, &s.weights, &one, target, shared_lora.as_ref())?;
    SharedExperts::native(
        s,
        config.hidden,
        NativeShared {
            experts,
            lora: shared_lora,
        },
    )
}

/// Builds the chosen backend. Only backends the oracle marks as built can be chosen.
fn build_experts(
    selection: &Selection,
    weights: &ExpertWeights,
    config: &LayerConfig,
    target: &Target,
    lora: Option<&Lora>,
) -> Result<Box<dyn Experts>> {
    match selection.chosen {
        BackendId::Emulation => Ok(Box::new(EmulatedExperts::prepare(weights, config)?)),
        #[cfg(feature = "cuda")]
        id if id.is_cuda() => {
            let dev = target
                .cuda_device()
                .ok_or_else(|| Error::BackendUnavailable {
                    backend: id.name().to_string(),
                    reasons: "the target is not a CUDA device".into(),
                })?;
            Ok(Box::new(crate::backends::cuda::CudaExperts::prepare(
                dev, weights, config, id, lora,
            )?))
        }
        #[cfg(feature = "rocm")]
        id if id.is_aiter() => {
            let dev = target
                .hip_device()
                .ok_or_else(|| Error::BackendUnavailable {
                    backend: id.name().to_string(),
                    reasons: "the target is not an AMD GPU".into(),
                })?;
            let kernels = &crate::backends::rocm::kernels::BUILD_NOTE;
            if !crate::backends::rocm::kernels::built() {
                log::warn!("{id}: this build has no HIP code objects ({kernels}); the experts run emulated");
                return Ok(Box::new(EmulatedExperts::prepare(weights, config)?));
            }
            Ok(Box::new(crate::backends::rocm::HipExperts::prepare(
                dev, weights, config, id,
            )?))
        }
        other => {
            let _ = (target, lora);
            Err(Error::BackendUnavailable {
                backend: other.name().to_string(),
                reasons: "the oracle chose a backend this build cannot construct (oracle table and moe::layer disagree)".into(),
            })
        }
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
    probe.input_scales = Some(crate::quant::InputScales { w13: 1.0, w2: 1.0 });
    let (_, amax1, amax2) =
        EmulatedExperts::prepare(&probe, config)?.forward_with_stats(x, topk, None, false)?;
    let s1 = crate::quant::ActQuant::static_scale_for(&weights.scheme, amax1);
    let s2 = crate::quant::ActQuant::static_scale_for(&weights.scheme, amax2);
    weights.input_scales = Some(crate::quant::InputScales { w13: s1, w2: s2 });
    Ok(())
}
