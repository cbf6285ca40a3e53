//! Vector kernels for Krylov methods on long vectors (up to ~1e6 entries), parallel over fixed row chunks so that
//! every reduction is summed in the same order whatever the number of threads (bitwise-deterministic results).

use rayon::prelude::*;

/// Rows per parallel task; fixed so that chunk boundaries, hence rounding, never depend on the thread count.
const CHUNK: usize = 8192;

/// Below this length everything runs sequentially (rayon overhead dominates).
const PAR_MIN: usize = 4 * CHUNK;

fn dot_seq(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// a . b, summed per fixed chunk, then over chunks in order.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    if a.len() < PAR_MIN {
        return dot_seq(a, b);
    }
    let parts: Vec<f64> = a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)).map(|(x, y)| dot_seq(x, y)).collect();
    parts.iter().sum()
}

/// ||a||_2.
pub(crate) fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// a *= s.
pub(crate) fn scale(a: &mut [f64], s: f64) {
    if a.len() < PAR_MIN {
        a.iter_mut().for_each(|x| *x *= s);
    } else {
        a.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|x| *x *= s));
    }
}

/// y += s x.
pub(crate) fn axpy(y: &mut [f64], s: f64, x: &[f64]) {
    let f = |(yc, xc): (&mut [f64], &[f64])| yc.iter_mut().zip(xc).for_each(|(y, x)| *y += s * x);
    if y.len() < PAR_MIN {
        f((y, x));
    } else {
        y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(f);
    }
}

/// One classical Gram-Schmidt pass: w <- w - V (V^T w), with V the `ncols` columns of length n stored
/// column-major in `basis`. Returns the coefficients V^T w (length `ncols`).
pub(crate) fn project_out(basis: &[f64], n: usize, ncols: usize, w: &mut [f64]) -> Vec<f64> {
    debug_assert!(basis.len() >= n * ncols && w.len() == n);
    if ncols == 0 {
        return Vec::new();
    }
    let nchunks = n.div_ceil(CHUNK);
    // h = V^T w: per-chunk partial sums (each in a fixed order), then summed over chunks in order.
    let partial = |c: usize| -> Vec<f64> {
        let (r0, r1) = (c * CHUNK, ((c + 1) * CHUNK).min(n));
        (0..ncols).map(|j| dot_seq(&basis[j * n + r0..j * n + r1], &w[r0..r1])).collect()
    };
    let parts: Vec<Vec<f64>> = if n < PAR_MIN {
        (0..nchunks).map(partial).collect()
    } else {
        (0..nchunks).into_par_iter().map(partial).collect()
    };
    let mut h = vec![0.0; ncols];
    for p in &parts {
        for (hj, pj) in h.iter_mut().zip(p) {
            *hj += pj;
        }
    }
    // w -= V h, row chunk by row chunk (no reduction across chunks).
    let update = |(c, wc): (usize, &mut [f64])| {
        let r0 = c * CHUNK;
        for (j, hj) in h.iter().enumerate() {
            let col = &basis[j * n + r0..j * n + r0 + wc.len()];
            wc.iter_mut().zip(col).for_each(|(w, v)| *w -= hj * v);
        }
    };
    if n < PAR_MIN {
        w.chunks_mut(CHUNK).enumerate().for_each(update);
    } else {
        w.par_chunks_mut(CHUNK).enumerate().for_each(update);
    }
    h
}

/// y = V s for the `s.len()` columns of length n stored column-major in `basis`.
pub(crate) fn combine(basis: &[f64], n: usize, s: &[f64], y: &mut [f64]) {
    let f = |(c, yc): (usize, &mut [f64])| {
        let r0 = c * CHUNK;
        yc.iter_mut().for_each(|x| *x = 0.0);
        for (j, sj) in s.iter().enumerate() {
            let col = &basis[j * n + r0..j * n + r0 + yc.len()];
            yc.iter_mut().zip(col).for_each(|(y, v)| *y += sj * v);
        }
    };
    if n < PAR_MIN {
        y.chunks_mut(CHUNK).enumerate().for_each(f);
    } else {
        y.par_chunks_mut(CHUNK).enumerate().for_each(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_reductions_match_naive() {
        // Long enough to take the parallel path; compare with a plain sequential sum (tolerance: rounding of a
        // 1e5-term sum of O(1) terms, ~ sqrt(n) eps relative).
        let n = 5 * PAR_MIN + 17;
        let a: Vec<f64> = (0..n).map(|i| ((i * 7919) % 1000) as f64 / 1000.0 - 0.5).collect();
        let b: Vec<f64> = (0..n).map(|i| ((i * 104729) % 997) as f64 / 997.0).collect();
        let naive: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-10 * naive.abs().max(1.0));

        let mut basis = a.clone();
        basis.extend_from_slice(&b);
        let mut w: Vec<f64> = (0..n).map(|i| (i % 13) as f64).collect();
        let w0 = w.clone();
        let h = project_out(&basis, n, 2, &mut w);
        assert!((h[0] - dot_seq(&a, &w0)).abs() < 1e-9 * h[0].abs().max(1.0));
        assert!((h[1] - dot_seq(&b, &w0)).abs() < 1e-9 * h[1].abs().max(1.0));
        for i in [0, 1, n / 2, n - 1] {
            let expect = w0[i] - h[0] * a[i] - h[1] * b[i];
            assert!((w[i] - expect).abs() < 1e-9 * (1.0 + expect.abs()));
        }
        let mut y = vec![0.0; n];
        combine(&basis, n, &[2.0, -1.0], &mut y);
        assert_eq!(y[n - 1], 2.0 * a[n - 1] - b[n - 1]);
    }
}
