//! Finite convolutional networks: every derivative pass against finite differences, the empirical NTK
//! against explicit J J^T, 1x1 convolutions against dense layers, and wide conv nets against the
//! infinite-width CNN-GP / CNTK of `kernel::cnn` (Monte Carlo).

use faer::{Mat, MatRef};

use super::testutil::*;
use super::{LossCurvature, Mlp, Network, NtkOutputs, OutputCurvature};
use crate::data::synthetic::{derive_seed, gaussian};
use crate::kernel::cnn::cnn_kernel;
use crate::kernel::spatial::Shape;
use crate::kernel::{Architecture, Parameterization};
use crate::train::loss::Loss;

/// 2-d, smooth: same and circular padding, a residual block of convolutions, average pooling with stride,
/// a valid convolution, global average pooling and a dense readout (5 x 4 images, 2 channels).
const CNN_GAP: &str = "conv(3,3x3,padding=same,w_std=1.3,b_std=0.2),tanh,\
residual(gelu,conv(3,3x3,padding=circular,b_std=0.1)),avg_pool(2x2,stride=2),erf,\
conv(2,2x2,padding=valid,w_std=1.2),softplus,global_avg_pool,dense(2,b_std=0.3)";

/// 1-d, smooth: strided same padding, valid padding, flatten and a dense readout (7 positions, 2 channels).
const CNN_FLAT: &str = "conv(4,3,stride=2,padding=same,b_std=0.3),sin,conv(3,2,padding=valid),tanh,flatten,\
dense(3,b_std=0.1)";

/// A DAG with spatial concatenations (channels side by side, of unequal counts): two branches of different
/// windows on the input, a convolution reading their concat with the input itself, and a concat of activated
/// nodes (one of them twice) pooled.
const CNN_CONCAT: &str =
    "node(a,conv(3,3x3,padding=same,w_std=1.3,b_std=0.2),input),node(b,conv(2,1x1,b_std=0.1),input),\
node(c,concat,a,input,b),node(d,conv(3,3x3,padding=circular,b_std=0.1),c),node(e,tanh,d),node(f,gelu,a),\
node(g,concat,e,f,b,f),node(h,avg_pool(2x2,stride=2),g),node(i,global_avg_pool,h),node(out,dense(2,b_std=0.3),i)";

/// 2-d with channels enough (24 -> 24) that both convolutions' forward passes, the second's input cotangent and
/// both Jacobian rows go by Winograd's F(2 x 2, 3 x 3) (the cases here are f64 networks; f32 ones run it in
/// `conv_jacobian_blocks_agree_on_every_simd_build_and_lane_remainder`); same and valid padding, odd extents
/// (partial tiles).
const CNN_WIDE: &str = "conv(24,3x3,padding=same,w_std=1.3,b_std=0.2),tanh,conv(24,3x3,padding=valid,b_std=0.1),gelu,\
global_avg_pool,dense(2,b_std=0.3)";

/// A dense layer on an image (neural-tangents' Dense over the channel axis: a 1 x 1 convolution node), between a
/// convolution and a flatten.
const CNN_DENSE_IMAGE: &str =
    "conv(3,3x3,padding=same,b_std=0.2),relu,dense(4,w_std=1.2,b_std=0.1),tanh,flatten,dense(2,b_std=0.3)";

fn cases() -> Vec<(&'static str, Shape, Parameterization, f64)> {
    vec![
        (CNN_CONCAT, Shape::image(&[4, 5], 2), Parameterization::Ntk, 1.1),
        (CNN_CONCAT, Shape::image(&[4, 5], 2), Parameterization::Standard, 0.9),
        (CNN_GAP, Shape::image(&[5, 4], 2), Parameterization::Ntk, 1.3),
        (CNN_FLAT, Shape::image(&[7], 2), Parameterization::Standard, 0.8),
        (CNN_GAP, Shape::image(&[5, 4], 2), Parameterization::Mup, 1.0),
        (CNN_FLAT, Shape::image(&[7], 2), Parameterization::MeanField, 2.0),
        (CNN_WIDE, Shape::image(&[5, 4], 24), Parameterization::Ntk, 1.0),
        (CNN_DENSE_IMAGE, Shape::image(&[4, 3], 2), Parameterization::Ntk, 1.2),
        (CNN_DENSE_IMAGE, Shape::image(&[4, 3], 2), Parameterization::MeanField, 1.5),
    ]
}

