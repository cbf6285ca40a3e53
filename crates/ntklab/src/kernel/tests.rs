//! Reference-route tests for the infinite-width kernels: Monte Carlo over wide random finite networks,
//! quadrature against closed forms, hand-checked values, symmetry/PSD, precision and bad input.

use faer::{Mat, MatRef};
use rayon::prelude::*;

use super::*;
use crate::data::synthetic::{derive_seed, gaussian};
use crate::net::Mlp;

/// Per-draw (NNGP, NTK) estimates of a random finite network on the rows of x (N x d):
/// NNGP = w_L^2 H_{L-1} H_{L-1}^T + b_L^2 (exact expectation over the readout), and the empirical NTK
/// sum_l (G_l G_l^T) .* (c_l^2 H_{l-1} H_{l-1}^T + b_l^2) with G_l = df/dZ_l, all by explicit loops here
/// (an independent route from the kernel recursion and from the `net` module's derivatives).
fn finite_kernels(net: &Mlp, x: &Mat<f64>) -> (Mat<f64>, Mat<f64>) {
    let n = x.nrows();
    let gram = |h: &Mat<f64>| Mat::from_fn(n, n, |i, j| (0..h.ncols()).map(|k| h[(i, k)] * h[(j, k)]).sum::<f64>());
    // Forward, keeping layer inputs H_{l-1} and pre-activations Z_l.
    let mut hs = vec![x.clone()];
    let mut zs = Vec::new();
    // The activation right after Dense node l (a chain: the next node), if any.
    let act_after = |l: usize| -> Option<super::Activation> {
        match net.graph.nodes.get(net.dense[l].node + 1).map(|n| &n.op) {
            Some(super::Op::Activation(a)) => Some(a.clone()),
            _ => None,
        }
    };
    for (l, d) in net.dense.iter().enumerate() {
        let h_in = hs.last().unwrap();
        let z = Mat::from_fn(n, d.n_out, |i, o| {
            (0..d.n_in).map(|k| d.w_mult * net.weight(l)[(o, k)] * h_in[(i, k)]).sum::<f64>()
                + net.bias(l).map_or(0.0, |b| d.b_mult * b[o])
        });
        let h = match &act_after(l) {
            Some(a) => Mat::from_fn(z.nrows(), z.ncols(), |i, j| a.apply(z[(i, j)])),
            None => z.clone(),
        };
        zs.push(z);
        hs.push(h);
    }
    let last = net.dense.len() - 1;
    let dl = &net.dense[last];
    let gl = gram(&hs[last]);
    let bias2 = |d: &crate::net::DenseParams| if d.has_bias() { d.b_mult * d.b_mult } else { 0.0 };
    // Readout weights/bias have effective variances (w_mult w_init)^2 and (b_mult b_init)^2.
    let (cw, cb) = (dl.w_mult * dl.w_init, if dl.has_bias() { dl.b_mult * dl.b_init } else { 0.0 });
    let nngp = Mat::from_fn(n, n, |i, j| cw * cw * gl[(i, j)] + cb * cb);
    // Backward: G = df/dZ_l (N x n_out), starting from alpha at the readout.
    let mut g = Mat::from_fn(n, 1, |_, _| net.alpha);
    let mut ntk = Mat::<f64>::zeros(n, n);
    for l in (0..=last).rev() {
        let d = &net.dense[l];
        let hh = gram(&hs[l]);
        let gg = gram(&g);
        for i in 0..n {
            for j in 0..n {
                ntk[(i, j)] += gg[(i, j)] * (d.w_mult * d.w_mult * hh[(i, j)] + bias2(d));
            }
        }
        if l > 0 {
            let act = act_after(l - 1);
            let z = &zs[l - 1];
            g = Mat::from_fn(n, d.n_in, |i, k| {
                let back: f64 = (0..d.n_out).map(|o| g[(i, o)] * net.weight(l)[(o, k)]).sum::<f64>() * d.w_mult;
                back * act.as_ref().map_or(1.0, |a| a.derivative(z[(i, k)]))
            });
        }
    }
    (nngp, ntk)
}

/// Mean and standard error over `draws` seeded networks.
fn monte_carlo(arch: &Architecture, x: &Mat<f64>, draws: usize, seed: u64) -> [(Mat<f64>, Mat<f64>); 2] {
    let n = x.nrows();
    let samples: Vec<(Mat<f64>, Mat<f64>)> = (0..draws)
        .into_par_iter()
        .map(|k| {
            let net = Mlp::init(arch, x.ncols(), 1.0, derive_seed(seed, k as u64)).unwrap();
            finite_kernels(&net, x)
        })
        .collect();
    type Pair = (Mat<f64>, Mat<f64>);
    let stats = |pick: &dyn Fn(&Pair) -> f64| {
        let m = samples.iter().map(pick).sum::<f64>() / draws as f64;
        let v = samples.iter().map(|s| (pick(s) - m).powi(2)).sum::<f64>() / (draws as f64 - 1.0);
        (m, (v / draws as f64).sqrt())
    };
    let mut out = [(Mat::zeros(n, n), Mat::zeros(n, n)), (Mat::zeros(n, n), Mat::zeros(n, n))];
    for i in 0..n {
        for j in 0..n {
            let (m, se) = stats(&|s| s.0[(i, j)]);
            out[0].0[(i, j)] = m;
            out[0].1[(i, j)] = se;
            let (m, se) = stats(&|s| s.1[(i, j)]);
            out[1].0[(i, j)] = m;
            out[1].1[(i, j)] = se;
        }
    }
    out
}

