"""pytest plugin (registered on install): a ``gg_baseline`` fixture for representation tests.

    def test_released_model_still_separates_classes(gg_baseline):
        curve = gg.modularity_curve(gg.capture(model, data), k=3, seed=0)
        gg_baseline.check_curve(curve, atol=0.02, direction="lower")

The first run with ``pytest --gg-update-baselines`` stores the curve in
``gg_baselines/<test name>.json`` next to the test file; later runs compare with it
(:func:`gpugraph.testing.assert_curve_close`). A missing baseline fails with the command
that creates it, so a forgotten baseline never passes silently.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from gpugraph.similarity.grid import SimilarityMatrix
    from gpugraph.studies.curves import LayerCurve


def pytest_addoption(parser):
    parser.addoption(
        "--gg-update-baselines",
        action="store_true",
        default=False,
        help="gpugraph: (re)write the gg_baseline files instead of comparing with them",
    )


class Baseline:
    """Where a test's baselines live, and the checks against them.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np, gpugraph as gg
    >>> from gpugraph.pytest_plugin import Baseline
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> curve = gg.LayerCurve(["a", "b"], np.array([[0.5, 0.8], [0.52, 0.82]]))
    >>> Baseline(folder, "test_model", update=True).check_curve(curve)     # --gg-update-baselines
    >>> sorted(p.name for p in folder.iterdir())
    ['test_model.json']
    >>> Baseline(folder, "test_model", update=False).check_curve(curve, atol=0.02)   # later runs
    """

    def __init__(self, directory: Path, name: str, update: bool, node_id: str = ""):
        self.directory, self.name, self.update = directory, re.sub(r"[^A-Za-z0-9._-]", "_", name), update
        self.node_id = node_id  # the test's pytest id, for the command that accepts a new baseline

    def path(self, key: str | None = None) -> Path:
        return self.directory / f"{self.name}{'.' + key if key else ''}.json"

    def _check(self, value, key, compare, **tolerances) -> None:
        path = self.path(key)
        if self.update:
            path.parent.mkdir(parents=True, exist_ok=True)
            value.to_json(path)
            return
        if not path.is_file():
            pytest.fail(f"no baseline {path}: run pytest --gg-update-baselines once to store it", pytrace=False)
        try:
            compare(value, path, **tolerances)
        except AssertionError as exc:  # the comparison's table, then how to accept the change
            raise AssertionError(
                f"{exc}\n\nbaseline: {path}\nif the change is intended, accept it as the new baseline with\n"
                f"    pytest {self.node_id} --gg-update-baselines"
            ) from None

    def check_curve(self, curve: LayerCurve, key: str | None = None, **tolerances: Any) -> None:
        """Store (with --gg-update-baselines) or compare a LayerCurve; tolerances as in
        :func:`gpugraph.testing.assert_curve_close`."""
        from gpugraph.testing import assert_curve_close

        self._check(curve, key, assert_curve_close, **tolerances)

    def check_similarity(self, matrix: SimilarityMatrix, key: str | None = None, **tolerances: Any) -> None:
        """The same for a SimilarityMatrix (:func:`gpugraph.testing.assert_similarity_close`)."""
        from gpugraph.testing import assert_similarity_close

        self._check(matrix, key, assert_similarity_close, **tolerances)


@pytest.fixture
def gg_baseline(request: pytest.FixtureRequest) -> Baseline:
    """Baselines of this test, in gg_baselines/ next to its file.

    Examples
    --------
    In a test file (the plugin is registered when gpugraph is installed)::

        def test_released_model_still_separates_classes(gg_baseline):
            curve = gg.modularity_curve(gg.capture(model, data), k=3, seed=0)
            gg_baseline.check_curve(curve, atol=0.02, direction="lower")

    What the fixture returns, used directly:

    >>> import tempfile, pathlib, numpy as np, gpugraph as gg
    >>> from gpugraph.pytest_plugin import Baseline
    >>> baseline = Baseline(pathlib.Path(tempfile.mkdtemp()), "test_released", update=False)
    >>> baseline.path().name
    'test_released.json'
    """
    return Baseline(
        Path(request.path).parent / "gg_baselines",
        request.node.name,
        request.config.getoption("--gg-update-baselines"),
        request.node.nodeid,
    )
