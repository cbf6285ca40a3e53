"""Arrays across the boundary with the Rust core: any float or integer dtype, C or Fortran order, in; raw
native-endian bytes of C-order float64 plus the shape to the core; numpy arrays out."""

import numpy as np


def check_real(x, what):
    """TypeError unless ``x`` (an ndarray) has a float or integer dtype."""
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{what} must hold real numbers (a float or integer dtype), got dtype {x.dtype}")


def torch_numpy(x):
    """A torch tensor as numpy, without importing torch: its own dtype (bool and complex stay so and are refused
    by ``check_real``; bfloat16, which numpy lacks, as float32), spatial axes moved from torch's N x C x H x W
    (N x C x W) to ntklab's channels-last layout."""
    t = x.detach().cpu()
    if str(t.dtype) == "torch.bfloat16":
        t = t.float()
    a = t.numpy()
    return np.moveaxis(a, 1, -1) if a.ndim > 2 else a


def is_torch(obj):
    return type(obj).__module__.split(".")[0] == "torch"


def examples_bytes(x, what, dtype=np.float64):
    """(bytes, shape) of ``x`` as C-order ``dtype`` (float64, or float32 for the f32 network), checked: at least
    2 axes, finite, real numbers."""
    if not isinstance(x, np.ndarray):
        x = torch_numpy(x) if is_torch(x) else np.asarray(x)
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
