//! Readers for the standard image sets when a user has them on disk (ntklab never downloads):
//!
//! - MNIST (LeCun et al.): the idx files `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//!   `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte` (uncompressed; a dot before `idx` is accepted too) in one
//!   folder. Images 28 x 28 x 1, pixels / 255.
//! - CIFAR-10 (Krizhevsky 2009): the binary version's `data_batch_1.bin` .. `data_batch_5.bin` and
//!   `test_batch.bin`. Each record is a label byte and 3072 pixel bytes (the 1024 red, then green, then blue
//!   values of a 32 x 32 image, rows first); returned NHWC, 32 x 32 x 3, pixels / 255.
//!
//! Files are untrusted input: headers are checked against the file length before anything is allocated, labels
//! against the 10 classes. Targets are one-hot (10 columns); `n` training rows are drawn from the training files
//! and `n_test` from the test files, each by a seeded shuffle.

use std::path::{Path, PathBuf};

use faer::Mat;
use rand::seq::SliceRandom;

use super::synthetic::{derive_seed, rng};
use super::Dataset;
use crate::kernel::spatial::Shape;
use crate::{Error, Result};

/// An image set read from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum External {
    /// MNIST idx files.
    Mnist,
    /// CIFAR-10 binary batches.
    Cifar10,
}

impl External {
    /// Names accepted by [`External::parse`].
    pub const NAMES: &'static str = "mnist, cifar10";

    /// The set named `s`, or None.
    pub fn parse(s: &str) -> Option<External> {
        match s.trim().to_lowercase().replace('-', "").as_str() {
            "mnist" => Some(External::Mnist),
            "cifar10" => Some(External::Cifar10),
            _ => None,
        }
    }

    fn shape(&self) -> Shape {
        match self {
            External::Mnist => Shape::image(&[28, 28], 1),
            External::Cifar10 => Shape::image(&[32, 32], 3),
        }
    }
}

/// Raw images (one row of bytes per image, in the file's pixel order) and labels.
struct Raw {
    pixels: Vec<u8>,
    per_image: usize,
    labels: Vec<u8>,
}

/// The first `n` bytes of a file (fewer if it is shorter) and its length, without reading the rest.
fn head(path: &Path, n: usize) -> Result<(Vec<u8>, u64)> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
    let len = f.metadata().map_err(|e| Error::file(path, e))?.len();
    let mut buf = Vec::with_capacity(n);
    f.take(n as u64).read_to_end(&mut buf).map_err(|e| Error::file(path, e))?;
    if buf.starts_with(&[0x1f, 0x8b]) {
        return Err(Error::file(path, "is gzip-compressed: decompress it first (gunzip)"));
    }
    Ok((buf, len))
}

/// The whole file, once its length is known to be `expected` (checked before reading).
fn read(path: &Path, expected: u64) -> Result<Vec<u8>> {
    let (_, len) = head(path, 2)?;
    if len != expected {
        return Err(Error::file(path, format!("has {len} bytes, expected {expected}")));
    }
    crate::data::memory::check_alloc(len as usize, "the image file")?;
    std::fs::read(path).map_err(|e| Error::file(path, e))
}

fn find(dir: &Path, names: &[&str]) -> Result<PathBuf> {
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::file(dir, format!("holds none of {} (MNIST idx files, uncompressed)", names.join(", "))))
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads an idx file of unsigned bytes with `rank` dimensions: (dims, payload). The header is checked against the
/// file's length before the payload is read.
fn idx(path: &Path, rank: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let hl = 4 + 4 * rank;
    let (bytes, len) = head(path, hl)?;
    if bytes.len() < hl || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] as usize != rank {
        return Err(Error::file(path, format!("is not an idx file of unsigned bytes with {rank} dimensions")));
    }
    let dims: Vec<usize> = (0..rank).map(|k| be_u32(&bytes, 4 + 4 * k) as usize).collect();
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let data = len - hl as u64;
    if count.map(|c| c as u64) != Some(data) {
        return Err(Error::file(path, format!("declares dimensions {dims:?} but holds {data} bytes of data")));
    }
    let mut all = read(path, len)?;
    all.drain(..hl);
    Ok((dims, all))
}

fn mnist(dir: &Path, train: bool) -> Result<Raw> {
    let (img, lab) = if train { ("train-images", "train-labels") } else { ("t10k-images", "t10k-labels") };
    let ip = find(dir, &[&format!("{img}-idx3-ubyte"), &format!("{img}.idx3-ubyte")])?;
    let lp = find(dir, &[&format!("{lab}-idx1-ubyte"), &format!("{lab}.idx1-ubyte")])?;
    let (dims, pixels) = idx(&ip, 3)?;
    let (ldims, labels) = idx(&lp, 1)?;
    if dims[1] != 28 || dims[2] != 28 {
        return Err(Error::file(&ip, format!("holds {} x {} images, MNIST's are 28 x 28", dims[1], dims[2])));
    }
    if ldims[0] != dims[0] {
        return Err(Error::file(&lp, format!("holds {} labels for {} images", ldims[0], dims[0])));
    }
    Ok(Raw { pixels, per_image: 784, labels })
}

