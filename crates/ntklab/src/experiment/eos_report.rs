//! The report of `ntklab run eos` (see `experiment/eos.rs`) and its checks.

use super::eos::EosResult;
use crate::report::{Chart, Comparison, Report, Section, Series};

fn chart(title: &str, x: &str, y: &str, log_y: bool, series: Vec<Series>, hlines: Vec<(String, f64)>) -> Chart {
    Chart { title: title.into(), x_label: x.into(), y_label: y.into(), log_x: false, log_y, series, hlines }
}

/// The checks: per step size, a crossing of 2/eta, then sharpness near 2/eta and a non-monotone loss; the flow's
/// sharpness past the largest 2/eta.
pub(crate) fn checks(res: &EosResult) -> Vec<Comparison> {
    let mut out = Vec::new();
    for r in &res.runs {
        let ok = r.first_crossing_step.is_some()
            && (0.85..=1.2).contains(&r.sharpness_after_over_2_over_eta)
            && r.loss_nonmonotone;
        out.push(Comparison {
            quantity: format!("eta = {:.4}: sharpness after it first exceeds 2/eta = {:.1}", r.eta, 2.0 / r.eta),
            expected: "hovers at 2/eta (mean S eta/2 about 1) while the loss falls non-monotonically".into(),
            measured: format!(
                "crossing at step {}, mean S eta/2 = {:.3}, loss rose at {} steps",
                r.first_crossing_step.map_or("- (never)".into(), |v| v.to_string()),
                r.sharpness_after_over_2_over_eta,
                r.loss_increases
            ),
            agrees: Some(ok),
        });
    }
    if let (Some(last), Some(small)) = (res.flow_sharpness.last(), res.runs.iter().map(|r| r.eta).reduce(f64::max)) {
        out.push(Comparison {
            quantity: "gradient flow: sharpness at the end".into(),
            expected: format!("keeps rising, past 2/eta of the largest step ({:.1})", 2.0 / small),
            measured: format!("{last:.2} at t = {}", res.flow_times.last().copied().unwrap_or(0.0)),
            agrees: Some(*last > 2.0 / small),
        });
    }
    out
}

