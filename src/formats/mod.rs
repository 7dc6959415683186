//! Exact numeric formats (filled in by the formats work).