fn cifar10(dir: &Path, train: bool) -> Result<Raw> {
    let files: Vec<String> =
        if train { (1..=5).map(|k| format!("data_batch_{k}.bin")).collect() } else { vec!["test_batch.bin".into()] };
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for f in files {
        let p = dir.join(&f);
        if !p.is_file() {
            return Err(Error::file(&p, "not found (CIFAR-10 binary version: data_batch_1..5.bin, test_batch.bin)"));
        }
        let (_, len) = head(&p, 2)?;
        if len == 0 || len % 3073 != 0 || len > 3073 * 100_000 {
            return Err(Error::file(
                &p,
                format!("has {len} bytes, not a whole number of 3073-byte records (at most 10^5)"),
            ));
        }
        let b = read(&p, len)?;
        for rec in b.chunks_exact(3073) {
            labels.push(rec[0]);
            // Planes (c, h, w) to NHWC (h, w, c).
            pixels.extend((0..1024).flat_map(|q| (0..3).map(move |c| rec[1 + c * 1024 + q])));
        }
    }
    Ok(Raw { pixels, per_image: 3072, labels })
}

fn rows(raw: &Raw, take: &[usize], path: &Path) -> Result<(Mat<f64>, Mat<f64>)> {
    crate::data::memory::check_alloc(take.len() * (raw.per_image + 10) * 8, "the selected images")?;
    if let Some(bad) = take.iter().map(|&i| raw.labels[i]).find(|&l| l > 9) {
        return Err(Error::file(path, format!("holds the label {bad}, outside the 10 classes")));
    }
    let x = Mat::from_fn(take.len(), raw.per_image, |i, j| f64::from(raw.pixels[take[i] * raw.per_image + j]) / 255.0);
    let y = Mat::from_fn(take.len(), 10, |i, c| f64::from(u8::from(raw.labels[take[i]] as usize == c)));
    Ok((x, y))
}

fn pick(total: usize, n: usize, seed: u64, what: &str, path: &Path) -> Result<Vec<usize>> {
    if n > total {
        return Err(Error::file(path, format!("holds {total} {what} images, {n} were asked for")));
    }
    let mut order: Vec<usize> = (0..total).collect();
    order.shuffle(&mut rng(seed));
    order.truncate(n);
    Ok(order)
}

/// `n` training images (default: all) and `n_test` test images of set `set` from the folder `dir`.
pub fn load(set: External, dir: &Path, n: Option<usize>, n_test: usize, seed: u64) -> Result<Dataset> {
    let reader = |train| match set {
        External::Mnist => mnist(dir, train),
        External::Cifar10 => cifar10(dir, train),
    };
    let tr = reader(true)?;
    let n = n.unwrap_or(tr.labels.len());
    if n == 0 {
        return Err(Error::Config("n must be at least 1".into()));
    }
    let take = pick(tr.labels.len(), n, derive_seed(seed, 0), "training", dir)?;
    let (x, y) = rows(&tr, &take, dir)?;
    drop(tr);
    let mut ds = Dataset::new(x, y)?.with_shape(Some(set.shape()))?;
    if n_test > 0 {
        let te = reader(false)?;
        let take = pick(te.labels.len(), n_test, derive_seed(seed, 1), "test", dir)?;
        let (xt, yt) = rows(&te, &take, dir)?;
        ds = ds.with_test(xt, yt)?;
    }
    Ok(ds)
}

