"""Predictions of infinitely wide networks with neural-tangents' ``predict`` names and semantics.

``gradient_descent_mse(k_train_train, y_train, learning_rate)`` returns ``predict_fn(t=None, fx_train_0=0.,
fx_test_0=None, k_test_train=None)``: the outputs of continuous-time gradient descent on the MSE loss
``1/(2 y_train.size) ||f - y||^2`` in function space at times ``t`` (in units of ``learning_rate``; ``None`` or
``inf``: converged), computed in closed form through the eigendecomposition of the train kernel by ntklab's core.

Not yet here: ``gp_inference``, ``trace_axes`` other than the last axis, momentum and cross-entropy dynamics.
"""

import numpy as np

from . import _core

__all__ = ["gradient_descent_mse"]


def _matrix(a, what):
    a = np.asarray(a)
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{what} must hold real numbers, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{what} has a non-finite value")
    return a


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
    if tuple(trace_axes) not in ((-1,), (1,)):
        raise ValueError("gradient_descent_mse: only trace_axes=(-1,) (a kernel shared by all outputs) is supported")
    k = _regularized(_matrix(k_train_train, "k_train_train"), diag_reg, diag_reg_absolute_scale)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"k_train_train must be N x N, got shape {k.shape}")
    y = _matrix(y_train, "y_train")
    vector = y.ndim == 1
    y2 = y[:, None] if vector else y
    if y2.ndim != 2 or y2.shape[0] != k.shape[0]:
        raise ValueError(f"y_train must be N or N x k with N = {k.shape[0]}, got shape {y.shape}")
    n, m = y2.shape
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
