//! Saving and loading finite networks as safetensors or .npz, with PyTorch `nn.Sequential` tensor names, so
//! that a file moves between ntklab and PyTorch without conversion code.
//!
//! **Names.** In a chain, the Dense layer at position p of `arch.layers` is stored as `{p}.weight` (n_out x
//! n_in, row-major; n_out x C_in x 1 x 1 for a dense layer on an image, which the graph makes a 1 x 1
//! convolution) and `{p}.bias` (n_out, only if the layer has a bias); activations occupy positions but hold
//! no tensors, exactly as in `nn.Sequential`. `dense(512,b_std=0.1),relu,dense(1)` is `0.weight`, `0.bias`,
//! `2.weight`. A residual or DAG network stores each Dense node under its node name ([`DenseParams::name`]:
//! `1.0.weight` for the first layer of the residual block at position 1, `h1.weight` for `node(h1, ...)`), and
//! the architecture text in the metadata says how they connect. The number of parameters an architecture
//! declares is checked against the values the file holds before anything is allocated. Residual and DAG models
//! saved in f64 also carry [`RAW_TENSOR`], the flat raw parameter vector, so they load back bit-identically
//! (effective / multiplier can differ from the raw value in the last bit); loading uses a raw value only where
//! raw x multiplier reproduces the stored effective weight exactly.
//!
//! **Values.** The file holds the *effective* weights `w_mult * weight` and `b_mult * bias` (see
//! [`super::mlp`]), i.e. what the layer multiplies by. So `nn.Sequential(nn.Linear(d, 512), nn.ReLU(),
//! nn.Linear(512, 1))` with `load_state_dict(safetensors.torch.load_file(path))` computes the same function as
//! the ntklab network divided by its output scale alpha (alpha = 1, the default, gives the same function). Loading
//! divides by the multipliers of the chosen parameterization to recover the raw trainable variables; a layer
//! with multiplier 0 (w_std = 0 or b_std = 0) gets raw value 0, and a non-zero stored value there is an error.
//!
//! **Metadata.** Safetensors files carry `__metadata__` string entries [`META_ARCH`] (canonical architecture
//! text, e.g. `dense(512,w_std=1),relu,dense(1,w_std=1)`), [`META_PARAMETERIZATION`] (`ntk`, `standard`,
//! `mean-field`, `mup`), [`META_ALPHA`] (shortest round-trip decimal) and [`META_INPUT_DIM`], plus
//! `format = pt` for Hugging Face loaders. In .npz archives the same names are extra arrays (no JSON): the two
//! text entries as 1-D `uint8` arrays of UTF-8 bytes (`bytes(z["ntklab.arch"]).decode()`), `ntklab.alpha` as a
//! 0-d float64 and `ntklab.input_dim` as a 0-d int64. A PyTorch state dict from an .npz written here:
//! `{k: torch.from_numpy(v) for k, v in np.load(p).items() if not k.startswith("ntklab.")}`.
//!
//! **Foreign files** (e.g. written by `safetensors.torch.save_file(model.state_dict(), p)`, without ntklab
//! metadata) load with [`LoadOptions`]: either the layer list (`layers`), or an activation placed in every
//! one-module gap between consecutive Linear layers (`activation`; widths, input dimension and bias presence come
//! from the tensor shapes, w_std = 1, b_std = 1 where a bias exists). A common name prefix such as `model.` or
//! `net.` is accepted. The parameterization defaults to `standard` for foreign files (PyTorch's own
//! `nn.Linear` is standard-parameterized, so the raw variables equal the stored values). The *function* is the
//! same under any parameterization; what changes is which raw variables gradient descent moves and by how much
//! (e.g. under 'ntk' a raw weight is `sqrt(n_in)/w_std` times the stored one and its gradient `w_std/sqrt(n_in)`
//! times smaller), i.e. the per-layer learning rates, the Hessian and the empirical NTK in raw coordinates.
//!
//! Stored values may be float64, float32, float16, bfloat16 or integers (converted to f64); non-finite values are
//! rejected. Files are written atomically ([`crate::data::io::write_atomic`]) and byte-for-byte deterministically
//! (fixed tensor order, no time stamps).

use std::collections::BTreeMap;
use std::io::{Cursor, Seek, Write};
use std::path::Path;

use npyz::WriterBuilder;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

#[cfg(doc)]
use super::network::DenseParams;
use super::network::Mlp;
use crate::data::io::{read_npz, write_atomic, Array};
use crate::kernel::spatial::Shape;
use crate::kernel::{Activation, Architecture, Layer, Op, Parameterization};
use crate::{Error, Result};

/// Metadata key: the canonical architecture text ([`Architecture`]'s `Display`).
pub const META_ARCH: &str = "ntklab.arch";
/// Metadata key: the parameterization (`ntk`, `standard`, `mean-field`, `mup`).
pub const META_PARAMETERIZATION: &str = "ntklab.parameterization";
/// Metadata key: the output scale alpha.
pub const META_ALPHA: &str = "ntklab.alpha";
/// Metadata key: the input dimension d.
pub const META_INPUT_DIM: &str = "ntklab.input_dim";
/// Metadata key: the shape of one input example for networks with spatial inputs (`16x16x3`: H x W x C).
pub const META_INPUT_SHAPE: &str = "ntklab.input_shape";
/// Prefix of every ntklab metadata key (and of the metadata arrays in .npz archives).
pub const META_PREFIX: &str = "ntklab.";

/// Element type of the stored weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// float64 (default; exact round trip up to one rounding of the multiplier).
    #[default]
    F64,
    /// float32 (half the size; what PyTorch uses by default).
    F32,
}

/// File format of a saved network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// Hugging Face safetensors (`.safetensors`, `.st`).
    Safetensors,
    /// NumPy .npz archive.
    Npz,
}

impl ModelFormat {
    /// The format named by a path's extension (`.safetensors`/`.st` or `.npz`).
    pub fn from_path(path: &Path) -> Result<ModelFormat> {
        match path.extension().and_then(|e| e.to_str()).map(|e| e.to_lowercase()).as_deref() {
            Some("safetensors") | Some("st") => Ok(ModelFormat::Safetensors),
            Some("npz") => Ok(ModelFormat::Npz),
            _ => Err(Error::file(path, "unknown model format (expected a .safetensors or .npz file name)")),
        }
    }

    /// The format of an existing file: by extension, else by content (a zip archive is .npz).
    fn detect(path: &Path, bytes: &[u8]) -> ModelFormat {
        ModelFormat::from_path(path).unwrap_or(
            if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
                ModelFormat::Npz
            } else {
                ModelFormat::Safetensors
            },
        )
    }
}

/// How to interpret a file: overrides of, or substitutes for, its ntklab metadata.
///
/// Resolution, per item: the option if set, else the file's metadata, else the default for foreign files
/// (architecture inferred from the tensor shapes with `activation`, parameterization `standard`, alpha = 1).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadOptions {
    /// The layer list (e.g. `Architecture::parse("dense(512,b_std=1),relu,dense(1,b_std=1)", _)?.layers`).
    pub layers: Option<Vec<Layer>>,
    /// The parameterization used to recover raw variables from the stored effective weights.
    pub parameterization: Option<Parameterization>,
    /// For foreign files without `layers`: the activation between consecutive Linear layers.
    pub activation: Option<Activation>,
    /// The output scale alpha.
    pub alpha: Option<f64>,
    /// The shape of one input example (needed for convolutional networks in files without ntklab metadata).
    pub input_shape: Option<Shape>,
}

/// The effective tensors of a network under its node names (`nn.Sequential` indices for a chain):
/// `{name}.weight` = w_mult W (n_out x n_in; C_out x C_in x k... for a conv node, PyTorch's `nn.Conv2d` /
/// `nn.Conv1d` layout), `{name}.bias` = b_mult b (n_out), in parameter order.
pub fn effective_tensors(net: &Mlp) -> Vec<(String, Array)> {
    let mut out = Vec::with_capacity(2 * net.dense.len());
    let p = net.params();
    for (l, d) in net.dense.iter().enumerate() {
        let (r, c) = (d.n_out, d.n_in);
        let mut data: Vec<f64> = p[d.w_off..d.w_off + r * c].iter().map(|v| d.w_mult * v).collect();
        if let Some(pc) = torch_flatten(net, l) {
            data = permute_columns(&data, r, pc, false);
        }
        out.push((format!("{}.weight", d.name), Array { shape: d.weight_shape(), data }));
        if let Some(bo) = d.b_off {
            let data = p[bo..bo + r].iter().map(|v| d.b_mult * v).collect();
            out.push((format!("{}.bias", d.name), Array { shape: vec![r], data }));
        }
    }
    out
}

