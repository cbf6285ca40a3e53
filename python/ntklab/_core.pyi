"""Type stubs of the compiled module (see src/lib.rs). Arrays go in as C-order float64 bytes plus a shape and come
back as bytearrays of row-major values (kernels: column-major, written in place), which numpy wraps without a
copy."""

from os import PathLike
from typing import List, Optional, Sequence, Tuple

__version__: str

def kernel(
    arch: str,
    parameterization: str,
    x1: bytes,
    shape1: Sequence[int],
    x2: Optional[bytes] = None,
    shape2: Optional[Sequence[int]] = None,
    f32: bool = False,
    diagonal_spatial: bool = False,
) -> Tuple[bytearray, bytearray, List[int]]: ...

class Model:
    @staticmethod
    def load(
        path: "str | PathLike[str]",
        arch: Optional[str] = None,
        parameterization: Optional[str] = None,
        input_shape: Optional[str] = None,
    ) -> "Model": ...
    @staticmethod
    def from_tensors(
        arch: str,
        parameterization: str,
        tensors: List[Tuple[str, List[int], bytes]],
        input_shape: Optional[str] = None,
    ) -> "Model": ...
    @property
    def arch(self) -> str: ...
    @property
    def parameterization(self) -> str: ...
    @property
    def num_params(self) -> int: ...
    @property
    def output_dim(self) -> int: ...
    @property
    def input_shape(self) -> List[int]: ...
    @property
    def output_shape(self) -> List[int]: ...
    def empirical_ntk(
        self,
        x1: bytes,  # C-order float64, or float32 when f32=True (x2 likewise)
        shape1: Sequence[int],
        x2: Optional[bytes] = None,
        shape2: Optional[Sequence[int]] = None,
        trace: bool = True,
        f32: bool = False,
    ) -> Tuple[bytearray, int, int]: ...  # column-major values, rows, columns
    @staticmethod
    def init(arch: str, parameterization: str, input_shape: str, seed: int = 0) -> "Model": ...
    def apply(self, x: bytes, shape: Sequence[int], f32: bool = False) -> Tuple[bytearray, int, int]: ...
    def save(self, path: "str | PathLike[str]") -> None: ...
    def tensors(self) -> List[Tuple[str, List[int], bytearray]]: ...
    def hessian_eigs(
        self,
        x: bytes,
        shape: Sequence[int],
        y: bytes,
        yshape: Sequence[int],
        k: int = 5,
        loss: str = "mse",
        f32: bool = False,
        max_iter: int = 300,
        tol: float = 1e-8,
        seed: int = 0,
    ) -> Tuple[List[float], List[float], bool]: ...

def flow(
    theta: bytes,
    n: int,
    y: bytes,
    m: int,
    eta: float,
    times: List[float],
    f0_train: Optional[bytes] = None,
    theta_test_train: Optional[bytes] = None,
    t: int = 0,
    f0_test: Optional[bytes] = None,
) -> Tuple[List[bytearray], List[bytearray]]: ...
def gp(
    k: bytes, n: int, y: bytes, m: int, k_test_train: bytes, t: int, k_test_test: bytes, noise_var: float
) -> Tuple[bytearray, bytearray, float]: ...
def keep_freed_memory() -> None: ...
def train_run(
    config: str, base: "str | PathLike[str]", out: "str | PathLike[str]", force: bool = False, json: bool = False
) -> Tuple[str, str, int, float, float]: ...
def train_out(config: str, json: bool = False) -> Optional[str]: ...
def experiments() -> List[Tuple[str, str]]: ...
def experiment_config(name: str, quick: bool = False, overrides: Optional[str] = None, seed: Optional[int] = None) -> str: ...
def run_experiment(
    name: str,
    out: "str | PathLike[str]",
    quick: bool = False,
    overrides: Optional[str] = None,
    seed: Optional[int] = None,
    resume: bool = False,
    force: bool = False,
) -> Tuple[str, float, int, List[str]]: ...
