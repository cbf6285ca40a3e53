//! The report of `ntklab run depth` (see `experiment/depth.rs`).

use super::depth::DepthResult;
use crate::report::{Chart, Comparison, Report, Section, Series};

fn chart(title: &str, x: &str, y: &str, log_x: bool, log_y: bool, series: Vec<Series>) -> Chart {
    Chart { title: title.into(), x_label: x.into(), y_label: y.into(), log_x, log_y, series, hlines: vec![] }
}

fn steps_text(s: Option<u64>) -> String {
    s.map_or("not reached".into(), |v| v.to_string())
}

/// The report of a summary.
pub fn report(res: &DepthResult) -> Report {
    let c = &res.config;
    let mut sections = Vec::new();
    for (i, p) in res.ps.iter().enumerate() {
        let series = res
            .runs
            .iter()
            .filter(|r| r.p == *p)
            .map(|r| {
                Series::line(
                    format!("depth {} (eta = {:.3})", r.depth, r.lr),
                    r.excess.iter().enumerate().map(|(k, e)| ((k as u64 * r.record_every) as f64, *e)).collect(),
                )
            })
            .collect();
        sections.push(Section::Plot {
            stem: format!("loss_l{p}"),
            chart: chart(&format!("l_{p} loss: relative excess over L*"), "GD step", "(L_t - L*)/(L_0 - L*)", false, true, series),
            caption: format!(
                "Each depth at the step size of the grid that reaches the target first; L* = {:.6} (Newton). Speedup of \
                 the best deeper net: {:.2}x. The deep nets' winning step sizes are large: their later spikes are \
                 instabilities of the layers (the end-to-end preconditioner grows with ||w||), after the target.",
                res.optimal_loss[i], res.speedup[i]
            ),
        });
    }
    let dev_series = vec![
        Series::markers(
            "max ||w_deep - w_e2e||",
            res.etas.iter().copied().zip(res.max_deviation.iter().copied()).collect(),
        ),
        Series::line(
            "slope 1 through the smallest eta",
            match (res.etas.last(), res.max_deviation.last()) {
                (Some(&e), Some(&m)) => res.etas.iter().map(|&x| (x, m * x / e)).collect(),
                _ => vec![],
            },
        ),
    ];
    sections.push(Section::Plot {
        stem: "deviation".into(),
        chart: chart(
            "Deep GD vs the end-to-end update",
            "eta",
            "largest distance over the run",
            true,
            true,
            dev_series,
        ),
        caption: format!("Fitted slope {:.3} (expected 1: both discretize the same flow)", res.deviation_slope),
    });
    let t = &res.dynamics_time;
    sections.push(Section::Plot {
        stem: "dynamics_loss".into(),
        chart: chart(
            &format!("Depth {} net and its end-to-end dynamics, l_{} loss", c.dynamics_depth, c.dynamics_p),
            "training time t = eta x steps",
            "loss",
            false,
            true,
            vec![
                Series::line(
                    "deep net (GD on the layers)",
                    t.iter().copied().zip(res.dynamics_loss_deep.iter().copied()).collect(),
                ),
                Series::line(
                    "end-to-end update",
                    t.iter().copied().zip(res.dynamics_loss_e2e.iter().copied()).collect(),
                ),
            ],
        ),
        caption: format!("At the smallest step size, eta = {:.4}", res.etas.last().copied().unwrap_or(f64::NAN)),
    });
    let mut headers = vec!["p".to_string()];
    headers.extend(res.depths.iter().map(|d| format!("depth {d}: steps (eta)")));
    headers.push("final loss by depth".into());
    let rows = res
        .ps
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut row = vec![p.to_string()];
            for (j, _) in res.depths.iter().enumerate() {
                let r = &res.runs[i * res.depths.len() + j];
                row.push(format!("{} ({:.3})", steps_text(r.steps_to_target), r.lr));
            }
            row.push(res.final_loss[i].iter().map(|v| format!("{v:.6}")).collect::<Vec<_>>().join(", "));
            row
        })
        .collect();
    sections.push(Section::Table { caption: format!("Steps to relative excess {:.0e}", c.target), headers, rows });

    let find = |p: u32| res.ps.iter().position(|&q| q == p);
    let mut comparisons = Vec::new();
    if let Some(i) = find(4) {
        comparisons.push(Comparison {
            quantity: "l_4 loss: steps of the shallowest net / fewest steps of a deeper one".into(),
            expected: "> 1 (depth accelerates)".into(),
            measured: format!("{:.2}", res.speedup[i]),
            agrees: Some(res.speedup[i] > 1.2),
        });
    }
    if let Some(i) = find(2) {
        comparisons.push(Comparison {
            quantity: "l_2 loss: steps of the shallowest net / fewest steps of a deeper one".into(),
            expected: "about 1 or below (no gain)".into(),
            measured: format!("{:.2}", res.speedup[i]),
            agrees: Some(res.speedup[i] < 1.1),
        });
    }
    comparisons.push(Comparison {
        quantity: "largest distance between deep GD and the end-to-end update, against eta".into(),
        expected: "falls like eta (log-log slope 1)".into(),
        measured: format!(
            "{} at eta {}; slope {:.3}",
            res.max_deviation.iter().map(|v| format!("{v:.2e}")).collect::<Vec<_>>().join(", "),
            res.etas.iter().map(|v| format!("{v}")).collect::<Vec<_>>().join(", "),
            res.deviation_slope
        ),
        agrees: Some((0.8..=1.25).contains(&res.deviation_slope)),
    });
    Report {
        title: "Implicit acceleration by depth in linear networks".into(),
        claim: "Arora, Cohen & Hazan (2018): overparameterizing a linear model by depth changes gradient descent on \
                the end-to-end vector into w <- w - eta ||w||^(2-2/N) (grad L + (N-1) Pr_w grad L), a preconditioner \
                that no regularizer produces and that can accelerate convergence: with the l_4 loss the depth-2 and \
                depth-3 networks converge faster than the linear model itself, while with the l_2 loss there is no \
                gain."
            .into(),
        setup: format!(
            "The diabetes table (Efron, Hastie, Johnstone & Tibshirani 2004; 442 patients, 10 standardized \
             variables, standardized target; bundled, see crates/ntklab/data/README.md). Loss L = 1/(pN) sum \
             |x.w - y|^p for p in {:?}. Depths {:?}: `dense({}), ..., dense(1)` without bias, 'standard' \
             parameterization, balanced rank-one initialization with end-to-end norm {}. Full-batch GD for {} \
             steps at each step size lr_min 2^(k/{}) in [{}, {}]; each depth keeps the one that first reaches \
             (L - L*)/(L_0 - L*) <= {:.0e}. End-to-end check: depth {}, l_{} loss, initial norm {}, training time \
             {}, eta = {} / 1, 2, 4. Seed {}.",
            c.ps,
            c.depths,
            c.hidden,
            c.init_norm,
            c.steps,
            c.per_octave,
            c.lr_min,
            c.lr_max,
            c.target,
            c.dynamics_depth,
            c.dynamics_p,
            c.dynamics_init_norm,
            c.dynamics_time,
            c.dynamics_eta,
            c.seed
        ),
        comparisons,
        sections,
    }
}

