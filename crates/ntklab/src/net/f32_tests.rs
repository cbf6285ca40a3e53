//! f32 lanes against f64: the same network (parameters rounded to f32) through every pass. f32 carries 24
//! significant bits (eps = 6e-8); a pass of a few GEMMs of length <= 16 and smooth activations loses a few ulp
//! per layer, so results agree to about 1e-6 relative; we assert 2e-5 (and 1e-4 for the Hessian products, whose
//! curvature term cancels), far below any real error such as a wrong transpose or missing term (O(1)).

use faer::Mat;

use super::ops::cast;
use super::testutil::*;
use super::{LossCurvature, Network, NtkOutputs, OutputCurvature};
use crate::kernel::Parameterization;
use crate::train::loss::Loss;

fn rel_mat(a: &Mat<f32>, b: &Mat<f64>) -> f64 {
    let a64: Mat<f64> = cast(a.as_ref());
    (&a64 - b).norm_max() / b.norm_max()
}

fn rel_vec(a: &[f32], b: &[f64]) -> f64 {
    let a64: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    rel_err(&a64, b)
}

#[test]
fn every_pass_in_f32_agrees_with_f64() {
    let cases = [
        ("dense(16,w_std=1.3,b_std=0.2),tanh,dense(12,b_std=0.1),relu,dense(3,b_std=0.5)", Parameterization::Ntk),
        (RESIDUAL, Parameterization::Standard),
        (DAG, Parameterization::Mup),
    ];
    for (s, p) in cases {
        let n64 = net(s, p, 4, 1.2, 5);
        // The f64 reference uses the f32-rounded parameters, so only the arithmetic differs.
        let n32: Network<f32> = n64.cast();
        let n64: Network<f64> = n32.cast();
        let (x, k) = (crate::data::synthetic::gaussian(7, 4, 1), n64.output_dim());
        let x32: Mat<f32> = cast(x.as_ref());
        let f = n64.forward(x.as_ref()).unwrap();
        assert!(rel_mat(&n32.forward(x32.as_ref()).unwrap(), &f) < 2e-5, "{s}: forward");
        let u = crate::data::synthetic::gaussian(7, k, 2);
        let u32: Mat<f32> = cast(u.as_ref());
        let g = n64.vjp(x.as_ref(), u.as_ref()).unwrap();
        assert!(rel_vec(&n32.vjp(x32.as_ref(), u32.as_ref()).unwrap(), &g) < 2e-5, "{s}: vjp");
        let v = random_vec(n64.num_params(), 3);
        let v32: Vec<f32> = v.iter().map(|&a| a as f32).collect();
        let jv = n64.jvp(x.as_ref(), &v).unwrap();
        assert!(rel_mat(&n32.jvp(x32.as_ref(), &v32).unwrap(), &jv) < 2e-5, "{s}: jvp");
        for outputs in [NtkOutputs::Trace, NtkOutputs::Full] {
            let e = n64.empirical_ntk(x.as_ref(), None, outputs).unwrap();
            assert!(rel_mat(&n32.empirical_ntk(x32.as_ref(), None, outputs).unwrap(), &e) < 2e-5, "{s}: entk");
        }
        let y = targets(Loss::Mse, 7, k, 4);
        let lc = LossCurvature::new(&n64, x.as_ref(), y.as_ref(), Loss::Mse).unwrap();
        let lc32 = LossCurvature::new(&n32, x32.as_ref(), y.as_ref(), Loss::Mse).unwrap();
        assert!((lc32.value() - lc.value()).abs() < 2e-5 * lc.value());
        assert!(rel_vec(lc32.gradient(), lc.gradient()) < 2e-5, "{s}: gradient");
        assert!(rel_vec(&lc32.hvp(&v32).unwrap(), &lc.hvp(&v).unwrap()) < 1e-4, "{s}: hvp");
        assert!(rel_vec(&lc32.gnvp(&v32).unwrap(), &lc.gnvp(&v).unwrap()) < 2e-5, "{s}: gnvp");
        let oc = OutputCurvature::new(&n64, x.as_ref(), u.as_ref()).unwrap();
        let oc32 = OutputCurvature::new(&n32, x32.as_ref(), u32.as_ref()).unwrap();
        assert!(rel_vec(&oc32.hvp(&v32).unwrap(), &oc.hvp(&v).unwrap()) < 1e-4, "{s}: output hvp");
        // The f64 operator interface of an f32 curvature converts at the boundary.
        let op = lc32.hessian_op();
        let mut out = vec![0.0; n64.num_params()];
        crate::spectrum::SymOp::apply(&op, &v, &mut out);
        assert!(rel_err(&out, &lc.hvp(&v).unwrap()) < 1e-4, "{s}: f32 operator");
    }
}
