//! `fleetmoe bench`: the layer's experts timed on the GPU against the roofline floor of
//! that GPU and the peers' figures measured on the same kind of GPU. Speed is reported,
//! never asserted.

pub mod peers;
pub mod plot;
pub mod roofline;

/// One measured cell of the benchmark table.
#[derive(Debug, Clone)]
pub struct BenchRow {
    pub shape: &'static str,
    pub scheme: String,
    pub tokens: usize,
    pub backend: String,
    /// Median time of one layer forward (top-k given), microseconds.
    pub us: f64,
    pub floor_us: f64,
    /// The same forward with LoRA on (two adapters, tokens alternating), when asked for.
    pub lora_us: Option<f64>,
    /// The embedding path, when asked for: bf16 in and out, top-k given,
    /// `forward_device` in a graph the caller captured.
    pub api_us: Option<f64>,
    /// The same with the routing kernel choosing those experts from logits.
    pub routed_us: Option<f64>,
    /// The host `forward` (f32 in and out, uploads and the download included), wall clock.
    pub host_us: Option<f64>,
    /// The peers' times for this cell on this GPU: (peer, µs).
    pub peers: Vec<(&'static str, f64)>,
}

impl BenchRow {
    /// One JSON object: `shape, scheme, M, us, floor_us, backend`.
    pub fn json(&self) -> String {
        let opt = |name: &str, v: Option<f64>| {
            v.map(|v| format!(",\"{name}\":{v:.2}")).unwrap_or_default()
        };
        let lora = opt("lora_us", self.lora_us)
            + &opt("api_us", self.api_us)
            + &opt("host_us", self.host_us)
            + &self
                .peers
                .iter()
                .map(|(p, us)| format!(",\"{p}_us\":{us:.2}"))
                .collect::<String>();
        format!(
            "{{\"shape\":\"{}\",\"scheme\":\"{}\",\"M\":{},\"us\":{:.2},\"floor_us\":{:.2},\"backend\":\"{}\"{lora}}}",
            self.shape, self.scheme, self.tokens, self.us, self.floor_us, self.backend
        )
    }

    /// The human table's header, matching `line`.
    pub fn header() -> String {
        format!(
            "{:14} {:13} {:>5} {:18} {:>10} {:>10} {:>7}   {}",
            "shape", "scheme", "M", "backend", "us", "floor us", "/floor", "peers: us (/floor)"
        )
    }

    /// One line of the human table, with the peers' figures where the anchors have them.
    pub fn line(&self) -> String {
        let peers: String = self
            .peers
            .iter()
            .map(|(p, us)| format!("   {p} {us:.1} ({:.2})", us / self.floor_us))
            .collect();
        let extra = self
            .lora_us
            .map(|l| format!("   LoRA {l:>9.1} us (+{:.0}%)", (l / self.us - 1.0) * 100.0))
            .unwrap_or_default()
            + &self
                .api_us
                .map(|a| format!("   api {a:>9.1} us ({:+.1}%)", (a / self.us - 1.0) * 100.0))
                .unwrap_or_default()
            + &self
                .routed_us
                .map(|r| format!("   routed {r:>9.1} us"))
                .unwrap_or_default()
            + &self
                .host_us
                .map(|h| format!("   host {h:>9.1} us"))
                .unwrap_or_default();
        format!(
            "{:14} {:13} {:>5} {:18} {:>10.1} {:>10.1} {:>7.2}{peers}{extra}",
            self.shape,
            self.scheme,
            self.tokens,
            self.backend,
            self.us,
            self.floor_us,
            self.us / self.floor_us,
        )
    }
}