/// For a Dense node that reads a flattened image (through activations only): (positions P, channels C). ntklab
/// flattens NHWC (feature p C + c), PyTorch's `nn.Flatten` NCHW (feature c P + p), so such a layer's weight
/// columns are stored in PyTorch's order and permuted back on loading.
fn torch_flatten(net: &Mlp, l: usize) -> Option<(usize, usize)> {
    let g = &net.graph;
    let node = &g.nodes[net.dense[l].node];
    if net.dense[l].filter.is_some() {
        return None;
    }
    let mut u = node.inputs[0];
    loop {
        match &g.nodes[u].op {
            Op::Activation(_) => u = g.nodes[u].inputs[0],
            Op::Flatten => {
                let src = &g.nodes[g.nodes[u].inputs[0]].shape;
                return (src.is_spatial() && src.positions() > 1 && src.channels > 1)
                    .then_some((src.positions(), src.channels));
            }
            _ => return None,
        }
    }
}

/// A rows x (P C) row-major weight with its columns moved from ntklab's order (p C + c) to PyTorch's (c P + p)
/// (`back`: the reverse).
fn permute_columns(w: &[f64], rows: usize, (p, c): (usize, usize), back: bool) -> Vec<f64> {
    let n = p * c;
    let mut out = vec![0.0; w.len()];
    for r in 0..rows {
        for pi in 0..p {
            for ci in 0..c {
                let (ours, theirs) = (r * n + pi * c + ci, r * n + ci * p + pi);
                if back {
                    out[ours] = w[theirs];
                } else {
                    out[theirs] = w[ours];
                }
            }
        }
    }
    out
}

/// Name of the extra tensor holding the raw parameters of residual and DAG models saved in f64 (see the module
/// docs): loading prefers it wherever it reproduces the stored effective weight, so such files load back
/// bit-identically.
pub const RAW_TENSOR: &str = "ntklab.raw";

/// Every tensor a file stores: the effective tensors, plus [`RAW_TENSOR`] for graph (non-chain) models in f64.
fn stored_tensors(net: &Mlp, precision: Precision) -> Vec<(String, Array)> {
    let mut t = effective_tensors(net);
    if precision == Precision::F64 && !net.arch.is_plain_chain() {
        t.push((RAW_TENSOR.into(), Array { shape: vec![net.num_params()], data: net.params().to_vec() }));
    }
    t
}

/// The ntklab metadata of a network as (key, value) text pairs, in a fixed order.
pub fn metadata(net: &Mlp) -> Vec<(String, String)> {
    let mut m = vec![
        (META_ARCH.into(), net.arch.to_string()),
        (META_PARAMETERIZATION.into(), net.arch.parameterization.to_string()),
        (META_ALPHA.into(), format!("{}", net.alpha)),
        (META_INPUT_DIM.into(), net.input_dim.to_string()),
    ];
    if net.input_shape.is_spatial() {
        m.push((META_INPUT_SHAPE.into(), net.input_shape.compact()));
    }
    m
}

fn encode(a: &Array, precision: Precision, out: &mut Vec<u8>) {
    match precision {
        Precision::F64 => a.data.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Precision::F32 => a.data.iter().for_each(|v| out.extend_from_slice(&(*v as f32).to_le_bytes())),
    }
}

/// The network as the bytes of a safetensors file (effective weights, ntklab metadata; deterministic).
pub fn safetensors_bytes(net: &Mlp, precision: Precision) -> Vec<u8> {
    let tensors = stored_tensors(net, precision);
    let dtype = match precision {
        Precision::F64 => "F64",
        Precision::F32 => "F32",
    };
    let mut header = serde_json::Map::new();
    let mut meta = serde_json::Map::new();
    meta.insert("format".into(), "pt".into());
    for (k, v) in metadata(net) {
        meta.insert(k, v.into());
    }
    header.insert("__metadata__".into(), meta.into());
    let mut data = Vec::new();
    for (name, a) in &tensors {
        let start = data.len();
        encode(a, precision, &mut data);
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": dtype, "shape": a.shape, "data_offsets": [start, data.len()] }),
        );
    }
    let mut head = serde_json::to_vec(&serde_json::Value::Object(header)).expect("string keys serialize");
    head.resize(head.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + head.len() + data.len());
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&data);
    out
}

/// Save as safetensors (atomically).
pub fn save_safetensors(net: &Mlp, path: &Path, precision: Precision) -> Result<()> {
    let bytes = safetensors_bytes(net, precision);
    write_atomic(path, |w| w.write_all(&bytes))
}

/// Save as an uncompressed .npz archive (atomically; metadata as extra arrays, see the module docs).
pub fn save_npz(net: &Mlp, path: &Path, precision: Precision) -> Result<()> {
    let tensors = stored_tensors(net, precision);
    let mut buf = Cursor::new(Vec::new());
    let res = (|| -> std::io::Result<()> {
        let mut npz = npyz::npz::NpzWriter::new(&mut buf);
        // Fixed time stamp (1980-01-01) so the same network gives the same bytes.
        let opts = || {
            npyz::zip::write::FileOptions::default()
                .compression_method(npyz::zip::CompressionMethod::Stored)
                .last_modified_time(npyz::zip::DateTime::default())
                .large_file(true)
        };
        for (name, a) in &tensors {
            let shape: Vec<u64> = a.shape.iter().map(|&s| s as u64).collect();
            match precision {
                Precision::F64 => {
                    let mut wr = npz.array::<f64>(name, opts())?.default_dtype().shape(&shape).begin_nd()?;
                    wr.extend(a.data.iter().copied())?;
                    wr.finish()?;
                }
                Precision::F32 => {
                    let mut wr = npz.array::<f32>(name, opts())?.default_dtype().shape(&shape).begin_nd()?;
                    wr.extend(a.data.iter().map(|v| *v as f32))?;
                    wr.finish()?;
                }
            }
        }
        let mut texts =
            vec![(META_ARCH, net.arch.to_string()), (META_PARAMETERIZATION, net.arch.parameterization.to_string())];
        if net.input_shape.is_spatial() {
            texts.push((META_INPUT_SHAPE, net.input_shape.compact()));
        }
        for (key, text) in texts {
            let mut wr = npz.array::<u8>(key, opts())?.default_dtype().shape(&[text.len() as u64]).begin_nd()?;
            wr.extend(text.bytes())?;
            wr.finish()?;
        }
        let mut wr = npz.array::<f64>(META_ALPHA, opts())?.default_dtype().shape(&[]).begin_nd()?;
        wr.push(&net.alpha)?;
        wr.finish()?;
        let mut wr = npz.array::<i64>(META_INPUT_DIM, opts())?.default_dtype().shape(&[]).begin_nd()?;
        wr.push(&(net.input_dim as i64))?;
        wr.finish()?;
        npz.zip_writer().finish()?;
        Ok(())
    })();
    res.map_err(|e| Error::file(path, format!("cannot encode .npz: {e}")))?;
    buf.rewind().map_err(|e| Error::file(path, e))?;
    write_atomic(path, |w| w.write_all(buf.get_ref()))
}

/// Save in the format named by the extension (`.safetensors`/`.st` or `.npz`), atomically.
pub fn save_mlp(net: &Mlp, path: &Path, precision: Precision) -> Result<()> {
    match ModelFormat::from_path(path)? {
        ModelFormat::Safetensors => save_safetensors(net, path, precision),
        ModelFormat::Npz => save_npz(net, path, precision),
    }
}

