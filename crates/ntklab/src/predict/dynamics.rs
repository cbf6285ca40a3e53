//! Closed-form training dynamics of an infinitely wide (or linearized) network under MSE loss.
//!
//! Convention (ARCHITECTURE.md, neural-tangents): loss L = 1/(2N) sum_{i<=N} |f(x_i) - y_i|^2 over N training points,
//! parameters follow gradient flow dtheta/dt = -eta grad L (time t counts "steps of size eta", so Flow(t) ~ GD after
//! t steps for small eta), or gradient descent theta <- theta - eta grad L. In the NTK regime the outputs obey
//!   d f_train/dt = -(eta/N) Theta (f_train - y),        d f_test/dt = -(eta/N) Theta_*x (f_train - y),
//! with Theta the N x N train NTK and Theta_*x the test-train NTK (Jacot et al. 2018; Lee et al. 2019, eqs. 9-10).
//! Solutions, with r0 = y - f0_train and c = eta t / N:
//!   f_t(train) = y - exp(-c Theta) r0,   f_t(test) = f0_test + Theta_*x Theta^{-1} (I - exp(-c Theta)) r0;
//! for s GD steps exp(-c Theta) becomes (I - (eta/N) Theta)^s. Matrix functions are applied through Theta = U
//! diag(lambda) U^T with g(lambda) = (1 - exp(-c lambda)) / lambda evaluated as -expm1(-c lambda) / lambda
//! (-> c as lambda -> 0, no cancellation). Eigenvalues below N eps lambda_max are rounding noise of a PSD kernel and
//! are treated as exact zeros: those directions are neither fitted nor contribute to test outputs, so t = infinity
//! gives the minimum-norm (pseudo-inverse) interpolant, Theta_*x Theta^+ r0.

use faer::{Mat, MatRef};

use super::krr::check_finite;
use crate::spectrum::sym_eigen;
use crate::{Error, Result};

/// When to evaluate the linearized training dynamics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Time {
    /// Gradient flow dtheta/dt = -eta grad L run for time t >= 0; `f64::INFINITY` gives the converged (kernel
    /// regression) limit.
    Flow(f64),
    /// s steps of full-batch gradient descent theta <- theta - eta grad L.
    Steps(u64),
}

/// Eigenvalues of Theta below -NEG_REL * max|lambda| mean the input is not an NTK (not PSD): error, not clamp.
const NEG_REL: f64 = 1e-6;

/// The train NTK's eigendecomposition with a learning rate, ready to evaluate outputs at any time.
#[derive(Debug, Clone)]
pub struct LinearizedDynamics {
    eta: f64,
    /// Eigenvalues of Theta, ascending, clamped to >= 0, those <= N eps lambda_max set to exactly 0.
    lambda: Vec<f64>,
    /// Eigenvectors of Theta, N x N.
    u: Mat<f64>,
}

impl LinearizedDynamics {
    /// Eigen-decomposes the train NTK Theta (N x N, symmetric PSD) for learning rate eta > 0.
    ///
    /// Errors: Theta not square/finite/symmetric, an eigenvalue below -1e-6 max|lambda| (not PSD), eta <= 0.
    pub fn new(theta_train: MatRef<'_, f64>, eta: f64) -> Result<Self> {
        if !(eta > 0.0 && eta.is_finite()) {
            return Err(Error::InvalidInput(format!("learning rate must be finite and > 0, got {eta}")));
        }
        let n = theta_train.nrows();
        if n == 0 {
            return Err(Error::Shape("train NTK is empty (no training points)".into()));
        }
        let e = sym_eigen(theta_train)?;
        let (lo, hi) = (e.values[0], e.values[n - 1]);
        let scale = lo.abs().max(hi.abs());
        if lo < -NEG_REL * scale {
            return Err(Error::InvalidInput(format!(
                "train NTK has eigenvalue {lo:.3e} < 0 (largest {hi:.3e}); an NTK is positive semi-definite"
            )));
        }
        let cutoff = n as f64 * f64::EPSILON * hi.max(0.0);
        let lambda = e.values.iter().map(|&l| if l <= cutoff { 0.0 } else { l }).collect();
        Ok(LinearizedDynamics { eta, lambda, u: e.vectors })
    }

