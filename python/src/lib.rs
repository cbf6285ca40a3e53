//! `ntklab._core`: the compiled half of the Python package. Arrays cross the boundary as raw native-endian
//! bytes plus a shape (the Python side, `ntklab/_arrays.py`, converts any dtype and memory order to C-order
//! float64 and back), so the module needs neither numpy's C API nor Python headers beyond the stable ABI.
//! Long computations release the GIL and stop on Ctrl-C (see `interruptible`); library errors become
//! `ValueError` (bad input, shapes, configurations) or `MemoryError` (a job that cannot fit), carrying the
//! library's message.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use faer::{Mat, MatRef};
use ntklab::data::io::Array;
use ntklab::kernel::cnn::{CnnKernel, Spatial};
use ntklab::kernel::compute::KernelScalar;
use ntklab::kernel::{Architecture, Parameterization, Shape};
use ntklab::net::{cast, load_mlp, LoadOptions, LossCurvature, Mlp, Network, NtkOutputs};
use ntklab::predict::{gp_posterior, LinearizedDynamics, Time};
use ntklab::runs::{no_progress, OnProgress, Watch};
use ntklab::spectrum::{lanczos_watched, LanczosOptions, Which};
use ntklab::train::loss::Loss;
use pyo3::exceptions::{PyKeyboardInterrupt, PyMemoryError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyByteArray;

/// A library error as the Python exception a caller would expect.
fn py_err(e: ntklab::Error) -> PyErr {
    let msg = e.to_string();
    match e {
        ntklab::Error::Cancelled => PyKeyboardInterrupt::new_err(msg),
        ntklab::Error::Config(_) if msg.contains("memory") => PyMemoryError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

/// Examples from raw f64 bytes of shape [N, d] (feature vectors) or [N, spatial..., C] (images, NHWC): the
/// N x (values per example) matrix and the shape of one example (None for feature vectors).
fn examples(bytes: &[u8], shape: &[usize], what: &str) -> PyResult<(Mat<f64>, Option<Shape>)> {
    examples_of::<f64>(bytes, shape, what)
}

/// [`examples`] from raw native-endian values of T (float64 or float32 bytes), as a column-major matrix.
fn examples_of<T: ntklab::net::Float>(bytes: &[u8], shape: &[usize], what: &str) -> PyResult<(Mat<T>, Option<Shape>)> {
    let rows = example_rows::<T>(bytes, shape, what)?;
    Ok((rows.to_mat(), rows.one))
}

/// Examples as the caller's row-major values (read in place when aligned, else copied), with the shape of one
/// example (None for feature vectors).
struct Rows<'a, T: Clone> {
    vals: std::borrow::Cow<'a, [T]>,
    n: usize,
    d: usize,
    one: Option<Shape>,
}

impl<T: ntklab::net::Float> Rows<'_, T> {
    /// The N x d matrix over the values as they lie (row-major: the network's passes copy each slice of rows
    /// into their own layout, so the whole batch is not transposed first).
    fn view(&self) -> MatRef<'_, T> {
        MatRef::from_row_major_slice(&self.vals, self.n, self.d)
    }

    /// The values as a column-major matrix.
    fn to_mat(&self) -> Mat<T> {
        ntklab::net::column_major(self.view())
    }
}

/// The checks of [`examples`] on raw values of T: the shape (a batch axis and at least one more, none empty),
/// the byte count, and the values read in place when `bytes` starts aligned.
fn example_rows<'a, T: ntklab::net::Float>(bytes: &'a [u8], shape: &[usize], what: &str) -> PyResult<Rows<'a, T>> {
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
    let size = std::mem::size_of::<T>();
    if n.checked_mul(d).and_then(|v| v.checked_mul(size)) != Some(bytes.len()) {
        return Err(PyValueError::new_err(format!(
            "{what}: {} bytes do not hold {shape:?} {} values",
            bytes.len(),
            if size == 4 { "float32" } else { "float64" }
        )));
    }
    let one = (shape.len() > 2).then(|| Shape::image(&shape[1..shape.len() - 1], shape[shape.len() - 1]));
    // The values in place when `bytes` starts aligned (always, for a Python bytes object's data), else copied.
    let vals: std::borrow::Cow<'a, [T]> = if bytes.as_ptr().align_offset(std::mem::align_of::<T>()) == 0 {
        // SAFETY: n d values of T fill `bytes` exactly (checked above), aligned (checked here); T is f64 or f32
        // (`Float` is sealed), for which every bit pattern is a value.
        std::borrow::Cow::Borrowed(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), n * d) })
    } else {
        // SAFETY: as above; each read is within `bytes` and needs no alignment.
        std::borrow::Cow::Owned(
            (0..n * d).map(|i| unsafe { bytes.as_ptr().add(i * size).cast::<T>().read_unaligned() }).collect(),
        )
    };
    Ok(Rows { vals, n, d, one })
}

