"""Writes the real data sets bundled with ntklab (crates/ntklab/data/) from a scikit-learn wheel.

    pip download scikit-learn --no-deps -d /tmp/skl
    python tools/make_bundled_data.py /tmp/skl/scikit_learn-*.whl

Only the wheel's data files are read (no scikit-learn import). Credits and licenses: crates/ntklab/data/README.md.
"""
import gzip
import io
import sys
import zipfile


def main(wheel: str) -> None:
    z = zipfile.ZipFile(wheel)
    raw = gzip.decompress(z.read("sklearn/datasets/data/diabetes_data_raw.csv.gz")).decode().split("\n")
    target = gzip.decompress(z.read("sklearn/datasets/data/diabetes_target.csv.gz")).decode().split("\n")
    raw = [r.split() for r in raw if r.strip()]
    target = [t.strip() for t in target if t.strip()]
    assert len(raw) == len(target) == 442 and all(len(r) == 10 for r in raw)
    out = io.StringIO()
    out.write("age,sex,bmi,bp,s1,s2,s3,s4,s5,s6,y\n")
    for r, t in zip(raw, target):
        out.write(",".join(r) + "," + repr(int(float(t))) + "\n")
    open("crates/ntklab/data/diabetes.csv", "w").write(out.getvalue())

    digits = gzip.decompress(z.read("sklearn/datasets/data/digits.csv.gz")).decode().split("\n")
    rows = [d.strip() for d in digits if d.strip()]
    assert len(rows) == 1797
    for r in rows:
        v = [int(float(s)) for s in r.split(",")]
        assert len(v) == 65 and all(0 <= p <= 16 for p in v[:64]) and 0 <= v[64] <= 9
    open("crates/ntklab/data/digits.csv", "w").write(
        "".join(",".join(str(int(float(s))) for s in r.split(",")) + "\n" for r in rows)
    )


if __name__ == "__main__":
    main(sys.argv[1])
