//! Array files: .npy, .npz and .csv readers, .npy/.npz writers. Writes go to a temporary file in the
//! destination folder and are renamed into place, so a failed write never leaves a partial file.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use faer::{Mat, MatRef};
use npyz::WriterBuilder;

use crate::{Error, Result};

/// A dense n-dimensional array of f64 in row-major (C) order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Dimensions, slowest first.
    pub shape: Vec<usize>,
    /// Values in C order; `data.len() == shape.iter().product()`.
    pub data: Vec<f64>,
}

impl Array {
    /// A 2-D view as a faer matrix (1-D arrays become N x 1 columns); errors for other ranks.
    pub fn to_mat(&self, what: &str) -> Result<Mat<f64>> {
        let (r, c) = match self.shape.as_slice() {
            [n] => (*n, 1),
            [n, d] => (*n, *d),
            s => return Err(Error::Shape(format!("{what} must be 1-D or 2-D, got shape {s:?}"))),
        };
        // Row-major data to column-major storage in blocks of 32 columns, so each row's values are read
        // contiguously and the 32 destination columns stay in cache.
        let mut m = Mat::<f64>::zeros(r, c);
        let cs = m.col_stride() as usize;
        let out = m.as_mut();
        // SAFETY: the view covers the whole r x c matrix, column-major with column stride cs >= r.
        let dst =
            unsafe { std::slice::from_raw_parts_mut(out.as_ptr_mut(), if c == 0 { 0 } else { cs * (c - 1) + r }) };
        for j0 in (0..c).step_by(32) {
            let j1 = (j0 + 32).min(c);
            for i in 0..r {
                let row = &self.data[i * c + j0..i * c + j1];
                for (jj, &v) in row.iter().enumerate() {
                    dst[(j0 + jj) * cs + i] = v;
                }
            }
        }
        Ok(m)
    }

    /// Row-major array from a matrix.
    pub fn from_mat(m: MatRef<'_, f64>) -> Array {
        let (r, c) = (m.nrows(), m.ncols());
        let mut data = Vec::with_capacity(r * c);
        for i in 0..r {
            for j in 0..c {
                data.push(m[(i, j)]);
            }
        }
        Array { shape: vec![r, c], data }
    }
}

fn npy_to_array<R: Read>(npy: npyz::NpyFile<R>, path: &Path) -> Result<Array> {
    let shape: Vec<usize> = npy.shape().iter().map(|&s| s as usize).collect();
    let order = npy.order();
    let descr = match npy.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => return Err(Error::file(path, format!("unsupported structured dtype {other:?}"))),
    };
    let bad = |e: std::io::Error| Error::file(path, format!("corrupt .npy data: {e}"));
    let kind = &descr[1..];
    let data: Vec<f64> = match kind {
        "f8" => npy.into_vec::<f64>().map_err(bad)?,
        "f4" => npy.into_vec::<f32>().map_err(bad)?.into_iter().map(f64::from).collect(),
        "i8" => npy.into_vec::<i64>().map_err(bad)?.into_iter().map(|v| v as f64).collect(),
        "i4" => npy.into_vec::<i32>().map_err(bad)?.into_iter().map(f64::from).collect(),
        "i2" => npy.into_vec::<i16>().map_err(bad)?.into_iter().map(f64::from).collect(),
        "i1" => npy.into_vec::<i8>().map_err(bad)?.into_iter().map(f64::from).collect(),
        "u8" => npy.into_vec::<u64>().map_err(bad)?.into_iter().map(|v| v as f64).collect(),
        "u4" => npy.into_vec::<u32>().map_err(bad)?.into_iter().map(f64::from).collect(),
        "u1" => npy.into_vec::<u8>().map_err(bad)?.into_iter().map(f64::from).collect(),
        "b1" => npy.into_vec::<bool>().map_err(bad)?.into_iter().map(|b| if b { 1.0 } else { 0.0 }).collect(),
        _ => return Err(Error::file(path, format!("unsupported dtype `{descr}` (expected float or integer)"))),
    };
    let n: usize = shape.iter().product();
    if data.len() != n {
        return Err(Error::file(path, format!("holds {} values but its header says shape {shape:?}", data.len())));
    }
    let data = match order {
        npyz::Order::C => data,
        npyz::Order::Fortran => fortran_to_c(&data, &shape),
    };
    Ok(Array { shape, data })
}