    /// Number of training points N.
    pub fn n_train(&self) -> usize {
        self.lambda.len()
    }

    /// Learning rate eta.
    pub fn lr(&self) -> f64 {
        self.eta
    }

    /// Eigenvalues of Theta used (ascending; rounding-level ones set to 0).
    pub fn eigenvalues(&self) -> &[f64] {
        &self.lambda
    }

    /// GD stability edge eta_crit = 2N / lambda_max(Theta): GD converges for eta < eta_crit (infinite if Theta = 0).
    pub fn critical_lr(&self) -> f64 {
        2.0 * self.n_train() as f64 / self.lambda[self.n_train() - 1]
    }

    /// Training-set outputs f_t(train) = y - D_t (y - f0), D_t = exp(-eta t Theta / N) or (I - eta Theta / N)^s.
    /// y, f0_train: N x m (f0 = 0 if None); returns N x m.
    pub fn train(&self, y: MatRef<'_, f64>, f0_train: Option<MatRef<'_, f64>>, time: Time) -> Result<Mat<f64>> {
        let r0 = self.residual0(y, f0_train)?;
        let (h, _) = self.mode_factors(time)?;
        let fitted = self.apply_fn(&h, r0.as_ref()); // (I - D_t) r0
        Ok(Mat::from_fn(y.nrows(), y.ncols(), |i, j| f0_at(f0_train, i, j) + fitted[(i, j)]))
    }

    /// Test outputs f_t(test) = f0_test + Theta_*x Theta^{-1} (I - D_t) (y - f0_train).
    /// theta_test_train: T x N, y and f0_train: N x m, f0_test: T x m (zeros if None); returns T x m.
    pub fn test(
        &self,
        theta_test_train: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        f0_train: Option<MatRef<'_, f64>>,
        f0_test: Option<MatRef<'_, f64>>,
        time: Time,
    ) -> Result<Mat<f64>> {
        let n = self.n_train();
        let (t, m) = (theta_test_train.nrows(), y.ncols());
        if theta_test_train.ncols() != n {
            return Err(Error::Shape(format!(
                "test-train NTK is {t} x {} but there are {n} training points",
                theta_test_train.ncols()
            )));
        }
        check_finite(theta_test_train, "test-train NTK")?;
        if let Some(f) = f0_test {
            if f.nrows() != t || f.ncols() != m {
                return Err(Error::Shape(format!("f0_test is {} x {} but expected {t} x {m}", f.nrows(), f.ncols())));
            }
            check_finite(f, "f0_test")?;
        }
        let r0 = self.residual0(y, f0_train)?;
        let (_, g) = self.mode_factors(time)?;
        let w = self.apply_fn(&g, r0.as_ref()); // Theta^{-1} (I - D_t) r0, N x m
        let out = theta_test_train * &w;
        Ok(Mat::from_fn(t, m, |i, j| f0_at(f0_test, i, j) + out[(i, j)]))
    }

    /// r0 = y - f0_train after shape and finiteness checks.
    fn residual0(&self, y: MatRef<'_, f64>, f0_train: Option<MatRef<'_, f64>>) -> Result<Mat<f64>> {
        let n = self.n_train();
        if y.nrows() != n {
            return Err(Error::Shape(format!("targets have {} rows but there are {n} training points", y.nrows())));
        }
        check_finite(y, "targets")?;
        if let Some(f) = f0_train {
            if f.nrows() != n || f.ncols() != y.ncols() {
                return Err(Error::Shape(format!(
                    "f0_train is {} x {} but the targets are {n} x {}",
                    f.nrows(),
                    f.ncols(),
                    y.ncols()
                )));
            }
            check_finite(f, "f0_train")?;
        }
        Ok(Mat::from_fn(n, y.ncols(), |i, j| y[(i, j)] - f0_at(f0_train, i, j)))
    }

    /// U diag(d) U^T r.
    fn apply_fn(&self, d: &[f64], r: MatRef<'_, f64>) -> Mat<f64> {
        let mut z = self.u.transpose() * r;
        for (i, di) in d.iter().enumerate() {
            for j in 0..z.ncols() {
                z[(i, j)] *= di;
            }
        }
        &self.u * &z
    }

