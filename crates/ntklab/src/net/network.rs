//! The finite network: a compiled [`Graph`] over one flat parameter vector, parameterization multipliers,
//! seeded initialization and the forward pass.
//!
//! Every Dense node computes `z = h W_eff^T + b_eff` with `W_eff = w_mult * W`, `b_eff = b_mult * b`, where
//! `W` (n_out x n_in, PyTorch `nn.Linear` layout) and `b` are the trainable variables, initialized
//! `W ~ N(0, w_init^2)`, `b ~ N(0, b_init^2)`. The network output is `alpha * z_out`. The parameterization
//! decides (w_mult, w_init, b_mult, b_init) for each Dense node (sigma = w_std, beta = b_std, n_in fan-in;
//! "input" nodes read the graph input through no other Dense node, "readout" nodes reach the output through
//! none, and a network with one Dense node treats it as an input node):
//!
//! | parameterization | node | w_mult | w_init | b_mult | b_init |
//! |---|---|---|---|---|---|
//! | ntk (Jacot et al. 2018; neural-tangents) | all | sigma/sqrt(n_in) | 1 | beta | 1 |
//! | standard | all | 1 | sigma/sqrt(n_in) | 1 | beta |
//! | mean-field (Mei et al. 2018) | hidden | sigma/sqrt(n_in) | 1 | beta | 1 |
//! | mean-field | readout | sigma/n_in | 1 | beta | 1 |
//! | mup (Yang & Hu 2021, Table 3, abc form with c = 0) | input (n = n_out) | sigma sqrt(n)/sqrt(d) | 1/sqrt(n) | beta sqrt(n) | 1/sqrt(n) |
//! | mup | hidden | sigma | 1/sqrt(n_in) | beta sqrt(n_out) | 1/sqrt(n_out) |
//! | mup | readout | sigma/sqrt(n_in) | 1/sqrt(n_in) | beta | 1 |
//!
//! (For muP the input dimension d is treated as O(1): the 1/sqrt(d) only normalizes the inputs as in the
//! other parameterizations, so a muP net at init has the same forward statistics as an 'ntk' one.)
//!
//! The flat parameter vector holds, for each Dense node in graph order, the weight row-major (PyTorch order),
//! then the bias. Row-major n_out x n_in is column-major n_in x n_out, so a weight block *is* W^T as a faer
//! column-major view: every pass reads and writes the flat vector in place, with no per-layer copies.

use faer::{Mat, MatRef};
use rand_distr::{Distribution, StandardNormal};

use super::ops::{Float, Scratch};
use crate::data::synthetic::{derive_seed, rng};
use crate::kernel::spatial::{Shape, Window};
use crate::kernel::{Architecture, Graph, Op};
use crate::layers::conv::Geom;
use crate::{Error, Result};

/// One parameterized node's place in the graph and the flat vector, and its multipliers: a Dense node, or a
/// Conv node read as a Dense map of each window (fan-in n_in = C_in |F|, n_out = C_out; its weight block is
/// PyTorch's `nn.Conv2d` tensor (C_out, C_in, kh, kw) row-major, i.e. n_out x n_in).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseParams {
    /// Graph node index.
    pub node: usize,
    /// Node name: tensors are `{name}.weight` and `{name}.bias` (PyTorch `nn.Sequential` index in a chain).
    pub name: String,
    /// Fan-in.
    pub n_in: usize,
    /// Fan-out.
    pub n_out: usize,
    /// Offset of the weight block (n_out x n_in row-major) in the flat vector.
    pub w_off: usize,
    /// Offset of the bias (n_out) in the flat vector, if the node has one.
    pub b_off: Option<usize>,
    /// Effective weight = w_mult * weight.
    pub w_mult: f64,
    /// Effective bias = b_mult * bias.
    pub b_mult: f64,
    /// Standard deviation of the raw weight at initialization.
    pub w_init: f64,
    /// Standard deviation of the raw bias at initialization.
    pub b_init: f64,
    /// For a Conv node, its filter extents (the weight tensor is n_out x (n_in / |F|) x filter); None for Dense.
    pub filter: Option<Vec<usize>>,
}

