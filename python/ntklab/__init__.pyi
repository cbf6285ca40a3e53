"""Type stubs of the ntklab package (see __init__.py and _runs.py)."""

from os import PathLike
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from . import predict as predict
from . import stax as stax
from ._core import Model as Model

__version__: str

PathLikeStr = Union[str, "PathLike[str]"]
ModelLike = Union[Model, PathLikeStr, Any]  # Any: a torch nn.Sequential

class TrainRun(Tuple[Any, Path]):
    """Unpacks as ``records, folder``."""
    records: Any  # a list of dicts, or a pandas DataFrame when pandas is installed
    folder: Path
    summary: Dict[str, Any]

class Reproduction(Tuple[Dict[str, Any], Path]):
    """Unpacks as ``summary, report``."""
    summary: Dict[str, Any]
    report: Path
    folder: Path
    console: str

def keep_freed_memory() -> None: ...
def load(path: PathLikeStr, arch: Optional[str] = None, parameterization: Optional[str] = None,
         input_shape: Optional[str] = None) -> Model: ...
def from_torch(module: Any, input_shape: Optional[Sequence[int]] = None) -> Model: ...
def state_dict(model: Model) -> Dict[str, np.ndarray]: ...
def to_torch(model: Model, module: Any) -> Any: ...
def empirical_ntk(model: ModelLike, x1: npt.ArrayLike, x2: Optional[npt.ArrayLike] = None, trace: bool = True,
                  precision: str = "f64") -> np.ndarray: ...
def hessian_eigs(model: ModelLike, x: npt.ArrayLike, y: npt.ArrayLike, k: int = 5, loss: str = "mse",
                 precision: str = "f64", max_iter: int = 300, tol: float = 1e-8, seed: int = 0) -> np.ndarray: ...
def train(config: Union[Dict[str, Any], PathLikeStr], out: Optional[PathLikeStr] = None,
          force: bool = False) -> TrainRun: ...
def experiments() -> Dict[str, str]: ...
def experiment_config(name: str, quick: bool = False, *, seed: Optional[int] = None,
                      **overrides: Any) -> Dict[str, Any]: ...
def run(name: str, quick: bool = False, *, out: Optional[PathLikeStr] = None, seed: Optional[int] = None,
        resume: bool = False, force: bool = False, **overrides: Any) -> Reproduction: ...
