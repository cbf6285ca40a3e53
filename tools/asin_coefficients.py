#!/usr/bin/env python3
# Prints the coefficients of crates/ntklab/src/kernel/fastmath.rs (run: python3 tools/asin_coefficients.py).
# Chebyshev economization of P(z) = (asin(sqrt z)/sqrt z - 1)/z on z in [0, 1/4], exact rationals.
from fractions import Fraction as F
from math import comb
import sys
M = 44
c = []
a = F(1)
for k in range(1, M + 2):
    a = a * (2*k - 1) / (2*k)
    c.append(a / (2*k + 1))          # c[k-1] = coefficient of s^(2k+1)
P = c[:M+1]                          # P(z) = sum_j P[j] z^j, j = 0..M
# Q(t) = P((t+1)/8): monomials in t
Q = [F(0)] * (M + 1)
for j, pj in enumerate(P):
    f = pj / F(8) ** j
    for i in range(j + 1):
        Q[i] += f * comb(j, i)
# monomials in t -> Chebyshev: t^n = 2^(1-n) sum_{k} binom(n,k) T_{|n-2k|} (half weight for T0)
def cheb_of_mono(Q):
    C = [F(0)] * len(Q)
    for n, q in enumerate(Q):
        if q == 0: continue
        for k in range(n + 1):
            m = abs(n - 2*k)
            w = F(comb(n, k), 2**n)
            C[m] += q * w
    return C
C = cheb_of_mono(Q)
def mono_of_cheb(C):
    # T_0 = 1, T_1 = t, T_{n+1} = 2 t T_n - T_{n-1}
    n = len(C)
    T = [[F(1)], [F(0), F(1)]]
    while len(T) < n:
        a, b = T[-1], T[-2]
        nxt = [F(0)] + [2 * x for x in a]
        for i, x in enumerate(b): nxt[i] -= x
        T.append(nxt)
    R = [F(0)] * n
    for k, ck in enumerate(C):
        for i, x in enumerate(T[k]): R[i] += ck * x
    return R
def to_z(R):
    # t = 8 z - 1
    out = [F(0)] * len(R)
    for i, r in enumerate(R):
        for m in range(i + 1):
            out[m] += r * comb(i, m) * F(8) ** m * (-1) ** (i - m)
    return out
for tol, name in [(F(1, 10**17), "f64"), (F(2, 10**8), "f32")]:
    # drop the highest Chebyshev terms while the dropped sum stays below tol
    n = len(C)
    dropped = F(0)
    while n > 1 and dropped + abs(C[n - 1]) < tol:
        dropped += abs(C[n - 1]); n -= 1
    Z = to_z(mono_of_cheb(C[:n]))
    print(name, "degree", n - 1, "dropped", float(dropped))
    print(", ".join(repr(float(z)) for z in Z))
    # check against exact series at many points (float evaluation of rational)
    import random
    worst = 0
    for i in range(2001):
        zz = F(i, 8000)
        exact = sum(p * zz**j for j, p in enumerate(P))
        approx = sum(F(float(z)) * zz**j for j, z in enumerate(Z))
        worst = max(worst, abs(exact - approx))
    print("max |dP| with f64-rounded coeffs:", float(worst))
