"""Training runs and reproductions from Python: the same run folders as ``ntklab train`` and ``ntklab run``
(written by the same library code), their results read back as Python objects."""

import json
import os
from pathlib import Path

from . import _core

__all__ = ["train", "run", "experiments", "experiment_config", "TrainRun", "Reproduction"]

class _Pair(tuple):
    """A pair that unpacks as two values (``a, b = result``) and carries more results as attributes."""

    _fields = ()  # the pair's two names
    _extra = ()  # the attributes' names

    def __new__(cls, *values):
        self = super().__new__(cls, values[:2])
        for name, v in zip(cls._extra, values[2:]):
            setattr(self, name, v)
        return self

    def __getattr__(self, name):
        if name in type(self)._fields:
            return self[type(self)._fields.index(name)]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __getnewargs__(self):
        return (*self, *(getattr(self, n) for n in self._extra))

    def __repr__(self):
        return f"{type(self).__name__}({self._fields[0]}=..., {self._fields[1]}={self[1]!r})"


class TrainRun(_Pair):
    """A finished training run: unpacks as ``records, folder`` (``records``: one dict per record, or a pandas
    DataFrame when pandas is installed; ``folder``: the run folder, a ``pathlib.Path``), and has ``summary``
    (summary.json as a dict)."""

    _fields = ("records", "folder")
    _extra = ("summary",)


class Reproduction(_Pair):
    """A finished reproduction: unpacks as ``summary, report`` (summary.json as a dict, the path of report.html),
    and has ``folder`` (the report folder) and ``console`` (the key numbers as the CLI prints them)."""

    _fields = ("summary", "report")
    _extra = ("folder", "console")


def _plain(o):
    """JSON for the values a config may hold besides dicts, lists, str, int, float and bool."""
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    if hasattr(o, "tolist"):  # numpy scalars and arrays
        return o.tolist()
    raise TypeError(f"a config value must be a number, string, bool, list or dict, got {type(o).__name__}: {o!r}")


def _json(d, what):
    try:
        return json.dumps(d, default=_plain, allow_nan=False)
    except ValueError as e:
        raise ValueError(f"{what}: {e} (NaN and infinity are not valid settings)") from None


def _records(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    try:
        import pandas
    except ImportError:
        return rows
    return pandas.DataFrame(rows)


def train(config, out=None, force=False):
    """Train a finite network with per-step diagnostics, as ``ntklab train --config``: ``config`` is a dict with
    the TOML file's sections (``{"data": {...}, "model": {...}, "optimizer": {...}, "probes": {...}}``) or the
    path of a TOML file (array paths in it are relative to the file; in a dict, to the working directory).

    The run folder is ``out``, else the config's ``out``, else ``runs/<file name>`` (``runs/train`` for a dict);
    it holds config.toml, records.jsonl, summary.json, the models, plots and report.html. An existing folder is
    replaced only with ``force=True`` (and only one ntklab made). Ctrl-C stops the run between steps and leaves
    nothing behind. Returns a ``TrainRun``: ``records, folder = train(...)``, and ``.summary``."""
    if isinstance(config, dict):
        text, is_json, base, default = _json(config, "config"), True, Path.cwd(), Path("runs") / "train"
    elif isinstance(config, (str, os.PathLike)):
        path = Path(config)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"cannot read the config {path}: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise ValueError(f"the config {path} is not UTF-8 text") from None
        is_json, base, default = False, path.parent, Path("runs") / path.stem
    else:
        raise TypeError(f"config must be a dict or the path of a TOML file, got {type(config).__name__}")
    if out is None:
        out = _core.train_out(text, json=is_json) or default
    out = Path(out)
    _core.train_run(text, os.fspath(base), os.fspath(out), force=bool(force), json=is_json)
    with open(out / "summary.json", encoding="utf-8") as f:
        summary = json.load(f)
    return TrainRun(_records(out / "records.jsonl"), out, summary)


def experiments():
    """The reproductions ``run`` knows: a dict of name -> one line on it."""
    return dict(_core.experiments())


def experiment_config(name, quick=False, *, seed=None, **overrides):
    """The configuration ``run(name, quick, seed=seed, **overrides)`` would run, as a dict (its keys are the
    ones ``overrides`` may set)."""
    ov = _json(overrides, "overrides") if overrides else None
    return json.loads(_core.experiment_config(name, quick=bool(quick), overrides=ov, seed=seed))


def run(name, quick=False, *, out=None, seed=None, resume=False, force=False, **overrides):
    """Run the reproduction ``name`` (``experiments()`` lists them), as ``ntklab run``: ``quick`` for the small
    instance, keyword ``overrides`` for fields of its configuration (e.g. ``widths=[64, 256]``, ``steps=50``;
    ``experiment_config(name)`` shows them), ``seed`` for the master seed.

    The report folder is ``out`` (default ``runs/<name>``); existing outputs are replaced only with ``force=True``.
    Ctrl-C stops it between steps and keeps the completed steps: ``resume=True`` continues from them. Returns
    a ``Reproduction``: ``summary, report = run(...)``, and ``.folder``, ``.console``."""
    out = Path(out) if out is not None else Path("runs") / name
    ov = _json(overrides, "overrides") if overrides else None
    console, seconds, _reused, _files = _core.run_experiment(
        name, os.fspath(out), quick=bool(quick), overrides=ov, seed=seed, resume=bool(resume), force=bool(force)
    )
    with open(out / "summary.json", encoding="utf-8") as f:
        summary = json.load(f)
    return Reproduction(summary, out / "report.html", out, f"{console}\n({seconds:.1f} s)")