fn fortran_to_c(data: &[f64], shape: &[usize]) -> Vec<f64> {
    let n = data.len();
    let rank = shape.len();
    let mut out = vec![0.0; n];
    let mut idx = vec![0usize; rank];
    for (k, o) in out.iter_mut().enumerate() {
        // k is the C-order linear index; decompose into multi-index, recompose in Fortran order.
        let mut rem = k;
        for ax in (0..rank).rev() {
            idx[ax] = rem % shape[ax];
            rem /= shape[ax];
        }
        let mut f = 0usize;
        for ax in (0..rank).rev() {
            f = f * shape[ax] + idx[ax];
        }
        *o = data[f];
    }
    out
}

/// Err unless `path` is a regular file (after following links): a device such as /dev/zero or a FIFO has no size
/// to bound a read by.
pub fn check_regular(path: &Path) -> Result<()> {
    let m = std::fs::metadata(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    if !m.is_file() {
        return Err(Error::file(path, "is not a regular file (a device, FIFO or folder cannot be read as data)"));
    }
    Ok(())
}

/// Read a .npy file (any float/integer dtype, C or Fortran order) as f64.
pub fn read_npy(path: &Path) -> Result<Array> {
    if let Some(a) = read_npy_plain_float(path)? {
        return Ok(a);
    }
    read_npy_general(path)
}

/// [`read_npy`] through npyz, for every dtype.
fn read_npy_general(path: &Path) -> Result<Array> {
    check_regular(path)?;
    let f = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let npy =
        npyz::NpyFile::new(BufReader::new(f)).map_err(|e| Error::file(path, format!("not a valid .npy file: {e}")))?;
    npy_to_array(npy, path)
}

/// Fast path of [`read_npy`] for the common case, a little-endian f8/f4 array: the header is parsed here and the
/// data are decoded straight from the file's bytes. Returns None for anything else (other dtypes, version-3
/// headers, odd layouts), which the general reader then handles or rejects with its own message.
fn read_npy_plain_float(path: &Path) -> Result<Option<Array>> {
    check_regular(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Ok(None);
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => return Ok(None),
    };
    let Some(header) = bytes.get(start..start + hlen).and_then(|h| std::str::from_utf8(h).ok()) else {
        return Ok(None);
    };
    let header: String = header.chars().filter(|c| !c.is_whitespace()).collect();
    let elem = if header.contains("'descr':'<f8'") {
        8
    } else if header.contains("'descr':'<f4'") {
        4
    } else {
        return Ok(None);
    };
    let fortran = if header.contains("'fortran_order':False") {
        false
    } else if header.contains("'fortran_order':True") {
        true
    } else {
        return Ok(None);
    };
    let Some(shape_txt) = header.split("'shape':(").nth(1).and_then(|r| r.split(')').next()) else {
        return Ok(None);
    };
    let mut shape = Vec::new();
    for part in shape_txt.split(',').filter(|p| !p.is_empty()) {
        match part.parse::<usize>() {
            Ok(v) => shape.push(v),
            Err(_) => return Ok(None),
        }
    }
    let n: usize = shape.iter().product();
    let data_bytes = &bytes[start + hlen..];
    if data_bytes.len() != n * elem {
        return Err(Error::file(
            path,
            format!("holds {} data bytes but its header says shape {shape:?} of {elem}-byte floats", data_bytes.len()),
        ));
    }
    let data: Vec<f64> = if elem == 8 {
        data_bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
    } else {
        data_bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64).collect()
    };
    let data = if fortran { fortran_to_c(&data, &shape) } else { data };
    Ok(Some(Array { shape, data }))
}

