"""Regression checks for users' models: "the new checkpoint must not separate the classes
worse than the released one".

    import gpugraph as gg
    from gpugraph.testing import assert_curve_close

    curve = gg.modularity_curve(gg.capture(model, test_data), k=3, n=500, repeats=5, seed=0)
    assert_curve_close(curve, "baselines/released.json", atol=0.02, direction="lower")

Curves and similarity matrices are deterministic for a given seed on a given device, and
round-trip through JSON exactly (``to_json`` / ``from_json``). The pytest plugin
(:mod:`gpugraph.pytest_plugin`, registered on install) adds a ``gg_baseline`` fixture that
stores a baseline on the first run with ``--gg-update-baselines`` and compares afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gpugraph._util.types import PathLike
from gpugraph.similarity.grid import SimilarityMatrix
from gpugraph.studies.curves import LayerCurve

__all__ = ["assert_curve_close", "assert_similarity_close"]

_DIRECTIONS = ("both", "lower", "higher")


def _curve(c) -> LayerCurve:
    return c if isinstance(c, LayerCurve) else LayerCurve.from_json(c)


def _matrix(m) -> SimilarityMatrix:
    return m if isinstance(m, SimilarityMatrix) else SimilarityMatrix.from_json(m)


def assert_curve_close(
    curve: LayerCurve | str | PathLike,
    baseline: LayerCurve | str | PathLike,
    atol: float = 0.02,
    rtol: float = 0.0,
    *,
    direction: str = "both",
    layers: Sequence[str] | None = None,
    sigma: float = 0.0,
) -> None:
    """Fail when a layer's mean moved from the baseline's by more than
    ``atol + rtol * |baseline| + sigma * se``, se the standard error of the difference of the means.

    Parameters
    ----------
    curve, baseline : LayerCurve, or JSON text or a path written by ``LayerCurve.to_json``
    direction : {"both", "lower", "higher"}
        "lower" fails only on layers that fell (a worse class separation), "higher" only on
        layers that rose, "both" on any move.
    layers : list of str, optional
        Compare only these layers (default: all; both curves must have the same layers).
    sigma : float
        Widen each layer's tolerance by ``sigma`` standard errors of the difference of the
        two means, sqrt(s_old^2 / R_old + s_new^2 / R_new) from the spread of each curve's R
        subsets (sample standard deviations; a curve of one subset adds nothing): a layer
        whose subsets disagree among themselves needs a larger move to count. 0 (default)
        keeps the fixed tolerance.

    Raises
    ------
    AssertionError
        With a table of the layers that moved: baseline, new, change and tolerance.

    Examples
    --------
    >>> import numpy as np, gpugraph as gg
    >>> from gpugraph.testing import assert_curve_close
    >>> released = gg.LayerCurve(["a", "b"], np.array([[0.5, 0.8], [0.52, 0.82]]))
    >>> assert_curve_close(released.to_json(), released)          # a JSON path, text or a curve
    >>> worse = gg.LayerCurve(["a", "b"], np.array([[0.5, 0.7], [0.52, 0.72]]))
    >>> assert_curve_close(worse, released, atol=0.02, direction="lower")
    Traceback (most recent call last):
    ...
    AssertionError: ...
    >>> assert_curve_close(worse, released, atol=0.02, direction="higher")   # only rises fail
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    new, old = _curve(curve), _curve(baseline)
    names = list(layers) if layers is not None else old.layers
    missing = [n for n in names if n not in new.layers or n not in old.layers]
    if layers is None and new.layers != old.layers:
        raise AssertionError(f"the curves have different layers: baseline {old.layers}, new {new.layers}")
    if missing:
        raise AssertionError(
            f"layers {missing} are missing from {'the new curve' if missing[0] not in new.layers else 'the baseline'}"
        )
    if sigma < 0:
        raise ValueError(f"sigma must be non-negative (standard errors), got {sigma}")
    rows = []
    for name in names:
        i, j = old.layers.index(name), new.layers.index(name)
        a, b = old.mean[i], new.mean[j]
        tol = atol + rtol * abs(a) + sigma * np.sqrt(_variance_of_mean(old, i) + _variance_of_mean(new, j))
        moved = {"both": abs(b - a) > tol, "lower": b < a - tol, "higher": b > a + tol}[direction]
        if moved:
            rows.append(f"  {name:<20} {a:9.4f} {b:9.4f} {b - a:+9.4f}   {tol:.4f}")
    if rows:
        head = f"  {'layer':<20} {'baseline':>9} {'new':>9} {'change':>9}   tolerance"
        raise AssertionError(
            f"{len(rows)} of {len(names)} layers moved beyond the tolerance ({direction}):\n" + "\n".join([head, *rows])
        )


def _variance_of_mean(curve: LayerCurve, j: int) -> float:
    """s^2 / R of layer j's R subset values (0 for a single subset)."""
    values = curve.values[:, j]
    return float(values.var(ddof=1) / len(values)) if len(values) > 1 else 0.0


def assert_similarity_close(
    matrix: SimilarityMatrix | str | PathLike,
    baseline: SimilarityMatrix | str | PathLike,
    atol: float = 0.02,
    rtol: float = 0.0,
) -> None:
    """Fail when an entry of a similarity matrix moved beyond ``atol + rtol * |baseline|``;
    the message lists the pairs of layers that moved most (at most 10).

    Examples
    --------
    >>> import numpy as np, gpugraph as gg
    >>> from gpugraph.testing import assert_similarity_close
    >>> base = gg.SimilarityMatrix(np.array([[1.0, 0.4], [0.4, 1.0]]), ["a", "b"], ["a", "b"], "lsim")
    >>> assert_similarity_close(gg.SimilarityMatrix(base.values + 0.01, ["a", "b"], ["a", "b"], "lsim"), base)
    >>> assert_similarity_close(gg.SimilarityMatrix(base.values + 0.1, ["a", "b"], ["a", "b"], "lsim"), base)
    Traceback (most recent call last):
    ...
    AssertionError: ...
    """
    new, old = _matrix(matrix), _matrix(baseline)
    if (new.layers_a, new.layers_b, new.measure) != (old.layers_a, old.layers_b, old.measure):
        raise AssertionError(
            f"the matrices differ in shape or measure: baseline {old.measure} {old.layers_a} x {old.layers_b}, "
            f"new {new.measure} {new.layers_a} x {new.layers_b}"
        )
    diff = new.values - old.values
    bad = np.abs(diff) > atol + rtol * np.abs(old.values)
    if bad.any():
        order = np.argsort(-np.abs(np.where(bad, diff, 0)), axis=None)[: min(10, int(bad.sum()))]
        rows = [
            f"  {old.layers_a[i]} x {old.layers_b[j]}: {old.values[i, j]:.4f} -> {new.values[i, j]:.4f}"
            for i, j in (np.unravel_index(o, diff.shape) for o in order)
        ]
        raise AssertionError(f"{int(bad.sum())} of {bad.size} entries moved beyond the tolerance:\n" + "\n".join(rows))
