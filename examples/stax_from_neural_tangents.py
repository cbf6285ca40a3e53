"""A neural-tangents script with only its import changed: infinite-width GP and NTK predictions of a small
residual CNN on synthetic images, and of a 3-layer ReLU MLP on the same data flattened.

    pip install ./python && python examples/stax_from_neural_tangents.py
"""

import numpy as np

from ntklab import stax  # was: from neural_tangents import stax

rng = np.random.default_rng(0)
x_train = rng.standard_normal((64, 8, 8, 3))
x_test = rng.standard_normal((16, 8, 8, 3))
y_train = np.sin(x_train.mean(axis=(1, 2, 3)) * 4.0)[:, None]
y_test = np.sin(x_test.mean(axis=(1, 2, 3)) * 4.0)[:, None]

block = stax.serial(stax.Relu(), stax.Conv(16, (3, 3), padding="SAME", W_std=1.5, b_std=0.1))
_, _, cnn_kernel_fn = stax.serial(
    stax.Conv(16, (3, 3), padding="SAME", W_std=1.5, b_std=0.1),
    stax.FanOut(2), stax.parallel(stax.Identity(), block), stax.FanInSum(),
    stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1, W_std=1.5, b_std=0.1),
)
_, _, mlp_kernel_fn = stax.serial(
    stax.Flatten(), stax.Dense(512, W_std=1.5, b_std=0.1), stax.Relu(),
    stax.Dense(512, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1, W_std=1.5, b_std=0.1),
)

for name, kernel_fn in [("residual CNN, GAP", cnn_kernel_fn), ("MLP on flattened images", mlp_kernel_fn)]:
    k_train = kernel_fn(x_train, None)
    k_test = kernel_fn(x_test, x_train)
    for kind in ("nngp", "ntk"):
        # The t -> infinity mean prediction of gradient flow on MSE (NTK), or the GP posterior mean (NNGP).
        kt, ks = getattr(k_train, kind), getattr(k_test, kind)
        mean = ks @ np.linalg.solve(kt + 1e-8 * np.eye(len(kt)), y_train)
        rmse = float(np.sqrt(np.mean((mean - y_test) ** 2)))
        print(f"{name:24s} {kind}: test RMSE {rmse:.4f} (predicting 0: {float(np.sqrt(np.mean(y_test ** 2))):.4f})")