/// Read every array of a .npz archive, in archive order.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Array)>> {
    let mut ar =
        npyz::npz::NpzArchive::open(path).map_err(|e| Error::file(path, format!("not a valid .npz archive: {e}")))?;
    let names: Vec<String> = ar.array_names().map(|s| s.to_string()).collect();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let npy = ar
            .by_name(&name)
            .map_err(|e| Error::file(path, format!("array `{name}`: {e}")))?
            .ok_or_else(|| Error::file(path, format!("array `{name}` listed but missing")))?;
        let a = npy_to_array(npy, path).map_err(|e| Error::file(path, format!("array `{name}`: {e}")))?;
        out.push((name, a));
    }
    Ok(out)
}

/// Read a numeric CSV: comma-separated, one row per line; a first line that is not all numbers is a header.
pub fn read_csv(path: &Path) -> Result<Array> {
    check_regular(path)?;
    let f = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).trim(csv::Trim::All).from_reader(BufReader::new(f));
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for (lineno, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| Error::file(path, format!("line {}: {e}", lineno + 1)))?;
        if rec.iter().all(|s| s.is_empty()) {
            continue;
        }
        let parsed: std::result::Result<Vec<f64>, _> = rec.iter().map(|s| s.parse::<f64>()).collect();
        match parsed {
            Ok(v) => rows.push(v),
            Err(_) if lineno == 0 => continue, // header
            Err(_) => {
                let bad = rec.iter().find(|s| s.parse::<f64>().is_err()).unwrap_or("");
                return Err(Error::file(path, format!("line {}: `{bad}` is not a number", lineno + 1)));
            }
        }
    }
    if rows.is_empty() {
        return Err(Error::file(path, "no numeric rows"));
    }
    let d = rows[0].len();
    if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != d) {
        return Err(Error::file(path, format!("row {} has {} columns but the first row has {d}", i + 1, r.len())));
    }
    let n = rows.len();
    Ok(Array { shape: vec![n, d], data: rows.into_iter().flatten().collect() })
}

/// Read a data matrix (N x d) from .npy or .csv, chosen by extension; 1-D arrays become N x 1.
pub fn read_matrix(path: &Path) -> Result<Mat<f64>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_lowercase();
    let arr = match ext.as_str() {
        "npy" => read_npy(path)?,
        "csv" | "txt" => read_csv(path)?,
        _ => return Err(Error::file(path, "unknown data format (expected .npy or .csv)")),
    };
    arr.to_mat("data").map_err(|e| Error::file(path, e))
}

/// Examples from a file: N x d feature rows (.npy of rank 2, .csv), or N x W x C / N x H x W x C / N x D x H x W x C
/// examples with spatial axes (.npy), returned as N rows of their values in C order (NHWC flattened) with the
/// example shape (None for feature rows).
pub fn read_examples(path: &Path) -> Result<(Mat<f64>, Option<crate::kernel::spatial::Shape>)> {
    let is_npy = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if !is_npy {
        return Ok((read_matrix(path)?, None));
    }
    let arr = read_npy(path)?;
    match arr.shape.len() {
        0..=2 => Ok((arr.to_mat("data").map_err(|e| Error::file(path, e))?, None)),
        3..=5 => {
            let n = arr.shape[0];
            let rest: usize = arr.shape[1..].iter().product();
            if n == 0 || rest == 0 {
                return Err(Error::file(path, format!("holds no values (shape {:?})", arr.shape)));
            }
            let k = arr.shape.len();
            if let Some(i) = arr.data.iter().position(|v| !v.is_finite()) {
                return Err(Error::file(
                    path,
                    format!("non-finite value {} in example {}, flat index {}", arr.data[i], i / rest, i % rest),
                ));
            }
            let shape = crate::kernel::spatial::Shape::image(&arr.shape[1..k - 1], arr.shape[k - 1]);
            Ok((Mat::from_fn(n, rest, |i, j| arr.data[i * rest + j]), Some(shape)))
        }
        r => Err(Error::file(
            path,
            format!("has rank {r}; expected N x d features, or N x W x C / N x H x W x C images"),
        )),
    }
}

/// A temporary sibling path for atomic writes.
fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "out".into());
    let tmp = format!(".{name}.tmp-{}", std::process::id());
    path.with_file_name(tmp)
}

