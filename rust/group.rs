//! `group`: the stable (user, time) order of a raw log and the CSR offsets of its users.
//!
//! Raw logs arrive roughly in time order across users. We bucket events by user with a
//! counting sort (stable, so ties in time keep input order), then fix up any user whose
//! events were not already in time order with a stable sort of that user's slice. When the
//! user ids are too sparse for a counting table we fall back to a stable comparison sort.

use crate::error::{CoreError, Result};
use crate::validate::check_len;
use rayon::prelude::*;

/// Returns `(perm, offsets)`: `users[perm]`, `ts[perm]` are sorted by (user, ts) with ties in
/// input order, and user k (the k-th smallest distinct id) owns `perm[offsets[k]..offsets[k+1]]`.
pub fn group(users: &[i64], ts: &[i64]) -> Result<(Vec<i64>, Vec<i64>)> {
    check_len("ts", ts.len(), "users", users.len())?;
    let max_user = max_non_negative(users)?;
    let n = users.len();
    if n == 0 {
        return Ok((Vec::new(), vec![0]));
    }
    // A counting table of max_user+1 entries per thread stays well under the size of the
    // output when ids are dense enough; otherwise sort.
    let table = max_user as usize + 1;
    let (mut perm, offsets) = if table <= (n / 16).max(1 << 16) {
        counting_group(users, table)
    } else {
        sorting_group(users)
    };
    sort_each_by_time(&mut perm, &offsets, ts);
    Ok((perm, offsets))
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

/// Stable counting sort by user id with one count table per chunk, so both passes run in
/// parallel and each chunk scatters its events to positions reserved for it.
fn counting_group(users: &[i64], table: usize) -> (Vec<i64>, Vec<i64>) {
    let n = users.len();
    let n_chunks = rayon::current_num_threads().clamp(1, 16).min(n);
    let chunk_len = n.div_ceil(n_chunks);
    let mut counts: Vec<Vec<i64>> = users
        .par_chunks(chunk_len)
        .map(|c| {
            let mut h = vec![0i64; table];
            for &u in c {
                h[u as usize] += 1;
            }
            h
        })
        .collect();
    // Exclusive prefix over (user, chunk): chunk j of user u starts after all events of
    // smaller users and after chunks < j of the same user.
    let mut offsets = Vec::with_capacity(table + 1);
    offsets.push(0i64);
    let mut next = 0i64;
    for u in 0..table {
        let start = next;
        for h in counts.iter_mut() {
            let c = h[u];
            h[u] = next;
            next += c;
        }
        if next > start {
            offsets.push(next); // users with no events are not in the output
        }
    }
    let mut perm = vec![0i64; n];
    let out = SharedSlice(perm.as_mut_ptr());
    users
        .par_chunks(chunk_len)
        .zip(counts.par_iter_mut())
        .enumerate()
        .for_each(|(j, (c, pos))| {
            let base = (j * chunk_len) as i64;
            for (i, &u) in c.iter().enumerate() {
                let p = &mut pos[u as usize];
                // SAFETY: the prefix sums give every (chunk, user) pair a disjoint range of
                // positions inside perm, so no two threads write the same element.
                unsafe { out.write(*p as usize, base + i as i64) };
                *p += 1;
            }
        });
    (perm, offsets)
}

/// Raw pointer that may be shared across threads which write disjoint elements.
#[derive(Clone, Copy)]
struct SharedSlice(*mut i64);
unsafe impl Send for SharedSlice {}
unsafe impl Sync for SharedSlice {}
impl SharedSlice {
    unsafe fn write(self, i: usize, v: i64) {
        *self.0.add(i) = v;
    }
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
/// the common case (already in order) costs one read.
fn sort_each_by_time(perm: &mut [i64], offsets: &[i64], ts: &[i64]) {
    let mut slices: Vec<&mut [i64]> = Vec::with_capacity(offsets.len() - 1);
    let mut rest = perm;
    for w in offsets.windows(2) {
        let (head, tail) = rest.split_at_mut((w[1] - w[0]) as usize);
        slices.push(head);
        rest = tail;
    }
    slices.par_iter_mut().with_min_len(256).for_each(|s| {
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
    fn bad_input() {
        assert_eq!(group(&[1, -3], &[0, 0]).unwrap_err().msg, "users[1] = -3 is negative");
        assert_eq!(group(&[1], &[0, 0]).unwrap_err().arg, "ts");
    }
}