impl DenseParams {
    /// Number of trainable scalars (weights + bias).
    pub fn num_params(&self) -> usize {
        self.n_out * self.n_in + if self.b_off.is_some() { self.n_out } else { 0 }
    }
    /// Whether the node has a bias.
    pub fn has_bias(&self) -> bool {
        self.b_off.is_some()
    }
    /// The weight tensor's shape in PyTorch's layout: [n_out, n_in] (Linear) or [C_out, C_in, k...] (Conv).
    pub fn weight_shape(&self) -> Vec<usize> {
        match &self.filter {
            None => vec![self.n_out, self.n_in],
            Some(f) => {
                let k: usize = f.iter().product();
                let mut s = vec![self.n_out, self.n_in / k];
                s.extend_from_slice(f);
                s
            }
        }
    }
}

/// A finite network `f(x) = alpha * z_out(x)` on a DAG of Dense, Conv, pooling, activation and fan-in nodes,
/// computing in precision `T` (f64 by default, or f32 lanes; see [`Float`]). Values with spatial axes are N x (P C)
/// matrices (column p C + c: channel c at flat position p, NHWC order).
#[derive(Debug, Clone, PartialEq)]
pub struct Network<T: Float = f64> {
    /// The architecture it was built from.
    pub arch: Architecture,
    /// The compiled graph.
    pub graph: Graph,
    /// Input dimension d (values per example: positions x channels for images).
    pub input_dim: usize,
    /// Shape of one input example (spatial extents and channels; no spatial axes for feature vectors).
    pub input_shape: Shape,
    /// Output scale alpha (Chizat, Oyallon & Bach 2019, lazy training).
    pub alpha: f64,
    /// Dense nodes in graph order (= parameter order).
    pub dense: Vec<DenseParams>,
    /// For each graph node, its index in `dense` if it is a Dense node.
    pub(crate) dense_of: Vec<Option<usize>>,
    /// For each graph node, the last node that reads it (itself for the output).
    pub(crate) last_use: Vec<usize>,
    /// For each Conv and AvgPool node, its window geometry (which input position each output reads).
    pub(crate) geom: Vec<Option<Geom>>,
    params: Vec<T>,
    /// Scratch matrices kept between calls (see [`Scratch`]).
    pub(crate) scratch: Scratch<T>,
}

/// The historical name of the f64 [`Network`] (fully-connected chains are the common case).
pub type Mlp = Network<f64>;

pub use crate::layers::dense::multipliers;

impl<T: Float> Network<T> {
    /// Shapes and multipliers with all parameters zero; used by `init` and by loaders. The size of the
    /// parameter vector is checked against the memory available before anything is allocated.
    pub fn zeros(arch: &Architecture, input_dim: usize, alpha: f64) -> Result<Network<T>> {
        Network::zeros_for(arch, &Shape::flat(input_dim), alpha)
    }