    /// Per-eigenvalue factors (h, g): h = 1 - decay(lambda), g = h / lambda (0 for zero modes).
    fn mode_factors(&self, time: Time) -> Result<(Vec<f64>, Vec<f64>)> {
        let a = self.eta / self.n_train() as f64;
        let pairs: Vec<(f64, f64)> = match time {
            Time::Flow(t) => {
                if t.is_nan() || t < 0.0 {
                    return Err(Error::InvalidInput(format!("gradient-flow time must be >= 0, got {t}")));
                }
                self.lambda.iter().map(|&l| flow_factors(a * t, l)).collect()
            }
            Time::Steps(s) => self.lambda.iter().map(|&l| gd_factors(a, s, l)).collect(),
        };
        if let Some(&(h, _)) = pairs.iter().find(|(h, g)| !h.is_finite() || !g.is_finite()) {
            return Err(Error::Numerical(format!(
                "GD diverges: eta lambda_max / N = {:.4} > 2 (eta_crit = {:.4e}); 1 - (1 - eta lambda / N)^s = {h}",
                a * self.lambda[self.n_train() - 1],
                self.critical_lr()
            )));
        }
        Ok(pairs.into_iter().unzip())
    }
}

/// f0[(i, j)] or 0.
fn f0_at(f0: Option<MatRef<'_, f64>>, i: usize, j: usize) -> f64 {
    f0.map_or(0.0, |f| f[(i, j)])
}

/// Gradient flow, c = eta t / N: h = 1 - exp(-c l), g = h / l -> c as l -> 0; c = inf gives (1, 1/l); l = 0 gives
/// (0, 0) (a zero mode is never fitted and its eigenvector has no test-train overlap, Theta_*x u = 0).
fn flow_factors(c: f64, l: f64) -> (f64, f64) {
    if l == 0.0 {
        (0.0, 0.0)
    } else if c.is_infinite() {
        (1.0, 1.0 / l)
    } else {
        let h = -(-c * l).exp_m1();
        (h, h / l)
    }
}

/// s GD steps, a = eta / N: h = 1 - (1 - a l)^s, g = h / l -> s a as l -> 0, computed as -expm1(s log1p(-a l))
/// while a l < 1 (accurate for tiny a l), directly otherwise (may overflow when a l > 2: divergence).
fn gd_factors(a: f64, s: u64, l: f64) -> (f64, f64) {
    if l == 0.0 {
        return (0.0, 0.0);
    }
    let x = a * l;
    let h = if x < 1.0 {
        -((s as f64) * (-x).ln_1p()).exp_m1()
    } else if s <= i32::MAX as u64 {
        1.0 - (1.0 - x).powi(s as i32)
    } else {
        1.0 - (1.0 - x).powf(s as f64)
    };
    (h, h / l)
}

/// Test outputs of the linearized network from zero initial outputs: Theta_*x Theta^{-1} (I - D_t) y, T x m;
/// theta_train N x N, theta_test_train T x N, y N x m. (For many times, build one [`LinearizedDynamics`].)
pub fn predict_linearized(
    theta_train: MatRef<'_, f64>,
    theta_test_train: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    eta: f64,
    time: Time,
) -> Result<Mat<f64>> {
    LinearizedDynamics::new(theta_train, eta)?.test(theta_test_train, y, None, None, time)
}

#[cfg(test)]
mod tests {
    use super::super::krr;
    use super::super::testutil::{max_abs_diff, rbf};
    use super::*;
    use crate::data::synthetic::gaussian;

    /// A small PSD "NTK" on train + test points, built from an RBF plus a linear kernel.
    fn setup(n: usize, t: usize, seed: u64) -> (Mat<f64>, Mat<f64>, Mat<f64>, Mat<f64>) {
        let x = gaussian(n + t, 3, seed);
        let k = rbf(x.as_ref(), x.as_ref());
        let full = Mat::from_fn(n + t, n + t, |i, j| {
            2.0 * k[(i, j)] + (0..3).map(|c| x[(i, c)] * x[(j, c)]).sum::<f64>() / 3.0
        });
        let theta = full.submatrix(0, 0, n, n).to_owned();
        let theta_tx = full.submatrix(n, 0, t, n).to_owned();
        let y = gaussian(n, 2, seed + 100);
        let f0 = gaussian(n + t, 2, seed + 200);
        (theta, theta_tx, y, f0)
    }

