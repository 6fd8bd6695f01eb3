//! Checks shared by several functions. Each returns the first offending index so the
//! caller can find it.

use crate::error::{CoreError, Result};
use rayon::prelude::*;

/// Below this many values a check runs on one thread.
const PARALLEL_MIN: usize = 1 << 15;

/// CSR offsets over `n_events` events: start at 0, never decrease, end at `n_events`.
pub fn check_offsets(offsets: &[i64], n_events: usize) -> Result<()> {
    check_offsets_start(offsets)?;
    // The common case (no error) is one parallel read; the first bad index only on error.
    if any_pair_decreases(offsets) {
        return Err(offsets_decrease(offsets));
    }
    let last = offsets[offsets.len() - 1];
    if last != n_events as i64 {
        return Err(CoreError::new("offsets", format!("ends at {last} but there are {n_events} events")));
    }
    Ok(())
}

/// Offsets have a first entry, and it is 0.
pub fn check_offsets_start(offsets: &[i64]) -> Result<()> {
    match offsets.first() {
        None => Err(CoreError::new("offsets", "must have at least one entry (length U+1)")),
        Some(&0) => Ok(()),
        Some(first) => Err(CoreError::new("offsets", format!("offsets[0] is {first}, must be 0"))),
    }
}

/// The error naming the first place where offsets (known to decrease somewhere) decrease.
pub fn offsets_decrease(offsets: &[i64]) -> CoreError {
    let i = offsets.windows(2).position(|w| w[1] < w[0]).unwrap_or(0);
    CoreError::new("offsets", format!("decreases at index {}: {} after {}", i + 1, offsets[i + 1], offsets[i]))
}

/// Whether any value is smaller than the one before it. Chunks in parallel, and within a
/// chunk a branch-free loop: rayon's `any` per element would test a shared stop flag at
/// every step, which costs more than the comparison itself.
pub fn any_pair_decreases(values: &[i64]) -> bool {
    if values.len() < 2 {
        return false;
    }
    let pairs = values.len() - 1;
    (0..pairs.div_ceil(PARALLEL_MIN)).into_par_iter().any(|c| {
        let s = &values[c * PARALLEL_MIN..(c * PARALLEL_MIN + PARALLEL_MIN + 1).min(values.len())];
        s[1..].iter().zip(s).fold(false, |bad, (&next, &prev)| bad | (next < prev))
    })
}

/// Timestamps never decrease within one sequence of `offsets`.
pub fn check_ts_sorted(offsets: &[i64], ts: &[i64]) -> Result<()> {
    for u in 0..offsets.len().saturating_sub(1) {
        let (a, b) = (offsets[u] as usize, offsets[u + 1] as usize);
        if let Some(i) = ts[a..b].windows(2).position(|w| w[1] < w[0]) {
            return Err(CoreError::new("ts", format!("decreases within sequence {u} at index {}", a + i + 1)));
        }
    }
    Ok(())
}

/// Same length as the reference argument.
pub fn check_len(arg: &'static str, len: usize, ref_arg: &str, ref_len: usize) -> Result<()> {
    if len != ref_len {
        return Err(CoreError::new(arg, format!("has length {len} but {ref_arg} has length {ref_len}")));
    }
    Ok(())
}

/// A size parameter that must be at least `min`.
pub fn check_at_least(arg: &'static str, value: i64, min: i64) -> Result<()> {
    if value < min {
        return Err(CoreError::new(arg, format!("must be at least {min}, got {value}")));
    }
    Ok(())
}

/// Per-sequence ends: `ends[u]` must lie inside sequence u, i.e. in [offsets[u], offsets[u+1]].
pub fn check_ends(offsets: &[i64], ends: &[i64]) -> Result<()> {
    check_len("ends", ends.len(), "offsets - 1", offsets.len() - 1)?;
    let outside = |u: usize| ends[u] < offsets[u] || ends[u] > offsets[u + 1];
    let any_outside = ends.par_chunks(PARALLEL_MIN).enumerate().any(|(c, chunk)| {
        let lo = &offsets[c * PARALLEL_MIN..][..chunk.len()];
        let hi = &offsets[c * PARALLEL_MIN + 1..][..chunk.len()];
        // `|` rather than `||`, and no early exit: a branch-free loop the compiler vectorizes.
        chunk.iter().zip(lo).zip(hi).fold(false, |bad, ((&e, &l), &h)| bad | (e < l) | (e > h))
    });
    if !any_outside {
        return Ok(());
    }
    let u = (0..ends.len()).find(|&u| outside(u)).unwrap_or(0);
    Err(CoreError::new(
        "ends",
        format!("ends[{u}] = {} lies outside its sequence [{}, {}]", ends[u], offsets[u], offsets[u + 1]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrease_check_sees_chunk_edges() {
        let mut ts: Vec<i64> = (0..200_000).collect();
        assert!(!any_pair_decreases(&ts) && !any_pair_decreases(&[]) && !any_pair_decreases(&[4]));
        for i in [1, 32_767, 32_768, 32_769, 65_535, 65_536, 65_537, 199_999] {
            ts[i] -= 2; // a drop at, just before and just after a chunk boundary
            assert!(any_pair_decreases(&ts), "drop at {i}");
            ts[i] += 2;
        }
    }

    #[test]
    fn offsets_rules() {
        assert!(check_offsets(&[0], 0).is_ok());
        assert!(check_offsets(&[0, 2, 2, 5], 5).is_ok());
        assert!(check_offsets(&[], 0).is_err());
        assert!(check_offsets(&[1, 5], 5).unwrap_err().msg.contains("offsets[0]"));
        assert!(check_offsets(&[0, 3, 2, 5], 5).unwrap_err().msg.contains("index 2"));
        assert!(check_offsets(&[0, 3], 5).unwrap_err().msg.contains("5 events"));
    }

    #[test]
    fn ts_sorted_within_sequences_only() {
        // A drop between sequences is fine, a drop inside one is not.
        assert!(check_ts_sorted(&[0, 2, 4], &[5, 6, 1, 2]).is_ok());
        let err = check_ts_sorted(&[0, 2, 4], &[5, 6, 2, 1]).unwrap_err();
        assert_eq!(err.arg, "ts");
        assert!(err.msg.contains("sequence 1 at index 3"));
    }

    #[test]
    fn ends_inside_sequences() {
        assert!(check_ends(&[0, 2, 4], &[0, 4]).is_ok());
        assert!(check_ends(&[0, 2, 4], &[3, 4]).unwrap_err().msg.contains("ends[0]"));
        assert!(check_ends(&[0, 2, 4], &[2]).is_err());
    }
}