/// Write a file atomically: `fill` writes into a temporary sibling which is renamed to `path` on success
/// and removed on failure, so `path` never holds a partial file. There is no fsync: a crash of the process
/// (or a failed write) leaves no output, but the data reach the disk when the OS flushes its cache (flushing
/// 256 MB of kernel matrices synchronously took longer than computing them).
pub fn write_atomic(path: &Path, fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> Result<()> {
    let tmp = temp_sibling(path);
    let res = (|| -> std::io::Result<()> {
        let f = File::create(&tmp)?;
        let mut w = BufWriter::new(f);
        fill(&mut w)?;
        w.flush()?;
        Ok(())
    })();
    match res {
        Ok(()) => std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::file(path, format!("cannot write: {e}"))
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(Error::file(path, format!("cannot write: {e}")))
        }
    }
}

/// Element types written to .npy.
pub trait NpyElem: npyz::Serialize + npyz::AutoSerialize + Copy + std::fmt::Display {
    /// numpy dtype descriptor, e.g. `<f8`.
    const DESCR: &'static str;
    /// Whether the value is finite.
    fn finite(self) -> bool;
    /// Append the little-endian bytes of `v`.
    fn put(v: Self, out: &mut Vec<u8>);
    /// The in-memory bytes of a slice (equal to its little-endian encoding on little-endian hosts).
    fn le_bytes(s: &[Self]) -> &[u8];
}
impl NpyElem for f64 {
    #[inline]
    fn finite(self) -> bool {
        self.is_finite()
    }
    #[inline]
    fn le_bytes(s: &[Self]) -> &[u8] {
        // SAFETY: f64 has no padding and every byte pattern is a valid u8; the length is exact.
        unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
    }
    const DESCR: &'static str = "<f8";
    #[inline]
    fn put(v: Self, out: &mut Vec<u8>) {
        out.extend_from_slice(&v.to_le_bytes())
    }
}
impl NpyElem for f32 {
    #[inline]
    fn finite(self) -> bool {
        self.is_finite()
    }
    #[inline]
    fn le_bytes(s: &[Self]) -> &[u8] {
        // SAFETY: f32 has no padding and every byte pattern is a valid u8; the length is exact.
        unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
    }
    const DESCR: &'static str = "<f4";
    #[inline]
    fn put(v: Self, out: &mut Vec<u8>) {
        out.extend_from_slice(&v.to_le_bytes())
    }
}

fn write_npy_to<W: Write, T: NpyElem>(w: W, shape: &[usize], values: impl Iterator<Item = T>) -> std::io::Result<()> {
    let shape: Vec<u64> = shape.iter().map(|&s| s as u64).collect();
    let mut wr = npyz::WriteOptions::<T>::new().default_dtype().shape(&shape).writer(w).begin_nd()?;
    for v in values {
        wr.push(&v)?;
    }
    wr.finish()
}

/// An array of any shape of `T` (f64 or f32, C order) as .npy into `w`, for [`write_all_atomic`]; with
/// `finite_as`, a non-finite value is an error naming that array and the value's index instead.
pub fn npy_array_into<T: NpyElem>(
    w: &mut impl Write,
    shape: &[usize],
    values: &[T],
    finite_as: Option<&str>,
) -> std::io::Result<()> {
    assert_eq!(shape.iter().product::<usize>(), values.len(), "the values fill the shape");
    if let Some(what) = finite_as {
        if let Some(at) = values.iter().position(|v| !v.finite()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{what} value {at} (C order, shape {shape:?}) is {}", values[at]),
            ));
        }
    }
    write_npy_to(w, shape, values.iter().copied())
}

/// A rows x cols `.npy` of `T` (f64 or f32) written a block of rows at a time into a temporary sibling of its
/// path, and renamed into place by [`NpyRowWriter::commit_all`] once every row is in (dropped unfinished, it
/// removes its temporary): outputs larger than memory, never a partial file.
pub struct NpyRowWriter<T: NpyElem = f64> {
    elem: std::marker::PhantomData<T>,
    path: PathBuf,
    tmp: PathBuf,
    w: Option<BufWriter<File>>,
    rows: usize,
    cols: usize,
    written: usize,
    what: Option<String>,
}

