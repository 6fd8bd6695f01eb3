//! `sessionize`: session boundaries over the grouped event array.
//!
//! Two parallel passes over blocks of equal event counts (a block may cut through a long
//! sequence): the first counts each block's session starts, prefix sums place every block's
//! starts in the one output, the second writes them. Both passes run one branch-free loop
//! over all consecutive pairs of the block (so the data-dependent gaps cost no
//! mispredictions, and it vectorizes) and correct the few pairs that cross sequences.

use std::mem::MaybeUninit;

use crate::alloc::with_capacity_huge;
use crate::error::Result;
use crate::validate::{check_at_least, check_offsets, check_ts_sorted};
use rayon::prelude::*;

/// Session offsets over the same event array: a new session starts at every sequence start
/// and wherever the time between consecutive events of one sequence exceeds `gap`.
/// Sessions never cross sequences; empty sequences have none.
pub fn sessionize(offsets: &[i64], ts: &[i64], gap: i64) -> Result<Vec<i64>> {
    check_offsets(offsets, ts.len())?;
    check_at_least("gap", gap, 1)?;
    let n = ts.len();
    let block_len = n.div_ceil(8 * rayon::current_num_threads()).max(1 << 16);
    let blocks: Vec<(usize, usize)> = (0..n).step_by(block_len).map(|lo| (lo, (lo + block_len).min(n))).collect();
    let gap = gap as u64; // >= 1; compared with non-negative differences
                          // Pass 1: starts per block, and whether time ever decreases inside a sequence.
    let counted: Vec<(usize, bool)> =
        blocks.par_iter().map(|&(lo, hi)| count_block(offsets, ts, gap, lo, hi)).collect();
    if counted.iter().any(|&(_, decreases)| decreases) {
        check_ts_sorted(offsets, ts)?; // the slow path that names the first offending index
    }
    let total: usize = counted.iter().map(|&(c, _)| c).sum();
    let mut out: Vec<i64> = with_capacity_huge("sessionize", total + 1)?;
    let mut parts = Vec::with_capacity(blocks.len());
    let mut rest = &mut out.spare_capacity_mut()[..total + 1];
    for &(c, _) in &counted {
        let (head, tail) = rest.split_at_mut(c);
        parts.push(head);
        rest = tail;
    }
    rest[0].write(n as i64); // the end of the last session
                             // Pass 2: each block writes its own part.
    blocks.par_iter().zip(parts).for_each(|(&(lo, hi), part)| write_block(offsets, ts, gap, lo, hi, part));
    // SAFETY: the parts and the final slot cover 0..total+1, and write_block filled each
    // part completely (it asserts so).
    unsafe { out.set_len(total + 1) };
    Ok(out)
}

/// The first event of every non-empty sequence that starts inside events [lo, hi), in order.
fn sequence_starts(offsets: &[i64], lo: usize, hi: usize) -> impl Iterator<Item = usize> + '_ {
    let first_u = offsets.partition_point(|&o| (o as usize) < lo);
    (first_u..offsets.len() - 1)
        .take_while(move |&u| (offsets[u] as usize) < hi)
        .filter(move |&u| offsets[u + 1] > offsets[u])
        .map(move |u| offsets[u] as usize)
}

/// Pass 1 for one block: how many sessions start in [lo, hi), and whether ts decreases
/// inside a sequence. One long loop over all consecutive pairs of the block (so it
/// vectorizes), then a correction at each sequence start: its pair crosses sequences, so
/// its gap or drop does not count, and the start opens a session of its own.
fn count_block(offsets: &[i64], ts: &[i64], gap: u64, lo: usize, hi: usize) -> (usize, bool) {
    let first = lo.max(1); // pairs (i - 1, i) for i in first..hi
    let (mut gaps, mut drops) = count_pairs(&ts[first - 1..hi - 1], &ts[first..hi], gap);
    for a in sequence_starts(offsets, lo, hi) {
        gaps += 1;
        if a >= first {
            gaps -= is_gap(ts[a - 1], ts[a], gap) as usize;
            drops -= (ts[a] < ts[a - 1]) as usize;
        }
    }
    (gaps, drops > 0)
}

/// Whether q comes more than `gap` after p (p <= q; a drop also counts, see count_pairs).
#[inline(always)]
fn is_gap(p: i64, q: i64, gap: u64) -> bool {
    q.wrapping_sub(p) as u64 > gap
}

/// (pairs with a gap, pairs with a drop) over (prev[i], cur[i]). A drop wraps around to a
/// huge unsigned difference and so counts as a gap too; callers subtract or reject drops.
fn count_pairs(prev: &[i64], cur: &[i64], gap: u64) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { count_pairs_avx2(prev, cur, gap) };
    }
    count_pairs_plain(prev, cur, gap)
}

/// The same loop compiled for AVX2 (four 64-bit lanes; the portable build has no 64-bit
/// vector compare).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn count_pairs_avx2(prev: &[i64], cur: &[i64], gap: u64) -> (usize, usize) {
    count_pairs_plain(prev, cur, gap)
}

#[inline(always)]
fn count_pairs_plain(prev: &[i64], cur: &[i64], gap: u64) -> (usize, usize) {
    prev.iter().zip(cur).fold((0, 0), |(g, d), (&p, &q)| (g + is_gap(p, q, gap) as usize, d + (q < p) as usize))
}

