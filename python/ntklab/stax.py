"""neural-tangents' ``stax`` names and keyword arguments on top of ntklab.

Every layer and combinator returns ``(init_fn, apply_fn, kernel_fn)`` as in neural-tangents; layers compose with
``serial``, ``parallel``, ``FanOut``, ``FanInSum``, ``FanInConcat`` and ``Identity``. ``kernel_fn(x1, x2=None,
get=('nngp', 'ntk'))`` computes the infinite-width kernels exactly (closed-form duals where they exist,
quadrature otherwise) in ntklab's Rust core and returns numpy arrays: one array for ``get='nngp'``, a named tuple
``Kernel(nngp, ntk)`` for a tuple.

Inputs are ``N x d`` feature vectors or ``N x H x W x C`` (``N x W x C``) images, of any float or integer dtype
and memory order. Each stax expression is compiled into ntklab's architecture language (a chain, or a DAG of
named nodes) and the whole kernel is computed in one call.

``init_fn(rng, input_shape)`` draws a finite network (an ``ntklab.Model``: pass it to ``ntklab.empirical_ntk``,
``hessian_eigs`` or ``Model.save``) and ``apply_fn(params, x)`` runs it.

Not yet here: ``Gelu(approximate=True)``, per-layer mixes of parameterizations, pooling with
``normalize_edges=True``.
"""

from collections import namedtuple

import numpy as np

from . import _core
from ._arrays import examples_bytes, matrix_from_bytes

__all__ = [
    "serial", "parallel", "FanOut", "FanInSum", "FanInConcat", "Identity", "Dense", "Conv", "AvgPool",
    "GlobalAvgPool", "Flatten", "Relu", "LeakyRelu", "ABRelu", "Abs", "Erf", "Sigmoid_like", "Gelu", "Sin", "Cos",
    "Rbf", "Exp", "Monomial", "Sign", "Tanh", "Softplus", "Silu", "Elu", "Kernel",
]

Kernel = namedtuple("Kernel", ["nngp", "ntk"])

_PARAMETERIZATIONS = ("ntk", "standard")


def _num(x):
    """A float in the architecture language: repr round-trips exactly."""
    x = float(x)
    if not np.isfinite(x):
        raise ValueError(f"layer arguments must be finite, got {x}")
    return repr(x)


class _Graph:
    """Collects named nodes while a stax expression is compiled."""

    def __init__(self):
        self.nodes = []  # (name, op, inputs)
        self.parameterizations = set()

    def add(self, op, inputs):
        name = f"n{len(self.nodes)}"
        self.nodes.append((name, op, list(inputs)))
        return name


class Layer(tuple):
    """``(init_fn, apply_fn, kernel_fn)`` that also knows how to add itself to a graph (``emit``: a function of
    the graph being built and the input node names, returning the output node names)."""

    def __new__(cls, emit, name="layer"):
        def init_fn(rng, input_shape):
            """``(output_shape, params)`` for inputs of ``input_shape`` (batch axis first, e.g. ``(-1, 784)`` or
            ``(-1, 32, 32, 3)``). ``rng``: an int seed or a JAX/numpy PRNG key (two uint32 words); draws come
            from ntklab's generator (the same distributions as neural-tangents', not the same numbers). The
            params are an ``ntklab.Model``."""
            from ._core import Model

            arch, p = _compile(emit)
            shape = tuple(int(v) for v in input_shape)
            if len(shape) < 2 or any(v < 1 for v in shape[1:]):
                raise ValueError(f"input_shape must be (batch, d) or (batch, H, W, C), got {tuple(input_shape)}")
            model = Model.init(arch, p, "x".join(map(str, shape[1:])), _seed(rng))
            # (batch, k), or (batch, H, W, C) for a network that ends on an image, as neural-tangents.
            return (shape[0], *model.output_shape), model

        def apply_fn(params, inputs, **kwargs):
            """The network's outputs on ``inputs``: N x k numpy float64 (``precision='f32'`` for f32 lanes), or
            N x H x W x C for a network that ends on an image (a convolution or a dense layer on an image)."""
            precision = kwargs.pop("precision", "f64")
            # neural-tangents passes a PRNG key for stochastic layers (Dropout); ntklab's layers draw nothing.
            kwargs.pop("rng", None)
            if kwargs:
                raise TypeError(f"apply_fn: unsupported arguments {sorted(kwargs)}")
            if precision not in ("f64", "f32"):
                raise ValueError(f"precision must be 'f64' or 'f32', got {precision!r}")
            b, shape = examples_bytes(inputs, "inputs")
            data, rows, cols = params.apply(b, shape, precision == "f32")
            out = matrix_from_bytes(data, rows, cols, np.float32 if precision == "f32" else np.float64)
            return out.reshape((rows, *params.output_shape)) if len(params.output_shape) > 1 else out

        self = super().__new__(cls, (init_fn, apply_fn, _make_kernel_fn(emit)))
        self._emit = emit
        self._name = name
        return self

    def __repr__(self):
        return f"<ntklab.stax {self._name}>"


