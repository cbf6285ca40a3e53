//! Fan-in nodes: `sum` (neural-tangents `FanInSum`: H = sum of the inputs, equal widths) and `concat`
//! (`FanInConcat(axis=-1)`: the inputs' features side by side; on spatial inputs of equal extents, their
//! channels side by side at every position, so column p C + c of the N x (P C) layout takes input i's column
//! p C_i + (c - offset_i)). Infinite width: a sum adds the branch kernels (independent branches); a
//! concatenation averages them weighted by width (equal weights when the widths agree; channel counts for
//! spatial inputs), and only a linear layer (dense, conv) or pooling may read it (its feature blocks are not
//! identically distributed).

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

/// Copies every part's channel block into or out of the concatenation `whole` over `positions` positions: at
/// each position p, part i's columns p C_i .. (p + 1) C_i are whole's columns p C + off_i .. (`positions` = 1:
/// plain column blocks). `f(whole_block, part_index, part_block_offset, width)` does the copy.
fn channel_blocks(positions: usize, widths: &[usize], mut f: impl FnMut(usize, usize, usize, usize)) {
    let chans: Vec<usize> = widths.iter().map(|w| w / positions).collect();
    let total: usize = chans.iter().sum();
    for p in 0..positions {
        let mut off = 0;
        for (i, &c) in chans.iter().enumerate() {
            f(p * total + off, i, p * c, c);
            off += c;
        }
    }
}

/// Forward of a concatenation into `out` (N x sum of widths) over `positions` positions.
pub(crate) fn concat_into<T: Float>(out: &mut Mat<T>, parts: &[&Mat<T>], positions: usize) {
    let widths: Vec<usize> = parts.iter().map(|p| p.ncols()).collect();
    channel_blocks(positions, &widths, |o, i, s, c| {
        out.as_mut().subcols_mut(o, c).copy_from(parts[i].as_ref().subcols(s, c));
    });
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
            let widths: Vec<usize> = node.inputs.iter().map(|&u| net.graph.nodes[u].width).collect();
            let mut parts: Vec<Mat<T>> = widths.iter().map(|&w| pool.take(g.nrows(), w)).collect();
            channel_blocks(node.shape.positions(), &widths, |o, i, s, c| {
                parts[i].as_mut().subcols_mut(s, c).copy_from(g.as_ref().subcols(o, c));
            });
            for (&u, c) in node.inputs.iter().zip(parts) {
                if u != 0 {
                    accumulate(acc, u, c, pool);
                } else {
                    pool.give(c);
                }
            }
            pool.give(g);
        }
        _ => unreachable!("fan_in::backward is for sum and concat nodes"),
    }
}

/// Forward mode: the sum of the inputs' tangents, or their concatenation over `positions` positions (None: all
/// zero).
pub(crate) fn tangent<T: Float>(
    op: &Op,
    dots: &[Option<&Mat<T>>],
    widths: &[usize],
    (n, positions): (usize, usize),
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
            channel_blocks(positions, widths, |o, i, s, w| {
                if let Some(t) = dots[i] {
                    c.as_mut().subcols_mut(o, w).copy_from(t.as_ref().subcols(s, w));
                }
            });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spatial_concat_puts_channels_side_by_side_at_every_position() {
        // Two parts over P = 3 positions with 2 and 1 channels: whole column p * 3 + c is part 0's column
        // p * 2 + c for c < 2 and part 1's column p for c = 2 (NHWC, neural-tangents' FanInConcat(axis=-1)).
        let n = 2;
        let a = Mat::<f64>::from_fn(n, 6, |i, j| (10 * i + j) as f64);
        let b = Mat::<f64>::from_fn(n, 3, |i, j| (100 + 10 * i + j) as f64);
        let mut whole = Mat::<f64>::zeros(n, 9);
        concat_into(&mut whole, &[&a, &b], 3);
        for i in 0..n {
            for p in 0..3 {
                assert_eq!(whole[(i, p * 3)], a[(i, p * 2)]);
                assert_eq!(whole[(i, p * 3 + 1)], a[(i, p * 2 + 1)]);
                assert_eq!(whole[(i, p * 3 + 2)], b[(i, p)]);
            }
        }
        // One position: plain column blocks.
        let mut flat = Mat::<f64>::zeros(n, 9);
        concat_into(&mut flat, &[&a, &b], 1);
        assert_eq!(flat.as_ref().subcols(0, 6), a.as_ref());
        assert_eq!(flat.as_ref().subcols(6, 3), b.as_ref());
        // The tangent is the same map, with a missing part as zeros.
        let t = tangent(&Op::Concat, &[None, Some(&b)], &[6, 3], (n, 3), &mut Pool::default()).unwrap();
        for p in 0..3 {
            assert_eq!(t[(1, p * 3)], 0.0);
            assert_eq!(t[(1, p * 3 + 2)], b[(1, p)]);
        }
    }
}