/// Analytic kernel within 5 standard errors (CLT over draws: a false alarm has probability < 1e-6 per
/// entry) plus a finite-width bias allowance of 4/width relative (the NNGP/NTK of a width-n net differ
/// from the limit by O(1/n) in expectation, with a depth-dependent constant of order one).
fn check_mc(spec: &str, param: Parameterization, width: usize, draws: usize) {
    let arch = Architecture::parse(spec, param).unwrap();
    let x = Mat::from_fn(4, 6, |i, j| gaussian(4, 6, 11)[(i, j)] * 0.9);
    let k = kernel(&arch, x.as_ref(), None).unwrap();
    let [(mn, sn), (mt, st)] = monte_carlo(&arch, &x, draws, 99);
    for i in 0..4 {
        for j in 0..4 {
            for (name, an, m, se) in
                [("nngp", k.nngp[(i, j)], mn[(i, j)], sn[(i, j)]), ("ntk", k.ntk[(i, j)], mt[(i, j)], st[(i, j)])]
            {
                let tol = 5.0 * se + 4.0 / width as f64 * an.abs() + 1e-12;
                assert!(
                    (an - m).abs() <= tol,
                    "{spec} [{param}] {name}[{i},{j}]: analytic {an}, MC {m} +- {se} (tol {tol})"
                );
            }
        }
    }
}

#[test]
fn monte_carlo_relu_depth_1_to_3() {
    check_mc("dense(2048,w_std=1.4,b_std=0.3),relu,dense(1,w_std=1.2,b_std=0.2)", Parameterization::Ntk, 2048, 120);
    check_mc(
        "dense(1024,w_std=1.5,b_std=0.1),relu,dense(1024,w_std=1.5,b_std=0.1),relu,dense(1,b_std=0.1)",
        Parameterization::Ntk,
        1024,
        100,
    );
    check_mc(
        "dense(512,w_std=1.3),relu,dense(512,w_std=1.3,b_std=0.2),relu,dense(512,w_std=1.3),relu,dense(1,w_std=1.3)",
        Parameterization::Ntk,
        512,
        150,
    );
}

#[test]
fn monte_carlo_erf_and_standard_parameterization() {
    check_mc("dense(2048,w_std=1.7,b_std=0.2),erf,dense(1,b_std=0.5)", Parameterization::Ntk, 2048, 120);
    check_mc(
        "dense(1024,w_std=2.0),erf(1.5,0.8,0.1),dense(1024,w_std=1.2,b_std=0.3),erf,dense(1)",
        Parameterization::Ntk,
        1024,
        100,
    );
    check_mc(
        "dense(1024,w_std=1.4,b_std=0.2),relu,dense(1,w_std=1.1,b_std=0.3)",
        Parameterization::Standard,
        1024,
        120,
    );
    check_mc(
        "dense(512,w_std=1.3),erf,dense(512,w_std=1.5,b_std=0.1),relu,dense(1,b_std=0.1)",
        Parameterization::Standard,
        512,
        120,
    );
}

#[test]
fn monte_carlo_quadrature_activations() {
    check_mc("dense(2048,w_std=1.5,b_std=0.2),tanh,dense(1)", Parameterization::Ntk, 2048, 120);
    check_mc(
        "dense(1024,w_std=1.2),softplus,dense(1024,b_std=0.4),silu,dense(1,b_std=0.1)",
        Parameterization::Ntk,
        1024,
        100,
    );
    check_mc("dense(2048,w_std=1.1,b_std=0.3),gelu,dense(1,b_std=0.1)", Parameterization::Ntk, 2048, 120);
    // Large pre-activation variances (q ~ 4-6): the variance-adapted trapezoidal rule (tanh, two layers) and the
    // semi-analytic ELU dual. With `quad(tanh, 48)` in place of `tanh` this check fails (NTK[0,0] 2.933 against
    // MC 3.054 +- 0.022).
    check_mc(
        "dense(1024,w_std=2.5,b_std=0.2),tanh,dense(1024,w_std=2.0),tanh,dense(1)",
        Parameterization::Ntk,
        1024,
        120,
    );
    check_mc(
        "dense(1024,w_std=2.2),elu(0.5),dense(1024,w_std=1.8,b_std=0.1),elu,dense(1)",
        Parameterization::Ntk,
        1024,
        120,
    );
}

