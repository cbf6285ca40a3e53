"""ntklab: exact infinite-width kernels (NNGP, NTK) in neural-tangents' conventions and finite networks with
exact derivatives, computed by a Rust core.

    from ntklab import stax
    init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(512, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1))
    k = kernel_fn(x_train, x_test)                    # k.nngp, k.ntk: numpy arrays

    import ntklab
    theta = ntklab.empirical_ntk(torch_sequential, x)  # or a saved model file, or ntklab.load(path)
    top = ntklab.hessian_eigs(model, x, y, k=5)
    records, folder = ntklab.train({"data": {...}, "model": {...}, "optimizer": {...}})   # and .summary
    summary, report = ntklab.run("linearity", quick=True, widths=[64, 256, 1024])      # and .folder, .console

Arrays: any float or integer dtype, any memory order. Images are N x H x W x C (N x W x C) numpy arrays, as in
neural-tangents; a torch tensor with spatial axes is taken in torch's own N x C x H x W layout.
"""

import os

import numpy as np

from . import _core, predict, stax
from ._arrays import examples_bytes, is_torch, matrix_from_bytes, torch_numpy
from ._core import Model, __version__
from ._runs import Reproduction, TrainRun, experiment_config, experiments, run, train

__all__ = ["stax", "predict", "Model", "keep_freed_memory", "load", "from_torch", "to_torch", "state_dict", "empirical_ntk", "hessian_eigs",
           "train", "run", "experiments", "experiment_config", "TrainRun", "Reproduction", "__version__"]


def keep_freed_memory():
    """Opt-in, once at start: let glibc keep freed memory in the process for reuse, as the ``ntklab`` CLI does.
    Large kernels are then not mapped fresh, page by page, on every call (for a 4000 x 4000 kernel pair about a
    third of the time on a VM). It changes the allocator of the whole Python process (freed memory is returned to
    the OS later or not at all), so it is not the default; it does nothing on other platforms."""
    _core.keep_freed_memory()


def load(path, arch=None, parameterization=None, input_shape=None):
    """A model file (safetensors or npz; ntklab's own or PyTorch's ``nn.Sequential`` names), as ``ntklab ntk
    --model`` reads it. ``arch``/``parameterization``/``input_shape`` (e.g. ``"32x32x3"``) describe foreign files."""
    return Model.load(os.fspath(path), arch, parameterization, input_shape)


def _shape_text(shape):
    return "x".join(str(int(s)) for s in shape)


def from_torch(module, input_shape=None):
    """A PyTorch ``nn.Sequential`` of supported layers as an ntklab model with the same parameters (standard
    parameterization: derivatives are with respect to the torch parameters themselves). ``input_shape``
    (H, W, C) or (W, C), channels last, is needed for convolutional networks."""
    from ._torch import sequential_to_tensors

    arch, tensors, _ = sequential_to_tensors(module, images=input_shape is not None and len(input_shape) >= 2)
    shape = _shape_text(input_shape) if input_shape is not None else None
    return Model.from_tensors(arch, "standard", tensors, shape)


def _as_array(x):
    """None, a torch tensor (to ntklab's layout) or anything numpy reads."""
    if x is None:
        return None
    return torch_numpy(x) if is_torch(x) else np.asarray(x)


def state_dict(model):
    """The model's parameters as ``{name: numpy array}`` under ``nn.Sequential`` names and PyTorch layouts (the
    effective weights, as model files store them)."""
    return {name: np.frombuffer(data, dtype=np.float64).reshape(shape) for name, shape, data in model.tensors()}


def to_torch(model, module):
    """Copy an ntklab model's parameters into the PyTorch ``nn.Sequential`` ``module`` it was read from (or one
    of the same structure), in place; returns ``module``."""
    import torch

    from ._torch import sequential_to_tensors

    _, _, names = sequential_to_tensors(module)
    ours = state_dict(model)
    if set(ours) != set(names):
        raise ValueError(f"the module's parameters {sorted(names.values())} do not match the model's "
                         f"{sorted(ours)}")
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in ours.items():
            target = params[names[name]]
            if tuple(target.shape) != value.shape:
                raise ValueError(f"{names[name]}: the module has shape {tuple(target.shape)}, the model {value.shape}")
            target.copy_(torch.from_numpy(value.copy()).to(target.dtype))
    return module


