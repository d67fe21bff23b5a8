"""How much memory a computation may use for its temporaries: one budget for every measure.

Every tiled computation (kNN tiles, Gram sums for LSim and CKA) sizes its blocks from
:func:`budget`, a fraction of the memory free on the device it runs on, so the same code
takes big blocks on a big machine and small ones on a small one, and none of them ever
holds an N x N matrix or a D x D matrix that does not fit.
"""

from __future__ import annotations

import re

import numpy as np
import torch

BUDGET_FRACTION = 8  # temporaries may take 1/8 of the free memory


def available(device: torch.device) -> int:
    """Bytes free now on ``device`` (MemAvailable for the host)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 << 30


def budget(device: torch.device) -> int:
    """Bytes a computation on ``device`` may use for its temporaries."""
    return max(1 << 24, available(device) // BUDGET_FRACTION)


def _status(key: str) -> int | None:
    """A byte count from /proc/self/status (VmRSS:, VmHWM:, ...); None where absent."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
    except (OSError, StopIteration):
        return None


def peak_resident() -> int | None:
    """This process's peak resident memory in bytes (VmHWM; None where /proc is absent)."""
    return _status("VmHWM:")


def reset_peak() -> int | None:
    """Reset the resident high-water mark to the current resident size (Linux clear_refs)
    and return that size, so that a later :func:`peak_resident` measures what came after;
    None where this cannot be done."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _status("VmRSS:")


_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_memory(memory) -> int | None:
    """Bytes from ``memory``: None, an int, or a string such as "2GB", "512 MiB"."""
    if memory is None:
        return None
    if isinstance(memory, (int, np.integer)) and not isinstance(memory, bool):
        value = int(memory)
    elif (
        isinstance(memory, str)
        and (m := re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", memory))
        and m.group(2).lower() in _UNITS
    ):
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    else:
        raise ValueError(f"memory must be a number of bytes or a string like '2GB' or '512MiB', got {memory!r}")
    if value < 1 << 20:
        raise ValueError(f"memory must be at least 1 MiB to hold a tile, got {memory!r}")
    return value