/// A matrix as a Python bytearray of row-major native-endian values of its own precision, written straight
/// into an uninitialized bytearray (numpy wraps it without a copy): row by row when its rows are contiguous
/// (the transpose of a column-major matrix, see [`col_major_bytes`]), else in 32 x 32 tiles so the
/// column-major reads stay in cache.
fn to_bytearray<'py, T: KernelScalar>(py: Python<'py>, m: MatRef<'_, T>) -> PyResult<Bound<'py, PyByteArray>> {
    let size = std::mem::size_of::<T>();
    let (r, c) = (m.nrows(), m.ncols());
    let len = r.checked_mul(c).and_then(|v| v.checked_mul(size));
    let out = bytearray_uninit(py, len.unwrap_or(usize::MAX))?;
    // SAFETY: the bytearray is new (no other reference to it exists yet) and holds r c size bytes; every byte
    // is written below before Python sees it.
    let buf = unsafe { std::slice::from_raw_parts_mut(out.data(), r * c * size) };
    if m.col_stride() == 1 || c == 1 {
        for (i, dst) in buf.chunks_exact_mut((c * size).max(1)).enumerate().take(r) {
            // SAFETY: row i's c entries lie back to back (unit column stride), borrowed from m; T is f64 or f32,
            // plain bytes without padding.
            let row = unsafe { std::slice::from_raw_parts(m.ptr_at(i, 0).cast::<u8>(), c * size) };
            dst.copy_from_slice(row);
        }
        return Ok(out);
    }
    const TILE: usize = 32;
    for j0 in (0..c).step_by(TILE) {
        for i0 in (0..r).step_by(TILE) {
            for j in j0..(j0 + TILE).min(c) {
                for i in i0..(i0 + TILE).min(r) {
                    let at = (i * c + j) * size;
                    // Widening f32 to f64 and back is exact.
                    let v = m[(i, j)].wide();
                    if size == 4 {
                        buf[at..at + 4].copy_from_slice(&(v as f32).to_ne_bytes());
                    } else {
                        buf[at..at + 8].copy_from_slice(&v.to_ne_bytes());
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A raw pointer that may cross to the worker thread of [`interruptible`].
struct SendPtr<T>(*mut T);

// SAFETY: it points into a bytearray that the calling thread keeps alive and does not touch while the worker
// writes through it.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

/// A bytearray of `len` bytes with unspecified contents: the caller writes every byte before Python sees it.
fn bytearray_uninit(py: Python<'_>, len: usize) -> PyResult<Bound<'_, PyByteArray>> {
    let len = isize::try_from(len).map_err(|_| PyMemoryError::new_err(format!("{len} bytes cannot be allocated")))?;
    // SAFETY: a NULL source asks CPython for an uninitialized buffer of `len` bytes; the result is a new
    // reference to a bytearray, or NULL with an exception set.
    unsafe {
        let ptr = pyo3::ffi::PyByteArray_FromStringAndSize(std::ptr::null(), len);
        Ok(Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked::<PyByteArray>())
    }
}

/// A matrix as a bytearray of its column-major values (numpy wraps it as a Fortran-order array, no copy): the
/// row-major bytes of its transpose.
fn col_major_bytes<'py, T: KernelScalar>(py: Python<'py>, m: MatRef<'_, T>) -> PyResult<Bound<'py, PyByteArray>> {
    to_bytearray(py, m.transpose())
}

/// The kernel pair in precision T as column-major bytes: the CNN path for inputs with spatial axes (as `ntklab
/// kernel` does for N x H x W x C files), copied out; the dense path written straight into the bytearrays.
fn kernel_bytes<'py, T: KernelScalar>(
    py: Python<'py>,
    arch: &Architecture,
    shape: Option<&Shape>,
    x1: &Mat<f64>,
    x2: Option<&Mat<f64>>,
    spatial: Spatial,
) -> PyResult<KernelOut<'py>> {
    if let Some(s) = shape {
        // One value per pair, or (a network that ends on an image) the covariances between output positions.
        enum Cnn<T> {
            Pairs(ntklab::kernel::Kernel<T>),
            Positions(ntklab::kernel::cnn::SpatialKernel<T>),
        }
        let k = interruptible(py, |stop| {
            let job = CnnKernel::<T>::new_spatial(arch, s, x1.as_ref(), x2.map(|m| m.as_ref()), spatial)?;
            Ok(if job.output_extents().is_empty() {
                Cnn::Pairs(job.full(&|d, t| stop.progress(d, t))?.finite(0)?)
            } else {
                Cnn::Positions(job.spatial(&|d, t| stop.progress(d, t))?.finite()?)
            })
        })?;
        return match k {
            Cnn::Pairs(k) => {
                Ok((col_major_bytes(py, k.nngp.as_ref())?, col_major_bytes(py, k.ntk.as_ref())?, Vec::new()))
            }
            Cnn::Positions(k) => {
                let flat = |v: &[T]| to_bytearray(py, MatRef::from_row_major_slice(v, 1, v.len()));
                Ok((flat(&k.nngp)?, flat(&k.ntk)?, k.shape[2..].to_vec()))
            }
        };
    }
    let (n1, n2) = (x1.nrows(), x2.map_or(x1.nrows(), |m| m.nrows()));
    let len = n1.saturating_mul(n2).saturating_mul(std::mem::size_of::<T>());
    ntklab::data::memory::check_alloc(len.saturating_mul(2), &format!("the NNGP and NTK matrices ({n1} x {n2} each)"))
        .map_err(py_err)?;
    let cast = |m: &Mat<f64>| Mat::<T>::from_fn(m.nrows(), m.ncols(), |i, j| T::of(m[(i, j)]));
    let (a, b) = (cast(x1), x2.map(cast));
    let (kb, tb) = (bytearray_uninit(py, len)?, bytearray_uninit(py, len)?);
    let (kp, tp) = (SendPtr(kb.data().cast::<T>()), SendPtr(tb.data().cast::<T>()));
    if !kp.get().is_aligned() || !tp.get().is_aligned() {
        // CPython's allocators align to 16 bytes; should one not, compute in our own memory and copy.
        let k = interruptible(py, |stop| {
            ntklab::kernel::kernel_with_progress::<T>(arch, a.as_ref(), b.as_ref().map(|m| m.as_ref()), &|d, t| {
                stop.progress(d, t)
            })?
            .finite(0)
        })?;
        return Ok((col_major_bytes(py, k.nngp.as_ref())?, col_major_bytes(py, k.ntk.as_ref())?, Vec::new()));
    }
    interruptible(py, |stop| {
        // SAFETY: each bytearray holds n1 n2 values of T (aligned: checked above), lives until after this call,
        // and nothing else reads or writes it meanwhile.
        let (k, t) = unsafe {
            (
                faer::MatMut::from_raw_parts_mut(kp.get(), n1, n2, 1, n1 as isize),
                faer::MatMut::from_raw_parts_mut(tp.get(), n1, n2, 1, n1 as isize),
            )
        };
        ntklab::kernel::kernel_into(arch, a.as_ref(), b.as_ref().map(|m| m.as_ref()), k, t, &|d, t| stop.progress(d, t))
    })?;
    Ok((kb, tb, Vec::new()))
}

/// The NNGP and NTK as bytes, and the extents after N1 x N2: none for one value per pair (column-major N1 x N2),
/// else the spatial axes of a network that ends on an image (row-major).
type KernelOut<'py> = (Bound<'py, PyByteArray>, Bound<'py, PyByteArray>, Vec<usize>);

/// Infinite-width NNGP and NTK of `arch` (ntklab's architecture language) on x1 (and x2), as column-major bytes
/// (float64, or float32 with `f32`).
#[pyfunction]
#[pyo3(signature = (arch, parameterization, x1, shape1, x2=None, shape2=None, f32=false, diagonal_spatial=false))]
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
    diagonal_spatial: bool,
) -> PyResult<KernelOut<'py>> {
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
    let spatial = if diagonal_spatial { Spatial::Diagonal } else { Spatial::Full };
    if f32 {
        kernel_bytes::<f32>(py, &arch, s1.as_ref(), &m1, m2.as_ref(), spatial)
    } else {
        kernel_bytes::<f64>(py, &arch, s1.as_ref(), &m1, m2.as_ref(), spatial)
    }
}

/// Raw native-endian f64 bytes of `shape` as a vector (for tensors and targets).
fn f64_values(bytes: &[u8], shape: &[usize], what: &str) -> PyResult<Vec<f64>> {
    let n = shape.iter().try_fold(1usize, |a, &s| a.checked_mul(s));
    if n.and_then(|n| n.checked_mul(8)) != Some(bytes.len()) {
        return Err(PyValueError::new_err(format!(
            "{what}: {} bytes do not hold {shape:?} float64 values",
            bytes.len()
        )));
    }
    Ok(bytes.chunks_exact(8).map(|c| f64::from_ne_bytes(c.try_into().expect("8 bytes"))).collect())
}

/// A finite network (ntklab's `Network`, f64 parameters; `f32` computations cast it).
#[pyclass(module = "ntklab._core", name = "Model", frozen)]
struct Model {
    net: Mlp,
    /// The f32 copy, made on first use and kept (with its scratch matrices) for later calls.
    net32: std::sync::OnceLock<Network<f32>>,
}

/// A named tensor for Python: name, shape, row-major f64 bytes.
type NamedTensor<'py> = (String, Vec<usize>, Bound<'py, PyByteArray>);

/// A result in either precision.
enum Out {
    F64(Mat<f64>),
    F32(Mat<f32>),
}

impl Out {
    /// Row-major bytes and the shape.
    fn into_py<'py>(self, py: Python<'py>) -> PyResult<(Bound<'py, PyByteArray>, usize, usize)> {
        match self {
            Out::F64(m) => Ok((to_bytearray(py, m.as_ref())?, m.nrows(), m.ncols())),
            Out::F32(m) => Ok((to_bytearray(py, m.as_ref())?, m.nrows(), m.ncols())),
        }
    }

    /// Column-major bytes (a copy of each column) and the shape.
    fn into_py_cols<'py>(self, py: Python<'py>) -> PyResult<(Bound<'py, PyByteArray>, usize, usize)> {
        match self {
            Out::F64(m) => Ok((col_major_bytes(py, m.as_ref())?, m.nrows(), m.ncols())),
            Out::F32(m) => Ok((col_major_bytes(py, m.as_ref())?, m.nrows(), m.ncols())),
        }
    }
}

