"""The type stubs (.pyi) describe the package as it is: every public name has a stub, and every stubbed
function takes the parameters the implementation takes, in the same order, with the same kinds."""

import ast
import inspect
import os

import pytest

import ntklab
from ntklab import _core, predict, stax

PKG = os.path.dirname(ntklab.__file__)


def _stub_functions(module_file):
    """{name: ast.FunctionDef} of the top-level functions (and classes' methods as 'Class.method') of a stub."""
    tree = ast.parse(open(os.path.join(PKG, module_file), encoding="utf-8").read())
    out, classes = {}, set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out[node.name] = node
        elif isinstance(node, ast.ClassDef):
            classes.add(node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not any(
                    isinstance(d, ast.Name) and d.id == "overload" for d in item.decorator_list
                ):
                    out[f"{node.name}.{item.name}"] = item
        elif isinstance(node, (ast.AnnAssign, ast.Assign)):
            for t in getattr(node, "targets", [getattr(node, "target", None)]):
                if isinstance(t, ast.Name):
                    classes.add(t.id)
        elif isinstance(node, ast.ImportFrom):
            classes.update(a.asname or a.name for a in node.names)
    return out, classes


def _stub_params(fn):
    a = fn.args
    names = [(p.arg, "positional") for p in a.posonlyargs + a.args]
    if a.vararg:
        names.append((a.vararg.arg, "varargs"))
    names += [(p.arg, "keyword") for p in a.kwonlyargs]
    if a.kwarg:
        names.append((a.kwarg.arg, "varkw"))
    return [n for n in names if n[0] not in ("self", "cls")]


def _runtime_params(f):
    kinds = {
        inspect.Parameter.POSITIONAL_ONLY: "positional",
        inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
        inspect.Parameter.VAR_POSITIONAL: "varargs",
        inspect.Parameter.KEYWORD_ONLY: "keyword",
        inspect.Parameter.VAR_KEYWORD: "varkw",
    }
    return [(n, kinds[p.kind]) for n, p in inspect.signature(f).parameters.items() if n not in ("self", "cls")]


@pytest.mark.parametrize("module,stub", [(ntklab, "__init__.pyi"), (stax, "stax.pyi"), (predict, "predict.pyi")])
def test_every_public_name_has_a_stub_with_the_same_parameters(module, stub):
    functions, others = _stub_functions(stub)
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isfunction(obj):
            assert name in functions, f"{stub} lacks {name}"
            assert _stub_params(functions[name]) == _runtime_params(obj), f"{stub}: {name}"
        else:
            assert name in functions or name in others, f"{stub} lacks {name}"


def test_the_compiled_module_matches_its_stub():
    functions, others = _stub_functions("_core.pyi")
    public = [n for n in dir(_core) if not n.startswith("_")]
    for name in public:
        obj = getattr(_core, name)
        if inspect.isclass(obj):
            assert name in others, f"_core.pyi lacks class {name}"
            for meth in [m for m in vars(obj) if not m.startswith("_")]:
                key = f"{name}.{meth}"
                assert key in functions, f"_core.pyi lacks {key}"
                member = getattr(obj, meth)
                if callable(member):
                    assert _stub_params(functions[key]) == _runtime_params(member), key
        else:
            assert name in functions, f"_core.pyi lacks {name}"
            assert _stub_params(functions[name]) == _runtime_params(obj), name
    for name in functions:
        assert "." in name or hasattr(_core, name), f"_core.pyi describes {name}, which _core lacks"
