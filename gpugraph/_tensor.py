"""Input conversion and validation shared by every public function.

Torch tensors are the common currency. NumPy arrays become CPU tensors without a copy;
CuPy arrays (and anything else with ``__dlpack__``) cross by DLPack, also without a copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def as_tensor(x, name: str = "x") -> torch.Tensor:
    """Return ``x`` as a torch tensor on its own device, sharing memory where possible."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if not x.flags.writeable:  # torch.from_numpy warns on read-only arrays
            x = x.copy()
        return torch.from_numpy(x)
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        return torch.from_dlpack(x)
    if isinstance(x, (Sequence, np.generic)) and not isinstance(x, (str, bytes)):
        return torch.as_tensor(np.asarray(x))
    raise TypeError(
        f"{name} must be a torch tensor, a NumPy array or a CuPy array, got {type(x).__name__}"
    )


def as_features(x, name: str = "x") -> torch.Tensor:
    """Check that ``x`` is an (N, D) finite floating-point matrix and return it as a tensor."""
    t = as_tensor(x, name)
    if t.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D (N, D), got shape {tuple(t.shape)}; "
            f"flatten each sample first, e.g. {name}.reshape(len({name}), -1)"
        )
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be floating point, got dtype {t.dtype}; convert it with {name}.float()"
        )
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); it needs samples and features")
    if bool(torch.isfinite(t.sum(dim=1, dtype=torch.float64)).all()):  # fast path: one pass
        return t
    bad = ~torch.isfinite(t).all(dim=1)
    if bool(bad.any()):
        rows = bad.nonzero().flatten()
        raise ValueError(
            f"{len(rows)} rows of {name} contain NaN or Inf (first: row {int(rows[0])}); "
            "remove or repair them before building a graph"
        )
    return t


def unit_rows(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Rows of ``x`` scaled to unit L2 norm, in float64 for float64 input, float32 otherwise."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(dtype)
    norms = torch.linalg.vector_norm(x, dim=1)
    zero = norms == 0
    if bool(zero.any()):
        rows = zero.nonzero().flatten()
        raise ValueError(
            f"{len(rows)} rows of {name} have zero norm (first: row {int(rows[0])}); "
            "cosine similarity is undefined for them: drop those samples or add a small offset"
        )
    return (x / norms[:, None]).contiguous()


def label_codes(labels, n: int, device: torch.device) -> tuple[torch.Tensor, list]:
    """Map ``n`` hashable labels to int64 codes 0..C-1 on ``device``.

    Returns the codes and the list of distinct labels (sorted where they are orderable).
    """
    if isinstance(labels, (str, bytes)):
        raise TypeError("labels must be a sequence of N labels, got a single string")
    if isinstance(labels, torch.Tensor) or hasattr(labels, "__dlpack__"):
        t = as_tensor(labels, "labels")
        if t.dim() != 1 or len(t) != n:
            raise ValueError(
                f"labels must have one entry per node: expected shape ({n},), got {tuple(t.shape)}"
            )
        if t.dtype.is_floating_point or t.dtype.is_complex:
            raise TypeError(f"labels must be integers or other exact values, got dtype {t.dtype}")
        classes, codes = torch.unique(t, return_inverse=True)
        return codes.to(device=device, dtype=torch.int64), classes.tolist()
    values = list(labels) if not isinstance(labels, np.ndarray) else labels
    if len(values) != n:
        raise ValueError(f"labels must have one entry per node: expected {n}, got {len(values)}")
    arr = np.asarray(values) if not isinstance(values, np.ndarray) else values
    if arr.ndim == 1 and arr.dtype.kind in "iub" + "US":
        classes, codes = np.unique(arr, return_inverse=True)
        return torch.from_numpy(codes.astype(np.int64)).to(device), classes.tolist()
    if arr.ndim == 1 and arr.dtype.kind == "f":
        raise TypeError(f"labels must be integers or other exact values, got dtype {arr.dtype}")
    index: dict = {}
    codes = [index.setdefault(v, len(index)) for v in values]  # TypeError if unhashable
    return torch.tensor(codes, dtype=torch.int64, device=device), list(index)
