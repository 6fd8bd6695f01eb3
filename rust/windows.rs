//! Training examples as pointers: each window is a slice [start, stop) of the event array
//! holding at most `window + 1` events (inputs are its first stop-start-1 events, targets
//! the same shifted by one). Nothing is copied here; `gather` materializes a batch.

use crate::error::{CoreError, Result};
use crate::validate::{check_at_least, check_ends, check_offsets};
use rayon::prelude::*;

/// Which windows of a sequence become examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    /// Only the window ending at the sequence end (the truncation baseline).
    Last,
    /// Every end-anchored window: stop = b, b - stride, b - 2*stride, ...
    Sliding,
}

impl Regime {
    pub fn parse(s: &str) -> Result<Regime> {
        match s {
            "last" => Ok(Regime::Last),
            "sliding" => Ok(Regime::Sliding),
            _ => Err(CoreError::new("regime", format!("must be 'last' or 'sliding', got '{s}'"))),
        }
    }
}

/// Shape of the windows, shared by `windows` and `sample_windows`.
#[derive(Debug, Clone, Copy)]
pub struct WindowSpec {
    pub window: i64,
    pub min_len: i64,
    pub max_history: Option<i64>,
}

impl WindowSpec {
    fn check(&self) -> Result<()> {
        check_at_least("window", self.window, 1)?;
        check_at_least("min_len", self.min_len, 2)?; // one input and one target
        if let Some(h) = self.max_history {
            check_at_least("max_history", h, 1)?;
        }
        Ok(())
    }

    /// The usable span [a, b) of sequence u.
    fn span(&self, offsets: &[i64], ends: Option<&[i64]>, u: usize) -> (i64, i64) {
        let b = ends.map_or(offsets[u + 1], |e| e[u]);
        let a = match self.max_history {
            Some(h) => offsets[u].max(b - h),
            None => offsets[u],
        };
        (a, b)
    }

    fn start(&self, a: i64, stop: i64) -> i64 {
        a.max(stop - self.window - 1)
    }
}

/// Output triple (seq, start, stop), one entry per window.
pub type Windows = (Vec<i64>, Vec<i64>, Vec<i64>);

fn check_inputs(offsets: &[i64], ends: Option<&[i64]>, spec: &WindowSpec) -> Result<()> {
    spec.check()?;
    // Only the offsets' own shape matters here: the events themselves are not read.
    let n_events = *offsets.last().unwrap_or(&0);
    check_offsets(offsets, n_events.max(0) as usize)?;
    if let Some(e) = ends {
        check_ends(offsets, e)?;
    }
    Ok(())
}

/// All end-anchored windows. For sequence u with usable span [a, b):
/// stop = b, b - stride, ... while stop - a >= min_len; start = max(a, stop - window - 1).
/// `Last` keeps only stop = b. Within a sequence windows come in time order.
pub fn windows(
    offsets: &[i64],
    ends: Option<&[i64]>,
    spec: WindowSpec,
    stride: i64,
    regime: Regime,
) -> Result<Windows> {
    check_inputs(offsets, ends, &spec)?;
    check_at_least("stride", stride, 1)?;
    let n_seq = offsets.len() - 1;
    let count = |u: usize| -> i64 {
        let (a, b) = spec.span(offsets, ends, u);
        if b - a < spec.min_len {
            return 0;
        }
        match regime {
            Regime::Last => 1,
            Regime::Sliding => (b - a - spec.min_len) / stride + 1,
        }
    };
    fill_per_sequence(n_seq, count, |u, n, seq, start, stop| {
        let (a, b) = spec.span(offsets, ends, u);
        for j in 0..n as usize {
            // j-th window in time order: the earliest has the largest multiple of stride.
            let s = b - (n - 1 - j as i64) * stride;
            seq[j] = u as i64;
            stop[j] = s;
            start[j] = spec.start(a, s);
        }
    })
}

