//! CUDA experts backend (in progress).
