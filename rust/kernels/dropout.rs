//! Inverted-dropout masks: 0 where an element drops, `1 / (1 - p')` elsewhere, from
//! `(seed, index)` alone (the scheme is in `kernels`' documentation).

use super::{first_quad, Value, CHUNK};
use crate::error::{CoreError, Result};
use crate::kshift::splitmix64;
use crate::simd::{best_simd, Kernel};
use rayon::prelude::*;

/// What every kernel needs to know which elements drop: `threshold` (lanes below it drop),
/// the kept elements' scale `keep`, and the hashed seed.
#[derive(Clone, Copy)]
pub(super) struct Mask {
    threshold: u64,
    keep: f32,
    salt: u64,
}

impl Mask {
    /// `keep = 1 / (1 - p')`, where `p'` is `p` rounded to a multiple of 1/65536 (the drop
    /// probability the mask really has, so the kept elements' expectation is exact).
    pub(super) fn new(p: f64, seed: u64) -> Result<Mask> {
        if !(0.0..1.0).contains(&p) {
            return Err(CoreError::new("p", format!("must be in [0, 1), got {p}")));
        }
        let threshold = (p * 65536.0).round() as u64;
        let keep = (1.0 / (1.0 - threshold as f64 / 65536.0)) as f32;
        Ok(Mask { threshold, keep, salt: splitmix64(seed) })
    }

    /// The scale (0 or `keep`) of each element of quad `q` (elements 4q..4q+4).
    #[inline(always)]
    pub(super) fn quad(self, q: u64) -> [f32; 4] {
        let r = splitmix64(q ^ self.salt);
        std::array::from_fn(|lane| if (r >> (16 * lane)) & 0xFFFF < self.threshold { 0.0 } else { self.keep })
    }
}

/// Fill `out` with an inverted-dropout mask: 0 where an element is dropped, `1 / (1 - p')`
/// elsewhere (see `Mask::new`; bfloat16 rounds the kept value to 8 bits, e.g. 1/(1 - 0.1) to
/// 1.1094). Which elements drop does not depend on the element type.
pub fn dropout_mask<T: Value>(out: &mut [T], p: f64, seed: u64) -> Result<()> {
    let mask = Mask::new(p, seed)?;
    let keep = T::from_f32(mask.keep);
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, out)| best_simd(MaskKernel { out, first: first_quad(c), mask, keep }));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// the kernel: it runs over one parallel task's elements, compiled for AVX-512, AVX2 and any x86-64

struct MaskKernel<'a, T> {
    out: &'a mut [T],
    first: u64,
    mask: Mask,
    keep: T,
}

impl<T: Value> Kernel for MaskKernel<'_, T> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        let Self { out, first, mask, keep } = self;
        let fill = |q: u64, dst: &mut [T]| {
            let m = mask.quad(q);
            for (v, s) in dst.iter_mut().zip(m) {
                *v = if s == 0.0 { T::ZERO } else { keep };
            }
        };
        let mut quads = out.chunks_exact_mut(4);
        let full = quads.len() as u64;
        for (j, dst) in (&mut quads).enumerate() {
            fill(first + j as u64, dst);
        }
        fill(first + full, quads.into_remainder());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::run_version;

    #[test]
    fn drop_share_and_scale() {
        let mut m = vec![0f32; 1 << 20];
        dropout_mask(&mut m, 0.2, 7).unwrap();
        let dropped = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
        assert!((dropped - 0.2).abs() < 0.003, "dropped share {dropped}");
        let kept: Vec<f32> = m.iter().copied().filter(|&v| v != 0.0).collect();
        assert!(kept.iter().all(|&v| (v - 1.25).abs() < 1e-4));
        let mean = m.iter().map(|&v| v as f64).sum::<f64>() / m.len() as f64;
        assert!((mean - 1.0).abs() < 0.005, "mean {mean}");
    }

    #[test]
    fn deterministic_and_seeded() {
        let (mut a, mut b, mut c) = (vec![0f32; 100_003], vec![0f32; 100_003], vec![0f32; 100_003]);
        dropout_mask(&mut a, 0.5, 1).unwrap();
        dropout_mask(&mut b, 0.5, 1).unwrap();
        dropout_mask(&mut c, 0.5, 2).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // a prefix of a longer mask is the shorter mask: the draw depends only on the index
        let mut short = vec![0f32; 70_001];
        dropout_mask(&mut short, 0.5, 1).unwrap();
        assert_eq!(&a[..70_001], &short[..]);
    }

    #[test]
    fn every_compiled_version_gives_the_same_mask() {
        let mask = Mask::new(0.2, 9).unwrap();
        let n = 4099; // a partial quad at the end
        let outputs = |version: usize| {
            let mut m = vec![-1f32; n];
            run_version(version, MaskKernel { out: &mut m, first: 5, mask, keep: 1.25f32 }).map(|()| m)
        };
        let plain = outputs(0).unwrap();
        assert!(plain.contains(&0.0) && plain.contains(&1.25));
        for version in [1, 2] {
            if let Some(fast) = outputs(version) {
                assert_eq!(fast, plain, "version {version}");
            }
        }
    }

    #[test]
    fn bfloat16_mask_drops_the_same_elements() {
        let mut f = vec![0f32; 10_007];
        let mut b = vec![0u16; 10_007];
        dropout_mask(&mut f, 0.1, 4).unwrap();
        dropout_mask(&mut b, 0.1, 4).unwrap();
        let keep_bits = 0x3F8E; // bf16 nearest to 1/(1 - 6554/65536) = 1.11113: 1.109375
        for (x, y) in f.iter().zip(&b) {
            assert_eq!(*y, if *x == 0.0 { 0 } else { keep_bits });
        }
        assert_eq!(u16::from_f32(1.25), 0x3FA0); // exact values stay exact
        assert_eq!(u16::from_f32(1.0 + 1.0 / 256.0), 0x3F80); // a tie rounds to even
        assert_eq!(u16::from_f32(1.0 + 3.0 / 256.0), 0x3F82);
    }

    #[test]
    fn edges() {
        let mut m = vec![1f32; 9];
        dropout_mask(&mut m, 0.0, 3).unwrap();
        assert!(m.iter().all(|&v| v == 1.0));
        let mut empty: Vec<f32> = vec![];
        dropout_mask(&mut empty, 0.3, 3).unwrap();
        assert!(dropout_mask(&mut m, 1.0, 3).is_err());
        assert!(dropout_mask(&mut m, -0.1, 3).is_err());
        assert!(dropout_mask(&mut m, f64::NAN, 3).is_err());
    }
}
