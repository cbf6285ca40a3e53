//! The report of `ntklab run double-descent` (see `experiment/double_descent.rs`) and its checks.

use super::double_descent::DoubleDescentResult;
use crate::report::{Chart, Comparison, Report, Section, Series};

fn chart(title: &str, x: &str, y: &str, series: Vec<Series>) -> Chart {
    Chart {
        title: title.into(),
        x_label: x.into(),
        y_label: y.into(),
        log_x: true,
        log_y: true,
        series,
        hlines: vec![],
    }
}

/// Where a curve peaks (its x) and the peak value.
fn peak(x: &[f64], y: &[f64]) -> (f64, f64) {
    x.iter().zip(y).fold((f64::NAN, f64::NEG_INFINITY), |b, (a, v)| if *v > b.1 { (*a, *v) } else { b })
}

fn rf_checks(name: &str, x: &[f64], ridgeless: &[f64], ridge: &[f64]) -> Vec<Comparison> {
    let (at, top) = peak(x, ridgeless);
    let (_, ridge_top) = peak(x, ridge);
    let last = ridgeless.last().copied().unwrap_or(f64::NAN);
    vec![
        Comparison {
            quantity: format!("random features on {name}, ridgeless: where the test error peaks"),
            expected: "at N = n (N/n = 1), then falls".into(),
            measured: format!("peak {top:.3} at N/n = {at:.2}; {last:.3} at the largest N/n"),
            agrees: Some((0.85..=1.2).contains(&at) && last < 0.5 * top),
        },
        Comparison {
            quantity: format!("random features on {name}, with a ridge: the largest test error"),
            expected: "no peak (far below the ridgeless one)".into(),
            measured: format!("{ridge_top:.3} vs {top:.3}"),
            agrees: Some(ridge_top < 0.25 * top),
        },
    ]
}

/// The checks: least squares against the exact curve, the interpolation peak, and the random-features curves.
pub(crate) fn checks(res: &DoubleDescentResult) -> Vec<Comparison> {
    let within: Vec<bool> = (0..res.gamma.len())
        .map(|i| (res.test_error[i] - res.theory[i]).abs() <= 4.0 * res.test_error_se[i] + 0.05 * res.theory[i])
        .collect();
    let worst = (0..res.gamma.len())
        .map(|i| (res.test_error[i] - res.theory[i]).abs() / res.test_error_se[i].max(f64::MIN_POSITIVE))
        .fold(0.0, f64::max);
    let (at, _) = peak(&res.gamma, &res.test_error);
    let mut out = vec![
        Comparison {
            quantity: "least squares: mean ||beta_hat - beta||^2 against the exact finite-sample risk".into(),
            expected: "within 4 standard errors (+5 %) at every gamma".into(),
            measured: format!(
                "{} of {} within; largest gap {worst:.1} standard errors",
                within.iter().filter(|w| **w).count(),
                within.len()
            ),
            agrees: Some(within.iter().all(|w| *w)),
        },
        Comparison {
            quantity: "least squares: where the risk peaks".into(),
            expected: "next to gamma = 1".into(),
            measured: format!("gamma = {at:.2}"),
            agrees: Some({
                let nearest = |side: bool| {
                    res.gamma.iter().copied().filter(|g| if side { *g < 1.0 } else { *g > 1.0 }).fold(
                        f64::NAN,
                        |b, g| {
                            if b.is_nan() || (g - 1.0).abs() < (b - 1.0).abs() {
                                g
                            } else {
                                b
                            }
                        },
                    )
                };
                at == nearest(true) || at == nearest(false)
            }),
        },
    ];
    out.extend(rf_checks("the teacher set", &res.rf_ratio, &res.rf_test_error_ridgeless, &res.rf_test_error_ridge));
    out.extend(rf_checks(
        "digits",
        &res.rf_ratio,
        &res.rf_digits_test_error_ridgeless,
        &res.rf_digits_test_error_ridge,
    ));
    out
}