fn cnn(spec: &str, s: &Shape, p: Parameterization, alpha: f64, seed: u64) -> Mlp {
    Network::init_for(&Architecture::parse(spec, p).unwrap(), s, alpha, seed).unwrap()
}

#[test]
fn gradient_jvp_and_vjp_match_finite_differences() {
    // Central differences (h = 1e-5 / 1e-6): truncation ~h^2, rounding ~1e-16/h; 1e-6 relative leaves orders
    // of margin (the same budget as the dense tests).
    for (s, shape, p, alpha) in cases() {
        let net = cnn(s, &shape, p, alpha, 3);
        let x = gaussian(4, shape.size(), 5);
        let y = targets(Loss::Mse, 4, net.output_dim(), 6);
        let (_, g) = net.loss_and_gradient(x.as_ref(), y.as_ref(), Loss::Mse).unwrap();
        let fd = fd_gradient(&net, |m| m.loss_and_gradient(x.as_ref(), y.as_ref(), Loss::Mse).unwrap().0, 1e-5);
        assert!(rel_err(&g, &fd) < 1e-6, "{s} {p}: gradient {:e}", rel_err(&g, &fd));
        let v = random_vec(net.num_params(), 1);
        let jv = net.jvp(x.as_ref(), &v).unwrap();
        let fdj = fd_jvp(&net, x.as_ref(), &v, 1e-6);
        assert!((&jv - &fdj).norm_l2() < 1e-6 * fdj.norm_l2(), "{s} {p}: jvp");
        let u = gaussian(4, net.output_dim(), 7);
        let vjp = net.vjp(x.as_ref(), u.as_ref()).unwrap();
        let lhs: f64 =
            (0..4).flat_map(|i| (0..net.output_dim()).map(move |a| (i, a))).map(|(i, a)| u[(i, a)] * jv[(i, a)]).sum();
        assert!((lhs - dot(&vjp, &v)).abs() < 1e-10 * lhs.abs().max(1.0), "{s}: u.Jv vs J^T u.v");
    }
}

#[test]
fn hessian_products_match_differences_and_are_symmetric() {
    // H v against central differences of the gradient, the output Hessian against differences of the VJP
    // (h = 1e-5: error ~1e-10), and u.Hv = v.Hu to rounding.
    for (s, shape, p, alpha) in cases() {
        let net = cnn(s, &shape, p, alpha, 9);
        let x = gaussian(3, shape.size(), 1);
        for loss in [Loss::Mse, Loss::SoftmaxCrossEntropy] {
            let y = targets(loss, 3, net.output_dim(), 2);
            let lc = LossCurvature::new(&net, x.as_ref(), y.as_ref(), loss).unwrap();
            let v = random_vec(net.num_params(), 3);
            let hv = lc.hvp(&v).unwrap();
            let fd = fd_directional(&net, &v, 1e-5, |m| m.loss_and_gradient(x.as_ref(), y.as_ref(), loss).unwrap().1);
            assert!(rel_err(&hv, &fd) < 1e-6, "{s} {p} {loss}: hvp {:e}", rel_err(&hv, &fd));
            let u = random_vec(net.num_params(), 4);
            let (a, b) = (dot(&u, &hv), dot(&v, &lc.hvp(&u).unwrap()));
            assert!((a - b).abs() < 1e-11 * a.abs().max(b.abs()).max(1e-3), "{s}: {a} vs {b}");
        }
        let u = gaussian(3, net.output_dim(), 8);
        let oc = OutputCurvature::new(&net, x.as_ref(), u.as_ref()).unwrap();
        let v = random_vec(net.num_params(), 5);
        let fd = fd_directional(&net, &v, 1e-5, |m| m.vjp(x.as_ref(), u.as_ref()).unwrap());
        let hv = oc.hvp(&v).unwrap();
        assert!(rel_err(&hv, &fd) < 1e-6, "{s} {p}: output Hessian {:e}", rel_err(&hv, &fd));
    }
}

