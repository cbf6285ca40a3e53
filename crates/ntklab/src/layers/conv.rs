//! Convolution, average pooling, global average pooling and flatten in the finite view, on activations stored as
//! N x (P C) matrices (row = example; column p C + c = channel c at flat position p, i.e. NHWC flattened).
//!
//! Convolution with weights W (C_out x C_in x K..., PyTorch `nn.Conv2d` layout) and multipliers as for dense
//! layers: `Z[:, o] = w_mult sum_j H[:, i_j(o)] W_j^T + b_mult b`, where W_j (C_out x C_in) is the slice of W at
//! window offset j and i_j(o) the input position output o reads at offset j (none: zero padding). Each of these
//! is a GEMM on column blocks, so the passes are as many small GEMMs as (output position, offset) pairs.
//!
//! Step 1 of the finite conv layers: the math with its tests; the graph traversals call it next
//! (ARCHITECTURE.md, "How to add a layer").
#![allow(dead_code)]

use faer::{Accum, Mat, MatRef};

use crate::kernel::spatial::Window;
use crate::net::ops::{gemm, Float};

/// The geometry of one convolution or pooling node.
#[derive(Debug, Clone)]
pub(crate) struct Geom {
    /// Input channels and output channels (equal for pooling).
    pub c_in: usize,
    pub c_out: usize,
    /// Window size K (product of the window extents).
    pub k: usize,
    /// Input and output positions.
    pub p_in: usize,
    pub p_out: usize,
    /// For each window offset j, the (output position, input position) pairs it connects.
    pub pairs: Vec<Vec<(usize, usize)>>,
}

impl Geom {
    pub fn new(win: &Window, p_in: usize, c_in: usize, c_out: usize) -> Geom {
        let p_out: usize = win.out.iter().product();
        let pairs = (0..win.size)
            .map(|j| (0..p_out).filter_map(|o| win.taps[o * win.size + j].map(|i| (o, i))).collect())
            .collect();
        Geom { c_in, c_out, k: win.size, p_in, p_out, pairs }
    }
}

/// W_j^T (C_in x C_out) from PyTorch-layout weights `w[(co C_in + ci) K + j]`.
fn wt_t<T: Float>(g: &Geom, w: &[T], j: usize) -> Mat<T> {
    Mat::from_fn(g.c_in, g.c_out, |ci, co| w[(co * g.c_in + ci) * g.k + j])
}

/// Z = w_mult conv(H, W) + b_mult b (N x P_out C_out).
pub(crate) fn forward<T: Float>(g: &Geom, w: &[T], b: Option<&[T]>, mults: (f64, f64), h: MatRef<'_, T>) -> Mat<T> {
    let n = h.nrows();
    let mut z = Mat::<T>::zeros(n, g.p_out * g.c_out);
    for (j, pairs) in g.pairs.iter().enumerate() {
        let wt = wt_t(g, w, j);
        for &(o, i) in pairs {
            let dst = z.as_mut().subcols_mut(o * g.c_out, g.c_out);
            gemm(dst, Accum::Add, h.subcols(i * g.c_in, g.c_in), wt.as_ref(), mults.0);
        }
    }
    if let Some(b) = b {
        for o in 0..g.p_out {
            for co in 0..g.c_out {
                let v = T::of(mults.1 * b[co].wide());
                for r in 0..n {
                    z[(r, o * g.c_out + co)] += v;
                }
            }
        }
    }
    z
}

