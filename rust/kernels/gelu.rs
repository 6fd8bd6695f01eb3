//! The feed-forward layer's `dropout(gelu(x))` in one pass each way: forward writes
//! `gelu(x) * mask`, backward `grad * mask * gelu'(x)` with the mask recomputed from its seed, so
//! neither the activation nor the mask is ever stored.

use super::dropout::Mask;
use super::{first_quad, Value, CHUNK};
use crate::error::Result;
use crate::simd::{best_simd, Kernel};
use crate::validate::check_len;
use rayon::prelude::*;

/// `out = gelu(x) * mask`: GELU (the exact one, 0.5 x (1 + erf(x / sqrt 2)), as torch's
/// `nn.GELU()`, here within 3e-7 * (1 + |x|) of it in float32) and dropout in one pass, so neither the
/// activation nor the mask is ever stored. `p = 0` is GELU alone.
pub fn gelu_dropout<T: Value>(x: &[T], out: &mut [T], p: f64, seed: u64) -> Result<()> {
    check_len("out", out.len(), "x", x.len())?;
    run_gelu::<T, Forward>(x, x, out, p, seed)
}

/// The gradient of `gelu_dropout` with the same `p` and `seed`: `grad_x = grad_out * mask *
/// gelu'(x)`, with the mask recomputed from the seed.
pub fn gelu_dropout_backward<T: Value>(x: &[T], grad_out: &[T], grad_x: &mut [T], p: f64, seed: u64) -> Result<()> {
    check_len("grad_out", grad_out.len(), "x", x.len())?;
    check_len("grad_x", grad_x.len(), "x", x.len())?;
    run_gelu::<T, Backward>(x, grad_out, grad_x, p, seed)
}

/// `out[i] = Op(x[i], grad[i], mask scale of i)` over all elements, in parallel tasks.
fn run_gelu<T: Value, Op: GeluOp>(x: &[T], grad: &[T], out: &mut [T], p: f64, seed: u64) -> Result<()> {
    let mask = Mask::new(p, seed)?;
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK)))
        .enumerate()
        .for_each(|(c, (out, (x, grad)))| best_simd(GeluKernel::<T, Op>::new(x, grad, out, first_quad(c), mask)));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// kernels: each runs over one parallel task's elements, compiled for AVX-512, AVX2 and any x86-64

/// Elements whose mask scales are drawn into a stack buffer before the arithmetic runs over
/// them: two simple loops vectorize where one loop doing both does not.
const BLOCK: usize = 1024;

/// The mask scales (0 or keep) of elements `4 * first ..` into `scales` (a multiple of 4 long,
/// or the block's tail).
#[inline(always)]
fn mask_scales(mask: Mask, first: u64, scales: &mut [f32]) {
    let mut quads = scales.chunks_exact_mut(4);
    let full = quads.len() as u64;
    for (j, quad) in (&mut quads).enumerate() {
        quad.copy_from_slice(&mask.quad(first + j as u64));
    }
    let tail = quads.into_remainder();
    tail.copy_from_slice(&mask.quad(first + full)[..tail.len()]);
}

/// GELU as torch's `nn.GELU()` computes it: 0.5 x (1 + erf(x / sqrt 2)).
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Its derivative: Phi(x) + x phi(x), the normal distribution's CDF and density.
#[inline(always)]
fn gelu_slope(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    cdf + x * exp_non_positive(-0.5 * x * x) * FRAC_1_SQRT_2PI
}

/// What a GELU kernel writes for one element, from its input `x`, the incoming gradient `g`
/// (backward only) and its mask scale `s`.
trait GeluOp {
    fn apply(x: f32, g: f32, s: f32) -> f32;
}

/// `gelu(x) * s`
struct Forward;

impl GeluOp for Forward {
    #[inline(always)]
    fn apply(x: f32, _g: f32, s: f32) -> f32 {
        gelu(x) * s
    }
}

/// `g * s * gelu'(x)`
struct Backward;

impl GeluOp for Backward {
    #[inline(always)]
    fn apply(x: f32, g: f32, s: f32) -> f32 {
        g * s * gelu_slope(x)
    }
}

/// One block of `gelu_dropout` (Op = Forward, `grad` unused) or its backward.
struct GeluKernel<'a, T, Op> {
    x: &'a [T],
    grad: &'a [T],
    out: &'a mut [T],
    first: u64,
    mask: Mask,
    op: std::marker::PhantomData<Op>,
}

impl<'a, T, Op> GeluKernel<'a, T, Op> {
    fn new(x: &'a [T], grad: &'a [T], out: &'a mut [T], first: u64, mask: Mask) -> Self {
        GeluKernel { x, grad, out, first, mask, op: std::marker::PhantomData }
    }
}

impl<T: Value, Op: GeluOp> Kernel for GeluKernel<'_, T, Op> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        let Self { x, grad, out, first, mask, .. } = self;
        let mut scales = [0f32; BLOCK];
        let blocks = x.chunks(BLOCK).zip(grad.chunks(BLOCK)).zip(out.chunks_mut(BLOCK));
        for (b, ((xs, gs), out)) in blocks.enumerate() {
            let scales = &mut scales[..xs.len()];
            mask_scales(mask, first + (b * BLOCK / 4) as u64, scales);
            for (((v, &x), &g), &s) in out.iter_mut().zip(xs).zip(gs).zip(scales.iter()) {
                *v = T::from_f32(Op::apply(x.to_f32(), g.to_f32(), s));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// branch-free float32 math that the compiler can vectorize

const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// erf(x) within 5e-7: a rational function of x on [-4, 4] (Eigen's fast float erf), where
/// beyond it erf is +-1 in float32.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    for a in [2.770_681_4e-8, -2.101_024e-6, -5.692_506_4e-5, -7.349_906_3e-4, -2.954_600_1e-3, -1.609_603_3e-2] {
        p = p * x2 + a;
    }
    let mut q = -1.456_607_2e-5_f32;
    for b in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
        q = q * x2 + b;
    }
    x * p / q
}