/// Load a network saved by [`save_mlp`] or by PyTorch (format by extension, else by content); see
/// [`LoadOptions`] for files without ntklab metadata. Errors name the file and the offending tensor.
pub fn load_mlp(path: &Path, opts: &LoadOptions) -> Result<Mlp> {
    crate::data::io::check_regular(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    match ModelFormat::detect(path, &bytes) {
        ModelFormat::Safetensors => mlp_from_safetensors_bytes(&bytes, opts).map_err(|e| in_file(path, e)),
        ModelFormat::Npz => load_npz(path, opts),
    }
}

/// Load a safetensors file (see [`load_mlp`]).
pub fn load_safetensors(path: &Path, opts: &LoadOptions) -> Result<Mlp> {
    crate::data::io::check_regular(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    mlp_from_safetensors_bytes(&bytes, opts).map_err(|e| in_file(path, e))
}

/// Load an .npz archive (see [`load_mlp`]).
pub fn load_npz(path: &Path, opts: &LoadOptions) -> Result<Mlp> {
    let arrays = read_npz(path)?;
    let mut meta = BTreeMap::new();
    let mut tensors = Vec::with_capacity(arrays.len());
    for (name, a) in arrays {
        if !name.starts_with(META_PREFIX) || name == RAW_TENSOR {
            tensors.push((name, a));
            continue;
        }
        let value = match name.as_str() {
            META_ARCH | META_PARAMETERIZATION | META_INPUT_SHAPE => {
                let bytes: Option<Vec<u8>> = a
                    .data
                    .iter()
                    .map(|v| (v.fract() == 0.0 && (0.0..=255.0).contains(v)).then_some(*v as u8))
                    .collect();
                bytes.and_then(|b| String::from_utf8(b).ok()).ok_or_else(|| {
                    Error::file(path, format!("metadata array `{name}` is not UTF-8 text stored as uint8 bytes"))
                })?
            }
            _ if a.data.len() == 1 => format!("{}", a.data[0]),
            _ => {
                return Err(Error::file(
                    path,
                    format!("metadata array `{name}` should hold one number, has shape {:?}", a.shape),
                ))
            }
        };
        meta.insert(name, value);
    }
    mlp_from_tensors(tensors, &meta, opts).map_err(|e| in_file(path, e))
}

fn in_file(path: &Path, e: Error) -> Error {
    match e {
        Error::File { .. } => e,
        other => Error::file(path, other),
    }
}

fn describe(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => "file is too short to be safetensors (no 8-byte header length)".into(),
        SafeTensorError::HeaderTooLarge | SafeTensorError::InvalidHeaderLength => {
            "the header length in the first 8 bytes does not fit the file (not safetensors, or truncated)".into()
        }
        SafeTensorError::InvalidHeader
        | SafeTensorError::InvalidHeaderStart
        | SafeTensorError::InvalidHeaderDeserialization => "the header is not valid safetensors JSON".into(),
        SafeTensorError::MetadataIncompleteBuffer => {
            "tensor data do not cover the file exactly (truncated or padded file)".into()
        }
        SafeTensorError::InvalidOffset(name) => format!("tensor `{name}` has invalid data offsets"),
        SafeTensorError::TensorInvalidInfo | SafeTensorError::ValidationOverflow => {
            "a tensor's shape, dtype and data offsets are inconsistent".into()
        }
        other => format!("{other:?}"),
    }
}

/// float16 bits to f64 (IEEE 754 binary16).
fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

fn decode(name: &str, dtype: Dtype, shape: &[usize], raw: &[u8]) -> Result<Array> {
    macro_rules! le {
        ($t:ty, $n:expr, $conv:expr) => {
            raw.chunks_exact($n)
                .map(|c| $conv(<$t>::from_le_bytes(c.try_into().expect("chunk size"))))
                .collect::<Vec<f64>>()
        };
    }
    let data = match dtype {
        Dtype::F64 => le!(f64, 8, |v| v),
        Dtype::F32 => le!(f32, 4, f64::from),
        Dtype::F16 => le!(u16, 2, f16_to_f64),
        Dtype::BF16 => le!(u16, 2, |b: u16| f64::from(f32::from_bits((b as u32) << 16))),
        Dtype::I64 => le!(i64, 8, |v| v as f64),
        Dtype::I32 => le!(i32, 4, f64::from),
        Dtype::I16 => le!(i16, 2, f64::from),
        Dtype::I8 => le!(i8, 1, f64::from),
        Dtype::U64 => le!(u64, 8, |v| v as f64),
        Dtype::U32 => le!(u32, 4, f64::from),
        Dtype::U16 => le!(u16, 2, f64::from),
        Dtype::U8 => le!(u8, 1, f64::from),
        other => return Err(Error::InvalidInput(format!("tensor `{name}` has unsupported dtype {other:?}"))),
    };
    Ok(Array { shape: shape.to_vec(), data })
}

/// Load a network from the bytes of a safetensors file (see [`load_mlp`]).
pub fn mlp_from_safetensors_bytes(bytes: &[u8], opts: &LoadOptions) -> Result<Mlp> {
    let bad = |e: SafeTensorError| Error::InvalidInput(format!("not a valid safetensors file: {}", describe(&e)));
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(bad)?;
    let st = SafeTensors::deserialize(bytes).map_err(bad)?;
    let meta: BTreeMap<String, String> = header
        .metadata()
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(META_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut tensors = Vec::with_capacity(st.len());
    for (name, view) in st.tensors() {
        let a = decode(&name, view.dtype(), view.shape(), view.data())?;
        tensors.push((name, a));
    }
    mlp_from_tensors(tensors, &meta, opts)
}

/// Splits `{prefix}{p}.weight` / `{prefix}{p}.bias` into (prefix, p, is_weight); the prefix is empty or ends
/// with '.' (so `fc1.weight` is not read as index 1).
fn split_name(name: &str) -> Option<(&str, usize, bool)> {
    let (stem, is_weight) =
        if let Some(s) = name.strip_suffix(".weight") { (s, true) } else { (name.strip_suffix(".bias")?, false) };
    let digits = stem.len() - stem.bytes().rev().take_while(|b| b.is_ascii_digit()).count();
    let (prefix, idx) = stem.split_at(digits);
    if idx.is_empty() || !(prefix.is_empty() || prefix.ends_with('.')) {
        return None;
    }
    Some((prefix, idx.parse().ok()?, is_weight))
}

fn meta_parse<T: std::str::FromStr>(meta: &BTreeMap<String, String>, key: &str) -> Result<Option<T>> {
    meta.get(key)
        .map(|v| {
            v.trim()
                .parse::<T>()
                .map_err(|_| Error::InvalidInput(format!("metadata `{key}` = `{v}` is not a valid number")))
        })
        .transpose()
}

/// Layers inferred from the tensors of a foreign file: Dense at each weight's index, `activation` in each
/// one-position gap.
fn infer_layers(
    prefix: &str,
    weights: &BTreeMap<usize, (Vec<usize>, bool)>,
    activation: Option<&Activation>,
) -> Result<Vec<Layer>> {
    let idx: Vec<usize> = weights.keys().copied().collect();
    if idx[0] != 0 {
        return Err(Error::Config(format!(
            "the first Linear layer is at index {} (`{prefix}{}.weight`); only networks that start with a Linear layer \
             at index 0 are supported",
            idx[0], idx[0]
        )));
    }
    let mut layers = Vec::new();
    for (i, &p) in idx.iter().enumerate() {
        if i > 0 {
            match p - idx[i - 1] - 1 {
                0 => {}
                1 => match activation {
                    Some(a) => layers.push(Layer::Activation(a.clone())),
                    None => {
                        return Err(Error::Config(format!(
                            "the file has no ntklab metadata and index {} (between `{prefix}{}.weight` and \
                             `{prefix}{p}.weight`) is a module without tensors; name its activation (e.g. relu) \
                             or give the full architecture",
                            p - 1,
                            idx[i - 1]
                        )))
                    }
                },
                g => {
                    return Err(Error::Config(format!(
                        "{g} modules without tensors between `{prefix}{}.weight` and `{prefix}{p}.weight`; a finite \
                         network has at most one activation between Linear layers",
                        idx[i - 1]
                    )))
                }
            }
        }
        let (shape, has_bias) = &weights[&p];
        if shape.len() != 2 || shape[0] == 0 {
            return Err(Error::Shape(format!(
                "tensor `{prefix}{p}.weight` must be a non-empty matrix (n_out x n_in), has shape {shape:?}"
            )));
        }
        layers.push(Layer::Dense { width: shape[0], w_std: 1.0, b_std: has_bias.then_some(1.0) });
    }
    Ok(layers)
}

/// Recover raw variables: raw = stored / mult (0 where mult = 0, which requires stored = 0).
fn unscale(name: &str, stored: &[f64], mult: f64) -> Result<Vec<f64>> {
    if let Some(k) = stored.iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidInput(format!(
            "tensor `{name}` has a non-finite value {} at flat index {k}",
            stored[k]
        )));
    }
    if mult == 0.0 {
        if let Some(k) = stored.iter().position(|v| *v != 0.0) {
            return Err(Error::InvalidInput(format!(
                "tensor `{name}` has the non-zero value {} at flat index {k}, but the layer's multiplier is 0 \
                 (w_std or b_std = 0)",
                stored[k]
            )));
        }
        return Ok(vec![0.0; stored.len()]);
    }
    Ok(stored.iter().map(|v| v / mult).collect())
}