/// Parameter gradients from the output cotangent `delta` (N x P_out C_out): gW[co, ci, j] += w_mult
/// sum_o sum_n delta[n, (o, co)] H[n, (i_j(o), ci)], gb[co] += b_mult sum_{n, o} delta[n, (o, co)].
pub(crate) fn param_grad<T: Float>(
    g: &Geom,
    h: MatRef<'_, T>,
    delta: MatRef<'_, T>,
    mults: (f64, f64),
    gw: &mut [T],
    gb: Option<&mut [T]>,
) {
    let mut acc = Mat::<T>::zeros(g.c_in, g.c_out);
    for (j, pairs) in g.pairs.iter().enumerate() {
        acc.fill(T::ZERO);
        for &(o, i) in pairs {
            gemm(
                acc.as_mut(),
                Accum::Add,
                h.subcols(i * g.c_in, g.c_in).transpose(),
                delta.subcols(o * g.c_out, g.c_out),
                mults.0,
            );
        }
        for ci in 0..g.c_in {
            for co in 0..g.c_out {
                gw[(co * g.c_in + ci) * g.k + j] += acc[(ci, co)];
            }
        }
    }
    if let Some(gb) = gb {
        for (co, gbc) in gb.iter_mut().enumerate() {
            let mut s = 0.0;
            for o in 0..g.p_out {
                for r in 0..delta.nrows() {
                    s += delta[(r, o * g.c_out + co)].wide();
                }
            }
            *gbc += T::of(mults.1 * s);
        }
    }
}

/// The input cotangent: dH[:, i_j(o)] += w_mult delta[:, o] W_j (N x P_in C_in).
pub(crate) fn input_cotangent<T: Float>(g: &Geom, w: &[T], w_mult: f64, delta: MatRef<'_, T>) -> Mat<T> {
    let n = delta.nrows();
    let mut dh = Mat::<T>::zeros(n, g.p_in * g.c_in);
    for (j, pairs) in g.pairs.iter().enumerate() {
        let wt = wt_t(g, w, j);
        for &(o, i) in pairs {
            gemm(
                dh.as_mut().subcols_mut(i * g.c_in, g.c_in),
                Accum::Add,
                delta.subcols(o * g.c_out, g.c_out),
                wt.as_ref().transpose(),
                w_mult,
            );
        }
    }
    dh
}

/// Forward-mode derivative: dZ = w_mult (conv(dH, W) + conv(H, dW)) + b_mult db (the layer is bilinear in
/// (H, W)).
#[allow(clippy::too_many_arguments)]
pub(crate) fn tangent<T: Float>(
    g: &Geom,
    w: &[T],
    h: MatRef<'_, T>,
    hdot: Option<MatRef<'_, T>>,
    dw: &[T],
    db: Option<&[T]>,
    mults: (f64, f64),
) -> Mat<T> {
    let mut z = forward(g, dw, db, mults, h);
    if let Some(hd) = hdot {
        let z2 = forward(g, w, None, mults, hd);
        z += &z2;
    }
    z
}

/// Second order (the R-operator of the reverse pass) along the direction (Hdot, V_w, V_b): given delta and
/// R{delta}, adds R{gW}, R{gb} into `rgw`, `rgb` and returns R{dH}. The layer is bilinear in (H, W), so each is a
/// sum of the first-order passes: R{gW} = gW(Hdot, delta) + gW(H, R{delta}), R{gb} = gb(R{delta}),
/// R{dH} = dH(V_w, delta) + dH(W, R{delta}).
#[allow(clippy::too_many_arguments)]
pub(crate) fn rop<T: Float>(
    g: &Geom,
    w: &[T],
    vw: &[T],
    h: MatRef<'_, T>,
    hdot: Option<MatRef<'_, T>>,
    delta: MatRef<'_, T>,
    rdelta: MatRef<'_, T>,
    mults: (f64, f64),
    rgw: &mut [T],
    rgb: Option<&mut [T]>,
) -> Mat<T> {
    param_grad(g, h, rdelta, mults, rgw, rgb);
    if let Some(hd) = hdot {
        param_grad(g, hd, delta, mults, rgw, None);
    }
    let mut rdh = input_cotangent(g, w, mults.0, rdelta);
    rdh += &input_cotangent(g, vw, mults.0, delta);
    rdh
}

/// Average pooling (divide by the window size; padding counts) as a linear map on N x P C activations.
pub(crate) fn avg_pool<T: Float>(g: &Geom, h: MatRef<'_, T>) -> Mat<T> {
    let inv = 1.0 / g.k as f64;
    let mut z = Mat::<T>::zeros(h.nrows(), g.p_out * g.c_in);
    for pairs in &g.pairs {
        for &(o, i) in pairs {
            for c in 0..g.c_in {
                for r in 0..h.nrows() {
                    z[(r, o * g.c_in + c)] += T::of(inv * h[(r, i * g.c_in + c)].wide());
                }
            }
        }
    }
    z
}

