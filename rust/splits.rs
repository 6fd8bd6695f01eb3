//! Split helpers: per-sequence end positions that define train / validation / test as
//! pointers into the one event array (nothing is copied per split).

use crate::error::Result;
use crate::validate::{check_at_least, check_offsets};
use rayon::prelude::*;

/// Leave-`holdout`-out ends: end[u] = b - holdout when sequence u keeps at least
/// `min_history` events before it; otherwise b (a sequence too short stays whole in training).
pub fn leave_one_out_ends(offsets: &[i64], holdout: i64, min_history: i64) -> Result<Vec<i64>> {
    check_at_least("holdout", holdout, 0)?;
    check_at_least("min_history", min_history, 0)?;
    check_offsets(offsets, (*offsets.last().unwrap_or(&0)).max(0) as usize)?;
    Ok(offsets
        .par_windows(2)
        .map(|w| if w[1] - w[0] - holdout >= min_history { w[1] - holdout } else { w[1] })
        .collect())
}

/// Temporal ends: end[u] = the first index of sequence u whose time is at or after `cutoff`
/// (b when there is none). Times must not decrease within a sequence.
pub fn temporal_ends(offsets: &[i64], ts: &[i64], cutoff: i64) -> Result<Vec<i64>> {
    check_offsets(offsets, ts.len())?;
    crate::validate::check_ts_sorted(offsets, ts)?;
    Ok(offsets
        .par_windows(2)
        .map(|w| {
            let (a, b) = (w[0] as usize, w[1] as usize);
            (a + ts[a..b].partition_point(|&t| t < cutoff)) as i64
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leave_one_out() {
        // lengths 5, 1, 0, 2
        let offsets = [0, 5, 6, 6, 8];
        assert_eq!(leave_one_out_ends(&offsets, 1, 1).unwrap(), vec![4, 6, 6, 7]);
        assert_eq!(leave_one_out_ends(&offsets, 2, 1).unwrap(), vec![3, 6, 6, 8]);
        assert_eq!(leave_one_out_ends(&[0], 1, 1).unwrap(), Vec::<i64>::new());
    }

    #[test]
    fn temporal() {
        let offsets = [0, 3, 5, 5];
        let ts = [1, 5, 9, 10, 12];
        assert_eq!(temporal_ends(&offsets, &ts, 5).unwrap(), vec![1, 3, 5]);
        assert_eq!(temporal_ends(&offsets, &ts, 100).unwrap(), vec![3, 5, 5]);
        assert_eq!(temporal_ends(&offsets, &ts, 0).unwrap(), vec![0, 3, 5]);
        assert_eq!(temporal_ends(&[0, 2], &[3, 1], 2).unwrap_err().arg, "ts");
    }

    #[test]
    fn bad_input() {
        assert_eq!(leave_one_out_ends(&[0, 2], -1, 1).unwrap_err().arg, "holdout");
        assert_eq!(leave_one_out_ends(&[0, 3, 2], 1, 1).unwrap_err().arg, "offsets");
    }
}
