//! longrec's data core: grouping, sessions, splits and sliding-window pointers over one
//! stored event array. Each module is plain Rust over slices with its own unit tests;
//! `python` is the only file that knows about PyO3.

pub mod alloc;
pub mod dropout;
pub mod error;
pub mod gather;
pub mod group;
pub mod kshift;
pub mod session_windows;
pub mod sessions;
pub mod simd;
pub mod splits;
pub mod validate;
pub mod windows;

mod python;