impl Model {
    fn new(net: Mlp) -> Model {
        Model { net, net32: std::sync::OnceLock::new() }
    }

    fn f32(&self) -> &Network<f32> {
        self.net32.get_or_init(|| self.net.cast())
    }

    /// Examples checked against the network: feature vectors (N x d) or, for image networks, N x d or images of
    /// the network's input shape.
    fn inputs<'a>(&self, bytes: &'a [u8], shape: &[usize], what: &str) -> PyResult<Rows<'a, f64>> {
        let rows = example_rows(bytes, shape, what)?;
        self.check_shape(rows.one.clone(), shape, what)?;
        self.net.check_input(rows.view()).map_err(py_err)?;
        Ok(rows)
    }

    /// [`Model::inputs`] from float32 bytes, for the f32 network (no float64 round trip).
    fn inputs32<'a>(&self, bytes: &'a [u8], shape: &[usize], what: &str) -> PyResult<Rows<'a, f32>> {
        let rows = example_rows(bytes, shape, what)?;
        self.check_shape(rows.one.clone(), shape, what)?;
        self.f32().check_input(rows.view()).map_err(py_err)?;
        Ok(rows)
    }

    /// An image batch's example shape against the network's input shape.
    fn check_shape(&self, one: Option<Shape>, shape: &[usize], what: &str) -> PyResult<()> {
        match one {
            Some(s) if s != self.net.input_shape => Err(PyValueError::new_err(format!(
                "{what} holds examples of shape {:?}, but the model takes examples of shape {}",
                &shape[1..],
                self.net.input_shape
            ))),
            _ => Ok(()),
        }
    }
}

