//! Training examples as pointers: each window is a slice [start, stop) of the event array
//! holding at most `window + 1` events (inputs are its first stop-start-1 events, targets
//! the same shifted by one). Nothing is copied here; `gather` materializes a batch.

use std::mem::MaybeUninit;
use std::ops::Range;

use crate::alloc::with_capacity_huge;
use crate::error::{CoreError, Result};
use crate::simd::best_simd;
use crate::validate::{check_at_least, check_ends, check_offsets, check_offsets_start, offsets_decrease};
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

    fn start(&self, a: i64, stop: i64) -> i64 {
        a.max(stop - self.window - 1)
    }
}

/// Windows as three columns of one length, (seq, start, stop), back to back in one buffer:
/// filling one fresh allocation took about 10% less time than three (a Rust A/B, two threads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    buf: Vec<i64>,
}

impl Windows {
    /// The number of windows.
    pub fn len(&self) -> usize {
        self.buf.len() / 3
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// (seq, start, stop): the sequence of each window and its slice [start, stop).
    pub fn columns(&self) -> (&[i64], &[i64], &[i64]) {
        let (seq, rest) = self.buf.split_at(self.len());
        let (start, stop) = rest.split_at(self.len());
        (seq, start, stop)
    }

    /// The buffer: seq, start and stop back to back, `len()` values each.
    pub fn into_buffer(self) -> Vec<i64> {
        self.buf
    }
}

/// Checks before the work. Only the offsets' own shape matters (the events are not read):
/// without `ends`, that they never decrease is checked in the counting pass, which reads
/// them anyway; with `ends`, before `ends` is, so that an error names the real fault.
fn check_inputs(offsets: &[i64], ends: Option<&[i64]>, spec: &WindowSpec) -> Result<()> {
    spec.check()?;
    check_offsets_start(offsets)?;
    if let Some(e) = ends {
        check_offsets(offsets, offsets[offsets.len() - 1].max(0) as usize)?;
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
    // Windows of a sequence from d = b - a - min_len (d < 0: too short for one window).
    let shift = stride.trailing_zeros();
    match regime {
        Regime::Last => end_anchored(offsets, ends, spec, stride, |d| (d >= 0) as usize),
        // A power-of-two stride (the usual choice, 1 included) divides by a shift with no
        // branch; u64 keeps d + stride from overflowing.
        Regime::Sliding if (stride as u64).is_power_of_two() => end_anchored(offsets, ends, spec, stride, move |d| {
            ((d.max(-stride) as u64).wrapping_add(stride as u64) >> shift) as usize
        }),
        // Otherwise most histories are shorter than one stride: one unsigned compare finds
        // them (d < 0 wraps to a huge value), and they skip the slow division.
        Regime::Sliding => end_anchored(offsets, ends, spec, stride, move |d| {
            if (d as u64) < stride as u64 {
                1
            } else if d < 0 {
                0
            } else {
                (d / stride + 1) as usize
            }
        }),
    }
}

/// `windows` once `n_of(d)` gives a sequence's number of windows from d = b - a - min_len.
fn end_anchored<N>(offsets: &[i64], ends: Option<&[i64]>, spec: WindowSpec, stride: i64, n_of: N) -> Result<Windows>
where
    N: Fn(i64) -> usize + Sync + Copy,
{
    // Wrapping: this also runs on offsets not yet known to be valid (see `check_inputs`).
    let count = move |a: i64, b: i64| n_of(b.wrapping_sub(a).wrapping_sub(spec.min_len));
    fill_per_sequence("windows", offsets, ends, &spec, count, move |u, a, b, n, part| {
        // Most sequences have one window, ending at b. It is put before looking at n, so
        // that case takes no branch; a sequence without windows leaves it to be overwritten.
        part.put(0, u as i64, spec.start(a, b), b);
        if n > 1 {
            // Windows in time order: the j-th ends n - 1 - j strides before b.
            for j in 0..n {
                let stop = b - (n - 1 - j) as i64 * stride;
                part.put(j, u as i64, spec.start(a, stop), stop);
            }
        }
        part.advance(n);
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
    if (per_seq as usize).checked_mul(offsets.len()).is_none() {
        return Err(CoreError::out_of_memory("sample_windows", None)); // the count would overflow
    }
    let count = move |a: i64, b: i64| -> usize {
        if b.wrapping_sub(a) < spec.min_len {
            0
        } else {
            per_seq as usize
        }
    };
    let seed_mix = crate::kshift::splitmix64(seed);
    fill_per_sequence("sample_windows", offsets, ends, &spec, count, move |u, a, b, n, part| {
        let choices = (b - a - spec.min_len + 1) as u64; // stops in [a + min_len, b]
        let mut state = seed_mix ^ (u as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        for j in 0..n {
            state = crate::kshift::splitmix64(state);
            let stop = a + spec.min_len + uniform_below(state, choices) as i64;
            part.put(j, u as i64, spec.start(a, stop), stop);
        }
        part.advance(n);
    })
}

/// Unbiased enough for window sampling: multiply-shift maps 64 random bits to [0, n).
fn uniform_below(bits: u64, n: u64) -> u64 {
    ((bits as u128 * n as u128) >> 64) as u64
}

/// Shared driver. `count(a, b)` is the number of windows of a sequence with usable span
/// [a, b); `fill(u, a, b, n, part)` puts those n windows of sequence u at the part's slots
/// 0..n and advances past them (it is called for every sequence, n = 0 included).
/// Pass 1 totals the windows of each block of sequences; the outputs are allocated once and
/// cut at the block totals; pass 2 lets each block recount and fill its own part. No
/// per-sequence table is kept, so memory is the outputs alone.
fn fill_per_sequence<C, F>(
    what: &'static str,
    offsets: &[i64],
    ends: Option<&[i64]>,
    spec: &WindowSpec,
    count: C,
    fill: F,
) -> Result<Windows>
where
    C: Fn(i64, i64) -> usize + Sync,
    F: Fn(usize, i64, i64, usize, &mut Part) + Sync,
{
    // One copy of the loops per shape of span, each an iterator over a block's sequences
    // with no Option checks and no bounds checks inside.
    let (first, next) = (&offsets[..offsets.len() - 1], &offsets[1..]);
    match (ends, spec.max_history) {
        (None, None) => fill_spans(what, offsets, |r| zip_copied(&first[r.clone()], &next[r]), count, fill),
        (Some(e), None) => fill_spans(what, offsets, |r| zip_copied(&first[r.clone()], &e[r]), count, fill),
        (None, Some(h)) => fill_spans(
            what,
            offsets,
            |r| zip_copied(&first[r.clone()], &next[r]).map(move |(a, b)| (a.max(b.wrapping_sub(h)), b)),
            count,
            fill,
        ),
        (Some(e), Some(h)) => fill_spans(
            what,
            offsets,
            |r| zip_copied(&first[r.clone()], &e[r]).map(move |(a, b)| (a.max(b.wrapping_sub(h)), b)),
            count,
            fill,
        ),
    }
}

/// Pairs (x[i], y[i]).
fn zip_copied<'a>(x: &'a [i64], y: &'a [i64]) -> impl Iterator<Item = (i64, i64)> + 'a {
    x.iter().copied().zip(y.iter().copied())
}

/// `fill_per_sequence` once `spans(range)` lists the usable spans [a, b) of a range of
/// sequences.
fn fill_spans<S, I, C, F>(what: &'static str, offsets: &[i64], spans: S, count: C, fill: F) -> Result<Windows>
where
    S: Fn(Range<usize>) -> I + Sync,
    I: Iterator<Item = (i64, i64)>,
    C: Fn(i64, i64) -> usize + Sync,
    F: Fn(usize, i64, i64, usize, &mut Part) + Sync,
{
    let blocks = sequence_blocks(offsets, 16 * rayon::current_num_threads());
    let (first, next) = (&offsets[..offsets.len() - 1], &offsets[1..]);
    let counted: Vec<(usize, bool)> = blocks
        .par_iter()
        .map(|r| {
            best_simd(|| {
                let n = spans(r.clone()).map(|(a, b)| count(a, b)).fold(0usize, usize::wrapping_add);
                // `check_inputs` left this check to the pass: the block is in cache now.
                let decreases = next[r.clone()].iter().zip(&first[r.clone()]).fold(false, |d, (&b, &a)| d | (b < a));
                (n, decreases)
            })
        })
        .collect();
    if counted.iter().any(|&(_, decreases)| decreases) {
        return Err(offsets_decrease(offsets));
    }
    let totals: Vec<usize> = counted.iter().map(|&(n, _)| n).collect();
    let total = totals.iter().try_fold(0usize, |sum, &n| sum.checked_add(n));
    let total = total.filter(|&t| t <= usize::MAX / 3).ok_or(CoreError::out_of_memory(what, None))?;
    let mut buf: Vec<i64> = with_capacity_huge(what, 3 * total)?;
    let parts = {
        let (seq, rest) = buf.spare_capacity_mut()[..3 * total].split_at_mut(total);
        let (start, stop) = rest.split_at_mut(total);
        split_parts(seq, start, stop, &totals)
    };
    blocks.into_par_iter().zip(parts).for_each(|(users, mut part)| {
        for (u, (a, b)) in users.clone().zip(spans(users)) {
            fill(u, a, b, count(a, b), &mut part);
        }
        assert!(part.is_full(), "windows: the filling pass disagrees with the count");
    });
    // SAFETY: the parts cover 0..total of each column and every slot of every part was
    // written: `fill` puts a window in each of a sequence's n slots before advancing past
    // them, and each part was used up exactly, as asserted.
    unsafe { buf.set_len(3 * total) };
    Ok(Windows { buf })
}

/// One block's slice of the three outputs, written front to back.
struct Part<'a> {
    seq: Column<'a>,
    start: Column<'a>,
    stop: Column<'a>,
    next: usize,
}

impl<'a> Part<'a> {
    fn new(seq: Column<'a>, start: Column<'a>, stop: Column<'a>) -> Self {
        assert!(seq.len() == start.len() && seq.len() == stop.len());
        Part { seq, start, stop, next: 0 }
    }

    /// Write a window at slot `next + j`. A slot past the end is skipped: a guess put
    /// before knowing that a sequence has a window (`advance` catches a wrong count).
    #[inline]
    fn put(&mut self, j: usize, seq: i64, start: i64, stop: i64) {
        let k = self.next + j;
        if k < self.seq.len() {
            // SAFETY: k < seq.len(), and the three slices have one length (checked in
            // `new`). One check instead of three: this runs once per window.
            unsafe {
                self.seq.get_unchecked_mut(k).write(seq);
                self.start.get_unchecked_mut(k).write(start);
                self.stop.get_unchecked_mut(k).write(stop);
            }
        }
    }

    /// Move past the n windows just put.
    #[inline]
    fn advance(&mut self, n: usize) {
        self.next += n;
        assert!(self.next <= self.seq.len(), "windows: the filling pass disagrees with the count");
    }

    fn is_full(&self) -> bool {
        self.next == self.seq.len()
    }
}

type Column<'a> = &'a mut [MaybeUninit<i64>];

/// Cut the three columns into consecutive parts of the given sizes.
fn split_parts<'a>(mut s1: Column<'a>, mut s2: Column<'a>, mut s3: Column<'a>, sizes: &[usize]) -> Vec<Part<'a>> {
    let mut parts = Vec::with_capacity(sizes.len());
    for &n in sizes {
        let ((h1, t1), (h2, t2), (h3, t3)) = (s1.split_at_mut(n), s2.split_at_mut(n), s3.split_at_mut(n));
        parts.push(Part::new(h1, h2, h3));
        (s1, s2, s3) = (t1, t2, t3);
    }
    parts
}

/// Cut sequences 0..U into at most `parts` consecutive blocks of about equal weight,
/// a sequence weighing one plus its events (offsets[u] + u is then the weight before u).
fn sequence_blocks(offsets: &[i64], parts: usize) -> Vec<Range<usize>> {
    let n_seq = offsets.len() - 1;
    // Wrapping, and the last cut forced below: offsets are not yet known to never decrease
    // (the counting pass checks that), and the blocks must cover every sequence regardless.
    let before = |u: usize| (offsets[u] as usize).wrapping_add(u);
    let total = before(n_seq);
    let mut cuts = vec![0];
    for k in 1..=parts {
        // The first sequence whose weight before it reaches k/parts of the total.
        let target = (total as u128 * k as u128 / parts as u128) as usize;
        let (mut lo, mut hi) = (0, n_seq);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if before(mid) < target {
                lo = mid + 1
            } else {
                hi = mid
            }
        }
        if lo > *cuts.last().unwrap() {
            cuts.push(lo);
        }
    }
    if *cuts.last().unwrap() < n_seq {
        cuts.push(n_seq);
    }
    cuts.windows(2).map(|w| w[0]..w[1]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Cols = (Vec<i64>, Vec<i64>, Vec<i64>);

    fn cols(w: Windows) -> Cols {
        let (seq, start, stop) = w.columns();
        (seq.to_vec(), start.to_vec(), stop.to_vec())
    }

    fn spec(window: i64) -> WindowSpec {
        WindowSpec { window, min_len: 2, max_history: None }
    }

    #[test]
    fn empty_and_one_event() {
        let none: Cols = (vec![], vec![], vec![]);
        assert_eq!(cols(windows(&[0], None, spec(3), 1, Regime::Sliding).unwrap()), none);
        // a single event has no target
        assert_eq!(cols(windows(&[0, 1], None, spec(3), 1, Regime::Sliding).unwrap()), none);
    }

    #[test]
    fn sliding_end_anchored() {
        // one sequence of 10 events at [0, 10), window 3 (4 events per slice), stride 3
        let (seq, start, stop) = cols(windows(&[0, 10], None, spec(3), 3, Regime::Sliding).unwrap());
        assert_eq!(stop, vec![4, 7, 10]);
        assert_eq!(start, vec![0, 3, 6]);
        assert_eq!(seq, vec![0, 0, 0]);
        // stop = 1 would hold one event (< min_len) so the earliest is stop 4 here
    }

    #[test]
    fn window_longer_than_history() {
        let (_, start, stop) = cols(windows(&[0, 5], None, spec(100), 2, Regime::Sliding).unwrap());
        assert_eq!(stop, vec![3, 5]);
        assert_eq!(start, vec![0, 0]);
    }

    #[test]
    fn stride_larger_than_window_and_last() {
        let (_, start, stop) = cols(windows(&[0, 20], None, spec(3), 8, Regime::Sliding).unwrap());
        assert_eq!((start, stop), (vec![0, 8, 16], vec![4, 12, 20]));
        let (_, start, stop) = cols(windows(&[0, 20], None, spec(3), 8, Regime::Last).unwrap());
        assert_eq!((start, stop), (vec![16], vec![20]));
    }

    #[test]
    fn ends_max_history_and_min_len() {
        // two users: [0, 6) ending at 5, [6, 9)
        let s = WindowSpec { window: 2, min_len: 3, max_history: Some(4) };
        let (seq, start, stop) = cols(windows(&[0, 6, 9], Some(&[5, 9]), s, 1, Regime::Sliding).unwrap());
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
        let a = cols(sample_windows(&offsets, None, s, 5, 7).unwrap());
        assert_eq!(a, cols(sample_windows(&offsets, None, s, 5, 7).unwrap()));
        assert_ne!(a, cols(sample_windows(&offsets, None, s, 5, 8).unwrap()));
        assert_eq!(a.0, vec![0, 0, 0, 0, 0, 2, 2, 2, 2, 2]); // user 1 has one event only
        for i in 0..a.0.len() {
            let u = a.0[i] as usize;
            let (st, sp) = (a.1[i], a.2[i]);
            assert!(sp >= offsets[u] + 2 && sp <= offsets[u + 1]);
            assert_eq!(st, offsets[u].max(sp - 5));
        }
    }

    /// The plain per-sequence loop of the docstring.
    fn reference(offsets: &[i64], window: i64, stride: i64) -> Cols {
        let mut out: Cols = (vec![], vec![], vec![]);
        for u in 0..offsets.len() - 1 {
            let (a, b) = (offsets[u], offsets[u + 1]);
            let mut stops = vec![];
            let mut s = b;
            while s - a >= 2 {
                stops.push(s);
                s -= stride;
            }
            for &s in stops.iter().rev() {
                out.0.push(u as i64);
                out.1.push(a.max(s - window - 1));
                out.2.push(s);
            }
        }
        out
    }

    #[test]
    fn blocks_with_empty_and_huge_sequences() {
        // Many short sequences, runs of empty ones (also at both ends), and a few huge ones,
        // so the parallel blocks cut in all kinds of places.
        let mut x = 3u64;
        let mut rnd = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut offsets = vec![0i64, 0, 0];
        for u in 0..20_000 {
            let len = match u % 5000 {
                17 => 200_000,
                _ if rnd(3) == 0 => 0,
                _ => rnd(30) as i64,
            };
            offsets.push(offsets.last().unwrap() + len);
        }
        offsets.extend([*offsets.last().unwrap(); 3]);
        // strides: powers of two (counted with a shift) and others (with a division)
        for (window, stride) in [(200, 64), (3, 1), (10, 50), (5, 7)] {
            let got = cols(windows(&offsets, None, spec(window), stride, Regime::Sliding).unwrap());
            assert_eq!(got, reference(&offsets, window, stride));
        }
        // only empty sequences
        let none: Cols = (vec![], vec![], vec![]);
        assert_eq!(cols(windows(&[0; 100_000], None, spec(3), 1, Regime::Sliding).unwrap()), none);
    }

    #[test]
    fn huge_offsets_do_not_overflow() {
        // One sequence of 2^62 events: strides near the top of i64 in both counting paths.
        let offsets = [0, 1i64 << 62];
        let (_, start, stop) = cols(windows(&offsets, None, spec(3), 1 << 61, Regime::Sliding).unwrap());
        assert_eq!(stop, vec![1 << 61, 1 << 62]);
        assert_eq!(start, vec![(1 << 61) - 4, (1 << 62) - 4]);
        let (_, _, stop) = cols(windows(&offsets, None, spec(3), i64::MAX, Regime::Sliding).unwrap());
        assert_eq!(stop, vec![1 << 62]);
        let (_, _, stop) = cols(windows(&offsets, None, spec(3), 1, Regime::Last).unwrap());
        assert_eq!(stop, vec![1 << 62]);
    }

    #[test]
    fn outputs_too_big_are_errors() {
        // 2^50 windows would need 24 PiB: an error, not an aborted process.
        let e = windows(&[0, 1 << 50], None, spec(3), 1, Regime::Sliding).unwrap_err();
        assert!(e.out_of_memory && e.arg == "windows", "{e}");
        let e = sample_windows(&[0, 5], None, spec(3), 1 << 50, 0).unwrap_err();
        assert!(e.out_of_memory && e.arg == "sample_windows", "{e}");
        let e = sample_windows(&[0, 5, 10, 15], None, spec(3), i64::MAX, 0).unwrap_err();
        assert!(e.out_of_memory, "{e}");
    }

    #[test]
    fn bad_input() {
        assert_eq!(windows(&[0, 5], None, spec(0), 1, Regime::Last).unwrap_err().arg, "window");
        assert_eq!(windows(&[0, 5], None, spec(2), 0, Regime::Last).unwrap_err().arg, "stride");
        assert_eq!(windows(&[0, 5], Some(&[6]), spec(2), 1, Regime::Last).unwrap_err().arg, "ends");
        assert_eq!(windows(&[1, 5], None, spec(2), 1, Regime::Last).unwrap_err().arg, "offsets");
        // Decreasing offsets are found by the counting pass, which must not overflow on them.
        let e = windows(&[0, i64::MAX, 0], None, spec(2), 1, Regime::Sliding).unwrap_err();
        assert_eq!(e.msg, format!("decreases at index 2: 0 after {}", i64::MAX));
        let s = WindowSpec { window: 2, min_len: i64::MAX, max_history: Some(i64::MAX) };
        assert_eq!(windows(&[0, 3, -5], None, s, 3, Regime::Sliding).unwrap_err().arg, "offsets");
        assert_eq!(sample_windows(&[0, i64::MAX, 0], None, s, 2, 0).unwrap_err().arg, "offsets");
        assert_eq!(Regime::parse("all").unwrap_err().arg, "regime");
        let s = WindowSpec { window: 2, min_len: 1, max_history: None };
        assert_eq!(windows(&[0, 5], None, s, 1, Regime::Last).unwrap_err().arg, "min_len");
    }
}
