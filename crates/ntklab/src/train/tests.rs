//! Tests of the training loop against independent routes: least squares, closed-form gradient flow, the
//! closed-form linearized dynamics of `predict`, explicit finite-difference Hessians.

use faer::linalg::solvers::Solve;
use faer::Mat;

use super::*;
use crate::data::datasets::{synthetic, Builtin, Dataset, SyntheticSpec};
use crate::data::synthetic::gaussian;
use crate::kernel::{Architecture, Parameterization};
use crate::net::{Mlp, NtkOutputs};
use crate::predict::{LinearizedDynamics, Time};
use crate::spectrum::{sym_eigen, sym_eigenvalues};

fn net(arch: &str, d: usize, seed: u64) -> Mlp {
    Mlp::init(&Architecture::parse(arch, Parameterization::Ntk).unwrap(), d, 1.0, seed).unwrap()
}

fn run(net: &mut Mlp, data: &Dataset, cfg: &TrainConfig, probes: &ProbeConfig) -> TrainResult {
    train(net, data, cfg, probes, |_| Ok(())).unwrap()
}

fn teacher(n: usize, d: usize, n_test: usize) -> Dataset {
    synthetic(&SyntheticSpec { n_test, noise: Some(0.05), ..SyntheticSpec::new(Builtin::Teacher, n, d, 5) }).unwrap()
}

/// The linear model f = c X w (one bias-free dense layer, c = 1/sqrt(d)): A = c^2 X^T X / N, b = c X^T y / N,
/// so L(w) = w^T A w / 2 - b^T w + const and grad L = A w - b.
fn linear_problem(n: usize, d: usize) -> (Dataset, Mat<f64>, Mat<f64>) {
    let x = gaussian(n, d, 1);
    let y = gaussian(n, 1, 2);
    let c = 1.0 / (d as f64).sqrt();
    let a = (c * c / n as f64) * (x.transpose() * &x);
    let b = (c / n as f64) * (x.transpose() * &y);
    (Dataset::new(x, y).unwrap(), a, b)
}

#[test]
fn gd_on_a_linear_model_reaches_least_squares() {
    // Overdetermined (N = 20 > d = 5): the unique minimizer solves A w = b. GD at eta = 1/lambda_max contracts
    // the error by (1 - lambda_min/lambda_max) per step; 3000 steps take it far below the 1e-9 tolerance.
    let (data, a, b) = linear_problem(20, 5);
    let mut m = net("dense(1)", 5, 3);
    let lmax = *sym_eigenvalues(a.as_ref()).unwrap().last().unwrap();
    let res = run(&mut m, &data, &TrainConfig::gd(1.0 / lmax, 3000), &ProbeConfig::loss_only(1000));
    assert_eq!(res.status, Status::Completed);
    assert_eq!(res.records.len(), 4);
    let w_star = a.partial_piv_lu().solve(&b);
    let w = m.params();
    for i in 0..5 {
        assert!((w[i] - w_star[(i, 0)]).abs() < 1e-9, "w[{i}] = {} vs {}", w[i], w_star[(i, 0)]);
    }
    assert!((res.t - 3000.0 / lmax).abs() < 1e-9 * res.t);
}

#[test]
fn gd_on_a_deep_linear_network_finds_the_linear_solution() {
    // Realizable targets y = X beta with N >= d: the end-to-end map (c3 W3)(c2 W2)(c1 W1) must converge to beta
    // (Arora et al. 2018 prove convergence from balanced-enough starts; here it is a regression check with a
    // generous 1e-6 tolerance on a loss driven to ~1e-16).
    let (n, d) = (16, 3);
    let x = gaussian(n, d, 4);
    let beta = [0.7, -1.2, 0.4];
    let y = Mat::from_fn(n, 1, |i, _| (0..d).map(|j| x[(i, j)] * beta[j]).sum());
    let data = Dataset::new(x, y).unwrap();
    let mut m = Mlp::deep_linear(d, 8, 3, 1, Parameterization::Ntk, 2).unwrap();
    let res = run(&mut m, &data, &TrainConfig::gd(0.3, 4000), &ProbeConfig::loss_only(4000));
    assert_eq!(res.status, Status::Completed);
    assert!(res.last.as_ref().unwrap().loss < 1e-14, "loss {}", res.last.unwrap().loss);
    let mut prod = Mat::<f64>::identity(d, d);
    for (i, l) in m.dense.iter().enumerate() {
        prod = faer::Scale(l.w_mult) * m.weight(i) * &prod;
    }
    for j in 0..d {
        assert!((prod[(0, j)] - beta[j]).abs() < 1e-6, "beta[{j}]: {} vs {}", prod[(0, j)], beta[j]);
    }
}