/// A real data set by name: a bundled one (`diabetes`, `digits`; `path` must be None) or one read from the
/// folder `path` (`mnist`, `cifar10`); `n` training rows (None: all not in the test set) and `n_test` test rows,
/// drawn by `seed`. For experiment configs (`data = "..."`, `data_path = "..."`).
pub fn load_real(name: &str, path: Option<&Path>, n: Option<usize>, n_test: usize, seed: u64) -> Result<Dataset> {
    if let Some(b) = super::Bundled::parse(name) {
        if path.is_some() {
            return Err(Error::Config(format!("data_path does not apply to the bundled set {name}")));
        }
        return super::bundled::load(b, n, n_test, seed);
    }
    let set = External::parse(name).ok_or_else(|| {
        Error::Config(format!(
            "unknown data set `{name}` (bundled: {}; from disk: {})",
            super::Bundled::NAMES,
            External::NAMES
        ))
    })?;
    let dir = path.ok_or_else(|| {
        Error::Config(format!("data_path: give the folder holding the {name} files (ntklab never downloads)"))
    })?;
    load(set, dir, n, n_test, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ntklab-ext-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn idx_file(dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b.extend(payload);
        b
    }

    #[test]
    fn mnist_idx_files_read_with_checks() {
        let d = tmp("mnist");
        // Three images whose pixel (r, c) = 10 r + c + k, labels 7, 0, 3; one test image.
        let img = |k: u8| (0..784u32).map(move |p| (((p / 28) * 10 + p % 28) as u8).wrapping_add(k));
        let px: Vec<u8> = (0..3).flat_map(img).collect();
        std::fs::write(d.join("train-images-idx3-ubyte"), idx_file(&[3, 28, 28], &px)).unwrap();
        std::fs::write(d.join("train-labels-idx1-ubyte"), idx_file(&[3], &[7, 0, 3])).unwrap();
        std::fs::write(d.join("t10k-images.idx3-ubyte"), idx_file(&[1, 28, 28], &px[..784])).unwrap();
        std::fs::write(d.join("t10k-labels.idx1-ubyte"), idx_file(&[1], &[7])).unwrap();
        let ds = load(External::Mnist, &d, None, 1, 5).unwrap();
        assert_eq!((ds.n_train(), ds.input_dim(), ds.output_dim()), (3, 784, 10));
        assert_eq!(ds.input_shape.as_ref().unwrap().compact(), "28x28x1");
        for i in 0..3 {
            let label = (0..10).find(|&c| ds.y[(i, c)] == 1.0).unwrap();
            let k = [7, 0, 3].iter().position(|&l| l == label).unwrap() as f64;
            assert_eq!(ds.x[(i, 28 * 2 + 5)], (25.0 + k) / 255.0);
        }
        // Hostile headers: dimensions that do not match the bytes, and too many rows asked.
        std::fs::write(d.join("train-images-idx3-ubyte"), idx_file(&[4, 28, 28], &px)).unwrap();
        let e = load(External::Mnist, &d, None, 0, 5).unwrap_err().to_string();
        assert!(e.contains("declares dimensions"), "{e}");
        std::fs::write(d.join("train-images-idx3-ubyte"), idx_file(&[u32::MAX, u32::MAX, 28], &px)).unwrap();
        assert!(load(External::Mnist, &d, None, 0, 5).is_err());
        std::fs::write(d.join("train-images-idx3-ubyte"), idx_file(&[3, 28, 28], &px)).unwrap();
        assert!(load(External::Mnist, &d, Some(4), 0, 5).unwrap_err().to_string().contains("holds 3"));
        std::fs::write(d.join("train-labels-idx1-ubyte"), idx_file(&[3], &[7, 12, 3])).unwrap();
        assert!(load(External::Mnist, &d, None, 0, 5).unwrap_err().to_string().contains("label 12"));
        std::fs::write(d.join("train-labels-idx1-ubyte"), [0x1f, 0x8b, 8, 0]).unwrap();
        assert!(load(External::Mnist, &d, None, 0, 5).unwrap_err().to_string().contains("gunzip"));
        std::fs::remove_dir_all(&d).ok();
        assert!(load(External::Mnist, &d, None, 0, 5).unwrap_err().to_string().contains("holds none"));
    }

    #[test]
    fn real_sets_resolve_by_name() {
        assert_eq!(load_real("digits", None, Some(30), 5, 1).unwrap().n_train(), 30);
        assert!(load_real("digits", Some(Path::new(".")), Some(30), 0, 1)
            .unwrap_err()
            .to_string()
            .contains("data_path"));
        assert!(load_real("mnist", None, None, 0, 1).unwrap_err().to_string().contains("never downloads"));
        assert!(load_real("imagenet", None, None, 0, 1).unwrap_err().to_string().contains("cifar10"));
    }

    #[test]
    fn cifar_batches_become_nhwc() {
        let d = tmp("cifar");
        let rec = |label: u8| {
            let mut r = vec![label];
            for c in 0..3u32 {
                r.extend((0..1024u32).map(|q| ((q * 7 + c * 50) % 256) as u8));
            }
            r
        };
        for k in 1..=5 {
            std::fs::write(d.join(format!("data_batch_{k}.bin")), [rec(k), rec(9)].concat()).unwrap();
        }
        std::fs::write(d.join("test_batch.bin"), rec(2)).unwrap();
        let ds = load(External::Cifar10, &d, Some(10), 1, 0).unwrap();
        assert_eq!((ds.n_train(), ds.input_dim()), (10, 3072));
        // Position q, channel c sits at column 3 q + c.
        let (q, c) = (33usize, 2usize);
        assert_eq!(ds.x[(0, 3 * q + c)], (((q * 7 + c * 50) % 256) as f64) / 255.0);
        std::fs::write(d.join("test_batch.bin"), &rec(2)[..3000]).unwrap();
        assert!(load(External::Cifar10, &d, Some(2), 1, 0).unwrap_err().to_string().contains("3073-byte"));
        std::fs::remove_dir_all(&d).ok();
    }
}
