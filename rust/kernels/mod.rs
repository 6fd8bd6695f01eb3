//! Training kernels for CPU, beside the data core but no part of it: dropout masks (`dropout`)
//! and the feed-forward layer's GELU fused with its dropout, forward and backward (`gelu`).
//! longrec_core.kernels calls them on CPU tensors in float32 or bfloat16.
//!
//! On a 2-core CPU, `torch.nn.functional.dropout` spent a quarter of a SASRec step drawing its
//! masks (about 9 ns per element). Here every block of four elements takes one splitmix64 of a
//! counter, split into four 16-bit lanes: a lane below `p * 65536` drops its element. The mask
//! depends only on `(seed, index)`, so it is the same on any number of threads, and a backward
//! pass recomputes it instead of keeping it in memory.

pub mod dropout;
pub mod gelu;

/// An element: float32, or bfloat16 stored as its 16 bits (Rust has no bf16 type).
pub trait Value: Copy + Send + Sync {
    const ZERO: Self;
    fn to_f32(self) -> f32;
    /// `v` in this type (bf16: rounded to nearest even, as torch casts; NaN stays NaN).
    fn from_f32(v: f32) -> Self;
}

impl Value for f32 {
    const ZERO: Self = 0.0;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Value for u16 {
    const ZERO: Self = 0;
    fn to_f32(self) -> f32 {
        f32::from_bits((self as u32) << 16)
    }
    fn from_f32(v: f32) -> Self {
        let bits = v.to_bits();
        let rounded = (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16;
        if v.is_nan() {
            0x7FC0
        } else {
            rounded
        }
    }
}

/// Elements per parallel task: a multiple of 4, so quads never straddle tasks.
const CHUNK: usize = 1 << 16;

/// The first quad of parallel task `c` (its elements start at c * CHUNK).
fn first_quad(c: usize) -> u64 {
    (c * CHUNK / 4) as u64
}
