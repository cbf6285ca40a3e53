//! The forward pass over the graph with caches: per node v its output H_v (N x width_v), kept only where a
//! later pass reads it (inputs of Dense nodes, and the output); per activation node the slope phi'(Z) and,
//! on request, the curvature phi''(Z). Backward, JVP, R-op passes and the empirical NTK all start from a
//! [`Tape`], so one forward pass serves any number of derivative products at the same batch.

use faer::{Mat, MatRef};

use super::network::Network;
use super::ops::{copy_input, scale_in_place, Float, Pool};
use crate::kernel::Op;
use crate::layers;
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

/// Tests only: no activation goes into a convolution's stores (`relu_after`, `Network::slope_before`), so that
/// the fused and separate passes can be compared whole. The values are the same either way, so flipping it
/// cannot disturb a test running meanwhile.
#[cfg(test)]
pub(crate) static FUSION_OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl<T: Float> Network<T> {
    /// Forward pass keeping the caches for first-order passes: node values and phi'(Z) per activation.
    pub fn tape(&self, x: MatRef<'_, T>) -> Result<Tape<T>> {
        self.build_tape(x, Caches::First)
    }

    /// As [`Network::tape`], also caching phi''(Z) for second-order (R-op) passes.
    pub fn tape_with_curvature(&self, x: MatRef<'_, T>) -> Result<Tape<T>> {
        self.build_tape(x, Caches::Second)
    }

    /// The one node that reads node u's value, reading it once, when there is exactly one and u is not the
    /// output.
    pub(crate) fn sole_reader(&self, u: usize) -> Option<usize> {
        let g = &self.graph;
        let mut readers = g.nodes.iter().enumerate().filter(|(_, n)| n.inputs.contains(&u));
        let (v, node) = readers.next()?;
        let once = node.inputs.iter().filter(|&&w| w == u).count() == 1;
        (readers.next().is_none() && once && u != g.output()).then_some(v)
    }

    /// The ReLU node that Conv node v's forward pass applies in its own stores (`conv::forward_node_relu`): v's
    /// sole reader, when it is one and no later pass reads v's value (`needed`).
    fn relu_after(&self, v: usize, needed: &[bool]) -> Option<usize> {
        #[cfg(test)]
        if FUSION_OFF.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let l = self.dense_of[v]?;
        let w = self.sole_reader(v)?;
        let relu = matches!(self.graph.nodes[w].op, Op::Activation(crate::kernel::Activation::Relu));
        (relu && !needed[v] && layers::conv::fuses_epilogue(self, l, false)).then_some(w)
    }

    /// Whether a later pass reads node v's value: a Dense or Conv node reads it, or it is the output.
    fn value_needed(&self, v: usize) -> bool {
        v == self.graph.output() || self.graph.nodes.iter().any(|n| n.op.has_params() && n.inputs[0] == v)
    }

    pub(crate) fn build_tape(&self, x: MatRef<'_, T>, caches: Caches) -> Result<Tape<T>> {
        self.build_tape_in(x, caches, &mut Pool::default())
    }

    /// [`Network::build_tape`] with every matrix taken from `pool` (no allocation once the pool holds the
    /// shapes of a previous pass; see [`Tape::recycle`]).
    pub(crate) fn build_tape_in(&self, x: MatRef<'_, T>, caches: Caches, pool: &mut Pool<T>) -> Result<Tape<T>> {
        self.check_input(x)?;
        self.build_tape_checked(x, caches, pool)
    }

    /// [`Network::build_tape_in`] on inputs that passed [`Network::check_input`] (e.g. slices of a checked batch).
    pub(crate) fn build_tape_checked(&self, x: MatRef<'_, T>, caches: Caches, pool: &mut Pool<T>) -> Result<Tape<T>> {
        let g = &self.graph;
        let nn = g.nodes.len();
        let keep = caches != Caches::None;
        let needed: Vec<bool> = (0..nn).map(|v| keep && self.value_needed(v)).collect();
        let mut values: Vec<Mat<T>> = (0..nn).map(|_| Mat::zeros(0, 0)).collect();
        let mut slope: Vec<Option<Mat<T>>> = vec![None; nn];
        let mut curv: Vec<Option<Mat<T>>> = vec![None; nn];
        // ReLU nodes whose convolution applied them (and wrote their slope).
        let mut applied = vec![false; nn];
        values[0] = pool.take(x.nrows(), x.ncols());
        copy_input(values[0].as_mut(), x);
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
                Op::Conv { .. } => {
                    let l = self.dense_of[v].expect("conv node");
                    let h = values[node.inputs[0]].as_ref();
                    match self.relu_after(v, &needed) {
                        Some(w) => {
                            let mut s = keep.then(|| pool.take(x.nrows(), node.width));
                            let out = layers::conv::forward_node_relu(self, l, h, s.as_mut(), pool);
                            (slope[w], applied[w]) = (s, true);
                            out
                        }
                        None => layers::conv::forward_node(self, l, h, pool),
                    }
                }
                Op::Flatten => take(&mut values, node.inputs[0], v, pool),
                Op::AvgPool { .. } | Op::GlobalAvgPool => {
                    layers::conv::linear_forward(self, v, values[node.inputs[0]].as_ref())
                }
                Op::Dense { .. } => {
                    let l = self.dense_of[v].expect("dense node");
                    layers::dense::forward(self, l, values[node.inputs[0]].as_ref(), pool)
                }
                Op::Activation(a) => {
                    let mut z = take(&mut values, node.inputs[0], v, pool);
                    if !applied[v] {
                        (slope[v], curv[v]) = layers::activation::forward(&mut z, a, caches, pool);
                    }
                    z
                }
                Op::Sum => {
                    let mut acc = take(&mut values, node.inputs[0], v, pool);
                    let others: Vec<&Mat<T>> = node.inputs[1..].iter().map(|&u| &values[u]).collect();
                    layers::fan_in::sum_into(&mut acc, &others);
                    acc
                }
                Op::Concat => {
                    let mut out = pool.take(x.nrows(), node.width);
                    let parts: Vec<&Mat<T>> = node.inputs.iter().map(|&u| &values[u]).collect();
                    layers::fan_in::concat_into(&mut out, &parts, node.shape.positions());
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
