//! longrec's core. The data core: grouping, sessions, splits and sliding-window pointers over one
//! stored event array (the modules at this level). The training kernels: dropout masks and the
//! fused GELU + dropout that the model runs on CPU (`kernels`). Each module is plain Rust over
//! slices with its own unit tests; `python` is the only module that knows about PyO3.

pub mod alloc;
pub mod error;
pub mod gather;
pub mod group;
pub mod kernels;
pub mod kshift;
pub mod session_windows;
pub mod sessions;
pub mod simd;
pub mod splits;
pub mod validate;
pub mod windows;

mod python;
