"""Type stubs of ntklab.predict (see predict.py): neural-tangents' predict semantics."""

from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

class Gaussian(NamedTuple):
    mean: np.ndarray
    covariance: np.ndarray

def gradient_descent_mse(
    k_train_train: npt.ArrayLike,
    y_train: npt.ArrayLike,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes: Sequence[int] = (-1,),
) -> Callable[..., Any]:
    """``predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)``."""
    ...

def gp_inference(
    k_train_train: Any,
    y_train: npt.ArrayLike,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes: Sequence[int] = (-1,),
) -> Callable[..., Any]:
    """``predict_fn(get=None, k_test_train=None, k_test_test=None)``."""
    ...