/// e^v for v <= 0, within 2 ulp (Cephes' expf); below -87 it returns e^-87 (~1.6e-38), which
/// is 0 for every use here.
#[inline(always)]
fn exp_non_positive(v: f32) -> f32 {
    // Adding 1.5 * 2^23 rounds v log2(e) to the integer n and leaves n in the low mantissa
    // bits, from which 2^n is built with integer operations (a float-to-int conversion would
    // keep the loop from vectorizing).
    const ROUND: f32 = 12_582_912.0;
    let v = v.max(-87.0);
    let t = v * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND; // in [-126, 0]
    let two_to_n = f32::from_bits(t.to_bits().wrapping_add(127) << 23);
    let r = (v - n * 0.693_359_4) - n * -2.121_944_4e-4; // v - n ln 2, in two parts
    let mut e = 1.987_569_1e-4_f32;
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        e = e * r + c;
    }
    (e * r * r + r + 1.0) * two_to_n
}

#[cfg(test)]
mod tests {
    use super::super::dropout::dropout_mask;
    use super::*;
    use crate::simd::run_version;

    #[test]
    fn every_compiled_version_gives_the_same_results() {
        let mask = Mask::new(0.2, 9).unwrap();
        let x: Vec<f32> = (0..4099).map(|i| (i as f32 - 2049.0) / 300.0).collect(); // a partial quad at the end
        let n = x.len();
        // (gelu, gelu backward with x as the incoming gradient) from one compiled version
        let outputs = |version: usize| {
            let (mut y, mut g) = (vec![-1f32; n], vec![-1f32; n]);
            let ran = run_version(version, GeluKernel::<_, Forward>::new(&x, &x, &mut y, 5, mask)).is_some()
                && run_version(version, GeluKernel::<_, Backward>::new(&x, &x, &mut g, 5, mask)).is_some();
            ran.then_some((y, g))
        };
        let plain = outputs(0).unwrap();
        assert!(plain.0.contains(&0.0));
        for version in [1, 2] {
            if let Some(fast) = outputs(version) {
                assert_eq!(fast, plain, "version {version}");
            }
        }
    }

    fn gelu64(x: f64) -> f64 {
        0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2))
    }

    /// erf in f64 by its Taylor series (|x| <= 3) or continued fraction, to 1e-12: a reference.
    fn erf64(x: f64) -> f64 {
        if x.abs() > 3.0 {
            // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...))))
            let a = x.abs();
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / f;
            return (1.0 - erfc).copysign(x);
        }
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn gelu_matches_the_exact_one_and_its_gradient() {
        let x: Vec<f32> = (-12_000..=12_000).map(|i| i as f32 / 1000.0).collect();
        let (mut y, mut g) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        gelu_dropout(&x, &mut y, 0.0, 1).unwrap();
        gelu_dropout_backward(&x, &vec![1.0; x.len()], &mut g, 0.0, 1).unwrap();
        for ((&x, &y), &g) in x.iter().zip(&y).zip(&g) {
            let x64 = x as f64;
            assert!((y as f64 - gelu64(x64)).abs() <= 3e-7 * (1.0 + x64.abs()), "gelu({x}) = {y}");
            let h = 1e-4;
            let slope = (gelu64(x64 + h) - gelu64(x64 - h)) / (2.0 * h);
            assert!((g as f64 - slope).abs() < 1e-6, "gelu'({x}) = {g}, want {slope}");
        }
    }

    #[test]
    fn gelu_dropout_uses_the_dropout_mask() {
        let x: Vec<f32> = (0..50_001).map(|i| 0.5 + (i % 97) as f32 / 10.0).collect(); // gelu(x) > 0
        let mut m = vec![0f32; x.len()];
        dropout_mask(&mut m, 0.3, 11).unwrap();
        let (mut y, mut y0, mut g) = (vec![0f32; x.len()], vec![0f32; x.len()], vec![0f32; x.len()]);
        gelu_dropout(&x, &mut y, 0.3, 11).unwrap();
        gelu_dropout(&x, &mut y0, 0.0, 11).unwrap();
        gelu_dropout_backward(&x, &vec![1.0; x.len()], &mut g, 0.3, 11).unwrap();
        for i in 0..x.len() {
            assert_eq!(y[i], y0[i] * m[i]);
            assert_eq!(g[i] == 0.0, m[i] == 0.0);
        }
        // bfloat16: the same elements drop, values within bfloat16's rounding
        let xb: Vec<u16> = x.iter().map(|&v| u16::from_f32(v)).collect();
        let mut yb = vec![0u16; x.len()];
        gelu_dropout(&xb, &mut yb, 0.3, 11).unwrap();
        for i in 0..x.len() {
            let want = y0[i] * m[i];
            assert!((yb[i].to_f32() - want).abs() <= 0.02 * want.abs(), "{} vs {want}", yb[i].to_f32());
        }
        assert!(gelu_dropout(&x, &mut y[1..], 0.3, 11).is_err());
    }
}
