//! The device-resident forward on NVIDIA GPUs, as the README's "On the GPU" section shows:
//! the layer reads the caller's CUDA buffers (bf16 hidden states, f32 router logits, i32
//! adapter slots) and writes the caller's output buffer, with every kernel queued on the
//! caller's stream (`MoeLayer::forward_cuda`, the safe form of `forward_device` on
//! cudarc's own types). The workspace is sized once by `reserve`; the forward allocates
//! nothing and never synchronises, so it can be captured in a CUDA graph. The example
//! checks the result against the host `forward` of the same layer.
//!
//! ```sh
//! cargo run --features cuda --example device_resident
//! ```
//!
//! Without feature `cuda`, or without an NVIDIA GPU and driver, it prints that it skipped
//! and why, and exits 0.

#[cfg(feature = "cuda")]
mod gpu {
    use cudarc::driver::{CudaSlice, DriverError};
    use fleetmoe::moe::{CudaRouting, LayerConfig, LayerExtras, MoeLayer, RoutingInput, Target};
    use fleetmoe::quant::{DenseExperts, ExpertWeights, QuantScheme};
    use fleetmoe::Error;
    use half::bf16;

    const TOKENS: usize = 16;

    /// A cudarc error as a `fleetmoe::Error` naming the call.
    fn cuda(call: &'static str) -> impl FnOnce(DriverError) -> Error {
        move |e| Error::Device {
            call: call.into(),
            message: e.to_string(),
        }
    }

    pub fn run() -> fleetmoe::Result<()> {
        let target = match Target::cuda(0) {
            Ok(t) => t,
            Err(e) => {
                println!("skipped: no CUDA device to run on ({e})");
                return Ok(());
            }
        };

        let config = LayerConfig::new(8, 2, 256, 512);
        let (hidden, experts) = (config.hidden, config.num_experts);
        let dense = DenseExperts::random(&config, 0);
        let weights = ExpertWeights::quantize(&dense, QuantScheme::parse("bf16")?)?;
        let layer = MoeLayer::new(config, &weights, &target, LayerExtras::default())?;
        println!("{}", layer.selection());
        if layer.cuda_layer().is_none() {
            println!(
                "skipped: the layer has no native backend on this GPU, so it runs on the host"
            );
            return Ok(());
        }
        layer.reserve(TOKENS)?; // before any forward_device, and before capturing a graph

        // The engine's stream and buffers; here made with cudarc on the layer's device.
        let stream = target
            .cuda_device()
            .ok_or_else(|| Error::NoDevice("the target is not a CUDA device".into()))?
            .new_stream()?;
        // bf16-exact inputs, so the host forward reads the same values as the device.
        let x: Vec<f32> = (0..TOKENS * hidden)
            .map(|i| bf16::from_f32(((i * 7919 % 257) as f32 - 128.0) / 128.0).to_f32())
            .collect();
        let logits: Vec<f32> = (0..TOKENS * experts)
            .map(|i| ((i * 31 % 11) as f32 - 5.0) / 2.0)
            .collect();
        let x_bf16: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let d_x = stream.clone_htod(&x_bf16).map_err(cuda("clone_htod"))?;
        let d_logits = stream.clone_htod(&logits).map_err(cuda("clone_htod"))?;
        let mut d_out = stream
            .alloc_zeros::<bf16>(TOKENS * hidden)
            .map_err(cuda("alloc_zeros"))?;

        // The whole layer, queued on the caller's stream: routing from the logits on the
        // GPU, alignment, the experts, the weighted combine, the cast to bf16.
        layer.forward_cuda(
            &d_x,
            CudaRouting::<_, CudaSlice<i32>, CudaSlice<f32>>::Logits(&d_logits),
            None::<&CudaSlice<i32>>, // no LoRA slots
            &mut d_out,
            &stream,
        )?;
        // The engine decides when to wait; here, to read the result back.
        let out: Vec<f32> = stream
            .clone_dtoh(&d_out)
            .map_err(cuda("clone_dtoh"))?
            .into_iter()
            .map(bf16::to_f32)
            .collect();

        let host = layer.forward(&x, RoutingInput::Logits(&logits), None)?;
        let num: f64 = out
            .iter()
            .zip(&host)
            .map(|(d, h)| (*d as f64 - *h as f64).powi(2))
            .sum();
        let den: f64 = host.iter().map(|h| (*h as f64).powi(2)).sum();
        println!(
            "forward_cuda: {TOKENS} tokens, bf16 in and out; {:.2e} rel L2 vs the host forward \
             (bf16 output rounding: up to ~4e-3)",
            (num / den.max(f64::MIN_POSITIVE)).sqrt()
        );
        Ok(())
    }
}

#[cfg(feature = "cuda")]
fn main() -> fleetmoe::Result<()> {
    env_logger::init();
    gpu::run()
}

#[cfg(not(feature = "cuda"))]
fn main() {
    println!(
        "skipped: this build has no CUDA support; run it with \
         `cargo run --features cuda --example device_resident`"
    );
}