/// Build a network from named effective tensors (`nn.Sequential` names, row-major) and ntklab metadata
/// (`ntklab.*` keys; may be empty), resolving the architecture as described in [`LoadOptions`]. Checks every
/// tensor's shape against the architecture; missing and unexpected tensors are errors.
pub fn mlp_from_tensors(
    tensors: Vec<(String, Array)>,
    meta: &BTreeMap<String, String>,
    opts: &LoadOptions,
) -> Result<Mlp> {
    if tensors.is_empty() {
        return Err(Error::InvalidInput("the file holds no tensors".into()));
    }
    let declared = match (&opts.layers, meta.get(META_ARCH)) {
        (Some(l), _) => Some(l.clone()),
        (None, Some(text)) => Some(
            Architecture::parse(text, Parameterization::Ntk)
                .map_err(|e| Error::InvalidInput(format!("metadata `{META_ARCH}`: {e}")))?
                .layers,
        ),
        (None, None) => None,
    };
    let parameterization = match (opts.parameterization, meta.get(META_PARAMETERIZATION)) {
        (Some(p), _) => p,
        (None, Some(text)) => Parameterization::parse(text)
            .map_err(|e| Error::InvalidInput(format!("metadata `{META_PARAMETERIZATION}`: {e}")))?,
        (None, None) => Parameterization::Standard,
    };
    let alpha = match opts.alpha {
        Some(a) => a,
        None => meta_parse::<f64>(meta, META_ALPHA)?.unwrap_or(1.0),
    };
    let meta_dim = meta_parse::<usize>(meta, META_INPUT_DIM)?;
    let meta_shape = meta
        .get(META_INPUT_SHAPE)
        .map(|t| Shape::parse(t).map_err(|e| Error::InvalidInput(format!("metadata `{META_INPUT_SHAPE}`: {e}"))))
        .transpose()?;
    if let (Some(s), Some(d)) = (&meta_shape, meta_dim) {
        if s.size() != d {
            return Err(Error::InvalidInput(format!(
                "metadata `{META_INPUT_SHAPE}` = {s} ({} values) contradicts `{META_INPUT_DIM}` = {d}",
                s.size()
            )));
        }
    }
    let input = opts.input_shape.clone().or(meta_shape).or(meta_dim.map(Shape::flat));
    match declared {
        Some(layers) if !Architecture::sequential(layers.clone(), parameterization).is_plain_chain() => {
            graph_from_tensors(tensors, Architecture::sequential(layers, parameterization), input, alpha)
        }
        declared => sequential_from_tensors(tensors, declared, parameterization, input, alpha, opts),
    }
}

/// The input dimension of a graph architecture from its tensors: the fan-in of a Dense node reading the input.
fn graph_input_dim(arch: &Architecture, by_name: &BTreeMap<String, Array>) -> Result<usize> {
    if arch.has_spatial() {
        return Err(no_shape());
    }
    let probe = arch.graph(1)?;
    for n in &probe.nodes {
        if matches!(n.op, crate::kernel::Op::Dense { .. }) && n.inputs[0] == 0 {
            let wname = format!("{}.weight", n.name);
            return match by_name.get(&wname) {
                Some(a) if a.shape.len() == 2 => Ok(a.shape[1]),
                Some(a) => Err(Error::Shape(format!(
                    "tensor `{wname}` must be a matrix (n_out x n_in), has shape {:?}",
                    a.shape
                ))),
                None => Err(Error::InvalidInput(format!("missing tensor `{wname}` (node `{}`)", n.name))),
            };
        }
    }
    Err(Error::InvalidInput(format!("metadata `{META_INPUT_DIM}` is missing and no dense node reads the input")))
}

/// The error for a convolutional network whose input shape is unknown.
fn no_shape() -> Error {
    Error::InvalidInput(
        "the network has conv or pooling layers and the file does not say the input shape (metadata \
         `ntklab.input_shape`): give it, e.g. 32x32x3 (H x W x C; --input-shape on the command line)"
            .into(),
    )
}

/// The weight tensor shape a Dense or Conv node declares, and how to describe it.
fn declared_weight(
    g: &crate::kernel::Graph,
    n: &crate::kernel::Node,
) -> Option<(Vec<usize>, &'static str, Option<f64>)> {
    match &n.op {
        Op::Dense { width, b_std, .. } => Some((vec![*width, g.nodes[n.inputs[0]].width], "n_out x n_in", *b_std)),
        Op::Conv { channels, filter, b_std, .. } => {
            let mut s = vec![*channels, g.nodes[n.inputs[0]].shape.channels];
            s.extend_from_slice(filter);
            Some((s, "C_out x C_in x filter, as PyTorch's Conv", *b_std))
        }
        _ => None,
    }
}

/// Before allocating: every Dense and Conv node's weight tensor, where present, has the shape the architecture
/// declares (`name(node)` gives its tensor base name and description), and the architecture declares no more
/// parameters than the file holds values.
fn check_declared_size(
    arch: &Architecture,
    input: &Shape,
    by_name: &BTreeMap<String, Array>,
    name: impl Fn(&crate::kernel::Node) -> (String, String),
) -> Result<()> {
    let g = arch.graph_for(input)?;
    let mut declared: u128 = 0;
    for n in &g.nodes {
        if let Some((want, layout, b_std)) = declared_weight(&g, n) {
            let width = want[0];
            let (base, what) = name(n);
            let wname = format!("{base}.weight");
            let Some(w) = by_name.get(&wname) else {
                return Err(Error::InvalidInput(format!("missing tensor `{wname}` ({what})")));
            };
            if w.shape != want {
                return Err(shape_mismatch(&wname, &w.shape, &what, &want, layout));
            }
            let n_in: usize = want[1..].iter().product();
            let bname = format!("{base}.bias");
            if b_std.is_some() && !by_name.contains_key(&bname) {
                return Err(Error::InvalidInput(format!(
                    "missing tensor `{bname}`: {what} has a bias (b_std given); drop b_std if the model has none"
                )));
            }
            declared += width as u128 * n_in as u128 + if b_std.is_some() { width as u128 } else { 0 };
        }
    }
    let held: u128 = by_name.values().map(|a| a.data.len() as u128).sum();
    if declared > held {
        return Err(Error::InvalidInput(format!(
            "the architecture `{arch}` declares {declared} parameters but the file holds only {held} values"
        )));
    }
    Ok(())
}

/// A weight tensor of the wrong shape, named; a 2-d tensor where a 1 x 1 convolution's is wanted (a dense layer on
/// an image, which the graph makes one) most likely means a missing flatten, and the message says so.
fn shape_mismatch(wname: &str, got: &[usize], what: &str, want: &[usize], layout: &str) -> Error {
    let one_by_one = want.len() > 2 && want[2..].iter().all(|&k| k == 1);
    let hint = if one_by_one && got.len() == 2 {
        "; a dense layer on an image maps its channels at every position (a 1 x 1 convolution): for a PyTorch \
         Linear after the image, put flatten (or global_avg_pool) before the dense layer"
    } else {
        ""
    };
    Error::Shape(format!("tensor `{wname}` has shape {got:?} but {what} needs {want:?} ({layout}){hint}"))
}

/// Fill Dense node `d` of `net` from `{base}.weight` / `{base}.bias`; `what` describes the layer in errors.
fn fill_dense(net: &mut Mlp, l: usize, base: &str, what: &str, by_name: &mut BTreeMap<String, Array>) -> Result<()> {
    let d = net.dense[l].clone();
    let wname = format!("{base}.weight");
    let w = by_name.remove(&wname).ok_or_else(|| Error::InvalidInput(format!("missing tensor `{wname}` ({what})")))?;
    let want = d.weight_shape();
    if w.shape != want {
        let layout = if d.filter.is_some() { "C_out x C_in x filter" } else { "n_out x n_in" };
        return Err(shape_mismatch(&wname, &w.shape, what, &want, layout));
    }
    let mut raw = unscale(&wname, &w.data, d.w_mult)?;
    if let Some(pc) = torch_flatten(net, l) {
        raw = permute_columns(&raw, d.n_out, pc, true);
    }
    net.params_mut()[d.w_off..d.w_off + raw.len()].copy_from_slice(&raw);
    let bname = format!("{base}.bias");
    if let Some(bo) = d.b_off {
        let b = by_name.remove(&bname).ok_or_else(|| {
            Error::InvalidInput(format!(
                "missing tensor `{bname}`: {what} has a bias (b_std given); drop b_std if the model has none"
            ))
        })?;
        if b.shape != [d.n_out] {
            return Err(Error::Shape(format!(
                "tensor `{bname}` has shape {:?} but {what} needs [{}]",
                b.shape, d.n_out
            )));
        }
        let raw = unscale(&bname, &b.data, d.b_mult)?;
        net.params_mut()[bo..bo + d.n_out].copy_from_slice(&raw);
    } else if by_name.contains_key(&bname) {
        return Err(Error::InvalidInput(format!(
            "tensor `{bname}` is in the file but {what} has no bias; give it one with b_std, e.g. dense({},b_std=1)",
            d.n_out
        )));
    }
    Ok(())
}