#[test]
fn momentum_nesterov_and_sgd_decrease_the_loss() {
    let data = teacher(32, 4, 0);
    let arch = "dense(32,b_std=0.1),tanh,dense(1)";
    let cases = [
        TrainConfig::momentum(0.2, 200, 0.9),
        TrainConfig {
            method: Method::Discrete { batch: Some(8), momentum: 0.9, nesterov: true },
            ..TrainConfig::gd(0.1, 200)
        },
        TrainConfig::sgd(0.5, 400, 8).with_seed(11),
        TrainConfig::sgd(0.5, 400, 8)
            .with_schedule(Schedule { decay: Decay::Cosine { final_factor: 0.0 }, warmup: 20 })
            .with_seed(11),
    ];
    for cfg in cases {
        let mut m = net(arch, 4, 1);
        let res = run(&mut m, &data, &cfg, &ProbeConfig::loss_only(50));
        assert_eq!(res.status, Status::Completed, "{cfg:?}");
        let (l0, l1) = (res.records[0].loss, res.last.as_ref().unwrap().loss);
        assert!(l1 < 0.3 * l0, "{:?}: loss {l0} -> {l1}", cfg.method);
        // The recorded rate follows the schedule.
        for r in &res.records[..res.records.len() - 1] {
            assert_eq!(r.lr, cfg.lr_at(r.step));
        }
    }
}

#[test]
fn gradient_flow_matches_the_closed_form_linear_model() {
    // Underdetermined (d = 6 > N = 4): A is singular, w(t) = w0 - U diag((1 - e^{-lambda t})/lambda) U^T (A w0 - b)
    // with the zero modes contributing t (their gradient component is exactly 0 anyway). rtol = 1e-10 keeps
    // the global error near 1e-9; we allow 1e-7.
    let (data, a, b) = linear_problem(4, 6);
    let mut m = net("dense(1)", 6, 7);
    let w0 = Mat::from_fn(6, 1, |i, _| m.params()[i]);
    let g0 = &a * &w0 - &b;
    let ode = OdeOptions { rtol: 1e-10, atol: 1e-13, ..Default::default() };
    let mut seen = Vec::new();
    let cfg = TrainConfig::flow(0.05, 100, ode);
    let res = train(&mut m, &data, &cfg, &ProbeConfig::loss_only(25), |r| {
        seen.push(r.clone());
        Ok(())
    })
    .unwrap();
    assert_eq!(res.status, Status::Completed);
    assert_eq!(seen.iter().map(|r| r.step).collect::<Vec<_>>(), [0, 25, 50, 75, 100]);
    let e = sym_eigen(a.as_ref()).unwrap();
    let closed = |t: f64| {
        let coef = e.vectors.transpose() * &g0;
        let scaled = Mat::from_fn(6, 1, |i, _| {
            let l = e.values[i];
            coef[(i, 0)] * if l.abs() < 1e-14 { t } else { -(-l * t).exp_m1() / l }
        });
        &w0 - &e.vectors * scaled
    };
    let want = closed(5.0);
    let w = m.params();
    for i in 0..6 {
        assert!((w[i] - want[(i, 0)]).abs() < 1e-7, "w[{i}]: {} vs {}", w[i], want[(i, 0)]);
    }
    // Loss at every record from the closed form.
    for r in &seen {
        let wt = closed(r.t);
        let f = &data.x * &wt * (1.0 / 6f64.sqrt());
        let l = Loss::Mse.value(f.as_ref(), data.y.as_ref()).unwrap();
        assert!((r.loss - l).abs() < 1e-8 * l.max(1e-3), "t = {}: {} vs {l}", r.t, r.loss);
        assert!(r.ode.is_some());
    }
    assert!(res.ode.unwrap().accepted > 0);
}

