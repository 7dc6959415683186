//! The rows an `fm_*_rows` kernel reads (CUDA's quant.cu and HIP's quant.hip alike): every
//! such kernel starts with the source, its shape, and, for the expert-sorted intermediate,
//! the live slot count on the device, the sorted pairs and the pair count (padding slots
//! are skipped). Packed here once so the two vendors' launchers cannot disagree.

use crate::device::Arg;

/// Rows of `cols` values at `src`: `rows` at most, `num_rows` (device, or 0) of them live,
/// and with `sorted` (or 0) only those whose pair is below `pairs`.
#[derive(Debug, Clone, Copy)]
pub struct RowsIn {
    pub src: u64,
    pub rows: usize,
    pub cols: usize,
    pub num_rows: u64,
    pub sorted: u64,
    pub pairs: usize,
}

impl RowsIn {
    /// The kernel's arguments: the rows, then `rest`.
    pub fn then<'a>(&self, rest: &[Arg<'a>]) -> Vec<Arg<'a>> {
        let lead = [
            Arg::Ptr(self.src),
            Arg::I32(self.rows as i32),
            Arg::I32(self.cols as i32),
            Arg::Ptr(self.num_rows),
            Arg::Ptr(self.sorted),
            Arg::I32(self.pairs as i32),
        ];
        lead.iter().chain(rest).copied().collect()
    }
}