def _seed(rng):
    """A u64 seed from an int or a PRNG key (the words of a JAX key, or any integer array)."""
    if isinstance(rng, (int, np.integer)):
        if rng < 0:
            raise ValueError(f"a seed must be >= 0, got {rng}")
        return int(rng) % (1 << 64)
    if "key" in str(getattr(rng, "dtype", "")):  # a typed JAX key (jax.random.key): its words
        import jax

        rng = jax.random.key_data(rng)
    words = np.asarray(rng).astype(np.uint64).ravel()
    seed = 0
    for w in words:
        seed = ((seed << 32) | (int(w) & 0xFFFFFFFF)) % (1 << 64)
    return seed


def _layer(op, name, parameterization=None):
    """A one-input, one-output layer with architecture-language op `op`."""

    def emit(g, inputs):
        if len(inputs) != 1:
            raise ValueError(f"{name} takes one input, got {len(inputs)} (use a FanIn layer first)")
        if parameterization is not None:
            g.parameterizations.add(parameterization)
        return [g.add(op, inputs)]

    return Layer(emit, name)


def _check_parameterization(p):
    if p not in _PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {_PARAMETERIZATIONS}, got {p!r}")
    return p


# ---- combinators -------------------------------------------------------------------------------------------


def serial(*layers):
    """Layers one after another."""
    layers = [_as_layer(l, "serial") for l in layers]

    def emit(g, inputs):
        for l in layers:
            inputs = l._emit(g, inputs)
        return inputs

    return Layer(emit, "serial")


def parallel(*layers):
    """Layers side by side: the i-th input goes through the i-th layer."""
    layers = [_as_layer(l, "parallel") for l in layers]

    def emit(g, inputs):
        if len(inputs) != len(layers):
            raise ValueError(f"parallel of {len(layers)} layers got {len(inputs)} inputs (use FanOut first)")
        out = []
        for l, x in zip(layers, inputs):
            out.extend(l._emit(g, [x]))
        return out

    return Layer(emit, "parallel")


def FanOut(num):
    """``num`` copies of the input."""
    num = int(num)
    if num < 1:
        raise ValueError(f"FanOut needs at least one branch, got {num}")

    def emit(g, inputs):
        if len(inputs) != 1:
            raise ValueError(f"FanOut takes one input, got {len(inputs)}")
        return inputs * num

    return Layer(emit, "FanOut")


def FanInSum():
    """The sum of the inputs."""

    def emit(g, inputs):
        return [g.add("sum", inputs)] if len(inputs) > 1 else inputs

    return Layer(emit, "FanInSum")


def FanInConcat(axis=-1):
    """The inputs concatenated along the channel axis (the last one): any branches, activations included (the
    kernel is the branches' kernels weighted by width), read by a Dense, Conv or pooling layer."""
    if axis != -1:
        raise ValueError("FanInConcat: only the channel axis (axis=-1) is supported")

    def emit(g, inputs):
        return [g.add("concat", inputs)] if len(inputs) > 1 else inputs

    return Layer(emit, "FanInConcat")


def Identity():
    """The input unchanged."""
    return Layer(lambda g, inputs: inputs, "Identity")


def _as_layer(l, where):
    if not isinstance(l, Layer):
        raise TypeError(f"{where} takes ntklab.stax layers, got {type(l).__name__}")
    return l


# ---- linear layers -----------------------------------------------------------------------------------------