#[pymethods]
impl Model {
    /// Load a model file (safetensors or npz, ntklab's or PyTorch's `nn.Sequential` names).
    #[staticmethod]
    #[pyo3(signature = (path, arch=None, parameterization=None, input_shape=None))]
    fn load(
        path: std::path::PathBuf,
        arch: Option<&str>,
        parameterization: Option<&str>,
        input_shape: Option<&str>,
    ) -> PyResult<Model> {
        let layers = arch.map(|a| Architecture::parse(a, Parameterization::Ntk).map(|a| a.layers)).transpose();
        let opts = LoadOptions {
            layers: layers.map_err(py_err)?,
            parameterization: parameterization.map(Parameterization::parse).transpose().map_err(py_err)?,
            activation: None,
            alpha: None,
            input_shape: input_shape.map(Shape::parse).transpose().map_err(py_err)?,
        };
        Ok(Model::new(load_mlp(&path, &opts).map_err(py_err)?))
    }

    /// A model from named effective tensors (`nn.Sequential` names, C-order f64 bytes with their shapes) and
    /// its layer list: what `ntklab.from_torch` passes.
    #[staticmethod]
    #[pyo3(signature = (arch, parameterization, tensors, input_shape=None))]
    fn from_tensors(
        arch: &str,
        parameterization: &str,
        tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
        input_shape: Option<&str>,
    ) -> PyResult<Model> {
        let mut named = Vec::with_capacity(tensors.len());
        for (name, shape, bytes) in tensors {
            let data = f64_values(&bytes, &shape, &format!("tensor `{name}`"))?;
            named.push((name, Array { shape, data }));
        }
        let opts = LoadOptions {
            layers: Some(Architecture::parse(arch, Parameterization::Ntk).map_err(py_err)?.layers),
            parameterization: Some(Parameterization::parse(parameterization).map_err(py_err)?),
            activation: None,
            alpha: None,
            input_shape: input_shape.map(Shape::parse).transpose().map_err(py_err)?,
        };
        let net = ntklab::net::io::mlp_from_tensors(named, &Default::default(), &opts).map_err(py_err)?;
        Ok(Model::new(net))
    }

    /// A network of `arch` with parameters drawn from its initialization (ntklab's `init`, same seed, same
    /// parameters), for inputs of `input_shape` (`"d"` or `"HxWxC"`).
    #[staticmethod]
    #[pyo3(signature = (arch, parameterization, input_shape, seed=0))]
    fn init(arch: &str, parameterization: &str, input_shape: &str, seed: u64) -> PyResult<Model> {
        let p = Parameterization::parse(parameterization).map_err(py_err)?;
        let arch = Architecture::parse(arch, p).map_err(py_err)?;
        let shape = Shape::parse(input_shape).map_err(py_err)?;
        Ok(Model::new(Mlp::init_for(&arch, &shape, 1.0, seed).map_err(py_err)?))
    }

