//! The report of `ntklab run lazy` (see `experiment/lazy.rs`) and the checks it makes.

use super::lazy::LazyResult;
use crate::report::{Chart, Comparison, Report, Section, Series};

fn chart(title: &str, x: &str, y: &str, log: bool, series: Vec<Series>, hlines: Vec<(String, f64)>) -> Chart {
    Chart { title: title.into(), x_label: x.into(), y_label: y.into(), log_x: log, log_y: log, series, hlines }
}

/// The checks of the report: (quantity, expected, measured, agrees).
pub(crate) fn checks(res: &LazyResult) -> Vec<Comparison> {
    let last = res.scales.len() - 1;
    let same = res.tangent_test_loss_same_steps[0];
    let rel = (res.test_loss_final[last] - same).abs() / same;
    let sc = &res.scaling;
    let near = |v: f64, target: f64, tol: f64| (v - target).abs() <= tol;
    let p = &res.particles;
    let mut out = vec![
        Comparison {
            quantity: format!("test loss at the largest scale tau = {:.3}", res.scales[last]),
            expected: format!("meets the tangent model's after the same steps ({same:.4e})"),
            measured: format!("{:.4e} (relative gap {:.1} %)", res.test_loss_final[last], 100.0 * rel),
            agrees: Some(rel < 0.1),
        },
        Comparison {
            quantity: format!("test loss at the smallest scale tau = {:.4}", res.scales[0]),
            expected: "below the tangent model's (features are learned)".into(),
            measured: format!("{:.4e} vs {same:.4e}", res.test_loss_final[0]),
            agrees: Some(res.test_loss_final[0] < same),
        },
        Comparison {
            quantity: "||h(w_0)|| against m, mean-field 1/m".into(),
            expected: "slope -0.5".into(),
            measured: format!("{:.3}", sc.fit_init_meanfield.exponent),
            agrees: Some(near(sc.fit_init_meanfield.exponent, -0.5, 0.1)),
        },
        Comparison {
            quantity: "||h(w_0)|| against m, lazy 1/sqrt(m)".into(),
            expected: "slope 0".into(),
            measured: format!("{:.3}", sc.fit_init_lazy.exponent),
            agrees: Some(near(sc.fit_init_lazy.exponent, 0.0, 0.1)),
        },
        Comparison {
            quantity: "mean neuron displacement against m, mean-field".into(),
            expected: "slope 0".into(),
            measured: format!("{:.3}", sc.fit_displacement_meanfield.exponent),
            agrees: Some(near(sc.fit_displacement_meanfield.exponent, 0.0, 0.15)),
        },
        Comparison {
            quantity: "mean neuron displacement against m, lazy".into(),
            expected: "slope -0.5".into(),
            measured: format!("{:.3}", sc.fit_displacement_lazy.exponent),
            agrees: Some(near(sc.fit_displacement_lazy.exponent, -0.5, 0.1)),
        },
    ];
    if let (Some(first), Some(lastp)) = (p.scales.first(), p.scales.last()) {
        out.push(Comparison {
            quantity: format!("particles at tau = {first}: mass-weighted cosine to the nearest teacher neuron"),
            expected: "near 1 (they travel to the teacher's directions)".into(),
            measured: format!("{:.3}", p.alignment[0]),
            agrees: Some(p.alignment[0] > 0.9),
        });
        out.push(Comparison {
            quantity: format!("particles at tau = {lastp}: distance travelled / initial distance to 0"),
            expected: "small (they barely move)".into(),
            measured: format!("{:.3}", p.relative_movement[p.relative_movement.len() - 1]),
            agrees: Some(p.relative_movement[p.relative_movement.len() - 1] < 0.1),
        });
    }
    out
}

