"""Where rows come from: tensors in memory, or matrices that are not (memory maps, .npy
files, zarr arrays), read a block of rows at a time.

Every measure that walks the rows of an (N, D) matrix takes a :class:`Source`: in memory it
is the tensor itself; out of core it reads ``x[r0:r1]`` on demand, upcasting float16 (and
bfloat16) blocks to float32, so that memory stays O(block), never O(N D).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from gpugraph._util.convert import as_tensor
from gpugraph.knn.rows import _CHUNK, check_rows

_NUMPY_FLOATS = ("float16", "float32", "float64")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class Source:
    """An (N, D) floating-point matrix handed out by row blocks as torch tensors.

    ``tensor`` is the matrix itself when it is in memory (then ``rows`` slices it), else
    None and ``rows`` reads from ``array`` (a memmap, an .npy file mapped read-only, a zarr
    array, anything with ``.shape``, ``.dtype`` and row slicing).

    A Source is the validated form a door hands down: its shape and dtype are checked when
    it is made (:func:`as_source`); its rows either by :meth:`check`, once, up front
    (``checked``), or, when nobody did, by whoever reads them first (the normalisation of
    a kNN search), never both.
    """

    def __init__(self, tensor: torch.Tensor | None = None, array=None, name: str = "x", checked: bool = False):
        self.tensor, self.array, self.name, self.checked = tensor, array, name, checked

    @property
    def in_memory(self) -> bool:
        return self.tensor is not None

    @property
    def shape(self) -> tuple[int, int]:
        n, d = self.tensor.shape if self.tensor is not None else self.array.shape
        return int(n), int(d)

    @property
    def n(self) -> int:
        return self.shape[0]

    @property
    def d(self) -> int:
        return self.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the blocks ``rows`` returns (float16 on disk is read as float32)."""
        if self.tensor is not None:
            return self.tensor.dtype
        return torch.float64 if np.dtype(self.array.dtype) == np.float64 else torch.float32

    @property
    def device(self) -> torch.device:
        return self.tensor.device if self.tensor is not None else torch.device("cpu")

    def rows(self, r0: int, r1: int) -> torch.Tensor:
        """Rows r0..r1 as a tensor (a view when in memory, a fresh CPU tensor otherwise)."""
        if self.tensor is not None:
            return self.tensor[r0:r1]
        return _tensor_of(self.array[r0:r1])

    def take(self, index: np.ndarray) -> torch.Tensor:
        """The rows at sorted ``index`` as a tensor (read from disk when out of core)."""
        if self.tensor is not None:
            return self.tensor[torch.from_numpy(np.asarray(index)).to(self.tensor.device)]
        index = np.asarray(index)
        if isinstance(self.array, np.ndarray):
            return _tensor_of(self.array[index])
        return _tensor_of(np.stack([np.asarray(self.array[int(i)]) for i in index]))

    def subset(self, index: np.ndarray) -> Source:
        """The rows at sorted ``index`` as an in-memory Source, as checked as this one."""
        return Source(tensor=self.take(index), name=self.name, checked=self.checked)

    def blocks(self, step: int | None = None):
        """(r0, r1, rows) for consecutive blocks of at most ``step`` rows (default: about 4 M
        entries a block)."""
        step = step or max(1, _CHUNK // max(1, self.d))
        for r0 in range(0, self.n, step):
            r1 = min(r0 + step, self.n)
            yield r0, r1, self.rows(r0, r1)

    def check(self, nonzero: bool = True, step: int | None = None) -> torch.Tensor:
        """The largest |entry| of every row (N,), after refusing rows with NaN or Inf (and
        all-zero rows when ``nonzero``) by their row in the whole matrix; out of core read
        ``step`` rows at a time (default as :meth:`blocks`). With ``nonzero`` the Source is
        then ``checked``: nobody reading it later needs to check its rows again."""
        if self.tensor is not None:
            top = check_rows(self.tensor, self.name, nonzero=nonzero)
        else:
            top = torch.cat(
                [check_rows(block, self.name, nonzero=nonzero, offset=r0) for r0, _, block in self.blocks(step)]
            )
        self.checked = self.checked or nonzero
        return top

    def __len__(self) -> int:
        return self.n


def _tensor_of(block) -> torch.Tensor:
    """A fresh, writable CPU tensor of rows read from an array (float16 read as float32)."""
    block = np.asarray(block)
    return torch.from_numpy(np.array(block, dtype=np.float32 if block.dtype == np.float16 else block.dtype))


def as_source(x, name: str = "x") -> Source:
    """``x`` as a :class:`Source`: a path to an .npy file, a memmap or zarr array (out of core),
    or an (N, D) floating-point tensor, NumPy or CuPy array (in memory). Shape and dtype are
    checked here; rows (finite, nonzero) by :meth:`Source.check` or whoever reads them first."""
    if isinstance(x, Source):
        return x
    if isinstance(x, (str, os.PathLike)):
        x = _open_npy(Path(x), name)
    if _out_of_core(x):
        shape, dtype = tuple(x.shape), np.dtype(x.dtype)
        if len(shape) != 2:
            raise ValueError(f"{name} must be 2-D (N, D), got shape {shape}; save one flattened sample per row")
        if dtype.name not in _NUMPY_FLOATS:
            raise TypeError(f"{name} must be floating point (float16, float32 or float64), got dtype {dtype}")
        if shape[0] == 0 or shape[1] == 0:
            raise ValueError(f"{name} is empty (shape {shape}); it needs samples and features")
        return Source(array=x, name=name)
    return Source(tensor=_matrix(as_tensor(x, name), name), name=name)


def _matrix(t: torch.Tensor, name: str) -> torch.Tensor:
    """``t`` if it is a non-empty (N, D) floating-point matrix, else an error naming ``name``
    (a layer's name, such as "layer 'fc1'")."""
    if t.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D (N, D), got shape {tuple(t.shape)}; "
            f"flatten each sample first, e.g. {name}.reshape(len({name}), -1)"
        )
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be floating point, got dtype {t.dtype}; convert it with {name}.float()")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); it needs samples and features")
    return t


def _open_npy(path: Path, name: str):
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such file {str(path)!r}")
    if path.suffix != ".npy":
        raise ValueError(f"{name}: {path} is not an .npy file; save the matrix with numpy.save")
    how = "save a floating-point (N, D) matrix with numpy.save(path, x.astype(np.float32))"
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise ValueError(f"{name}: {path} is not an .npy file (it lacks NumPy's header); {how}")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:  # Python objects, which cannot be mapped (and are not loaded unsafely)
        raise ValueError(f"{name}: {path} holds no array of numbers that can be memory-mapped ({exc}); {how}") from exc


def _out_of_core(x) -> bool:
    """A memmap, or an array-like that is not a NumPy array or tensor (zarr, h5py, ...)."""
    if isinstance(x, np.memmap):
        return True
    if isinstance(x, (np.ndarray, torch.Tensor)) or hasattr(x, "__dlpack__"):
        return False
    return hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "__getitem__")
