//! Dense layers: `Z = w_mult H W^T + b_mult 1 b^T` with raw variables W (n_out x n_in, row-major in the flat
//! parameter vector, i.e. W^T column-major) and b; multipliers from the parameterization (table in
//! `net::network`). Infinite width: `Sigma' = W_std^2 K + b_std^2` and, for 'ntk', `Theta' = Sigma' + W_std^2
//! Theta`; for 'standard', `Theta' = n_in K + [bias] + W_std^2 Theta`.

use faer::prelude::ReborrowMut;
use faer::{Accum, Mat, MatMut, MatRef};

use crate::kernel::compute::Stage;
use crate::kernel::Parameterization;
use crate::net::ops::{col_sums_into, for_each_col, gemm, Float, Pool};
use crate::net::Network;

/// The block of Dense node l in a parameter-space vector, as W^T (n_in x n_out column-major).
fn block_t<'a, T: Float>(net: &Network<T>, l: usize, v: &'a [T]) -> MatRef<'a, T> {
    let d = &net.dense[l];
    MatRef::from_column_major_slice(&v[d.w_off..d.w_off + d.n_in * d.n_out], d.n_in, d.n_out)
}

/// Parameters of a Dense node: (w_mult, w_init, b_mult, b_init) by parameterization and role (the table in
/// `net::network`); the node holds n_out x n_in weights and, with b_std, n_out biases.
#[allow(clippy::too_many_arguments)]
pub fn multipliers(
    p: Parameterization,
    is_input: bool,
    is_readout: bool,
    n_in: usize,
    n_out: usize,
    w_std: f64,
    b_std: f64,
) -> (f64, f64, f64, f64) {
    let nin = n_in as f64;
    let nout = n_out as f64;
    match p {
        Parameterization::Ntk => (w_std / nin.sqrt(), 1.0, b_std, 1.0),
        Parameterization::Standard => (1.0, w_std / nin.sqrt(), 1.0, b_std),
        Parameterization::MeanField => {
            if is_readout {
                (w_std / nin, 1.0, b_std, 1.0)
            } else {
                (w_std / nin.sqrt(), 1.0, b_std, 1.0)
            }
        }
        Parameterization::Mup => {
            if is_readout {
                (w_std / nin.sqrt(), 1.0 / nin.sqrt(), b_std, 1.0)
            } else if is_input {
                (w_std * nout.sqrt() / nin.sqrt(), 1.0 / nout.sqrt(), b_std * nout.sqrt(), 1.0 / nout.sqrt())
            } else {
                (w_std, 1.0 / nin.sqrt(), b_std * nout.sqrt(), 1.0 / nout.sqrt())
            }
        }
    }
}

/// Forward: Z = w_mult H W^T + b_mult 1 b^T (N x n_out), in a matrix from the pool.
pub(crate) fn forward<T: Float>(net: &Network<T>, l: usize, h: MatRef<'_, T>, pool: &mut Pool<T>) -> Mat<T> {
    let d = &net.dense[l];
    let mut z = pool.take(h.nrows(), d.n_out);
    gemm(z.as_mut(), Accum::Replace, h, net.weight_t(l), d.w_mult);
    if let Some(b) = net.bias(l) {
        let bm = d.b_mult;
        for_each_col(&mut z, |j, c| {
            let bj = T::of(bm * b[j].wide());
            c.iter_mut().for_each(|v| *v += bj);
        });
    }
    z
}

/// Reverse, parameters: dW = w_mult Delta^T H (written as dW^T = w_mult H^T Delta, the flat layout) and
/// db = b_mult Delta^T 1, into `g`.
pub(crate) fn param_grad<T: Float>(net: &Network<T>, l: usize, h: MatRef<'_, T>, delta: &Mat<T>, g: &mut [T]) {
    let d = &net.dense[l];
    let gw = MatMut::from_column_major_slice_mut(&mut g[d.w_off..d.w_off + d.n_in * d.n_out], d.n_in, d.n_out);
    gemm(gw, Accum::Replace, h.transpose(), delta.as_ref(), d.w_mult);
    if let Some(bo) = d.b_off {
        col_sums_into(delta, d.b_mult, &mut g[bo..bo + d.n_out]);
    }
}