#[test]
fn linearized_model_follows_the_closed_form_kernel_dynamics() {
    // The tangent model f_lin = f0 + J0 (w - w0) trained on MSE is exactly linear dynamics in function space:
    // GD gives f_s = y - (I - eta Theta/N)^s (y - f0), the flow f_t = y - exp(-t Theta/N)(y - f0) (our t =
    // eta * steps is predict's Flow time with eta = 1). Only rounding (GD) or the integrator tolerance (flow)
    // separate the routes.
    let data = teacher(10, 3, 6);
    let arch = "dense(24,b_std=0.2),tanh,dense(1,b_std=0.1)";
    let m0 = net(arch, 3, 9);
    let (xt, _) = data.test.as_ref().unwrap();
    let theta = m0.empirical_ntk(data.x.as_ref(), None, NtkOutputs::Trace).unwrap();
    let theta_tx = m0.empirical_ntk(xt.as_ref(), Some(data.x.as_ref()), NtkOutputs::Trace).unwrap();
    let f0 = m0.forward(data.x.as_ref()).unwrap();
    let f0t = m0.forward(xt.as_ref()).unwrap();
    let probes = ProbeConfig::loss_only(10).with(Probe::Linearized);
    let lin_outputs = |res: &TrainResult| {
        let delta: Vec<f64> =
            res.linearized_params.as_ref().unwrap().iter().zip(m0.params()).map(|(a, b)| a - b).collect();
        (&f0 + m0.jvp(data.x.as_ref(), &delta).unwrap(), &f0t + m0.jvp(xt.as_ref(), &delta).unwrap())
    };
    let (eta, steps) = (0.5, 40);
    let mut m = m0.clone();
    let res = run(&mut m, &data, &TrainConfig::gd(eta, steps), &probes);
    let (ftr, fte) = lin_outputs(&res);
    let dynm = LinearizedDynamics::new(theta.as_ref(), eta).unwrap();
    let want = dynm.train(data.y.as_ref(), Some(f0.as_ref()), Time::Steps(steps)).unwrap();
    let want_t = dynm
        .test(theta_tx.as_ref(), data.y.as_ref(), Some(f0.as_ref()), Some(f0t.as_ref()), Time::Steps(steps))
        .unwrap();
    assert!((&ftr - &want).norm_max() < 1e-10, "train: {:e}", (&ftr - &want).norm_max());
    assert!((&fte - &want_t).norm_max() < 1e-8, "test: {:e}", (&fte - &want_t).norm_max());
    // The record's lin_loss is the loss of these outputs, and the network stays close (wide-ish, small lr).
    let last = res.last.as_ref().unwrap();
    let l = Loss::Mse.value(want.as_ref(), data.y.as_ref()).unwrap();
    assert!((last.lin_loss.unwrap() - l).abs() < 1e-10 * l.max(1.0));
    assert!(last.lin_distance.unwrap() < 0.2 && last.lin_test_distance.is_some());
    assert_eq!(res.records[0].lin_distance, Some(0.0));

    // Gradient flow of the pair (network, tangent model).
    let mut m = m0.clone();
    let ode = OdeOptions { rtol: 1e-10, atol: 1e-12, ..Default::default() };
    let res = run(&mut m, &data, &TrainConfig::flow(eta, steps, ode), &probes);
    let (ftr, _) = lin_outputs(&res);
    let want = LinearizedDynamics::new(theta.as_ref(), 1.0)
        .unwrap()
        .train(data.y.as_ref(), Some(f0.as_ref()), Time::Flow(eta * steps as f64))
        .unwrap();
    assert!((&ftr - &want).norm_max() < 1e-7, "flow: {:e}", (&ftr - &want).norm_max());
}

/// Explicit Hessian by central differences of the exact gradient, symmetrized: an independent route.
fn fd_hessian(m: &Mlp, data: &Dataset, loss: Loss) -> Mat<f64> {
    let w = m.params().to_vec();
    let p = w.len();
    let h = 1e-5;
    let mut hess = Mat::<f64>::zeros(p, p);
    let mut work = m.clone();
    for j in 0..p {
        let mut g = [vec![], vec![]];
        for (s, sign) in [1.0, -1.0].iter().enumerate() {
            let mut wp = w.clone();
            wp[j] += sign * h;
            work.set_params(&wp).unwrap();
            g[s] = work.loss_and_gradient(data.x.as_ref(), data.y.as_ref(), loss).unwrap().1;
        }
        for i in 0..p {
            hess[(i, j)] = (g[0][i] - g[1][i]) / (2.0 * h);
        }
    }
    Mat::from_fn(p, p, |i, j| 0.5 * (hess[(i, j)] + hess[(j, i)]))
}

