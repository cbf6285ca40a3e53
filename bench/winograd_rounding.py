"""Rounding of Winograd's minimal filtering in float32 against the direct sums, for one 3 x 3 convolution summed
over C channels (bench/RESULTS.md section 6, "What is left"): F(2 x 2, 3 x 3) with the points 0, 1, -1, infinity
(ntklab's transforms) and F(4 x 4, 3 x 3) with 0, +-1, +-2, infinity (Lavin and Gray, 2016), each on a 6 x 6
patch (four F(2 x 2) tiles or one F(4 x 4) tile), N(0, 1) inputs and weights scaled by 1 / sqrt(9 C) so outputs
are of size ~1. The kernel transform is done in float64 and rounded once, as ntklab does; everything else in
float32. Prints the mean and largest absolute error against float64 direct sums over 300 draws.

Usage: bench/.venv/bin/python bench/winograd_rounding.py
"""
import numpy as np

BT2 = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], float)
G2 = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
AT2 = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], float)
BT4 = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], float)
G4 = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
               [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
AT4 = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], float)
F32 = np.float32


def winograd(bt, g_mat, at, d, g):
    """A^T [sum over channels (G g G^T) ⊙ (B^T d B)] A in float32 (G g G^T from float64)."""
    u = np.einsum("ij,cjk,lk->cil", g_mat, g, g_mat).astype(F32)
    v = np.einsum("ij,cjk,lk->cil", bt.astype(F32), d.astype(F32), bt.astype(F32)).astype(F32)
    m = (u * v).sum(0, dtype=F32)
    return at.astype(F32) @ m @ at.astype(F32).T


def direct(d, g, dtype):
    out = np.zeros((4, 4), dtype)
    for i in range(4):
        for j in range(4):
            out[i, j] = (d[:, i:i + 3, j:j + 3].astype(dtype) * g.astype(dtype)).sum(dtype=dtype)
    return out


def main():
    rng = np.random.default_rng(0)
    print("| channels | direct, float32 | F(2 x 2, 3 x 3) | F(4 x 4, 3 x 3) |\n|---|---|---|---|")
    for c in (16, 64):
        err = {"direct": [], "f2": [], "f4": []}
        for _ in range(300):
            g = rng.standard_normal((c, 3, 3)) / np.sqrt(9 * c)
            d = rng.standard_normal((c, 6, 6))
            ref = direct(d, g, np.float64)
            f2 = np.block([[winograd(BT2, G2, AT2, d[:, 2 * a:2 * a + 4, 2 * b:2 * b + 4], g) for b in range(2)]
                           for a in range(2)])
            for k, y in (("direct", direct(d, g, F32)), ("f2", f2), ("f4", winograd(BT4, G4, AT4, d, g))):
                err[k].append(np.abs(y - ref).max())
        cells = " | ".join(f"{np.mean(v):.1e} (max {np.max(v):.1e})" for v in err.values())
        print(f"| {c} | {cells} |")


if __name__ == "__main__":
    main()