    /// One RK4 step of the joint linear ODE for (f_train, f_test).
    fn deriv(
        theta: &Mat<f64>,
        theta_tx: &Mat<f64>,
        y: &Mat<f64>,
        a: f64,
        f: &Mat<f64>,
        _ft: &Mat<f64>,
    ) -> (Mat<f64>, Mat<f64>) {
        let r = f - y;
        (-a * (theta * &r), -a * (theta_tx * &r))
    }

    #[test]
    fn gradient_flow_matches_rk4() {
        // d f/dt = -(eta/N) Theta (f - y) (and the test-point equation) integrated with RK4. With
        // z = h (eta/N) lambda <= 0.01 the per-step amplification error is z^5/120 <= 1e-12, so over the run the
        // error is far below 1e-10 (observed ~1e-14); tolerance 1e-10.
        let (n, t) = (8, 3);
        let (theta, theta_tx, y, f0) = setup(n, t, 1);
        let f0_train = f0.submatrix(0, 0, n, 2).to_owned();
        let f0_test = f0.submatrix(n, 0, t, 2).to_owned();
        let eta = 0.7;
        let dynm = LinearizedDynamics::new(theta.as_ref(), eta).unwrap();
        let a = eta / n as f64;
        let lmax = *dynm.eigenvalues().last().unwrap();
        let t_end = 40.0;
        let steps = ((t_end * a * lmax) / 0.01).ceil() as usize;
        let h = t_end / steps as f64;
        let (mut f, mut ft) = (f0_train.clone(), f0_test.clone());
        for _ in 0..steps {
            let (k1, l1) = deriv(&theta, &theta_tx, &y, a, &f, &ft);
            let (k2, l2) = deriv(&theta, &theta_tx, &y, a, &(&f + (h / 2.0) * &k1), &(&ft + (h / 2.0) * &l1));
            let (k3, l3) = deriv(&theta, &theta_tx, &y, a, &(&f + (h / 2.0) * &k2), &(&ft + (h / 2.0) * &l2));
            let (k4, l4) = deriv(&theta, &theta_tx, &y, a, &(&f + h * &k3), &(&ft + h * &l3));
            f = &f + (h / 6.0) * (&k1 + 2.0 * &k2 + 2.0 * &k3 + &k4);
            ft = &ft + (h / 6.0) * (&l1 + 2.0 * &l2 + 2.0 * &l3 + &l4);
        }
        let time = Time::Flow(t_end);
        let tr = dynm.train(y.as_ref(), Some(f0_train.as_ref()), time).unwrap();
        let te =
            dynm.test(theta_tx.as_ref(), y.as_ref(), Some(f0_train.as_ref()), Some(f0_test.as_ref()), time).unwrap();
        assert!(max_abs_diff(tr.as_ref(), f.as_ref()) < 1e-10, "{}", max_abs_diff(tr.as_ref(), f.as_ref()));
        assert!(max_abs_diff(te.as_ref(), ft.as_ref()) < 1e-10, "{}", max_abs_diff(te.as_ref(), ft.as_ref()));
        // t = 0 returns the initial outputs.
        let te0 =
            dynm.test(theta_tx.as_ref(), y.as_ref(), Some(f0_train.as_ref()), Some(f0_test.as_ref()), Time::Flow(0.0));
        assert_eq!(te0.unwrap(), f0_test);
    }

