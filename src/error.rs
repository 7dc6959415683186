//! The crate's one error type. Every variant names the thing that was wrong and what was
//! expected, so a caller can tell a bad checkpoint from a missing GPU without reading code.

/// Everything fleetmoe can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor or slice has the wrong shape or length.
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    Shape {
        what: String,
        expected: String,
        got: String,
    },
    /// A quantization group (or block) size does not divide the dimension it tiles.
    #[error("group size {group} does not divide {dim_name} = {dim}")]
    GroupSize {
        group: usize,
        dim: usize,
        dim_name: String,
    },
    /// Routing asked for more experts per token than the layer has.
    #[error("top-k {top_k} is larger than the number of experts {num_experts}")]
    TopK { top_k: usize, num_experts: usize },
    /// An expert id (caller-supplied top-k, expert-parallel map) is out of range.
    #[error("expert id {id} out of range: the layer has {num_experts} experts")]
    ExpertId { id: usize, num_experts: usize },
    /// A scale is NaN, infinite, zero where it divides, or negative.
    #[error("invalid scale in {what}: {value} ({why})")]
    Scale {
        what: String,
        value: f32,
        why: &'static str,
    },
    /// A number the layer trusts (a weight, bias, routing or activation parameter, an
    /// adapter value, a router weight) is NaN, infinite or outside its domain.
    #[error("invalid value in {what}: {value} (expected {expected})")]
    Value {
        what: String,
        value: f32,
        expected: &'static str,
    },
    /// A size multiplied from configuration, checkpoint or input values does not fit in
    /// `usize`.
    #[error("size overflow in {what}: {product} does not fit in usize")]
    Overflow { what: String, product: String },
    /// A scheme name that fleetmoe does not know.
    #[error("unknown quantization scheme '{name}'; known schemes: {known}")]
    UnknownScheme { name: String, known: String },
    /// A token asked for a LoRA adapter slot that is not loaded.
    #[error("LoRA adapter index {index} out of range: {loaded} adapters are loaded")]
    AdapterIndex { index: usize, loaded: usize },
    /// A layer configuration that cannot describe a real MoE layer.
    #[error("invalid layer configuration: {0}")]
    Config(String),
    /// A scheme needs data that was not supplied (for example static input scales).
    #[error("missing {what}: {why}")]
    Missing { what: String, why: String },
    /// No device of the requested kind could be opened.
    #[error("no device: {0}")]
    NoDevice(String),
    /// A backend was forced but cannot run here; carries the oracle's reasons.
    #[error("backend '{backend}' cannot run here: {reasons}")]
    BackendUnavailable { backend: String, reasons: String },
    /// A platform preset name that fleetmoe does not know.
    #[error("unknown platform '{name}'; known platforms: {known}")]
    UnknownPlatform { name: String, known: String },
    /// A kernel failed to compile; carries the compiler's log.
    #[error("kernel '{kernel}' failed to compile for {target}:\n{log}")]
    KernelCompile {
        kernel: String,
        target: String,
        log: String,
    },
    /// A driver or runtime call failed.
    #[error("device error in {call}: {message}")]
    Device { call: String, message: String },
    /// A buffer, module or stream handle that does not belong to this device.
    #[error("invalid handle: {0}")]
    Handle(String),
    /// A checkpoint file is malformed, incomplete or not understood.
    #[error("{}", checkpoint_message(file, tensor, why))]
    Checkpoint {
        file: String,
        tensor: String,
        why: String,
    },
    /// Reading a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::Shape`].
    pub fn shape(what: impl Into<String>, expected: impl ToString, got: impl ToString) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }
}

impl Error {
    /// Shorthand for [`Error::Checkpoint`].
    pub fn checkpoint(
        file: impl ToString,
        tensor: impl Into<String>,
        why: impl Into<String>,
    ) -> Self {
        Error::Checkpoint {
            file: file.to_string(),
            tensor: tensor.into(),
            why: why.into(),
        }
    }
}

/// Checks that `len` equals `expected`, naming `what` in the error.
pub fn check_len(what: &str, len: usize, expected: usize) -> Result<()> {
    if len == expected {
        Ok(())
    } else {
        Err(Error::shape(
            what,
            format!("{expected} elements"),
            format!("{len} elements"),
        ))
    }
}

/// Checks that a scale is finite and positive.
pub fn check_scale(what: &str, value: f32) -> Result<()> {
    let why = if value.is_nan() {
        "NaN"
    } else if value.is_infinite() {
        "infinite"
    } else if value < 0.0 {
        "negative"
    } else if value == 0.0 {
        "zero"
    } else {
        return Ok(());
    };
    Err(Error::Scale {
        what: what.to_string(),
        value,
        why,
    })
}

/// `factors` multiplied, or `Error::Overflow` naming `what` and the product when it does
/// not fit: every size built from configuration, checkpoint or input values goes through
/// here.
pub fn checked_size(what: &str, factors: &[usize]) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| Error::Overflow {
            what: what.to_string(),
            product: factors
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" × "),
        })
}

/// Checks that every value is finite; the error names `what` with the first bad index.
pub fn check_finite(what: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::Value {
            what: format!("{what} [{i}]"),
            value: values[i],
            expected: "a finite number",
        }),
    }
}

/// Checks that every value is finite and at most `bound` in magnitude; the error names
/// `what` with the first bad index.
pub fn check_bounded(what: &str, values: &[f32], bound: f32, expected: &'static str) -> Result<()> {
    check_finite(what, values)?;
    match values.iter().position(|v| v.abs() > bound) {
        None => Ok(()),
        Some(i) => Err(Error::Value {
            what: format!("{what} [{i}]"),
            value: values[i],
            expected,
        }),
    }
}

/// Checks that `group` divides `dim`.
pub fn check_group(group: usize, dim: usize, dim_name: &str) -> Result<()> {
    if group > 0 && dim % group == 0 {
        Ok(())
    } else {
        Err(Error::GroupSize {
            group,
            dim,
            dim_name: dim_name.to_string(),
        })
    }
}

/// `Error::Checkpoint`'s text: the file, then what in it is wrong (a tensor, or a key of a
/// JSON config; nothing where the file as a whole is), then why.
fn checkpoint_message(file: &str, name: &str, why: &str) -> String {
    let config = file.ends_with(".json") && !file.ends_with(".index.json");
    match (name.is_empty(), config) {
        (true, _) => format!("checkpoint {file}: {why}"),
        (false, true) => format!("checkpoint {file}, key '{name}': {why}"),
        (false, false) => format!("checkpoint {file}, tensor '{name}': {why}"),
    }
}
