//! Deliberate faults, for testing the tests. A build with feature `faults` (never a
//! release) reads `FLEETMOE_FAULT=<name>` once and plants that one bug — in the layout
//! code, the launch geometry or a kernel — so `scripts/mutants.sh` can show that the parity
//! and layout suites fail on it. Without the feature [`active`] is a constant `None` and
//! every hook below compiles to nothing.
//!
//! Each fault is the kind of bug a kernel rewrite makes, planted where such a bug would
//! live; the table in `scripts/mutants.sh` says which suites must catch which fault.

/// One planted bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The two 4-bit codes of a byte swapped in the packed weights (CUDA fragment packing,
    /// AMD MXFP4 bytes).
    NibbleOrder,
    /// A grouped weight scale (int groups, MX / NVFP4 blocks, fp8 128-blocks) taken from
    /// the next group along K.
    ScaleNextGroup,
    /// A per-row weight scale (fp8 or int per-channel) taken from the next row; fp8
    /// per-tensor scales from the next expert.
    ScaleNextRow,
    /// Int weights' zero points ignored: every group gets the symmetric middle code.
    DroppedZeroPoint,
    /// A GEMM grid one output tile short where the rows do not fill the last tile.
    MissedTailTile,
    /// The alignment kernel hands each token block to the next expert's weights.
    ExpertIdOffByOne,
    /// Each token's LoRA delta computed with the next adapter slot's weights.
    LoraWrongSlot,
    /// e4m3fn weight bytes handed to gfx942's e4m3fnuz matrix cores unconverted.
    FnuzAsFn,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::NibbleOrder,
        Fault::ScaleNextGroup,
        Fault::ScaleNextRow,
        Fault::DroppedZeroPoint,
        Fault::MissedTailTile,
        Fault::ExpertIdOffByOne,
        Fault::LoraWrongSlot,
        Fault::FnuzAsFn,
    ];

    /// The name `FLEETMOE_FAULT` takes.
    pub fn name(self) -> &'static str {
        match self {
            Fault::NibbleOrder => "nibble-order",
            Fault::ScaleNextGroup => "scale-next-group",
            Fault::ScaleNextRow => "scale-next-row",
            Fault::DroppedZeroPoint => "dropped-zero-point",
            Fault::MissedTailTile => "missed-tail-tile",
            Fault::ExpertIdOffByOne => "expert-id-off-by-one",
            Fault::LoraWrongSlot => "lora-wrong-slot",
            Fault::FnuzAsFn => "fnuz-as-fn",
        }
    }

    /// The macro a kernel file tests (`#ifdef`) for faults that live in kernel code.
    pub fn kernel_define(self) -> Option<&'static str> {
        match self {
            Fault::ExpertIdOffByOne => Some("FM_FAULT_EXPERT_ID_OFF_BY_ONE"),
            Fault::LoraWrongSlot => Some("FM_FAULT_LORA_WRONG_SLOT"),
            _ => None,
        }
    }

    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// The fault this process runs with: `FLEETMOE_FAULT`, read once. A name that is not a
/// fault panics, so a typo cannot pass for a fault the suite "caught" quietly.
#[cfg(feature = "faults")]
pub fn active() -> Option<Fault> {
    static ACTIVE: once_cell::sync::Lazy<Option<Fault>> = once_cell::sync::Lazy::new(|| {
        let name = std::env::var("FLEETMOE_FAULT").ok()?;
        if name.is_empty() {
            return None;
        }
        let fault = Fault::parse(&name).unwrap_or_else(|| {
            let known: Vec<_> = Fault::ALL.iter().map(|f| f.name()).collect();
            panic!("FLEETMOE_FAULT={name} is not a fault; known: {known:?}")
        });
        log::warn!("fault injected: {}", fault.name());
        Some(fault)
    });
    *ACTIVE
}

/// Without feature `faults` there is never one.
#[cfg(not(feature = "faults"))]
#[inline(always)]
pub fn active() -> Option<Fault> {
    None
}

/// Whether `fault` is planted in this process.
#[inline(always)]
pub fn is(fault: Fault) -> bool {
    active() == Some(fault)
}

/// The `#define` line of the planted kernel fault, for a CUDA source that tests it (so
/// the other files keep their cached CUBINs).
pub fn kernel_define_for(source: &str) -> String {
    match active().and_then(Fault::kernel_define) {
        Some(d) if source.contains(d) => format!("#define {d} 1\n"),
        _ => String::new(),
    }
}

/// `scales` as `[lines, groups]`: under `ScaleNextGroup` each group reads the next one's
/// scale (the last keeps its own), under `ScaleNextRow` each line reads the next line's.
pub fn shift_scales<T: Copy>(scales: &mut [T], lines: usize, groups: usize) {
    if lines == 0 || groups == 0 || scales.len() != lines * groups {
        return;
    }
    if is(Fault::ScaleNextGroup) {
        for row in scales.chunks_mut(groups) {
            row.copy_within(1.., 0);
        }
    } else if is(Fault::ScaleNextRow) {
        scales.copy_within(groups.., 0);
    }
}

/// The bit offset a 4-bit code is written at: under `NibbleOrder`, the other nibble of
/// its byte.
#[inline]
pub fn nibble_bit(bit: usize, code_bits: usize) -> usize {
    if code_bits == 4 && is(Fault::NibbleOrder) {
        bit ^ 4
    } else {
        bit
    }
}

/// Under `NibbleOrder`, swaps the two codes of every byte of packed 4-bit data.
pub fn swap_nibbles(bytes: &mut [u8]) {
    if is(Fault::NibbleOrder) {
        bytes.iter_mut().for_each(|b| *b = b.rotate_left(4));
    }
}

/// Output tiles of a GEMM grid over `rows`: `rows / tile` rounded up, or down (at least
/// one) under `MissedTailTile`.
#[inline]
pub fn tiles(rows: usize, tile: usize) -> usize {
    if is(Fault::MissedTailTile) {
        (rows / tile).max(1)
    } else {
        rows.div_ceil(tile)
    }
}
