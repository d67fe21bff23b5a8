"""Capture every chosen layer's output for a data set with forward hooks."""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from gpugraph._util import memory as _memory
from gpugraph._util import progress as _progress
from gpugraph._util.convert import as_tensor, resolve_device
from gpugraph._util.errors import GpuGraphError, check_count
from gpugraph.models import spill
from gpugraph.models.activations import Activations

_INPUT_KEYS = ("x", "input", "inputs", "image", "images", "data", "pixel_values")
_LABEL_KEYS = ("y", "label", "labels", "target", "targets")
_REDUCE = ("flatten", "avgpool")



def default_layers(model: nn.Module) -> list[str]:
    """The layers ``capture`` hooks when none are named.

    The rule follows Lu et al. (2022) and generalises it:

    1. ResNet-like models, i.e. models holding residual blocks (modules whose class name
       contains "Block" or "Bottleneck", as torchvision's BasicBlock/Bottleneck and most
       user-defined blocks): the stem (the last convolution before the first block) and
       the output of every outermost block, then every Linear layer outside the blocks.
    2. Plain stacks with convolutions (VGG-like): every Conv layer, then every Linear layer.
    3. Anything else: every top-level child that holds parameters, and every Linear layer.

    Names are returned in registration order; ``capture`` reorders them by execution.
    A sequential TorchScript model offers each of its top-level children with parameters.
    """
    if isinstance(model, _ScriptedSequential):
        return [n for n, step in model.named_children() if any(True for _ in step.scripted.parameters())]
    named = [(name, m) for name, m in model.named_modules() if name]
    blocks = [n for n, m in named if _is_block(m)]
    blocks = [b for b in blocks if not any(b.startswith(o + ".") for o in blocks)]  # outermost
    if blocks:
        first = next(i for i, (n, _) in enumerate(named) if n == blocks[0])
        stem = [n for n, m in named[:first] if isinstance(m, nn.modules.conv._ConvNd)][-1:]
        linear = [
            n for n, m in named
            if isinstance(m, nn.Linear) and not any(n.startswith(b + ".") for b in blocks)
        ]
        return stem + blocks + linear
    convs = [n for n, m in named if isinstance(m, nn.modules.conv._ConvNd)]
    if convs:
        return convs + [n for n, m in named if isinstance(m, nn.Linear)]
    top = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
    linear = [n for n, m in named if isinstance(m, nn.Linear) and n not in top]
    return top + linear


def _is_block(m: nn.Module) -> bool:
    name = type(m).__name__
    return "Block" in name or "Bottleneck" in name