def _count(v, name):
    """A positive integer argument (a width or channel count), refusing fractions rather than truncating them."""
    if isinstance(v, (bool, np.bool_)) or not float(v).is_integer() or int(v) < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _stds(W_std, b_std):
    s = f"w_std={_num(W_std)}"
    if b_std is not None:
        s += f",b_std={_num(b_std)}"
    return s


def _check_s(s, parameterization, name):
    """neural-tangents' width scalings ``s`` act only in the standard parameterization; (1, 1) is the plain one."""
    if parameterization == "standard" and tuple(s) != (1, 1):
        raise ValueError(f"{name}: width scalings s other than (1, 1) are not supported, got {tuple(s)}")


def Dense(out_dim, W_std=1.0, b_std=None, batch_axis=0, channel_axis=-1, parameterization="ntk", s=(1, 1)):
    """Fully connected: ``W_std / sqrt(n_in) W x + b_std b`` (ntk) or its standard parameterization. On
    ``N x H x W x C`` inputs it maps the channel axis at every position (a 1 x 1 convolution), as in
    neural-tangents. ``s``: neural-tangents' width scalings of the standard parameterization, (1, 1) only
    (ignored with ntk, as there)."""
    if batch_axis != 0 or channel_axis != -1:
        raise ValueError("Dense: only batch_axis=0 and channel_axis=-1 are supported")
    p = _check_parameterization(parameterization)
    _check_s(s, p, "Dense")
    return _layer(f"dense({_count(out_dim, 'out_dim')},{_stds(W_std, b_std)})", "Dense", p)


def _shape_arg(v, name):
    v = tuple(int(s) for s in v)
    if not v or any(s < 1 for s in v):
        raise ValueError(f"{name} must be positive integers, got {v}")
    return "x".join(str(s) for s in v)


def _window_strides(window, strides, name):
    """The strides of a window (ones by default), one per window axis as neural-tangents requires."""
    if strides is None:
        return (1,) * len(tuple(window))
    if len(tuple(strides)) != len(tuple(window)):
        raise ValueError(f"{name}: strides {tuple(strides)} must have one entry per window axis {tuple(window)}")
    return strides


def _padding(padding, allowed):
    p = str(padding).upper()
    if p not in allowed:
        raise ValueError(f"padding must be one of {allowed}, got {padding!r}")
    return p.lower()


def Conv(out_chan, filter_shape, strides=None, padding="VALID", W_std=1.0, b_std=None, dimension_numbers=None,
         parameterization="ntk", s=(1, 1)):
    """Convolution on NHWC (or NWC) inputs, as neural-tangents' ``Conv`` (``s`` as in ``Dense``)."""
    if dimension_numbers not in (None, ("NHWC", "HWIO", "NHWC"), ("NWC", "WIO", "NWC")):
        raise ValueError("Conv: only NHWC / NWC inputs are supported (dimension_numbers=None)")
    p = _check_parameterization(parameterization)
    _check_s(s, p, "Conv")
    strides = _window_strides(filter_shape, strides, "Conv")
    op = (f"conv({_count(out_chan, 'out_chan')},{_shape_arg(filter_shape, 'filter_shape')},"
          f"stride={_shape_arg(strides, 'strides')},"
          f"padding={_padding(padding, ('VALID', 'SAME', 'CIRCULAR'))},{_stds(W_std, b_std)})")
    return _layer(op, "Conv", p)


def AvgPool(window_shape, strides=None, padding="VALID", normalize_edges=False, batch_axis=0, channel_axis=-1):
    """Average pooling (divides by the window size; padding counts)."""
    if normalize_edges:
        raise ValueError("AvgPool: normalize_edges=True is not supported")
    if batch_axis != 0 or channel_axis != -1:
        raise ValueError("AvgPool: only batch_axis=0 and channel_axis=-1 are supported")
    strides = _window_strides(window_shape, strides, "AvgPool")
    op = (f"avg_pool({_shape_arg(window_shape, 'window_shape')},stride={_shape_arg(strides, 'strides')},"
          f"padding={_padding(padding, ('VALID', 'SAME'))})")
    return _layer(op, "AvgPool")


