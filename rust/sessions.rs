//! `sessionize`: session boundaries over the grouped event array.

use crate::error::{CoreError, Result};
use crate::validate::{check_at_least, check_offsets};
use rayon::prelude::*;

/// Session offsets over the same event array: a new session starts at every sequence start
/// and wherever the time between consecutive events of one sequence exceeds `gap`.
/// Sessions never cross sequences; empty sequences have none.
pub fn sessionize(offsets: &[i64], ts: &[i64], gap: i64) -> Result<Vec<i64>> {
    check_offsets(offsets, ts.len())?;
    check_at_least("gap", gap, 1)?;
    // Work in blocks of whole sequences so blocks run in parallel and concatenate in order.
    let n_seq = offsets.len() - 1;
    let block = (n_seq / (4 * rayon::current_num_threads()).max(1)).max(1);
    let parts: Vec<Result<Vec<i64>>> = (0..n_seq)
        .step_by(block)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|first| {
            let mut starts = Vec::new();
            for u in first..(first + block).min(n_seq) {
                let (a, b) = (offsets[u] as usize, offsets[u + 1] as usize);
                if a == b {
                    continue;
                }
                starts.push(a as i64);
                for i in a + 1..b {
                    let dt = ts[i] - ts[i - 1];
                    if dt < 0 {
                        return Err(CoreError::new(
                            "ts",
                            format!("decreases within sequence {u} at index {i}"),
                        ));
                    }
                    if dt > gap {
                        starts.push(i as i64);
                    }
                }
            }
            Ok(starts)
        })
        .collect();
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.as_ref().map_or(0, Vec::len)).sum::<usize>() + 1);
    for p in parts {
        out.extend_from_slice(&p?);
    }
    out.push(ts.len() as i64);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_log() {
        assert_eq!(sessionize(&[0], &[], 10).unwrap(), vec![0]);
    }

    #[test]
    fn splits_on_gap_and_user() {
        // user 0: 0, 5, 30 (gap 25 > 10); user 1 empty; user 2: 31 (new user, so new session)
        let offsets = [0, 3, 3, 4];
        let ts = [0, 5, 30, 31];
        assert_eq!(sessionize(&offsets, &ts, 10).unwrap(), vec![0, 2, 3, 4]);
        // a gap exactly equal to `gap` stays in the session
        assert_eq!(sessionize(&[0, 2], &[0, 10], 10).unwrap(), vec![0, 2]);
    }

    #[test]
    fn bad_input() {
        assert_eq!(sessionize(&[0, 2], &[0, 1], 0).unwrap_err().arg, "gap");
        assert_eq!(sessionize(&[0, 3], &[0, 1], 5).unwrap_err().arg, "offsets");
        let e = sessionize(&[0, 3], &[0, 2, 1], 5).unwrap_err();
        assert_eq!((e.arg, e.msg.as_str()), ("ts", "decreases within sequence 0 at index 2"));
    }
}