#[test]
fn sharpness_probe_equals_the_explicit_hessian_spectrum() {
    // P = 17 parameters; Lanczos with max_iter = P spans the whole space, so its top eigenvalues are exact to
    // rounding. Central differences (h = 1e-5) are accurate to ~1e-9 relative; we allow 1e-6.
    for loss in [Loss::Mse, Loss::Logistic] {
        let mut data = teacher(8, 2, 0);
        if loss == Loss::Logistic {
            data.y = Mat::from_fn(8, 1, |i, _| if data.y[(i, 0)] > 0.0 { 1.0 } else { -1.0 });
        }
        let m0 = net("dense(4,b_std=0.3),tanh,dense(1,b_std=0.2)", 2, 4);
        let mut m = m0.clone();
        let probes =
            ProbeConfig { hessian_top_k: 3, lanczos_max_iter: 17, ..ProbeConfig::loss_only(5).with(Probe::Sharpness) };
        let res = run(&mut m, &data, &TrainConfig::gd(0.5, 5).with_loss(loss), &probes);
        for (r, at) in [(&res.records[0], &m0), (res.records.last().unwrap(), &m)] {
            let ev = sym_eigenvalues(fd_hessian(at, &data, loss).as_ref()).unwrap();
            let top = r.hessian_top.as_ref().unwrap();
            assert_eq!(top.len(), 3);
            for k in 0..3 {
                let want = ev[ev.len() - 1 - k];
                assert!(
                    (top[k] - want).abs() < 1e-6 * ev[ev.len() - 1].abs(),
                    "{loss} step {}: {} vs {want}",
                    r.step,
                    top[k]
                );
            }
            assert_eq!(r.sharpness, Some(top[0]));
        }
    }
}

#[test]
fn ntk_probes_match_the_kernel_and_pl_weights_follow_their_definitions() {
    let data = teacher(12, 3, 0);
    let m0 = net("dense(16,b_std=0.1),relu,dense(1)", 3, 2);
    let mut m = m0.clone();
    let probes = ProbeConfig { ntk_subset: Some(7), ..ProbeConfig::all(10) };
    let res = run(&mut m, &data, &TrainConfig::gd(0.5, 10), &probes);
    let sub = data.x.as_ref().subrows(0, 7);
    let k0 = m0.empirical_ntk(sub, None, NtkOutputs::Full).unwrap();
    let k1 = m.empirical_ntk(sub, None, NtkOutputs::Full).unwrap();
    let ev = sym_eigenvalues(super::probes::symmetrized(&k1).as_ref()).unwrap();
    let r = res.last.as_ref().unwrap();
    assert!((r.ntk_max.unwrap() - ev[6]).abs() < 1e-12 * ev[6]);
    assert!((r.ntk_min.unwrap() - ev[0]).abs() < 1e-10 * ev[6]);
    assert!((r.ntk_change.unwrap() - (&k1 - &k0).norm_l2() / k0.norm_l2()).abs() < 1e-12);
    assert_eq!(res.records[0].ntk_change, Some(0.0));
    assert_eq!(res.records[0].weight_change, Some(0.0));
    let (w0, w1) = (m0.params(), m.params());
    let dw: f64 = w0.iter().zip(w1).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
    let n0: f64 = w0.iter().map(|a| a * a).sum::<f64>().sqrt();
    assert!((r.weight_change.unwrap() - dw / n0).abs() < 1e-14);
    let (l, g) = m.loss_and_gradient(data.x.as_ref(), data.y.as_ref(), Loss::Mse).unwrap();
    let gn: f64 = g.iter().map(|a| a * a).sum::<f64>().sqrt();
    assert!((r.loss - l).abs() < 1e-14 && (r.grad_norm - gn).abs() < 1e-12);
    assert!((r.pl_ratio.unwrap() - gn * gn / (2.0 * l)).abs() < 1e-12);
    assert!(r.accuracy.is_some());
}

#[test]
fn a_huge_learning_rate_diverges_without_panicking() {
    let data = teacher(16, 3, 4);
    for cfg in [TrainConfig::gd(1e6, 100), TrainConfig::sgd(1e6, 100, 4), TrainConfig::momentum(1e5, 100, 0.9)] {
        let mut m = net("dense(16,b_std=0.1),relu,dense(1)", 3, 2);
        let res = run(&mut m, &data, &cfg, &ProbeConfig::all(10));
        match &res.status {
            Status::Diverged { step, reason } => {
                assert!(*step < 100 && !reason.is_empty());
                assert!(res.steps <= *step);
            }
            s => panic!("expected divergence, got {s:?}"),
        }
        assert_eq!(res.records[0].step, 0);
        assert!(res.status.to_string().starts_with("diverged at step"));
    }
    // A custom factor stops earlier: loss > 2 x initial.
    let mut m = net("dense(16,b_std=0.1),relu,dense(1)", 3, 2);
    let cfg = TrainConfig { divergence_factor: 2.0, ..TrainConfig::gd(50.0, 100) };
    assert!(matches!(run(&mut m, &data, &cfg, &ProbeConfig::loss_only(1)).status, Status::Diverged { .. }));
}