/// The report of a summary.
pub fn report(res: &LazyResult) -> Report {
    let c = &res.config;
    let pts = |v: &[f64]| res.scales.iter().copied().zip(v.iter().copied()).collect::<Vec<_>>();
    let mut sections = vec![
        Section::Plot {
            stem: "test_loss_vs_scale".into(),
            chart: chart(
                "Test loss against the scale tau",
                "tau",
                "test loss",
                true,
                vec![
                    Series::markers("final", pts(&res.test_loss_final)),
                    Series::line("best along training", pts(&res.test_loss_best)),
                ],
                vec![
                    ("tangent model, same steps".into(), res.tangent_test_loss_same_steps[0]),
                    ("tangent model, converged".into(), res.tangent_test_loss[0]),
                    ("zero predictor".into(), res.null_test_loss),
                ],
            ),
            caption: format!("Means over {} initializations; the tangent models do not depend on tau", c.trials),
        },
        Section::Plot {
            stem: "kappa".into(),
            chart: chart(
                "Relative scale kappa(tau)",
                "tau",
                "kappa",
                true,
                vec![Series::markers("kappa", pts(&res.kappa))],
                vec![],
            ),
            caption: "kappa = ||y|| ||D^2 h|| / (tau ||Dh||^2): training is lazy where kappa << 1".into(),
        },
    ];
    let sc = &res.scaling;
    let wp = |f: &dyn Fn(&super::lazy_scaling::WidthPoint) -> f64| {
        sc.points.iter().map(|p| (p.width as f64, f(p))).collect::<Vec<_>>()
    };
    let fitline =
        |f: &super::PowerLawFit| sc.points.iter().map(|p| (p.width as f64, f.eval(p.width as f64))).collect::<Vec<_>>();
    sections.push(Section::Plot {
        stem: "init_vs_width".into(),
        chart: chart(
            "Output size at initialization",
            "width m",
            "||h(w_0)||",
            true,
            vec![
                Series::markers("mean-field (1/m)", wp(&|p| p.init_meanfield)),
                Series::line(format!("fit m^{:.2}", sc.fit_init_meanfield.exponent), fitline(&sc.fit_init_meanfield)),
                Series::markers("lazy (1/sqrt m)", wp(&|p| p.init_lazy)),
                Series::line(format!("fit m^{:.2}", sc.fit_init_lazy.exponent), fitline(&sc.fit_init_lazy)),
            ],
            vec![],
        ),
        caption: "Root mean square over the training inputs, mean over initializations".into(),
    });
    sections.push(Section::Plot {
        stem: "displacement_vs_width".into(),
        chart: chart(
            "Mean distance travelled by a neuron",
            "width m",
            "mean ||(a_j, b_j)(T) - (a_j, b_j)(0)||",
            true,
            vec![
                Series::markers("mean-field (step x m)", wp(&|p| p.displacement_meanfield)),
                Series::line(
                    format!("fit m^{:.2}", sc.fit_displacement_meanfield.exponent),
                    fitline(&sc.fit_displacement_meanfield),
                ),
                Series::markers("lazy", wp(&|p| p.displacement_lazy)),
                Series::line(
                    format!("fit m^{:.2}", sc.fit_displacement_lazy.exponent),
                    fitline(&sc.fit_displacement_lazy),
                ),
            ],
            vec![],
        ),
        caption: format!("After {} GD steps", c.scaling.steps),
    });
    let p = &res.particles;
    for (s, tau) in p.scales.iter().enumerate() {
        let mut series: Vec<Series> = p.paths[s].iter().map(|path| Series::line("", path.clone())).collect();
        series.push(Series::markers("start", p.paths[s].iter().map(|path| path[0]).collect()));
        series.push(Series::markers("end", p.paths[s].iter().map(|path| path[path.len() - 1]).collect()));
        series.push(Series::markers("teacher neurons", p.teacher.iter().map(|t| (t.0, t.1)).collect()));
        sections.push(Section::Plot {
            stem: format!("particles_{s}"),
            chart: chart(&format!("Neurons in the plane, tau = {tau}"), "p_1", "p_2", false, series, vec![]),
            caption: format!(
                "p_j = tau/sqrt(m) |a_j| b_j for m = {} neurons over {} GD steps (final loss {:.2e}); the teacher's \
                 neurons have output weight +1; the student's with a_j < 0 shrink to 0",
                c.particles.width, c.particles.steps, p.final_loss[s]
            ),
        });
    }
    let rows = res
        .by_scale
        .iter()
        .enumerate()
        .map(|(i, b)| {
            vec![
                format!("{:.4}", b.scale),
                format!("{:.4e}", res.test_loss_final[i]),
                format!("{:.4e}", res.test_loss_best[i]),
                format!("{:.2e}", super::mean_std(&b.train_loss_final).0),
                format!("{:.3e}", super::mean_std(&b.displacement).0),
                format!("{:.3e}", res.kappa[i]),
                b.diverged.to_string(),
            ]
        })
        .collect();
    sections.push(Section::Table {
        caption: "Per scale (means over initializations)".into(),
        headers: ["tau", "test final", "test best", "train final", "neuron displacement", "kappa", "diverged"]
            .map(String::from)
            .to_vec(),
        rows,
    });
    Report {
        title: "Lazy training and the mean-field regime".into(),
        claim: "Chizat, Oyallon & Bach (2019): scaling a model by tau makes its training lazy as tau grows: the \
                trained network stays close to its linearization and its test loss meets the tangent model's \
                (kernel regression with the NTK at initialization), while at small scales the network learns \
                features and generalizes better on a teacher with few neurons. The lecture's table: at \
                initialization the output is O(m^-1/2) under the mean-field 1/m normalization and O(1) under the \
                lazy 1/sqrt(m) one, and each neuron moves O(1) (mean-field) or O(m^-1/2) (lazy)."
            .into(),
        setup: format!(
            "Inputs uniform on the unit sphere of R^{}, N = {} training and {} test points; teacher sum_k s_k \
             relu(t_k.x) with {} unit t_k and s_k = +1, -1, ...; student (1/sqrt m) sum_j a_j relu(b_j.x), m = {}, \
             a, b ~ N(0, 1), symmetrized (h(w_0) = 0), model tau h for tau in {:?}. GD on L(tau h)/tau^2 for {} \
             steps at eta min(1, tau), eta = {} x 2N/lambda_max(K_0) (on L(tau h): eta/tau^2 for tau >= 1, eta/tau \
             below), {} initializations. Scaling table: \
             d = {}, N = {}, widths {:?}, {} steps (lazy step {} x 2N/lambda_max, mean-field m times it). \
             Particles: d = 2, m = {}, tau in {:?}. Seed {}.",
            c.input_dim,
            c.n_train,
            c.n_test,
            c.teacher_neurons,
            c.width,
            c.scales.iter().map(|t| format!("{t:.3}")).collect::<Vec<_>>(),
            c.steps,
            c.lr_factor,
            c.trials,
            c.scaling.input_dim,
            c.scaling.n_train,
            c.scaling.widths,
            c.scaling.steps,
            c.scaling.lr_factor,
            c.particles.width,
            c.particles.scales,
            c.seed
        ),
        comparisons: checks(res),
        sections,
    }
}

#[cfg(test)]
mod tests {
    use super::super::lazy::{run, LazyConfig};
    use super::super::Context;

    #[test]
    fn quick_instance_shows_the_lazy_limit_and_the_width_scalings() {
        let res = run(&LazyConfig::quick(), &mut Context::quiet()).unwrap();
        super::super::assert_all_agree(&super::checks(&res));
        // Test loss rises with the scale overall (feature learning fades): the smallest scale is best.
        let first = res.test_loss_final[0];
        assert!(res.test_loss_final.iter().all(|&t| t >= first * 0.999), "{:?}", res.test_loss_final);
        assert!(res.by_scale.iter().all(|b| b.diverged == 0));
        // Lazy where kappa << 1: the neurons' displacement falls as the scale grows.
        let disp: Vec<f64> = res.by_scale.iter().map(|b| super::super::mean_std(&b.displacement).0).collect();
        assert!(disp.windows(2).all(|w| w[1] < w[0]), "{disp:?}");
        assert!(res.kappa[res.kappa.len() - 1] < 0.1 && res.kappa[0] > 1.0, "{:?}", res.kappa);
    }
}