#[test]
fn closed_forms_agree_with_quadrature() {
    // Smooth activations: the Gauss-Hermite product rule converges spectrally; 64 nodes give ~1e-10.
    // Piecewise-linear ones have a kink, so the rule converges only algebraically: a looser 2e-3 relative.
    let gh = GaussHermite::new(64);
    let gh_fine = GaussHermite::new(200);
    let covs = [(1.0, 0.3, 1.2), (0.5, -0.4, 0.9), (2.0, 1.9, 2.0), (1.0, 0.0, 1.0), (0.7, 0.7, 0.7), (1.5, -1.2, 1.1)];
    for act in Activation::catalogue() {
        if !act.has_closed_form() || act == Activation::Sign {
            // Sign is a step function: quadrature converges too slowly; see `sign_dual_by_sampling`.
            continue;
        }
        for &(s11, s12, s22) in &covs {
            let (t, td) = act.closed_dual(s11, s12, s22).unwrap();
            let (rule, tol) = if act.is_piecewise_linear() { (&gh_fine, 2e-3) } else { (&gh, 1e-9) };
            let (qt, qtd) = rule.dual(&act, s11, s12, s22);
            let scale = 1.0 + t.abs();
            assert!((t - qt).abs() < tol * scale, "{act} T({s11},{s12},{s22}): closed {t} vs quadrature {qt}");
            if !act.is_piecewise_linear() {
                // Piecewise-linear activations have step-function derivatives, on which Gauss-Hermite converges
                // too slowly to be a useful check; their Tdot is checked by Price's theorem below instead.
                let scale = 1.0 + td.abs();
                let tol_d = tol;
                assert!(
                    (td - qtd).abs() < tol_d * scale,
                    "{act} Tdot({s11},{s12},{s22}): closed {td} vs quadrature {qtd}"
                );
            }
        }
    }
}

#[test]
fn sign_dual_by_sampling() {
    // E[sign(u) sign(v)] by 400k seeded Gaussian pairs: standard error <= 1/sqrt(4e5) = 1.6e-3; allow 5 SE.
    use rand_distr::{Distribution, StandardNormal};
    let mut r = crate::data::synthetic::rng(4);
    for &(s11, s12, s22) in &[(1.0, 0.3, 1.2), (0.5, -0.4, 0.9), (2.0, 1.9, 2.0)] {
        let (a, b) = (f64::sqrt(s11), s12 / f64::sqrt(s11));
        let c = (s22 - b * b).sqrt();
        let m = 400_000;
        let mut acc = 0.0;
        for _ in 0..m {
            let z1: f64 = StandardNormal.sample(&mut r);
            let z2: f64 = StandardNormal.sample(&mut r);
            acc += Activation::Sign.apply(a * z1) * Activation::Sign.apply(b * z1 + c * z2);
        }
        let t = Activation::Sign.closed_dual(s11, s12, s22).unwrap().0;
        assert!((acc / m as f64 - t).abs() < 8e-3, "sign T: sampled {} vs closed {t}", acc / m as f64);
    }
}

#[test]
fn tdot_is_the_derivative_of_t() {
    // Price's theorem: dT/ds12 = E[phi'(u) phi'(v)] = Tdot, for every closed form with a derivative.
    let h = 1e-6;
    for act in Activation::catalogue() {
        if !act.has_closed_form() || act == Activation::Sign {
            continue;
        }
        for &(s11, s12, s22) in &[(1.0, 0.3, 1.2), (0.5, -0.2, 0.9), (2.0, 0.5, 1.0)] {
            let fd = (act.closed_dual(s11, s12 + h, s22).unwrap().0 - act.closed_dual(s11, s12 - h, s22).unwrap().0)
                / (2.0 * h);
            let td = act.closed_dual(s11, s12, s22).unwrap().1;
            assert!((fd - td).abs() < 1e-6 * (1.0 + td.abs()), "{act}: dT/ds12 {fd} vs Tdot {td}");
        }
    }
}

#[test]
fn depth_one_relu_is_the_arc_cosine_kernel() {
    // dense(w) -> relu -> dense(1), ntk parameterization, no bias: NNGP = w^2 * T_relu(w^2 Sigma0),
    // NTK = NNGP + w^2 * (w^2 Sigma0) * Tdot. Hand-checked pairs in d = 2 with Sigma0 = x.x'/2.
    let arch = Architecture::parse("dense(100),relu,dense(1)", Parameterization::Ntk).unwrap();
    let x = Mat::from_fn(3, 2, |i, j| [[2f64.sqrt(), 0.0], [0.0, 2f64.sqrt()], [1.0, 1.0]][i][j]);
    let k = kernel(&arch, x.as_ref(), None).unwrap();
    let pi = std::f64::consts::PI;
    // x0 . x0 / 2 = 1: NNGP = 1/2, NTK = 1/2 + 1 * 1/2 = 1.
    assert!((k.nngp[(0, 0)] - 0.5).abs() < 1e-15 && (k.ntk[(0, 0)] - 1.0).abs() < 1e-15);
    // Orthogonal x0, x1: NNGP = 1/(2 pi), NTK = 1/(2 pi) + 0.
    assert!((k.nngp[(0, 1)] - 1.0 / (2.0 * pi)).abs() < 1e-15 && (k.ntk[(0, 1)] - 1.0 / (2.0 * pi)).abs() < 1e-15);
    // x0, x2 at 45 degrees, both unit variance: NNGP = (sin + (pi - pi/4) cos)/(2 pi); Tdot = 3/8.
    let c = 0.5f64.sqrt();
    let nngp = (c + 0.75 * pi * c) / (2.0 * pi);
    assert!((k.nngp[(0, 2)] - nngp).abs() < 1e-15);
    assert!((k.ntk[(0, 2)] - (nngp + c * 0.375)).abs() < 1e-15);
}

