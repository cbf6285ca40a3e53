"""A PyTorch reference for `[model] init = ...`: full-batch GD on a small nn.Sequential, step by step.

Writes crates/ntklab-cli/tests/fixtures/torch_gd/: x.npy (N x d), y.npy (N x 1), init.safetensors (the initial
state dict, nn.Sequential names, f64) and final.safetensors (after STEPS steps of torch.optim.SGD at LR on
L = (1/N) sum_i 0.5 (f(x_i) - y_i)^2, ntklab's MSE). ntklab trains the same network from init.safetensors with
the standard parameterization (effective weights = trained variables, as in PyTorch) and must land on
final.safetensors to rounding. Run: bench/.venv/bin/python tools/make_torch_gd_fixture.py (needs torch, numpy).
"""
import json
import os
import struct

import numpy as np
import torch

N, D, H, STEPS, LR = 20, 3, 16, 25, 0.3


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = t.detach().cpu().numpy().astype("<f8").tobytes()
        header[name] = {"dtype": "F64", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    torch.manual_seed(0)
    x = torch.randn(N, D, dtype=torch.float64)
    y = torch.sin(x[:, :1] * 1.5) + 0.3 * x[:, 1:2]
    net = torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.Tanh(), torch.nn.Linear(H, 1)).double()
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "ntklab-cli", "tests", "fixtures",
                       "torch_gd")
    np.save(os.path.join(out, "x.npy"), x.numpy())
    np.save(os.path.join(out, "y.npy"), y.numpy())
    save_safetensors(os.path.join(out, "init.safetensors"), net.state_dict())
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    for _ in range(STEPS):
        opt.zero_grad()
        loss = 0.5 * ((net(x) - y) ** 2).sum() / N
        loss.backward()
        opt.step()
    save_safetensors(os.path.join(out, "final.safetensors"), net.state_dict())
    print("final loss", float(0.5 * ((net(x) - y) ** 2).sum() / N))


if __name__ == "__main__":
    main()
