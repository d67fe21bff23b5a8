"""The arithmetic of float32 matrix products, chosen per product without touching the user's
settings for longer than the product itself.

torch decides how a float32 matmul is computed from process-wide settings: on CUDA whether
TF32 tensor cores may be used, on the CPU whether oneDNN may use bf16 or TF32
(``torch.set_float32_matmul_precision("medium")`` allows both). Those settings are the
user's. gpugraph needs IEEE float32 for an exact tile (and TF32 for a "tf32" screen), so
:func:`fp32_matmul` wraps each product in a scope that

- does nothing when the setting in force already gives the arithmetic asked for;
- otherwise sets the backend's ``fp32_precision`` (the same API it read it from, so that
  ``torch.get_float32_matmul_precision()`` keeps working) and restores the exact value after;
- is shared between threads: scopes asking for the same arithmetic run together, a scope
  asking for another waits, so no gpugraph product ever runs under another's setting.

Low-precision screening products (bf16 inputs) ask for float32 output explicitly where torch
offers it (``torch.mm(..., out_dtype=torch.float32)`` on CUDA), so that cuBLAS never reduces
split-K partial sums in bf16, whatever ``allow_bf16_reduced_precision_reduction`` says.
"""

from __future__ import annotations

import contextlib
import threading

import torch

_ARITHMETIC = ("ieee", "tf32")


class _Scopes:
    """Counts the live scopes of one backend and the arithmetic they share."""

    def __init__(self):
        self.cond = threading.Condition()
        self.active = 0
        self.want: str | None = None
        self.saved = None


_SCOPES = {"cpu": _Scopes(), "cuda": _Scopes()}


def _backend(device_type: str):
    if device_type == "cuda":
        return torch.backends.cuda.matmul
    return getattr(torch.backends.mkldnn, "matmul", None)


def _read(device_type: str) -> str:
    """The backend's setting as torch reports it ('none' defers to the global one)."""
    backend = _backend(device_type)
    if hasattr(backend, "fp32_precision"):
        return backend.fp32_precision
    # torch < 2.9: only CUDA's legacy flag exists
    return "tf32" if device_type == "cuda" and torch.backends.cuda.matmul.allow_tf32 else "ieee"


def _current(device_type: str) -> str:
    """The arithmetic a float32 matmul on ``device_type`` gets now: 'ieee', 'tf32' or 'bf16'."""
    value = _read(device_type)
    if value == "none":
        value = getattr(torch.backends, "fp32_precision", "none")
    return "ieee" if value == "none" else value


def _set(device_type: str, value: str) -> None:
    backend = _backend(device_type)
    if hasattr(backend, "fp32_precision"):
        backend.fp32_precision = value
    elif device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = value == "tf32"


@contextlib.contextmanager
def fp32_matmul(device_type: str, arithmetic: str = "ieee"):
    """Float32 matmuls on ``device_type`` inside the scope use ``arithmetic`` ('ieee' or 'tf32').

    The user's setting is left alone when it already gives that arithmetic, and restored
    exactly when the scope had to change it. Scopes of other threads asking for other
    arithmetic wait until this one ends.
    """
    if arithmetic not in _ARITHMETIC:
        raise ValueError(f"arithmetic must be one of {_ARITHMETIC}, got {arithmetic!r}")
    if device_type not in _SCOPES or (device_type == "cpu" and _backend("cpu") is None):
        yield
        return
    scopes = _SCOPES[device_type]
    with scopes.cond:
        while scopes.active and scopes.want != arithmetic:
            scopes.cond.wait()
        if not scopes.active:
            scopes.want = arithmetic
            scopes.saved = None
            if _current(device_type) != arithmetic:
                scopes.saved = (_read(device_type),)
                _set(device_type, arithmetic)
        scopes.active += 1
    try:
        yield
    finally:
        with scopes.cond:
            scopes.active -= 1
            if not scopes.active:
                if scopes.saved is not None:
                    _set(device_type, scopes.saved[0])
                scopes.want = scopes.saved = None
                scopes.cond.notify_all()


def bf16_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b.T from bf16-rounded inputs with float32 accumulation and a float32 result.

    On CUDA the float32 output is asked for explicitly (``out_dtype``), so the reduction is
    never done in bf16; on the CPU oneDNN accumulates bf16 products in float32.
    """
    global _MM_OUT_DTYPE
    a16, b16 = a.to(torch.bfloat16), b.to(torch.bfloat16)
    if a.is_cuda and _MM_OUT_DTYPE:
        try:
            return torch.mm(a16, b16.T, out_dtype=torch.float32)
        except (RuntimeError, NotImplementedError):  # a build or device without the overload
            _MM_OUT_DTYPE = False
    if a.is_cuda:  # forbid bf16 split-K reductions for this product
        with _bf16_full_reduction():
            return (a16 @ b16.T).float()
    return (a16 @ b16.T).float()


_MM_OUT_DTYPE = "dtype" in torch.ops.aten.mm.overloads()  # torch.mm(..., out_dtype=...)
_REDUCTION_LOCK = threading.Lock()


@contextlib.contextmanager
def _bf16_full_reduction():
    matmul = torch.backends.cuda.matmul
    with _REDUCTION_LOCK:
        saved = matmul.allow_bf16_reduced_precision_reduction
        matmul.allow_bf16_reduced_precision_reduction = False
        try:
            yield
        finally:
            matmul.allow_bf16_reduced_precision_reduction = saved