#[test]
fn symmetric_psd_and_consistent_with_cross_kernel() {
    let arch = Architecture::parse(
        "dense(64,w_std=1.4,b_std=0.1),gelu,dense(64,w_std=1.3),relu,dense(1)",
        Parameterization::Ntk,
    )
    .unwrap();
    let x = gaussian(40, 7, 5);
    let k = kernel(&arch, x.as_ref(), None).unwrap();
    let kx = kernel(&arch, x.as_ref(), Some(x.as_ref())).unwrap();
    for m in [&k.nngp, &k.ntk] {
        for i in 0..40 {
            for j in 0..40 {
                assert_eq!(m[(i, j)], m[(j, i)]);
            }
        }
        let ev = m.self_adjoint_eigenvalues(faer::Side::Lower).unwrap();
        assert!(ev[0] > -1e-10 * ev[39], "min eigenvalue {} (max {})", ev[0], ev[39]);
    }
    // The cross kernel with x2 = x takes row norms instead of the Gram diagonal: equal up to rounding,
    // except that on the diagonal acos(1 - eps) ~ sqrt(2 eps) turns 1e-16 into ~1e-8 in the ReLU's Tdot.
    for i in 0..40 {
        for j in 0..40 {
            let tol = if i == j { 1e-7 } else { 1e-11 };
            assert!(
                (k.nngp[(i, j)] - kx.nngp[(i, j)]).abs() < tol * (1.0 + k.nngp[(i, j)].abs()),
                "nngp {i},{j}: {} vs {}",
                k.nngp[(i, j)],
                kx.nngp[(i, j)]
            );
            assert!(
                (k.ntk[(i, j)] - kx.ntk[(i, j)]).abs() < tol * (1.0 + k.ntk[(i, j)].abs()),
                "ntk {i},{j}: {} vs {}",
                k.ntk[(i, j)],
                kx.ntk[(i, j)]
            );
        }
    }
    // Cross kernel between two sets equals the block of the joint kernel.
    let a = gaussian(5, 7, 8);
    let b = gaussian(6, 7, 9);
    let ab = Mat::from_fn(11, 7, |i, j| if i < 5 { a[(i, j)] } else { b[(i - 5, j)] });
    let joint = kernel(&arch, ab.as_ref(), None).unwrap();
    let cross = kernel(&arch, a.as_ref(), Some(b.as_ref())).unwrap();
    for i in 0..5 {
        for j in 0..6 {
            assert!((joint.ntk[(i, 5 + j)] - cross.ntk[(i, j)]).abs() < 1e-10 * (1.0 + cross.ntk[(i, j)].abs()));
        }
    }
}

#[test]
fn f32_close_to_f64_and_deterministic_across_threads() {
    let arch = Architecture::parse(
        "dense(8,w_std=1.5,b_std=0.1),relu,dense(8,w_std=1.5,b_std=0.1),relu,dense(1)",
        Parameterization::Ntk,
    )
    .unwrap();
    let x = gaussian(70, 30, 1);
    let x32 = Mat::from_fn(70, 30, |i, j| x[(i, j)] as f32);
    let k = kernel(&arch, x.as_ref(), None).unwrap();
    let k32 = kernel_f32(&arch, x32.as_ref(), None).unwrap();
    let max = (0..70).flat_map(|i| (0..70).map(move |j| (i, j))).map(|(i, j)| k.ntk[(i, j)].abs()).fold(0.0, f64::max);
    for i in 0..70 {
        for j in 0..70 {
            // f32 storage of inputs and Gram (eps 6e-8, d = 30 terms) then f64 recursion: ~1e-6 relative.
            assert!((k.ntk[(i, j)] - k32.ntk[(i, j)] as f64).abs() < 1e-5 * max);
        }
    }
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let k1 = one.install(|| kernel(&arch, x.as_ref(), None).unwrap());
    assert_eq!(k1.ntk, k.ntk);
    assert_eq!(k1.nngp, k.nngp);
}

#[test]
fn bad_input_is_a_clear_error() {
    let arch = Architecture::parse("dense(8),relu,dense(1)", Parameterization::Ntk).unwrap();
    let a = gaussian(3, 4, 1);
    let b = gaussian(3, 5, 1);
    let e = kernel(&arch, a.as_ref(), Some(b.as_ref())).unwrap_err().to_string();
    assert!(e.contains("4") && e.contains("5") && e.contains("features"), "{e}");
    let mut n = a.clone();
    n[(2, 1)] = f64::NAN;
    let e = kernel(&arch, n.as_ref(), None).unwrap_err().to_string();
    assert!(e.contains("non-finite") && e.contains("row 2"), "{e}");
    let two = Architecture::parse("dense(8),relu,tanh,dense(1)", Parameterization::Ntk).unwrap();
    assert!(kernel(&two, a.as_ref(), None).unwrap_err().to_string().contains("follows another activation"));
    let mf = Architecture::parse("dense(8),relu,dense(1)", Parameterization::MeanField).unwrap();
    assert!(kernel(&mf, a.as_ref(), None).is_err());
}

