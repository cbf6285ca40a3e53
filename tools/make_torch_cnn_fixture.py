"""PyTorch references for convolutional model files: two small nn.Sequential CNNs in float64, their outputs and
the gradients of sum(outputs) with respect to every parameter.

Writes crates/ntklab-cli/tests/fixtures/torch_cnn/:
- x2d.npy (N x 6 x 6 x 3, NHWC as ntklab and neural-tangents take images), cnn2d.safetensors (the state dict of
  Conv2d(3,4,3,padding=1), Tanh, Conv2d(4,5,2,stride=2), ReLU, Flatten, Linear(45,2)), f2d.npy (N x 2, the
  model on x2d.permute(0,3,1,2)), g2d.safetensors (d sum(f) / d parameter, same names);
- x1d.npy (N x 20 x 2, NWC), cnn1d.safetensors (Conv1d(2,3,3), Tanh, AvgPool1d(2), Flatten, Linear(27,1)),
  f1d.npy, g1d.safetensors.
ntklab loads the state dicts with the standard parameterization (raw variables = PyTorch's) and must reproduce
the outputs and gradients to rounding. Run: bench/.venv/bin/python tools/make_torch_cnn_fixture.py.
"""
import os

import numpy as np
import torch

from make_torch_gd_fixture import save_safetensors  # the same f64 safetensors writer

N = 5


def write(out, tag, net, x_channels_last, perm):
    x = torch.from_numpy(x_channels_last)
    f = net(x.permute(*perm).contiguous())
    f.sum().backward()
    np.save(os.path.join(out, f"x{tag}.npy"), x_channels_last)
    np.save(os.path.join(out, f"f{tag}.npy"), f.detach().numpy())
    save_safetensors(os.path.join(out, f"cnn{tag}.safetensors"), net.state_dict())
    save_safetensors(os.path.join(out, f"g{tag}.safetensors"), {k: p.grad for k, p in net.named_parameters()})


def main():
    torch.manual_seed(0)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "ntklab-cli", "tests", "fixtures",
                       "torch_cnn")
    nn = torch.nn
    net2 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 5, 2, stride=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(45, 2)).double()
    write(out, "2d", net2, np.random.default_rng(1).standard_normal((N, 6, 6, 3)), (0, 3, 1, 2))
    net1 = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Tanh(), nn.AvgPool1d(2), nn.Flatten(), nn.Linear(27, 1)).double()
    write(out, "1d", net1, np.random.default_rng(2).standard_normal((N, 20, 2)), (0, 2, 1))


if __name__ == "__main__":
    main()
