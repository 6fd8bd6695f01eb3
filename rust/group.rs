//! `group`: the stable (user, time) order of a raw log and the CSR offsets of its users.
//!
//! Raw logs arrive roughly in time order across users. We bucket events by user with a
//! two-pass radix sort on the user id (stable, so ties in time keep input order), then, only
//! when the log was not already in time order, fix up each user whose events are not with a
//! stable sort of that user's slice. When the user ids are too sparse for a counting table
//! we fall back to a stable comparison sort.

use crate::alloc::{with_capacity_huge, SharedMut};
use crate::error::{CoreError, Result};
use crate::validate::{any_pair_decreases, check_len};
use rayon::prelude::*;

/// Users per radix bucket of the second pass (the low bits of the id). The first pass writes
/// one stream per bucket; on 1e8 events over 2.7M users 2^12 users per bucket (665 streams)
/// measured faster than 2^9..2^11 (smaller, L2-sized buckets but more streams).
const LOW_BITS: u32 = 12;
/// The first pass packs an event index (below 2^INDEX_BITS) with the id's low bits.
const INDEX_BITS: u32 = 48;

/// Returns `(perm, offsets)`: `users[perm]`, `ts[perm]` are sorted by (user, ts) with ties in
/// input order, and user k (the k-th smallest distinct id) owns `perm[offsets[k]..offsets[k+1]]`.
pub fn group(users: &[i64], ts: &[i64]) -> Result<(Vec<i64>, Vec<i64>)> {
    check_len("ts", ts.len(), "users", users.len())?;
    let n = users.len();
    if n == 0 {
        return Ok((Vec::new(), vec![0]));
    }
    // Ids below `limit` are grouped with a counting table that stays well under the size of
    // the output; sparser ids (or a negative one, which this names) sort.
    let limit = (n / 16).max(1 << 16);
    let counts = if n < (1 << INDEX_BITS) { bucket_counts(users, limit) } else { None };
    let (mut perm, offsets) = match counts {
        Some(counts) => radix_group(users, counts)?,
        None => {
            max_non_negative(users)?;
            sorting_group(users)
        }
    };
    // The sort by user is stable, so a log already in time order is in (user, ts) order.
    if any_pair_decreases(ts) {
        sort_each_by_time(&mut perm, &offsets, ts);
    }
    Ok((perm, offsets))
}

/// How many events of each chunk of the log (one per thread) fall in each radix bucket
/// (`ids >> LOW_BITS`), or None when an id is negative or not below `limit`: one read of the ids
/// both counts and bounds them.
fn bucket_counts(users: &[i64], limit: usize) -> Option<BucketCounts> {
    let n_buckets = ((limit - 1) >> LOW_BITS) + 1;
    let chunk_len = users.len().div_ceil(rayon::current_num_threads().clamp(1, 16));
    let mut counts = users
        .par_chunks(chunk_len)
        .map(|c| {
            let mut h = vec![0usize; n_buckets];
            for &u in c {
                if u as u64 >= limit as u64 {
                    return None; // a negative id wraps around to a huge one
                }
                h[u as usize >> LOW_BITS] += 1;
            }
            Some(h)
        })
        .collect::<Option<Vec<Vec<usize>>>>()?;
    // Drop the buckets above the largest id, so pass 1 keeps no idle streams.
    let used = counts.iter().filter_map(|h| h.iter().rposition(|&c| c > 0)).max().map_or(0, |b| b + 1);
    counts.iter_mut().for_each(|h| h.truncate(used));
    Some(BucketCounts { chunk_len, counts })
}

/// Events per (chunk of the log, radix bucket).
struct BucketCounts {
    chunk_len: usize,
    counts: Vec<Vec<usize>>,
}

/// The largest id, or an error naming the first negative one.
fn max_non_negative(users: &[i64]) -> Result<i64> {
    let (min, max) = users
        .par_chunks(1 << 16)
        .map(|c| c.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &u| (lo.min(u), hi.max(u))))
        .reduce(|| (i64::MAX, i64::MIN), |a, b| (a.0.min(b.0), a.1.max(b.1)));
    if min < 0 {
        let i = users.iter().position(|&u| u < 0).unwrap_or(0);
        return Err(CoreError::new("users", format!("users[{i}] = {} is negative", users[i])));
    }
    Ok(max.max(0))
}

