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

/// An empty `Vec` with room for `len` values, advised to use huge pages when it is big.
/// Fill it through `spare_capacity_mut()` (or raw writes) and then `set_len`. When the
/// memory cannot be had it returns an error for `what` (the function whose output it is)
/// instead of aborting the process: sizes that follow from arguments (a stride of 1 over a
/// huge log, a typo in `length`) can be absurd.
pub fn with_capacity_huge<T>(what: &'static str, len: usize) -> Result<Vec<T>> {
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(len).map_err(|_| CoreError::out_of_memory(what, len.checked_mul(std::mem::size_of::<T>())))?;
    advise_huge(v.spare_capacity_mut());
    Ok(v)
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
        assert_eq!(e.to_string(), "windows: the output needs 8388608.0 GiB, more than could be allocated");
        assert!(with_capacity_huge::<i64>("gather", usize::MAX / 4).unwrap_err().out_of_memory);
    }
}
