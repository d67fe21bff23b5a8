"""The type aliases of the public signatures: what the doors accept, in terms mypy reads.

Run-time checks stay where they are (each door converts and validates its input); these
aliases only say, in a signature, which kinds of input a function takes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

import numpy as np
import torch

ArrayLike: TypeAlias = "torch.Tensor | np.ndarray"
"""A matrix or vector: a torch tensor or a NumPy array (CuPy arrays, untyped, are accepted
through DLPack)."""

PathLike: TypeAlias = "str | os.PathLike[str]"

RowSource: TypeAlias = "torch.Tensor | np.ndarray | str | os.PathLike[str] | Any"
"""(N, D) rows: a tensor or array in memory, a path to an .npy file, a NumPy memmap, or a
zarr array (untyped, hence Any)."""

Labels: TypeAlias = "torch.Tensor | np.ndarray | Iterable[Any]"
"""One label per sample or node (integers, strings or other hashable values; a list, an
array, a pandas Series), or, where a measure says so, a partition (sets of nodes)."""

Device: TypeAlias = "str | torch.device | None"

Memory: TypeAlias = "int | str | None"
"""A memory budget: bytes, a string such as "2GB", or None for what is free."""

Progress: TypeAlias = "bool | Callable[[int, int], Any] | None"
"""True or False to show a progress bar or not, None for a bar on a terminal only, or a
function called with (done, total)."""