def resolve_layers(model: nn.Module, layers) -> list[str]:
    """Expand names and glob patterns against the model's module names."""
    if layers is None:
        chosen = default_layers(model)
        if not chosen:
            raise ValueError("found no layers to capture in this model; name them with layers=[...]")
        return chosen
    if isinstance(layers, str):
        layers = [layers]
    names = [name for name, _ in model.named_modules() if name]
    chosen: list[str] = []
    for pattern in layers:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            sample = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise ValueError(f"layer pattern {pattern!r} matches no module; modules are: {sample}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def capture(
    model: nn.Module,
    data,
    layers=None,
    reduce="flatten",
    max_samples: int | None = None,
    device=None,
    dtype: torch.dtype | None = None,
    batch_size: int = 256,
    progress: bool | None = None,
    include_input: bool = False,
    out=None,
    resume: bool = False,
    overwrite: bool = False,
) -> Activations:
    """Run ``data`` through ``model`` and keep the output of each chosen layer.

    Parameters
    ----------
    model : torch.nn.Module
        Run in eval mode under ``torch.no_grad``; the train/eval mode of every submodule is
        restored afterwards and every hook removed, also when the forward raises.
    data : DataLoader, tensor, (inputs, labels) pair, or iterable of batches
        Batches may be tensors (inputs only), tuples/lists (inputs, labels, ...) or dicts
        with an input key (x, input, inputs, image, images, data, pixel_values) and
        optionally a label key (y, label, labels, target, targets). A tensor, or an
        (inputs, labels) pair with one label per input, is split into batches of
        ``batch_size``; labels may be a tensor, an array, a list (of ints or strings) or
        one-hot rows (their argmax is taken). Floating-point inputs are cast to the
        dtype of the model's parameters (a float64 NumPy array for a float32 model), with
        one warning.
    layers : list of str, str, or None
        Module names or glob patterns (``"layer*.?"``); None follows :func:`default_layers`.
    reduce : "flatten", "avgpool" or callable
        How a layer's (B, ...) output becomes (B, D). "flatten" keeps every value, the
        choice of Lu et al. (2022): the cosine between two samples then compares their
        feature maps position by position, so spatial layout counts as much as what the
        channels detect. "avgpool" averages over spatial dimensions, (B, C, *S) -> (B, C):
        the channel statistics, blind to position (the usual choice for CKA). Use
        "flatten" to reproduce the paper; if its curve is flat and high on a small CNN
        (every layer already separates the classes by position-wise agreement, or none
        does), "avgpool" often shows the rise with depth. A callable maps the output
        tensor to a (B, D) tensor.
    max_samples : int, optional
        Stop after this many samples.
    device : torch.device or str, optional
        Where the activations are kept; by default the model's device.
    dtype : torch.dtype, optional
        Storage dtype of the activations (e.g. torch.float16 halves memory).
    batch_size : int
        Samples per forward pass when ``data`` is a tensor or an (inputs, labels) pair.
    progress : bool or callable, optional
        A bar per batch: None shows it only when stderr is a terminal; a callable is called
        as ``progress(samples_done, total)`` after each batch.
    include_input : bool
        Also keep the (reduced) inputs as a first layer named "input", the baseline of a
        modularity curve.
    out : str or Path, optional
        Write each layer's rows to ``out/<layer>.npy`` as they are produced (in ``dtype``,
        float16 allowed), with ``out/labels.npy`` and ``out/manifest.json``, instead of
        keeping them in memory; the result's tensors are memory-mapped from those files
        (``Activations.load(out)`` reopens them). Files become whole only when the capture
        ends: an interrupted capture is reported as such by ``Activations.load``.
    resume, overwrite : bool
        With ``out``: continue an interrupted capture from its last recorded sample (the
        data must come in the same order), or replace what ``out`` holds. Without either,
        a folder that already holds a capture is refused.

    Returns
    -------
    Activations
        Ordered by execution; ``.labels`` holds the labels when the data yields them;
        ``.final`` names the layers whose output is the model's output (a classifier head
        cannot be pruned, and curves do not mark it redundant).

    Raises
    ------
    ValueError
        Unknown layer names, a reduce that does not give (B, D), a layer run twice per
        forward, batches without inputs, an (inputs, labels) pair of different lengths.
    GpuGraphError
        If the activations would not fit in the memory of their device, or ``device`` is a
        CUDA device torch does not see.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_count(batch_size, "batch_size")
    modes = {m: m.training for m in model.modules()}  # restored at the end, hooks or not
    if isinstance(model, torch.jit.ScriptModule):
        model = _ScriptedSequential.wrap(model)
    params = list(model.parameters())
    model_device = params[0].device if params else torch.device("cpu")
    model_dtype = next((p.dtype for p in params if p.is_floating_point()), None)
    store = resolve_device(device, model_device)
    reducer = _reducer(reduce)
    names = resolve_layers(model, layers)
    if include_input and "input" in names:
        raise ValueError("the model has a module named 'input'; capture it without include_input")
    modules = dict(model.named_modules())
    total = _length(data)
    if max_samples is not None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be at least 1, got {max_samples}")
        total = min(total, max_samples) if total is not None else max_samples

    writer = None
    if out is not None:
        described = {"model": type(model).__name__, "parameters": sum(p.numel() for p in params),
                     "data": type(data).__name__, "reduce": reduce if isinstance(reduce, str) else "callable",
                     "layers_asked": names}
        writer = spill.Writer(out, description=described, resume=resume, overwrite=overwrite)
    elif resume or overwrite:
        raise ValueError("resume and overwrite apply to a capture written to disk: pass out=DIR too")
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    order: list[str] = ["input"] if include_input else []
    calls: dict[str, int] = {}
    produced: dict[str, torch.Tensor] = {}  # this batch's raw outputs, to find the model's own

    def keep(name, out):
        flat = reducer(out.detach())
        if flat.dim() != 2 or flat.shape[0] != out.shape[0]:
            raise ValueError(
                f"reduce must map layer {name!r}'s output {tuple(out.shape)} to (B, D), "
                f"got {tuple(flat.shape)}"
            )
        if writer is not None:
            writer.write(name, flat.to(dtype=dtype or flat.dtype))
            outputs[name] = [None]  # it ran; its rows are on disk, not in memory
        else:
            outputs.setdefault(name, []).append(flat.to(device=store, dtype=dtype or flat.dtype))

    def hook_for(name):
        def hook(_module, _inputs, out):
            if isinstance(out, (tuple, list)):
                out = next((o for o in out if isinstance(o, torch.Tensor)), None)
            if not isinstance(out, torch.Tensor):
                raise ValueError(f"layer {name!r} returned {type(out).__name__}, not a tensor")
            calls[name] = calls.get(name, 0) + 1
            if name not in order:
                order.append(name)
            produced[name] = out
            keep(name, out)

        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in names]
    labels: list = []
    final: list[str] = []
    seen = 0
    try:
        model.eval()
        bar = _progress.bar(progress, total, "sample", "capture")
        with torch.no_grad():
            skip = writer.skip if writer is not None else 0  # samples a resumed capture holds
            checked = False
            for batch in _batches(data, batch_size):
                inputs, y = _split(batch)
                if max_samples is not None:
                    inputs = inputs[: max_samples - seen]
                    y = y[: len(inputs)] if y is not None else None
                if y is not None:
                    labels.append(_label_batch(y, len(inputs)))
                drop = min(len(inputs), max(0, skip - seen))
                if drop < len(inputs):
                    batch_in = _cast(inputs[drop:].to(model_device), model_dtype)
                    if include_input:
                        keep("input", batch_in)
                    calls.clear()
                    produced.clear()
                    result = model(batch_in)
                    twice = [n for n, c in calls.items() if c > 1]
                    if twice:
                        raise ValueError(
                            f"layer {twice[0]!r} ran {calls[twice[0]]} times in one forward pass "
                            "(a shared module); capture a layer that runs once instead"
                        )
                    if not checked:
                        _check_room(outputs, writer, total, store)
                        final = [n for n, o in produced.items() if isinstance(result, torch.Tensor) and o is result]
                        checked = True
                seen += len(inputs)
                if writer is not None:
                    writer.commit(seen)
                bar.update(len(inputs))
                if max_samples is not None and seen >= max_samples:
                    break
        bar.close()
        if seen == 0:
            raise ValueError("data yielded no samples")
        if writer is not None and seen <= writer.skip:
            raise ValueError(f"the data yielded {seen} samples, no more than the {writer.skip} the "
                             "interrupted capture already holds: is it the same data?")
        missing = [n for n in names if not outputs[n]]
        if missing:
            raise ValueError(f"layers {missing} never ran in the forward pass; choose others")
        if writer is not None:
            writer.commit(seen, force=True)
            writer.finish(order, _join_labels(labels) if labels else None, final)
    finally:
        if writer is not None:
            writer.close()
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    if writer is not None:
        return Activations.load(out)
    result = {name: torch.cat(outputs[name]) for name in order}
    return Activations(result, _join_labels(labels) if labels else None, final=final)


def _cast(inputs: torch.Tensor, model_dtype: torch.dtype | None) -> torch.Tensor:
    """Floating inputs in the model's parameter dtype (integer inputs, e.g. token ids, as they are)."""
    if model_dtype is None or not inputs.is_floating_point() or inputs.dtype == model_dtype:
        return inputs
    warnings.warn(
        f"capture: inputs are {inputs.dtype} but the model's parameters are {model_dtype}; "
        f"casting the inputs to {model_dtype}",
        stacklevel=3,
    )
    return inputs.to(model_dtype)