def GlobalAvgPool(batch_axis=0, channel_axis=-1):
    """The mean over every spatial position."""
    if batch_axis != 0 or channel_axis != -1:
        raise ValueError("GlobalAvgPool: only batch_axis=0 and channel_axis=-1 are supported")
    return _layer("global_avg_pool", "GlobalAvgPool")


def Flatten(batch_axis=0, batch_axis_out=0):
    """Spatial positions and channels as one feature axis."""
    if batch_axis != 0 or batch_axis_out != 0:
        raise ValueError("Flatten: only batch_axis=0 is supported")
    return _layer("flatten", "Flatten")


# ---- activations -------------------------------------------------------------------------------------------


# neural-tangents' do_stabilize rescales the arccos duals' arguments for float32 stability; ntklab's duals are
# evaluated stably whatever it says, so the flag is accepted and has no effect.


def Relu(do_stabilize=False):
    """max(x, 0) (arc-cosine dual of degree 1). ``do_stabilize`` is accepted for compatibility; no effect."""
    return _layer("relu", "Relu")


def LeakyRelu(alpha, do_stabilize=False):
    """max(x, alpha x). ``do_stabilize`` is accepted for compatibility; no effect."""
    return _layer(f"leaky_relu(a={_num(alpha)})", "LeakyRelu")


def ABRelu(a, b, do_stabilize=False):
    """a min(x, 0) + b max(x, 0). ``do_stabilize`` is accepted for compatibility; no effect."""
    return _layer(f"abrelu(a={_num(a)},b={_num(b)})", "ABRelu")


def Abs(do_stabilize=False):
    """|x|. ``do_stabilize`` is accepted for compatibility; no effect."""
    return _layer("abs", "Abs")


def Erf(a=1.0, b=1.0, c=0.0):
    """a erf(b x) + c."""
    return _layer(f"erf(a={_num(a)},b={_num(b)},c={_num(c)})", "Erf")


def Sigmoid_like():
    """erf(x / 2.4020563531719796) / 2 + 1/2, neural-tangents' erf stand-in for the logistic sigmoid."""
    return _layer("sigmoid_like", "Sigmoid_like")


def Gelu(approximate=False):
    """x Phi(x) (the exact Gelu; ``approximate=True``, the tanh form, is not available)."""
    if approximate:
        raise ValueError("Gelu: only the exact Gelu (approximate=False) is available")
    return _layer("gelu", "Gelu")


def Sin(a=1.0, b=1.0, c=0.0):
    """a sin(b x + c)."""
    return _layer(f"sin(a={_num(a)},b={_num(b)},c={_num(c)})", "Sin")


def Cos(a=1.0, b=1.0, c=0.0):
    """a cos(b x + c)."""
    return _layer(f"cos(a={_num(a)},b={_num(b)},c={_num(c)})", "Cos")


def Rbf(gamma=1.0):
    """sqrt(2) sin(sqrt(2 gamma) x + pi/4), neural-tangents' Rbf (its NNGP is RBF-like, exp(-gamma |x - x'|^2))."""
    return _layer(f"rbf(gamma={_num(gamma)})", "Rbf")


def Exp(a=1.0, b=1.0):
    """a exp(b x)."""
    return _layer(f"exp(a={_num(a)},b={_num(b)})", "Exp")


def Monomial(degree):
    """x^degree (a non-negative integer degree)."""
    return _layer(f"monomial(k={_num(degree)})", "Monomial")


def Sign():
    """sign(x)."""
    return _layer("sign", "Sign")


def Tanh():
    """tanh (not in neural-tangents; its dual by quadrature)."""
    return _layer("tanh", "Tanh")


def Softplus():
    """log(1 + e^x) (not in neural-tangents; its dual by quadrature)."""
    return _layer("softplus", "Softplus")


def Silu():
    """x sigmoid(x) (not in neural-tangents; its dual by quadrature)."""
    return _layer("silu", "Silu")


def Elu(alpha=1.0):
    """ELU (not in neural-tangents; its dual by quadrature)."""
    return _layer(f"elu(alpha={_num(alpha)})", "Elu")


# ---- compilation and kernel_fn -----------------------------------------------------------------------------