/// Stable two-pass radix sort of event indices by user id, from the ids' bucket counts.
///
/// Pass 1 partitions events by the id's high bits (one write stream per bucket) into
/// `perm`, each value packing the event index with the id's low bits. Pass 2 sorts each
/// bucket by the low bits with a counting sort that stays in cache, and lists the ends of
/// its users, from which the offsets follow. Both passes keep input order within a user.
fn radix_group(users: &[i64], BucketCounts { chunk_len, counts }: BucketCounts) -> Result<(Vec<i64>, Vec<i64>)> {
    let n = users.len();
    let n_buckets = counts[0].len();
    // The (chunk, bucket) counts become each (chunk, bucket) pair's first position.
    let mut cursors = counts;
    let mut bucket_starts = Vec::with_capacity(n_buckets + 1);
    let mut next = 0usize;
    for b in 0..n_buckets {
        bucket_starts.push(next as i64);
        for h in cursors.iter_mut() {
            (h[b], next) = (next, next + h[b]);
        }
    }
    bucket_starts.push(n as i64);

    let mut perm: Vec<i64> = with_capacity_huge("group", n)?;
    let out = SharedMut(perm.as_mut_ptr());
    users.par_chunks(chunk_len).zip(cursors.par_iter_mut()).enumerate().for_each(|(j, (c, pos))| {
        let base = j * chunk_len;
        for (i, &u) in c.iter().enumerate() {
            let (hi, lo) = (u as usize >> LOW_BITS, u as usize & ((1 << LOW_BITS) - 1));
            // SAFETY: the prefix sums give every (chunk, bucket) pair a disjoint range of
            // positions inside perm's capacity (n), so no two threads write one element.
            unsafe { out.write(pos[hi], ((base + i) | (lo << INDEX_BITS)) as i64) };
            pos[hi] += 1;
        }
    });
    // SAFETY: the ranges of all (chunk, bucket) pairs cover 0..n, and every one was written.
    unsafe { perm.set_len(n) };

    let ends: Vec<Vec<i64>> = split_at_offsets(&mut perm, &bucket_starts)
        .into_par_iter()
        .zip(bucket_starts.par_iter())
        .map_init(Vec::new, |scratch, (bucket, &first)| {
            // u32 counters while the bucket's events fit: half the cache of usize ones.
            if bucket.len() <= u32::MAX as usize {
                sort_bucket::<u32>(bucket, first, scratch)
            } else {
                sort_bucket::<usize>(bucket, first, scratch)
            }
        })
        .collect();
    let mut offsets = Vec::with_capacity(ends.iter().map(Vec::len).sum::<usize>() + 1);
    offsets.push(0);
    for e in ends {
        offsets.extend_from_slice(&e);
    }
    Ok((perm, offsets))
}

/// Stable counting sort of one bucket (starting at event `first`) by the packed low id bits;
/// unpacks the event indices and returns the end of each of its users that has events.
/// Counts first (a read), scatters into `scratch` (reused across buckets), copies back.
fn sort_bucket<C: Counter>(bucket: &mut [i64], first: i64, scratch: &mut Vec<i64>) -> Vec<i64> {
    const MASK: i64 = (1 << INDEX_BITS) - 1;
    let mut pos = [C::ZERO; 1 << LOW_BITS];
    for &p in bucket.iter() {
        pos[(p >> INDEX_BITS) as usize].add(1);
    }
    let mut ends = Vec::new();
    let mut next = 0;
    for p in pos.iter_mut().filter(|p| p.get() > 0) {
        next += p.get();
        p.set(next - p.get());
        ends.push(first + next as i64);
    }
    scratch.clear();
    scratch.resize(bucket.len(), 0);
    for &p in bucket.iter() {
        let slot = &mut pos[(p >> INDEX_BITS) as usize];
        scratch[slot.get()] = p & MASK;
        slot.add(1);
    }
    bucket.copy_from_slice(scratch);
    ends
}

/// A counter of `sort_bucket`: u32 or usize.
trait Counter: Copy {
    const ZERO: Self;
    fn get(self) -> usize;
    fn set(&mut self, v: usize);
    fn add(&mut self, v: usize);
}

impl Counter for u32 {
    const ZERO: Self = 0;
    fn get(self) -> usize {
        self as usize
    }
    fn set(&mut self, v: usize) {
        *self = v as u32; // the bucket has at most u32::MAX events (checked by the caller)
    }
    fn add(&mut self, v: usize) {
        *self += v as u32;
    }
}

impl Counter for usize {
    const ZERO: Self = 0;
    fn get(self) -> usize {
        self
    }
    fn set(&mut self, v: usize) {
        *self = v;
    }
    fn add(&mut self, v: usize) {
        *self += v;
    }
}

/// Disjoint mutable slices `data[offsets[k]..offsets[k+1]]` (offsets non-decreasing).
fn split_at_offsets<'a, T>(mut data: &'a mut [T], offsets: &[i64]) -> Vec<&'a mut [T]> {
    let mut parts = Vec::with_capacity(offsets.len().saturating_sub(1));
    for w in offsets.windows(2) {
        let (head, tail) = data.split_at_mut((w[1] - w[0]) as usize);
        parts.push(head);
        data = tail;
    }
    parts
}

