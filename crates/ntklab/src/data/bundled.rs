//! Real data sets compiled into the library, so that every command works offline (sources, licenses and
//! credits: `crates/ntklab/data/README.md`).
//!
//! | name | task | inputs | targets |
//! |---|---|---|---|
//! | `diabetes` | regression, 442 rows | 10 baseline variables, each column standardized (mean 0, variance 1) | disease progression, centered and divided by its standard deviation (N x 1) |
//! | `digits` | classification, 1797 rows | 8 x 8 x 1 images, pixels / 16 in [0, 1] (d = 64) | one-hot, 10 columns |
//!
//! [`load`] shuffles the rows with a seed and takes the first `n` as the training set and the next `n_test` as
//! the test set; the standardization uses all 442 rows (a fixed property of the table, not of the split).

use faer::Mat;
use rand::seq::SliceRandom;

use super::synthetic::rng;
use super::Dataset;
use crate::kernel::spatial::Shape;
use crate::{Error, Result};

const DIABETES_CSV: &str = include_str!("../../data/diabetes.csv");
const DIGITS_CSV: &str = include_str!("../../data/digits.csv");

/// The bundled real data sets (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bundled {
    /// Efron et al. (2004): 442 x 10 regression table.
    Diabetes,
    /// Alpaydin & Kaynak (1998): 1797 handwritten digits, 8 x 8.
    Digits,
}

impl Bundled {
    /// Names accepted by [`Bundled::parse`].
    pub const NAMES: &'static str = "diabetes, digits";

    /// The set named `s`, or None.
    pub fn parse(s: &str) -> Option<Bundled> {
        match s.trim().to_lowercase().as_str() {
            "diabetes" => Some(Bundled::Diabetes),
            "digits" => Some(Bundled::Digits),
            _ => None,
        }
    }

    /// Rows in the table.
    pub fn rows(&self) -> usize {
        match self {
            Bundled::Diabetes => 442,
            Bundled::Digits => 1797,
        }
    }

    /// Whether the set is a classification task.
    pub fn is_classification(&self) -> bool {
        matches!(self, Bundled::Digits)
    }

    /// The whole table in file order: inputs (rows x d), targets (rows x k) and the example shape of images.
    pub fn table(&self) -> Result<(Mat<f64>, Mat<f64>, Option<Shape>)> {
        match self {
            Bundled::Diabetes => diabetes(),
            Bundled::Digits => digits(),
        }
    }
}

fn parse_rows(text: &str, name: &str, skip_header: bool, cols: usize) -> Result<Vec<Vec<f64>>> {
    let bad = |line: usize, what: String| Error::InvalidInput(format!("bundled {name} data, line {line}: {what}"));
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(usize::from(skip_header)) {
        let v: Vec<f64> = line
            .split(',')
            .map(|s| s.trim().parse::<f64>().map_err(|e| bad(i + 1, format!("`{s}`: {e}"))))
            .collect::<Result<_>>()?;
        if v.len() != cols {
            return Err(bad(i + 1, format!("{} columns, expected {cols}", v.len())));
        }
        rows.push(v);
    }
    Ok(rows)
}

/// Columns scaled to mean 0 and variance 1 (population variance, over all rows).
fn standardize(m: &mut Mat<f64>) {
    let n = m.nrows() as f64;
    for j in 0..m.ncols() {
        let mean = (0..m.nrows()).map(|i| m[(i, j)]).sum::<f64>() / n;
        let var = (0..m.nrows()).map(|i| (m[(i, j)] - mean).powi(2)).sum::<f64>() / n;
        let s = if var > 0.0 { var.sqrt() } else { 1.0 };
        for i in 0..m.nrows() {
            m[(i, j)] = (m[(i, j)] - mean) / s;
        }
    }
}

fn diabetes() -> Result<(Mat<f64>, Mat<f64>, Option<Shape>)> {
    let rows = parse_rows(DIABETES_CSV, "diabetes", true, 11)?;
    let mut x = Mat::from_fn(rows.len(), 10, |i, j| rows[i][j]);
    let mut y = Mat::from_fn(rows.len(), 1, |i, _| rows[i][10]);
    standardize(&mut x);
    standardize(&mut y);
    Ok((x, y, None))
}

fn digits() -> Result<(Mat<f64>, Mat<f64>, Option<Shape>)> {
    let rows = parse_rows(DIGITS_CSV, "digits", false, 65)?;
    let x = Mat::from_fn(rows.len(), 64, |i, j| rows[i][j] / 16.0);
    let y = Mat::from_fn(rows.len(), 10, |i, c| f64::from(u8::from(rows[i][64] as usize == c)));
    Ok((x, y, Some(Shape::image(&[8, 8], 1))))
}

