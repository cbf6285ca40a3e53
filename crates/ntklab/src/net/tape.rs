//! The forward pass over the graph with caches: per node v its output H_v (N x width_v), kept only where a
//! later pass reads it (inputs of Dense nodes, and the output); per activation node the slope phi'(Z) and,
//! on request, the curvature phi''(Z). Backward, JVP, R-op passes and the empirical NTK all start from a
//! [`Tape`], so one forward pass serves any number of derivative products at the same batch.

use faer::{Accum, Mat, MatRef};

use super::network::Network;
use super::ops::{for_each_col, for_each_col2, gemm, scale_in_place, Float, Pool};
use crate::kernel::{Activation, Op};
use crate::Result;

/// Forward caches of [`Network::forward`] on one batch X (N x d).
#[derive(Debug, Clone)]
pub struct Tape<T: Float = f64> {
    /// `values[v]` = H_v (N x width_v) where a Dense node reads it; an empty 0 x 0 matrix elsewhere.
    pub values: Vec<Mat<T>>,
    /// `slope[v]` = phi'(Z) (N x width_v) for (non-identity) activation nodes, else None.
    pub slope: Vec<Option<Mat<T>>>,
    /// `curvature[v]` = phi''(Z) for activation nodes when requested and phi is not piecewise linear.
    pub curvature: Vec<Option<Mat<T>>>,
    /// Network outputs F = alpha H_out (N x k).
    pub output: Mat<T>,
}

impl<T: Float> Tape<T> {
    /// Batch size N.
    pub fn batch_size(&self) -> usize {
        self.output.nrows()
    }

    /// Hand every matrix back to `pool` for the next pass at the same shapes.
    pub(crate) fn recycle(self, pool: &mut Pool<T>) {
        for m in
            self.values.into_iter().chain(self.slope.into_iter().flatten()).chain(self.curvature.into_iter().flatten())
        {
            pool.give(m);
        }
        pool.give(self.output);
    }
}

/// Which caches a forward pass keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caches {
    /// Outputs only (plain forward).
    None,
    /// Values and slopes (first-order passes).
    First,
    /// Also curvatures (second-order passes).
    Second,
}

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