/// Kernels that overflow the float range are errors that say so, not matrices of inf and NaN: huge inputs
/// (the first variance is already inf), an Exp of a large variance (finite variances, infinite outputs), in the
/// symmetric and the cross pass, off and on the diagonal, in f64 and in f32 lanes.
#[test]
fn overflowing_kernels_are_errors() {
    let relu = Architecture::parse("dense(8,b_std=0.1),relu,dense(1)", Parameterization::Ntk).unwrap();
    let exp = Architecture::parse("dense(8),exp(a=1,b=30),dense(1)", Parameterization::Ntk).unwrap();
    let x = gaussian(70, 4, 1);
    let huge = Mat::from_fn(70, 4, |i, j| if i == 66 { 1e160 } else { x[(i, j)] });
    for (arch, x1, what) in [(&relu, &huge, "huge inputs"), (&exp, &x, "exp(30 x)")] {
        for x2 in [None, Some(x.as_ref())] {
            let e = kernel(arch, x1.as_ref(), x2).unwrap_err().to_string();
            assert!(e.contains("kernel is not finite") && e.contains("rescale"), "{what}: {e}");
            // In f32 the huge inputs are already inf, which the input check names.
            let f32s = |m: MatRef<'_, f64>| Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)] as f32);
            let (a, b) = (f32s(x1.as_ref()), x2.map(f32s));
            let e32 = kernel_f32(arch, a.as_ref(), b.as_ref().map(|b| b.as_ref())).unwrap_err().to_string();
            assert!(e32.contains("finite"), "{what}, f32: {e32}");
        }
    }
    // The convolutional path: the whole kernel, the cross kernel and a block of rows.
    let conv =
        Architecture::parse("conv(3,3x3,padding=same),relu,global_avg_pool,dense(1)", Parameterization::Ntk).unwrap();
    let s = Shape::image(&[4, 4], 2);
    let xc = gaussian(5, 32, 2);
    let hc = Mat::from_fn(5, 32, |i, j| if i == 3 { 1e160 } else { xc[(i, j)] });
    for x2 in [None, Some(xc.as_ref())] {
        let e = cnn::cnn_kernel(&conv, &s, hc.as_ref(), x2, &crate::runs::no_progress).unwrap_err().to_string();
        assert!(e.contains("kernel is not finite") && e.contains("row 3"), "conv: {e}");
    }
    // Blocks of rows come back as they are (the CLI checks as it writes), and Kernel::finite names the entry:
    // rows 0..2 meet example 3 in column 3.
    let job = cnn::CnnKernel::<f64>::new(&conv, &s, hc.as_ref(), None).unwrap();
    let rows = job.rows(0, 2, &crate::runs::no_progress).unwrap();
    assert!(!rows.nngp.as_ref().is_all_finite());
    let e = rows.finite(0).unwrap_err().to_string();
    assert!(e.contains("row 0, column 3"), "conv rows: {e}");
    // Likewise kernel_with_progress, which the CLI uses.
    let k = kernel_with_progress(&relu, huge.as_ref(), None, &crate::runs::no_progress).unwrap();
    assert!(!k.nngp.as_ref().is_all_finite() && k.finite(0).is_err());
    // In range: the same architectures give finite kernels.
    let small = Architecture::parse("dense(8),exp(a=1,b=0.5),dense(1)", Parameterization::Ntk).unwrap();
    for arch in [&relu, &small] {
        let k = kernel(arch, x.as_ref(), None).unwrap();
        assert!(k.nngp.as_ref().is_all_finite() && k.ntk.as_ref().is_all_finite());
    }
}

