"""Sphinx configuration of gpugraph's documentation: `make docs` builds it offline into
docs/_build/html with warnings as errors, after running every example (the guide's code
blocks through sphinx.ext.doctest, the figures through matplotlib's plot directive)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "docs")]  # the package (a checkout without an install) and _examples

import gpugraph  # noqa: E402 (after the path is set, for a checkout without an install)

project = "gpugraph"
author = "the gpugraph developers"
copyright = "2026, the gpugraph developers"
release = version = gpugraph.__version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinxarg.ext",
    "matplotlib.sphinxext.plot_directive",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
templates_path = ["_templates"]
exclude_patterns = ["_build", "_templates"]
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# The reference: one page per public name, from its numpydoc docstring.
autosummary_generate = True
autodoc_typehints = "none"  # the numpydoc sections say the types, in words a reader can use
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

# Every example runs: the guide's doctest directives (sphinx-build -b doctest) and the figures.
# The docstrings' examples (plain >>> blocks in the reference) run in `make test` already
# (pytest --doctest-modules), so the doctest builder does not run them a second time.
doctest_test_doctest_blocks = ""
doctest_global_setup = "import torch\nimport numpy as np\nimport gpugraph as gg\ntorch.manual_seed(0)"
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 100)]
plot_rcparams = {"figure.autolayout": True}

# A broken cross-reference fails the build; the names below belong to other projects, whose
# inventories are not fetched (the build is offline).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|numpy|np|scipy|networkx|nx|pandas|matplotlib|cupy|cugraph|igraph|zarr)(\..*)?"),
    (r"py:.*", r"(nn|pathlib|os|typing|collections|argparse|dataclasses)\..*"),
    (r"py:class", r"(Tensor|Module|Path|Mapping|Sequence|Iterable|Callable|Axes|ndarray|DataFrame)"),
]

html_theme = "pydata_sphinx_theme"
html_title = f"gpugraph {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
}
html_static_path: list[str] = []


def _public_names() -> dict[str, object]:
    """Every public name a user can reach: gg.__all__, the public modules' __all__, and the
    pytest plugin's fixture and its Baseline."""
    import gpugraph.attacks
    import gpugraph.distributed
    import gpugraph.pytest_plugin
    import gpugraph.testing

    names = {}
    for module in (gpugraph, gpugraph.distributed, gpugraph.testing, gpugraph.attacks):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue
            names[f"{module.__name__}.{name}"] = obj
    for name in ("gg_baseline", "Baseline"):
        names[f"gpugraph.pytest_plugin.{name}"] = getattr(gpugraph.pytest_plugin, name)
    return names


def _check_reference(app, env) -> None:
    """An undocumented public name fails the build: each must have an entry in the reference
    and a docstring with an example (run by `make test` and by the doctest builder)."""
    from sphinx.util import logging

    log = logging.getLogger("gpugraph.docs")
    documented = set(env.domaindata["py"]["objects"])
    for name, obj in _public_names().items():
        if name not in documented:
            log.warning(f"public name {name} has no entry in the API reference (docs/api.md)")
        elif not inspect.getdoc(obj):
            log.warning(f"public name {name} has no docstring")
        elif ">>>" not in inspect.getdoc(obj):
            log.warning(f"public name {name} has no example (an Examples section with >>> lines)")


def setup(app) -> None:
    app.connect("env-updated", _check_reference)
