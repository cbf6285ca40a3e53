//! `ntklab._core`: the compiled half of the Python package. Arrays cross the boundary as raw native-endian
//! bytes plus a shape (the Python side, `ntklab/_arrays.py`, converts any dtype and memory order to C-order
//! float64 and back), so the module needs neither numpy's C API nor Python headers beyond the stable ABI.
//! Long computations release the GIL; library errors become `ValueError` (bad input, shapes, configurations)
//! or `MemoryError` (a job that cannot fit), carrying the library's message.

use faer::{Mat, MatRef};
use ntklab::kernel::cnn::CnnKernel;
use ntklab::kernel::compute::KernelScalar;
use ntklab::kernel::{kernel_with_progress, Architecture, Kernel, Parameterization, Shape};
use pyo3::exceptions::{PyMemoryError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// A library error as the Python exception a caller would expect.
fn py_err(e: ntklab::Error) -> PyErr {
    let msg = e.to_string();
    match e {
        ntklab::Error::Config(_) if msg.contains("memory") => PyMemoryError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

/// Examples from raw f64 bytes of shape [N, d] (feature vectors) or [N, spatial..., C] (images, NHWC): the
/// N x (values per example) matrix and the shape of one example (None for feature vectors).
fn examples(bytes: &[u8], shape: &[usize], what: &str) -> PyResult<(Mat<f64>, Option<Shape>)> {
    if shape.len() < 2 {
        return Err(PyValueError::new_err(format!(
            "{what} must have a batch axis and at least one more (N x d, or N x H x W x C), got shape {shape:?}"
        )));
    }
    let n = shape[0];
    let d = shape[1..].iter().try_fold(1usize, |a, &s| a.checked_mul(s));
    let Some(d) = d.filter(|_| n > 0 && shape[1..].iter().all(|&s| s > 0)) else {
        return Err(PyValueError::new_err(format!("{what} has an empty or impossible shape {shape:?}")));
    };
    if n.checked_mul(d).and_then(|v| v.checked_mul(8)) != Some(bytes.len()) {
        return Err(PyValueError::new_err(format!(
            "{what}: {} bytes do not hold {shape:?} float64 values",
            bytes.len()
        )));
    }
    let value = |i: usize, j: usize| {
        let at = (i * d + j) * 8;
        f64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    };
    let m = Mat::from_fn(n, d, value);
    let one = (shape.len() > 2).then(|| Shape::image(&shape[1..shape.len() - 1], shape[shape.len() - 1]));
    Ok((m, one))
}

/// A matrix as row-major native-endian bytes of its own precision.
fn row_major_bytes<T: KernelScalar>(m: MatRef<'_, T>) -> Vec<u8> {
    let single = std::mem::size_of::<T>() == 4;
    let mut out = Vec::with_capacity(m.nrows() * m.ncols() * std::mem::size_of::<T>());
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            // Widening f32 to f64 and back is exact.
            let v = m[(i, j)].wide();
            if single {
                out.extend_from_slice(&(v as f32).to_ne_bytes());
            } else {
                out.extend_from_slice(&v.to_ne_bytes());
            }
        }
    }
    out
}

/// The kernel pair in precision T: the CNN path for inputs with spatial axes (as `ntklab kernel` does for
/// N x H x W x C files), the dense path otherwise.
fn kernel_in<T: KernelScalar>(
    arch: &Architecture,
    shape: Option<&Shape>,
    x1: &Mat<f64>,
    x2: Option<&Mat<f64>>,
) -> ntklab::Result<(Vec<u8>, Vec<u8>)> {
    let none = |_: usize, _: usize| {};
    let k: Kernel<T> = match shape {
        Some(s) => CnnKernel::<T>::new(arch, s, x1.as_ref(), x2.map(|m| m.as_ref()))?.full(&none)?,
        None => {
            let cast = |m: &Mat<f64>| Mat::<T>::from_fn(m.nrows(), m.ncols(), |i, j| T::of(m[(i, j)]));
            let (a, b) = (cast(x1), x2.map(cast));
            kernel_with_progress::<T>(arch, a.as_ref(), b.as_ref().map(|m| m.as_ref()), &none)?
        }
    };
    Ok((row_major_bytes(k.nngp.as_ref()), row_major_bytes(k.ntk.as_ref())))
}

/// Infinite-width NNGP and NTK of `arch` (ntklab's architecture language) on x1 (and x2), as row-major bytes
/// (float64, or float32 with `f32`).
#[pyfunction]
#[pyo3(signature = (arch, parameterization, x1, shape1, x2=None, shape2=None, f32=false))]
#[allow(clippy::too_many_arguments)]
fn kernel<'py>(
    py: Python<'py>,
    arch: &str,
    parameterization: &str,
    x1: &[u8],
    shape1: Vec<usize>,
    x2: Option<&[u8]>,
    shape2: Option<Vec<usize>>,
    f32: bool,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let p = Parameterization::parse(parameterization).map_err(py_err)?;
    let arch = Architecture::parse(arch, p).map_err(py_err)?;
    let (m1, s1) = examples(x1, &shape1, "x1")?;
    let m2 = match (x2, shape2) {
        (Some(b), Some(s)) => {
            let (m, s2) = examples(b, &s, "x2")?;
            if s2 != s1 {
                return Err(PyValueError::new_err(format!(
                    "x1 has examples of shape {:?} but x2 of shape {:?}",
                    &shape1[1..],
                    &s[1..]
                )));
            }
            Some(m)
        }
        (None, None) => None,
        _ => return Err(PyValueError::new_err("x2 and shape2 go together")),
    };
    let (nngp, ntk) = py
        .detach(|| {
            if f32 {
                kernel_in::<f32>(&arch, s1.as_ref(), &m1, m2.as_ref())
            } else {
                kernel_in::<f64>(&arch, s1.as_ref(), &m1, m2.as_ref())
            }
        })
        .map_err(py_err)?;
    Ok((PyBytes::new(py, &nngp), PyBytes::new(py, &ntk)))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kernel, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
