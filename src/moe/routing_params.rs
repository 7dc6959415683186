//! `KernelRouting`: a layer's `Routing` as the GPU routing kernels take it — the scalar
//! arguments of `fm_route` in `kernels-cuda/route.cu` and `kernels-hip/route.hip`, which
//! both follow `Router`'s definition.

use super::config::{GroupScoring, Routing};

/// Kernel modes, as `fm_route` numbers them.
pub const MODE_SOFTMAX_TOPK: i32 = 0;
pub const MODE_SIGMOID_TOPK: i32 = 1;
pub const MODE_GROUPED: i32 = 2;
pub const MODE_SIGMOID_TOP1: i32 = 3;

/// The routing kernel's parameters for one layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelRouting<'a> {
    /// One of the `MODE_*` constants.
    pub mode: i32,
    /// Divide the chosen weights by their sum (ignored for sigmoid top-1).
    pub renormalize: bool,
    /// Expert groups (1 unless grouped) and how many of them are kept.
    pub groups: usize,
    pub topk_groups: usize,
    /// Scores are sigmoids of the logits rather than their softmax.
    pub sigmoid: bool,
    /// Grouped routing's per-expert correction bias, added for choosing only.
    pub bias: Option<&'a [f32]>,
    /// Grouped routing's `routed_scaling_factor` (1 otherwise).
    pub scaling: f32,
}

impl Routing {
    /// The kernels' parameters; `None` for `Given`, where there is nothing to route.
    pub fn kernel_params(&self) -> Option<KernelRouting<'_>> {
        let plain = |mode, renormalize, sigmoid| KernelRouting {
            mode,
            renormalize,
            groups: 1,
            topk_groups: 1,
            sigmoid,
            bias: None,
            scaling: 1.0,
        };
        match self {
            Routing::SoftmaxTopK { renormalize } => {
                Some(plain(MODE_SOFTMAX_TOPK, *renormalize, false))
            }
            Routing::SigmoidTopK { renormalize } => {
                Some(plain(MODE_SIGMOID_TOPK, *renormalize, true))
            }
            Routing::Grouped {
                num_groups,
                topk_groups,
                scoring,
                correction_bias,
                renormalize,
                routed_scaling_factor,
            } => Some(KernelRouting {
                mode: MODE_GROUPED,
                renormalize: *renormalize,
                groups: *num_groups,
                topk_groups: *topk_groups,
                sigmoid: match scoring {
                    GroupScoring::Sigmoid => true,
                    GroupScoring::Softmax => false,
                },
                bias: correction_bias.as_deref(),
                scaling: *routed_scaling_factor,
            }),
            Routing::SigmoidTop1 => Some(plain(MODE_SIGMOID_TOP1, false, true)),
            Routing::Given => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_routing_kind_has_its_mode() {
        let grouped = Routing::Grouped {
            num_groups: 8,
            topk_groups: 3,
            scoring: GroupScoring::Softmax,
            correction_bias: Some(vec![0.5; 16]),
            renormalize: true,
            routed_scaling_factor: 2.5,
        };
        let p = grouped.kernel_params().unwrap();
        assert_eq!(
            (p.mode, p.groups, p.topk_groups, p.sigmoid, p.scaling),
            (MODE_GROUPED, 8, 3, false, 2.5)
        );
        assert_eq!(p.bias.map(<[f32]>::len), Some(16));
        let top1 = Routing::SigmoidTop1.kernel_params().unwrap();
        assert_eq!(
            (top1.mode, top1.sigmoid, top1.renormalize),
            (MODE_SIGMOID_TOP1, true, false)
        );
        let soft = Routing::SoftmaxTopK { renormalize: false }
            .kernel_params()
            .unwrap();
        assert_eq!(
            (soft.mode, soft.sigmoid, soft.groups),
            (MODE_SOFTMAX_TOPK, false, 1)
        );
        let sig = Routing::SigmoidTopK { renormalize: true }
            .kernel_params()
            .unwrap();
        assert_eq!(
            (sig.mode, sig.sigmoid, sig.renormalize),
            (MODE_SIGMOID_TOPK, true, true)
        );
        assert!(Routing::Given.kernel_params().is_none());
    }
}