/// The tiled symmetric pass (several tiles, mirrored copies, exact diagonal) agrees with the rectangular pass on
/// the same data, for every build of the block kernels this CPU can run, in f64 and f32 lanes; activations
/// cover the vectorized ReLU family, erf and a quadrature one.
#[test]
fn tiled_symmetric_pass_matches_rectangular_pass_on_every_simd_build() {
    use super::compute::{kernel_with, simd_builds, Simd};
    let n = 300; // two tile rows of 256: diagonal tiles, one off-diagonal tile and its mirror
    let x = gaussian(n, 12, 7);
    let x32 = Mat::from_fn(n, 12, |i, j| x[(i, j)] as f32);
    let builds = simd_builds();
    for spec in [
        "dense(16,w_std=1.5,b_std=0.1),relu,dense(16,w_std=1.2,b_std=0.2),leaky_relu(0.1),dense(1)",
        "dense(16,w_std=1.3,b_std=0.05),erf,dense(16),abs,dense(1)",
        "dense(16,w_std=1.3,b_std=0.05),quad(tanh,16),dense(1)",
        &super::graph_tests::spec(super::graph_tests::RESNET, 16),
        &super::graph_tests::spec(super::graph_tests::DAG, 16),
    ] {
        for p in [Parameterization::Ntk, Parameterization::Standard] {
            let arch = Architecture::parse(spec, p).unwrap();
            let reference =
                kernel_with(&arch, x.as_ref(), Some(x.as_ref()), Simd::Generic, &crate::runs::no_progress).unwrap();
            let scale = (0..n).map(|i| reference.ntk[(i, i)].abs()).fold(0.0, f64::max);
            // The diagonal of the symmetric pass is the exact scalar recursion.
            let exact = kernel(&arch, x.as_ref(), None).unwrap();
            for &simd in &builds {
                let sym = kernel_with(&arch, x.as_ref(), None, simd, &crate::runs::no_progress).unwrap();
                let sym32 = kernel_with(&arch, x32.as_ref(), None, simd, &crate::runs::no_progress).unwrap();
                for j in 0..n {
                    for i in (0..n).filter(|&i| i != j) {
                        assert_eq!(sym.ntk[(i, j)], sym.ntk[(j, i)], "{spec} {simd:?}: symmetric");
                        assert_eq!(sym.nngp[(i, j)], sym.nngp[(j, i)]);
                        // Below the diagonal both passes evaluate the same dual with the same argument order
                        // (row variance first), so they differ by rounding only (FMA, row norms vs the Gram
                        // diagonal). Above it the symmetric pass holds mirrored values, and a quadrature dual is
                        // only symmetric in (s11, s22) to its quadrature error.
                        if i < j {
                            continue;
                        }
                        let (a, b) = (sym.ntk[(i, j)], reference.ntk[(i, j)]);
                        assert!((a - b).abs() <= 1e-12 * scale, "{spec} {simd:?} ({i},{j}): {a} vs {b}");
                        let (a, b) = (sym.nngp[(i, j)], reference.nngp[(i, j)]);
                        assert!((a - b).abs() <= 1e-12 * scale, "{spec} {simd:?} nngp ({i},{j}): {a} vs {b}");
                        // f32 lanes: ~1e-6 relative to the kernel's scale (f32 eps 6e-8 through three layers).
                        let (c, b) = (sym32.ntk[(i, j)] as f64, reference.ntk[(i, j)]);
                        assert!((c - b).abs() <= 1e-5 * scale, "{spec} {simd:?} f32 ({i},{j}): {c} vs {b}");
                    }
                    // On the diagonal the cross pass meets theta = acos(1 - O(eps)) = O(1e-8) and drifts by
                    // ~1e-9 relative; the symmetric pass is the exact scalar recursion there.
                    assert_eq!(sym.ntk[(j, j)], exact.ntk[(j, j)]);
                    assert_eq!(sym.nngp[(j, j)], exact.nngp[(j, j)]);
                    let c = sym32.ntk[(j, j)] as f64;
                    assert!((c - exact.ntk[(j, j)]).abs() <= 1e-6 * exact.ntk[(j, j)].abs(), "f32 diagonal {c}");
                }
            }
        }
    }
}

/// The naive per-entry recursion of ARCHITECTURE.md ("Math conventions") ('ntk' Dense rule), written out independently of the tiled
/// pass: Sigma0 = x.x'/d, then per layer K' = w^2 K + b^2, Theta' = K' + w^2 Theta, or K' = T, Theta' = Theta Tdot
/// with the row and column variances carried alongside.
fn naive_kernel(arch: &Architecture, x1: &Mat<f64>, x2: &Mat<f64>) -> (Mat<f64>, Mat<f64>) {
    use super::arch::Layer;
    let d = x1.ncols() as f64;
    let dot =
        |a: &Mat<f64>, i: usize, b: &Mat<f64>, j: usize| (0..a.ncols()).map(|k| a[(i, k)] * b[(j, k)]).sum::<f64>() / d;
    let mut nngp = Mat::zeros(x1.nrows(), x2.nrows());
    let mut ntk = Mat::zeros(x1.nrows(), x2.nrows());
    for i in 0..x1.nrows() {
        for j in 0..x2.nrows() {
            let (mut k, mut t, mut q1, mut q2) = (dot(x1, i, x2, j), 0.0, dot(x1, i, x1, i), dot(x2, j, x2, j));
            for layer in &arch.layers {
                match layer {
                    Layer::Dense { w_std, b_std, .. } => {
                        let (w2, b2) = (w_std * w_std, b_std.map_or(0.0, |b| b * b));
                        k = w2 * k + b2;
                        t = k + w2 * t;
                        q1 = w2 * q1 + b2;
                        q2 = w2 * q2 + b2;
                    }
                    Layer::Activation(a) => {
                        let dual = a.dual();
                        let (tv, td) = dual.eval(q1, k, q2);
                        k = tv;
                        t *= td;
                        q1 = dual.eval(q1, q1, q1).0;
                        q2 = dual.eval(q2, q2, q2).0;
                    }
                    _ => unreachable!("the naive reference handles chains only"),
                }
            }
            nngp[(i, j)] = k;
            ntk[(i, j)] = t;
        }
    }
    (nngp, ntk)
}

