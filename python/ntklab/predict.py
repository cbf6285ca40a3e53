"""Predictions of infinitely wide networks with neural-tangents' ``predict`` names and semantics.

``gradient_descent_mse(k_train_train, y_train, learning_rate)`` returns ``predict_fn(t=None, fx_train_0=0.,
fx_test_0=None, k_test_train=None)``: the outputs of continuous-time gradient descent on the MSE loss
``1/(2 y_train.size) ||f - y||^2`` in function space at times ``t`` (in units of ``learning_rate``; ``None`` or
``inf``: converged), computed in closed form through the eigendecomposition of the train kernel by ntklab's core.

``gp_inference(k_train_train, y_train, diag_reg)`` returns ``predict_fn(get=None, k_test_train=None,
k_test_test=None)``: the posterior mean (and covariance, given ``k_test_test``) of the NNGP (Bayesian inference)
and of the NTK (the ensemble of infinitely wide networks trained to convergence; Lee et al. 2019), as
neural-tangents computes them, through Cholesky solves of the regularized train kernel (numpy).

Not yet here: ``trace_axes`` other than the last axis, momentum and cross-entropy dynamics, ``get='ntkgp'``.
"""

from collections import namedtuple

import numpy as np

from . import _core
from ._arrays import check_real

__all__ = ["gradient_descent_mse", "gp_inference", "Gaussian"]

Gaussian = namedtuple("Gaussian", ["mean", "covariance"])


def _matrix(a, what):
    a = np.asarray(a)
    check_real(a, what)
    a = np.ascontiguousarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{what} has a non-finite value")
    return a


def _trace_axes(trace_axes, where):
    """neural-tangents' trace_axes (an int or a sequence of ints): only the last axis is supported."""
    axes = (trace_axes,) if isinstance(trace_axes, (int, np.integer)) else tuple(trace_axes)
    if axes not in ((-1,), (1,)):
        raise ValueError(f"{where}: only trace_axes=(-1,) (a kernel shared by all outputs) is supported")


def _kernel_pair(k):
    """Whether ``k`` carries both kernels (a ``stax`` kernel_fn result or neural-tangents' Kernel)."""
    return getattr(k, "nngp", None) is not None and getattr(k, "ntk", None) is not None


def _regularized(k, diag_reg, absolute):
    """neural-tangents' diagonal regularizer: k + diag_reg (trace(k)/N unless absolute) I."""
    if diag_reg == 0:
        return k
    scale = 1.0 if absolute else np.trace(k) / k.shape[0]
    return k + float(diag_reg) * scale * np.eye(k.shape[0])


def gradient_descent_mse(k_train_train, y_train, learning_rate=1.0, diag_reg=0.0, diag_reg_absolute_scale=False,
                         trace_axes=(-1,)):
    """Closed-form continuous-time gradient descent on MSE in function space (neural-tangents' semantics).

    ``k_train_train``: N x N (NTK for the dynamics of a trained network, NNGP for its Bayesian counterpart);
    ``y_train``: N or N x k targets. Returns ``predict_fn(t=None, fx_train_0=0., fx_test_0=None,
    k_test_train=None)``: train outputs at ``t`` (times of any shape, stacked in front), test outputs when
    ``fx_test_0`` and ``k_test_train`` (T x N) are given, or both as a tuple when both are requested.
    """
    _trace_axes(trace_axes, "gradient_descent_mse")
    k = _matrix(k_train_train, "k_train_train")
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"k_train_train must be N x N, got shape {k.shape}")
    k = _regularized(k, diag_reg, diag_reg_absolute_scale)
    y = _matrix(y_train, "y_train")
    vector = y.ndim == 1
    y2 = y[:, None] if vector else y
    if y2.ndim != 2 or y2.shape[0] != k.shape[0]:
        raise ValueError(f"y_train must be N or N x k with N = {k.shape[0]}, got shape {y.shape}")
    n, m = y2.shape
    if n * m == 0:
        raise ValueError(f"y_train has no targets (shape {y.shape})")
    lr = float(learning_rate)
    if not (lr > 0 and np.isfinite(lr)):
        raise ValueError(f"learning_rate must be finite and > 0, got {learning_rate}")
    # neural-tangents: d f/dt = -(lr / y.size) K (f - y); ntklab's core: -(eta / N) K (f - y).
    eta = lr * n / y2.size

    def shaped(block, rows):
        out = np.frombuffer(block, dtype=np.float64).reshape(rows, m)
        return out[:, 0] if vector else out

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        times = np.asarray(np.inf if t is None else t, dtype=np.float64)
        f0 = None if fx_train_0 is None else np.broadcast_to(_matrix(fx_train_0, "fx_train_0"), y.shape)
        f0 = None if f0 is None else np.ascontiguousarray(f0.reshape(n, m))
        want_test = fx_test_0 is not None
        if want_test and k_test_train is None:
            raise ValueError("fx_test_0 needs k_test_train (T x N)")
        kt = _matrix(k_test_train, "k_test_train") if want_test else None
        if kt is not None and (kt.ndim != 2 or kt.shape[1] != n):
            raise ValueError(f"k_test_train must be T x {n}, got shape {kt.shape}")
        t_count = kt.shape[0] if kt is not None else 0
        f0t = None
        if want_test:
            f0t = np.ascontiguousarray(
                np.broadcast_to(_matrix(fx_test_0, "fx_test_0"), (t_count,) + y.shape[1:]).reshape(t_count, m))
        if f0 is None and not want_test:
            raise ValueError("nothing to predict: fx_train_0 is None and no test set was given")
        # Test outputs are relative to the train outputs at 0 (zeros when fx_train_0 is None), as in
        # neural-tangents; the core computes train outputs only when given f0.
        train, test = _core.flow(k.tobytes(), n, y2.tobytes(), m, eta, [float(v) for v in times.ravel()],
                                 None if f0 is None else f0.tobytes(), None if kt is None else kt.tobytes(),
                                 t_count, None if f0t is None else f0t.tobytes())
        train_out = test_out = None
        if f0 is not None:
            train_out = np.stack([shaped(b, n) for b in train]).reshape(times.shape + y.shape)
        if want_test:
            test_out = np.stack([shaped(b, t_count) for b in test]).reshape(times.shape + (t_count,) + y.shape[1:])
        if train_out is not None and test_out is not None:
            return train_out, test_out
        return train_out if test_out is None else test_out

    return predict_fn


