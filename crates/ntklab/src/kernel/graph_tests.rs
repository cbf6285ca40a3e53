//! Infinite-width kernels of residual and DAG architectures against wide random finite networks of the same
//! graph (the `net` module's empirical NTK, itself checked against explicit J J^T, and the readout-input Gram
//! for the NNGP), plus consistency of the register-based tiled pass.

use faer::{Mat, MatRef};
use rayon::prelude::*;

use super::*;
use crate::data::synthetic::{derive_seed, gaussian, sphere};
use crate::net::{Network, NtkOutputs};

/// One draw's (NNGP, NTK) estimate: NNGP = E over the readout = (w_mult w_init)^2 H_u H_u^T + (b_mult b_init)^2
/// with H_u the readout's input, and the empirical NTK.
fn draw(arch: &Architecture, x: MatRef<'_, f64>, seed: u64) -> (Mat<f64>, Mat<f64>) {
    let net = Network::init(arch, x.ncols(), 1.0, seed).unwrap();
    let tape = net.tape(x).unwrap();
    let out = net.graph.output();
    let l = net.dense.iter().position(|d| d.node == out).expect("the readout is a dense node");
    let d = &net.dense[l];
    let h = &tape.values[net.graph.nodes[out].inputs[0]];
    let (cw, cb) = (d.w_mult * d.w_init, if d.has_bias() { d.b_mult * d.b_init } else { 0.0 });
    let nngp = Mat::from_fn(x.nrows(), x.nrows(), |i, j| {
        cw * cw * (0..h.ncols()).map(|k| h[(i, k)] * h[(j, k)]).sum::<f64>() + cb * cb
    });
    (nngp, net.empirical_ntk_at(&tape, None, NtkOutputs::Trace))
}

/// Analytic kernel within 5 standard errors of the Monte Carlo mean over `draws` networks, plus a
/// finite-width bias allowance of 4/width relative (as for the chains in `tests`).
fn check_graph_mc(spec: &str, param: Parameterization, width: usize, draws: u64) {
    let arch = Architecture::parse(spec, param).unwrap();
    let x = Mat::from_fn(4, 5, |i, j| gaussian(4, 5, 21)[(i, j)] * 0.9);
    let k = kernel(&arch, x.as_ref(), None).unwrap();
    let samples: Vec<(Mat<f64>, Mat<f64>)> =
        (0..draws).into_par_iter().map(|s| draw(&arch, x.as_ref(), derive_seed(77, s))).collect();
    for i in 0..4 {
        for j in 0..4 {
            for (name, an, pick) in [("nngp", k.nngp[(i, j)], 0), ("ntk", k.ntk[(i, j)], 1)] {
                let v: Vec<f64> = samples.iter().map(|s| if pick == 0 { s.0[(i, j)] } else { s.1[(i, j)] }).collect();
                let m = v.iter().sum::<f64>() / v.len() as f64;
                let se = (v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (v.len() * (v.len() - 1)) as f64).sqrt();
                let tol = 5.0 * se + 4.0 / width as f64 * an.abs() + 1e-12;
                assert!(
                    (an - m).abs() <= tol,
                    "{spec} [{param}] {name}[{i},{j}]: analytic {an}, MC {m} +- {se} (tol {tol})"
                );
            }
        }
    }
}

pub(crate) const RESNET: &str = "dense({m},w_std=1.2,b_std=0.1),residual(relu,dense({m},w_std=1.3,b_std=0.2)),\
residual(erf,dense({m},w_std=0.9)),relu,dense(1,w_std=1.1,b_std=0.1)";

/// Skip connections from the input into a sum, and a concatenation of unequal widths (weights 2/3, 1/3).
pub(crate) const DAG: &str =
    "node(h1,dense({m},w_std=1.4,b_std=0.1),input),node(a1,relu,h1),node(z2,dense({m},w_std=1.3),a1),\
node(u2,dense({m},w_std=0.8,b_std=0.2),input),node(s2,sum,z2,u2),node(a2,erf,s2),node(z3,dense({m}),a2),\
node(u3,dense({h}),input),node(c,concat,z3,u3),node(h4,dense({m},w_std=1.1),c),node(a4,relu,h4),\
node(out,dense(1,w_std=1.2),a4)";

pub(crate) fn spec(t: &str, m: usize) -> String {
    t.replace("{m}", &m.to_string()).replace("{h}", &(m / 2).to_string())
}

/// A concatenation of activations (relu and erf branches of unequal widths, weights 2/3 and 1/3), read by a dense
/// layer: allowed, as in neural-tangents, since each feature lies in one block (no cross-covariances).
pub(crate) const CONCAT_ACTS: &str =
    "node(a,dense({m},w_std=1.5,b_std=0.2),input),node(ar,relu,a),node(b,dense({h},w_std=0.8),input),\
node(be,erf,b),node(c,concat,ar,be),node(z,dense({m},w_std=1.3,b_std=0.1),c),node(az,relu,z),\
node(out,dense(1,w_std=1.2,b_std=0.1),az)";

