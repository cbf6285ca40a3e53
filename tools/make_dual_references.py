"""High-precision references for every closed-form activation dual, from q = 1e-8 to q = 1e12.

Writes crates/ntklab/tests/fixtures/dual_references.npy (rows: activation index, s11, s12, s22, T, Tdot,
T scale, Tdot scale, T spread, Tdot spread) and dual_references.txt (the activation of each index, in ntklab's
syntax). The f64 inputs are taken as exact and every formula is evaluated with mpmath at 60 digits, then rounded
once to f64. The scales are the Cauchy-Schwarz bounds sqrt(T(s11,s11,s11) T(s22,s22,s22)) (same for Tdot) that
the test measures errors against; the spreads are the conditioning of each entry: the largest change of T (Tdot)
when one of s11, s12, s22 moves by 4 units in the last place (s12 kept within the Cauchy-Schwarz bound). No f64
algorithm can promise more than that, since its inputs are only known to rounding. Run: bench/.venv/bin/python tools/make_dual_references.py (needs numpy and mpmath).
"""
import os

import mpmath as mp
import numpy as np

mp.mp.dps = 60
PI = mp.pi


def relu_family(a, b):
    def f(s11, s12, s22):
        q = s11 * s22
        if q <= 0:
            return (mp.mpf(0), mp.mpf(1) / 4)
        c = max(min(s12 / mp.sqrt(q), 1), -1)
        th = mp.acos(c)
        t = mp.sqrt(q) * (mp.sin(th) + (PI - th) * c) / (2 * PI)
        td = (PI - th) / (2 * PI)
        d = (b - a) ** 2
        return (a * b * s12 + d * t, a * b + d * td)
    return f


def erf(a, b, c):
    def f(s11, s12, s22):
        b2 = b * b
        p1, p2 = 1 + 2 * b2 * s11, 1 + 2 * b2 * s22
        t = a * a * (2 / PI) * mp.asin(2 * b2 * s12 / mp.sqrt(p1 * p2)) + c * c
        td = 4 * a * a * b2 / PI / mp.sqrt(p1 * p2 - 4 * b2 * b2 * s12 * s12)
        return (t, td)
    return f


def gelu(s11, s12, s22):
    a, b = 1 + s11, 1 + s22
    ab = a * b
    r = mp.sqrt(ab - s12 * s12)
    asn = mp.asin(s12 / mp.sqrt(ab))
    t = s12 / 4 + (s12 * asn + r * (s11 * s22 - 1) / ab + 1 / r) / (2 * PI)
    td = mp.mpf(1) / 4 + (asn + s12 / r ** 3 + s12 * (1 / a + 1 / b) / r) / (2 * PI)
    return (t, td)


def sin(a, b, c):
    def f(s11, s12, s22):
        b2 = b * b
        ep = mp.exp(-b2 * (s11 + s22 - 2 * s12) / 2)
        em = mp.exp(-b2 * (s11 + s22 + 2 * s12) / 2)
        c2 = mp.cos(2 * c)
        return (a * a * (ep - c2 * em) / 2, a * a * b2 * (ep + c2 * em) / 2)
    return f


def rbf(g):
    def f(s11, s12, s22):
        t = mp.exp(-g * (s11 + s22 - 2 * s12))
        return (t, 2 * g * t)
    return f


def exp(a, b):
    def f(s11, s12, s22):
        t = a * a * mp.exp(b * b * (s11 + s22 + 2 * s12) / 2)
        return (t, b * b * t)
    return f


def monomial(k):
    def moment(k, s11, s12, s22):
        acc = mp.mpf(0)
        for m in range(k % 2, k + 1, 2):
            j = (k - m) // 2
            coef = mp.factorial(k) / (mp.factorial(m) * mp.factorial(j) * 2 ** j)
            acc += coef * coef * mp.factorial(m) * s12 ** m * (s11 * s22) ** j
        return acc

    def f(s11, s12, s22):
        t = moment(k, s11, s12, s22)
        td = 0 if k == 0 else k * k * moment(k - 1, s11, s12, s22)
        return (t, mp.mpf(td))
    return f