def _kernel(k, g, what):
    """The ``g`` ('nngp' or 'ntk') member of a Kernel-like object, or ``k`` itself for an array."""
    if hasattr(k, "nngp") or hasattr(k, "ntk"):
        v = getattr(k, g, None)
        if v is None:
            raise ValueError(f"{what} has no {g!r} kernel")
        return _matrix(v, f"{what}.{g}")
    return _matrix(k, what)


def gp_inference(k_train_train, y_train, diag_reg=0.0, diag_reg_absolute_scale=False, trace_axes=(-1,)):
    """The infinite-width posterior on test points, with neural-tangents' semantics.

    ``k_train_train`` (and the ``k_test_train``/``k_test_test`` given to ``predict_fn``): an N x N array, or an
    object with ``nngp`` and ``ntk`` members (``stax`` kernel_fn results). ``predict_fn(get=None,
    k_test_train=None, k_test_test=None)``: for each of ``get`` ('nngp', 'ntk'; default both), the posterior mean
    on the test set (``y_train`` on the train set when ``k_test_train`` is None), or ``Gaussian(mean,
    covariance)`` when ``k_test_test`` is given; a named tuple for a tuple ``get``. The NTK covariance needs both
    kernels (Lee et al. 2019, eq. 16).
    """
    _trace_axes(trace_axes, "gp_inference")
    y = _matrix(y_train, "y_train")
    y2 = y[:, None] if y.ndim == 1 else y
    if y2.ndim != 2 or y2.size == 0:
        raise ValueError(f"y_train must be N or N x k with N, k > 0, got shape {y.shape}")
    factors = {}

    def solve(g, b):
        """(K_g + reg)^-1 b by Cholesky, the factor made once per kernel."""
        if g not in factors:
            k = _kernel(k_train_train, g, "k_train_train")
            if k.ndim != 2 or k.shape != (y2.shape[0], y2.shape[0]):
                raise ValueError(f"k_train_train must be N x N with N = {y2.shape[0]}, got shape {k.shape}")
            k = _regularized(k, diag_reg, diag_reg_absolute_scale)
            try:
                factors[g] = np.linalg.cholesky(k)
            except np.linalg.LinAlgError:
                raise ValueError(f"the {g} train kernel (+ diag_reg) is not positive definite; raise diag_reg")
        c = factors[g]
        return np.linalg.solve(c.T, np.linalg.solve(c, b))

    def predict_fn(get=None, k_test_train=None, k_test_test=None):
        names = ("nngp", "ntk") if get is None else ((get,) if isinstance(get, str) else tuple(get))
        out = {}
        for g in names:
            if g not in ("nngp", "ntk"):
                raise ValueError(f"get must be 'nngp', 'ntk' or a tuple of them, got {g!r}")
            if k_test_train is None:
                mean = y.copy()
                solve(g, y2)  # checks the train kernel as for test predictions
                out[g] = Gaussian(mean, np.zeros((y2.shape[0],) * 2)) if k_test_test is not None else mean
                continue
            k_td = _kernel(k_test_train, g, "k_test_train")
            if k_td.ndim != 2 or k_td.shape[1] != y2.shape[0]:
                raise ValueError(f"k_test_train must be T x {y2.shape[0]}, got shape {k_td.shape}")
            mean = k_td @ solve(g, y2)
            mean = mean[:, 0] if y.ndim == 1 else mean
            if k_test_test is None:
                out[g] = mean
                continue
            if g == "ntk" and not (_kernel_pair(k_train_train) and _kernel_pair(k_test_train)
                                   and getattr(k_test_test, "nngp", None) is not None):
                # An array is the kernel `get` names; this covariance needs the NNGP beside the NTK.
                raise ValueError("the NTK posterior covariance needs both NTK and NNGP kernels: pass kernel_fn "
                                 "results (with .nngp and .ntk) as k_train_train, k_test_train and k_test_test")
            k_tt = _kernel(k_test_test, "nngp", "k_test_test")
            nngp_td = _kernel(k_test_train, "nngp", "k_test_train")
            if g == "nngp":
                cov = k_tt - nngp_td @ solve("nngp", nngp_td.T)
            else:
                # Lee et al. 2019: the NTK posterior of networks trained to convergence from NNGP priors.
                term_1 = solve("ntk", k_td.T)  # Theta^-1 Theta_dt
                cov = term_1.T @ _kernel(k_train_train, "nngp", "k_train_train") @ term_1
                term_2 = k_td @ solve("ntk", nngp_td.T)
                cov = k_tt + cov - (term_2 + term_2.T)
            out[g] = Gaussian(mean, cov)
        if isinstance(get, str):
            return out[get]
        return namedtuple("Gaussians", names)(*(out[g] for g in names))

    return predict_fn