#[test]
fn empirical_ntk_and_jacobian_equal_explicit_jjt() {
    // Reference: J from unit-cotangent VJPs (checked against finite differences above). 19 and 11 examples:
    // the empirical NTK goes by slices of the lane width (2 to 16 examples), the last one short.
    for (s, shape, p, alpha) in cases() {
        let net = cnn(s, &shape, p, alpha, 17);
        let k = net.output_dim();
        let (x1, x2) = (gaussian(19, shape.size(), 1), gaussian(11, shape.size(), 2));
        let (j1, j2) = (jacobian_by_vjp(&net, x1.as_ref()), jacobian_by_vjp(&net, x2.as_ref()));
        let jac = net.jacobian(x1.as_ref()).unwrap();
        assert!((&jac - &j1).norm_max() < 1e-13 * j1.norm_max(), "{s}: jacobian");
        for (xb, jb, nb) in [(None, &j1, 19), (Some(x2.as_ref()), &j2, 11)] {
            let full_ref = &j1 * jb.transpose();
            let scale = full_ref.norm_max();
            let full = net.empirical_ntk(x1.as_ref(), xb, NtkOutputs::Full).unwrap();
            assert!((&full - &full_ref).norm_max() < 1e-12 * scale, "{s} {p} full");
            let tr = net.empirical_ntk(x1.as_ref(), xb, NtkOutputs::Trace).unwrap();
            let tr_ref = Mat::<f64>::from_fn(19, nb, |i, j| (0..k).map(|a| full_ref[(i * k + a, j * k + a)]).sum());
            assert!((&tr - &tr_ref).norm_max() < 1e-12 * scale, "{s} {p} trace");
        }
    }
}