/// A graph (residual or DAG) network from tensors named `{node}.weight` / `{node}.bias`.
fn graph_from_tensors(
    tensors: Vec<(String, Array)>,
    arch: Architecture,
    input: Option<Shape>,
    alpha: f64,
) -> Result<Mlp> {
    let mut by_name: BTreeMap<String, Array> = tensors.into_iter().collect();
    let raw = by_name.remove(RAW_TENSOR);
    let input = match input {
        Some(s) => s,
        None => Shape::flat(graph_input_dim(&arch, &by_name)?),
    };
    check_declared_size(&arch, &input, &by_name, |n| (n.name.clone(), format!("node `{}`", n.name)))?;
    let mut net = Mlp::zeros_for(&arch, &input, alpha)?;
    if let Some(r) = &raw {
        if r.shape != [net.num_params()] {
            return Err(Error::Shape(format!(
                "tensor `{RAW_TENSOR}` has shape {:?} but the architecture has {} parameters",
                r.shape,
                net.num_params()
            )));
        }
    }
    let effective = raw.as_ref().map(|_| by_name.clone());
    for l in 0..net.dense.len() {
        let name = net.dense[l].name.clone();
        let op = net.graph.nodes[net.dense[l].node].op.to_layer().expect("a parameter node is not the input");
        let what = format!("node `{name}` `{op}`");
        fill_dense(&mut net, l, &name, &what, &mut by_name)?;
    }
    if let (Some(r), Some(eff)) = (&raw, &effective) {
        // A raw value replaces stored / multiplier only where it reproduces the stored effective weight exactly
        // (an edited file keeps what its tensors say).
        for (l, d) in net.dense.clone().into_iter().enumerate() {
            let mut parts = vec![(format!("{}.weight", d.name), d.w_off, d.w_mult)];
            if let Some(bo) = d.b_off {
                parts.push((format!("{}.bias", d.name), bo, d.b_mult));
            }
            let flat = torch_flatten(&net, l);
            for (i, (tname, off, mult)) in parts.into_iter().enumerate() {
                let data = match flat {
                    Some(pc) if i == 0 => permute_columns(&eff[&tname].data, d.n_out, pc, true),
                    _ => eff[&tname].data.clone(),
                };
                for (k, &stored) in data.iter().enumerate() {
                    let rv = r.data[off + k];
                    if rv.is_finite() && (rv * mult).to_bits() == stored.to_bits() {
                        net.params_mut()[off + k] = rv;
                    }
                }
            }
        }
    }
    if !by_name.is_empty() {
        let names: Vec<String> = by_name.keys().map(|k| format!("`{k}`")).collect();
        let dense: Vec<String> = net.dense.iter().map(|d| format!("`{}`", d.name)).collect();
        return Err(Error::InvalidInput(format!(
            "unexpected tensor(s) {} (the architecture has Dense and Conv nodes {})",
            names.join(", "),
            dense.join(", ")
        )));
    }
    Ok(net)
}