impl<T: NpyElem> NpyRowWriter<T> {
    /// Starts `path` (rows x cols). With `check = Some(name)`, a non-finite value is an error naming `name`
    /// and the entry.
    pub fn create(path: &Path, rows: usize, cols: usize, check: Option<&str>) -> Result<NpyRowWriter<T>> {
        let tmp = temp_sibling(path);
        let f = File::create(&tmp).map_err(|e| Error::file(path, e))?;
        let mut w = BufWriter::new(f);
        w.write_all(&npy_header_2d(T::DESCR, rows, cols, false)).map_err(|e| Error::file(path, e))?;
        Ok(NpyRowWriter {
            elem: std::marker::PhantomData,
            path: path.to_path_buf(),
            tmp,
            w: Some(w),
            rows,
            cols,
            written: 0,
            what: check.map(str::to_string),
        })
    }

    /// Appends the rows of `block` (cols must match).
    pub fn push(&mut self, block: faer::MatRef<'_, T>) -> Result<()> {
        if block.ncols() != self.cols || self.written + block.nrows() > self.rows {
            return Err(Error::Shape(format!(
                "{}: a block of {} x {} after {} of {} rows of {} columns",
                self.path.display(),
                block.nrows(),
                block.ncols(),
                self.written,
                self.rows,
                self.cols
            )));
        }
        let w = self.w.as_mut().ok_or_else(|| Error::file(&self.path, "already finished"))?;
        let mut buf = Vec::with_capacity(self.cols * 8);
        for i in 0..block.nrows() {
            buf.clear();
            for j in 0..self.cols {
                let v = block[(i, j)];
                if let (Some(name), false) = (&self.what, v.finite()) {
                    return Err(Error::Numerical(format!("{name}[{}, {j}] is {v}", self.written + i)));
                }
                T::put(v, &mut buf);
            }
            w.write_all(&buf).map_err(|e| Error::file(&self.path, e))?;
        }
        self.written += block.nrows();
        Ok(())
    }

    /// Flushes every writer and renames them all into place, or none (each must hold all its rows).
    pub fn commit_all(mut writers: Vec<NpyRowWriter<T>>) -> Result<()> {
        for w in &mut writers {
            if w.written != w.rows {
                return Err(Error::Shape(format!("{}: {} of {} rows written", w.path.display(), w.written, w.rows)));
            }
            let mut bw = w.w.take().ok_or_else(|| Error::file(&w.path, "already finished"))?;
            bw.flush().map_err(|e| Error::file(&w.path, e))?;
        }
        for w in &mut writers {
            std::fs::rename(&w.tmp, &w.path).map_err(|e| Error::file(&w.path, e))?;
            w.tmp = PathBuf::new();
        }
        Ok(())
    }
}

impl<T: NpyElem> Drop for NpyRowWriter<T> {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            self.w = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The .npy v1.0 preamble for a 2-D array (header padded so data starts on a 64-byte boundary).
fn npy_header_2d(descr: &str, rows: usize, cols: usize, fortran: bool) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': ({rows}, {cols}), }}",
        if fortran { "True" } else { "False" }
    );
    let unpadded = 10 + dict.len() + 1;
    let total = unpadded.div_ceil(64) * 64;
    let mut h = Vec::with_capacity(total);
    h.extend_from_slice(b"\x93NUMPY\x01\x00");
    h.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.resize(total - 1, b' ');
    h.push(b'\n');
    h
}

/// Write a matrix (rows x cols) as .npy, atomically. The data are stored column by column with
/// `fortran_order: True` (faer's native layout, so no transpose pass); `np.load` returns the same array.
pub fn write_npy_mat<T: NpyElem>(path: &Path, m: MatRef<'_, T>) -> Result<()> {
    write_atomic(path, |w| npy_mat_into(w, m, None))
}

