"""Progress reporting, one way for every long call: a tqdm bar on a terminal, or a callback.

``progress`` arguments all mean the same: None shows a bar only when stderr is a terminal
(and, where the caller says so, only for long work), so logs and CI output stay clean;
True and False force it; a callable is called as ``progress(done, total)`` after each step.
"""

from __future__ import annotations

import sys


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


SILENT = _Silent()


class _Callback:
    def __init__(self, fn, total: int | None):
        self.fn, self.total, self.done = fn, total, 0

    def update(self, n: int = 1) -> None:
        self.done += n
        self.fn(self.done, self.total)

    def close(self) -> None:
        pass


def bar(progress, total: int | None, unit: str, desc: str, long: bool = True):
    """An object with ``update(n)`` and ``close()`` for ``total`` steps of ``unit``.

    ``long``: whether the work is long enough for an automatic bar (progress=None).
    """
    if callable(progress) and not isinstance(progress, bool):
        return _Callback(progress, total)
    show = progress if progress is not None else (long and sys.stderr.isatty())
    if not show:
        return SILENT
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc=desc, leave=False)