/// Reverse, input: Gamma_u = w_mult Delta W ((b N) x n_in; Delta may stack b cotangents).
pub(crate) fn input_cotangent<T: Float>(net: &Network<T>, l: usize, delta: &Mat<T>, pool: &mut Pool<T>) -> Mat<T> {
    let d = &net.dense[l];
    let mut next = pool.take(delta.nrows(), d.n_in);
    gemm(next.as_mut(), Accum::Replace, delta.as_ref(), net.weight_t(l).transpose(), d.w_mult);
    next
}

/// Forward mode: dZ = w_mult (H V^T + dH W^T) + b_mult 1 v_b^T for the tangent v (dH = None: zero).
pub(crate) fn tangent<T: Float>(
    net: &Network<T>,
    l: usize,
    h: MatRef<'_, T>,
    hdot: Option<&Mat<T>>,
    v: &[T],
    pool: &mut Pool<T>,
) -> Mat<T> {
    let d = &net.dense[l];
    let mut zd = pool.take(h.nrows(), d.n_out);
    gemm(zd.as_mut(), Accum::Replace, h, block_t(net, l, v), d.w_mult);
    if let Some(hd) = hdot {
        gemm(zd.as_mut(), Accum::Add, hd.as_ref(), net.weight_t(l), d.w_mult);
    }
    if let Some(bo) = d.b_off {
        let (vb, bm) = (&v[bo..bo + d.n_out], d.b_mult);
        for_each_col(&mut zd, |j, c| {
            let add = T::of(bm * vb[j].wide());
            c.iter_mut().for_each(|x| *x += add);
        });
    }
    zd
}

/// R-operator: R{dW} = w_mult (R{Delta}^T H + Delta^T R{H}) and R{db} = b_mult R{Delta}^T 1 into `out`; returns
/// R{Gamma_u} = w_mult (R{Delta} W + Delta V) when `input_needed` (R{Delta}, R{H} = None: zero).
#[allow(clippy::too_many_arguments)]
pub(crate) fn rop<T: Float>(
    net: &Network<T>,
    l: usize,
    h: MatRef<'_, T>,
    hdot: Option<&Mat<T>>,
    delta: &Mat<T>,
    rdelta: Option<&Mat<T>>,
    v: &[T],
    out: &mut [T],
    input_needed: bool,
    pool: &mut Pool<T>,
) -> Option<Mat<T>> {
    let d = &net.dense[l];
    {
        let mut ow =
            MatMut::from_column_major_slice_mut(&mut out[d.w_off..d.w_off + d.n_in * d.n_out], d.n_in, d.n_out);
        match rdelta {
            Some(rd) => gemm(ow.rb_mut(), Accum::Replace, h.transpose(), rd.as_ref(), d.w_mult),
            None => ow.fill(T::ZERO),
        }
        if let Some(hd) = hdot {
            gemm(ow, Accum::Add, hd.transpose(), delta.as_ref(), d.w_mult);
        }
    }
    if let Some(bo) = d.b_off {
        match rdelta {
            Some(rd) => col_sums_into(rd, d.b_mult, &mut out[bo..bo + d.n_out]),
            None => out[bo..bo + d.n_out].fill(T::ZERO),
        }
    }
    input_needed.then(|| {
        let mut next = pool.take(h.nrows(), d.n_in);
        let mut mode = Accum::Replace;
        if let Some(rd) = rdelta {
            gemm(next.as_mut(), Accum::Replace, rd.as_ref(), net.weight_t(l).transpose(), d.w_mult);
            mode = Accum::Add;
        }
        gemm(next.as_mut(), mode, delta.as_ref(), block_t(net, l, v).transpose(), d.w_mult);
        next
    })
}

/// Infinite width: the affine stage on register `reg` (n_in: the input width, for 'standard').
pub(crate) fn kernel_stage(reg: usize, w_std: f64, b_std: Option<f64>, p: Parameterization, n_in: usize) -> Stage {
    let w2 = w_std * w_std;
    let b2 = b_std.map(|b| b * b).unwrap_or(0.0);
    match p {
        Parameterization::Ntk => Stage::Affine { reg, w2, b2, tk: 0.0, tc: 0.0, ntk_uses_new_k: true },
        _ => Stage::Affine {
            reg,
            w2,
            b2,
            tk: n_in as f64,
            tc: if b_std.is_some() { 1.0 } else { 0.0 },
            ntk_uses_new_k: false,
        },
    }
}