    /// The outputs f(x) (N x k) as row-major bytes (float64, or float32 computed in f32 lanes), and their shape.
    #[pyo3(signature = (x, shape, f32=false))]
    fn apply<'py>(
        &self,
        py: Python<'py>,
        x: &[u8],
        shape: Vec<usize>,
        f32: bool,
    ) -> PyResult<(Bound<'py, PyByteArray>, usize, usize)> {
        let xm = self.inputs(x, &shape, "x")?;
        let n32 = if f32 { Some(self.f32()) } else { None };
        let net = &self.net;
        py.detach(|| -> ntklab::Result<Out> {
            match n32 {
                Some(n32) => {
                    // Rounded as they lie (row-major), then read by the tape as any row-major input: a cast
                    // through the view would read it column by column, with a stride of a whole row.
                    let x32: Vec<f32> = xm.vals.iter().map(|&v| v as f32).collect();
                    let view = MatRef::from_row_major_slice(&x32, xm.n, xm.d);
                    Ok(Out::F32(n32.forward(view)?))
                }
                None => Ok(Out::F64(net.forward(xm.view())?)),
            }
        })
        .map_err(py_err)?
        .into_py(py)
    }

    /// Save as a model file (safetensors or npz by extension, PyTorch `nn.Sequential` names where the network
    /// is a chain), atomically.
    fn save(&self, path: std::path::PathBuf) -> PyResult<()> {
        ntklab::net::save_mlp(&self.net, &path, ntklab::net::Precision::F64).map_err(py_err)
    }

    /// The effective tensors (`nn.Sequential` names, PyTorch layouts) as (name, shape, row-major f64 bytes).
    fn tensors<'py>(&self, py: Python<'py>) -> PyResult<Vec<NamedTensor<'py>>> {
        let mut out = Vec::new();
        for (name, a) in ntklab::net::io::effective_tensors(&self.net) {
            let m = MatRef::from_row_major_slice(&a.data, 1, a.data.len());
            out.push((name, a.shape, to_bytearray(py, m)?));
        }
        Ok(out)
    }

    /// The architecture in ntklab's language.
    #[getter]
    fn arch(&self) -> String {
        self.net.arch.to_string()
    }

    #[getter]
    fn parameterization(&self) -> String {
        self.net.arch.parameterization.to_string()
    }

    #[getter]
    fn num_params(&self) -> usize {
        self.net.num_params()
    }

    #[getter]
    fn output_dim(&self) -> usize {
        self.net.output_dim()
    }

    /// The shape of one input example (features, or spatial extents then channels).
    #[getter]
    fn input_shape(&self) -> Vec<usize> {
        let s = &self.net.input_shape;
        s.spatial.iter().copied().chain(std::iter::once(s.channels)).collect()
    }

    /// The shape of one output example: the outputs, or spatial extents then channels for a network that ends
    /// on positions x channels (its outputs are those values, channels fastest).
    #[getter]
    fn output_shape(&self) -> Vec<usize> {
        let s = &self.net.graph.nodes[self.net.graph.output()].shape;
        s.spatial.iter().copied().chain(std::iter::once(s.channels)).collect()
    }

    /// Empirical NTK J(x1) J(x2)^T as column-major bytes (float64, or float32 with `f32`) and its shape: the trace
    /// over outputs (N1 x N2), or every output block (`trace=False`: (N1 k) x (N2 k), row i k + a). The inputs
    /// are float64 bytes, or float32 bytes with `f32`.
    #[pyo3(signature = (x1, shape1, x2=None, shape2=None, trace=true, f32=false))]
    #[allow(clippy::too_many_arguments)]
    fn empirical_ntk<'py>(
        &self,
        py: Python<'py>,
        x1: &[u8],
        shape1: Vec<usize>,
        x2: Option<&[u8]>,
        shape2: Option<Vec<usize>>,
        trace: bool,
        f32: bool,
    ) -> PyResult<(Bound<'py, PyByteArray>, usize, usize)> {
        if x2.is_some() != shape2.is_some() {
            return Err(PyValueError::new_err("x2 and shape2 go together"));
        }
        let outputs = if trace { NtkOutputs::Trace } else { NtkOutputs::Full };
        // A call of a few milliseconds runs on this thread (Ctrl-C is then seen as it returns): `interruptible`'s
        // worker thread costs about 0.3 ms a call (4 % of the small CNN's f32 kernel). The J J^T products set the
        // scale: past ~1e9 multiply-adds (tens of milliseconds) a call can be stopped between units of work.
        let n1 = shape1.first().copied().unwrap_or(0);
        let n2 = shape2.as_ref().and_then(|s| s.first().copied()).unwrap_or(n1);
        let blocks = if trace { 1 } else { self.net.output_dim().pow(2) };
        let long = (n1 as f64) * (n2 as f64) * (self.net.num_params() as f64) * (blocks as f64) > 1e9;
        let out = if f32 {
            // float32 bytes: the f32 network reads them as they are.
            let a = self.inputs32(x1, &shape1, "x1")?;
            let b = x2.zip(shape2).map(|(b, s)| self.inputs32(b, &s, "x2")).transpose()?;
            let n32 = self.f32();
            watched(py, long, |on| {
                n32.empirical_ntk_watched(a.view(), b.as_ref().map(|m| m.view()), outputs, on).map(Out::F32)
            })
        } else {
            let a = self.inputs(x1, &shape1, "x1")?;
            let b = x2.zip(shape2).map(|(b, s)| self.inputs(b, &s, "x2")).transpose()?;
            let net = &self.net;
            watched(py, long, |on| {
                net.empirical_ntk_watched(a.view(), b.as_ref().map(|m| m.view()), outputs, on).map(Out::F64)
            })
        };
        out?.into_py_cols(py)
    }

    /// The top-k eigenvalues of the loss Hessian at (x, y) by Lanczos on exact Hessian-vector products (as
    /// `ntklab hessian`: same defaults, same results), descending, with their residual norms and whether every
    /// residual met `tol`.
    #[pyo3(signature = (x, shape, y, yshape, k=5, loss="mse", f32=false, max_iter=300, tol=1e-8, seed=0))]
    #[allow(clippy::too_many_arguments)]
    fn hessian_eigs(
        &self,
        py: Python<'_>,
        x: &[u8],
        shape: Vec<usize>,
        y: &[u8],
        yshape: Vec<usize>,
        k: usize,
        loss: &str,
        f32: bool,
        max_iter: usize,
        tol: f64,
        seed: u64,
    ) -> PyResult<(Vec<f64>, Vec<f64>, bool)> {
        let loss = Loss::parse(loss).map_err(py_err)?;
        // Column-major once: Lanczos runs many passes over the same batch.
        let xm = self.inputs(x, &shape, "x")?.to_mat();
        let (n, outputs) = (xm.nrows(), self.net.output_dim());
        let yv = f64_values(y, &yshape, "y")?;
        let ycols = if yshape.len() == 1 { 1 } else { yshape[1..].iter().product() };
        if yshape.is_empty() || yshape[0] != n || ycols != outputs {
            return Err(PyValueError::new_err(format!(
                "y has shape {yshape:?} but x has {n} examples and the network {outputs} output(s): y must be {n} x \
                 {outputs}"
            )));
        }
        if yv.iter().any(|v| !v.is_finite()) {
            return Err(PyValueError::new_err("y has a non-finite value"));
        }
        let ym = Mat::from_fn(n, outputs, |i, j| yv[i * outputs + j]);
        ntklab::net::check_hessian_job(&self.net, n, loss, (k, max_iter), ("k", "max_iter")).map_err(py_err)?;
        let opts = LanczosOptions::new(k).which(Which::LargestAlgebraic).max_iter(max_iter).tol(tol).seed(seed);
        let n32 = if f32 { Some(self.f32()) } else { None };
        let net = &self.net;
        // Stoppable between Lanczos steps (each one Hessian-vector product).
        let r = interruptible(py, |stop| {
            let on = |d, t| stop.progress(d, t);
            if let Some(n32) = n32 {
                let x32 = cast::<f64, f32>(xm.as_ref());
                let lc = LossCurvature::new(n32, x32.as_ref(), ym.as_ref(), loss)?;
                let r = lanczos_watched(&lc.hessian_op(), &opts, &on);
                r
            } else {
                let lc = LossCurvature::new(net, xm.as_ref(), ym.as_ref(), loss)?;
                let r = lanczos_watched(&lc.hessian_op(), &opts, &on);
                r
            }
        })?;
        if r.values.iter().any(|v| !v.is_finite()) {
            return Err(PyValueError::new_err(
                "the Hessian is not finite at this model (its outputs overflow, as after a diverged run)",
            ));
        }
        Ok((r.values, r.residuals, r.converged))
    }

    fn __repr__(&self) -> String {
        format!(
            "<ntklab Model {} ({}, {} parameters)>",
            self.net.arch,
            self.net.arch.parameterization,
            self.net.num_params()
        )
    }
}

