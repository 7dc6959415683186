//! `CudaDevice` over cudarc (in progress).