def _model_and_inputs(model, xs):
    """(Model, inputs in ntklab's layout) for a Model, a model file path or a torch nn.Sequential."""
    arrays = [_as_array(x) for x in xs]
    if isinstance(model, Model):
        return model, arrays
    if isinstance(model, (str, bytes, os.PathLike)):
        return load(os.fsdecode(model)), arrays
    if is_torch(model):
        shape = arrays[0].shape[1:] if arrays[0].ndim > 2 else None
        return from_torch(model, shape), arrays
    raise TypeError(f"model must be an ntklab.Model, a model file path or a torch nn.Sequential, got "
                    f"{type(model).__name__}")


def _precision(precision):
    if precision not in ("f64", "f32"):
        raise ValueError(f"precision must be 'f64' or 'f32', got {precision!r}")
    return precision == "f32"


def empirical_ntk(model, x1, x2=None, trace=True, precision="f64"):
    """The empirical NTK J(x1) J(x2)^T of a finite network, without forming J: N1 x N2 summed over outputs
    (``trace=True``), or every output block ((N1 k) x (N2 k), row i k + a). float64, or float32 computed in f32
    lanes with ``precision='f32'``. The array is in Fortran order (the core writes it column by column), as
    ``stax`` kernels are."""
    single = _precision(precision)
    m, (a, b) = _model_and_inputs(model, [x1, x2])
    # The f32 network takes float32 bytes (rounded by numpy, as the CLI's cast rounds them).
    dtype = np.float32 if single else np.float64
    b1, s1 = examples_bytes(a, "x1", dtype)
    b2, s2 = examples_bytes(b, "x2", dtype) if b is not None else (None, None)
    data, rows, cols = m.empirical_ntk(b1, s1, b2, s2, bool(trace), single)
    theta = matrix_from_bytes(data, rows, cols, np.float32 if single else np.float64, "F")
    # O(N1 N2) against the call's O(N1 N2 P): the sum is finite unless an entry is not (or the sum overflows).
    if not np.isfinite(theta.sum()) and not np.isfinite(theta).all():
        i, j = (int(v) for v in np.argwhere(~np.isfinite(theta))[0])
        raise ValueError(f"the empirical NTK overflowed ({theta[i, j]} at row {i}, column {j}): the network's "
                         f"Jacobian on these inputs is too large for {'float32' if single else 'float64'}")
    return theta


def hessian_eigs(model, x, y, k=5, loss="mse", precision="f64", max_iter=300, tol=1e-8, seed=0):
    """The top-k eigenvalues (descending) of the Hessian of the mean loss at (x, y), by Lanczos on exact
    Hessian-vector products, as ``ntklab hessian`` computes them. ``loss``: 'mse', 'logistic' or
    'softmax_cross_entropy'. Raises RuntimeError if Lanczos did not converge to ``tol`` in ``max_iter`` steps."""
    single = _precision(precision)
    for name, v in (("k", k), ("max_iter", max_iter), ("seed", seed)):
        if int(v) < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    if y is None:
        raise TypeError("y must be an array of targets (N or N x k), got None")
    m, (a,) = _model_and_inputs(model, [x])
    bx, sx = examples_bytes(a, "x")
    yv = _as_array(y)
    if yv.ndim == 1:
        yv = yv[:, None]
    by, sy = examples_bytes(yv, "y")
    values, residuals, converged = m.hessian_eigs(bx, sx, by, sy, int(k), str(loss), single, int(max_iter),
                                                  float(tol), int(seed))
    if not converged:
        raise RuntimeError(f"Lanczos did not reach tol {tol} in {max_iter} steps (residuals {residuals}); raise "
                           "max_iter")
    return np.asarray(values)