class _Step(nn.Module):
    """One child of a TorchScript Sequential, callable and hookable from Python."""

    def __init__(self, scripted):
        super().__init__()
        object.__setattr__(self, "scripted", scripted)  # unregistered: not a hook target

    def forward(self, x):
        return self.scripted(x)


class _ScriptedSequential(nn.Module):
    """Runs a TorchScript Sequential child by child so that each child's output is seen.

    TorchScript compiles the forward pass, so hooks on its submodules never fire; only a
    Sequential, whose forward is its children in order, can be replayed faithfully.
    """

    def __init__(self, scripted):
        super().__init__()
        object.__setattr__(self, "scripted", scripted)
        for name, child in scripted.named_children():
            self.add_module(name, _Step(child))

    @classmethod
    def wrap(cls, scripted) -> _ScriptedSequential:
        if getattr(scripted, "original_name", None) != "Sequential":
            raise GpuGraphError(
                "TorchScript compiles the forward pass, so the layers of a scripted "
                f"{getattr(scripted, 'original_name', 'module')} cannot be hooked; only sequential "
                "TorchScript models are supported: save the Python module with torch.save(model, path)"
            )
        return cls(scripted)

    def train(self, mode: bool = True):
        self.scripted.train(mode)
        return super().train(mode)

    def forward(self, x):
        for step in self.children():
            x = step(x)
        return x


def _reducer(reduce):
    if callable(reduce):
        return reduce
    if reduce == "flatten":
        return lambda out: out.reshape(out.shape[0], -1)
    if reduce == "avgpool":
        return lambda out: out.flatten(2).mean(dim=2) if out.dim() > 2 else out
    raise ValueError(f"reduce must be one of {_REDUCE} or a callable, got {reduce!r}")


def _length(data) -> int | None:
    if isinstance(data, torch.utils.data.DataLoader):
        try:
            return len(data.dataset)
        except TypeError:
            return None
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return len(data)
    pair = _as_pair(data)
    return len(pair[0]) if pair is not None else None