/// Write several files as one commit: each is written to a temporary sibling; only when every one is complete
/// are they renamed into place, and on any failure every temporary is removed (no partial output).
#[allow(clippy::type_complexity)]
pub fn write_all_atomic(
    files: Vec<(&Path, Box<dyn FnOnce(&mut BufWriter<File>) -> std::io::Result<()> + '_>)>,
) -> Result<()> {
    let mut temps: Vec<(PathBuf, &Path)> = Vec::new();
    let cleanup = |temps: &[(PathBuf, &Path)]| {
        for (t, _) in temps {
            let _ = std::fs::remove_file(t);
        }
    };
    for (path, fill) in files {
        let tmp = temp_sibling(path);
        let res = (|| -> std::io::Result<()> {
            let mut w = BufWriter::new(File::create(&tmp)?);
            fill(&mut w)?;
            w.flush()
        })();
        temps.push((tmp, path));
        if let Err(e) = res {
            cleanup(&temps);
            return Err(Error::file(path, format!("cannot write: {e}")));
        }
    }
    for (i, (tmp, path)) in temps.iter().enumerate() {
        if let Err(e) = std::fs::rename(tmp, path) {
            cleanup(&temps[i..]);
            return Err(Error::file(path, format!("cannot write: {e}")));
        }
    }
    Ok(())
}

/// The .npy bytes of a matrix into `w`; with `finite_as = Some(name)`, stops with an error naming `name` and the
/// first non-finite entry instead (so a writer of several files can abort them all).
pub fn npy_mat_into<T: NpyElem>(w: &mut impl Write, m: MatRef<'_, T>, finite_as: Option<&str>) -> std::io::Result<()> {
    let (r, c) = (m.nrows(), m.ncols());
    {
        w.write_all(&npy_header_2d(T::DESCR, r, c, true))?;
        let mut buf = Vec::with_capacity(r * std::mem::size_of::<T>());
        for j in 0..c {
            let colj = m.col(j);
            if let Some(name) = finite_as {
                let bad = match colj.try_as_col_major() {
                    Some(sl) => sl.as_slice().iter().position(|v| !v.finite()),
                    None => (0..r).find(|&i| !m[(i, j)].finite()),
                };
                if let Some(i) = bad {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{name} has a non-finite value ({}) at row {i}, column {j}", m[(i, j)]),
                    ));
                }
            }
            match colj.try_as_col_major() {
                // Contiguous column: its bytes as they are (little-endian hosts).
                Some(sl) if cfg!(target_endian = "little") => w.write_all(T::le_bytes(sl.as_slice()))?,
                _ => {
                    buf.clear();
                    for i in 0..r {
                        T::put(m[(i, j)], &mut buf);
                    }
                    w.write_all(&buf)?;
                }
            }
        }
        Ok(())
    }
}

/// Write an f64 array as .npy, atomically.
pub fn write_npy(path: &Path, a: &Array) -> Result<()> {
    write_atomic(path, |w| write_npy_to(w, &a.shape, a.data.iter().copied()))
}

/// The .npy bytes of an array (any shape, f64), for writers that commit several files together.
pub fn npy_bytes(a: &Array) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    write_npy_to(&mut out, &a.shape, a.data.iter().copied())?;
    Ok(out)
}

