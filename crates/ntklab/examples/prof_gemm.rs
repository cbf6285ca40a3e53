use faer::{Accum, Mat, Par};
use std::time::Instant;
fn main() {
    for (m, k, n) in
        [(16384usize, 144usize, 16usize), (3584, 144, 16), (16384, 27, 16), (144, 16384, 16), (1000, 512, 512)]
    {
        let a = Mat::<f64>::from_fn(m, k, |i, j| ((i * 7 + j * 3) % 11) as f64);
        let b = Mat::<f64>::from_fn(k, n, |i, j| ((i + j) % 5) as f64);
        let mut c = Mat::<f64>::zeros(m, n);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            faer::linalg::matmul::matmul(c.as_mut(), Accum::Replace, a.as_ref(), b.as_ref(), 1.0, Par::rayon(0));
            best = best.min(t.elapsed().as_secs_f64());
        }
        let gf = 2.0 * (m * k * n) as f64 / best / 1e9;
        // copy cost of the A matrix
        let t = Instant::now();
        let a2 = a.clone();
        let ct = t.elapsed().as_secs_f64();
        println!("{m}x{k}x{n}: {best:.5} s, {gf:.1} GFLOP/s; clone of A {ct:.5} s {}", a2.nrows());
    }
}
