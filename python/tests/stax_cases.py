"""Networks written once with stax names: the neural-tangents fixtures (tools/make_nt_stax_fixtures.py) build
them with neural_tangents.stax, the tests with ntklab.stax; nothing else differs."""

import numpy as np


def cases(stax):
    """name -> (layer, input shape per example)."""
    res = stax.serial(stax.Dense(6, W_std=1.3, b_std=0.2), stax.FanOut(2),
                      stax.parallel(stax.Identity(), stax.serial(stax.Relu(), stax.Dense(6, W_std=1.3, b_std=0.2))),
                      stax.FanInSum(), stax.Relu(), stax.Dense(1, W_std=1.3, b_std=0.2))
    return {
        "fc_relu": (stax.serial(stax.Dense(7, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(7, W_std=1.5, b_std=0.1),
                                stax.Relu(), stax.Dense(1, W_std=1.5, b_std=0.1)), (5,)),
        "fc_standard": (stax.serial(stax.Dense(7, W_std=1.2, b_std=0.3, parameterization="standard"), stax.Erf(),
                                    stax.Dense(1, W_std=0.9, parameterization="standard")), (5,)),
        "fc_activations": (stax.serial(stax.Dense(4, W_std=1.1, b_std=0.2), stax.Erf(a=1.3, b=0.7, c=0.2),
                                       stax.Dense(4), stax.ABRelu(-0.3, 0.8), stax.Dense(4, b_std=0.1),
                                       stax.Sin(a=1.1, b=0.9, c=0.3), stax.Dense(4), stax.LeakyRelu(0.2),
                                       stax.Dense(4), stax.Abs(), stax.Dense(4), stax.Gelu(), stax.Dense(4),
                                       stax.Sigmoid_like(), stax.Dense(4), stax.Cos(), stax.Dense(1)), (5,)),
        "fc_rbf_monomial": (stax.serial(stax.Dense(4, W_std=0.8), stax.Rbf(gamma=0.7), stax.Dense(4, W_std=0.9),
                                        stax.Monomial(2), stax.Dense(4), stax.Sign(), stax.Dense(1)), (5,)),
        "residual": (res, (5,)),
        "concat": (stax.serial(stax.Dense(5, W_std=1.2), stax.FanOut(2),
                               stax.parallel(stax.serial(stax.Relu(), stax.Dense(3, W_std=1.4)),
                                             stax.serial(stax.Erf(), stax.Dense(2, W_std=0.8, b_std=0.3))),
                               stax.FanInConcat(), stax.Dense(1, W_std=1.1, b_std=0.1)), (4,)),
        "cnn_gap": (stax.serial(stax.Conv(4, (3, 3), padding="SAME", W_std=1.3, b_std=0.2), stax.Relu(),
                                stax.Conv(4, (2, 2), strides=(1, 1), padding="VALID", W_std=1.3), stax.Erf(),
                                stax.GlobalAvgPool(), stax.Dense(1, W_std=1.2, b_std=0.1)), (5, 4, 2)),
        "cnn_flatten_pool": (stax.serial(stax.Conv(3, (3, 3), strides=(2, 1), padding="CIRCULAR", W_std=1.4,
                                                   b_std=0.1), stax.Relu(),
                                         stax.AvgPool((2, 2), strides=(1, 1), padding="SAME"), stax.Flatten(),
                                         stax.Dense(1, W_std=1.1)), (5, 4, 2)),
        "cnn_1d": (stax.serial(stax.Conv(3, (3,), padding="SAME", W_std=1.2, b_std=0.3), stax.Gelu(),
                               stax.Flatten(), stax.Dense(1)), (7, 2)),
        # Concatenations of activations (neural-tangents allows them along the channel axis), and Dense on
        # N x H x W x C (over the channel axis at every position).
        "concat_acts": (stax.serial(stax.Dense(5, W_std=1.2, b_std=0.1), stax.FanOut(2),
                                    stax.parallel(stax.Relu(), stax.serial(stax.Dense(3, W_std=0.9), stax.Erf())),
                                    stax.FanInConcat(), stax.Dense(1, W_std=1.1, b_std=0.1)), (4,)),
        "cnn_dense_concat": (stax.serial(stax.Conv(4, (3, 3), padding="SAME", W_std=1.3, b_std=0.2), stax.Relu(),
                                         stax.Dense(3, W_std=1.4, b_std=0.1), stax.FanOut(2),
                                         stax.parallel(stax.Relu(), stax.Erf()), stax.FanInConcat(),
                                         stax.Dense(2, W_std=1.1), stax.Relu(), stax.GlobalAvgPool(),
                                         stax.Dense(1, W_std=1.2, b_std=0.1)), (5, 4, 2)),
    }


def spatial_cases(stax):
    """Networks that end on an image (kernels between output positions): name -> (layer, input shape). Images
    taller than wide, so that swapped spatial axes show; one and two convolutions (neural-tangents reverses the
    axes after an odd number), pooling inside (full covariances kept), a dense layer on the image last."""
    return {
        "out_conv": (stax.serial(stax.Conv(3, (3, 3), padding="SAME", W_std=1.3, b_std=0.2)), (4, 3, 2)),
        "out_conv2": (stax.serial(stax.Conv(4, (3, 3), padding="SAME", W_std=1.3, b_std=0.2), stax.Relu(),
                                  stax.Conv(3, (2, 2), padding="VALID", W_std=1.1, b_std=0.1)), (4, 3, 2)),
        "out_pool_dense": (stax.serial(stax.Conv(4, (3, 2), padding="CIRCULAR", W_std=1.4), stax.Erf(),
                                       stax.AvgPool((2, 2), strides=(1, 1), padding="SAME"),
                                       stax.Dense(2, W_std=1.2, b_std=0.3)), (4, 3, 2)),
    }


def inputs(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((4,) + shape), rng.standard_normal((3,) + shape)