/// The report of a summary.
pub fn report(res: &DoubleDescentResult) -> Report {
    let c = &res.config;
    let xy = |x: &[f64], y: &[f64]| x.iter().copied().zip(y.iter().copied()).collect::<Vec<_>>();
    let theory_curve: Vec<(f64, f64)> = {
        let (lo, hi) =
            (res.gamma.iter().copied().fold(f64::INFINITY, f64::min), res.gamma.iter().copied().fold(0.0, f64::max));
        let mut pts = Vec::new();
        for k in 0..=400 {
            let g = lo * (hi / lo).powf(k as f64 / 400.0);
            let p = (g * res.n as f64).round() as usize;
            if let Some(t) = super::double_descent::theory(res.n, p, res.noise_variance, res.signal_r2) {
                pts.push((p as f64 / res.n as f64, t));
            }
        }
        pts
    };
    // The theory curve jumps over the pole; draw its two branches as two series.
    type Points = Vec<(f64, f64)>;
    let (below, above): (Points, Points) = theory_curve.into_iter().partition(|p| p.0 < 1.0);
    let rows = (0..res.gamma.len())
        .map(|i| {
            vec![
                format!("{:.3}", res.gamma[i]),
                format!("{:.4}", res.test_error[i]),
                format!("{:.4}", res.test_error_se[i]),
                format!("{:.4}", res.theory[i]),
            ]
        })
        .collect();
    Report {
        title: "Double descent".into(),
        claim: "Belkin, Hsu, Ma & Mandal (2019); Hastie, Montanari, Rosset & Tibshirani (2019); Mei & Montanari \
                (2019): the test error of minimum-norm interpolators rises to a peak where the number of parameters \
                reaches the number of samples and falls again beyond it; for isotropic Gaussian least squares the \
                whole curve is known exactly, and a ridge removes the peak."
            .into(),
        setup: format!(
            "Least squares: n = {}, x ~ N(0, I_p), ||beta||^2 = {}, noise variance {}, {} trials per gamma, \
             minimum-norm fit. Random ReLU features relu(w.x/sqrt(d))/sqrt(N): the teacher set (d = {}, noise sd \
             {}) and the digits (one-hot targets), n = {} training and {} test points, ridgeless and lambda = {}, \
             {} feature draws per N. Seed {}. Model-wise double descent of trained two-layer networks is not part of \
             this run.",
            c.n,
            c.signal_r2,
            c.noise_variance,
            c.trials,
            c.rf_input_dim,
            c.rf_noise,
            c.rf_n,
            c.rf_n_test,
            c.rf_ridge,
            c.rf_trials,
            c.seed
        ),
        comparisons: checks(res),
        sections: vec![
            Section::Plot {
                stem: "least_squares".into(),
                chart: chart(
                    "Minimum-norm least squares",
                    "gamma = p/n",
                    "E ||beta_hat - beta||^2",
                    vec![
                        Series::markers("measured (mean over trials)", xy(&res.gamma, &res.test_error)),
                        Series::line("exact, p < n", below),
                        Series::line("exact, p > n", above),
                    ],
                ),
                caption:
                    "The exact curve: sigma^2 p/(n-p-1) below the threshold, r^2 (1-n/p) + sigma^2 n/(p-n-1) above"
                        .into(),
            },
            Section::Plot {
                stem: "random_features".into(),
                chart: chart(
                    "Random ReLU features",
                    "N/n",
                    "test error",
                    vec![
                        Series::line("teacher set, ridgeless", xy(&res.rf_ratio, &res.rf_test_error_ridgeless)),
                        Series::line(
                            format!("teacher set, ridge {}", c.rf_ridge),
                            xy(&res.rf_ratio, &res.rf_test_error_ridge),
                        ),
                        Series::line("digits, ridgeless", xy(&res.rf_ratio, &res.rf_digits_test_error_ridgeless)),
                        Series::line(
                            format!("digits, ridge {}", c.rf_ridge),
                            xy(&res.rf_ratio, &res.rf_digits_test_error_ridge),
                        ),
                    ],
                ),
                caption: "Means over feature draws; the ridgeless curves peak at N = n".into(),
            },
            Section::Table {
                caption: "Least squares per gamma".into(),
                headers: ["gamma", "measured", "standard error", "exact"].map(String::from).to_vec(),
                rows,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::super::double_descent::{ridge_fit, run, theory, DoubleDescentConfig};
    use super::super::Context;
    use faer::linalg::solvers::Solve;
    use faer::Mat;

    #[test]
    fn quick_instance_matches_the_exact_curve_and_peaks_at_the_threshold() {
        let res = run(&DoubleDescentConfig::quick(), &mut Context::quiet()).unwrap();
        super::super::assert_all_agree(&super::checks(&res));
    }

    #[test]
    fn min_norm_fit_interpolates_and_is_orthogonal_to_the_null_space() {
        // 3 x 5 system: the fit interpolates and lies in the row space (so it has the minimum norm).
        let f = Mat::from_fn(3, 5, |i, j| ((i * 7 + j * 3) % 5) as f64 - 1.5 + if i == j { 2.0 } else { 0.0 });
        let y = Mat::from_fn(3, 1, |i, _| i as f64 + 1.0);
        let a = ridge_fit(&f, &y, 0.0).unwrap();
        assert!((&f * &a - &y).norm_l2() < 1e-12);
        let coef = (&f * f.transpose()).partial_piv_lu().solve(&f * &a);
        assert!((f.transpose() * coef - &a).norm_l2() < 1e-12);
        // A dead feature (a zero column) changes nothing: the fit gives it 0 and matches the fit without it.
        let g = Mat::from_fn(5, 3, |i, j| if j == 1 { 0.0 } else { ((i * 3 + j * 5) % 7) as f64 - 3.0 });
        let z = Mat::from_fn(5, 1, |i, _| (i as f64).sin());
        let a = ridge_fit(&g, &z, 0.0).unwrap();
        let g2 = Mat::from_fn(5, 2, |i, j| g[(i, 2 * j)]);
        let a2 = ridge_fit(&g2, &z, 0.0).unwrap();
        assert!(
            a[(1, 0)].abs() < 1e-12 && (a[(0, 0)] - a2[(0, 0)]).abs() < 1e-10 && (a[(2, 0)] - a2[(1, 0)]).abs() < 1e-10
        );
        // With a ridge: the normal equations (F^T F + n lambda I) a = F^T y hold.
        let a = ridge_fit(&f, &y, 0.3).unwrap();
        let mut lhs = f.transpose() * &f * &a;
        lhs += Mat::from_fn(5, 1, |i, _| 3.0 * 0.3 * a[(i, 0)]);
        assert!((lhs - f.transpose() * &y).norm_l2() < 1e-10);
        // Theory: below, above, and undefined at the threshold.
        assert_eq!(theory(10, 4, 1.0, 1.0), Some(4.0 / 5.0));
        assert_eq!(theory(10, 20, 1.0, 2.0), Some(2.0 * 0.5 + 10.0 / 9.0));
        assert_eq!(theory(10, 11, 1.0, 2.0), None);
    }
}
