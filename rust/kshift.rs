//! Row indices of the k-shift embedding: each item id picks k rows of one shared table.
//!
//! h = splitmix64(id ^ splitmix64(seed)) is computed once per id (unsigned 64-bit). Schemes:
//! - `Mix` (default): row_c = splitmix64(h ^ K_c) mod P, K_c = splitmix64(0xC0FFEE + c) | 1.
//!   The k rows are independent draws, so two items rarely share their whole row set.
//! - `Rotate`: row_c = rotl64(h, c) mod P, the paper's scheme done on unsigned values.
//! - `RotateSigned`: the paper's released code, which rotated a *signed* 64-bit value with an
//!   arithmetic right shift; for the half of ids whose h has its top bit set, shifts 1..7 fill
//!   with ones and land on a handful of rows. Kept only to measure that effect.

use crate::error::{CoreError, Result};
use crate::validate::check_at_least;
use rayon::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Mix,
    Rotate,
    RotateSigned,
}

impl Scheme {
    pub fn parse(s: &str) -> Result<Scheme> {
        match s {
            "mix" => Ok(Scheme::Mix),
            "rotate" => Ok(Scheme::Rotate),
            "rotate_signed" => Ok(Scheme::RotateSigned),
            _ => Err(CoreError::new("scheme", format!("must be 'mix', 'rotate' or 'rotate_signed', got '{s}'"))),
        }
    }
}

/// The splitmix64 finalizer (Steele, Lea & Flood 2014): a fixed, platform-independent mixer.
#[inline]
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Row `c` of item hash `h` in a table of `rows` rows.
#[inline]
fn row(h: u64, c: u32, rows: u64, scheme: Scheme) -> i64 {
    match scheme {
        Scheme::Mix => (splitmix64(h ^ (splitmix64(0xC0FFEE + c as u64) | 1)) % rows) as i64,
        Scheme::Rotate => (h.rotate_left(c) % rows) as i64,
        Scheme::RotateSigned => {
            let s = h as i64;
            // Not a rotation: `>>` on a signed value copies the sign bit, as the paper's
            // Python code does; that is the defect this scheme exists to measure.
            #[allow(clippy::manual_rotate)]
            let r = if c == 0 { s } else { (s << c) | (s >> (64 - c)) };
            r.rem_euclid(rows as i64)
        }
    }
}

/// Row indices [n, k] (row-major) for each id. Ids must be non-negative.
pub fn kshift_rows(ids: &[i64], k: i64, rows: i64, seed: u64, scheme: Scheme) -> Result<Vec<i64>> {
    check_at_least("k", k, 1)?;
    check_at_least("rows", rows, 1)?;
    if k > 64 {
        return Err(CoreError::new("k", format!("must be at most 64 (one per bit rotation), got {k}")));
    }
    if let Some(i) = ids.iter().position(|&x| x < 0) {
        return Err(CoreError::new("ids", format!("ids[{i}] = {} is negative", ids[i])));
    }
    let salt = splitmix64(seed);
    let k = k as usize;
    let mut out = vec![0i64; ids.len() * k];
    out.par_chunks_mut(k).with_min_len(1024).zip(ids.par_iter()).for_each(|(r, &id)| {
        let h = splitmix64(id as u64 ^ salt);
        for (c, slot) in r.iter_mut().enumerate() {
            *slot = row(h, c as u32, rows as u64, scheme);
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn splitmix_known_values() {
        // First outputs of the reference splitmix64 generator seeded with 0
        // (state advances by the golden gamma; output = finalizer of the new state).
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(0x9E37_79B9_7F4A_7C15), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn rows_in_range_and_deterministic() {
        let ids: Vec<i64> = (0..1000).collect();
        for scheme in [Scheme::Mix, Scheme::Rotate, Scheme::RotateSigned] {
            let a = kshift_rows(&ids, 8, 37, 5, scheme).unwrap();
            assert_eq!(a.len(), 8000);
            assert!(a.iter().all(|&r| (0..37).contains(&r)));
            assert_eq!(a, kshift_rows(&ids, 8, 37, 5, scheme).unwrap());
        }
    }

    /// Share of ids whose sorted row set equals another id's.
    fn shared_share(rows: &[i64], k: usize) -> f64 {
        let mut seen: HashMap<Vec<i64>, usize> = HashMap::new();
        for r in rows.chunks(k) {
            let mut s = r.to_vec();
            s.sort_unstable();
            *seen.entry(s).or_default() += 1;
        }
        let shared: usize = seen.values().filter(|&&c| c > 1).sum();
        shared as f64 / (rows.len() / k) as f64
    }

    #[test]
    fn mix_avoids_identical_row_sets_rotation_does_not() {
        // compression 16: 20,000 ids over 1,250 rows, k = 8
        let ids: Vec<i64> = (1..=20_000).collect();
        let mix = shared_share(&kshift_rows(&ids, 8, 1250, 0, Scheme::Mix).unwrap(), 8);
        let rot = shared_share(&kshift_rows(&ids, 8, 1250, 0, Scheme::Rotate).unwrap(), 8);
        assert_eq!(mix, 0.0);
        assert!(rot > 0.01, "rotate shared share {rot}");
    }

    #[test]
    fn signed_rotation_piles_half_the_ids_onto_few_rows() {
        // Shift 1 of the signed variant maps every id whose hash has its top bit set to one
        // of two rows, so the single most used row holds about a quarter of all ids.
        let ids: Vec<i64> = (1..=20_000).collect();
        let busiest = |scheme| {
            let rows = kshift_rows(&ids, 8, 1250, 0, scheme).unwrap();
            let mut counts = vec![0usize; 1250];
            for r in rows.chunks(8) {
                counts[r[1] as usize] += 1;
            }
            *counts.iter().max().unwrap() as f64 / ids.len() as f64
        };
        assert!(busiest(Scheme::RotateSigned) > 0.2);
        assert!(busiest(Scheme::Rotate) < 0.01);
    }

    #[test]
    fn bad_input() {
        assert_eq!(kshift_rows(&[1], 0, 5, 0, Scheme::Mix).unwrap_err().arg, "k");
        assert_eq!(kshift_rows(&[1], 2, 0, 0, Scheme::Mix).unwrap_err().arg, "rows");
        assert_eq!(kshift_rows(&[1, -2], 2, 5, 0, Scheme::Mix).unwrap_err().msg, "ids[1] = -2 is negative");
        assert_eq!(Scheme::parse("xor").unwrap_err().arg, "scheme");
    }
}