/// Write named f64 arrays as an uncompressed .npz archive, atomically.
pub fn write_npz(path: &Path, arrays: &[(&str, &Array)]) -> Result<()> {
    write_atomic(path, |w| {
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut npz = npyz::npz::NpzWriter::new(&mut buf);
            for (name, a) in arrays {
                let shape: Vec<u64> = a.shape.iter().map(|&s| s as u64).collect();
                // Fixed time stamp (1980-01-01): the same arrays always give the same bytes.
                let opts = npyz::zip::write::FileOptions::default()
                    .compression_method(npyz::zip::CompressionMethod::Stored)
                    .last_modified_time(npyz::zip::DateTime::default())
                    .large_file(true);
                let mut wr = npz.array::<f64>(name, opts)?.default_dtype().shape(&shape).begin_nd()?;
                wr.extend(a.data.iter().copied())?;
                wr.finish()?;
            }
        }
        buf.rewind()?;
        w.write_all(buf.get_ref())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ntklab-io-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn fast_npy_reader_agrees_with_the_general_one() {
        let d = tmpdir("fastnpy");
        let m = Mat::from_fn(5, 3, |i, j| (i as f64 - 1.7) * 0.3 + j as f64 * 1e-3);
        let m32 = Mat::from_fn(5, 3, |i, j| m[(i, j)] as f32);
        let (pf, pc, p32) = (d.join("f.npy"), d.join("c.npy"), d.join("s.npy"));
        write_npy_mat(&pf, m.as_ref()).unwrap(); // Fortran order
        write_npy(&pc, &Array::from_mat(m.as_ref())).unwrap(); // C order
        write_npy_mat(&p32, m32.as_ref()).unwrap();
        for p in [&pf, &pc, &p32] {
            let fast = read_npy_plain_float(p).unwrap().expect("plain float file takes the fast path");
            let general = read_npy_general(p).unwrap();
            assert_eq!(fast.shape, general.shape);
            assert_eq!(fast.data, general.data);
            assert_eq!(read_matrix(p).unwrap().nrows(), 5);
        }
        // A truncated data section is an error naming the file, not a short matrix.
        let bytes = std::fs::read(&pf).unwrap();
        let cut = d.join("cut.npy");
        std::fs::write(&cut, &bytes[..bytes.len() - 8]).unwrap();
        let e = read_npy(&cut).unwrap_err().to_string();
        assert!(e.contains("cut.npy") && e.contains("shape"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn npy_roundtrip_and_fortran() {
        let d = tmpdir("npy");
        let m = Mat::from_fn(3, 4, |i, j| (i * 10 + j) as f64 + 0.5);
        let p = d.join("m.npy");
        write_npy_mat(&p, m.as_ref()).unwrap();
        let back = read_matrix(&p).unwrap();
        assert_eq!(back, m);
        // f32 output reads back as the rounded values.
        let m32 = Mat::from_fn(2, 2, |i, j| (i + 2 * j) as f32 * 0.1);
        let p32 = d.join("m32.npy");
        write_npy_mat(&p32, m32.as_ref()).unwrap();
        let b = read_matrix(&p32).unwrap();
        assert_eq!(b[(1, 1)], (3.0f32 * 0.1) as f64);
        // Fortran order: element (i, j) at i + rows * j.
        let data: Vec<f64> = (0..6).map(|v| v as f64).collect();
        assert_eq!(fortran_to_c(&data, &[2, 3]), vec![0.0, 2.0, 4.0, 1.0, 3.0, 5.0]);
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn npz_roundtrip() {
        let d = tmpdir("npz");
        let a = Array { shape: vec![2, 3], data: (0..6).map(|v| v as f64).collect() };
        let b = Array { shape: vec![4], data: vec![1.0, -2.0, 3.0, 4.5] };
        let p = d.join("w.npz");
        write_npz(&p, &[("0.weight", &a), ("0.bias", &b)]).unwrap();
        let back = read_npz(&p).unwrap();
        let first = std::fs::read(&p).unwrap();
        write_npz(&p, &[("0.weight", &a), ("0.bias", &b)]).unwrap();
        assert_eq!(first, std::fs::read(&p).unwrap(), "same arrays must give the same bytes");
        let get = |n: &str| back.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(get("0.weight"), a);
        assert_eq!(get("0.bias"), b);
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn csv_header_and_errors() {
        let d = tmpdir("csv");
        let p = d.join("a.csv");
        std::fs::write(&p, "x1,x2\n1,2\n3.5,-4\n").unwrap();
        let m = read_matrix(&p).unwrap();
        assert_eq!((m.nrows(), m.ncols()), (2, 2));
        assert_eq!(m[(1, 0)], 3.5);
        std::fs::write(&p, "1,2\n3,oops\n").unwrap();
        let e = read_matrix(&p).unwrap_err().to_string();
        assert!(e.contains("oops") && e.contains("line 2"), "{e}");
        std::fs::write(&p, "1,2\n3\n").unwrap();
        assert!(read_matrix(&p).is_err());
        let e = read_matrix(&d.join("missing.npy")).unwrap_err().to_string();
        assert!(e.contains("missing.npy"), "{e}");
        std::fs::write(d.join("junk.npy"), "not numpy").unwrap();
        assert!(read_matrix(&d.join("junk.npy")).is_err());
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let d = tmpdir("atomic");
        let p = d.join("out.npy");
        let r = write_atomic(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        });
        assert!(r.is_err());
        assert!(std::fs::read_dir(&d).unwrap().next().is_none(), "no file may remain");
        std::fs::remove_dir_all(&d).ok();
    }
}
