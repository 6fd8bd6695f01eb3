//! Big output buffers that the kernel may back with huge pages.
//!
//! A fresh `Vec` of hundreds of MiB is paid for in page faults, one per 4 KiB page, when it
//! is first written. Where transparent huge pages are opt-in (`madvise` mode, common on
//! servers), asking for them on the buffer turns ~500 faults per 2 MiB into one. The buffer
//! still comes from the global allocator, so it is freed (or handed to NumPy) as any `Vec`.

use std::mem::MaybeUninit;

use crate::error::{CoreError, Result};

/// Below this size the few faults saved do not pay for the system call.
const MIN_HUGE_BYTES: usize = 4 << 20;

/// Outputs from this size on are checked against the memory available now before they are
/// allocated (reading /proc/meminfo costs microseconds; smaller outputs are not worth it).
const CHECK_AVAILABLE_BYTES: usize = 64 << 20;

/// An empty `Vec` with room for `len` values, advised to use huge pages when it is big.
/// Fill it through `spare_capacity_mut()` (or raw writes) and then `set_len`. When the
/// memory cannot be had it returns an error for `what` (the function whose output it is)
/// instead of aborting the process: sizes that follow from arguments (a stride of 1 over a
/// huge log, a typo in `length`) can be absurd.
///
/// "Can be had" means available now, not only allocatable: with overcommit (Linux's default)
/// a request between the free and the total memory is granted, and the process is killed by
/// the OOM killer while it fills the buffer. So a big request is first compared with
/// `available_memory()`.
pub fn with_capacity_huge<T>(what: &'static str, len: usize) -> Result<Vec<T>> {
    let bytes = len.checked_mul(std::mem::size_of::<T>());
    if let (Some(need), Some(have)) = (bytes, available_memory()) {
        if need >= CHECK_AVAILABLE_BYTES && need > have {
            return Err(CoreError::more_than_available(what, need, have));
        }
    }
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(len).map_err(|_| CoreError::out_of_memory(what, bytes))?;
    advise_huge(v.spare_capacity_mut());
    Ok(v)
}

/// Bytes of memory this process can still fill without swapping or being killed: the kernel's
/// MemAvailable (free memory plus caches it can drop), and at most what the cgroup (a container's
/// limit) has left. None where it cannot be told (not Linux, or no /proc).
pub fn available_memory() -> Option<usize> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: usize = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let mut have = kib.saturating_mul(1024);
    if let Some(left) = cgroup_memory_left() {
        have = have.min(left);
    }
    Some(have)
}

/// What the cgroup v2 memory limit leaves (`memory.max - memory.current`); None without a limit.
fn cgroup_memory_left() -> Option<usize> {
    let read = |name: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{name}")).ok();
    let max: usize = read("memory.max")?.trim().parse().ok()?; // "max" (no limit) does not parse
    let current: usize = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

/// Ask the kernel for huge pages on the page-aligned part of `buf` (a hint: errors ignored).
#[cfg(target_os = "linux")]
fn advise_huge<T>(buf: &mut [MaybeUninit<T>]) {
    let bytes = std::mem::size_of_val(buf);
    if bytes < MIN_HUGE_BYTES {
        return;
    }
    const PAGE: usize = 4096;
    let begin = (buf.as_ptr() as usize).next_multiple_of(PAGE);
    let end = (buf.as_ptr() as usize + bytes) / PAGE * PAGE;
    if end > begin {
        // SAFETY: [begin, end) lies inside memory this Vec owns; MADV_HUGEPAGE only changes
        // how the kernel backs the pages, never their contents or our access rights.
        unsafe {
            libc::madvise(begin as *mut libc::c_void, end - begin, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge<T>(_buf: &mut [MaybeUninit<T>]) {}

/// Raw pointer to a buffer that several threads write at disjoint positions.
#[derive(Clone, Copy)]
pub struct SharedMut<T>(pub *mut T);
// SAFETY: the pointer is only used for writes the caller proves disjoint across threads.
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// Write `v` at index `i`.
    ///
    /// # Safety
    /// `i` is inside the buffer and no other thread reads or writes index `i` meanwhile.
    #[inline]
    pub unsafe fn write(self, i: usize, v: T) {
        self.0.add(i).write(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_big_buffers_fill_normally() {
        for len in [0usize, 10, 3 << 20] {
            let mut v: Vec<i64> = with_capacity_huge("test", len).unwrap();
            assert!(v.capacity() >= len);
            for (i, x) in v.spare_capacity_mut()[..len].iter_mut().enumerate() {
                x.write(i as i64);
            }
            // SAFETY: the first len values were just written.
            unsafe { v.set_len(len) };
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as i64));
        }
    }

    #[test]
    fn impossible_sizes_are_errors_not_aborts() {
        let e = with_capacity_huge::<i64>("windows", 1 << 50).unwrap_err();
        assert!(e.out_of_memory);
        assert!(e.to_string().starts_with("windows: the output needs 8388608.0 GiB, more than"), "{e}");
        assert!(with_capacity_huge::<i64>("gather", usize::MAX / 4).unwrap_err().out_of_memory);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sizes_beyond_the_available_memory_are_refused_before_allocating() {
        // With overcommit, a request a little above the available memory is granted (and the
        // process is OOM-killed while it fills it): the guard must refuse it first.
        let have = available_memory().expect("Linux reports MemAvailable");
        let len = (have + (256 << 20)) / 8;
        let e = with_capacity_huge::<i64>("windows", len).unwrap_err();
        assert!(e.out_of_memory);
        assert!(e.to_string().contains("of memory available now"), "{e}");
        assert!(with_capacity_huge::<i64>("windows", 1 << 20).is_ok()); // 8 MiB: not checked, fine
    }
}