def _compile(emit):
    """The architecture-language text and parameterization of a stax expression."""
    g = _Graph()
    outputs = emit(g, ["input"])
    if len(outputs) != 1:
        raise ValueError(f"the network ends in {len(outputs)} branches: join them with FanInSum or FanInConcat")
    if not g.nodes or outputs[0] == "input":
        raise ValueError("the network has no layer between its input and its output")
    if len(g.parameterizations) > 1:
        raise ValueError("layers with different parameterizations in one network are not supported")
    p = next(iter(g.parameterizations), "ntk")
    names = {name for name, _, _ in g.nodes}
    # A chain (each node reads the previous one) uses the chain form, which has the fused fast path.
    chain = all(ins == ([g.nodes[i - 1][0]] if i else ["input"]) for i, (_, _, ins) in enumerate(g.nodes))
    if chain and outputs[0] == g.nodes[-1][0]:
        return ",".join(op for _, op, _ in g.nodes), p
    # Only nodes the output depends on are kept; the output node is the last one listed.
    needed, stack = set(), [outputs[0]]
    while stack:
        n = stack.pop()
        if n in needed or n not in names:
            continue
        needed.add(n)
        stack.extend(next(ins for name, _, ins in g.nodes if name == n))
    items = [f"node({name},{op},{','.join(ins)})" for name, op, ins in g.nodes if name in needed]
    return ",".join(items), p


def _make_kernel_fn(emit):
    def kernel_fn(x1, x2=None, get=None, *, precision="f64", diagonal_batch=True, diagonal_spatial=False):
        """NNGP and/or NTK of the infinite-width network on ``x1`` (and ``x2``): numpy arrays of N1 x N2, or of
        N1 x N2 x spatial axes for a network that ends on an image.

        A network that ends on an image (a convolution, or a dense layer on an image) gives, as neural-tangents,
        the covariances between its output positions: N1 x N2 x H x H' x W x W' (each spatial axis of x1's
        example, then of x2's), or N1 x N2 x H x W with ``diagonal_spatial=True`` (each position with itself).
        The spatial axes always come in input order (neural-tangents' ``is_reversed=False``; after an odd number
        of convolutions neural-tangents gives them reversed and says so in ``is_reversed``).

        ``get``: 'nngp', 'ntk', or a tuple of them (default both, as a named tuple ``Kernel``).
        ``precision``: 'f64' (default) or 'f32' (computed and returned in float32).
        ``diagonal_batch``: accepted for neural-tangents scripts (a memory hint there; the result is the same).
        ``diagonal_spatial``: for a network that ends on an image, only each output position with itself;
        otherwise the kernel is the same either way.
        """
        arch, p = _compile(emit)
        if precision not in ("f64", "f32"):
            raise ValueError(f"precision must be 'f64' or 'f32', got {precision!r}")
        b1, s1 = examples_bytes(x1, "x1")
        b2, s2 = examples_bytes(x2, "x2") if x2 is not None else (None, None)
        nngp, ntk, dims = _core.kernel(arch, p, b1, s1, b2, s2, precision == "f32", bool(diagonal_spatial))
        n2 = s2[0] if s2 is not None else s1[0]
        dtype = np.float32 if precision == "f32" else np.float64
        if dims:
            # Row-major N1 x N2 x spatial axes; the bytearrays are writable, so numpy shares them.
            shape = (s1[0], n2, *dims)
            k = Kernel(*(np.frombuffer(b, dtype=dtype).reshape(shape) for b in (nngp, ntk)))
        else:
            # Fortran order: the core writes the kernels in place, column by column (values as in any order).
            k = Kernel(matrix_from_bytes(nngp, s1[0], n2, dtype, "F"), matrix_from_bytes(ntk, s1[0], n2, dtype, "F"))
        if get is None:
            return k
        if isinstance(get, str):
            if get not in Kernel._fields:
                raise ValueError(f"get must be 'nngp', 'ntk' or a tuple of them, got {get!r}")
            return getattr(k, get)
        get = tuple(get)
        for name in get:
            if name not in Kernel._fields:
                raise ValueError(f"get must be 'nngp', 'ntk' or a tuple of them, got {name!r}")
        return namedtuple("Kernel", get)(*(getattr(k, name) for name in get))

    kernel_fn.arch = lambda: _compile(emit)
    return kernel_fn
