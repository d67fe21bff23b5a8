"""The public API: every name a user can reach is annotated (parameters and return) and
documented with an example, so that mypy users and the API reference see the whole of it."""

import inspect

import pytest

import gpugraph
import gpugraph.attacks
import gpugraph.distributed
import gpugraph.pytest_plugin
import gpugraph.testing


def public_names() -> dict[str, object]:
    names = {}
    for module in (gpugraph, gpugraph.distributed, gpugraph.testing, gpugraph.attacks):
        for name in module.__all__:
            obj = getattr(module, name)
            if not inspect.ismodule(obj):
                names[f"{module.__name__}.{name}"] = obj
    for name in ("gg_baseline", "Baseline"):
        names[f"gpugraph.pytest_plugin.{name}"] = getattr(gpugraph.pytest_plugin, name)
    return names


def callables_of(name: str, obj) -> list[tuple[str, object]]:
    """The object itself, or a class's __init__ and its public methods and properties."""
    if not inspect.isclass(obj):
        return [(name, getattr(obj, "__wrapped__", obj))]
    if issubclass(obj, BaseException):
        return []  # an exception's signature is BaseException's
    found = [(f"{name}.__init__", obj.__init__)] if "__init__" in vars(obj) else []
    for member, value in vars(obj).items():
        if member.startswith("_"):
            continue
        if isinstance(value, property):
            found.append((f"{name}.{member}", value.fget))
        elif isinstance(value, (classmethod, staticmethod)):
            found.append((f"{name}.{member}", value.__func__))
        elif inspect.isfunction(value):
            found.append((f"{name}.{member}", value))
    return found


def unannotated(fn) -> list[str]:
    sig = inspect.signature(fn)
    missing = [p for p, v in sig.parameters.items() if p not in ("self", "cls") and v.annotation is v.empty]
    if sig.return_annotation is sig.empty and fn.__name__ != "__init__":
        missing.append("return")
    return missing


PUBLIC = public_names()
CALLABLES = [c for name, obj in PUBLIC.items() for c in callables_of(name, obj)]


def test_the_listing_reaches_the_public_api():
    # a guard for the guard: the listing covers classes, functions, methods and properties
    names = dict(CALLABLES)
    assert {
        "gpugraph.knn_graph",
        "gpugraph.KnnGraph.__init__",
        "gpugraph.KnnGraph.to_scipy",
        "gpugraph.KnnGraph.indices",
        "gpugraph.LayerCurve.from_json",
        "gpugraph.distributed.shard",
        "gpugraph.pytest_plugin.gg_baseline",
    } <= set(names)
    assert len(CALLABLES) > 100


@pytest.mark.parametrize("name,fn", CALLABLES, ids=[name for name, _ in CALLABLES])
def test_public_callables_are_annotated(name, fn):
    assert not unannotated(fn), f"{name}: annotate {', '.join(unannotated(fn))}"


@pytest.mark.parametrize("name", list(PUBLIC))
def test_public_names_have_an_example(name):
    assert ">>>" in (inspect.getdoc(PUBLIC[name]) or ""), f"{name}: add an Examples section that runs"


def test_the_check_finds_what_is_missing():
    def partly(x, k: int = 3):
        return x

    def whole(x: int) -> int:
        return x

    assert unannotated(partly) == ["x", "return"] and unannotated(whole) == []