def _as_pair(data):
    """``data`` as (inputs tensor, labels) when it is an (inputs, labels) pair, else None.

    A 2-sequence whose first item is an array of inputs is a pair unless its second item
    has the inputs' per-sample shape (then it is a list of two input batches). Labels may
    be a tensor, an array, a list or a pandas Series, one per input; one-hot rows become
    their argmax. A pair with a different number of labels is an error, not two batches.
    """
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        return None
    x, y = data
    if not isinstance(x, (torch.Tensor, np.ndarray)) or np.ndim(x) < 1:
        return None
    if isinstance(y, (str, bytes)) or not hasattr(y, "__len__"):
        return None
    shape = tuple(np.shape(y)) if isinstance(y, (torch.Tensor, np.ndarray)) else None
    if shape is not None and len(shape) >= 2 and shape[1:] == tuple(x.shape[1:]) and not _one_hot(y):
        return None  # a second batch of inputs
    if len(y) != len(x):
        raise ValueError(
            f"data looks like an (inputs, labels) pair, but it has {len(x)} inputs and {len(y)} "
            "labels; pass one label per input, or a list of batches"
        )
    return as_tensor(x, "inputs"), y


def _one_hot(y) -> bool:
    """Whether ``y`` is an (N, C) array of 0/1 rows with a single 1 each."""
    t = torch.as_tensor(np.asarray(y)) if isinstance(y, np.ndarray) else y
    if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.is_complex():
        return False
    return bool(((t == 0) | (t == 1)).all() and (t.sum(dim=1) == 1).all())


def _label_batch(y, n: int):
    """One batch's first n labels: a CPU int64 tensor for numbers (one-hot rows become their
    argmax), a NumPy array for strings and other objects (what an .npz of string labels holds)."""
    if isinstance(y, (torch.Tensor, np.ndarray)) and np.ndim(y) == 2:
        if not _one_hot(y):
            raise ValueError(
                f"labels must be one per sample, shape (B,), or one-hot rows (B, C); got a batch "
                f"of shape {tuple(np.shape(y))}"
            )
        y = torch.as_tensor(np.asarray(y) if isinstance(y, np.ndarray) else y).argmax(dim=1)
    if isinstance(y, np.ndarray) and y.dtype.kind not in "iubf":
        return y[:n]
    if not isinstance(y, (torch.Tensor, np.ndarray)):
        values = list(y)[:n]
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            return arr
        return torch.tensor(values, dtype=torch.int64)
    return as_tensor(y, "labels")[:n].cpu()


def _join_labels(parts: list):
    if all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat(parts)
    return np.concatenate([p.numpy() if isinstance(p, torch.Tensor) else p for p in parts])


def _batches(data, batch_size: int) -> Iterable:
    if isinstance(data, (torch.Tensor, np.ndarray)):
        t = as_tensor(data, "data")
        return (t[i : i + batch_size] for i in range(0, len(t), batch_size))
    pair = _as_pair(data)
    if pair is not None:
        x, y = pair
        return ((x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size))
    if isinstance(data, Iterable):
        return data
    raise TypeError(
        "data must be a DataLoader, a tensor, an (inputs, labels) pair or an iterable of "
        f"batches, got {type(data).__name__}"
    )


def _split(batch):
    if isinstance(batch, Mapping):
        key = next((k for k in _INPUT_KEYS if k in batch), None)
        if key is None:
            raise ValueError(
                f"a dict batch needs an input under one of {_INPUT_KEYS}, got keys {list(batch)}"
            )
        y = next((batch[k] for k in _LABEL_KEYS if k in batch), None)
        return as_tensor(batch[key], "inputs"), y
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("got an empty batch")
        return as_tensor(batch[0], "inputs"), batch[1] if len(batch) > 1 else None
    return as_tensor(batch, "inputs"), None


def _check_room(outputs, writer, total: int | None, store: torch.device) -> None:
    """After the first batch: refuse before filling the device (or the disk, for a capture
    written to disk) if the whole run won't fit."""
    if total is None:
        return
    if writer is not None:
        per_sample = sum(int(np.prod(e["shape"][1:])) * np.dtype(e["dtype"]).itemsize for e in writer.layers.values())
        need, free, where = per_sample * total, spill.free_bytes(writer.dir), f"disk under {writer.dir}"
    else:
        per_sample = sum(o[0][0].numel() * o[0].element_size() for o in outputs.values() if o)
        need, free, where = per_sample * total, _memory.available(store), str(store)
    if need > 0.8 * free:
        raise GpuGraphError(
            f"the activations of {total} samples need about {need / 2**30:.1f} GiB on {where}, "
            f"but only {free / 2**30:.1f} GiB is free; pass reduce='avgpool', a smaller "
            "max_samples, dtype=torch.float16, fewer layers"
            + (", or out=DIR to write them to disk" if writer is None else ", or another out folder")
        )