/// The transpose of [`avg_pool`] (its VJP).
pub(crate) fn avg_pool_transpose<T: Float>(g: &Geom, delta: MatRef<'_, T>) -> Mat<T> {
    let inv = 1.0 / g.k as f64;
    let mut dh = Mat::<T>::zeros(delta.nrows(), g.p_in * g.c_in);
    for pairs in &g.pairs {
        for &(o, i) in pairs {
            for c in 0..g.c_in {
                for r in 0..delta.nrows() {
                    dh[(r, i * g.c_in + c)] += T::of(inv * delta[(r, o * g.c_in + c)].wide());
                }
            }
        }
    }
    dh
}

/// Global average pooling: the mean over positions of each channel (N x C).
pub(crate) fn global_avg_pool<T: Float>(h: MatRef<'_, T>, p: usize, c: usize) -> Mat<T> {
    let inv = 1.0 / p as f64;
    Mat::from_fn(h.nrows(), c, |r, ch| T::of(inv * (0..p).map(|q| h[(r, q * c + ch)].wide()).sum::<f64>()))
}

/// The transpose of [`global_avg_pool`].
pub(crate) fn global_avg_pool_transpose<T: Float>(delta: MatRef<'_, T>, p: usize, c: usize) -> Mat<T> {
    let inv = 1.0 / p as f64;
    Mat::from_fn(delta.nrows(), p * c, |r, pc| T::of(inv * delta[(r, pc % c)].wide()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::gaussian;
    use crate::kernel::spatial::Padding;

    fn geom(n: &[usize], k: &[usize], s: &[usize], pad: Padding, c_in: usize, c_out: usize) -> Geom {
        let w = Window::new(n, k, s, pad).unwrap();
        Geom::new(&w, n.iter().product(), c_in, c_out)
    }

    /// Direct evaluation of the definition, position by position.
    fn naive(g: &Geom, w: &[f64], b: &[f64], h: MatRef<'_, f64>, mults: (f64, f64)) -> Mat<f64> {
        let mut z = Mat::zeros(h.nrows(), g.p_out * g.c_out);
        for r in 0..h.nrows() {
            for (j, pairs) in g.pairs.iter().enumerate() {
                for &(o, i) in pairs {
                    for co in 0..g.c_out {
                        for ci in 0..g.c_in {
                            z[(r, o * g.c_out + co)] +=
                                mults.0 * w[(co * g.c_in + ci) * g.k + j] * h[(r, i * g.c_in + ci)];
                        }
                    }
                }
            }
            for o in 0..g.p_out {
                for co in 0..g.c_out {
                    z[(r, o * g.c_out + co)] += mults.1 * b[co];
                }
            }
        }
        z
    }

    fn max_diff(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
        let mut m = 0.0f64;
        for i in 0..a.nrows() {
            for j in 0..a.ncols() {
                m = m.max((a[(i, j)] - b[(i, j)]).abs());
            }
        }
        m
    }

    #[test]
    fn forward_vjp_and_jvp_match_the_definition_and_finite_differences() {
        for (n, k, s, pad) in [
            (vec![5, 4], vec![3, 3], vec![1, 1], Padding::Same),
            (vec![6, 5], vec![2, 3], vec![2, 1], Padding::Valid),
            (vec![7], vec![3], vec![2], Padding::Circular),
        ] {
            let (c_in, c_out) = (2, 3);
            let g = geom(&n, &k, &s, pad, c_in, c_out);
            let h = gaussian(4, g.p_in * c_in, 1);
            let w: Vec<f64> = gaussian(1, c_out * c_in * g.k, 2).row(0).iter().copied().collect();
            let b = vec![0.3, -0.2, 0.7];
            let mults = (0.8, 1.3);
            let z = forward(&g, &w, Some(&b), mults, h.as_ref());
            assert!(max_diff(&z, &naive(&g, &w, &b, h.as_ref(), mults)) < 1e-12);
            // VJP: <delta, dZ> for perturbations of W, b and H equals <grads, perturbation> (the map is linear
            // in each, so central differences are exact up to rounding).
            let delta = gaussian(4, g.p_out * c_out, 3);
            let mut gw = vec![0.0; w.len()];
            let mut gb = vec![0.0; 3];
            param_grad(&g, h.as_ref(), delta.as_ref(), mults, &mut gw, Some(&mut gb));
            let dh = input_cotangent(&g, &w, mults.0, delta.as_ref());
            let ip = |a: &Mat<f64>| -> f64 {
                (0..a.nrows())
                    .flat_map(|i| (0..a.ncols()).map(move |j| (i, j)))
                    .map(|(i, j)| a[(i, j)] * delta[(i, j)])
                    .sum()
            };
            let e = 1e-6;
            for idx in [0, 5, w.len() - 1] {
                let (mut wp, mut wm) = (w.clone(), w.clone());
                wp[idx] += e;
                wm[idx] -= e;
                let fd = (ip(&forward(&g, &wp, Some(&b), mults, h.as_ref()))
                    - ip(&forward(&g, &wm, Some(&b), mults, h.as_ref())))
                    / (2.0 * e);
                assert!((fd - gw[idx]).abs() < 1e-7 * (1.0 + fd.abs()), "dW[{idx}] {fd} vs {}", gw[idx]);
            }
            let (mut bp, mut bm) = (b.clone(), b.clone());
            bp[1] += e;
            bm[1] -= e;
            let fd = (ip(&forward(&g, &w, Some(&bp), mults, h.as_ref()))
                - ip(&forward(&g, &w, Some(&bm), mults, h.as_ref())))
                / (2.0 * e);
            assert!((fd - gb[1]).abs() < 1e-7 * (1.0 + fd.abs()));
            for (r, col) in [(0, 0), (3, g.p_in * c_in - 1), (2, 5)] {
                let (mut hp, mut hm) = (h.clone(), h.clone());
                hp[(r, col)] += e;
                hm[(r, col)] -= e;
                let fd = (ip(&forward(&g, &w, Some(&b), mults, hp.as_ref()))
                    - ip(&forward(&g, &w, Some(&b), mults, hm.as_ref())))
                    / (2.0 * e);
                assert!((fd - dh[(r, col)]).abs() < 1e-7 * (1.0 + fd.abs()), "dH[{r},{col}]");
            }
            // JVP: the directional derivative along (dH, dW, db).
            let hd = gaussian(4, g.p_in * c_in, 4);
            let wd: Vec<f64> = gaussian(1, w.len(), 5).row(0).iter().copied().collect();
            let bd = vec![0.1, 0.2, -0.3];
            let jv = tangent(&g, &w, h.as_ref(), Some(hd.as_ref()), &wd, Some(&bd), mults);
            let at = |t: f64| {
                let hh = Mat::from_fn(4, g.p_in * c_in, |i, j| h[(i, j)] + t * hd[(i, j)]);
                let ww: Vec<f64> = w.iter().zip(&wd).map(|(a, d)| a + t * d).collect();
                let bb: Vec<f64> = b.iter().zip(&bd).map(|(a, d)| a + t * d).collect();
                forward(&g, &ww, Some(&bb), mults, hh.as_ref())
            };
            let (zp, zm) = (at(e), at(-e));
            let fd = Mat::from_fn(4, g.p_out * c_out, |i, j| (zp[(i, j)] - zm[(i, j)]) / (2.0 * e));
            assert!(max_diff(&fd, &jv) < 1e-6, "JVP");
        }
    }

    #[test]
    fn the_r_operator_is_the_derivative_of_the_reverse_pass() {
        // Along t -> (H + t Hd, W + t Vw, b + t Vb) with the output cotangent delta + t Rd, the reverse pass's
        // outputs (gW, gb, dH) move at the rates rop returns (central differences, exact up to rounding since
        // the passes are bilinear).
        let g = geom(&[5, 4], &[3, 2], &[1, 2], Padding::Same, 2, 3);
        let h = gaussian(3, g.p_in * 2, 11);
        let hd = gaussian(3, g.p_in * 2, 12);
        let w: Vec<f64> = gaussian(1, 3 * 2 * g.k, 13).row(0).iter().copied().collect();
        let vw: Vec<f64> = gaussian(1, w.len(), 14).row(0).iter().copied().collect();
        let delta = gaussian(3, g.p_out * 3, 15);
        let rd = gaussian(3, g.p_out * 3, 16);
        let mults = (0.7, 1.1);
        let reverse = |t: f64| {
            let hh = Mat::from_fn(3, h.ncols(), |i, j| h[(i, j)] + t * hd[(i, j)]);
            let ww: Vec<f64> = w.iter().zip(&vw).map(|(a, b)| a + t * b).collect();
            let dd = Mat::from_fn(3, delta.ncols(), |i, j| delta[(i, j)] + t * rd[(i, j)]);
            let mut gw = vec![0.0; w.len()];
            let mut gb = vec![0.0; 3];
            param_grad(&g, hh.as_ref(), dd.as_ref(), mults, &mut gw, Some(&mut gb));
            (gw, gb, input_cotangent(&g, &ww, mults.0, dd.as_ref()))
        };
        let e = 1e-5;
        let ((gwp, gbp, dhp), (gwm, gbm, dhm)) = (reverse(e), reverse(-e));
        let mut rgw = vec![0.0; w.len()];
        let mut rgb = vec![0.0; 3];
        let rdh = rop(
            &g,
            &w,
            &vw,
            h.as_ref(),
            Some(hd.as_ref()),
            delta.as_ref(),
            rd.as_ref(),
            mults,
            &mut rgw,
            Some(&mut rgb),
        );
        for (k, r) in rgw.iter().enumerate() {
            let fd = (gwp[k] - gwm[k]) / (2.0 * e);
            assert!((fd - r).abs() < 1e-7 * (1.0 + fd.abs()), "R gW[{k}]");
        }
        for (k, r) in rgb.iter().enumerate() {
            assert!(((gbp[k] - gbm[k]) / (2.0 * e) - r).abs() < 1e-7, "R gb[{k}]");
        }
        let fd = Mat::from_fn(3, h.ncols(), |i, j| (dhp[(i, j)] - dhm[(i, j)]) / (2.0 * e));
        assert!(max_diff(&fd, &rdh) < 1e-7, "R dH");
    }

    #[test]
    fn pooling_and_its_transpose() {
        let g = geom(&[4, 4], &[2, 2], &[2, 2], Padding::Valid, 3, 3);
        let h = gaussian(2, 16 * 3, 7);
        let z = avg_pool(&g, h.as_ref());
        // Output (1, 0) channel 2 of example 1 averages rows 2..4, columns 0..2.
        let want = [8, 9, 12, 13].iter().map(|&p| h[(1, p * 3 + 2)]).sum::<f64>() / 4.0;
        assert!((z[(1, 2 * 3 + 2)] - want).abs() < 1e-14);
        let d = gaussian(2, z.ncols(), 8);
        let dt = avg_pool_transpose(&g, d.as_ref());
        let lhs: f64 =
            (0..2).flat_map(|r| (0..z.ncols()).map(move |c| (r, c))).map(|(r, c)| z[(r, c)] * d[(r, c)]).sum();
        let rhs: f64 =
            (0..2).flat_map(|r| (0..h.ncols()).map(move |c| (r, c))).map(|(r, c)| h[(r, c)] * dt[(r, c)]).sum();
        assert!((lhs - rhs).abs() < 1e-12, "adjoint");
        let gp = global_avg_pool(h.as_ref(), 16, 3);
        let gd = gaussian(2, 3, 9);
        let gt = global_avg_pool_transpose(gd.as_ref(), 16, 3);
        let lhs: f64 = (0..2).flat_map(|r| (0..3).map(move |c| (r, c))).map(|(r, c)| gp[(r, c)] * gd[(r, c)]).sum();
        let rhs: f64 = (0..2).flat_map(|r| (0..48).map(move |c| (r, c))).map(|(r, c)| h[(r, c)] * gt[(r, c)]).sum();
        assert!((lhs - rhs).abs() < 1e-12, "adjoint of the global pool");
    }
}