/// An r x c matrix from row-major native-endian f64 bytes.
fn mat_from(bytes: &[u8], r: usize, c: usize, what: &str) -> PyResult<Mat<f64>> {
    let v = f64_values(bytes, &[r, c], what)?;
    if v.iter().any(|x| !x.is_finite()) {
        return Err(PyValueError::new_err(format!("{what} has a non-finite value")));
    }
    Ok(Mat::from_fn(r, c, |i, j| v[i * c + j]))
}

/// Closed-form gradient-flow outputs of the linearized (infinite-width) network under MSE (ntklab's convention:
/// d f/dt = -(eta/N) Theta (f - y), ARCHITECTURE.md): for each time, the train outputs (when `f0_train` is
/// given) and the test outputs (when `theta_test_train` is given), as row-major f64 bytes. `inf` is the
/// converged limit.
#[pyfunction]
#[pyo3(signature = (theta, n, y, m, eta, times, f0_train=None, theta_test_train=None, t=0, f0_test=None))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn flow<'py>(
    py: Python<'py>,
    theta: &[u8],
    n: usize,
    y: &[u8],
    m: usize,
    eta: f64,
    times: Vec<f64>,
    f0_train: Option<&[u8]>,
    theta_test_train: Option<&[u8]>,
    t: usize,
    f0_test: Option<&[u8]>,
) -> PyResult<(Vec<Bound<'py, PyByteArray>>, Vec<Bound<'py, PyByteArray>>)> {
    let theta = mat_from(theta, n, n, "k_train_train")?;
    let y = mat_from(y, n, m, "y_train")?;
    let f0 = f0_train.map(|b| mat_from(b, n, m, "fx_train_0")).transpose()?;
    let tt = theta_test_train.map(|b| mat_from(b, t, n, "k_test_train")).transpose()?;
    let f0t = f0_test.map(|b| mat_from(b, t, m, "fx_test_0")).transpose()?;
    if let Some(bad) = times.iter().find(|v| v.is_nan() || **v < 0.0) {
        return Err(PyValueError::new_err(format!("times must be >= 0 (or inf), got {bad}")));
    }
    let (train, test) = py
        .detach(|| -> ntklab::Result<(Vec<Mat<f64>>, Vec<Mat<f64>>)> {
            let dynamics = LinearizedDynamics::new(theta.as_ref(), eta)?;
            let (mut train, mut test) = (Vec::new(), Vec::new());
            for &time in &times {
                if let Some(f0) = &f0 {
                    let f = dynamics.train(y.as_ref(), Some(f0.as_ref()), Time::Flow(time))?;
                    train.push(f);
                }
                if let Some(tt) = &tt {
                    let f0 = f0.as_ref().map(|m| m.as_ref());
                    let f = dynamics.test(
                        tt.as_ref(),
                        y.as_ref(),
                        f0,
                        f0t.as_ref().map(|m| m.as_ref()),
                        Time::Flow(time),
                    )?;
                    test.push(f);
                }
            }
            Ok((train, test))
        })
        .map_err(py_err)?;
    let wrap = |v: Vec<Mat<f64>>| v.iter().map(|m| to_bytearray(py, m.as_ref())).collect::<PyResult<Vec<_>>>();
    Ok((wrap(train)?, wrap(test)?))
}