#[test]
fn monte_carlo_residual_and_dag() {
    check_graph_mc(&spec(RESNET, 512), Parameterization::Ntk, 512, 80);
    check_graph_mc(&spec(RESNET, 512), Parameterization::Standard, 512, 80);
    check_graph_mc(&spec(DAG, 512), Parameterization::Ntk, 512, 80);
    check_graph_mc(&spec(CONCAT_ACTS, 512), Parameterization::Ntk, 512, 80);
    check_graph_mc(&spec(CONCAT_ACTS, 512), Parameterization::Standard, 512, 80);
}

#[test]
fn wide_residual_and_dag_ntks_approach_the_limit() {
    // A single network's empirical NTK deviates from the limit by O(1/sqrt(m)) (CLT over units): from m = 128
    // to m = 2048 the mean (over 3 seeds) max-entry relative error must shrink by more than 2x (4x expected).
    let x = sphere(8, 5, 3);
    for t in [RESNET, DAG] {
        let err = |m: usize| -> f64 {
            let arch = Architecture::parse(&spec(t, m), Parameterization::Ntk).unwrap();
            let inf = kernel(&arch, x.as_ref(), None).unwrap().ntk;
            (0..3u64)
                .map(|s| (&draw(&arch, x.as_ref(), derive_seed(5, s)).1 - &inf).norm_max() / inf.norm_max())
                .sum::<f64>()
                / 3.0
        };
        let (small, big) = (err(128), err(2048));
        assert!(big < 8.0 / 2048f64.sqrt(), "{t}: error {big} at width 2048");
        assert!(big < small / 2.0, "{t}: error {big} at 2048 vs {small} at 128");
    }
}

#[test]
fn identity_residual_block_leaves_the_kernel_unchanged() {
    // A residual block whose branch is the zero function (w_std = 0, no bias) is the identity: the kernel of
    // `dense, residual(relu, dense(w_std=0)), relu, dense` equals that of the chain without the block.
    let a = Architecture::parse(
        "dense(8,w_std=1.3,b_std=0.1),residual(relu,dense(8,w_std=0)),relu,dense(1)",
        Parameterization::Ntk,
    )
    .unwrap();
    let b = Architecture::parse("dense(8,w_std=1.3,b_std=0.1),relu,dense(1)", Parameterization::Ntk).unwrap();
    let x = gaussian(20, 4, 9);
    let (ka, kb) = (kernel(&a, x.as_ref(), None).unwrap(), kernel(&b, x.as_ref(), None).unwrap());
    assert!((&ka.ntk - &kb.ntk).norm_max() < 1e-14 && (&ka.nngp - &kb.nngp).norm_max() < 1e-14);
}

#[test]
fn non_gaussian_fan_in_is_refused_with_the_node() {
    let x = gaussian(3, 4, 1);
    let e = kernel(
        &Architecture::parse("dense(8),relu,residual(dense(8),relu),dense(1)", Parameterization::Ntk).unwrap(),
        x.as_ref(),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("Gaussian") && e.contains("`1`"), "{e}");
    let e = kernel(
        &Architecture::parse(
            "node(a,dense(4),input),node(b,dense(4),input),node(c,concat,a,b),node(r,relu,c),node(o,dense(1),r)",
            Parameterization::Ntk,
        )
        .unwrap(),
        x.as_ref(),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("node `r`") && e.contains("concatenation `c`"), "{e}");
    let e =
        kernel(&Architecture::parse("dense(8),relu,dense(8),relu", Parameterization::Ntk).unwrap(), x.as_ref(), None)
            .unwrap();
    assert_eq!(e.ntk.nrows(), 3);
}

#[test]
fn every_op_prints_as_the_item_it_was_parsed_from() {
    // Op::to_layer is what messages and model files show: its text must parse back to the same op.
    let s = "node(a,conv(3,3x2,padding=circular,w_std=1.3,b_std=0.2),input),node(b,conv(2,1x1),input),\
             node(c,concat,a,b),node(d,gelu,c),node(e,avg_pool(2x2,stride=2,padding=same),d),node(f,sum,e,e),\
             node(g,global_avg_pool,f),node(h,dense(4,w_std=0.7),g),node(i,erf(1,2,0.5),h),node(j,flatten,i),\
             node(out,dense(1,b_std=0.1),j)";
    let shape = spatial::Shape::image(&[6, 4], 2);
    let g = Architecture::parse(s, Parameterization::Ntk).unwrap().graph_for(&shape).unwrap();
    assert!(g.nodes[0].op.to_layer().is_none());
    for node in &g.nodes[1..] {
        let text = node.op.to_layer().unwrap().to_string();
        let back = Layer::parse(&text).unwrap();
        assert_eq!(back.to_string(), text, "node `{}`", node.name);
        assert_eq!(Some(back), node.op.to_layer(), "node `{}`", node.name);
    }
}
