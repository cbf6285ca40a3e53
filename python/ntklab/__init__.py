"""ntklab: exact infinite-width kernels (NNGP, NTK) in neural-tangents' conventions, computed by a Rust core.

    from ntklab import stax
    init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(512, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1))
    k = kernel_fn(x_train, x_test)          # k.nngp, k.ntk: numpy arrays
"""

from . import stax
from ._core import __version__

__all__ = ["stax", "__version__"]