def sign(s11, s12, s22):
    q = s11 * s22
    if q <= 0:
        return (mp.mpf(0), mp.mpf(0))
    return ((2 / PI) * mp.asin(max(min(s12 / mp.sqrt(q), 1), -1)), mp.mpf(0))


M = mp.mpf
ACTS = [
    ("relu", relu_family(M(0), M(1))),
    ("leaky_relu(0.1)", relu_family(M("0.1"), M(1))),
    ("abrelu(-0.3,0.8)", relu_family(M("-0.3"), M("0.8"))),
    ("abs", relu_family(M(-1), M(1))),
    ("erf(1.3,0.7,0.2)", erf(M("1.3"), M("0.7"), M("0.2"))),
    ("sigmoid_like", erf(M("0.5"), 1 / M(2.4020563531719796), M("0.5"))),
    ("gelu", gelu),
    ("sin(1.1,0.9,0.3)", sin(M("1.1"), M("0.9"), M("0.3"))),
    ("cos(0.8,1.2,-0.4)", sin(M("0.8"), M("1.2"), M("-0.4") + PI / 2)),
    ("identity", lambda s11, s12, s22: (s12, M(1))),
    ("rbf(0.6)", rbf(M("0.6"))),
    ("exp(0.7,0.5)", exp(M("0.7"), M("0.5"))),
] + [(f"monomial({k})", monomial(k)) for k in range(6)] + [("sign", sign)]


def to_f64(x):
    x = mp.mpf(x)
    if abs(x) > mp.mpf(np.finfo(np.float64).max):
        return float("inf") if x > 0 else float("-inf")
    return float(x)


def main():
    rows = []
    scales = [1e-8, 1e-4, 1.0, 1e4, 1e8, 1e12]
    ratios = [1.0, 10.0]
    rhos = [-1.0, -0.999999, -0.5, 0.0, 0.3, 0.999999, 1 - 1e-12, 1.0]
    for i, (_, f) in enumerate(ACTS):
        for q in scales:
            for r in ratios:
                for rho in rhos:
                    s11, s22 = q, q * r
                    s12 = float(np.float64(rho) * np.sqrt(np.float64(s11) * np.float64(s22)))
                    s12 = max(min(s12, float(np.sqrt(s11 * s22))), -float(np.sqrt(s11 * s22)))
                    a, b, c = M(s11), M(s12), M(s22)
                    t, td = f(a, b, c)
                    t1, td1 = f(a, a, a)
                    t2, td2 = f(c, c, c)
                    spread_t, spread_td = mp.mpf(0), mp.mpf(0)
                    u = mp.mpf(2) ** -53 * 4
                    for k in range(3):
                        for sgn in (-1, 1):
                            v = [a, b, c]
                            v[k] = v[k] * (1 + sgn * u)
                            bound = mp.sqrt(v[0] * v[2])
                            v[1] = max(min(v[1], bound), -bound)
                            tp, tdp = f(*v)
                            spread_t = max(spread_t, abs(tp - t))
                            spread_td = max(spread_td, abs(tdp - td))
                    rows.append([i, s11, s12, s22, to_f64(t), to_f64(td),
                                 to_f64(mp.sqrt(abs(t1 * t2))), to_f64(mp.sqrt(abs(td1 * td2))),
                                 to_f64(spread_t), to_f64(spread_td)])
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "..", "crates", "ntklab", "tests", "fixtures")
    np.save(os.path.join(out, "dual_references.npy"), np.array(rows, dtype=np.float64))
    with open(os.path.join(out, "dual_references.txt"), "w") as fh:
        fh.write("\n".join(name for name, _ in ACTS) + "\n")
    print(len(rows), "rows")


if __name__ == "__main__":
    main()
