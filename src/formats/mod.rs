//! Exact numeric formats: the FP8, FP6, FP4 and E8M0 codecs every quantized checkpoint is
//! read through, and the bit packing its tensors are stored in. Everything here is
//! bit-exact so the emulation path can define the right answer for the native kernels.

mod convert;
mod e8m0;
mod fp4;
mod fp6;
mod fp8;
pub mod minifloat;
mod pack;

pub use convert::{decode, encode, round_to};
pub use e8m0::E8M0;
pub use fp4::F4E2M1;
pub use fp6::{F6E2M3, F6E3M2};
pub use fp8::{F8E4M3Fnuz, F8E4M3, F8E5M2};
pub use minifloat::{Codec, MiniFloat, NonFinite};
pub use pack::{
    int4_from_signed, int4_signed, pack_fp4, pack_fp6, pack_int4_i32, pack_int4_u8, unpack_fp4,
    unpack_fp6, unpack_int4_i32, unpack_int4_u8,
};