/// The GP posterior (Rasmussen & Williams) with noise variance `noise_var`: mean (t x m) and covariance (t x t)
/// as row-major f64 bytes, and the jitter that was needed on top of the noise.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn gp<'py>(
    py: Python<'py>,
    k: &[u8],
    n: usize,
    y: &[u8],
    m: usize,
    k_test_train: &[u8],
    t: usize,
    k_test_test: &[u8],
    noise_var: f64,
) -> PyResult<(Bound<'py, PyByteArray>, Bound<'py, PyByteArray>, f64)> {
    let k = mat_from(k, n, n, "k_train_train")?;
    let y = mat_from(y, n, m, "y_train")?;
    let kt = mat_from(k_test_train, t, n, "k_test_train")?;
    let ktt = mat_from(k_test_test, t, t, "k_test_test")?;
    let post =
        py.detach(|| gp_posterior(k.as_ref(), y.as_ref(), kt.as_ref(), ktt.as_ref(), noise_var)).map_err(py_err)?;
    Ok((to_bytearray(py, post.mean.as_ref())?, to_bytearray(py, post.cov.as_ref())?, post.jitter))
}

/// Tells a long computation to stop: set by [`interruptible`] when a Python signal handler raised (Ctrl-C), read
/// by the computation between units of work (training steps, reproduction steps, kernel tiles and rows, the
/// empirical NTK's slices and Gram products, Lanczos steps).
#[derive(Default)]
struct Stop(AtomicBool);

impl Stop {
    fn progress(&self, _done: usize, _total: usize) -> ntklab::Result<()> {
        self.check()
    }
}

