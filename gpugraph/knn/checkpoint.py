"""A k-NN search that can stop and go on.

The tile walk offers every pair once, and each row's running list depends only on the pairs
offered so far, never on their order (ties go to the lower index whatever comes first). So
the lists after the first t tiles, with t, are the whole state of a search: saved at a tile
boundary (every :data:`SAVE_EVERY` seconds, and when the search is interrupted), they let
the next search of the same matrix skip those tiles and end with the same bits.

A Ctrl-C during a search with a checkpoint does not stop the tile being computed: the
search finishes it, saves, then raises KeyboardInterrupt. A second Ctrl-C stops at once,
without saving (the last periodic save stays).
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpugraph.knn.sources import Source

SAVE_EVERY = 60.0  # seconds between saves of a running search
_FORMAT = 1
_SAMPLE = 64  # rows read to tell one matrix from another


class Checkpoint:
    """The saved state of the search of ``src`` for ``k`` neighbours at ``path``: what a
    file there holds (checked against ``src`` and ``k``), and the saving of a running one.
    ``saved`` is the tiles done by the saved search (0 when there is none)."""

    def __init__(self, path, src: Source, k: int):
        self.path = Path(path)
        self.key = {
            "format": _FORMAT,
            "n": src.n,
            "d": src.d,
            "k": k,
            "dtype": str(src.dtype).replace("torch.", ""),
            "fingerprint": fingerprint(src),
        }
        self.saved = 0
        self.tile: int | None = None  # the search's tile size and tile count, once known
        self.total: int | None = None
        self._state: tuple | None = None
        self.done, self._last, self._stop, self._torn = 0, time.monotonic(), False, False
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        try:
            with np.load(self.path, allow_pickle=False) as f:
                stored = {key: f[key].item() for key in (*self.key, "tile", "done")}
                state = (f["values"], f["indices"])
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(
                f"checkpoint {self.path} cannot be read ({e}); delete it to start the search afresh"
            ) from e
        differs = [f"{key} {stored[key]!r} (now {value!r})" for key, value in self.key.items() if stored[key] != value]
        if differs:
            what = "another matrix" if [d for d in differs if d.startswith("fingerprint")] else "another search"
            raise ValueError(
                f"checkpoint {self.path} was saved by the search of {what}: "
                f"{'; '.join(d for d in differs if not d.startswith('fingerprint')) or 'other rows'}; "
                "delete it, or give this search another checkpoint path"
            )
        self.saved, self.tile, self._state = int(stored["done"]), int(stored["tile"]), state
        self.done = self.saved

    def tile_for(self, asked: int | None, default: int) -> int:
        """The tile size to walk with: the saved search's (an explicit other one is refused),
        else ``asked`` or ``default``."""
        if self.tile is None:
            return asked or default
        if asked is not None and asked != self.tile:
            raise ValueError(
                f"checkpoint {self.path} was saved by a search with tile={self.tile}; pass "
                f"tile={self.tile} (or none) to resume it, or delete it to start afresh with tile={asked}"
            )
        return self.tile

    def restore(self, top) -> int:
        """Load the saved lists into the TopK ``top``; the number of tiles they cover."""
        if self._state is None:
            return 0
        values, indices = self._state
        top.values = torch.from_numpy(values).to(device=top.values.device, dtype=top.values.dtype)
        top.indices = torch.from_numpy(indices).to(top.indices.device)
        self._state = None
        return self.saved

    def after(self, top, done: int) -> None:
        """Called after each tile of the walk: saves every SAVE_EVERY seconds, and stops the
        search (saved) when a Ctrl-C came during the tile."""
        self.done = done
        if self._stop:
            self.save(top)
            raise KeyboardInterrupt
        if time.monotonic() - self._last >= SAVE_EVERY:
            self.save(top)

    def save(self, top) -> None:
        """Write the lists after ``self.done`` tiles (atomically: a file beside, then renamed)."""
        partial = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as f:
            arrays: dict[str, Any] = {"done": self.done, "tiles": self.total, "tile": self.tile, **self.key}
            np.savez(f, values=top.values.cpu().numpy(), indices=top.indices.cpu().numpy(), **arrays)
        os.replace(partial, self.path)
        self.saved, self._last = self.done, time.monotonic()

    @contextmanager
    def guard(self, top):
        """Run a walk so that a Ctrl-C ends it at a tile boundary with the state saved."""
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, self._on_interrupt)
        try:
            yield
        except KeyboardInterrupt:
            if not self._torn and self.saved != self.done:  # raised between tiles: the lists are whole
                self.save(top)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _on_interrupt(self, signum, frame) -> None:
        if self._stop:  # a second Ctrl-C: stop now, inside the tile, keeping the last save
            self._torn = True
            raise KeyboardInterrupt
        self._stop = True

    def finish(self) -> None:
        """The search is complete: its checkpoint goes."""
        self.path.unlink(missing_ok=True)


def saved_progress(path) -> tuple[int, int] | None:
    """(tiles done, tiles) of the search saved at ``path``, or None if there is no such file."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return int(f["done"]), int(f["tiles"])
    except (OSError, ValueError, KeyError):
        return None


def fingerprint(src: Source) -> str:
    """A hash of the matrix's shape, dtype and 64 of its rows spread evenly (first and last
    included): two matrices that differ there are told apart without reading all of X."""
    index = np.unique(np.linspace(0, src.n - 1, min(_SAMPLE, src.n)).round().astype(np.int64))
    rows = src.take(index).detach().cpu().contiguous()
    h = hashlib.sha256(f"{src.n} {src.d} {rows.dtype}".encode())
    h.update(rows.view(torch.uint8).numpy().tobytes() if rows.dtype == torch.bfloat16 else rows.numpy().tobytes())
    return h.hexdigest()


__all__ = ["SAVE_EVERY", "Checkpoint", "fingerprint", "saved_progress"]
