"""Sphinx configuration of gpugraph's documentation: `make docs` builds it offline into
docs/_build/html with warnings as errors, after running every example (the guide's code
blocks through sphinx.ext.doctest, the figures through matplotlib's plot directive)."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
# the package (a checkout without an install), _examples, and the tests' listing of the public API
sys.path[:0] = [str(ROOT), str(ROOT / "docs"), str(ROOT / "tests")]

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


def _check_reference(app, env) -> None:
    """An undocumented public name fails the build: each must have an entry in the reference.
    The listing is the test suite's (tests/test_public_api.py), which also checks that each
    has a docstring with an example and full annotations."""
    from sphinx.util import logging
    from test_public_api import public_names

    log = logging.getLogger("gpugraph.docs")
    documented = set(env.domaindata["py"]["objects"])
    for name in public_names():
        if name not in documented:
            log.warning(f"public name {name} has no entry in the API reference (docs/api.md)")


def setup(app) -> None:
    app.connect("env-updated", _check_reference)
