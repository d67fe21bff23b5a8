"""The package's floors: every import in gpugraph/ (at the top of a module or inside a
function) goes to the same floor or one below, and no modules import each other in a circle.
docs/contributing.md, "How it is built", draws the same floors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gpugraph"

FLOORS = [  # lowest first; a module's floor is that of the first entry its dotted name starts with
    ("gpugraph._util",),
    ("gpugraph.kernels",),
    ("gpugraph.graph",),
    ("gpugraph.knn",),
    ("gpugraph.similarity",),
    ("gpugraph.models",),
    ("gpugraph.studies",),
    ("gpugraph", "gpugraph.distributed", "gpugraph.testing", "gpugraph.attacks"),  # the public faces
    ("gpugraph.tools",),
    ("gpugraph.__main__", "gpugraph.pytest_plugin"),  # entry points of python -m and pytest
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The gpugraph modules ``path`` imports anywhere in its code (``from a import b``
    counts as importing a.b when that is a module, else a)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return {m for m in found if m in known and m != name}


def floor_of(module: str) -> int:
    best = None
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            inside = module == prefix or (prefix != "gpugraph" and module.startswith(prefix + "."))
            if inside and (best is None or len(prefix) > best[1]):
                best = (level, len(prefix))
    if best is None:
        raise AssertionError(
            f"{module} is on no floor: add its folder to FLOORS and to docs/contributing.md, 'How it is built'"
        )
    return best[0]


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, set(mods)) for name, path in mods.items()}


def upward(edges: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} (floor {floor_of(a)}) imports {b} (floor {floor_of(b)})"
        for a, targets in edges.items()
        for b in targets
        if floor_of(b) > floor_of(a)
    )


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_every_module_is_on_a_floor_and_imports_only_its_floor_or_below():
    edges = graph()
    assert len(edges) > 30  # the walk found the package
    assert upward(edges) == []


def test_no_modules_import_each_other_in_a_circle():
    assert circles(graph()) == []


def test_every_subpackage_says_what_lives_there_and_what_it_may_import():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc.lower(), f"{init.parent.name}/__init__.py must say what it may import"


@pytest.mark.parametrize(
    "source, expected",
    [
        (
            {"gpugraph.kernels.cuda": {"gpugraph.graph.knngraph"}},
            ["gpugraph.kernels.cuda (floor 1) imports gpugraph.graph.knngraph (floor 2)"],
        ),
        ({"gpugraph.graph.motifs": {"gpugraph.kernels.cuda"}}, []),
    ],
)
def test_the_floor_check_sees_an_upward_import(source, expected):
    assert upward(source) == expected


def test_the_circle_check_sees_a_circle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(edges) == [["a", "b", "c"]]