/// Pre-activation of Dense node l: `Z = w_mult H W^T + b_mult 1 b^T` (N x n_out), by GEMM, in a matrix from
/// the pool.
pub(crate) fn dense_forward<T: Float>(net: &Network<T>, l: usize, h: MatRef<'_, T>, pool: &mut Pool<T>) -> Mat<T> {
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

impl<T: Float> Network<T> {
    /// Forward pass keeping the caches for first-order passes: node values and phi'(Z) per activation.
    pub fn tape(&self, x: MatRef<'_, T>) -> Result<Tape<T>> {
        self.build_tape(x, Caches::First)
    }

    /// As [`Network::tape`], also caching phi''(Z) for second-order (R-op) passes.
    pub fn tape_with_curvature(&self, x: MatRef<'_, T>) -> Result<Tape<T>> {
        self.build_tape(x, Caches::Second)
    }

    /// Whether a later pass reads node v's value: a Dense node reads it, or it is the output.
    fn value_needed(&self, v: usize) -> bool {
        v == self.graph.output()
            || self.graph.nodes.iter().any(|n| matches!(n.op, Op::Dense { .. }) && n.inputs[0] == v)
    }

    pub(crate) fn build_tape(&self, x: MatRef<'_, T>, caches: Caches) -> Result<Tape<T>> {
        self.build_tape_in(x, caches, &mut Pool::default())
    }

    /// [`Network::build_tape`] with every matrix taken from `pool` (no allocation once the pool holds the
    /// shapes of a previous pass; see [`Tape::recycle`]).
    pub(crate) fn build_tape_in(&self, x: MatRef<'_, T>, caches: Caches, pool: &mut Pool<T>) -> Result<Tape<T>> {
        self.check_input(x)?;
        let g = &self.graph;
        let nn = g.nodes.len();
        let keep = caches != Caches::None;
        let needed: Vec<bool> = (0..nn).map(|v| keep && self.value_needed(v)).collect();
        let mut values: Vec<Mat<T>> = (0..nn).map(|_| Mat::zeros(0, 0)).collect();
        let mut slope: Vec<Option<Mat<T>>> = vec![None; nn];
        let mut curv: Vec<Option<Mat<T>>> = vec![None; nn];
        values[0] = pool.take(x.nrows(), x.ncols());
        values[0].copy_from(x);
        // Take node u's value for a consumer v that overwrites it: moved when v is its last reader and no
        // later pass needs it, else copied.
        let take = |values: &mut Vec<Mat<T>>, u: usize, v: usize, pool: &mut Pool<T>| -> Mat<T> {
            let once = g.nodes[v].inputs.iter().filter(|&&w| w == u).count() == 1;
            if self.last_use[u] == v && !needed[u] && once {
                std::mem::replace(&mut values[u], Mat::zeros(0, 0))
            } else {
                let mut c = pool.take(values[u].nrows(), values[u].ncols());
                c.copy_from(&values[u]);
                c
            }
        };
        for v in 1..nn {
            let node = &g.nodes[v];
            let out = match &node.op {
                Op::Input => unreachable!("node 0 is the only input"),
                Op::Dense { .. } => {
                    let l = self.dense_of[v].expect("dense node");
                    dense_forward(self, l, values[node.inputs[0]].as_ref(), pool)
                }
                Op::Activation(a) => {
                    let mut z = take(&mut values, node.inputs[0], v, pool);
                    if let Some(a) = nonlinearity(a) {
                        if caches == Caches::Second && !a.is_piecewise_linear() {
                            let mut c = pool.take(z.nrows(), z.ncols());
                            let zr = &z;
                            for_each_col(&mut c, |j, o| {
                                for (o, &t) in o.iter_mut().zip(zr.col_as_slice(j)) {
                                    *o = T::of(a.second_derivative(t.wide()));
                                }
                            });
                            curv[v] = Some(c);
                        }
                        let buf = keep.then(|| pool.take(z.nrows(), z.ncols()));
                        slope[v] = activate_in_place(&mut z, a, buf);
                    }
                    z
                }
                Op::Sum => {
                    let mut acc = take(&mut values, node.inputs[0], v, pool);
                    for &u in &node.inputs[1..] {
                        let src = &values[u];
                        for_each_col(&mut acc, |j, c| {
                            for (o, &s) in c.iter_mut().zip(src.col_as_slice(j)) {
                                *o += s;
                            }
                        });
                    }
                    acc
                }
                Op::Concat => {
                    let n = x.nrows();
                    let mut out = pool.take(n, node.width);
                    let mut off = 0;
                    for &u in &node.inputs {
                        let w = g.nodes[u].width;
                        out.as_mut().subcols_mut(off, w).copy_from(values[u].as_ref());
                        off += w;
                    }
                    out
                }
            };
            values[v] = out;
            // Free inputs no later node or pass reads.
            for &u in &node.inputs {
                if self.last_use[u] == v && !needed[u] {
                    pool.give(std::mem::replace(&mut values[u], Mat::zeros(0, 0)));
                }
            }
        }
        let out = g.output();
        let mut output = if keep {
            let mut c = pool.take(values[out].nrows(), values[out].ncols());
            c.copy_from(&values[out]);
            c
        } else {
            std::mem::replace(&mut values[out], Mat::zeros(0, 0))
        };
        scale_in_place(&mut output, self.alpha);
        Ok(Tape { values, slope, curvature: curv, output })
    }
}

#[cfg(test)]
mod tests {
    use crate::kernel::{Architecture, Parameterization};

    #[test]
    fn tape_output_matches_forward() {
        // Same arithmetic in the same order: agreement to rounding.
        let a = Architecture::parse(
            "dense(7,b_std=0.3),tanh,dense(5),dense(4,b_std=1),relu,dense(2)",
            Parameterization::Ntk,
        )
        .unwrap();
        let net = crate::net::Mlp::init(&a, 3, 1.7, 5).unwrap();
        let x = crate::data::synthetic::gaussian(6, 3, 1);
        let t = net.tape_with_curvature(x.as_ref()).unwrap();
        let f = net.forward(x.as_ref()).unwrap();
        assert!((&t.output - &f).norm_max() < 1e-14 * f.norm_max());
        // Node 2 (tanh) has slope and curvature, node 5 (relu) a slope only; Dense inputs are kept.
        assert!(t.slope[2].is_some() && t.curvature[2].is_some());
        assert!(t.slope[5].is_some() && t.curvature[5].is_none());
        assert_eq!(t.values[3].ncols(), 5);
        assert_eq!(t.values[1].nrows(), 0, "a Dense output read only by its activation is not kept");
    }
}
