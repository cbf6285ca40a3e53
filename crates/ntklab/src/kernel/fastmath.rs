//! Branch-free arcsine / arccosine (f64 and f32 lanes), tanh and exp (f64) that the compiler can vectorize
//! (std's calls into libm cannot be).
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
    Copy
    + Send
    + Sync
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Neg<Output = Self>
    + 'static
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
    /// a b - c^2; with `FMA`, Kahan's compensated difference of products (about one ulp of the result where the
    /// plain form cancels, e.g. a 2x2 covariance determinant of near-colinear inputs at large variance).
    fn det2<const FMA: bool>(a: Self, b: Self, c: Self) -> Self;
    /// a b + c, fused (one rounding) with `FMA`, which only pays where the CPU has the instruction.
    fn mad<const FMA: bool>(a: Self, b: Self, c: Self) -> Self;
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
            fn mad<const FMA: bool>(a: Self, b: Self, c: Self) -> Self {
                if FMA {
                    a.mul_add(b, c)
                } else {
                    a * b + c
                }
            }
            #[inline(always)]
            fn det2<const FMA: bool>(a: Self, b: Self, c: Self) -> Self {
                if FMA {
                    let p = c * c;
                    let e = c.mul_add(c, -p);
                    a.mul_add(b, -p) - e
                } else {
                    a * b - c * c
                }
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

/// Maclaurin coefficients of tanh: tanh(x) = sum_k T[k] x^(2k+1), T[k] = 2^(2n) (2^(2n) - 1) B_(2n) / (2n)!
/// with n = k + 1. Ten terms reach below 3e-17 relative for |x| < 0.2.
const TANH_SERIES: [f64; 10] = [
    1.0,
    -0.3333333333333333,
    0.13333333333333333,
    -0.05396825396825397,
    0.021869488536155203,
    -0.008863235529902197,
    0.003592128036572481,
    -0.0014558343870513183,
    0.000590027440945586,
    -0.00023912911424355248,
];

/// 1/k! for k = 0..=13.
const INV_FACT: [f64; 14] = {
    let mut t = [1.0f64; 14];
    let mut k = 1;
    while k < 14 {
        t[k] = t[k - 1] / k as f64;
        k += 1;
    }
    t
};

/// e^y for 0 <= y <= 700, branch-free: y = k ln 2 + r with |r| <= ln(2)/2 (ln 2 split in two parts), e^r by
/// its Taylor polynomial of degree 13 (remainder < 4e-18), and 2^k put straight into the exponent bits.
#[inline(always)]
pub fn exp_nonneg<const FMA: bool>(y: f64) -> f64 {
    // ln 2 = LN2_HI + LN2_LO: the high part keeps 32 significant bits, so k * LN2_HI is exact for |k| < 2^21.
    const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
    const LN2_LO: f64 = 1.908_214_929_270_587_8e-10;
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52: adding it rounds to an integer in the low bits
    let kk = y * std::f64::consts::LOG2_E + MAGIC;
    let k = kk - MAGIC;
    let r = (y - k * LN2_HI) - k * LN2_LO;
    let mut p = INV_FACT[13];
    let mut i = 13;
    while i > 0 {
        i -= 1;
        p = f64::mad::<FMA>(p, r, INV_FACT[i]);
    }
    let ki = (kk.to_bits() as i64).wrapping_sub(MAGIC.to_bits() as i64);
    p * f64::from_bits(((ki + 1023) as u64) << 52)
}

/// tanh(x) for finite x, branch-free so loops over it vectorize: the Maclaurin series for |x| < 0.2, else
/// sign(x) (1 - 2 / (e^(2|x|) + 1)) (which loses at most a few ulp to cancellation near |x| = 0.2).
#[inline(always)]
pub fn tanh<const FMA: bool>(x: f64) -> f64 {
    let ax = x.abs().min(20.0);
    let z = x * x;
    let mut p = TANH_SERIES[TANH_SERIES.len() - 1];
    let mut i = TANH_SERIES.len() - 1;
    while i > 0 {
        i -= 1;
        p = f64::mad::<FMA>(p, z, TANH_SERIES[i]);
    }
    let small = x * p;
    let e = exp_nonneg::<FMA>(2.0 * ax);
    let big = (1.0 - 2.0 / (e + 1.0)).copysign(x);
    if ax < 0.2 {
        small
    } else {
        big
    }
}

/// log(1 + u) for 0 <= u <= 1, branch-free: 2 atanh(s) with s = u / (2 + u) in [0, 1/3], by the series
/// 2 (s + s^3/3 + s^5/5 + ...) to s^35 (remainder < 1e-18 relative).
#[inline(always)]
pub fn log1p_unit<const FMA: bool>(u: f64) -> f64 {
    const INV_ODD: [f64; 18] = {
        let mut t = [0.0f64; 18];
        let mut k = 0;
        while k < 18 {
            t[k] = 1.0 / (2 * k + 1) as f64;
            k += 1;
        }
        t
    };
    let s = u / (2.0 + u);
    let z = s * s;
    let mut p = INV_ODD[17];
    let mut i = 17;
    while i > 0 {
        i -= 1;
        p = f64::mad::<FMA>(p, z, INV_ODD[i]);
    }
    2.0 * s * p
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
                assert!(
                    (a - b).abs() <= 4.0 * f64::EPSILON * b.abs().max(f64::MIN_POSITIVE),
                    "asin({x}) = {a}, libm {b}"
                );
            }
        }
        assert_eq!(acos::<f64, false>(1.5), 0.0);
        assert_eq!(acos::<f64, false>(-1.5), PI);
    }

    #[test]
    fn tanh_and_exp_within_a_few_ulp() {
        let mut xs: Vec<f64> = (0..=400_000).map(|i| -25.0 + 50.0 * i as f64 / 400_000.0).collect();
        xs.extend([0.2, -0.2, 0.2f64.next_down(), 1e-300, -1e-10, 0.0, 19.99, 20.0, 30.0]);
        for x in xs {
            let want = x.tanh();
            for got in [tanh::<false>(x), tanh::<true>(x)] {
                assert!((got - want).abs() <= 6.0 * f64::EPSILON * want.abs(), "tanh({x}) = {got}, libm {want}");
            }
        }
        for i in 0..=200_000 {
            let y = 700.0 * i as f64 / 200_000.0;
            let want = y.exp();
            for got in [exp_nonneg::<false>(y), exp_nonneg::<true>(y)] {
                assert!((got - want).abs() <= 4.0 * f64::EPSILON * want, "exp({y}) = {got}, libm {want}");
            }
        }
    }

    #[test]
    fn log1p_on_the_unit_interval_within_a_few_ulp() {
        for i in 0..=100_000 {
            let u = i as f64 / 100_000.0;
            let want = u.ln_1p();
            for got in [log1p_unit::<false>(u), log1p_unit::<true>(u)] {
                assert!((got - want).abs() <= 4.0 * f64::EPSILON * want, "log1p({u}) = {got}, libm {want}");
            }
        }
        assert_eq!(log1p_unit::<false>(1e-300), 1e-300);
    }

    #[test]
    fn f32_lanes_within_a_few_f32_ulp() {
        for i in 0..=400_000 {
            let x = -1.0f32 + 2.0 * i as f32 / 400_000.0;
            let (a, b) = (acos::<f32, false>(x), (x as f64).acos());
            assert!(
                (a as f64 - b).abs() <= 3.0 * f32::EPSILON as f64 * b.abs().max(1e-30),
                "acos({x}) = {a}, exact {b}"
            );
            let (a, b) = (asin::<f32, false>(x), (x as f64).asin());
            assert!(
                (a as f64 - b).abs() <= 3.0 * f32::EPSILON as f64 * b.abs().max(1e-30),
                "asin({x}) = {a}, exact {b}"
            );
        }
    }
}
