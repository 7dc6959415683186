//! Choosing an experts backend. Backends are data (`backends()`: each with its `Needs`, in
//! priority order); `select` takes the first whose needs are met and keeps the reason every
//! earlier one was turned down, so the choice can always be explained.

mod backend;
mod conversion;
mod needs;
mod priority;
mod select;
mod unmet;

pub use backend::BackendId;
pub use conversion::Conversion;
pub use needs::{Assessment, Availability, Hardware, Needs};
pub use priority::{backends, spec, BackendSpec};
pub use select::{select, Rejection, Selection};
pub use unmet::Unmet;
