//! Convolutional NNGP and NTK against neural-tangents' `kernel_fn` (float64), on the fixtures written by
//! tools/make_cntk_fixtures.py: same/valid/circular padding, strides, 1-d and 2-d convolutions, flatten and
//! global average pooling readouts, average pooling, a residual block, ntk and standard parameterizations.
//! Both sides evaluate the same closed-form duals in f64. They differ where neural-tangents loses digits: on the
//! diagonal, the ReLU dual takes arccos of a correlation that rounds to 1 - O(eps), which costs sqrt(eps) ~ 1e-8
//! in theta and ~1e-9 relative in the NTK's Tdot factor; ntklab evaluates that case exactly (its own tests check
//! it against 60-digit references). 1e-8 of the largest entry allows for that and nothing else.

use std::path::Path;

use faer::Mat;
use ntklab::data::read_npz;
use ntklab::kernel::cnn::cnn_kernel;
use ntklab::kernel::spatial::{parse_extents, Shape};
use ntklab::kernel::{Architecture, Parameterization};

const TOL: f64 = 1e-8;

#[test]
fn cnn_kernels_match_neural_tangents() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cntk");
    let cases = std::fs::read_to_string(dir.join("cases.txt")).unwrap();
    let mut n = 0;
    for line in cases.lines().filter(|l| !l.trim().is_empty()) {
        let parts: Vec<&str> = line.split('|').map(str::trim).collect();
        let (name, shape, arch, param) = (parts[0], parts[1], parts[2], parts[3]);
        let ext = parse_extents(shape, "shape").unwrap();
        let input = Shape::image(&ext[..ext.len() - 1], ext[ext.len() - 1]);
        let arch = Architecture::parse(arch, Parameterization::parse(param).unwrap()).unwrap();
        let arrays = read_npz(&dir.join(format!("{name}.npz"))).unwrap();
        let get = |k: &str| arrays.iter().find(|(n, _)| n == k).map(|(_, a)| a.clone()).unwrap();
        let x = get("x");
        let rows = x.shape[0];
        let xm = Mat::from_fn(rows, input.size(), |i, j| x.data[i * input.size() + j]);
        let k = cnn_kernel(&arch, &input, xm.as_ref(), None, &ntklab::runs::no_progress).unwrap();
        for (what, ours, theirs) in [("nngp", &k.nngp, get("nngp")), ("ntk", &k.ntk, get("ntk"))] {
            let scale = theirs.data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let mut worst = 0.0f64;
            for i in 0..rows {
                for j in 0..rows {
                    let (a, b) = (ours[(i, j)], theirs.data[i * rows + j]);
                    worst = worst.max((a - b).abs() / scale);
                    assert!((a - b).abs() <= TOL * scale, "{name} {what}[{i},{j}]: ntklab {a} vs neural-tangents {b}");
                }
            }
            eprintln!("{name} {what}: worst relative difference {worst:.1e}");
        }
        // Off-diagonal blocks (x2 given) agree with the symmetric computation.
        let k2 = cnn_kernel(&arch, &input, xm.as_ref().subrows(0, 2), Some(xm.as_ref()), &ntklab::runs::no_progress)
            .unwrap();
        for i in 0..2 {
            for j in 0..rows {
                assert!((k2.ntk[(i, j)] - k.ntk[(i, j)]).abs() <= 1e-12 * k.ntk[(i, i)].abs().max(1.0), "{name}");
            }
        }
        n += 1;
    }
    assert_eq!(n, 4);
}