#[test]
fn tiled_pass_matches_the_naive_recursion_on_ragged_shapes() {
    // 300 x 263 (neither a multiple of the 256 tile), so edge tiles of every shape occur; relu exercises the
    // vectorized block kernel and erf the other closed-form branch. Rounding differs (reciprocal roots, FMA, the
    // series arcsine), so 1e-12 of the kernel's scale is asserted.
    let x1 = gaussian(300, 9, 21);
    let x2 = gaussian(263, 9, 22);
    for spec in [
        "dense(8,w_std=1.4,b_std=0.2),relu,dense(8,w_std=1.1,b_std=0.1),relu,dense(1)",
        "dense(8,w_std=1.2),erf,dense(1,b_std=0.3)",
    ] {
        let arch = Architecture::parse(spec, Parameterization::Ntk).unwrap();
        let got = kernel(&arch, x1.as_ref(), Some(x2.as_ref())).unwrap();
        let (nngp, ntk) = naive_kernel(&arch, &x1, &x2);
        let scale = ntk.norm_max();
        for j in 0..263 {
            for i in 0..300 {
                assert!(
                    (got.ntk[(i, j)] - ntk[(i, j)]).abs() <= 1e-12 * scale,
                    "{spec} ntk ({i},{j}): {} vs {}",
                    got.ntk[(i, j)],
                    ntk[(i, j)]
                );
                assert!((got.nngp[(i, j)] - nngp[(i, j)]).abs() <= 1e-12 * scale, "{spec} nngp ({i},{j})");
            }
        }
        // And the symmetric pass on x1 against the same recursion (off the diagonal; the diagonal is exact).
        let sym = kernel(&arch, x1.as_ref(), None).unwrap();
        let (_, ntk11) = naive_kernel(&arch, &x1, &x1);
        let scale = ntk11.norm_max();
        for j in 0..300 {
            for i in 0..300 {
                let tol = if i == j { 1e-7 } else { 1e-12 } * scale;
                assert!((sym.ntk[(i, j)] - ntk11[(i, j)]).abs() <= tol, "{spec} sym ntk ({i},{j})");
            }
        }
    }
}

#[test]
fn erf_dual_is_stable_at_large_variance() {
    // Independent route: with s11 = s22 = q and s12 = q cos(theta), the determinant is exactly
    // 1 + 4 b^2 q + 4 b^4 q^2 sin^2(theta), computed here from sin(theta) (no cancellation). The product form
    // used before was 2 % off on the NTK diagonal at w_std = 1e7 and 1e163 times too large at 1e10.
    let (a, b, c) = (1.3, 0.7, 0.2);
    let act = Activation::Erf { a, b, c };
    let b2 = b * b;
    for q in [1e-3, 1.0, 1e4, 1e8, 1e12] {
        for theta in [0.0f64, 1e-6, 0.3, 1.5, 3.0] {
            let (t, td) = act.closed_dual(q, q * theta.cos(), q).unwrap();
            let det = 1.0 + 4.0 * b2 * q + 4.0 * b2 * b2 * q * q * theta.sin().powi(2);
            let td_ref = 4.0 * a * a * b2 / std::f64::consts::PI / det.sqrt();
            let t_ref =
                a * a * (2.0 / std::f64::consts::PI) * (2.0 * b2 * q * theta.cos() / (1.0 + 2.0 * b2 * q)).asin()
                    + c * c;
            // The input s12 = q cos(theta) is itself rounded (relative eps); the determinant amplifies that by
            // 8 b^4 s12^2 / det, so the tolerance is the problem's conditioning plus a few ulp.
            let cond = 8.0 * b2 * b2 * (q * theta.cos()).powi(2) / det;
            let tol = 1e-13 + 8.0 * f64::EPSILON * cond;
            assert!((td - td_ref).abs() <= tol * td_ref, "q {q}, theta {theta}: Tdot {td} vs {td_ref} (tol {tol:e})");
            assert!((t - t_ref).abs() <= 1e-12 * t_ref.abs().max(1.0), "q {q}, theta {theta}: T {t} vs {t_ref}");
        }
    }
    // Through the kernel's exact diagonal: a one-hidden-layer erf net's NTK diagonal matches its closed form at
    // huge w_std. (A cross pass meets x_i . x_i / d and |x_i|^2 / d rounded differently on its diagonal, which
    // at variance 1e14 is ill-conditioned by itself; the symmetric pass is the exact route there.)
    for w in [1e7, 1e8, 1e10] {
        let arch = Architecture::parse(&format!("dense(8,w_std={w}),erf,dense(1)"), Parameterization::Ntk).unwrap();
        let x = gaussian(3, 4, 5);
        let sym = kernel(&arch, x.as_ref(), None).unwrap();
        for i in 0..3 {
            let q0 = (0..4).map(|j| x[(i, j)] * x[(i, j)]).sum::<f64>() / 4.0;
            let q1 = w * w * q0;
            // Theta_1 = q1; after erf: K = T(q1), Theta = q1 Tdot(q1); readout (w_std 1): Theta_2 = K + Theta.
            let tdot = 4.0 / std::f64::consts::PI / (1.0 + 4.0 * q1).sqrt();
            let k = (2.0 / std::f64::consts::PI) * (2.0 * q1 / (1.0 + 2.0 * q1)).asin();
            let want = k + q1 * tdot;
            assert!((sym.ntk[(i, i)] - want).abs() <= 1e-9 * want, "w_std {w}: {} vs {want}", sym.ntk[(i, i)]);
        }
    }
}

