//! Choosing an experts backend.
