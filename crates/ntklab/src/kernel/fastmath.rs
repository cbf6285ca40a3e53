//! Branch-free arcsine / arccosine that the compiler can vectorize (std's call into libm cannot be), in f64
//! and in f32 lanes.
//!
//! asin(s) = s + s z P(z) with z = s^2 for s in [0, 1/2]. P is the Maclaurin series of the arcsine,
//! sum_k c_(k+1) z^k with c_k = (2k)! / (4^k (k!)^2 (2k+1)), economized on z in [0, 1/4] by Chebyshev
//! polynomials in exact rational arithmetic (`tools/asin_coefficients.py` prints the coefficients): degree 13
//! keeps |dP| < 1e-17 (f64), degree 5 keeps |dP| < 4e-9 (f32); since z <= 1/4 the relative error of asin from
//! P is at most a quarter of that. Larger arguments use asin(a) = pi/2 - 2 asin(sqrt((1 - a)/2)), whose inner
//! argument is <= 1/2 and where 1 - a is exact (Sterbenz), so accuracy holds right up to |x| = 1 (where acos
//! is ill-conditioned).

use std::ops::{Add, Mul, Neg, Sub};

/// Economized P(z) for f64, lowest degree first.
const P64: [f64; 14] = [
    0.16666666666666666,
    0.07500000000000125,
    0.04464285714253574,
    0.030381944476963723,
    0.02237215737767329,
    0.01735281834070849,
    0.013963748435199949,
    0.011566830427132645,
    0.009618864779963437,
    0.009335970060991405,
    0.002983881103737454,
    0.019700711805261683,
    -0.019445636425042555,
    0.02973784564399689,
];

/// Economized P(z) for f32, lowest degree first.
const P32: [f32; 6] = [0.16666666, 0.07500099, 0.04459803, 0.031116156, 0.01707786, 0.03380575];

/// The float operations the kernel's per-entry recursion needs, for f64 and f32 lanes.
pub trait Real:
    Copy + Send + Sync + PartialOrd + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Neg<Output = Self> + 'static
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// pi.
    const PI: Self;
    /// pi / 2.
    const FRAC_PI_2: Self;
    /// Smallest positive normal value.
    const MIN_POSITIVE: Self;
    /// Round from f64.
    fn of(x: f64) -> Self;
    /// Widen to f64.
    fn wide(self) -> f64;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Division.
    fn div(self, o: Self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Minimum (the compiler's vector min).
    fn min(self, o: Self) -> Self;
    /// Maximum.
    fn max(self, o: Self) -> Self;
    /// asin(s) for 0 <= s <= 1/2; `FMA` fuses the Horner steps (only worth it where the CPU has FMA:
    /// elsewhere `mul_add` is a slow library call).
    fn asin_core<const FMA: bool>(s: Self) -> Self;
}

macro_rules! impl_real {
    ($t:ident, $p:ident) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const PI: Self = std::$t::consts::PI;
            const FRAC_PI_2: Self = std::$t::consts::FRAC_PI_2;
            const MIN_POSITIVE: Self = $t::MIN_POSITIVE;
            #[inline(always)]
            fn of(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn wide(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                $t::sqrt(self)
            }
            #[inline(always)]
            fn div(self, o: Self) -> Self {
                self / o
            }
            #[inline(always)]
            fn abs(self) -> Self {
                $t::abs(self)
            }
            #[inline(always)]
            fn min(self, o: Self) -> Self {
                if self < o {
                    self
                } else {
                    o
                }
            }
            #[inline(always)]
            fn max(self, o: Self) -> Self {
                if self > o {
                    self
                } else {
                    o
                }
            }
            #[inline(always)]
            fn asin_core<const FMA: bool>(s: Self) -> Self {
                let z = s * s;
                let mut p = $p[$p.len() - 1];
                let mut i = $p.len() - 1;
                while i > 0 {
                    i -= 1;
                    p = if FMA { p.mul_add(z, $p[i]) } else { p * z + $p[i] };
                }
                s + (s * z) * p
            }
        }
    };
}
impl_real!(f64, P64);
impl_real!(f32, P32);

/// (asin(|x|) restricted to the small branch or half-angle argument, and whether |x| > 1/2).
#[inline(always)]
fn core<R: Real, const FMA: bool>(x: R) -> (R, bool) {
    let a = x.abs().min(R::ONE);
    let half = R::of(0.5);
    let big = a > half;
    let s = if big { ((R::ONE - a) * half).sqrt() } else { a };
    (R::asin_core::<FMA>(s), big)
}

/// arccos(x) for x in [-1, 1] (inputs outside are clamped), to within a few ulp.
#[inline(always)]
pub fn acos<R: Real, const FMA: bool>(x: R) -> R {
    let (p, big) = core::<R, FMA>(x);
    let r = if big { p + p } else { R::FRAC_PI_2 - p };
    if x < R::ZERO {
        R::PI - r
    } else {
        r
    }
}

/// arcsin(x) for x in [-1, 1] (inputs outside are clamped), to within a few ulp.
#[inline(always)]
pub fn asin<R: Real, const FMA: bool>(x: R) -> R {
    let (p, big) = core::<R, FMA>(x);
    let r = if big { R::FRAC_PI_2 - (p + p) } else { p };
    if x < R::ZERO {
        -r
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    #[test]
    fn matches_libm_to_a_few_ulp() {
        // Dense grid plus the neighbourhoods of 0, +-1/2 and +-1 where the branches meet or acos is steep.
        let mut xs: Vec<f64> = (0..=200_000).map(|i| -1.0 + 2.0 * i as f64 / 200_000.0).collect();
        for &c in &[0.0f64, 0.5, -0.5, 1.0, -1.0] {
            let mut v = c;
            for _ in 0..40 {
                xs.push(v);
                v = f64::from_bits(v.to_bits().wrapping_sub(1));
            }
            let mut v = c;
            for _ in 0..40 {
                xs.push(v);
                v = f64::from_bits(v.to_bits().wrapping_add(1));
            }
        }
        for x in xs.into_iter().filter(|x| x.abs() <= 1.0) {
            let b = x.acos();
            for a in [acos::<f64, false>(x), acos::<f64, true>(x)] {
                assert!((a - b).abs() <= 4.0 * f64::EPSILON * b.abs().max(1e-300), "acos({x}) = {a}, libm {b}");
            }
            let b = x.asin();
            for a in [asin::<f64, false>(x), asin::<f64, true>(x)] {
                assert!((a - b).abs() <= 4.0 * f64::EPSILON * b.abs().max(f64::MIN_POSITIVE), "asin({x}) = {a}, libm {b}");
            }
        }
        assert_eq!(acos::<f64, false>(1.5), 0.0);
        assert_eq!(acos::<f64, false>(-1.5), PI);
    }

    #[test]
    fn f32_lanes_within_a_few_f32_ulp() {
        for i in 0..=400_000 {
            let x = -1.0f32 + 2.0 * i as f32 / 400_000.0;
            let (a, b) = (acos::<f32, false>(x), (x as f64).acos());
            assert!((a as f64 - b).abs() <= 3.0 * f32::EPSILON as f64 * b.abs().max(1e-30), "acos({x}) = {a}, exact {b}");
            let (a, b) = (asin::<f32, false>(x), (x as f64).asin());
            assert!((a as f64 - b).abs() <= 3.0 * f32::EPSILON as f64 * b.abs().max(1e-30), "asin({x}) = {a}, exact {b}");
        }
    }
}