#[test]
fn gelu_dual_is_stable_at_large_variance() {
    // At variance q >> 1, GELU(x) = x Phi(x) differs from ReLU only for |x| = O(1), a set of probability
    // O(1/sqrt(q)): T and Tdot approach the arc-cosine (ReLU) dual, whose closed form has no cancellation, with
    // relative differences O(1/sqrt(q)) (asserted at 10/sqrt(q)).
    for q in [1e4, 1e6, 1e8, 1e10, 1e12] {
        for theta in [0.0f64, 1e-3, 0.5, 2.0] {
            let (t, td) = Activation::Gelu.closed_dual(q, q * theta.cos(), q).unwrap();
            let (tr, tdr) = super::activation::relu_dual(q, q * theta.cos(), q);
            let tol = 10.0 / q.sqrt();
            assert!((t - tr).abs() <= tol * q, "q {q}, theta {theta}: T {t} vs ReLU {tr}");
            assert!((td - tdr).abs() <= tol, "q {q}, theta {theta}: Tdot {td} vs ReLU {tdr}");
        }
    }
}

#[test]
fn sin_and_cos_duals_are_finite_and_exact_at_large_variance() {
    // Independent route on the diagonal: E[a^2 sin^2(b u + c)] = a^2/2 (1 - cos(2c) e^(-2 b^2 q)) and
    // E[a^2 b^2 cos^2(b u + c)] = a^2 b^2 / 2 (1 + cos(2c) e^(-2 b^2 q)) for u ~ N(0, q). Off the diagonal the
    // values must be finite (the split exponentials gave 0 x inf = NaN beyond q ~ 700 / b^2).
    let (a, b, c) = (1.1, 0.9, 0.3);
    for q in [0.5, 10.0, 1e3, 1e6, 1e12] {
        let (t, td) = Activation::Sin { a, b, c }.closed_dual(q, q, q).unwrap();
        let e = (-2.0 * b * b * q).exp();
        let (tr, tdr) = (a * a / 2.0 * (1.0 - (2.0 * c).cos() * e), a * a * b * b / 2.0 * (1.0 + (2.0 * c).cos() * e));
        assert!((t - tr).abs() <= 1e-13 * tr && (td - tdr).abs() <= 1e-13 * tdr, "q {q}: ({t}, {td}) vs ({tr}, {tdr})");
        for theta in [1e-6f64, 0.7, 3.1] {
            for act in [Activation::Sin { a, b, c }, Activation::Cos { a, b, c }] {
                let (t, td) = act.closed_dual(q, q * theta.cos(), q).unwrap();
                assert!(t.is_finite() && td.is_finite(), "{act} q {q} theta {theta}: ({t}, {td})");
            }
        }
    }
}

/// `kernel_into` writes the same values as `kernel` into caller memory (here with a padded column stride and
/// stale contents), symmetric and cross; outputs of the wrong size or layout are refused.
#[test]
fn kernel_into_caller_memory_equals_the_allocating_kernel() {
    let arch = Architecture::parse("dense(16,w_std=1.4,b_std=0.1),relu,dense(1)", Parameterization::Ntk).unwrap();
    let x = gaussian(300, 5, 11);
    let x2 = gaussian(7, 5, 12);
    for (b, n2) in [(None, 300), (Some(x2.as_ref()), 7)] {
        let want = compute::kernel_with_progress::<f64>(&arch, x.as_ref(), b, &crate::runs::no_progress).unwrap();
        let ld = 300 + 5;
        let mut kbuf = vec![f64::NAN; ld * n2];
        let mut tbuf = vec![-1.0; ld * n2];
        // SAFETY: each buffer holds ld * n2 values; the views use column stride ld >= 300 rows.
        let (k, t) = unsafe {
            (
                faer::MatMut::from_raw_parts_mut(kbuf.as_mut_ptr(), 300, n2, 1, ld as isize),
                faer::MatMut::from_raw_parts_mut(tbuf.as_mut_ptr(), 300, n2, 1, ld as isize),
            )
        };
        kernel_into(&arch, x.as_ref(), b, k, t, &crate::runs::no_progress).unwrap();
        for j in 0..n2 {
            for i in 0..300 {
                assert_eq!(kbuf[j * ld + i].to_bits(), want.nngp[(i, j)].to_bits(), "nngp ({i},{j})");
                assert_eq!(tbuf[j * ld + i].to_bits(), want.ntk[(i, j)].to_bits(), "ntk ({i},{j})");
            }
        }
    }
    let mut small = Mat::<f64>::zeros(300, 299);
    let mut ok = Mat::<f64>::zeros(300, 300);
    let e = kernel_into(&arch, x.as_ref(), None, small.as_mut(), ok.as_mut(), &crate::runs::no_progress);
    assert!(e.unwrap_err().to_string().contains("300 x 299"));
    let mut rowmajor = Mat::<f64>::zeros(300, 300);
    let e =
        kernel_into(&arch, x.as_ref(), None, ok.as_mut(), rowmajor.as_mut().transpose_mut(), &crate::runs::no_progress);
    assert!(e.unwrap_err().to_string().contains("column-major"));
}