/// `n` training rows and `n_test` test rows of set `b` after a seeded shuffle (`n` None: every row not in the
/// test set). Errors when the two do not fit in the table.
pub fn load(b: Bundled, n: Option<usize>, n_test: usize, seed: u64) -> Result<Dataset> {
    let total = b.rows();
    if n_test >= total {
        return Err(Error::Config(format!("n_test = {n_test} leaves no training rows of the {total} in {b:?}")));
    }
    let n = n.unwrap_or(total - n_test);
    if n == 0 || n + n_test > total {
        return Err(Error::Config(format!(
            "n = {n} training and n_test = {n_test} test rows do not fit in the {total} rows of {b:?} (n >= 1)"
        )));
    }
    let (x, y, shape) = b.table()?;
    let mut order: Vec<usize> = (0..total).collect();
    order.shuffle(&mut rng(seed));
    let take = |rows: &[usize], m: &Mat<f64>| Mat::from_fn(rows.len(), m.ncols(), |i, j| m[(rows[i], j)]);
    let (tr, te) = (&order[..n], &order[n..n + n_test]);
    let mut ds = Dataset::new(take(tr, &x), take(tr, &y))?.with_shape(shape)?;
    if n_test > 0 {
        ds = ds.with_test(take(te, &x), take(te, &y))?;
    }
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_parse_with_their_documented_scaling() {
        let (x, y, s) = Bundled::Diabetes.table().unwrap();
        assert_eq!((x.nrows(), x.ncols(), y.ncols(), s), (442, 10, 1, None));
        for j in 0..10 {
            let mean = (0..442).map(|i| x[(i, j)]).sum::<f64>() / 442.0;
            let var = (0..442).map(|i| x[(i, j)] * x[(i, j)]).sum::<f64>() / 442.0;
            assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-12, "column {j}: {mean} {var}");
        }
        // Efron et al.'s first patient: age 59, sex 2, progression 151 (target mean 152.13, sd 77.0).
        let x_raw = parse_rows(DIABETES_CSV, "d", true, 11).unwrap();
        assert_eq!((x_raw[0][0], x_raw[0][1], x_raw[0][10]), (59.0, 2.0, 151.0));
        assert!(y[(0, 0)].abs() < 0.1);
        let (x, y, s) = Bundled::Digits.table().unwrap();
        assert_eq!((x.nrows(), x.ncols(), y.ncols()), (1797, 64, 10));
        assert_eq!(s.unwrap().compact(), "8x8x1");
        assert!((0..1797).all(|i| (0..10).map(|c| y[(i, c)]).sum::<f64>() == 1.0));
        assert!((0..64).all(|j| (0..1797).all(|i| (0.0..=1.0).contains(&x[(i, j)]))));
        // Classes are nearly balanced (about 180 each).
        for c in 0..10 {
            let k = (0..1797).filter(|&i| y[(i, c)] == 1.0).count();
            assert!((170..=190).contains(&k), "class {c}: {k}");
        }
    }

    #[test]
    fn load_splits_without_overlap_and_checks_sizes() {
        let ds = load(Bundled::Diabetes, Some(300), 100, 7).unwrap();
        assert_eq!((ds.n_train(), ds.test.as_ref().unwrap().0.nrows()), (300, 100));
        let again = load(Bundled::Diabetes, Some(300), 100, 7).unwrap();
        assert_eq!(ds, again);
        let other = load(Bundled::Diabetes, Some(300), 100, 8).unwrap();
        assert_ne!(ds.x, other.x);
        // No training row appears in the test set (the rows of this table are distinct).
        let (xt, _) = ds.test.as_ref().unwrap();
        for i in 0..300 {
            for t in 0..100 {
                assert!((0..10).any(|j| ds.x[(i, j)] != xt[(t, j)]));
            }
        }
        assert_eq!(load(Bundled::Digits, None, 97, 1).unwrap().n_train(), 1700);
        assert!(load(Bundled::Digits, Some(1700), 98, 1).is_err());
        assert!(load(Bundled::Diabetes, Some(0), 0, 1).is_err());
        assert!(load(Bundled::Diabetes, None, 442, 1).is_err());
        assert_eq!(load(Bundled::Digits, Some(5), 0, 1).unwrap().input_shape.unwrap().compact(), "8x8x1");
    }
}
