"""Modularity curves over training: one curve per epoch, appended to a JSON-lines file."""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from gpugraph._util.errors import check_count
from gpugraph._util.types import PathLike
from gpugraph.models.capture import capture
from gpugraph.studies.curves import LayerCurve, modularity_curve

if TYPE_CHECKING:
    import matplotlib.figure


class CurveMonitor:
    """Measure a model's modularity curve at the end of training epochs.

    Call it with the model at the end of an epoch, ``monitor(model, epoch)``; every
    ``every``-th epoch (epoch % every == 0) it captures the layers on ``data``, computes
    the curve, keeps it in ``history`` and, with ``out``, appends one line
    ``{"epoch": ..., "seconds": ..., "curve": {...}}`` to ``out/curves.jsonl`` at once (an
    interrupted run keeps every finished epoch; a new monitor on the same folder appends).
    The model's train/eval mode and hooks are as before the call, also when its forward
    raises (the exception propagates, and nothing is written for that epoch). The warning
    of a flat curve is not given: early epochs are flat, and the record shows it.

    With PyTorch Lightning installed, :meth:`lightning_callback` gives a callback that does
    the same at the end of every training epoch.

    Parameters
    ----------
    data : what :func:`gpugraph.capture` takes: an (inputs, labels) pair, a DataLoader, ...
        Held-out samples, with labels. The same samples every epoch.
    layers : names or glob patterns, as for capture (None: its default choice).
    every : int, measure every ``every``-th epoch.
    out : folder for curves.jsonl (None: keep the curves in memory only).
    capture_kwargs : dict, more arguments for capture (reduce, batch_size, include_input...).
    **curve_kwargs : for :func:`gpugraph.modularity_curve` (k, n, repeats, seed, null...).

    Examples
    --------
    >>> monitor = gg.CurveMonitor((x_val, y_val), out="runs/curves", n=200)  # doctest: +SKIP
    >>> for epoch in range(epochs):                                          # doctest: +SKIP
    ...     train_one_epoch(model)
    ...     monitor(model, epoch)
    >>> monitor.plot("runs/curves/epochs.png")                              # doctest: +SKIP
    """

    def __init__(
        self,
        data: Any,
        layers: str | Sequence[str] | None = None,
        every: int = 1,
        out: PathLike | None = None,
        *,
        capture_kwargs: dict | None = None,
        **curve_kwargs: Any,
    ):
        self.data, self.layers, self.every = data, layers, check_count(every, "every")
        self.capture_kwargs = dict(capture_kwargs or {})
        self.curve_kwargs = curve_kwargs
        self.path = None
        if out is not None:
            Path(out).mkdir(parents=True, exist_ok=True)
            self.path = Path(out) / "curves.jsonl"
        self.history: list[tuple[int, LayerCurve]] = []

    def __call__(self, model: nn.Module, epoch: int) -> LayerCurve | None:
        """The curve of ``model`` at ``epoch`` (None on an epoch that is not measured)."""
        if epoch % self.every:
            return None
        start = time.perf_counter()
        acts = capture(model, self.data, layers=self.layers, quiet_mode=True, **self.capture_kwargs)
        with warnings.catch_warnings():  # early epochs are flat: that is what the monitor shows
            warnings.filterwarnings("ignore", "the modularity curve is flat", UserWarning)
            curve = modularity_curve(acts, **self.curve_kwargs)
        del acts
        self.history.append((epoch, curve))
        if self.path is not None:
            line = json.dumps({"epoch": epoch, "seconds": time.perf_counter() - start, "curve": curve.to_dict()})
            with open(self.path, "a") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        return curve

    @staticmethod
    def read(path: PathLike) -> list[tuple[int, LayerCurve]]:
        """(epoch, curve) of every line of a curves.jsonl (or of the folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "curves.jsonl"
        out = []
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(
                        f"{path}, line {number}: not a JSON line ({exc.msg}); a run cut off "
                        "while writing leaves a partial last line: delete it"
                    ) from None
                c = entry["curve"]
                out.append((entry["epoch"], LayerCurve(c["layers"], c["values"], c.get("params"), c.get("null"))))
        return out

    def plot(self, path: PathLike | None = None, curves: int = 4) -> PathLike | matplotlib.figure.Figure:
        """A heat map of the mean modularity, epochs x layers, beside the curves of
        ``curves`` epochs spread over the run (first and last included). Written as a PNG to
        ``path`` (returned), or the matplotlib Figure without it."""
        if not self.history:
            raise ValueError("no curve yet: call the monitor with the model at the end of an epoch first")
        return plot_epochs(self.history, path, curves)

    def lightning_callback(self) -> Any:
        """A ``lightning.pytorch.Callback`` calling this monitor at the end of every training
        epoch (needs ``pip install lightning``, or pytorch_lightning)."""
        try:
            from lightning.pytorch import Callback
        except ImportError:
            try:
                from pytorch_lightning import Callback
            except ImportError:
                raise ImportError(
                    "CurveMonitor.lightning_callback needs PyTorch Lightning: pip install lightning "
                    "(or call the monitor yourself: monitor(model, epoch))"
                ) from None
        monitor = self

        class _CurveCallback(Callback):
            def on_train_epoch_end(self, trainer, pl_module):
                monitor(pl_module, trainer.current_epoch)

        return _CurveCallback()


def plot_epochs(history, path=None, curves: int = 4):
    """Draw (epoch, curve) pairs: heat map of epochs x layers and a few curves."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    layers = history[0][1].layers
    for epoch, curve in history:
        if curve.layers != layers:
            raise ValueError(f"epoch {epoch} has layers {curve.layers}, the first epoch {layers}")
    epochs = [e for e, _ in history]
    grid = np.array([c.mean for _, c in history])  # (E, L)
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(10, 0.5 * len(layers) + 6), 4.5))
    im = left.imshow(grid, aspect="auto", origin="lower", cmap="viridis")
    left.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=8)
    step = max(1, len(epochs) // 10)
    left.set_yticks(range(0, len(epochs), step), [str(e) for e in epochs[::step]])
    left.set_ylabel("epoch")
    left.set_title("modularity per layer and epoch")
    fig.colorbar(im, ax=left)
    picks = sorted(set(np.linspace(0, len(history) - 1, min(curves, len(history))).round().astype(int)))
    xs = np.arange(len(layers))
    for i in picks:
        epoch, curve = history[i]
        right.plot(xs, curve.mean, marker="o", label=f"epoch {epoch}")
        right.fill_between(xs, curve.mean - curve.std, curve.mean + curve.std, alpha=0.2)
    right.set_xticks(xs, layers, rotation=60, ha="right", fontsize=8)
    right.set_ylabel("modularity")
    right.grid(alpha=0.3)
    right.legend()
    fig.tight_layout()
    if path is None:
        return fig
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
