"""Arrays across the boundary with the Rust core: any float or integer dtype, C or Fortran order, in; raw
native-endian bytes of C-order float64 plus the shape to the core; numpy arrays out."""

import numpy as np


def check_real(x, what):
    """TypeError unless ``x`` (an ndarray) has a float or integer dtype."""
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{what} must hold real numbers (a float or integer dtype), got dtype {x.dtype}")


def examples_bytes(x, what, dtype=np.float64):
    """(bytes, shape) of ``x`` as C-order ``dtype`` (float64, or float32 for the f32 network), checked: at least
    2 axes, finite, real numbers."""
    if not isinstance(x, np.ndarray):
        if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
            x = x.detach().cpu().numpy()
        else:
            x = np.asarray(x)
    check_real(x, what)
    if x.ndim < 2:
        raise ValueError(f"{what} must be N x d (or N x H x W x C), got shape {x.shape}")
    a = np.ascontiguousarray(x, dtype=dtype)
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{what} has a non-finite value at index {tuple(int(i) for i in bad)}")
    return a.tobytes(), [int(s) for s in a.shape]


def matrix_from_bytes(b, n1, n2, dtype, order="C"):
    """An n1 x n2 array over the values in ``b``, row-major (``order='C'``) or column-major (``'F'``, as the
    kernels come: the core writes them in place): the core returns bytearrays, so the array is writable and
    shares their memory (no copy)."""
    a = np.frombuffer(b, dtype=dtype)
    a = a.reshape(n1, n2) if order == "C" else a.reshape(n2, n1).T
    return a if a.flags.writeable else a.copy()
