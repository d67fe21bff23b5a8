import numpy as np


def check_count(value, name: str, minimum: int = 1, what: str = "a positive integer") -> int:
    """``value`` as an int when it is an integer (not a bool) of at least ``minimum``; else
    a ValueError that names it: "{name} must be {what}, got {value!r}"."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


class GpuGraphError(RuntimeError):
    """A computation cannot run here: a missing optional dependency or device, not bad input.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> try:
    ...     gg.knn_graph(torch.randn(10, 4), k=3, device="cuda:7")   # no such GPU here
    ... except gg.GpuGraphError as e:
    ...     print(type(e).__name__)
    GpuGraphError
    """
