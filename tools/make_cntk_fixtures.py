"""neural-tangents references for ntklab's convolutional kernels (kernel::cnn).

For each architecture below, on small random NHWC (or NWC) inputs, writes
crates/ntklab/tests/fixtures/cntk/<name>.npz with x (N x H x W x C), nngp and ntk (N x N), computed by
neural-tangents' kernel_fn in float64. The ntklab text of each architecture is in cases.txt (name | shape | arch |
parameterization). Run: bench/.venv/bin/python tools/make_cntk_fixtures.py (needs jax==0.4.23, neural-tangents).
"""
import os

import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from neural_tangents import stax

CASES = [
    # name, input shape (without N), ntklab arch, stax layers, parameterization
    ("flatten_same", (5, 4, 2),
     "conv(3,3x3,stride=1,padding=same,w_std=1.4,b_std=0.3),relu,conv(3,2x2,stride=1,padding=valid,w_std=1.2,b_std=0.1),erf,flatten,dense(1,w_std=1.1,b_std=0.2)",
     lambda: [stax.Conv(3, (3, 3), (1, 1), "SAME", W_std=1.4, b_std=0.3), stax.Relu(),
              stax.Conv(3, (2, 2), (1, 1), "VALID", W_std=1.2, b_std=0.1), stax.Erf(),
              stax.Flatten(), stax.Dense(1, W_std=1.1, b_std=0.2)], "ntk"),
    ("gap_strided", (6, 5, 3),
     "conv(4,3x3,stride=2,padding=same,w_std=1.3,b_std=0.2),relu,conv(4,2x2,stride=1,padding=circular,w_std=1.5),relu,global_avg_pool,dense(1,w_std=1.3,b_std=0.2)",
     lambda: [stax.Conv(4, (3, 3), (2, 2), "SAME", W_std=1.3, b_std=0.2), stax.Relu(),
              stax.Conv(4, (2, 2), (1, 1), "CIRCULAR", W_std=1.5, b_std=None), stax.Relu(),
              stax.GlobalAvgPool(), stax.Dense(1, W_std=1.3, b_std=0.2)], "ntk"),
    ("pool_residual", (6, 6, 2),
     "conv(3,3x3,stride=1,padding=same,w_std=1.3,b_std=0.2),residual(relu,conv(3,3x3,stride=1,padding=same,w_std=1.3,b_std=0.2)),avg_pool(2x2,stride=2,padding=valid),relu,global_avg_pool,dense(1,w_std=1.3,b_std=0.2)",
     lambda: [stax.Conv(3, (3, 3), (1, 1), "SAME", W_std=1.3, b_std=0.2),
              stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(),
                          stax.serial(stax.Relu(), stax.Conv(3, (3, 3), (1, 1), "SAME", W_std=1.3, b_std=0.2))),
                          stax.FanInSum()),
              stax.AvgPool((2, 2), (2, 2), "VALID"), stax.Relu(), stax.GlobalAvgPool(),
              stax.Dense(1, W_std=1.3, b_std=0.2)], "ntk"),
    ("conv1d_standard", (7, 2),
     "conv(5,3,stride=1,padding=same,w_std=1.2,b_std=0.4),erf,conv(5,3,stride=2,padding=valid,w_std=1.1,b_std=0.1),relu,flatten,dense(1,w_std=1.0,b_std=0.3)",
     lambda: [stax.Conv(5, (3,), (1,), "SAME", W_std=1.2, b_std=0.4, parameterization="standard"), stax.Erf(),
              stax.Conv(5, (3,), (2,), "VALID", W_std=1.1, b_std=0.1, parameterization="standard"), stax.Relu(),
              stax.Flatten(), stax.Dense(1, W_std=1.0, b_std=0.3, parameterization="standard")], "standard"),
]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "..", "crates", "ntklab", "tests", "fixtures", "cntk")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for name, shape, arch, layers, param in CASES:
        x = rng.standard_normal((4,) + shape)
        _, _, kernel_fn = stax.serial(*layers())
        k = kernel_fn(x, None, ("nngp", "ntk"))
        np.savez(os.path.join(out, name + ".npz"), x=x, nngp=np.asarray(k.nngp), ntk=np.asarray(k.ntk))
        lines.append(f"{name} | {'x'.join(map(str, shape))} | {arch} | {param}")
        print(name, np.asarray(k.ntk)[0, :2])
    with open(os.path.join(out, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