    /// [`Network::zeros`] for inputs of the given shape per example (N x H x W x C images for conv layers).
    pub fn zeros_for(arch: &Architecture, input: &Shape, alpha: f64) -> Result<Network<T>> {
        if !alpha.is_finite() || alpha == 0.0 {
            return Err(Error::Config(format!("output scale alpha must be finite and non-zero, got {alpha}")));
        }
        let graph = arch.graph_for(input)?;
        let input_dim = input.size();
        let count = graph.param_count();
        if count == 0 {
            return Err(Error::Config("a finite network needs at least one dense or conv layer".into()));
        }
        let mut geom: Vec<Option<Geom>> = vec![None; graph.nodes.len()];
        for (v, node) in graph.nodes.iter().enumerate() {
            let src = &graph.nodes[node.inputs.first().copied().unwrap_or(0)].shape;
            let (filter, stride, padding, c_out) = match &node.op {
                Op::Conv { channels, filter, stride, padding, .. } => (filter, stride, *padding, *channels),
                Op::AvgPool { window, stride, padding } => (window, stride, *padding, src.channels),
                _ => continue,
            };
            let win = Window::new(&src.spatial, filter, stride, padding)?;
            geom[v] = Some(Geom::new(&win, &src.spatial, src.channels, c_out));
        }
        let consumers = graph.consumers();
        let mut dense = Vec::with_capacity(count);
        let mut dense_of = vec![None; graph.nodes.len()];
        let mut off = 0usize;
        for (v, node) in graph.nodes.iter().enumerate() {
            let (width, w_std, b_std, n_in, filter) = match &node.op {
                Op::Dense { width, w_std, b_std } => (*width, *w_std, *b_std, graph.nodes[node.inputs[0]].width, None),
                Op::Conv { channels, filter, w_std, b_std, .. } => {
                    let fan_in = graph.nodes[node.inputs[0]].shape.channels * filter.iter().product::<usize>();
                    (*channels, *w_std, *b_std, fan_in, Some(filter.clone()))
                }
                _ => continue,
            };
            let is_input = graph.reaches_without_dense(v, true, &consumers);
            let is_readout = count > 1 && graph.reaches_without_dense(v, false, &consumers);
            let (w_mult, w_init, b_mult, b_init) =
                multipliers(arch.parameterization, is_input, is_readout, n_in, width, w_std, b_std.unwrap_or(0.0));
            let w_off = off;
            off = width
                .checked_mul(n_in)
                .and_then(|w| off.checked_add(w))
                .ok_or_else(|| Error::Config(format!("node `{}`: {width} x {n_in} weights overflow", node.name)))?;
            let b_off = b_std.map(|_| {
                let b = off;
                off += width;
                b
            });
            dense_of[v] = Some(dense.len());
            dense.push(DenseParams {
                node: v,
                name: node.name.clone(),
                n_in,
                n_out: width,
                w_off,
                b_off,
                w_mult,
                b_mult,
                w_init,
                b_init,
                filter,
            });
        }
        let mut last_use: Vec<usize> = (0..graph.nodes.len()).collect();
        for (u, c) in consumers.iter().enumerate() {
            if let Some(&m) = c.iter().max() {
                last_use[u] = m;
            }
        }
        crate::data::memory::check_alloc(off.saturating_mul(std::mem::size_of::<T>()), "the parameter vector")?;
        Ok(Network {
            arch: arch.clone(),
            graph,
            input_dim,
            input_shape: input.clone(),
            alpha,
            dense,
            dense_of,
            last_use,
            geom,
            params: vec![T::ZERO; off],
            scratch: Scratch::default(),
        })
    }

    /// Seeded initialization: Dense node l (in parameter order) draws from its own stream
    /// `derive_seed(seed, l)`, weights row-major then the bias, so weights do not depend on thread count or
    /// on other layers' sizes.
    pub fn init(arch: &Architecture, input_dim: usize, alpha: f64, seed: u64) -> Result<Network<T>> {
        Network::init_for(arch, &Shape::flat(input_dim), alpha, seed)
    }

    /// [`Network::init`] for inputs of the given shape per example.
    pub fn init_for(arch: &Architecture, input: &Shape, alpha: f64, seed: u64) -> Result<Network<T>> {
        let mut net = Network::<T>::zeros_for(arch, input, alpha)?;
        for l in 0..net.dense.len() {
            let d = net.dense[l].clone();
            let mut r = rng(derive_seed(seed, l as u64));
            for w in &mut net.params[d.w_off..d.w_off + d.n_in * d.n_out] {
                let z: f64 = StandardNormal.sample(&mut r);
                *w = T::of(d.w_init * z);
            }
            if let Some(bo) = d.b_off {
                for b in &mut net.params[bo..bo + d.n_out] {
                    let z: f64 = StandardNormal.sample(&mut r);
                    *b = T::of(d.b_init * z);
                }
            }
        }
        Ok(net)
    }

    /// Output dimension k.
    pub fn output_dim(&self) -> usize {
        self.graph.nodes[self.graph.output()].width
    }

    /// Total number of trainable scalars P.
    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    /// The flat parameter vector (per Dense node: weight row-major, then bias).
    pub fn params(&self) -> &[T] {
        &self.params
    }

    /// The flat parameter vector, for in-place updates (optimizers).
    pub fn params_mut(&mut self) -> &mut [T] {
        &mut self.params
    }