/// `per_seq` random windows per sequence whose span holds at least min_len events:
/// stop uniform in [a + min_len, b], start = max(a, stop - window - 1). Each sequence has its
/// own random stream derived from (seed, u), so results do not depend on thread count.
pub fn sample_windows(
    offsets: &[i64],
    ends: Option<&[i64]>,
    spec: WindowSpec,
    per_seq: i64,
    seed: u64,
) -> Result<Windows> {
    check_inputs(offsets, ends, &spec)?;
    check_at_least("per_seq", per_seq, 1)?;
    let n_seq = offsets.len() - 1;
    let count = |u: usize| -> i64 {
        let (a, b) = spec.span(offsets, ends, u);
        if b - a < spec.min_len { 0 } else { per_seq }
    };
    let seed_mix = crate::kshift::splitmix64(seed);
    fill_per_sequence(n_seq, count, |u, n, seq, start, stop| {
        let (a, b) = spec.span(offsets, ends, u);
        let choices = (b - a - spec.min_len + 1) as u64; // stops in [a + min_len, b]
        let mut state = seed_mix ^ (u as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        for j in 0..n as usize {
            state = crate::kshift::splitmix64(state);
            let s = a + spec.min_len + uniform_below(state, choices) as i64;
            seq[j] = u as i64;
            stop[j] = s;
            start[j] = spec.start(a, s);
        }
    })
}

/// Unbiased enough for window sampling: multiply-shift maps 64 random bits to [0, n).
fn uniform_below(bits: u64, n: u64) -> u64 {
    ((bits as u128 * n as u128) >> 64) as u64
}

/// Shared driver: count windows per sequence, allocate the outputs once, then let each
/// block of sequences fill its own disjoint part of them in parallel.
fn fill_per_sequence<C, F>(n_seq: usize, count: C, fill: F) -> Result<Windows>
where
    C: Fn(usize) -> i64 + Sync,
    F: Fn(usize, i64, &mut [i64], &mut [i64], &mut [i64]) + Sync,
{
    let counts: Vec<i64> = (0..n_seq).into_par_iter().with_min_len(4096).map(&count).collect();
    let total: i64 = counts.iter().sum();
    let mut seq = vec![0i64; total as usize];
    let mut start = vec![0i64; total as usize];
    let mut stop = vec![0i64; total as usize];
    // Cut sequences into blocks of roughly equal output size.
    let n_blocks = (rayon::current_num_threads() * 8).max(1);
    let per_block = (total as usize).div_ceil(n_blocks).max(1);
    let mut blocks = Vec::new();
    let (mut rest_seq, mut rest_start, mut rest_stop) =
        (seq.as_mut_slice(), start.as_mut_slice(), stop.as_mut_slice());
    let mut u = 0;
    while u < n_seq {
        let first = u;
        let mut size = 0usize;
        while u < n_seq && (size < per_block || size == 0) {
            size += counts[u] as usize;
            u += 1;
        }
        let (s1, r1) = rest_seq.split_at_mut(size);
        let (s2, r2) = rest_start.split_at_mut(size);
        let (s3, r3) = rest_stop.split_at_mut(size);
        blocks.push((first, u, s1, s2, s3));
        rest_seq = r1;
        rest_start = r2;
        rest_stop = r3;
    }
    blocks.into_par_iter().for_each(|(first, last, sq, st, sp)| {
        let mut pos = 0usize;
        for v in first..last {
            let n = counts[v] as usize;
            fill(v, n as i64, &mut sq[pos..pos + n], &mut st[pos..pos + n], &mut sp[pos..pos + n]);
            pos += n;
        }
    });
    Ok((seq, start, stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(window: i64) -> WindowSpec {
        WindowSpec { window, min_len: 2, max_history: None }
    }

    #[test]
    fn empty_and_one_event() {
        let none: Windows = (vec![], vec![], vec![]);
        assert_eq!(windows(&[0], None, spec(3), 1, Regime::Sliding).unwrap(), none);
        // a single event has no target
        assert_eq!(windows(&[0, 1], None, spec(3), 1, Regime::Sliding).unwrap(), none);
    }

    #[test]
    fn sliding_end_anchored() {
        // one sequence of 10 events at [0, 10), window 3 (4 events per slice), stride 3
        let (seq, start, stop) = windows(&[0, 10], None, spec(3), 3, Regime::Sliding).unwrap();
        assert_eq!(stop, vec![4, 7, 10]);
        assert_eq!(start, vec![0, 3, 6]);
        assert_eq!(seq, vec![0, 0, 0]);
        // stop = 1 would hold one event (< min_len) so the earliest is stop 4 here
    }

    #[test]
    fn window_longer_than_history() {
        let (_, start, stop) = windows(&[0, 5], None, spec(100), 2, Regime::Sliding).unwrap();
        assert_eq!(stop, vec![3, 5]);
        assert_eq!(start, vec![0, 0]);
    }

    #[test]
    fn stride_larger_than_window_and_last() {
        let (_, start, stop) = windows(&[0, 20], None, spec(3), 8, Regime::Sliding).unwrap();
        assert_eq!((start, stop), (vec![0, 8, 16], vec![4, 12, 20]));
        let (_, start, stop) = windows(&[0, 20], None, spec(3), 8, Regime::Last).unwrap();
        assert_eq!((start, stop), (vec![16], vec![20]));
    }

    #[test]
    fn ends_max_history_and_min_len() {
        // two users: [0, 6) ending at 5, [6, 9)
        let s = WindowSpec { window: 2, min_len: 3, max_history: Some(4) };
        let (seq, start, stop) = windows(&[0, 6, 9], Some(&[5, 9]), s, 1, Regime::Sliding).unwrap();
        // user 0: span [1, 5): stops 5, 4 (4 - 1 = 3 >= min_len), not 3
        // user 1: span [6, 9): stop 9 only
        assert_eq!(seq, vec![0, 0, 1]);
        assert_eq!(stop, vec![4, 5, 9]);
        assert_eq!(start, vec![1, 2, 6]);
    }

    #[test]
    fn sampled_within_span_and_deterministic() {
        let s = spec(4);
        let offsets = [0, 50, 51, 130];
        let a = sample_windows(&offsets, None, s, 5, 7).unwrap();
        assert_eq!(a, sample_windows(&offsets, None, s, 5, 7).unwrap());
        assert_ne!(a, sample_windows(&offsets, None, s, 5, 8).unwrap());
        assert_eq!(a.0, vec![0, 0, 0, 0, 0, 2, 2, 2, 2, 2]); // user 1 has one event only
        for i in 0..a.0.len() {
            let u = a.0[i] as usize;
            let (st, sp) = (a.1[i], a.2[i]);
            assert!(sp >= offsets[u] + 2 && sp <= offsets[u + 1]);
            assert_eq!(st, offsets[u].max(sp - 5));
        }
    }

    #[test]
    fn bad_input() {
        assert_eq!(windows(&[0, 5], None, spec(0), 1, Regime::Last).unwrap_err().arg, "window");
        assert_eq!(windows(&[0, 5], None, spec(2), 0, Regime::Last).unwrap_err().arg, "stride");
        assert_eq!(windows(&[0, 5], Some(&[6]), spec(2), 1, Regime::Last).unwrap_err().arg, "ends");
        assert_eq!(windows(&[1, 5], None, spec(2), 1, Regime::Last).unwrap_err().arg, "offsets");
        assert_eq!(Regime::parse("all").unwrap_err().arg, "regime");
        let s = WindowSpec { window: 2, min_len: 1, max_history: None };
        assert_eq!(windows(&[0, 5], None, s, 1, Regime::Last).unwrap_err().arg, "min_len");
    }
}
