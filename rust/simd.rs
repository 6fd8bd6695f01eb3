//! One piece of work compiled for AVX-512, AVX2 and plain x86-64, run in the best version the
//! CPU has. The extension is built for baseline x86-64 (SSE2) so that one wheel runs
//! anywhere, and SSE2 has no 64-bit vector compare or max: loops over int64 only vectorize
//! in the AVX2 and AVX-512 versions. Wider is not always faster: measure before using it
//! (windows' filling pass was 10% slower this way, sessionize's passes keep their own AVX2).

/// Work that `best_simd` runs. Its `run` is inlined into each compiled version, so the same
/// code is compiled three times; every version must give the same result (integer work
/// does; Rust never fuses a float multiply and add on its own).
pub trait Kernel {
    type Out;
    fn run(self) -> Self::Out;
}

/// A closure is a kernel.
impl<T, F: FnOnce() -> T> Kernel for F {
    type Out = T;
    #[inline(always)]
    fn run(self) -> T {
        self()
    }
}

/// Run `kernel` compiled for the widest vectors the CPU has.
#[inline]
pub fn best_simd<K: Kernel>(kernel: K) -> K::Out {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512dq") {
            // SAFETY: the CPU has the features the function is compiled for (checked here).
            return unsafe { run_avx512(kernel) };
        }
        if has!("avx2") {
            // SAFETY: as above.
            return unsafe { run_avx2(kernel) };
        }
    }
    kernel.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn run_avx512<K: Kernel>(kernel: K) -> K::Out {
    kernel.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_avx2<K: Kernel>(kernel: K) -> K::Out {
    kernel.run()
}

/// Run `kernel` in one compiled version (0 plain, 1 AVX2, 2 AVX-512), or None where the
/// CPU lacks it: tests check that every version gives the same result.
#[cfg(test)]
pub fn run_version<K: Kernel>(version: usize, kernel: K) -> Option<K::Out> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        match version {
            // SAFETY: the CPU has AVX2 (checked).
            1 if has!("avx2") => Some(unsafe { run_avx2(kernel) }),
            // SAFETY: the CPU has AVX-512F/DQ (checked).
            2 if has!("avx512f") && has!("avx512dq") => Some(unsafe { run_avx512(kernel) }),
            0 => Some(kernel.run()),
            _ => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (version == 0).then(|| kernel.run())
    }
}