#[test]
fn stop_loss_ends_early() {
    let (data, _, _) = linear_problem(20, 5);
    let mut m = net("dense(1)", 5, 3);
    let cfg = TrainConfig { stop_loss: Some(0.6), ..TrainConfig::gd(1.0, 10_000) };
    let mut ticks = Vec::new();
    let res = train_with_progress(
        &mut m,
        &data,
        &cfg,
        &ProbeConfig::loss_only(1),
        |_| Ok(()),
        |s, _| {
            ticks.push(s);
            Ok(())
        },
    )
    .unwrap();
    match res.status {
        Status::Converged { step } => {
            assert!(step < 10_000 && res.last.unwrap().loss <= 0.6);
            assert_eq!(ticks, (1..=step).collect::<Vec<_>>());
        }
        s => panic!("{s:?}"),
    }
}

#[test]
fn records_do_not_depend_on_the_thread_count() {
    // Wide enough for faer to split GEMMs across threads.
    let data = teacher(48, 8, 16);
    let go = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut m = net("dense(96,b_std=0.1),tanh,dense(96),relu,dense(1)", 8, 1);
            let probes =
                ProbeConfig { hessian_top_k: 2, lanczos_max_iter: 30, ntk_subset: Some(24), ..ProbeConfig::all(5) };
            let mut lines = Vec::new();
            let res = train(&mut m, &data, &TrainConfig::sgd(0.5, 15, 16).with_seed(3), &probes, |r| {
                lines.push(serde_json::to_string(r).unwrap());
                Ok(())
            })
            .unwrap();
            (lines, m.params().to_vec(), res.status)
        })
    };
    let (a, wa, sa) = go(1);
    let (b, wb, sb) = go(3);
    assert_eq!(sa, Status::Completed);
    assert_eq!(sa, sb);
    assert_eq!(a, b);
    assert_eq!(wa, wb);
}

#[test]
fn bad_inputs_are_errors() {
    let data = teacher(8, 3, 0);
    let mut m = net("dense(4),relu,dense(1)", 3, 1);
    let ok = ProbeConfig::loss_only(1);
    assert!(train(&mut m, &data, &TrainConfig::sgd(0.1, 5, 9), &ok, |_| Ok(())).is_err());
    assert!(train(&mut m, &data, &TrainConfig::gd(0.0, 5), &ok, |_| Ok(())).is_err());
    let mut wrong_d = net("dense(4),relu,dense(1)", 2, 1);
    assert!(train(&mut wrong_d, &data, &TrainConfig::gd(0.1, 5), &ok, |_| Ok(())).is_err());
    // Regression targets are not logistic labels.
    assert!(train(&mut m, &data, &TrainConfig::gd(0.1, 5).with_loss(Loss::Logistic), &ok, |_| Ok(())).is_err());
    // A callback error aborts the run.
    let r = train(&mut m, &data, &TrainConfig::gd(0.1, 5), &ok, |_| Err(crate::Error::Config("stop".into())));
    assert!(r.is_err());
}

#[test]
fn streaming_keeps_no_records_and_thinned_reads_keep_the_ends() {
    let (data, _, _) = linear_problem(20, 5);
    let cfg = TrainConfig::gd(0.5, 300);
    let probes = ProbeConfig::loss_only(1);
    let mut kept = net("dense(1)", 5, 3);
    let all = train(&mut kept, &data, &cfg, &probes, |_| Ok(())).unwrap();
    let mut streamed = net("dense(1)", 5, 3);
    let mut lines = Vec::new();
    let res = train_streaming(
        &mut streamed,
        &data,
        &cfg,
        &probes,
        |r| {
            lines.push(serde_json::to_string(r).unwrap());
            Ok(())
        },
        |_, _| Ok(()),
    )
    .unwrap();
    assert!(res.records.is_empty());
    assert_eq!(res.last, all.last);
    assert_eq!(lines.len(), all.records.len());
    assert_eq!(streamed.params(), kept.params());
    let path = std::env::temp_dir().join(format!("ntklab-records-{}.jsonl", std::process::id()));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let thin = super::report::read_records_thinned(&path, 50).unwrap();
    assert!(thin.len() <= 52 && thin.len() >= 40, "{}", thin.len());
    assert_eq!(thin.first().unwrap(), &all.records[0]);
    assert_eq!(thin.last().unwrap(), all.records.last().unwrap());
    assert!(thin.windows(2).all(|w| w[0].step < w[1].step));
    std::fs::remove_file(&path).ok();
}