    #[test]
    fn gd_matches_literal_iteration() {
        // f <- f - (eta/N) Theta (f - y), f_test <- f_test - (eta/N) Theta_*x (f - y), iterated s times: the same
        // polynomial in Theta evaluated in a different order; agreement to rounding (~s eps ||.||, observed ~1e-14),
        // tolerance 1e-11 relative.
        let (n, t) = (10, 4);
        let (theta, theta_tx, y, f0) = setup(n, t, 2);
        let f0_train = f0.submatrix(0, 0, n, 2).to_owned();
        let f0_test = f0.submatrix(n, 0, t, 2).to_owned();
        let probe = LinearizedDynamics::new(theta.as_ref(), 1.0).unwrap();
        // Stable (0.5 eta_crit), near the edge (0.99 eta_crit), and divergent (1.05 eta_crit) learning rates.
        for frac in [0.5, 0.99, 1.05] {
            let eta = frac * probe.critical_lr();
            let dynm = LinearizedDynamics::new(theta.as_ref(), eta).unwrap();
            let a = eta / n as f64;
            let s = 37;
            let (mut f, mut ft) = (f0_train.clone(), f0_test.clone());
            for _ in 0..s {
                let r = &f - &y;
                ft = &ft - a * (&theta_tx * &r);
                f = &f - a * (&theta * &r);
            }
            let scale = 1.0 + f.norm_max().max(ft.norm_max());
            let tr = dynm.train(y.as_ref(), Some(f0_train.as_ref()), Time::Steps(s)).unwrap();
            let te = dynm
                .test(theta_tx.as_ref(), y.as_ref(), Some(f0_train.as_ref()), Some(f0_test.as_ref()), Time::Steps(s))
                .unwrap();
            assert!(max_abs_diff(tr.as_ref(), f.as_ref()) < 1e-11 * scale, "eta = {frac} eta_crit");
            assert!(max_abs_diff(te.as_ref(), ft.as_ref()) < 1e-11 * scale, "eta = {frac} eta_crit");
        }
        // Far beyond the edge with many steps the prediction overflows: an error, not infinities.
        let dynm = LinearizedDynamics::new(theta.as_ref(), 3.0 * probe.critical_lr()).unwrap();
        assert!(matches!(dynm.train(y.as_ref(), None, Time::Steps(5000)), Err(Error::Numerical(_))));
    }

    #[test]
    fn infinite_time_is_kernel_regression() {
        // t = infinity, f0 = 0: Theta_*x Theta^{-1} y = KRR with reg 0; train outputs interpolate y.
        let (n, t) = (9, 5);
        let (theta, theta_tx, y, _) = setup(n, t, 3);
        let inf =
            predict_linearized(theta.as_ref(), theta_tx.as_ref(), y.as_ref(), 0.3, Time::Flow(f64::INFINITY)).unwrap();
        let k = krr(theta.as_ref(), y.as_ref(), theta_tx.as_ref(), 0.0).unwrap();
        assert_eq!(k.jitter, 0.0);
        // Both are backward-stable solves with cond(Theta) <~ 1e4 here: agreement ~ cond eps (observed ~4e-14),
        // tolerance 1e-10.
        assert!(max_abs_diff(inf.as_ref(), k.prediction.as_ref()) < 1e-10);
        let dynm = LinearizedDynamics::new(theta.as_ref(), 0.3).unwrap();
        let tr = dynm.train(y.as_ref(), None, Time::Flow(f64::INFINITY)).unwrap();
        assert!(max_abs_diff(tr.as_ref(), y.as_ref()) < 1e-10);
        // Long but finite time approaches the limit (slowest mode e^{-c lambda_min} ~ 0 at c lambda_min >~ 50).
        let lmin = dynm.eigenvalues()[0];
        let t_long = 60.0 * n as f64 / (0.3 * lmin);
        let long = dynm.test(theta_tx.as_ref(), y.as_ref(), None, None, Time::Flow(t_long)).unwrap();
        assert!(max_abs_diff(long.as_ref(), inf.as_ref()) < 1e-8);
    }

