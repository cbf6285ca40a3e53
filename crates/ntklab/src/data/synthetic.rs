//! Built-in synthetic data sets, generated from a seed (deterministic on any machine).

use faer::Mat;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Seeded RNG used throughout ntklab: xoshiro256++ from a u64 seed.
pub fn rng(seed: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed)
}

/// A child seed for task `index` of a run seeded with `seed` (SplitMix64 finalizer of the pair), so
/// parallel or per-layer streams are independent of scheduling and thread count.
pub fn derive_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// N points uniformly on the unit sphere in R^d, scaled to norm sqrt(d) (so x.x/d = 1).
pub fn sphere(n: usize, d: usize, seed: u64) -> Mat<f64> {
    let mut r = rng(seed);
    let mut m = Mat::<f64>::zeros(n, d);
    for i in 0..n {
        let v: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut r)).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
        for j in 0..d {
            m[(i, j)] = v[j] / norm * (d as f64).sqrt();
        }
    }
    m
}

/// N x d standard Gaussian matrix.
pub fn gaussian(n: usize, d: usize, seed: u64) -> Mat<f64> {
    let mut r = rng(seed);
    let mut m = Mat::<f64>::zeros(n, d);
    for i in 0..n {
        for j in 0..d {
            m[(i, j)] = StandardNormal.sample(&mut r);
        }
    }
    m
}

/// N points on the unit circle at angles 2 pi i / N, embedded in R^2 (x.x/d = 1/2): the classic demo set
/// for kernels as a function of angle.
pub fn circle(n: usize) -> Mat<f64> {
    Mat::from_fn(n, 2, |i, j| {
        let t = 2.0 * std::f64::consts::PI * i as f64 / n as f64;
        if j == 0 {
            t.cos()
        } else {
            t.sin()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_normalised() {
        let a = sphere(5, 7, 3);
        assert_eq!(a, sphere(5, 7, 3));
        assert_ne!(a, sphere(5, 7, 4));
        for i in 0..5 {
            let q: f64 = (0..7).map(|j| a[(i, j)] * a[(i, j)]).sum::<f64>() / 7.0;
            assert!((q - 1.0).abs() < 1e-12);
        }
    }
}
