//! Branch-free arcsine / arccosine that the compiler can vectorize (std's call into libm cannot be).
//!
//! asin(s) for s in [0, 1/2] is its Maclaurin series sum_k c_k s^(2k+1), c_k = (2k)! / (4^k (k!)^2 (2k+1)),
//! truncated after 28 terms: the tail is below c_28 (1/4)^28 / (1 - 1/4) < 3e-20, far under one ulp.
//! Larger arguments use asin(a) = pi/2 - 2 asin(sqrt((1 - a)/2)), whose inner argument is <= 1/2 and where
//! 1 - a is exact (Sterbenz), so accuracy holds right up to |x| = 1 (where acos is ill-conditioned).

use std::f64::consts::{FRAC_PI_2, PI};

const TERMS: usize = 28;

/// c_1..c_28 of the arcsine series, computed exactly enough in f64 at compile time.
const fn coefficients() -> [f64; TERMS] {
    let mut c = [0.0; TERMS];
    // ratio c_k / c_{k-1} without the (2k+1) factor: (2k-1)/(2k); track a_k = (2k)!/(4^k (k!)^2).
    let mut a = 1.0f64;
    let mut k = 1;
    while k <= TERMS {
        a = a * (2 * k - 1) as f64 / (2 * k) as f64;
        c[k - 1] = a / (2 * k + 1) as f64;
        k += 1;
    }
    c
}

const C: [f64; TERMS] = coefficients();

/// asin(s) for 0 <= s <= 1/2 (Horner in z = s^2).
#[inline(always)]
fn asin_core(s: f64) -> f64 {
    let z = s * s;
    let mut p = C[TERMS - 1];
    let mut i = TERMS - 1;
    while i > 0 {
        i -= 1;
        p = p * z + C[i];
    }
    s + (s * z) * p
}

/// (asin(|x|) restricted to the small branch or half-angle argument, and whether |x| > 1/2).
#[inline(always)]
fn core(x: f64) -> (f64, bool) {
    let a = x.abs().min(1.0);
    let big = a > 0.5;
    let s = if big { ((1.0 - a) * 0.5).sqrt() } else { a };
    (asin_core(s), big)
}

/// arccos(x) for x in [-1, 1] (inputs outside are clamped), to within a few ulp.
#[inline(always)]
pub fn acos(x: f64) -> f64 {
    let (p, big) = core(x);
    let r = if big { 2.0 * p } else { FRAC_PI_2 - p };
    if x < 0.0 {
        PI - r
    } else {
        r
    }
}

/// arcsin(x) for x in [-1, 1] (inputs outside are clamped), to within a few ulp.
#[inline(always)]
pub fn asin(x: f64) -> f64 {
    let (p, big) = core(x);
    let r = if big { FRAC_PI_2 - 2.0 * p } else { p };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let (a, b) = (acos(x), x.acos());
            assert!((a - b).abs() <= 4.0 * f64::EPSILON * b.abs().max(1e-300), "acos({x}) = {a}, libm {b}");
            let (a, b) = (asin(x), x.asin());
            assert!((a - b).abs() <= 4.0 * f64::EPSILON * b.abs().max(f64::MIN_POSITIVE), "asin({x}) = {a}, libm {b}");
        }
        assert_eq!(acos(1.5), 0.0);
        assert_eq!(acos(-1.5), PI);
    }
}