#[cfg(test)]
mod tests {
    use super::super::depth::{run, DepthConfig};
    use super::super::Context;

    #[test]
    fn quick_instance_shows_acceleration_for_l4_only_and_first_order_dynamics() {
        let res = run(&DepthConfig::quick(), &mut Context::quiet()).unwrap();
        let i4 = res.ps.iter().position(|&p| p == 4).unwrap();
        let i2 = res.ps.iter().position(|&p| p == 2).unwrap();
        // Every (p, depth) reaches the target at its best step size (the comparison is between step counts).
        for r in &res.runs {
            assert!(r.steps_to_target.is_some(), "p = {}, depth {}: {:?}", r.p, r.depth, r.excess.last());
        }
        // l_4: a deeper net is clearly faster (the full instance measures about 1.7x).
        assert!(res.speedup[i4] > 1.2, "l_4 speedup {}", res.speedup[i4]);
        // l_2: no gain worth the name.
        assert!(res.speedup[i2] < 1.1, "l_2 speedup {}", res.speedup[i2]);
        // The end-to-end update is a first-order discretization of the same flow as deep GD.
        assert!((0.8..=1.25).contains(&res.deviation_slope), "slope {} ({:?})", res.deviation_slope, res.max_deviation);
        assert!(res.max_deviation.windows(2).all(|w| w[1] < w[0]));
        // The report's three checks agree.
        super::super::assert_all_agree(&super::report(&res).comparisons);
    }
}