    #[test]
    fn singular_kernel_zero_modes() {
        // Duplicate training point: Theta has an exact null vector (e_0 - e_last)/sqrt 2, which must neither blow
        // up at t = infinity nor move. Reference: GD literally iterated, and at t = infinity ridge regression with
        // a vanishing ridge (the min-norm interpolant, consistent targets on the duplicate pair).
        let (n, t) = (7, 3);
        let mut x = gaussian(n + t, 3, 4);
        for c in 0..3 {
            x[(n - 1, c)] = x[(0, c)];
        }
        let full = rbf(x.as_ref(), x.as_ref());
        let theta = full.submatrix(0, 0, n, n).to_owned();
        let theta_tx = full.submatrix(n, 0, t, n).to_owned();
        let mut y = gaussian(n, 1, 5);
        y[(n - 1, 0)] = y[(0, 0)];
        let dynm = LinearizedDynamics::new(theta.as_ref(), 1.0).unwrap();
        assert_eq!(dynm.eigenvalues()[0], 0.0);
        let inf = dynm.test(theta_tx.as_ref(), y.as_ref(), None, None, Time::Flow(f64::INFINITY)).unwrap();
        // The 1e-9 ridge biases the fit by O(1e-9 cond) (observed ~5e-8); tolerance 1e-6.
        let ridge = krr(theta.as_ref(), y.as_ref(), theta_tx.as_ref(), 1e-9).unwrap();
        assert!(max_abs_diff(inf.as_ref(), ridge.prediction.as_ref()) < 1e-6);
        let a = 1.0 / n as f64;
        let (mut f, mut ft) = (Mat::<f64>::zeros(n, 1), Mat::<f64>::zeros(t, 1));
        for _ in 0..50 {
            let r = &f - &y;
            ft = &ft - a * (&theta_tx * &r);
            f = &f - a * (&theta * &r);
        }
        let te = dynm.test(theta_tx.as_ref(), y.as_ref(), None, None, Time::Steps(50)).unwrap();
        assert!(max_abs_diff(te.as_ref(), ft.as_ref()) < 1e-10);
    }

    #[test]
    fn small_eigenvalue_limits() {
        // g(l) = (1 - e^{-c l}) / l -> c and the GD analogue -> s a as l -> 0, without cancellation.
        let (h, g) = flow_factors(2.5, 1e-300);
        assert!(h > 0.0 && (g - 2.5).abs() < 1e-15);
        let (_, g) = flow_factors(2.5, 1e-9);
        assert!((g - 2.5 * (1.0 - 2.5e-9 / 2.0)).abs() < 1e-15);
        let (_, g) = gd_factors(0.01, 100, 1e-12);
        assert!((g - 1.0).abs() < 1e-12);
        let (h, g) = gd_factors(0.5, 3, 2.0); // a l = 1: one step fits the mode exactly
        assert_eq!((h, g), (1.0, 0.5));
        assert_eq!(flow_factors(f64::INFINITY, 4.0), (1.0, 0.25));
    }

    #[test]
    fn rejects_bad_input() {
        let ind = Mat::<f64>::from_fn(2, 2, |i, j| if i == j { 1.0 } else { 2.0 });
        assert!(matches!(LinearizedDynamics::new(ind.as_ref(), 1.0), Err(Error::InvalidInput(_))));
        let id = Mat::<f64>::identity(3, 3);
        assert!(matches!(LinearizedDynamics::new(id.as_ref(), 0.0), Err(Error::InvalidInput(_))));
        let d = LinearizedDynamics::new(id.as_ref(), 1.0).unwrap();
        assert!((d.critical_lr() - 6.0).abs() < 1e-12);
        let y = Mat::<f64>::zeros(3, 1);
        assert!(matches!(d.train(y.as_ref(), None, Time::Flow(-1.0)), Err(Error::InvalidInput(_))));
        assert!(matches!(d.train(y.as_ref(), None, Time::Flow(f64::NAN)), Err(Error::InvalidInput(_))));
        assert!(matches!(d.train(Mat::<f64>::zeros(2, 1).as_ref(), None, Time::Steps(1)), Err(Error::Shape(_))));
        let f0 = Mat::<f64>::zeros(3, 2);
        assert!(matches!(d.train(y.as_ref(), Some(f0.as_ref()), Time::Steps(1)), Err(Error::Shape(_))));
        let tx = Mat::<f64>::zeros(2, 4);
        assert!(matches!(d.test(tx.as_ref(), y.as_ref(), None, None, Time::Steps(1)), Err(Error::Shape(_))));
    }
}
