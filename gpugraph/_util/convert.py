"""Input conversion shared by every public function: arrays to torch tensors, labels to
class codes, ``device=`` arguments to devices that exist.

Torch tensors are the common currency. NumPy arrays become CPU tensors without a copy;
CuPy arrays (and anything else with ``__dlpack__``) cross by DLPack, also without a copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from gpugraph._util.errors import GpuGraphError


def as_tensor(x, name: str = "x") -> torch.Tensor:
    """Return ``x`` as a torch tensor on its own device, sharing memory where possible, and
    detached: no measure here is differentiable, so a model's output (``requires_grad``)
    is read as values and no autograd graph is built."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        if not x.flags.writeable:  # torch.from_numpy warns on read-only arrays
            x = x.copy()
        return torch.from_numpy(x)
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        return torch.from_dlpack(x)
    if isinstance(x, (Sequence, np.generic)) and not isinstance(x, (str, bytes)):
        return torch.as_tensor(np.asarray(x))
    raise TypeError(f"{name} must be a torch tensor, a NumPy array or a CuPy array, got {type(x).__name__}")


def label_codes(labels, n: int, device: torch.device) -> tuple[torch.Tensor, list]:
    """Map ``n`` hashable labels to int64 codes 0..C-1 on ``device``.

    Labels may be a tensor or array of integers, a NumPy array of strings or objects (what
    an .npz of string labels loads as), a list, or a pandas Series. Returns the codes and
    the list of distinct labels (sorted where they are orderable).
    """
    if isinstance(labels, (str, bytes)):
        raise TypeError("labels must be a sequence of N labels, got a single string")
    if isinstance(labels, torch.Tensor) or (hasattr(labels, "__dlpack__") and not isinstance(labels, np.ndarray)):
        t = as_tensor(labels, "labels")
        _check_label_shape(tuple(t.shape), n)
        if t.dtype.is_complex:
            raise TypeError(f"labels must be integers or other exact values, got dtype {t.dtype}")
        if t.dtype.is_floating_point:
            t = _whole(t, t.dtype)
        if t.device.type == "cpu" and t.dtype != torch.bool and n > 0:
            arr = t.numpy()  # a CPU tensor of integers: the integer path below
        else:
            classes, codes = torch.unique(t, return_inverse=True)
            return codes.to(device=device, dtype=torch.int64), classes.tolist()
    else:
        arr = labels if isinstance(labels, np.ndarray) else _label_array(list(labels))
    _check_label_shape(arr.shape, n)
    if arr.dtype.kind == "c":
        raise TypeError(f"labels must be integers or other exact values, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        arr = _whole(torch.from_numpy(np.ascontiguousarray(arr)), arr.dtype).numpy()
    if arr.dtype.kind in "iu" and n > 0:
        low, high = int(arr.min()), int(arr.max())
        if high - low <= 4 * n and high < 2**62:  # a table instead of a sort: O(N), np.unique's answer
            shifted = arr.reshape(-1).astype(np.int64) - low
            present = np.bincount(shifted, minlength=high - low + 1) > 0
            codes = (np.cumsum(present) - 1)[shifted]
            return torch.from_numpy(codes).to(device), (np.flatnonzero(present) + low).tolist()
    if arr.dtype.kind in "iubUS":
        classes, codes = np.unique(arr, return_inverse=True)
        return torch.from_numpy(codes.astype(np.int64).reshape(-1)).to(device), classes.tolist()
    index: dict = {}
    try:
        codes = [index.setdefault(v, len(index)) for v in arr.tolist()]
    except TypeError as exc:
        bad = next(v for v in arr.tolist() if not _hashable(v))
        raise TypeError(
            f"labels must be hashable values (ints, strings, ...), got an entry of type "
            f"{type(bad).__name__}: {bad!r}"
            + ("; for one-hot rows pass their argmax" if isinstance(bad, (list, np.ndarray)) else "")
        ) from exc
    return torch.tensor(codes, dtype=torch.int64, device=device), list(index)


def _whole(t: torch.Tensor, dtype) -> torch.Tensor:
    """Floating-point labels that are whole numbers (class ids saved as floats: ``y.float()``,
    an .npz of float32 labels) as int64; any other value is refused, naming the first."""
    bad = ~torch.isfinite(t) | (t != torch.round(t)) | (t.abs() >= 2.0**53)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise TypeError(
            f"labels of dtype {dtype} must be whole numbers (class ids such as 0.0, 1.0, 2.0), got "
            f"{float(t.reshape(-1)[i])!r} at entry {i}; continuous targets are no classes: bin them "
            "first (e.g. numpy.digitize), or pass integer or string labels"
        )
    return t.to(torch.int64)


def _label_array(values: list) -> np.ndarray:
    """A list of labels as a 1-D array: typed when NumPy finds one dtype, else of objects."""
    try:
        arr = np.asarray(values)
    except ValueError:  # ragged entries
        arr = None
    mixed = arr is not None and arr.dtype.kind in "US" and not all(isinstance(v, (str, bytes)) for v in values)
    if arr is None or mixed or arr.ndim != 1 or arr.dtype.kind not in "iubfUS":
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
    return arr


def _check_label_shape(shape: tuple, n: int) -> None:
    if len(shape) != 1:
        hint = "; one-hot labels: pass labels.argmax(1)" if len(shape) == 2 else ""
        raise ValueError(f"labels must be 1-D, one entry per node: expected shape ({n},), got {shape}{hint}")
    if shape[0] != n:
        raise ValueError(
            f"labels must have one entry per node: expected {n}, got {shape[0]} (expected shape ({n},), got {shape})"
        )


def _hashable(v) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


def resolve_device(device, default: torch.device) -> torch.device:
    """``device`` (None: ``default``) as a torch.device that exists here, or a clear error:
    the one check behind every ``device=`` argument and ``--device`` option."""
    if device is None:
        return default
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be a torch device or a string like 'cuda:0', got {device!r}") from exc
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise GpuGraphError(f"device={device!r} was asked for, but torch sees no CUDA device")
        if target.index is None:
            target = torch.device("cuda", torch.cuda.current_device())
        elif target.index >= torch.cuda.device_count():
            raise GpuGraphError(
                f"device={device!r} was asked for, but torch sees {torch.cuda.device_count()} CUDA "
                f"device(s): cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
            )
    elif target.type != "cpu":
        raise ValueError(f"device must be a CPU or CUDA device, got {device!r}")
    return target
