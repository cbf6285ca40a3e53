//! The report of `ntklab run spectral-bias` (see `experiment/spectral_bias.rs`) and its checks.

use super::spectral_bias::SpectralBiasResult;
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

/// The checks: iterations track the linearized prediction and grow with k; odd k >= 3 are not learned without
/// bias; the sphere spectra decay like k^-d.
pub(crate) fn checks(res: &SpectralBiasResult) -> Vec<Comparison> {
    let wb = &res.with_bias;
    let per_k: Vec<Option<f64>> = wb
        .iterations
        .iter()
        .zip(&wb.predicted)
        .map(|(t, p)| match (t, p) {
            (Some(t), Some(p)) => Some(*t as f64 / p),
            _ => None,
        })
        .collect();
    let ratios: Vec<f64> = per_k.iter().flatten().copied().collect();
    let worst = ratios.iter().map(|r| (r - 1.0).abs()).fold(0.0, f64::max);
    let nb = &res.without_bias;
    let odd_missing =
        (3..=res.k.len()).step_by(2).all(|k| nb.iterations[k - 1].is_none() && nb.ntk_eigenvalues[k - 1].abs() < 1e-12);
    let even_learned = (1..=res.k.len()).filter(|k| k % 2 == 0 || *k == 1).all(|k| nb.iterations[k - 1].is_some());
    let first_two_ok = per_k.iter().take(2).all(|r| r.is_some_and(|r| (r - 1.0).abs() < 0.2));
    let wc = &res.width_check;
    let wratio: Vec<f64> = wc.iter().map(|(_, t, p)| t.map_or(f64::INFINITY, |t| t as f64 / p)).collect();
    let approaching = wratio.windows(2).all(|w| w[1] < w[0]) && wratio.last().is_some_and(|r| *r < 1.6);
    let mut out = vec![
        Comparison {
            quantity: "with bias: steps to fit k = 1, 2 against the linearized model".into(),
            expected: "equal (the kernel regime)".into(),
            measured: format!(
                "ratios {}; all k: {}",
                ratios.iter().take(2).map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", "),
                ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
            ),
            agrees: Some(first_two_ok && worst.is_finite()),
        },
        Comparison {
            quantity: "with bias: steps against k (log-log slope)".into(),
            expected: format!("at least the kernel's 1/(eta lambda_k) slope, {:.2}", res.slope_inverse_eigenvalue),
            measured: format!("{:.2}", res.slope_iterations),
            agrees: Some(
                res.slope_iterations >= 0.9 * res.slope_inverse_eigenvalue
                    && wb.iterations.windows(2).all(|w| w[0] < w[1]),
            ),
        },
        Comparison {
            quantity: format!("k = {}: steps / linearized prediction as the width grows", res.config.check_k),
            expected: "falls toward 1 (finite width slows the high frequencies)".into(),
            measured: wc
                .iter()
                .zip(&wratio)
                .map(|((m, _, _), r)| format!("m = {m}: {r:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            agrees: Some(approaching),
        },
        Comparison {
            quantity: "without bias: odd k >= 3".into(),
            expected: "lambda_k = 0, never learned (k = 1 and even k are)".into(),
            measured: format!(
                "steps {:?}",
                nb.iterations.iter().map(|t| t.map_or("-".to_string(), |v| v.to_string())).collect::<Vec<_>>()
            ),
            agrees: Some(odd_missing && even_learned),
        },
    ];
    for (d, s) in res.config.dims.iter().zip(&res.slope_eigenvalues_by_dim) {
        out.push(Comparison {
            quantity: format!("NTK eigenvalues on S^{} against the degree k", d - 1),
            expected: format!("decay like k^-{d}"),
            measured: format!("slope {s:.2}"),
            agrees: Some((s + *d as f64).abs() < 0.25),
        });
    }
    out
}

/// The report of a summary.
pub fn report(res: &SpectralBiasResult) -> Report {
    let c = &res.config;
    let ks: Vec<f64> = res.k.iter().map(|&k| k as f64).collect();
    let pts = |v: &[Option<u64>]| ks.iter().zip(v).filter_map(|(k, t)| t.map(|t| (*k, t as f64))).collect::<Vec<_>>();
    let pred = |v: &[Option<f64>]| ks.iter().zip(v).filter_map(|(k, t)| t.map(|t| (*k, t))).collect::<Vec<_>>();
    let mut sphere_series = Vec::new();
    for (d, ev) in c.dims.iter().zip(&res.sphere_eigenvalues) {
        sphere_series
            .push(Series::line(format!("S^{}", d - 1), (1..ev.len()).map(|k| (k as f64, ev[k].abs())).collect()));
    }
    let rows = (0..res.k.len())
        .map(|i| {
            let show = |t: Option<u64>| t.map_or("-".to_string(), |v| v.to_string());
            vec![
                res.k[i].to_string(),
                show(res.with_bias.iterations[i]),
                res.with_bias.predicted[i].map_or("-".into(), |v| format!("{v:.0}")),
                format!("{:.4e}", res.with_bias.ntk_eigenvalues[i]),
                format!("{:.4e}", res.with_bias.empirical_eigenvalues[i]),
                show(res.without_bias.iterations[i]),
                format!("{:.4e}", res.without_bias.ntk_eigenvalues[i]),
                if i >= 1 { format!("{:.4}", res.closed_form_ratio[i - 1]) } else { "-".into() },
            ]
        })
        .collect();
    Report {
        title: "Spectral bias of gradient descent".into(),
        claim: "Basri, Jacobs, Kasten & Kritchman (2019); Rahaman et al. (2019): a wide two-layer ReLU network trained \
                by GD learns the frequency-k component of its target in about 1/(eta lambda_k) steps, where the \
                NTK eigenvalues lambda_k on the circle fall like k^-2 (with bias; without bias the odd k >= 3 have \
                lambda_k = 0 and are never learned); on S^(d-1) the eigenvalues fall like k^-d. At a fixed width the \
                high frequencies leave the kernel regime first (fitting them moves the weights by ~ 1/sqrt(lambda_k)) \
                and take longer than the kernel predicts; the gap closes as the width grows."
            .into(),
        setup: format!(
            "n = {} points on a uniform grid of the unit circle, targets sqrt(2) sin(k theta), k = 1..{}; f = (1/sqrt m) \
             sum a_j relu(w_j.x + b_j), m = {}, a_j = +-1 fixed and paired (f = 0 at init), w ~ N(0, I_2), b ~ N(0, 1); \
             W and b trained by full-batch GD at {} x 2n/lambda_max(K_0) until L <= {} L_0 (at most {} steps). \
             lambda_k: the circulant spectrum of the infinite-width kernel on the grid. Sphere spectra by \
             Funk–Hecke, slopes fitted over degrees {}..{}. Seed {}.",
            c.n, c.max_k, c.width, c.lr_factor, c.threshold, c.max_steps, c.fit_from, c.fit_to, c.seed
        ),
        comparisons: checks(res),
        sections: vec![
            Section::Plot {
                stem: "iterations".into(),
                chart: chart(
                    "GD steps to fit sin(k theta)",
                    "k",
                    "steps",
                    vec![
                        Series::markers("with bias, measured", pts(&res.with_bias.iterations)),
                        Series::line("with bias, linearized prediction", pred(&res.with_bias.predicted)),
                        Series::markers("without bias, measured", pts(&res.without_bias.iterations)),
                    ],
                ),
                caption: "Missing points: not learned within the step budget (lambda_k = 0)".into(),
            },
            Section::Plot {
                stem: "eigenvalues".into(),
                chart: chart(
                    "NTK eigenvalues on the circle",
                    "k",
                    "lambda_k",
                    vec![
                        Series::markers("with bias", ks.iter().copied().zip(res.with_bias.ntk_eigenvalues.iter().copied()).collect()),
                        Series::markers(
                            "with bias, finite net",
                            ks.iter().copied().zip(res.with_bias.empirical_eigenvalues.iter().copied()).collect(),
                        ),
                        Series::markers(
                            "without bias",
                            // Eigenvalues that are 0 up to rounding (odd k >= 3) would stretch the log axis.
                            ks.iter()
                                .copied()
                                .zip(res.without_bias.ntk_eigenvalues.iter().copied())
                                .filter(|(_, v)| *v > 1e-12 * res.without_bias.ntk_eigenvalues[0].abs())
                                .collect(),
                        ),
                    ],
                ),
                caption: "Zero eigenvalues (odd k >= 3 without bias) are not drawn on the log scale".into(),
            },
            Section::Plot {
                stem: "sphere_spectra".into(),
                chart: chart("NTK eigenvalues on spheres (with bias)", "degree k", "lambda_k (Funk–Hecke, unnormalized)", sphere_series),
                caption: format!(
                    "Fitted slopes {:?} for d = {:?}",
                    res.slope_eigenvalues_by_dim.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>(),
                    c.dims
                ),
            },
            Section::Table {
                caption: "Per frequency (closed-form ratio: lambda_k over Basri et al.'s (k^2+1)/(k^2-1)^2, even k, or 1/k^2, odd k)".into(),
                headers: ["k", "steps (bias)", "predicted", "lambda_k (bias)", "finite net", "steps (no bias)", "lambda_k (no bias)", "closed-form ratio"]
                    .map(String::from)
                    .to_vec(),
                rows,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::super::spectral_bias::{circle_eigenvalues, run, sphere_eigenvalues, SpectralBiasConfig};
    use super::super::Context;

    #[test]
    fn quick_instance_learns_low_frequencies_first() {
        let res = run(&SpectralBiasConfig::quick(), &mut Context::quiet()).unwrap();
        super::super::assert_all_agree(&super::checks(&res));
    }

    #[test]
    fn the_two_eigenvalue_routes_agree_on_the_circle() {
        // On S^1 Funk–Hecke is the cosine transform: grid sums over the whole circle are 1/pi times it, up to the
        // grid's aliasing (lambda_(n-k) ~ (n-k)^-2 against lambda_k ~ k^-2: about 1e-5 relative at k = 10).
        let grid = circle_eigenvalues(4096, 10, true);
        let fh = sphere_eigenvalues(2, 10, 200_000);
        let r0 = grid[1] / fh[1];
        for k in 1..=10 {
            assert!(
                (grid[k] / fh[k] * std::f64::consts::PI - 1.0).abs() < 2e-5
                    && (r0 * std::f64::consts::PI - 1.0).abs() < 1e-7,
                "k = {k}: {} vs {} (ratios {:?})",
                grid[k],
                fh[k],
                (0..=10).map(|j| grid[j] / fh[j]).collect::<Vec<_>>()
            );
        }
        // Without bias the odd eigenvalues from 3 on vanish.
        let nb = circle_eigenvalues(64, 9, false);
        for k in [3, 5, 7, 9] {
            assert!(nb[k].abs() < 1e-14, "k = {k}: {}", nb[k]);
        }
        assert!(nb[1] > 0.0 && nb[2] > 0.0 && nb[4] > 0.0);
    }
}