/// Sparse ids: a stable parallel sort of event indices by user.
fn sorting_group(users: &[i64]) -> (Vec<i64>, Vec<i64>) {
    let mut perm: Vec<i64> = (0..users.len() as i64).collect();
    perm.par_sort_by_key(|&i| users[i as usize]);
    let mut offsets = vec![0i64];
    for k in 1..perm.len() {
        if users[perm[k] as usize] != users[perm[k - 1] as usize] {
            offsets.push(k as i64);
        }
    }
    offsets.push(perm.len() as i64);
    (perm, offsets)
}

/// Within each user, order events by time; the stable sort keeps ties in input order, and
/// a user already in order costs one read.
fn sort_each_by_time(perm: &mut [i64], offsets: &[i64], ts: &[i64]) {
    split_at_offsets(perm, offsets).par_iter_mut().with_min_len(256).for_each(|s| {
        if s.windows(2).any(|p| ts[p[1] as usize] < ts[p[0] as usize]) {
            s.sort_by_key(|&i| ts[i as usize]);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: stable sort of indices by (user, ts).
    fn reference(users: &[i64], ts: &[i64]) -> (Vec<i64>, Vec<i64>) {
        let mut perm: Vec<i64> = (0..users.len() as i64).collect();
        perm.sort_by_key(|&i| (users[i as usize], ts[i as usize]));
        let mut offsets = vec![0];
        for k in 1..perm.len() {
            if users[perm[k] as usize] != users[perm[k - 1] as usize] {
                offsets.push(k as i64);
            }
        }
        offsets.push(perm.len() as i64);
        if users.is_empty() {
            offsets = vec![0];
        }
        (perm, offsets)
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(group(&[], &[]).unwrap(), (vec![], vec![0]));
        assert_eq!(group(&[7], &[3]).unwrap(), (vec![0], vec![0, 1]));
    }

    #[test]
    fn hand_built() {
        // users 5 and 2 interleaved; user 5 has a tie in time and one late-arriving event.
        let users = [5, 2, 5, 5, 2, 5];
        let ts = [10, 11, 12, 12, 13, 9];
        let (perm, offsets) = group(&users, &ts).unwrap();
        assert_eq!(offsets, vec![0, 2, 6]);
        assert_eq!(perm, vec![1, 4, 5, 0, 2, 3]);
    }

    #[test]
    fn dense_and_sparse_paths_match_reference() {
        let mut x = 12345u64;
        let mut rnd = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for &(n, id_range) in &[(1000usize, 50u64), (1000, 1 << 40), (5000, 3000)] {
            let users: Vec<i64> = (0..n).map(|_| rnd(id_range) as i64).collect();
            let ts: Vec<i64> = (0..n).map(|_| rnd(20) as i64).collect();
            assert_eq!(group(&users, &ts).unwrap(), reference(&users, &ts));
        }
    }

    #[test]
    fn time_ordered_logs_across_buckets_match_reference() {
        // ts non-decreasing in input order (the fast path, no per-user sort), ids spread
        // over many radix buckets, one heavy user, and ties in time.
        let mut x = 99u64;
        let mut rnd = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let n = 40_000;
        let users: Vec<i64> = (0..n).map(|_| if rnd(4) == 0 { 12_345 } else { rnd(60_000) as i64 }).collect();
        let ts: Vec<i64> = (0..n as i64).map(|i| i / 3).collect();
        assert_eq!(group(&users, &ts).unwrap(), reference(&users, &ts));
        // the same log with one event out of order takes the per-user sort
        let mut late = ts.clone();
        late[n / 2] = 0;
        assert_eq!(group(&users, &late).unwrap(), reference(&users, &late));
    }

    #[test]
    fn both_counter_widths_sort_a_bucket_alike() {
        // ids' low bits 3, 1, 3, 0, 1 at events 10..15 of a bucket starting at event 10
        let packed = |i: i64, lo: i64| i | (lo << INDEX_BITS);
        let bucket: Vec<i64> = [(10, 3), (11, 1), (12, 3), (13, 0), (14, 1)].map(|(i, lo)| packed(i, lo)).to_vec();
        let (mut a, mut b) = (bucket.clone(), bucket);
        let ends = sort_bucket::<u32>(&mut a, 10, &mut Vec::new());
        assert_eq!(ends, sort_bucket::<usize>(&mut b, 10, &mut Vec::new()));
        assert_eq!(a, b);
        assert_eq!(a, vec![13, 11, 14, 10, 12]);
        assert_eq!(ends, vec![11, 13, 15]);
    }

    #[test]
    fn bad_input() {
        assert_eq!(group(&[1, -3], &[0, 0]).unwrap_err().msg, "users[1] = -3 is negative");
        assert_eq!(group(&[1], &[0, 0]).unwrap_err().arg, "ts");
    }
}