impl Watch for Stop {
    fn check(&self) -> ntklab::Result<()> {
        if self.0.load(Ordering::Relaxed) {
            Err(ntklab::Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Runs `f` on a worker thread with the GIL released. The calling thread checks Python's signal handlers every
/// 50 ms; when one raises (Ctrl-C: KeyboardInterrupt), it tells the work to stop, waits until the work has
/// stopped and cleaned up (no partial output is left), and raises that exception. Work that finished anyway
/// returns its result, and the interrupt is raised at Python's next check.
fn interruptible<R: Send>(py: Python<'_>, f: impl FnOnce(&Stop) -> ntklab::Result<R> + Send) -> PyResult<R> {
    let stop = Stop::default();
    let mut raised: Option<PyErr> = None;
    // Python runs signal handlers only on its main thread: elsewhere a check finds nothing, so the caller just
    // waits (without taking the GIL every 50 ms).
    let threading = py.import("threading")?;
    let on_main = threading.call_method0("main_thread")?.is(&threading.call_method0("current_thread")?);
    let poll = if on_main { Duration::from_millis(50) } else { Duration::MAX };
    let result = py.detach(|| {
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel();
            let stop = &stop;
            // The main thread's stack size: deep recursion in the work must not fail only in Python.
            let worker = std::thread::Builder::new().stack_size(8 << 20).spawn_scoped(scope, move || {
                let _ = tx.send(f(stop));
            });
            if let Err(e) = worker {
                return Err(ntklab::Error::Numerical(format!("cannot start a worker thread: {e}")));
            }
            loop {
                match rx.recv_timeout(poll) {
                    Ok(r) => return r,
                    Err(RecvTimeoutError::Timeout) => {
                        if raised.is_none() {
                            if let Err(e) = Python::attach(|py| py.check_signals()) {
                                raised = Some(e);
                                stop.0.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                    // The worker panicked: the scope re-raises its panic (a PanicException in Python).
                    Err(RecvTimeoutError::Disconnected) => {
                        return Err(ntklab::Error::Numerical("the computation failed".into()))
                    }
                }
            }
        })
    });
    match (result, raised) {
        (Err(_), Some(e)) => Err(e),
        (Ok(r), Some(_)) => {
            // The work had finished (its outputs are complete and in place): keep its result, and let the
            // interrupt raise at Python's next check instead of losing it.
            // SAFETY: PyErr_SetInterrupt only sets a flag; it is callable with or without the GIL.
            unsafe { pyo3::ffi::PyErr_SetInterrupt() };
            Ok(r)
        }
        (r, None) => r.map_err(py_err),
    }
}

/// `run` through [`interruptible`] when `long`, else on this thread with the GIL released and nothing to stop
/// it (no worker thread: a short call's Ctrl-C is seen as it returns).
fn watched<R: Send>(
    py: Python<'_>,
    long: bool,
    run: impl Fn(OnProgress<'_>) -> ntklab::Result<R> + Send + Sync,
) -> PyResult<R> {
    if long {
        interruptible(py, |stop| run(&|d, t| stop.progress(d, t)))
    } else {
        py.detach(|| run(&no_progress)).map_err(py_err)
    }
}

/// JSON text of a Python dict (`what` names it in errors) as a TOML table.
fn json_table(json: &str, what: &str) -> PyResult<toml::Table> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| PyValueError::new_err(format!("{what} is not valid: {e}")))?;
    match toml::Value::try_from(v) {
        Ok(toml::Value::Table(t)) => Ok(t),
        Ok(_) => Err(PyValueError::new_err(format!("{what} must be a dict"))),
        Err(e) => Err(PyValueError::new_err(format!("{what} cannot be TOML: {e}"))),
    }
}

/// A train config given as JSON (a Python dict) as TOML text, the form the run folder keeps.
fn json_to_toml(json: &str) -> PyResult<String> {
    let t = json_table(json, "the config")?;
    toml::to_string(&t).map_err(|e| PyValueError::new_err(format!("the config cannot be TOML: {e}")))
}

/// Trains the run described by `config` (TOML text, or JSON with `json`; array paths relative to `base`) into
/// the run folder `out`, as `ntklab train` does. Returns the TOML text, the status, the number of steps, the
/// initial loss and the final time t.
#[pyfunction]
#[pyo3(signature = (config, base, out, force=false, json=false))]
fn train_run(
    py: Python<'_>,
    config: &str,
    base: PathBuf,
    out: PathBuf,
    force: bool,
    json: bool,
) -> PyResult<(String, String, u64, f64, f64)> {
    let text = if json { json_to_toml(config)? } else { config.to_string() };
    let r = interruptible(py, |stop| ntklab::runs::train_run(&text, &base, &out, force, stop))?;
    Ok((text, r.status.to_string(), r.steps, r.initial_loss, r.t))
}

/// The out folder a train config names (`out = "..."`), if any; checks the config on the way.
#[pyfunction]
#[pyo3(signature = (config, json=false))]
fn train_out(config: &str, json: bool) -> PyResult<Option<PathBuf>> {
    let text = if json { json_to_toml(config)? } else { config.to_string() };
    Ok(ntklab::train::RunConfig::from_toml_str(&text).map_err(py_err)?.out)
}

/// The reproductions: (name, description) pairs.
#[pyfunction]
fn experiments() -> Vec<(&'static str, &'static str)> {
    ntklab::experiment::REGISTRY.iter().map(|e| (e.name(), e.description())).collect()
}

fn prepare(
    name: &str,
    quick: bool,
    overrides: Option<&str>,
    seed: Option<u64>,
) -> PyResult<(&'static dyn ntklab::experiment::Experiment, ntklab::experiment::Prepared)> {
    let exp = ntklab::experiment::find(name).map_err(py_err)?;
    let table = overrides.map(|j| json_table(j, "the overrides")).transpose()?;
    let prepared = exp.prepare(quick, table.as_ref(), seed).map_err(py_err)?;
    Ok((exp, prepared))
}

/// The configuration `run_experiment` would run, as JSON.
#[pyfunction]
#[pyo3(signature = (name, quick=false, overrides=None, seed=None))]
fn experiment_config(name: &str, quick: bool, overrides: Option<&str>, seed: Option<u64>) -> PyResult<String> {
    let (_, prepared) = prepare(name, quick, overrides, seed)?;
    Ok(prepared.config.to_string())
}

/// Runs the reproduction `name` into the report folder `out`, as `ntklab run` does (`overrides`: JSON of config
/// keys). Returns the console summary, the seconds, the steps reused from a checkpoint and the files written.
#[pyfunction]
#[pyo3(signature = (name, out, quick=false, overrides=None, seed=None, resume=false, force=false))]
#[allow(clippy::too_many_arguments)]
fn run_experiment(
    py: Python<'_>,
    name: &str,
    out: PathBuf,
    quick: bool,
    overrides: Option<&str>,
    seed: Option<u64>,
    resume: bool,
    force: bool,
) -> PyResult<(String, f64, usize, Vec<String>)> {
    let (exp, prepared) = prepare(name, quick, overrides, seed)?;
    let done = interruptible(py, |stop| ntklab::runs::run_experiment(exp, &prepared, &out, resume, force, stop))?;
    Ok((done.console, done.seconds, done.reused, done.files))
}

/// Keep freed memory in the process for reuse (glibc; elsewhere nothing): large matrices are then not
/// mapped fresh, page by page, on every call. Affects the whole Python process; opt-in.
#[pyfunction]
fn keep_freed_memory() {
    ntklab::data::memory::keep_freed_memory();
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kernel, m)?)?;
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(flow, m)?)?;
    m.add_function(wrap_pyfunction!(gp, m)?)?;
    m.add_function(wrap_pyfunction!(keep_freed_memory, m)?)?;
    m.add_function(wrap_pyfunction!(train_run, m)?)?;
    m.add_function(wrap_pyfunction!(train_out, m)?)?;
    m.add_function(wrap_pyfunction!(experiments, m)?)?;
    m.add_function(wrap_pyfunction!(experiment_config, m)?)?;
    m.add_function(wrap_pyfunction!(run_experiment, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