/// The report of a summary.
pub fn report(res: &EosResult) -> Report {
    let c = &res.config;
    let sharp: Vec<Series> = res
        .runs
        .iter()
        .map(|r| {
            Series::line(
                format!("eta = {:.4}", r.eta),
                r.sharpness_steps.iter().map(|&t| t as f64).zip(r.sharpness.iter().copied()).collect(),
            )
        })
        .collect();
    let edges: Vec<(String, f64)> =
        res.runs.iter().map(|r| (format!("2/eta = {:.1}", 2.0 / r.eta), 2.0 / r.eta)).collect();
    let loss: Vec<Series> = res
        .runs
        .iter()
        .map(|r| {
            Series::line(
                format!("eta = {:.4}", r.eta),
                r.loss.iter().enumerate().map(|(t, l)| (t as f64, *l)).collect(),
            )
        })
        .collect();
    let mut by_time: Vec<Series> = res
        .runs
        .iter()
        .map(|r| {
            Series::line(
                format!("GD, eta = {:.4}", r.eta),
                r.sharpness_steps.iter().map(|&t| t as f64 * r.eta).zip(r.sharpness.iter().copied()).collect(),
            )
        })
        .collect();
    by_time.push(Series::line(
        "gradient flow",
        res.flow_times.iter().copied().zip(res.flow_sharpness.iter().copied()).collect(),
    ));
    let rows = res
        .runs
        .iter()
        .map(|r| {
            vec![
                format!("{:.5}", r.eta),
                format!("{:.2}", 2.0 / r.eta),
                r.first_crossing_step.map_or("-".into(), |v| v.to_string()),
                format!("{:.3}", r.sharpness_after_over_2_over_eta),
                r.loss_increases.to_string(),
                format!("{:.3e}", r.loss.last().copied().unwrap_or(f64::NAN)),
                format!("{:.3}", r.final_accuracy),
                r.status.clone(),
            ]
        })
        .collect();
    Report {
        title: "Gradient descent at the edge of stability".into(),
        claim: "Cohen, Kaur, Li, Kolter & Talwalkar (2021): during full-batch GD at step size eta the sharpness (top \
                Hessian eigenvalue of the training loss) rises (progressive sharpening) until it reaches the \
                stability threshold 2/eta, then hovers just above it while the loss keeps decreasing over long \
                times, non-monotonically. Gradient flow has no threshold: its sharpness keeps rising."
            .into(),
        setup: format!(
            "{} images of {} (one-hot targets), square loss 1/(2N) sum ||f - y||^2; \
             fc-tanh `flatten, dense({h}), tanh, dense({h}), tanh, dense(10)` ({} parameters), 'standard' \
             parameterization with PyTorch's default uniform initialization. GD for {} steps at eta in {:?}; \
             sharpness every {} steps by Lanczos ({} Hessian-vector products at most, {:.3} s per probe); gradient \
             flow (Dormand–Prince, rtol 1e-6) to t = {} with sharpness every {}. Seed {}.",
            c.n_train,
            if c.data.trim().eq_ignore_ascii_case("digits") {
                "the bundled digits (8 x 8)".to_string()
            } else {
                c.data.clone()
            },
            res.params,
            c.steps,
            c.etas.iter().map(|e| format!("{e:.4}")).collect::<Vec<_>>(),
            c.sharpness_every,
            c.lanczos_iter,
            res.seconds_per_probe,
            res.flow_times.last().copied().unwrap_or(0.0),
            c.flow_every,
            c.seed,
            h = c.hidden
        ),
        comparisons: checks(res),
        sections: vec![
            Section::Plot {
                stem: "sharpness".into(),
                chart: chart("Sharpness during GD", "step", "top Hessian eigenvalue", false, sharp, edges),
                caption: "Dashed: the stability thresholds 2/eta".into(),
            },
            Section::Plot {
                stem: "loss".into(),
                chart: chart("Training loss", "step", "loss", true, loss, vec![]),
                caption: "The loss keeps falling at the edge of stability, with spikes".into(),
            },
            Section::Plot {
                stem: "sharpness_by_time".into(),
                chart: chart(
                    "Sharpness against time t = eta x step, with gradient flow",
                    "t",
                    "sharpness",
                    false,
                    by_time,
                    vec![],
                ),
                caption: "Gradient flow keeps sharpening where GD stops at 2/eta".into(),
            },
            Section::Table {
                caption: "Per step size".into(),
                headers: [
                    "eta",
                    "2/eta",
                    "first crossing",
                    "mean S eta/2 after",
                    "loss rises",
                    "final loss",
                    "accuracy",
                    "status",
                ]
                .map(String::from)
                .to_vec(),
                rows,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::super::eos::{run, EosConfig};
    use super::super::Context;

    #[test]
    fn runs_on_cifar10_files_from_disk() {
        // Twenty tiny CIFAR-10 records per batch (labels 0..9, pixels from a hash): the run is configured, the
        // network reads 32 x 32 x 3 images, and every probe is finite.
        let d = std::env::temp_dir().join(format!("ntklab-eos-cifar-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let batch = |b: usize| -> Vec<u8> {
            (0..20usize)
                .flat_map(|r| {
                    std::iter::once((r % 10) as u8)
                        .chain((0..3072usize).map(move |q| ((q * 31 + r * 17 + b * 7) % 256) as u8))
                })
                .collect()
        };
        for b in 1..=5 {
            std::fs::write(d.join(format!("data_batch_{b}.bin")), batch(b)).unwrap();
        }
        std::fs::write(d.join("test_batch.bin"), batch(0)).unwrap();
        let cfg = EosConfig {
            data: "cifar10".into(),
            data_path: Some(d.clone()),
            n_train: 40,
            hidden: 16,
            etas: vec![0.05],
            steps: 40,
            sharpness_every: 20,
            flow_time: 0.0,
            ..EosConfig::quick()
        };
        let res = run(&cfg, &mut Context::quiet()).unwrap();
        assert_eq!(res.params, 3072 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10);
        assert!(res.runs[0].sharpness.iter().all(|s| s.is_finite() && *s > 0.0));
        assert_eq!(res.runs[0].loss.len(), 41);
        std::fs::remove_dir_all(&d).ok();
        let missing = EosConfig { data: "cifar10".into(), ..EosConfig::quick() };
        assert!(run(&missing, &mut Context::quiet()).unwrap_err().to_string().contains("data_path"));
    }

    #[test]
    fn quick_instance_reaches_the_edge_and_stays() {
        let res = run(&EosConfig::quick(), &mut Context::quiet()).unwrap();
        super::super::assert_all_agree(&super::checks(&res));
        // Sharpening first: the sharpness at init is below every threshold.
        for r in &res.runs {
            assert!(r.sharpness[0] < 2.0 / r.eta, "eta {}: starts at {}", r.eta, r.sharpness[0]);
        }
    }
}
