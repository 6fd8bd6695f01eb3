//! `gather`: materialize a batch of windows as a dense [B, length+1] matrix.

use std::mem::MaybeUninit;

use crate::alloc::with_capacity_huge;
use crate::error::{CoreError, Result};
use crate::validate::{check_at_least, check_len};
use rayon::prelude::*;

/// Item arrays come in any integer width (items.npy is int32); the batch is int64.
pub trait ToI64: Copy + Send + Sync {
    fn to_i64(self) -> i64;
}
macro_rules! impl_to_i64 {
    ($($t:ty),*) => {$(impl ToI64 for $t { #[inline] fn to_i64(self) -> i64 { self as i64 } })*};
}
impl_to_i64!(i8, i16, i32, i64, u8, u16, u32, u64);

/// Batches smaller than this many values are filled on the calling thread.
const PARALLEL_MIN_VALUES: usize = 1 << 20;

/// Row b holds `items[start[b]..stop[b]]` right-aligned (the most recent event in the last
/// column), left-padded with `pad`; a slice longer than `length + 1` keeps its last
/// `length + 1` events. Returns the row-major buffer of B * (length + 1) values.
pub fn gather<T: ToI64>(items: &[T], start: &[i64], stop: &[i64], length: i64, pad: i64) -> Result<Vec<i64>> {
    check_rows(items.len(), start, stop, length)?;
    let n = start.len() * (length as usize + 1); // no overflow: check_rows bounds it
                                                 // Uninitialized, then every slot written exactly once (padding, then items): a zeroed
                                                 // buffer would cost a second pass, and for batch-sized buffers the kernel's zeroing of
                                                 // fresh pages besides, which took longer than the gather itself.
    let mut out: Vec<i64> = with_capacity_huge("gather", n)?;
    fill_batch(items, start, stop, length as usize + 1, pad, &mut out.spare_capacity_mut()[..n]);
    // SAFETY: fill_batch wrote every one of the first n slots.
    unsafe { out.set_len(n) };
    Ok(out)
}

/// `gather` into a caller's buffer of B * (length + 1) values, so a loop over batches
/// reuses one buffer instead of paying for fresh memory each time.
pub fn gather_into<T: ToI64>(
    items: &[T],
    start: &[i64],
    stop: &[i64],
    length: i64,
    pad: i64,
    out: &mut [i64],
) -> Result<()> {
    check_rows(items.len(), start, stop, length)?;
    check_len("out", out.len(), "rows * (length + 1)", start.len() * (length as usize + 1))?;
    // SAFETY: MaybeUninit<i64> has the layout of i64, and fill_batch only ever writes
    // initialized values through this view, so `out` stays initialized.
    let slots = unsafe { &mut *(out as *mut [i64] as *mut [MaybeUninit<i64>]) };
    fill_batch(items, start, stop, length as usize + 1, pad, slots);
    Ok(())
}

/// Every row must be a slice of the items; the window at least one event long.
fn check_rows(n_items: usize, start: &[i64], stop: &[i64], length: i64) -> Result<()> {
    check_len("stop", stop.len(), "start", start.len())?;
    check_at_least("length", length, 1)?;
    // Both the row (NumPy's row stride in bytes must fit isize, even with no rows) and the
    // whole batch must be addressable.
    let fits = |values: usize| values <= isize::MAX as usize / 8;
    let width = (length as usize).checked_add(1).filter(|&w| fits(w));
    if width.and_then(|w| w.checked_mul(start.len())).is_none_or(|v| !fits(v)) {
        return Err(CoreError::new(
            "length",
            format!("{length}: a batch of {} rows would not fit in memory", start.len()),
        ));
    }
    for (b, (&s, &e)) in start.iter().zip(stop).enumerate() {
        if s < 0 || s > e || e > n_items as i64 {
            return Err(CoreError::new("start", format!("row {b}: [{s}, {e}) is not a slice of the {n_items} items")));
        }
    }
    Ok(())
}

/// A task's rows of the output with their starts and stops.
type RowTask<'a> = (&'a mut [MaybeUninit<i64>], (&'a [i64], &'a [i64]));

/// Write all of `slots` (rows of `width`): padding, then each row's kept events.
fn fill_batch<T: ToI64>(
    items: &[T],
    start: &[i64],
    stop: &[i64],
    width: usize,
    pad: i64,
    slots: &mut [MaybeUninit<i64>],
) {
    let n = slots.len();
    // Rows start at random places in `items`, so each costs a memory latency: tasks of
    // ROWS rows each prefetch their sources AHEAD rows early, keeping several misses in flight
    // (over a 4 GB array: no prefetch 89-159 us per 256-row batch, 8 rows ahead 55-69, 16 52-58).
    const ROWS: usize = 64;
    const AHEAD: usize = 16;
    let kept = |s: i64, e: i64| &items[s.max(e - width as i64) as usize..e as usize];
    let fill_rows = |(rows, (s, e)): RowTask| {
        for r in 0..s.len().min(AHEAD) {
            prefetch(kept(s[r], e[r]));
        }
        for (r, row) in rows.chunks_exact_mut(width).enumerate() {
            if r + AHEAD < s.len() {
                prefetch(kept(s[r + AHEAD], e[r + AHEAD]));
            }
            let src = kept(s[r], e[r]);
            let (padding, events) = row.split_at_mut(width - src.len());
            padding.fill(MaybeUninit::new(pad));
            for (dst, &v) in events.iter_mut().zip(src) {
                dst.write(v.to_i64());
            }
        }
    };
    if n < PARALLEL_MIN_VALUES {
        // A training batch: waking the thread pool costs more than a second core saves.
        slots.chunks_mut(ROWS * width).zip(start.chunks(ROWS).zip(stop.chunks(ROWS))).for_each(fill_rows);
    } else {
        slots.par_chunks_mut(ROWS * width).zip(start.par_chunks(ROWS).zip(stop.par_chunks(ROWS))).for_each(fill_rows);
    }
}

/// Ask the CPU to start loading `data` into cache (a hint; a no-op off x86-64).
#[inline]
fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    for offset in (0..std::mem::size_of_val(data)).step_by(64) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch never faults or changes memory; the address lies inside `data`.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().cast::<i8>().add(offset)) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn into_a_used_buffer_overwrites_every_slot() {
        let items: Vec<i64> = (10..20).collect();
        let mut out = vec![-7; 8];
        gather_into(&items, &[0, 4], &[2, 4], 3, 0, &mut out).unwrap();
        assert_eq!(out, vec![0, 0, 10, 11, 0, 0, 0, 0]);
        assert!(gather_into(&items, &[0], &[2], 3, 0, &mut out).is_err()); // 1 row needs 4 slots
    }

    #[test]
    fn right_aligned_and_truncated() {
        let items: Vec<i32> = (10..20).collect();
        let out = gather(&items, &[0, 2, 5], &[3, 9, 5], 3, 0).unwrap();
        assert_eq!(
            out,
            vec![
                0, 10, 11, 12, // short slice: left-padded
                15, 16, 17, 18, // 7 events, keep the last 4
                0, 0, 0, 0, // empty slice: all padding
            ]
        );
    }

    #[test]
    fn empty_batch_and_pad_value() {
        assert_eq!(gather::<i64>(&[], &[], &[], 4, 0).unwrap(), Vec::<i64>::new());
        assert_eq!(gather(&[7u8], &[0], &[1], 2, -1).unwrap(), vec![-1, -1, 7]);
    }

    #[test]
    fn many_rows_match_reference() {
        // More rows than one parallel task holds, so prefetching crosses task edges.
        let items: Vec<i32> = (0..5000).collect();
        let (start, stop): (Vec<i64>, Vec<i64>) =
            (0..300).map(|r| ((r * 37) % 4000, (r * 37) % 4000 + (r % 13) * 3)).unzip();
        let out = gather(&items, &start, &stop, 20, -1).unwrap();
        for r in 0..300 {
            let (s, e) = (start[r].max(stop[r] - 21), stop[r]);
            let mut want = vec![-1i64; 21 - (e - s) as usize];
            want.extend((s..e).map(|i| items[i as usize] as i64));
            assert_eq!(&out[r * 21..(r + 1) * 21], want.as_slice(), "row {r}");
        }
    }

    #[test]
    fn bad_slices() {
        let items = [1i64, 2, 3];
        assert!(gather(&items, &[2], &[1], 2, 0).unwrap_err().msg.starts_with("row 0"));
        assert!(gather(&items, &[0, 0], &[1, 4], 2, 0).unwrap_err().msg.starts_with("row 1"));
        assert_eq!(gather(&items, &[-1], &[1], 2, 0).unwrap_err().arg, "start");
        assert_eq!(gather(&items, &[0], &[1, 2], 2, 0).unwrap_err().arg, "stop");
        assert_eq!(gather(&items, &[0], &[1], 0, 0).unwrap_err().arg, "length");
    }
}