/// Pass 2 for one block: write the session starts in [lo, hi) into `part`, which pass 1
/// sized exactly. Events go 64 at a time: a bit mask of the gaps (built branch-free), with
/// the sequence starts of the word set too (whatever their cross-sequence pair said), whose
/// set bits are then written in order.
fn write_block(offsets: &[i64], ts: &[i64], gap: u64, lo: usize, hi: usize, part: &mut [MaybeUninit<i64>]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { write_block_avx2(offsets, ts, gap, lo, hi, part) };
    }
    write_block_plain(offsets, ts, gap, lo, hi, part)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn write_block_avx2(offsets: &[i64], ts: &[i64], gap: u64, lo: usize, hi: usize, part: &mut [MaybeUninit<i64>]) {
    write_block_plain(offsets, ts, gap, lo, hi, part)
}

#[inline(always)]
fn write_block_plain(offsets: &[i64], ts: &[i64], gap: u64, lo: usize, hi: usize, part: &mut [MaybeUninit<i64>]) {
    let mut starts = sequence_starts(offsets, lo, hi).peekable();
    let mut pos = 0;
    for word in (lo..hi).step_by(64) {
        let end = (word + 64).min(hi);
        let first = word.max(1); // pairs (i - 1, i) for i in first..end
        let mut mask = gap_mask(&ts[first - 1..end - 1], &ts[first..end], gap) << (first - word);
        while let Some(a) = starts.next_if(|&a| a < end) {
            mask |= 1 << (a - word);
        }
        while mask != 0 {
            part[pos].write((word + mask.trailing_zeros() as usize) as i64);
            pos += 1;
            mask &= mask - 1;
        }
    }
    assert_eq!(pos, part.len(), "sessionize: the writing pass disagrees with the count");
}

/// Bit k set when (prev[k], cur[k]) is a gap (at most 64 pairs).
#[inline(always)]
fn gap_mask(prev: &[i64], cur: &[i64], gap: u64) -> u64 {
    prev.iter().zip(cur).enumerate().fold(0, |m, (k, (&p, &q))| m | (is_gap(p, q, gap) as u64) << k)
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

    /// The plain per-sequence loop.
    fn reference(offsets: &[i64], ts: &[i64], gap: i64) -> Vec<i64> {
        let mut out = Vec::new();
        for u in 0..offsets.len() - 1 {
            for i in offsets[u] as usize..offsets[u + 1] as usize {
                if i == offsets[u] as usize || ts[i] - ts[i - 1] > gap {
                    out.push(i as i64);
                }
            }
        }
        out.push(ts.len() as i64);
        out
    }

    /// Offsets over `n` events with empty sequences, short ones and one that spans several
    /// blocks of the parallel passes; times rise by 0..=20 inside each sequence.
    fn long_log(n: usize) -> (Vec<i64>, Vec<i64>) {
        let mut x = 7u64;
        let mut rnd = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut offsets = vec![0i64, 0, 150_000, 150_000];
        while (*offsets.last().unwrap() as usize) < n {
            let next = *offsets.last().unwrap() + rnd(40) as i64;
            offsets.push(next.min(n as i64));
        }
        let mut ts = vec![0i64; n];
        for i in 1..n {
            ts[i] = ts[i - 1] + rnd(21) as i64;
        }
        (offsets, ts)
    }

    #[test]
    fn blocks_cut_through_sequences() {
        let (offsets, ts) = long_log(400_000);
        for gap in [1, 10, 19, 1000] {
            assert_eq!(sessionize(&offsets, &ts, gap).unwrap(), reference(&offsets, &ts, gap));
        }
    }

    #[test]
    fn first_decrease_is_named_across_blocks() {
        let (offsets, mut ts) = long_log(400_000);
        ts[300_001] = -5; // two decreases in later blocks: the earlier one is named
        ts[200_000] -= 100;
        let u = offsets.partition_point(|&o| o <= 200_000) - 1;
        assert!(offsets[u] < 200_000, "the drop must be inside a sequence");
        let e = sessionize(&offsets, &ts, 10).unwrap_err();
        assert_eq!(e.msg, format!("decreases within sequence {u} at index 200000"));
        // a drop from one sequence to the next is not a decrease
        let ts2: Vec<i64> = (0..6).map(|i| 10 - i).collect();
        assert_eq!(sessionize(&[0, 1, 2, 3, 4, 5, 6], &ts2, 10).unwrap(), vec![0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn portable_loops_match_dispatched_ones() {
        // On an AVX2 CPU the dispatched calls run the AVX2 builds; the portable ones, which other
        // CPUs run, must give the same results.
        let (offsets, ts) = long_log(400_000);
        let mut dropped = ts.clone();
        dropped[5000] = -3;
        let (prev, cur) = (&dropped[..ts.len() - 1], &dropped[1..]);
        assert_eq!(count_pairs(prev, cur, 7), count_pairs_plain(prev, cur, 7));
        let n = reference(&offsets, &ts, 7).len() - 1;
        let (mut a, mut b) = (vec![MaybeUninit::new(0); n], vec![MaybeUninit::new(0); n]);
        write_block(&offsets, &ts, 7, 0, ts.len(), &mut a);
        write_block_plain(&offsets, &ts, 7, 0, ts.len(), &mut b);
        // SAFETY: both were fully written (write_block asserts so).
        let read = |v: &[MaybeUninit<i64>]| v.iter().map(|x| unsafe { x.assume_init() }).collect::<Vec<_>>();
        assert_eq!(read(&a), read(&b));
    }

    #[test]
    fn bad_input() {
        assert_eq!(sessionize(&[0, 2], &[0, 1], 0).unwrap_err().arg, "gap");
        assert_eq!(sessionize(&[0, 3], &[0, 1], 5).unwrap_err().arg, "offsets");
        let e = sessionize(&[0, 3], &[0, 2, 1], 5).unwrap_err();
        assert_eq!((e.arg, e.msg.as_str()), ("ts", "decreases within sequence 0 at index 2"));
    }
}