/// A chain network from `nn.Sequential`-named tensors (any common prefix such as `model.`).
fn sequential_from_tensors(
    tensors: Vec<(String, Array)>,
    declared: Option<Vec<Layer>>,
    parameterization: Parameterization,
    input: Option<Shape>,
    alpha: f64,
    opts: &LoadOptions,
) -> Result<Mlp> {
    // Common prefix and the index -> (weight shape, has bias) map.
    let mut prefix: Option<String> = None;
    let mut found: BTreeMap<usize, (Option<Vec<usize>>, bool)> = BTreeMap::new();
    for (name, a) in &tensors {
        let Some((pre, p, is_weight)) = split_name(name) else {
            return Err(Error::InvalidInput(format!(
                "unexpected tensor `{name}` (expected nn.Sequential names such as `0.weight`, `0.bias`, `2.weight`)"
            )));
        };
        match &prefix {
            None => prefix = Some(pre.to_string()),
            Some(q) if q != pre => {
                return Err(Error::InvalidInput(format!(
                    "tensor `{name}` does not share the prefix `{q}` of the other tensors"
                )))
            }
            _ => {}
        }
        let e = found.entry(p).or_insert((None, false));
        if is_weight {
            e.0 = Some(a.shape.clone());
        } else {
            e.1 = true;
        }
    }
    let prefix = prefix.unwrap_or_default();
    let mut weights: BTreeMap<usize, (Vec<usize>, bool)> = BTreeMap::new();
    for (p, (shape, bias)) in found {
        let shape = shape.ok_or_else(|| {
            Error::InvalidInput(format!("tensor `{prefix}{p}.bias` has no matching `{prefix}{p}.weight`"))
        })?;
        weights.insert(p, (shape, bias));
    }

    let layers = match declared {
        Some(l) => l,
        None => infer_layers(&prefix, &weights, opts.activation.as_ref())?,
    };
    let first_dense = layers.iter().position(|l| matches!(l, Layer::Dense { .. } | Layer::Conv { .. }));
    let input = match input {
        Some(s) => s,
        None => Shape::flat({
            let p = first_dense.ok_or_else(|| Error::Config("the architecture has no dense layer".into()))?;
            if layers.iter().any(|l| l.is_spatial()) {
                return Err(no_shape());
            }
            match weights.get(&p) {
                Some((s, _)) if s.len() == 2 => s[1],
                Some((s, _)) => {
                    return Err(Error::Shape(format!(
                        "tensor `{prefix}{p}.weight` must be a matrix (n_out x n_in), has shape {s:?}"
                    )))
                }
                None => {
                    return Err(Error::InvalidInput(format!("missing tensor `{prefix}{p}.weight` (layer {})", p + 1)))
                }
            }
        }),
    };
    let arch = Architecture::sequential(layers, parameterization);
    let mut by_name: BTreeMap<String, Array> = tensors.into_iter().collect();
    check_declared_size(&arch, &input, &by_name, |n| {
        let p: usize = n.name.parse().unwrap_or(0);
        (format!("{prefix}{p}"), format!("layer {} `{}`", p + 1, arch.layers[p]))
    })?;
    let mut net = Mlp::zeros_for(&arch, &input, alpha)?;
    for l in 0..net.dense.len() {
        let p: usize = net.dense[l].name.parse().expect("chain nodes are named by index");
        let what = format!("layer {} `{}`", p + 1, arch.layers[p]);
        fill_dense(&mut net, l, &format!("{prefix}{p}"), &what, &mut by_name)?;
    }
    if !by_name.is_empty() {
        let names: Vec<String> = by_name.keys().map(|k| format!("`{k}`")).collect();
        let dense: Vec<String> = net.dense.iter().map(|d| d.name.clone()).collect();
        return Err(Error::InvalidInput(format!(
            "unexpected tensor(s) {} (the architecture `{arch}` has Dense layers at indices {}{})",
            names.join(", "),
            dense.join(", "),
            if names.iter().any(|n| n.ends_with(".bias`")) { "; a dense layer without b_std has no bias" } else { "" }
        )));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::gaussian;
    use faer::Mat;
    use std::path::PathBuf;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ntklab-net-io-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn net(spec: &str, p: Parameterization, d: usize, alpha: f64, seed: u64) -> Mlp {
        Mlp::init(&Architecture::parse(spec, p).unwrap(), d, alpha, seed).unwrap()
    }

    fn max_rel(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
        (a - b).norm_max() / b.norm_max()
    }

    const SPEC: &str =
        "dense(7,w_std=1.4,b_std=0.3),tanh,dense(5),dense(6,b_std=0.2),relu,dense(3,w_std=0.9,b_std=0.5)";
    const ALL: [Parameterization; 4] =
        [Parameterization::Ntk, Parameterization::Standard, Parameterization::MeanField, Parameterization::Mup];

    #[test]
    fn roundtrip_gives_the_same_network() {
        // Reference: the original network. raw -> stored -> raw costs at most two roundings per value
        // (w_mult * w, then / w_mult), so outputs agree to ~1e-15 relative; 1e-13 leaves room for depth.
        // 'standard' has multipliers 1, so there the round trip is exact.
        let d = tmpdir("roundtrip");
        let x = gaussian(6, 4, 3);
        for p in ALL {
            let n = net(SPEC, p, 4, 1.7, 11);
            let f = n.forward(x.as_ref()).unwrap();
            for file in ["m.safetensors", "m.npz"] {
                let path = d.join(file);
                save_mlp(&n, &path, Precision::F64).unwrap();
                let back = load_mlp(&path, &LoadOptions::default()).unwrap();
                assert_eq!(back.arch, n.arch, "{file} {p}");
                assert_eq!((back.input_dim, back.alpha), (n.input_dim, n.alpha));
                let g = back.forward(x.as_ref()).unwrap();
                assert!(max_rel(&g, &f) < 1e-13, "{file} {p}: {}", max_rel(&g, &f));
                let pr: Vec<f64> = n.params().to_vec();
                let pb = back.params();
                let e = pr.iter().zip(pb).map(|(a, b)| (a - b).abs() / a.abs().max(1e-300)).fold(0.0, f64::max);
                assert!(e < 1e-15, "{file} {p}: raw params differ by {e:e}");
                if p == Parameterization::Standard {
                    assert_eq!(back, n, "{file}: standard round trip must be exact");
                }
                // Deterministic bytes.
                let first = std::fs::read(&path).unwrap();
                save_mlp(&n, &path, Precision::F64).unwrap();
                assert_eq!(std::fs::read(&path).unwrap(), first, "{file}: not byte-deterministic");
            }
        }
        // f32: values are rounded to float32 (relative 6e-8 each), so outputs agree to ~1e-6.
        let n = net(SPEC, Parameterization::Ntk, 4, 1.0, 2);
        for file in ["m32.safetensors", "m32.npz"] {
            let path = d.join(file);
            save_mlp(&n, &path, Precision::F32).unwrap();
            let back = load_mlp(&path, &LoadOptions::default()).unwrap();
            let (f, g) = (n.forward(x.as_ref()).unwrap(), back.forward(x.as_ref()).unwrap());
            assert!(max_rel(&g, &f) < 1e-5, "{file}");
        }
        assert!(
            std::fs::metadata(d.join("m32.safetensors")).unwrap().len()
                < std::fs::metadata(d.join("m.safetensors")).unwrap().len()
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn safetensors_file_is_standard_and_holds_effective_weights() {
        // Independent route: the reference `safetensors` reader and the documented names and values.
        let n = net("dense(5,w_std=1.3,b_std=0.2),relu,dense(2)", Parameterization::Ntk, 3, 2.5, 4);
        let bytes = safetensors_bytes(&n, Precision::F64);
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut names: Vec<String> = st.names().into_iter().cloned().collect();
        names.sort();
        assert_eq!(names, ["0.bias", "0.weight", "2.weight"]);
        let w = st.tensor("0.weight").unwrap();
        assert_eq!((w.dtype(), w.shape()), (Dtype::F64, &[5usize, 3][..]));
        let w01 = f64::from_le_bytes(w.data()[8..16].try_into().unwrap());
        assert_eq!(w01, n.dense[0].w_mult * n.weight(0)[(0, 1)]);
        assert_eq!(n.dense[0].w_mult, 1.3 / 3f64.sqrt());
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let m = header.metadata().as_ref().unwrap();
        assert_eq!(m[META_ARCH], "dense(5,w_std=1.3,b_std=0.2),relu,dense(2,w_std=1)");
        assert_eq!(m[META_PARAMETERIZATION], "ntk");
        assert_eq!(m[META_ALPHA], "2.5");
        assert_eq!(m[META_INPUT_DIM], "3");
    }

    #[test]
    fn effective_weights_load_into_any_parameterization_as_the_same_function() {
        // A file saved from an 'ntk' net, read as standard / mean-field / muP: the raw variables change
        // (stored / multiplier) but the function must not (to rounding).
        let d = tmpdir("reparam");
        let x = gaussian(5, 4, 8);
        let n = net(SPEC, Parameterization::Ntk, 4, 1.0, 5);
        let f = n.forward(x.as_ref()).unwrap();
        let path = d.join("m.safetensors");
        save_mlp(&n, &path, Precision::F64).unwrap();
        for p in ALL {
            let opts = LoadOptions { parameterization: Some(p), ..Default::default() };
            let back = load_mlp(&path, &opts).unwrap();
            assert_eq!(back.arch.parameterization, p);
            assert!(max_rel(&back.forward(x.as_ref()).unwrap(), &f) < 1e-13, "{p}");
            if p == Parameterization::Standard {
                // Standard: raw = effective.
                assert_eq!(back.weight(0)[(1, 2)], n.dense[0].w_mult * n.weight(0)[(1, 2)]);
            }
        }
        std::fs::remove_dir_all(&d).ok();
    }

    /// A torch-style file: `nn.Sequential(Linear(3, 4), ReLU(), Linear(4, 2))` state dict in float32, no metadata.
    fn torch_file(prefix: &str, w0: &[f32], b0: &[f32], w2: &[f32], b2: &[f32]) -> Vec<u8> {
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (a, b, c, e) = (bytes(w0), bytes(b0), bytes(w2), bytes(b2));
        let views = vec![
            (format!("{prefix}0.weight"), safetensors::tensor::TensorView::new(Dtype::F32, vec![4, 3], &a).unwrap()),
            (format!("{prefix}0.bias"), safetensors::tensor::TensorView::new(Dtype::F32, vec![4], &b).unwrap()),
            (format!("{prefix}2.weight"), safetensors::tensor::TensorView::new(Dtype::F32, vec![2, 4], &c).unwrap()),
            (format!("{prefix}2.bias"), safetensors::tensor::TensorView::new(Dtype::F32, vec![2], &e).unwrap()),
        ];
        safetensors::serialize(views, &None).unwrap()
    }

    fn torch_weights() -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let w0: Vec<f32> = (0..12).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.125).collect();
        let b0: Vec<f32> = vec![0.5, -0.25, 0.125, -1.0];
        let w2: Vec<f32> = (0..8).map(|i| ((i * 3 % 5) as f32 - 2.0) * 0.25).collect();
        let b2: Vec<f32> = vec![0.75, -0.5];
        (w0, b0, w2, b2)
    }

    /// The torch module's function computed by hand: W2 relu(W0 x + b0) + b2.
    fn torch_forward(x: &Mat<f64>, w: &(Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>)) -> Mat<f64> {
        let (w0, b0, w2, b2) = w;
        Mat::from_fn(x.nrows(), 2, |n, a| {
            let mut out = b2[a] as f64;
            for i in 0..4 {
                let mut z = b0[i] as f64;
                for j in 0..3 {
                    z += w0[i * 3 + j] as f64 * x[(n, j)];
                }
                out += w2[a * 4 + i] as f64 * z.max(0.0);
            }
            out
        })
    }

    #[test]
    fn torch_style_file_without_metadata_loads() {
        let d = tmpdir("torch");
        let w = torch_weights();
        let x = gaussian(5, 3, 1);
        let expect = torch_forward(&x, &w);
        for prefix in ["", "model."] {
            let path = d.join("torch.safetensors");
            std::fs::write(&path, torch_file(prefix, &w.0, &w.1, &w.2, &w.3)).unwrap();
            // Inferred architecture with an activation; default parameterization 'standard' (raw = stored).
            let opts = LoadOptions { activation: Some(Activation::Relu), ..Default::default() };
            let n = load_mlp(&path, &opts).unwrap();
            assert_eq!(n.arch.parameterization, Parameterization::Standard);
            assert_eq!((n.input_dim, n.output_dim(), n.alpha), (3, 2, 1.0));
            assert_eq!(n.weight(0)[(1, 2)], w.0[5] as f64);
            assert!(max_rel(&n.forward(x.as_ref()).unwrap(), &expect) < 1e-14);
            // 'ntk' parameterization: same function, raw weights scaled by sqrt(n_in).
            let ntk = load_mlp(&path, &LoadOptions { parameterization: Some(Parameterization::Ntk), ..opts.clone() })
                .unwrap();
            assert!(max_rel(&ntk.forward(x.as_ref()).unwrap(), &expect) < 1e-14);
            assert!((ntk.weight(0)[(1, 2)] - w.0[5] as f64 * 3f64.sqrt()).abs() < 1e-14);
            // Explicit layers.
            let layers =
                Architecture::parse("dense(4,b_std=1),relu,dense(2,b_std=1)", Parameterization::Ntk).unwrap().layers;
            let n2 = load_mlp(&path, &LoadOptions { layers: Some(layers), ..Default::default() }).unwrap();
            assert!(max_rel(&n2.forward(x.as_ref()).unwrap(), &expect) < 1e-14);
            // Without an activation the gap at index 1 is an error that says what to do.
            let e = load_mlp(&path, &LoadOptions::default()).unwrap_err().to_string();
            assert!(e.contains("activation") && e.contains("torch.safetensors"), "{e}");
        }
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn half_precision_values_convert() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert_eq!(f16_to_f64(0x3555), 0.333251953125);
        assert_eq!(f16_to_f64(0x0001), 2f64.powi(-24));
        assert!(f16_to_f64(0x7c00).is_infinite() && f16_to_f64(0x7e00).is_nan());
        let a = decode("t", Dtype::BF16, &[2], &[0x80, 0x3f, 0x40, 0xc0]).unwrap();
        assert_eq!(a.data, vec![1.0, -3.0]);
        assert!(decode("t", Dtype::BOOL, &[1], &[1]).unwrap_err().to_string().contains("`t`"));
    }

    #[test]
    fn bad_files_give_clear_errors() {
        let d = tmpdir("bad");
        let w = torch_weights();
        let relu = LoadOptions { activation: Some(Activation::Relu), ..Default::default() };
        let write = |name: &str, bytes: &[u8]| {
            let p = d.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let err = |p: &Path, o: &LoadOptions| load_mlp(p, o).unwrap_err().to_string();

        // Wrong shape against an explicit architecture: names the tensor and both shapes.
        let p = write("t.safetensors", &torch_file("", &w.0, &w.1, &w.2, &w.3));
        let layers =
            Architecture::parse("dense(5,b_std=1),relu,dense(2,b_std=1)", Parameterization::Ntk).unwrap().layers;
        let e = err(&p, &LoadOptions { layers: Some(layers), ..Default::default() });
        assert!(e.contains("0.weight") && e.contains("[4, 3]") && e.contains("[5, 3]"), "{e}");
        // Inconsistent shapes between layers (input dim from layer 0 is 3, layer 2 expects 4 inputs but gets 5).
        let w2bad: Vec<f32> = vec![0.0; 10];
        let mut v = vec![];
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (a, b, c) = (bytes(&w.0), bytes(&w.1), bytes(&w2bad));
        v.push(("0.weight", safetensors::tensor::TensorView::new(Dtype::F32, vec![4, 3], &a).unwrap()));
        v.push(("0.bias", safetensors::tensor::TensorView::new(Dtype::F32, vec![4], &b).unwrap()));
        v.push(("2.weight", safetensors::tensor::TensorView::new(Dtype::F32, vec![2, 5], &c).unwrap()));
        let p2 = write("shape.safetensors", &safetensors::serialize(v, &None).unwrap());
        let e = err(&p2, &relu);
        assert!(e.contains("2.weight") && e.contains("[2, 5]") && e.contains("[2, 4]"), "{e}");
        // Bias in the file but not in the architecture, and the reverse.
        let no_bias = Architecture::parse("dense(4),relu,dense(2,b_std=1)", Parameterization::Ntk).unwrap().layers;
        let e = err(&p, &LoadOptions { layers: Some(no_bias), ..Default::default() });
        assert!(e.contains("0.bias") && e.contains("b_std"), "{e}");
        let n = net("dense(4,b_std=0.1),relu,dense(2)", Parameterization::Ntk, 3, 1.0, 0);
        let pn = d.join("n.safetensors");
        save_mlp(&n, &pn, Precision::F64).unwrap();
        let with_bias =
            Architecture::parse("dense(4,b_std=0.1),relu,dense(2,b_std=1)", Parameterization::Ntk).unwrap().layers;
        let e = err(&pn, &LoadOptions { layers: Some(with_bias), ..Default::default() });
        assert!(e.contains("missing tensor `2.bias`"), "{e}");
        // Missing tensor: a saved net read with a deeper architecture.
        let deeper = Architecture::parse("dense(4,b_std=0.1),relu,dense(2),relu,dense(1)", Parameterization::Ntk)
            .unwrap()
            .layers;
        let e = err(&pn, &LoadOptions { layers: Some(deeper), ..Default::default() });
        assert!(e.contains("missing tensor `4.weight`"), "{e}");
        // Extra tensor: the same file read with a shallower architecture.
        let e = err(
            &pn,
            &LoadOptions {
                layers: Some(Architecture::parse("dense(4,b_std=0.1)", Parameterization::Ntk).unwrap().layers),
                ..Default::default()
            },
        );
        assert!(e.contains("unexpected tensor(s) `2.weight`"), "{e}");
        // Foreign names.
        let junk = [("fc1.weight", safetensors::tensor::TensorView::new(Dtype::F32, vec![4, 3], &a).unwrap())];
        let pj = write("names.safetensors", &safetensors::serialize(junk, &None).unwrap());
        assert!(err(&pj, &relu).contains("unexpected tensor `fc1.weight`"));
        // Non-finite value.
        let mut w0 = w.0.clone();
        w0[4] = f32::NAN;
        let pnan = write("nan.safetensors", &torch_file("", &w0, &w.1, &w.2, &w.3));
        let e = err(&pnan, &relu);
        assert!(e.contains("0.weight") && e.contains("non-finite"), "{e}");
        // Corrupt and truncated files, missing file.
        let e = err(&write("junk.safetensors", b"this is not a model"), &relu);
        assert!(e.contains("junk.safetensors") && e.contains("safetensors"), "{e}");
        let full = std::fs::read(&pn).unwrap();
        let e = err(&write("trunc.safetensors", &full[..full.len() - 5]), &relu);
        assert!(e.contains("trunc.safetensors") && e.contains("truncated"), "{e}");
        let e = err(&write("junk.npz", b"PK\x03\x04 broken zip"), &relu);
        assert!(e.contains("junk.npz"), "{e}");
        let e = err(&d.join("absent.safetensors"), &relu);
        assert!(e.contains("absent.safetensors") && e.contains("cannot read"), "{e}");
        // Bad metadata values.
        let mut m: BTreeMap<String, String> = metadata(&n).into_iter().collect();
        m.insert(META_ALPHA.to_string(), "lots".to_string());
        let e = mlp_from_tensors(effective_tensors(&n), &m, &LoadOptions::default()).unwrap_err().to_string();
        assert!(e.contains("ntklab.alpha") && e.contains("lots"), "{e}");
        // Saving to an unknown extension.
        assert!(save_mlp(&n, &d.join("m.pt"), Precision::F64).unwrap_err().to_string().contains("m.pt"));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn multiplier_zero_layers_roundtrip() {
        // b_std = 0 gives b_mult = 0 under 'ntk': the stored bias is 0 and the raw one comes back as 0.
        let n = net("dense(4,b_std=0),relu,dense(1,b_std=0.5)", Parameterization::Ntk, 2, 1.0, 3);
        let back = mlp_from_safetensors_bytes(&safetensors_bytes(&n, Precision::F64), &LoadOptions::default()).unwrap();
        let x = gaussian(3, 2, 1);
        assert!(max_rel(&back.forward(x.as_ref()).unwrap(), &n.forward(x.as_ref()).unwrap()) < 1e-14);
        assert!(back.bias(0).unwrap().iter().all(|b| *b == 0.0));
    }

    #[test]
    fn dag_raw_copy_is_used_only_where_it_matches_the_stored_weights() {
        let arch =
            "node(h,dense(5,b_std=0.2),input),node(a,tanh,h),node(s,dense(5),input),node(t,sum,a,s),node(o,dense(1),t)";
        let n = net(arch, Parameterization::Ntk, 3, 1.0, 4);
        let meta: BTreeMap<String, String> = metadata(&n).into_iter().collect();
        let mut tensors = stored_tensors(&n, Precision::F64);
        assert!(tensors.iter().any(|t| t.0 == RAW_TENSOR));
        let back = mlp_from_tensors(tensors.clone(), &meta, &LoadOptions::default()).unwrap();
        assert_eq!(back.params(), n.params());
        // An edited effective weight wins over the stale raw copy.
        let k = tensors.iter().position(|t| t.0 == "h.weight").unwrap();
        tensors[k].1.data[2] *= 1.5;
        let edited = mlp_from_tensors(tensors.clone(), &meta, &LoadOptions::default()).unwrap();
        let (w_off, m) = (edited.dense[0].w_off, edited.dense[0].w_mult);
        assert!((edited.params()[w_off + 2] - 1.5 * n.params()[w_off + 2]).abs() < 1e-12 * m.recip());
        assert_eq!(edited.params()[w_off + 3], n.params()[w_off + 3]);
        // A raw copy of the wrong length is an error naming it.
        let r = tensors.iter().position(|t| t.0 == RAW_TENSOR).unwrap();
        tensors[r].1 = Array { shape: vec![3], data: vec![0.0; 3] };
        let e = mlp_from_tensors(tensors, &meta, &LoadOptions::default()).unwrap_err().to_string();
        assert!(e.contains(RAW_TENSOR), "{e}");
        // Chains stay PyTorch-loadable: no extra tensor.
        let chain = net("dense(4),relu,dense(1)", Parameterization::Ntk, 3, 1.0, 1);
        assert!(stored_tensors(&chain, Precision::F64).iter().all(|t| t.0 != RAW_TENSOR));
    }

    #[test]
    fn split_name_rules() {
        assert_eq!(split_name("0.weight"), Some(("", 0, true)));
        assert_eq!(split_name("model.12.bias"), Some(("model.", 12, false)));
        assert_eq!(split_name("fc1.weight"), None);
        assert_eq!(split_name("weight"), None);
        assert_eq!(split_name("0.running_mean"), None);
    }
    /// A safetensors file of `tensors` in f64 without ntklab's metadata (as PyTorch writes one).
    fn write_foreign(tensors: &[(String, Array)], path: &Path) {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, a) in tensors {
            let start = data.len();
            encode(a, Precision::F64, &mut data);
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": "F64", "shape": a.shape, "data_offsets": [start, data.len()]}),
            );
        }
        let mut head = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
        head.resize(head.len().div_ceil(8) * 8, b' ');
        let mut out = (head.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&head);
        out.extend_from_slice(&data);
        std::fs::write(path, out).unwrap();
    }

    #[test]
    fn dense_layers_on_images_are_stored_as_one_by_one_convolutions() {
        // neural-tangents' Dense on N x H x W x C maps the channels at every position: PyTorch's Conv2d(C, k, 1),
        // weight (k, C, 1, 1). Round trip in both formats; a 2-d tensor for it (a Linear, as if flatten were
        // missing) is refused with the hint.
        use crate::kernel::spatial::Shape;
        let d = tmpdir("dense-img");
        let shape = Shape::image(&[3, 4], 2);
        let spec = "conv(3,3x3,padding=same,b_std=0.2),relu,dense(4,w_std=1.2,b_std=0.1),relu,global_avg_pool,dense(1)";
        let arch = Architecture::parse(spec, Parameterization::Ntk).unwrap();
        let n = Mlp::init_for(&arch, &shape, 1.0, 5).unwrap();
        let t = effective_tensors(&n);
        assert_eq!(t.iter().find(|t| t.0 == "2.weight").unwrap().1.shape, [4, 3, 1, 1]);
        let x = gaussian(3, shape.size(), 2);
        let f = n.forward(x.as_ref()).unwrap();
        for file in ["c.safetensors", "c.npz"] {
            let path = d.join(file);
            save_mlp(&n, &path, Precision::F64).unwrap();
            let back = load_mlp(&path, &LoadOptions::default()).unwrap();
            assert!(max_rel(&back.forward(x.as_ref()).unwrap(), &f) < 1e-13, "{file}");
        }
        let flat: Vec<(String, Array)> = t
            .into_iter()
            .map(|(name, mut a)| {
                if name == "2.weight" {
                    a.shape = vec![4, 3];
                }
                (name, a)
            })
            .collect();
        let path = d.join("linear.safetensors");
        write_foreign(&flat, &path);
        let opts = LoadOptions {
            layers: Some(arch.layers.clone()),
            parameterization: Some(Parameterization::Ntk),
            input_shape: Some(shape),
            ..Default::default()
        };
        let e = load_mlp(&path, &opts).unwrap_err().to_string();
        assert!(e.contains("`2.weight`") && e.contains("put flatten"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn conv_models_round_trip_with_pytorch_layouts() {
        // Conv weights are stored as (C_out, C_in, kh, kw) and a dense layer after flatten has its columns in
        // PyTorch's NCHW order: checked on the raw tensors (independent of the loader), then by a round trip in
        // both formats, a chain and a residual conv net, f64 (raw params to rounding) and with the input shape kept.
        use crate::kernel::spatial::Shape;
        let d = tmpdir("conv");
        let shape = Shape::image(&[4, 3], 2);
        let chain = "conv(3,3x3,padding=same,w_std=1.3,b_std=0.2),tanh,conv(2,2x2),relu,flatten,dense(2,b_std=0.1)";
        let n = Mlp::init_for(&Architecture::parse(chain, Parameterization::Ntk).unwrap(), &shape, 1.0, 3).unwrap();
        let t = effective_tensors(&n);
        let w0 = &t.iter().find(|t| t.0 == "0.weight").unwrap().1;
        assert_eq!(w0.shape, [3, 2, 3, 3]);
        // (co=1, ci=0, kh=2, kw=1) is raw index ((1 * 2 + 0) * 3 + 2) * 3 + 1.
        assert_eq!(w0.data[(2 * 3 + 2) * 3 + 1], n.dense[0].w_mult * n.params()[(2 * 3 + 2) * 3 + 1]);
        // The conv(2,2x2) output is 3 x 2 positions x 2 channels; the readout column for (p = 4, c = 1) is
        // ntklab's 4 * 2 + 1 and PyTorch's 1 * 6 + 4.
        let w5 = &t.iter().find(|t| t.0 == "5.weight").unwrap().1;
        let l = n.dense.iter().position(|x| x.name == "5").unwrap();
        assert_eq!(w5.data[12 + 6 + 4], n.dense[l].w_mult * n.weight(l)[(1, 9)]);
        let x = gaussian(3, shape.size(), 1);
        let f = n.forward(x.as_ref()).unwrap();
        let res = "conv(3,3x3,padding=same,b_std=0.2),residual(relu,conv(3,3x3,padding=circular)),avg_pool(2x2),\
                   flatten,dense(2)";
        let r = Mlp::init_for(&Architecture::parse(res, Parameterization::Standard).unwrap(), &shape, 1.0, 4).unwrap();
        let fr = r.forward(x.as_ref()).unwrap();
        for file in ["c.safetensors", "c.npz"] {
            for (m, fm) in [(&n, &f), (&r, &fr)] {
                let path = d.join(file);
                save_mlp(m, &path, Precision::F64).unwrap();
                let back = load_mlp(&path, &LoadOptions::default()).unwrap();
                assert_eq!(back.input_shape, shape, "{file}");
                assert!(max_rel(&back.forward(x.as_ref()).unwrap(), fm) < 1e-13, "{file}");
                let e = m
                    .params()
                    .iter()
                    .zip(back.params())
                    .map(|(a, b)| (a - b).abs() / a.abs().max(1e-300))
                    .fold(0.0, f64::max);
                assert!(e < 1e-15, "{file}: raw params differ by {e:e}");
            }
        }
        // Without metadata the input shape must be given; with it, the file loads as a PyTorch model.
        let path = d.join("foreign.safetensors");
        write_foreign(&effective_tensors(&n), &path);
        let layers = Some(Architecture::parse(chain, Parameterization::Ntk).unwrap().layers);
        let opts = LoadOptions { layers, parameterization: Some(Parameterization::Ntk), ..Default::default() };
        let e = load_mlp(&path, &opts).unwrap_err().to_string();
        assert!(e.contains("input shape") && e.contains("--input-shape"), "{e}");
        let back = load_mlp(&path, &LoadOptions { input_shape: Some(shape.clone()), ..opts.clone() }).unwrap();
        assert!(max_rel(&back.forward(x.as_ref()).unwrap(), &f) < 1e-13);
        // A wrong image shape gives other conv output sizes: the readout's tensor no longer fits, named.
        let e = load_mlp(&path, &LoadOptions { input_shape: Some(Shape::image(&[5, 3], 2)), ..opts }).unwrap_err();
        assert!(e.to_string().contains("`5.weight`"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }
}