#[test]
fn conv_cases_reach_both_routes_of_dense_readouts() {
    // The sliced empirical NTK puts small Dense readouts into J and wider ones through the Gram trick: the
    // cases above (checked against explicit J J^T, bit-identity and the SIMD builds) must reach both.
    let routes: Vec<bool> = cases()
        .into_iter()
        .flat_map(|(s, shape, p, alpha)| {
            let net = cnn(s, &shape, p, alpha, 1);
            let k = net.output_dim();
            net.dense
                .iter()
                .filter(|d| d.filter.is_none())
                .map(|d| super::entk_sliced::explicit(d, k))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(routes.contains(&true) && routes.contains(&false), "{routes:?}");
}

#[test]
fn repeated_empirical_ntks_equal_fresh_ones_bit_for_bit() {
    // A network keeps its scratch matrices between calls, holding the previous call's values: every call must
    // equal that of a fresh copy (cloning drops the scratch) whatever ran before (other inputs, sizes, modes).
    for (s, shape, p, alpha) in cases() {
        let net = cnn(s, &shape, p, alpha, 23);
        let xs = [gaussian(21, shape.size(), 1), gaussian(5, shape.size(), 2), gaussian(11, shape.size(), 3)];
        let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        for outputs in [NtkOutputs::Trace, NtkOutputs::Full] {
            for x in &xs {
                for x2 in [None, Some(xs[2].as_ref())] {
                    let warm = net.empirical_ntk(x.as_ref(), x2, outputs).unwrap();
                    let cold = net.clone().empirical_ntk(x.as_ref(), x2, outputs).unwrap();
                    assert!(warm == cold, "{s} {outputs:?}");
                    // Slices are fixed by the lane width, not by the threads: one thread gives the same bits.
                    let single = one_thread.install(|| net.clone().empirical_ntk(x.as_ref(), x2, outputs).unwrap());
                    assert!(single == cold, "{s} {outputs:?}: one thread");
                    // Rows stored back to back (how Python's arrays arrive) are copied slice by slice.
                    let rows: Vec<f64> = (0..x.nrows()).flat_map(|i| (0..x.ncols()).map(move |j| x[(i, j)])).collect();
                    let xr = MatRef::from_row_major_slice(&rows, x.nrows(), x.ncols());
                    assert!(net.empirical_ntk(xr, x2, outputs).unwrap() == cold, "{s} {outputs:?}: row-major");
                }
            }
        }
    }
}

#[test]
fn one_by_one_convolutions_on_one_pixel_images_are_dense_layers() {
    // A 1x1 conv with C_in channels on 1 x 1 images is a dense layer on C_in features, with the same
    // parameter layout ((C_out, C_in, 1, 1) row-major = (C_out, C_in)): same outputs, gradient and NTK.
    for p in [Parameterization::Ntk, Parameterization::Standard, Parameterization::MeanField, Parameterization::Mup] {
        let conv = Architecture::parse(
            "conv(6,1x1,w_std=1.3,b_std=0.2),relu,conv(4,1x1),tanh,global_avg_pool,dense(2,b_std=0.1)",
            p,
        )
        .unwrap();
        let dense =
            Architecture::parse("dense(6,w_std=1.3,b_std=0.2),relu,dense(4),tanh,dense(2,b_std=0.1)", p).unwrap();
        let c = Mlp::init_for(&conv, &Shape::image(&[1, 1], 3), 1.5, 4).unwrap();
        let d = Mlp::init(&dense, 3, 1.5, 4).unwrap();
        assert_eq!(c.params(), d.params(), "same seeds, same layout");
        for (a, b) in c.dense.iter().zip(&d.dense) {
            assert_eq!((a.w_mult, a.b_mult, a.w_init), (b.w_mult, b.b_mult, b.w_init), "{p}");
        }
        let x = gaussian(5, 3, 2);
        let (fc, fd) = (c.forward(x.as_ref()).unwrap(), d.forward(x.as_ref()).unwrap());
        assert!((&fc - &fd).norm_max() < 1e-14 * fd.norm_max());
        let (kc, kd) = (
            c.empirical_ntk(x.as_ref(), None, NtkOutputs::Full).unwrap(),
            d.empirical_ntk(x.as_ref(), None, NtkOutputs::Full).unwrap(),
        );
        assert!((&kc - &kd).norm_max() < 1e-13 * kd.norm_max(), "{p}");
    }
}

/// Relative max-entry errors of the empirical NNGP (F F^T / M over M readout units) and of the empirical NTK
/// (one readout unit) of a conv net with `c` channels, averaged over `seeds` draws.
fn wide_errors(spec: &str, shape: &Shape, x: MatRef<'_, f64>, c: usize, m: usize, seeds: u64) -> (f64, f64) {
    let arch = |m: usize| {
        let s = spec.replace("{2C}", &(2 * c).to_string()).replace("{C}", &c.to_string());
        Architecture::parse(&s.replace("{M}", &m.to_string()), Parameterization::Ntk).unwrap()
    };
    let (wide_out, one_out) = (arch(m), arch(1));
    let inf = cnn_kernel(&one_out, shape, x, None, &crate::runs::no_progress).unwrap();
    let (sn, st) = (inf.nngp.norm_max(), inf.ntk.norm_max());
    let mut err = (0.0, 0.0);
    for s in 0..seeds {
        let f = Mlp::init_for(&wide_out, shape, 1.0, derive_seed(77, s)).unwrap().forward(x).unwrap();
        let nngp = &f * f.transpose() / (m as f64);
        let ntk = Mlp::init_for(&one_out, shape, 1.0, derive_seed(78, s))
            .unwrap()
            .empirical_ntk(x, None, NtkOutputs::Trace)
            .unwrap();
        err.0 += (&nngp - &inf.nngp).norm_max() / sn / seeds as f64;
        err.1 += (&ntk - &inf.ntk).norm_max() / st / seeds as f64;
    }
    err
}

#[test]
fn wide_conv_nets_converge_to_the_cnn_gp_and_cntk() {
    // The finite kernels average over C channels (and the NNGP also over M readout units): by the CLT their
    // errors fall like 1/sqrt(C) (+ 1/sqrt(M)). Growing C and M 16-fold must cut the error by about 4; we
    // assert more than 2, and an absolute bound of 5/sqrt(C) at the larger width (measured 0.08-0.14).
    let shape = Shape::image(&[4, 4], 2);
    let x = gaussian(4, shape.size(), 3);
    for spec in [
        "conv({C},3x3,padding=same,w_std=1.4,b_std=0.1),relu,conv({C},3x3,padding=same,w_std=1.4),relu,\
         global_avg_pool,dense({M},w_std=1.2,b_std=0.1)",
        "conv({C},3x3,padding=circular,w_std=1.4,b_std=0.1),erf,conv({C},2x2,stride=2,padding=valid),relu,flatten,\
         dense({M})",
        // Spatial concatenation of C and 2C channels (kernel weights 1/3, 2/3), read by a convolution; the
        // branches' scales differ 25-fold so that wrong weights (or a wrong channel layout) leave a visible bias.
        "node(a,conv({C},3x3,padding=same,w_std=0.5,b_std=0.1),input),node(b,conv({2C},1x1,w_std=2.5,b_std=1),input),\
         node(c,concat,a,b),node(d,conv({C},3x3,padding=same,w_std=1.4),c),node(e,relu,d),\
         node(f,global_avg_pool,e),node(out,dense({M},w_std=1.2,b_std=0.1),f)",
        // Channel concatenation of activations (relu and erf blocks, weights 1/3 and 2/3), read by a convolution.
        "node(a,conv({C},3x3,padding=same,w_std=1.5,b_std=0.2),input),node(ar,relu,a),\
         node(b,conv({2C},1x1,w_std=0.8),input),node(be,erf,b),node(c,concat,ar,be),\
         node(d,conv({C},3x3,padding=same,w_std=1.4),c),node(e,relu,d),node(f,global_avg_pool,e),\
         node(out,dense({M},w_std=1.2,b_std=0.1),f)",
    ] {
        let (small_k, small_t) = wide_errors(spec, &shape, x.as_ref(), 16, 32, 4);
        let (big_k, big_t) = wide_errors(spec, &shape, x.as_ref(), 256, 512, 4);
        assert!(
            big_k < small_k / 2.0 && big_t < small_t / 2.0,
            "{spec}: NNGP {small_k} -> {big_k}, NTK {small_t} -> {big_t}"
        );
        assert!(big_k < 5.0 / 16.0 && big_t < 5.0 / 16.0, "{spec}: NNGP {big_k}, NTK {big_t} at 256 channels");
    }
}

#[test]
fn conv_jacobian_blocks_agree_on_every_simd_build_and_lane_remainder() {
    // The conv Jacobian puts examples in vector lanes (2 to 16 per block by build and precision) and tiles
    // channels (3 and 5 are not multiples of the tiles): N = 35 leaves a partial block at every width. Every
    // build must give the unit-VJP Jacobian (f64: to rounding; f32: to its rounding through two layers).
    // The second net has 72 output positions per conv: the products run over positions in chunks of 32, the
    // last one partial. The third has channels enough (232 in, 80 out of the second conv's transpose) that every
    // build splits the windowed passes into groups of source channels and the first conv's products into groups
    // of output channels. The fourth runs Winograd's F(2 x 2, 3 x 3) throughout.
    let builds = crate::kernel::compute::simd_builds();
    let nets = [
        (
            "conv(5,3x3,stride=2,padding=same,w_std=1.3,b_std=0.2),tanh,conv(3,2x2,padding=valid),gelu,\
flatten,dense(2,b_std=0.1)",
            Shape::image(&[5, 6], 3),
        ),
        (
            "conv(3,3x3,padding=same,b_std=0.2),relu,conv(2,3x3,padding=same),global_avg_pool,dense(1)",
            Shape::image(&[9, 8], 2),
        ),
        (
            "conv(12,3x3,padding=same,b_std=0.2),relu,conv(80,3x3,padding=same),tanh,global_avg_pool,dense(1)",
            Shape::image(&[4, 3], 232),
        ),
        // Channels enough for Winograd's passes and Jacobian rows (f32 and f64) at every node.
        (
            "conv(24,3x3,padding=same,b_std=0.2),relu,conv(24,3x3,padding=valid),tanh,global_avg_pool,dense(1)",
            Shape::image(&[5, 6], 24),
        ),
    ];
    for (spec, shape) in nets {
        let net = cnn(spec, &shape, Parameterization::Ntk, 1.2, 3);
        let n32: Network<f32> = net.cast();
        let x = gaussian(35, shape.size(), 4);
        let x32 = super::cast::<f64, f32>(x.as_ref());
        let reference = jacobian_by_vjp(&net, x.as_ref());
        let scale = reference.norm_max();
        for &simd in &builds {
            let j = net.jacobian_with(x.as_ref(), simd).unwrap();
            assert!((&j - &reference).norm_max() < 1e-13 * scale, "{spec} {simd:?} f64");
            let j32: Mat<f64> = super::cast(n32.jacobian_with(x32.as_ref(), simd).unwrap().as_ref());
            assert!((&j32 - &reference).norm_max() < 1e-5 * scale, "{spec} {simd:?} f32");
        }
    }
}

/// Activations applied in the convolutions' stores (forward: a ReLU that is the conv's sole reader; reverse:
/// an activation whose sole reader is the conv) give the same bits as the separate passes, through the whole
/// network: tapes, loss gradients, Hessian-vector products (R-op caches, no fusion in reverse) and empirical NTKs
/// (one output and two: stacked cotangents). Graphs: a chain (both fusions), a residual block (the conv's value
/// also read by the sum: no forward fusion there), a ReLU as the network's output, tanh between convs (reverse
/// only). 16-channel convs reach the f32 AVX-512 Winograd kernel that fuses; elsewhere nothing fuses and the
/// comparison holds trivially.
#[test]
fn fused_activations_equal_separate_passes_bit_for_bit() {
    use super::tape::FUSION_OFF;
    use std::sync::atomic::Ordering;
    let conv = "conv(16,3x3,padding=same,b_std=0.2)";
    let nets = [
        format!("{conv},relu,{conv},relu,global_avg_pool,dense(1)"),
        format!("{conv},relu,{conv},relu,global_avg_pool,dense(2)"),
        format!("{conv},residual(relu,{conv}),relu,global_avg_pool,dense(1)"),
        format!("{conv},tanh,{conv},relu"),
    ];
    for spec in &nets {
        let shape = Shape::image(&[6, 5], 3);
        let net: Network<f32> = cnn(spec, &shape, Parameterization::Ntk, 1.1, 7).cast();
        let x = super::cast::<f64, f32>(gaussian(21, shape.size(), 2).as_ref());
        let k = net.output_dim();
        let y = targets(Loss::Mse, 21, k, 5);
        let v: Vec<f32> = gaussian(1, net.num_params(), 6).row(0).iter().map(|&t| t as f32).collect();
        let run = || {
            let tape = net.tape(x.as_ref()).unwrap();
            let (_, g) = net.loss_and_gradient(x.as_ref(), y.as_ref(), Loss::Mse).unwrap();
            let curvature = LossCurvature::new(&net, x.as_ref(), y.as_ref(), Loss::Mse).unwrap();
            let hv = curvature.hvp(&v).unwrap();
            let trace = net.empirical_ntk(x.as_ref(), None, NtkOutputs::Trace).unwrap();
            let full = net.empirical_ntk(x.as_ref(), None, NtkOutputs::Full).unwrap();
            (tape.values, tape.slope, tape.output, g, hv, trace, full)
        };
        let fused = run();
        FUSION_OFF.store(true, Ordering::Relaxed);
        let separate = run();
        FUSION_OFF.store(false, Ordering::Relaxed);
        let bits = |m: &Mat<f32>| {
            (
                m.nrows(),
                m.ncols(),
                (0..m.ncols()).flat_map(|j| (0..m.nrows()).map(move |i| m[(i, j)].to_bits())).collect::<Vec<_>>(),
            )
        };
        assert!(fused.0.iter().map(bits).eq(separate.0.iter().map(bits)), "{spec}: tape values");
        let slopes = |s: &Vec<Option<Mat<f32>>>| s.iter().map(|m| m.as_ref().map(bits)).collect::<Vec<_>>();
        assert!(slopes(&fused.1) == slopes(&separate.1), "{spec}: slopes");
        assert!(bits(&fused.2) == bits(&separate.2), "{spec}: outputs");
        let vbits = |g: &[f32]| g.iter().map(|t| t.to_bits()).collect::<Vec<_>>();
        assert!(vbits(&fused.3) == vbits(&separate.3), "{spec}: gradient");
        assert!(vbits(&fused.4) == vbits(&separate.4), "{spec}: Hessian-vector product");
        assert!(bits(&fused.5) == bits(&separate.5), "{spec}: empirical NTK");
        assert!(bits(&fused.6) == bits(&separate.6), "{spec}: empirical NTK, every output");
    }
}

#[test]
fn f32_lanes_follow_f64_on_a_cnn() {
    // Rounding at 6e-8 relative through a few layers of sums over <= 36 terms: 1e-4 relative is generous.
    let net = cnn(CNN_GAP, &Shape::image(&[5, 4], 2), Parameterization::Ntk, 1.0, 5);
    let n32: Network<f32> = net.cast();
    let x = gaussian(4, 40, 1);
    let y = targets(Loss::Mse, 4, 2, 2);
    let (_, g64) = net.loss_and_gradient(x.as_ref(), y.as_ref(), Loss::Mse).unwrap();
    let x32 = super::cast::<f64, f32>(x.as_ref());
    let (_, g32) = n32.loss_and_gradient(x32.as_ref(), y.as_ref(), Loss::Mse).unwrap();
    let g32: Vec<f64> = g32.iter().map(|&v| v as f64).collect();
    assert!(rel_err(&g32, &g64) < 1e-4, "{:e}", rel_err(&g32, &g64));
    // The empirical NTK by slices of 16 f32 lanes (37 examples: the last slice short), both outputs' blocks.
    let x = gaussian(37, 40, 3);
    let k64 = net.empirical_ntk(x.as_ref(), None, NtkOutputs::Full).unwrap();
    let k32 = n32.empirical_ntk(super::cast::<f64, f32>(x.as_ref()).as_ref(), None, NtkOutputs::Full).unwrap();
    let diff = (&super::cast::<f32, f64>(k32.as_ref()) - &k64).norm_max();
    assert!(diff < 1e-4 * k64.norm_max(), "empirical NTK: {diff:e} of {:e}", k64.norm_max());
}

#[test]
fn image_inputs_are_checked() {
    let net = cnn(CNN_GAP, &Shape::image(&[5, 4], 2), Parameterization::Ntk, 1.0, 5);
    let e = net.forward(gaussian(2, 39, 1).as_ref()).unwrap_err().to_string();
    assert!(e.contains("40 values per example (5 x 4 x 2)"), "{e}");
    // A dense layer straight on an image maps its channels at every position (neural-tangents' Dense): here
    // 2 x 2 positions of one output channel.
    let a = Architecture::parse("conv(3,3x3),dense(1)", Parameterization::Ntk).unwrap();
    assert_eq!(Mlp::init_for(&a, &Shape::image(&[4, 4], 1), 1.0, 0).unwrap().output_dim(), 4);
    // A spatial concat needs equal extents; the message names the node and both inputs' shapes.
    let a = Architecture::parse(
        "node(a,conv(3,3x3,padding=same),input),node(b,conv(2,3x3),input),node(c,concat,a,b),node(g,global_avg_pool,c),node(o,dense(1),g)",
        Parameterization::Ntk,
    )
    .unwrap();
    let e = Mlp::init_for(&a, &Shape::image(&[5, 5], 1), 1.0, 0).unwrap_err().to_string();
    assert!(e.contains("node `c`") && e.contains("5 x 5 x 3") && e.contains("3 x 3 x 2"), "{e}");
}

#[test]
fn a_watched_empirical_ntk_stops_when_told_and_otherwise_equals_the_plain_one() {
    use crate::Error;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A dense net (Gram-trick shares only) and a conv net (slices, explicit columns and Dense shares).
    let dense = net("dense(6,b_std=0.3),tanh,dense(5),relu,dense(3)", Parameterization::Ntk, 4, 1.0, 2);
    let shape = Shape::image(&[5, 4], 24);
    let conv = cnn(CNN_WIDE, &shape, Parameterization::Ntk, 1.0, 3);
    for (what, n, d) in [("dense", &dense, 4), ("conv", &conv, shape.size())] {
        let (x1, x2) = (gaussian(21, d, 4), gaussian(9, d, 5));
        for outputs in [NtkOutputs::Trace, NtkOutputs::Full] {
            for x2 in [None, Some(x2.as_ref())] {
                let plain = n.empirical_ntk(x1.as_ref(), x2, outputs).unwrap();
                let calls = AtomicUsize::new(0);
                let counted = |_: usize, _: usize| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                };
                let watched = n.empirical_ntk_watched(x1.as_ref(), x2, outputs, &counted).unwrap();
                assert_eq!(watched, plain, "{what} {outputs:?}");
                let total = calls.load(Ordering::Relaxed);
                assert!(total >= 2, "{what} {outputs:?}: {total} calls");
                // Stopped at the first, a middle and the last unit: the error comes back, whatever the phase.
                for stop_at in [0, total / 2, total - 1] {
                    let seen = AtomicUsize::new(0);
                    let stop = |_: usize, _: usize| {
                        if seen.fetch_add(1, Ordering::Relaxed) >= stop_at {
                            Err(Error::Cancelled)
                        } else {
                            Ok(())
                        }
                    };
                    let r = n.empirical_ntk_watched(x1.as_ref(), x2, outputs, &stop);
                    assert!(matches!(r, Err(Error::Cancelled)), "{what} {outputs:?} stopped at {stop_at}: {r:?}");
                }
            }
        }
    }
}
