//! Fan-in nodes: `sum` (neural-tangents `FanInSum`: H = sum of the inputs, equal widths) and `concat`
//! (`FanInConcat(axis=-1)`: the inputs' features side by side). Infinite width: a sum adds the branch kernels
//! (independent branches); a concatenation averages them weighted by width (equal weights when the widths
//! agree), and only a Dense layer may read it (its feature blocks are not identically distributed).

use faer::Mat;

use crate::kernel::Op;
use crate::net::backward::accumulate;
use crate::net::ops::{for_each_col, Float, Pool};
use crate::net::Network;
use crate::{Error, Result};

/// Output width from the input widths (a sum needs them equal; `what` names the node in errors).
pub(crate) fn width(op: &Op, widths: &[usize], what: impl Fn() -> String) -> Result<usize> {
    match op {
        Op::Sum => {
            if widths.iter().any(|&w| w != widths[0]) {
                return Err(Error::Config(format!("{}: a sum needs inputs of equal width", what())));
            }
            Ok(widths[0])
        }
        Op::Concat => Ok(widths.iter().sum()),
        _ => unreachable!("fan_in::width is for sum and concat nodes"),
    }
}

/// Forward of a sum: acc += each of `others`.
pub(crate) fn sum_into<T: Float>(acc: &mut Mat<T>, others: &[&Mat<T>]) {
    for src in others {
        for_each_col(acc, |j, c| {
            for (o, &s) in c.iter_mut().zip(src.col_as_slice(j)) {
                *o += s;
            }
        });
    }
}

/// Forward of a concatenation into `out` (N x sum of widths).
pub(crate) fn concat_into<T: Float>(out: &mut Mat<T>, parts: &[&Mat<T>]) {
    let mut off = 0;
    for p in parts {
        out.as_mut().subcols_mut(off, p.ncols()).copy_from(p.as_ref());
        off += p.ncols();
    }
}

/// Reverse (also the R-operator's): hand `g`, the cotangent of fan-in node v, to its inputs: all of it for a
/// sum, column blocks for a concatenation; the graph input (node 0) takes none.
pub(crate) fn backward<T: Float>(
    net: &Network<T>,
    v: usize,
    g: Mat<T>,
    acc: &mut [Option<Mat<T>>],
    pool: &mut Pool<T>,
) {
    let node = &net.graph.nodes[v];
    match node.op {
        Op::Sum => {
            let last = node.inputs.len() - 1;
            for (i, &u) in node.inputs.iter().enumerate() {
                if u == 0 {
                    continue;
                }
                if i == last {
                    accumulate(acc, u, g, pool);
                    return;
                }
                let mut c = pool.take(g.nrows(), g.ncols());
                c.copy_from(&g);
                accumulate(acc, u, c, pool);
            }
            pool.give(g);
        }
        Op::Concat => {
            let mut off = 0;
            for &u in &node.inputs {
                let w = net.graph.nodes[u].width;
                if u != 0 {
                    let mut c = pool.take(g.nrows(), w);
                    c.copy_from(g.as_ref().subcols(off, w));
                    accumulate(acc, u, c, pool);
                }
                off += w;
            }
            pool.give(g);
        }
        _ => unreachable!("fan_in::backward is for sum and concat nodes"),
    }
}

/// Forward mode: the sum of the inputs' tangents, or their concatenation (None: all zero).
pub(crate) fn tangent<T: Float>(
    op: &Op,
    dots: &[Option<&Mat<T>>],
    widths: &[usize],
    n: usize,
    pool: &mut Pool<T>,
) -> Option<Mat<T>> {
    match op {
        Op::Sum => {
            let mut acc: Option<Mat<T>> = None;
            for t in dots.iter().flatten() {
                match &mut acc {
                    None => {
                        let mut c = pool.take(n, t.ncols());
                        c.copy_from(*t);
                        acc = Some(c);
                    }
                    Some(a) => *a += *t,
                }
            }
            acc
        }
        Op::Concat => dots.iter().any(|d| d.is_some()).then(|| {
            let mut c = Mat::<T>::zeros(n, widths.iter().sum());
            let mut off = 0;
            for (t, &w) in dots.iter().zip(widths) {
                if let Some(t) = t {
                    c.as_mut().subcols_mut(off, w).copy_from(*t);
                }
                off += w;
            }
            c
        }),
        _ => unreachable!("fan_in::tangent is for sum and concat nodes"),
    }
}

/// Infinite width: the weights of the inputs' (K, Theta) in the fan-in's: 1 each for a sum; width / total
/// for a concatenation (1 / count when the widths agree, as neural-tangents does).
pub(crate) fn kernel_weights(op: &Op, widths: &[usize]) -> Vec<f64> {
    match op {
        Op::Sum => vec![1.0; widths.len()],
        Op::Concat if widths.iter().all(|&w| w == widths[0]) => vec![1.0 / widths.len() as f64; widths.len()],
        Op::Concat => {
            let total: f64 = widths.iter().map(|&w| w as f64).sum();
            widths.iter().map(|&w| w as f64 / total).collect()
        }
        _ => unreachable!("fan_in::kernel_weights is for sum and concat nodes"),
    }
}