    /// Overwrite all parameters from a flat vector in [`Network::params`] order.
    pub fn set_params(&mut self, p: &[T]) -> Result<()> {
        if p.len() != self.num_params() {
            return Err(Error::Shape(format!(
                "parameter vector has {} entries, the network has {}",
                p.len(),
                self.num_params()
            )));
        }
        self.params.copy_from_slice(p);
        Ok(())
    }

    /// Raw weight of Dense node l (parameter order) as an n_out x n_in view (PyTorch layout).
    pub fn weight(&self, l: usize) -> MatRef<'_, T> {
        self.weight_t(l).transpose()
    }

    /// W^T of Dense node l: the n_in x n_out column-major view of its weight block.
    pub(crate) fn weight_t(&self, l: usize) -> MatRef<'_, T> {
        let d = &self.dense[l];
        MatRef::from_column_major_slice(&self.params[d.w_off..d.w_off + d.n_in * d.n_out], d.n_in, d.n_out)
    }

    /// Raw bias of Dense node l, if it has one.
    pub fn bias(&self, l: usize) -> Option<&[T]> {
        let d = &self.dense[l];
        d.b_off.map(|b| &self.params[b..b + d.n_out])
    }

    /// Check an input batch: N x d with finite entries (d = H W C values per image, NHWC order).
    pub fn check_input(&self, x: MatRef<'_, T>) -> Result<()> {
        if x.ncols() != self.input_dim {
            let what = if self.input_shape.is_spatial() {
                format!("{} values per example ({})", self.input_dim, self.input_shape)
            } else {
                self.input_dim.to_string()
            };
            return Err(Error::Shape(format!(
                "inputs have {} features per row but the network expects {what}",
                x.ncols()
            )));
        }
        if x.nrows() == 0 {
            return Err(Error::Shape("input batch has no rows".into()));
        }
        // A pass without early exit over whole columns (vectorized; a search per value was not), then the first
        // bad value's place only in a column that has one.
        let finite = |c: &[T]| c.iter().fold(true, |ok, v| ok & v.wide().is_finite());
        let column_major = x.row_stride() == 1 && (x.ncols() == 1 || x.col_stride() == x.nrows() as isize);
        let row_major = x.col_stride() == 1 && (x.nrows() == 1 || x.row_stride() == x.ncols() as isize);
        if column_major || row_major {
            // SAFETY: the nrows ncols entries lie back to back from the first, column after column or row after
            // row (strides checked), borrowed from x.
            let all = unsafe { std::slice::from_raw_parts(x.as_ptr(), x.nrows() * x.ncols()) };
            if super::ops::wide(|| finite(all)) {
                return Ok(());
            }
        }
        let bad = (0..x.ncols()).find_map(|j| match x.col(j).try_as_col_major() {
            Some(c) if finite(c.as_slice()) => None,
            Some(c) => c.as_slice().iter().position(|v| !v.wide().is_finite()).map(|i| (i, j)),
            None => (0..x.nrows()).find(|&i| !x[(i, j)].wide().is_finite()).map(|i| (i, j)),
        });
        match bad {
            Some((i, j)) => Err(Error::InvalidInput(format!("input has a non-finite value at row {i}, column {j}"))),
            None => Ok(()),
        }
    }

    /// Network outputs f(X) = alpha z_out(X), N x k.
    pub fn forward(&self, x: MatRef<'_, T>) -> Result<Mat<T>> {
        Ok(self.build_tape(x, super::tape::Caches::None)?.output)
    }

    /// The same network in precision `S` (parameters rounded; f32 -> f64 is exact).
    pub fn cast<S: Float>(&self) -> Network<S> {
        Network {
            arch: self.arch.clone(),
            graph: self.graph.clone(),
            input_dim: self.input_dim,
            input_shape: self.input_shape.clone(),
            alpha: self.alpha,
            dense: self.dense.clone(),
            dense_of: self.dense_of.clone(),
            last_use: self.last_use.clone(),
            geom: self.geom.clone(),
            params: self.params.iter().map(|v| S::of(v.wide())).collect(),
            scratch: Scratch::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::Parameterization;

    fn arch(s: &str, p: Parameterization) -> Architecture {
        Architecture::parse(s, p).unwrap()
    }

    #[test]
    fn seeded_init_and_param_roundtrip() {
        let a = arch("dense(5,b_std=0.5),tanh,dense(3),relu,dense(2,b_std=1)", Parameterization::Ntk);
        let n1 = Mlp::init(&a, 4, 1.0, 7).unwrap();
        let n2 = Mlp::init(&a, 4, 1.0, 7).unwrap();
        assert_eq!(n1, n2);
        assert_ne!(n1, Mlp::init(&a, 4, 1.0, 8).unwrap());
        assert_eq!(n1.num_params(), 5 * 4 + 5 + 3 * 5 + 2 * 3 + 2);
        let p = n1.params().to_vec();
        let mut n3 = Mlp::zeros(&a, 4, 1.0).unwrap();
        n3.set_params(&p).unwrap();
        assert_eq!(n3, n1);
        assert!(n3.set_params(&p[1..]).is_err());
        assert_eq!(n1.dense[0].name, "0");
        assert_eq!(n1.dense[2].name, "4");
        // The weight view is the row-major block.
        assert_eq!(n1.weight(1)[(2, 4)], p[25 + 2 * 5 + 4]);
    }

    #[test]
    fn forward_matches_explicit_loop() {
        let a = arch("dense(6,w_std=1.3,b_std=0.2),erf,dense(1,b_std=0.1)", Parameterization::Standard);
        let net = Mlp::init(&a, 3, 2.0, 1).unwrap();
        let x = crate::data::synthetic::gaussian(4, 3, 9);
        let f = net.forward(x.as_ref()).unwrap();
        let (d0, d1) = (&net.dense[0], &net.dense[1]);
        for n in 0..4 {
            let mut out = d1.b_mult * net.bias(1).unwrap()[0];
            for i in 0..6 {
                let mut z = d0.b_mult * net.bias(0).unwrap()[i];
                for j in 0..3 {
                    z += d0.w_mult * net.weight(0)[(i, j)] * x[(n, j)];
                }
                out += d1.w_mult * net.weight(1)[(0, i)] * libm::erf(z);
            }
            assert!((f[(n, 0)] - 2.0 * out).abs() < 1e-12);
        }
    }

    #[test]
    fn residual_forward_matches_explicit_formula() {
        // f = W3 relu(h + W2 relu(h)) with h = W1 x: the residual sum written out by hand.
        let a = arch("dense(5,b_std=0.2),residual(relu,dense(5,b_std=0.3)),relu,dense(1)", Parameterization::Ntk);
        let net = Mlp::init(&a, 3, 1.0, 4).unwrap();
        let x = crate::data::synthetic::gaussian(2, 3, 1);
        let f = net.forward(x.as_ref()).unwrap();
        let dense = |l: usize, h: &[f64]| -> Vec<f64> {
            let d = &net.dense[l];
            (0..d.n_out)
                .map(|i| {
                    (0..d.n_in).map(|j| d.w_mult * net.weight(l)[(i, j)] * h[j]).sum::<f64>()
                        + net.bias(l).map_or(0.0, |b| d.b_mult * b[i])
                })
                .collect()
        };
        let relu = |v: Vec<f64>| v.into_iter().map(|t| t.max(0.0)).collect::<Vec<_>>();
        for n in 0..2 {
            let h = dense(0, &[x[(n, 0)], x[(n, 1)], x[(n, 2)]]);
            let r = dense(1, &relu(h.clone()));
            let s: Vec<f64> = h.iter().zip(&r).map(|(a, b)| a + b).collect();
            let out = dense(2, &relu(s))[0];
            assert!((f[(n, 0)] - out).abs() < 1e-13, "{} vs {out}", f[(n, 0)]);
        }
    }

    #[test]
    fn parameterizations_agree_at_init_in_function_space() {
        // ntk and standard use the same effective weight distribution: same seed gives the same function.
        let s = "dense(8,w_std=1.4,b_std=0.3),relu,dense(1,b_std=0.3)";
        let x = crate::data::synthetic::gaussian(3, 5, 2);
        let fa = Mlp::init(&arch(s, Parameterization::Ntk), 5, 1.0, 3).unwrap().forward(x.as_ref()).unwrap();
        let fb = Mlp::init(&arch(s, Parameterization::Standard), 5, 1.0, 3).unwrap().forward(x.as_ref()).unwrap();
        for i in 0..3 {
            assert!((fa[(i, 0)] - fb[(i, 0)]).abs() < 1e-12);
        }
    }

    #[test]
    fn roles_in_a_dag() {
        // The skip Dense node reads the input (an input node); `out` is the only readout.
        let a = arch(
            "node(h,dense(4),input),node(a,relu,h),node(skip,dense(4),input),node(s,sum,a,skip),node(out,dense(1),s)",
            Parameterization::MeanField,
        );
        let net = Mlp::zeros(&a, 3, 1.0).unwrap();
        let by = |n: &str| net.dense.iter().find(|d| d.name == n).unwrap().w_mult;
        assert!((by("out") - 1.0 / 4.0).abs() < 1e-15);
        assert!((by("skip") - 1.0 / 3f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn bad_configs_are_errors() {
        let p = Parameterization::Ntk;
        assert!(Mlp::init(&arch("relu", p), 3, 1.0, 0).is_err());
        assert!(Mlp::init(&arch("dense(3),relu,dense(1)", p), 0, 1.0, 0).is_err());
        let net = Mlp::init(&arch("dense(3),relu,dense(1)", p), 2, 1.0, 0).unwrap();
        assert!(net.forward(Mat::<f64>::zeros(2, 3).as_ref()).is_err());
        let mut x = Mat::<f64>::zeros(2, 2);
        x[(1, 1)] = f64::NAN;
        assert!(net.forward(x.as_ref()).is_err());
        assert!(Mlp::zeros(&arch("dense(3),relu,dense(1)", p), 2, f64::NAN).is_err());
    }

    #[test]
    fn non_finite_inputs_are_found_where_they_are() {
        // The first bad value in column order is named, in contiguous storage (one pass over all values) and in a
        // block of rows of a larger matrix (column by column), in f64 and f32.
        let net = Mlp::init(&arch("dense(3),relu,dense(1)", Parameterization::Ntk), 5, 1.0, 0).unwrap();
        let n32: Network<f32> = net.cast();
        for (i, j, v) in [(0, 0, f64::NAN), (6, 2, f64::INFINITY), (3, 4, f64::NEG_INFINITY), (6, 4, f64::NAN)] {
            let mut x = Mat::<f64>::from_fn(7, 5, |r, c| (r * 5 + c) as f64 / 10.0);
            x[(i, j)] = v;
            x[(6, 4)] = if (i, j) == (6, 4) { v } else { f64::NAN };
            let want = format!("row {i}, column {j}");
            assert!(net.check_input(x.as_ref()).unwrap_err().to_string().contains(&want), "{want}");
            let x32 = crate::net::cast::<f64, f32>(x.as_ref());
            assert!(n32.check_input(x32.as_ref()).unwrap_err().to_string().contains(&want), "f32 {want}");
            let mut tall = Mat::<f64>::zeros(10, 5);
            tall.as_mut().subrows_mut(2, 7).copy_from(&x);
            assert!(net.check_input(tall.as_ref().subrows(2, 7)).unwrap_err().to_string().contains(&want), "{want}");
            assert!(net.check_input(tall.as_ref().subrows(0, 2)).is_ok());
            // Row-major storage (Python's arrays): one pass too, the same place named.
            let rows: Vec<f64> = (0..7).flat_map(|r| (0..5).map(move |c| (r, c))).map(|(r, c)| x[(r, c)]).collect();
            let xr = MatRef::from_row_major_slice(&rows, 7, 5);
            assert!(net.check_input(xr).unwrap_err().to_string().contains(&want), "row-major {want}");
            let fine: Vec<f64> = rows.iter().map(|v| if v.is_finite() { *v } else { 0.5 }).collect();
            assert!(net.check_input(MatRef::from_row_major_slice(&fine, 7, 5)).is_ok());
        }
    }
}
