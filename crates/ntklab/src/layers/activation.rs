//! Activation nodes: H = phi(Z) elementwise. Finite passes use phi, phi' and phi'' from
//! `kernel::activation::Activation`; the infinite-width rule is its dual: `K = T(Sigma)`, `Theta <- Theta Tdot`,
//! defined for Gaussian (pre-activation) inputs only.

use faer::Mat;

use crate::kernel::compute::Stage;
use crate::kernel::Activation;
use crate::net::ops::{
    col, flat_mut, for_each_col, for_each_col2, hadamard, hadamard_blocks, hadamard_into, wide, Float, Pool,
};
use crate::net::tape::Caches;

/// The activation of an activation node, None for the identity (which the passes skip).
pub(crate) fn nonlinearity(a: &Activation) -> Option<&Activation> {
    fn is_identity(a: &Activation) -> bool {
        match a {
            Activation::Identity => true,
            Activation::Quad { inner, .. } => is_identity(inner),
            _ => false,
        }
    }
    (!is_identity(a)).then_some(a)
}

/// z <- phi(z), returning phi'(z) in `slope` when given, in one pass over z (ReLU has its own branch-free loop).
fn activate_in_place<T: Float>(z: &mut Mat<T>, a: &Activation, slope: Option<Mat<T>>) -> Option<Mat<T>> {
    fn pass<T: Float>(z: &mut Mat<T>, slope: Option<Mat<T>>, f: impl Fn(T) -> (T, T) + Sync + Send) -> Option<Mat<T>> {
        match slope {
            Some(mut s) => {
                if let (Some(zf), Some(sf)) = (flat_mut(z), flat_mut(&mut s)) {
                    wide(|| {
                        for (t, o) in zf.iter_mut().zip(sf.iter_mut()) {
                            let (v, d) = f(*t);
                            *t = v;
                            *o = d;
                        }
                    });
                    return Some(s);
                }
                for_each_col2(z, &mut s, |_, zc, sc| {
                    for (t, o) in zc.iter_mut().zip(sc.iter_mut()) {
                        let (v, d) = f(*t);
                        *t = v;
                        *o = d;
                    }
                });
                Some(s)
            }
            None => {
                for_each_col(z, |_, c| {
                    for t in c.iter_mut() {
                        *t = f(*t).0;
                    }
                });
                None
            }
        }
    }
    match a {
        Activation::Relu => pass(z, slope, |t| if t > T::ZERO { (t, T::ONE) } else { (T::ZERO, T::ZERO) }),
        _ => pass(z, slope, |t| {
            let x = t.wide();
            (T::of(a.apply(x)), T::of(a.derivative(x)))
        }),
    }
}

/// Forward in place: z <- phi(z); returns (phi'(z), phi''(z)) as the caches ask (None for the identity, and
/// for phi'' of piecewise-linear functions).
pub(crate) fn forward<T: Float>(
    z: &mut Mat<T>,
    a: &Activation,
    caches: Caches,
    pool: &mut Pool<T>,
) -> (Option<Mat<T>>, Option<Mat<T>>) {
    let Some(a) = nonlinearity(a) else { return (None, None) };
    let curv = (caches == Caches::Second && !a.is_piecewise_linear()).then(|| {
        let mut c = pool.take(z.nrows(), z.ncols());
        let zr = &*z;
        for_each_col(&mut c, |j, o| {
            for (o, &t) in o.iter_mut().zip(zr.col_as_slice(j)) {
                *o = T::of(a.second_derivative(t.wide()));
            }
        });
        c
    });
    let buf = (caches != Caches::None).then(|| pool.take(z.nrows(), z.ncols()));
    (activate_in_place(z, a, buf), curv)
}

/// Reverse: Gamma_u = Gamma_v ⊙ phi'(Z) in place (broadcast over stacked blocks); with `keep`, returns
/// Gamma_v ⊙ phi''(Z) for the R-operator (before the product).
pub(crate) fn backward<T: Float>(
    g: &mut Mat<T>,
    slope: Option<&Mat<T>>,
    curv: Option<&Mat<T>>,
    keep: bool,
) -> Option<Mat<T>> {
    let kept = if keep { curv.map(|c| hadamard(g, c)) } else { None };
    if let Some(s) = slope {
        hadamard_blocks(g, s);
    }
    kept
}

/// Forward mode: dH = phi'(Z) ⊙ dH_u (None: zero).
pub(crate) fn tangent<T: Float>(hdot: Option<&Mat<T>>, slope: Option<&Mat<T>>, pool: &mut Pool<T>) -> Option<Mat<T>> {
    hdot.map(|hd| {
        let mut h = pool.take(hd.nrows(), hd.ncols());
        match slope {
            Some(s) => hadamard_into(&mut h, hd, s),
            None => h.copy_from(hd),
        }
        h
    })
}

/// R-operator: R{Gamma_u} = R{Gamma_v} ⊙ phi'(Z) + (Gamma_v ⊙ phi''(Z)) ⊙ R{H_u} (any term may be zero: None).
pub(crate) fn rop<T: Float>(
    rg: Option<Mat<T>>,
    slope: Option<&Mat<T>>,
    gamma_curv: Option<&Mat<T>>,
    hdot: Option<&Mat<T>>,
    pool: &mut Pool<T>,
) -> Option<Mat<T>> {
    let curv_term = gamma_curv.zip(hdot);
    match (rg, slope, curv_term) {
        (None, _, None) => None,
        (Some(r), None, None) => Some(r),
        (Some(r), Some(s), None) => {
            let mut o = pool.take(r.nrows(), r.ncols());
            hadamard_into(&mut o, &r, s);
            pool.give(r);
            Some(o)
        }
        (None, _, Some((gc, hd))) => {
            let mut o = pool.take(gc.nrows(), gc.ncols());
            hadamard_into(&mut o, gc, hd);
            Some(o)
        }
        (Some(r), s, Some((gc, hd))) => {
            let mut o = pool.take(r.nrows(), r.ncols());
            for_each_col(&mut o, |j, oc| {
                let (rg, gc, hd) = (col(&r, j), col(gc, j), col(hd, j));
                match s {
                    Some(s) => {
                        let s = col(s, j);
                        for i in 0..oc.len() {
                            oc[i] = rg[i] * s[i] + gc[i] * hd[i];
                        }
                    }
                    None => {
                        for i in 0..oc.len() {
                            oc[i] = rg[i] + gc[i] * hd[i];
                        }
                    }
                }
            });
            pool.give(r);
            Some(o)
        }
    }
}

/// Infinite width: the dual on register `reg`, with the row variances of table `slot`.
pub(crate) fn kernel_stage(reg: usize, a: &Activation, slot: usize) -> Stage {
    Stage::Nonlin { reg, dual: a.dual(), slot }
}
