//! Thin wrappers on faer's dense symmetric eigensolver, with input checks and typed errors.

use faer::{Mat, MatRef, Side};

use super::op::check_symmetric;
use crate::{Error, Result};

/// Eigendecomposition A = U diag(values) U^T of a dense symmetric matrix.
#[derive(Debug, Clone)]
pub struct SymEigen {
    /// Eigenvalues in ascending order, length n.
    pub values: Vec<f64>,
    /// Orthonormal eigenvectors as columns, n x n; column i pairs with `values[i]`.
    pub vectors: Mat<f64>,
}

/// Full eigendecomposition A = U diag(lambda) U^T of a symmetric matrix `a` (n x n), eigenvalues ascending.
///
/// Errors if `a` is not square, has non-finite entries, or is not symmetric to 1e-8 relative to max|A|
/// (only the lower triangle is read after that check).
pub fn sym_eigen(a: MatRef<'_, f64>) -> Result<SymEigen> {
    check_symmetric(a, "matrix")?;
    let evd =
        a.self_adjoint_eigen(Side::Lower).map_err(|e| Error::Numerical(format!("symmetric eigensolver: {e:?}")))?;
    let values: Vec<f64> = evd.S().column_vector().iter().copied().collect();
    Ok(SymEigen { values, vectors: evd.U().to_owned() })
}

/// All eigenvalues of a symmetric matrix `a` (n x n), ascending.
pub fn sym_eigenvalues(a: MatRef<'_, f64>) -> Result<Vec<f64>> {
    check_symmetric(a, "matrix")?;
    a.self_adjoint_eigenvalues(Side::Lower).map_err(|e| Error::Numerical(format!("symmetric eigensolver: {e:?}")))
}

/// Smallest eigenvalue lambda_min(A) of a symmetric matrix `a` (n x n, n >= 1).
pub fn min_eigenvalue(a: MatRef<'_, f64>) -> Result<f64> {
    sym_eigenvalues(a)?.first().copied().ok_or_else(|| Error::InvalidInput("empty matrix has no eigenvalues".into()))
}

/// Largest eigenvalue lambda_max(A) of a symmetric matrix `a` (n x n, n >= 1).
pub fn max_eigenvalue(a: MatRef<'_, f64>) -> Result<f64> {
    sym_eigenvalues(a)?.last().copied().ok_or_else(|| Error::InvalidInput("empty matrix has no eigenvalues".into()))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::with_spectrum;
    use super::*;

    #[test]
    fn recovers_a_prescribed_spectrum() {
        // A = Q diag(lambda) Q^T with Q from a Householder QR; backward-stable EVD gives |error| <~ n eps ||A||.
        let lambda = [-2.5, -1.0, 0.0, 1e-9, 0.5, 3.0];
        let a = with_spectrum(&lambda, 11);
        let vals = sym_eigenvalues(a.as_ref()).unwrap();
        for (v, l) in vals.iter().zip(lambda) {
            assert!((v - l).abs() < 1e-13, "{v} vs {l}");
        }
        assert!((min_eigenvalue(a.as_ref()).unwrap() + 2.5).abs() < 1e-13);
        assert!((max_eigenvalue(a.as_ref()).unwrap() - 3.0).abs() < 1e-13);
        let e = sym_eigen(a.as_ref()).unwrap();
        for i in 0..lambda.len() {
            let u = e.vectors.col(i);
            let au = &a * u;
            for r in 0..lambda.len() {
                assert!((au[r] - e.values[i] * u[r]).abs() < 1e-13);
            }
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(min_eigenvalue(Mat::<f64>::zeros(0, 0).as_ref()), Err(Error::InvalidInput(_))));
        assert!(matches!(sym_eigen(Mat::<f64>::zeros(2, 3).as_ref()), Err(Error::Shape(_))));
        let mut a = Mat::<f64>::identity(3, 3);
        a[(2, 0)] = f64::NAN;
        assert!(matches!(sym_eigenvalues(a.as_ref()), Err(Error::InvalidInput(_))));
        a[(2, 0)] = 0.5;
        assert!(matches!(sym_eigenvalues(a.as_ref()), Err(Error::InvalidInput(_))));
    }
}
