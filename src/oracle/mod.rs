//! Choosing an experts backend. Backends are data (`backends()`: each with its `Needs`, in
//! priority order); `select` takes the first whose needs are met and keeps the reason every
//! earlier one was turned down, so the choice can always be explained. A refusal is always
//! concrete: what the backend runs instead, the gap not implemented yet, the instruction the
//! device lacks, or the cargo feature to build with.

mod backend;
mod conversion;
mod fit;
mod gap;
mod needs;
mod no_native;
mod priority;
mod schemes;
mod select;
mod unmet;

#[cfg(test)]
mod tests;

pub use backend::BackendId;
pub use conversion::Conversion;
pub use fit::{Fit, Support};
pub use gap::{Gap, GAPS};
pub use needs::{Assessment, Availability, Hardware, Needs};
pub use no_native::NoNative;
pub use priority::{backends, spec, BackendSpec};
pub use select::{select, Rejection, Selection};
pub use unmet::Unmet;
