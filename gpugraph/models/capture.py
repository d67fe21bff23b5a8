"""Capture every chosen layer's output for a data set with forward hooks."""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from gpugraph._util import memory as _memory
from gpugraph._util import progress as _progress
from gpugraph._util.convert import as_tensor, resolve_device
from gpugraph._util.errors import GpuGraphError, check_count
from gpugraph._util.types import Device, PathLike
from gpugraph.models import spill
from gpugraph.models.activations import Activations

_INPUT_KEYS = ("x", "input", "inputs", "image", "images", "data", "pixel_values")
_LABEL_KEYS = ("y", "label", "labels", "target", "targets")
_REDUCE = ("flatten", "avgpool", "mean", "cls", "last")
_INPUT_SUFFIX = ":input"  # "<module>:input" captures what a module receives, not what it returns
_told_of_eval_mode = False  # whether capture has said that it runs training-mode models in eval mode
HIDDEN_STATES = "hidden_states"  # layers=HIDDEN_STATES: the model's own output_hidden_states


def default_layers(model: nn.Module) -> list[str]:
    """The layers ``capture`` hooks when none are named.

    The rule follows Lu et al. (2022) and generalises it:

    0. Transformers, i.e. models holding a ModuleList or Sequential of two or more blocks of
       one class that each contain an attention module (Hugging Face's ``*.layer.N``,
       ``*.layers.N``, ``*.h.N``, timm's ``blocks.N``): the residual stream, that is the
       input of the first block (the embeddings' output, named ``"<first block>:input"``)
       and every block's output, then the modules with parameters registered after the
       blocks (final norm, pooler, head).
    1. ResNet-like models, i.e. models holding residual blocks (modules whose class name
       contains "Block" or "Bottleneck", as torchvision's BasicBlock/Bottleneck and most
       user-defined blocks): the stem (the last convolution before the first block) and
       the output of every outermost block, then every Linear layer outside the blocks. The
       stem is hooked before its norm, as Lu et al. hook ResNet's ``conv1``.
    2. Plain stacks with convolutions: each convolution's block, then every Linear layer. A
       convolution's block is the outermost Sequential around it that holds no other
       convolution and no Linear layer (``nn.Sequential(Conv2d, BatchNorm2d, ReLU)``: its
       output after the activation, the unit :func:`gpugraph.prune` removes whole); a
       convolution without one (VGG's flat ``features``) is its own block, hooked before its
       norm and activation as Lu et al. hook VGG.
    3. Anything else: every top-level child that holds parameters, and every Linear layer.

    Names are returned in registration order; ``capture`` reorders them by execution.
    A sequential TorchScript model offers each of its top-level children with parameters.
    """
    if isinstance(model, _ScriptedSequential):
        steps = [(n, step) for n, step in model.named_children() if isinstance(step, _Step)]  # all of them
        return [n for n, step in steps if any(True for _ in step.scripted.parameters())]
    stream = transformer_blocks(model)
    if stream is not None:
        return [stream[0] + _INPUT_SUFFIX, *stream, *_after(model, stream[-1])]
    named = [(name, m) for name, m in model.named_modules() if name]
    blocks = [n for n, m in named if _is_block(m)]
    blocks = [b for b in blocks if not any(b.startswith(o + ".") for o in blocks)]  # outermost
    if blocks:
        first = next(i for i, (n, _) in enumerate(named) if n == blocks[0])
        stem = [n for n, m in named[:first] if isinstance(m, nn.modules.conv._ConvNd)][-1:]
        linear = [n for n, m in named if isinstance(m, nn.Linear) and not any(n.startswith(b + ".") for b in blocks)]
        return stem + blocks + linear
    convs = [n for n, m in named if isinstance(m, nn.modules.conv._ConvNd)]
    if convs:
        modules = dict(named)
        units = [_conv_block(c, modules) for c in convs]
        return list(dict.fromkeys(units)) + [n for n, m in named if isinstance(m, nn.Linear)]
    top = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
    linear = [n for n, m in named if isinstance(m, nn.Linear) and n not in top]
    return top + linear


def transformer_blocks(model: nn.Module) -> list[str] | None:
    """Names of the repeated attention blocks of a transformer (the first such list in
    registration order), or None: a ModuleList or Sequential of at least two children of one
    class, each holding an attention module (a class named "...Attention..." or
    nn.MultiheadAttention)."""
    for name, m in model.named_modules():
        if not isinstance(m, (nn.ModuleList, nn.Sequential)) or len(m) < 2:
            continue
        children = list(m.children())
        if len({type(c) for c in children}) == 1 and all(_has_attention(c) for c in children):
            return [f"{name}.{i}" if name else str(i) for i in range(len(children))]
    return None


def _has_attention(m: nn.Module) -> bool:
    return any(isinstance(s, nn.MultiheadAttention) or "Attention" in type(s).__name__ for s in m.modules())


def _after(model: nn.Module, last_block: str) -> list[str]:
    """The modules with parameters registered after the blocks, next to them or next to one
    of their ancestors (final norm, pooler, head), in registration order."""
    parts = last_block.split(".")[:-1]  # the block list's name
    found = []
    for depth in range(len(parts), 0, -1):
        parent_name, child = ".".join(parts[: depth - 1]), parts[depth - 1]
        parent = model.get_submodule(parent_name) if parent_name else model
        names = [n for n, _ in parent.named_children()]
        for n in names[names.index(child) + 1 :]:
            m = getattr(parent, n)
            if m is not None and any(True for _ in m.parameters()):
                found.append(f"{parent_name}.{n}" if parent_name else n)
    return found


def _conv_block(conv: str, modules: dict[str, nn.Module]) -> str:
    """The outermost Sequential around the convolution ``conv`` holding no other convolution
    and no Linear layer, or ``conv`` itself."""
    block = conv
    parts = conv.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        parent = modules[".".join(parts[:depth])]
        inside = [m for m in parent.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
        if not isinstance(parent, nn.Sequential) or len(inside) > 1:
            break
        block = ".".join(parts[:depth])
    return block


def _is_block(m: nn.Module) -> bool:
    name = type(m).__name__
    return "Block" in name or "Bottleneck" in name


def resolve_layers(model: nn.Module, layers) -> list[str]:
    """Expand names and glob patterns against the model's module names."""
    if layers is None:
        found = default_layers(model)
        if not found:
            raise ValueError("found no layers to capture in this model; name them with layers=[...]")
        return found
    if isinstance(layers, str):
        layers = [layers]
    names = [name for name, _ in model.named_modules() if name]
    chosen: list[str] = []
    for pattern in layers:
        base, suffix = (
            (pattern[: -len(_INPUT_SUFFIX)], _INPUT_SUFFIX) if pattern.endswith(_INPUT_SUFFIX) else (pattern, "")
        )
        hits = [n + suffix for n in names if fnmatch.fnmatchcase(n, base)]
        if not hits:
            sample = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise ValueError(f"layer pattern {pattern!r} matches no module; modules are: {sample}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def capture(
    model: nn.Module,
    data: Any,
    layers: str | Sequence[str] | None = None,
    reduce: str | Callable[..., torch.Tensor] = "flatten",
    max_samples: int | None = None,
    device: Device = None,
    dtype: torch.dtype | None = None,
    batch_size: int = 256,
    progress: bool | None = None,
    include_input: bool = False,
    out: PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    select: Callable[[Any], torch.Tensor] | None = None,
    quiet_mode: bool = False,
) -> Activations:
    """Run ``data`` through ``model`` and keep the output of each chosen layer.

    Parameters
    ----------
    model : torch.nn.Module, or a program from torch.export.export
        A TorchScript model must be a scripted Sequential (TorchScript runs the rest as one
        opaque call); an exported program is unflattened (its modules called one by one).
        Run in eval mode under ``torch.no_grad``; the train/eval mode of every submodule is
        restored afterwards and every hook removed, also when the forward raises.
    data : DataLoader, Dataset, tensor, (inputs, labels) pair, or iterable of batches
        Batches may be tensors (inputs only), tuples/lists (inputs, labels, ...), dicts
        (and dataclasses, Hugging Face ``BatchEncoding`` objects) or a map-style or iterable
        ``Dataset`` (batched by a DataLoader of ``batch_size``, in order). A dict's label
        entry (y, label, labels, target, targets) becomes the labels and is never passed to
        the model; the rest is passed as keyword arguments, ``model(**rest)``, the way
        Hugging Face models take ``input_ids`` and ``attention_mask``, or, when the model's
        ``forward`` does not take those names, the entry under an input key (x, input,
        inputs, image, images, data, pixel_values) is passed alone. A tensor, or an
        (inputs, labels) pair with one label per input, is split into batches of
        ``batch_size``; labels may be a tensor, an array, a list (of ints or strings) or
        one-hot rows (their argmax is taken). Floating-point inputs are cast to the dtype
        of the model's parameters (a float64 NumPy array for a float32 model), with one
        warning.
    layers : list of str, str, "hidden_states", or None
        Module names or glob patterns (``"layer*.?"``); a name ending in ``":input"``
        captures what that module receives (``"encoder.layer.0:input"``: the embeddings'
        output as the first block sees it); None follows :func:`gpugraph.models.capture.default_layers`.
        ``"hidden_states"``: the model's own ``output_hidden_states=True`` (Hugging Face),
        as layers ``hidden_states.0`` (the embeddings) to ``hidden_states.L``.
    reduce : "flatten", "avgpool", "mean", "cls", "last" or callable
        How a layer's (B, ...) output becomes (B, D). "flatten" keeps every value, the
        choice of Lu et al. (2022): the cosine between two samples then compares their
        feature maps position by position, so spatial layout counts as much as what the
        channels detect. "avgpool" averages over spatial dimensions, ``(B, C, *S) -> (B, C)``:
        the channel statistics, blind to position (the usual choice for CKA). Use
        "flatten" to reproduce the paper; if its curve is flat and high on a small CNN
        (every layer already separates the classes by position-wise agreement, or none
        does), "avgpool" often shows the rise with depth. A callable maps the output
        tensor to a (B, D) tensor.

        Sequence outputs (B, T, D) of transformers: "mean" averages the tokens the batch's
        ``attention_mask`` keeps (all tokens without a mask), "cls" takes the first token
        (BERT's [CLS], a ViT's class token), "last" the last kept token (a decoder's
        summary), and "flatten" keeps all T x D values. "avgpool" refuses them in a
        transformer (it would average over the features) and names "mean"; the token
        reductions refuse (B, C, H, W) maps. (B, D) outputs (a pooler, the logits) pass
        through every reduction unchanged, so one ``reduce=`` serves a whole transformer.
    select : callable, optional
        Picks the tensor from a layer's output when that is not a tensor. By default the
        first tensor of a tuple or list, and the first tensor field of a dict or a Hugging
        Face ``ModelOutput`` (``last_hidden_state``, ``logits``): the hidden state.
    quiet_mode : bool
        Capture a model in training mode without the warning (given once a process) that it
        runs in eval mode, for callers that do so on purpose, as :class:`~gpugraph.CurveMonitor`
        does between epochs.
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
        Unknown layer names, a reduce that does not give (B, D) or does not fit a layer's
        output (a token reduction on (B, C, H, W) maps, "avgpool" on a transformer's
        tokens, an attention mask of another length), a layer output holding no tensor, a
        layer run twice per forward, batches without inputs or with entries the model's
        forward does not take, an (inputs, labels) pair of different lengths.
    GpuGraphError
        If the activations would not fit in the memory of their device, or ``device`` is a
        CUDA device torch does not see.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    >>> x, y = torch.randn(60, 8), torch.arange(60) % 3
    >>> acts = gg.capture(net, (x, y), include_input=True)   # the linear layers; the input first
    >>> {name: tuple(a.shape) for name, a in acts.items()}
    {'input': (60, 8), '0': (60, 16), '2': (60, 16), '4': (60, 3)}
    >>> list(gg.capture(net, x, layers=["2:input", "2"]))    # what "2" receives, and its output
    ['2:input', '2']
    """
    exported = isinstance(model, torch.export.ExportedProgram)
    if isinstance(model, torch.export.ExportedProgram):  # its modules, called one by one again, so hooks fire
        model = torch.export.unflatten(model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_count(batch_size, "batch_size")
    if select is not None and not callable(select):
        raise TypeError(f"select must be a function from a layer's output to a tensor, got {type(select).__name__}")
    modes = {m: m.training for m in model.modules()}  # restored at the end, hooks or not
    global _told_of_eval_mode
    if model.training and not quiet_mode and not _told_of_eval_mode:
        _told_of_eval_mode = True  # once a process: a fresh module is in training mode
        warnings.warn(
            f"capture: {type(model).__name__} is in training mode; its layers are captured in eval mode "
            "(BatchNorm's running statistics, no dropout), and the mode is restored afterwards",
            stacklevel=2,
        )
    if isinstance(model, torch.jit.ScriptModule):
        model = _ScriptedSequential.wrap(model)
    params = list((model.scripted if isinstance(model, _ScriptedSequential) else model).parameters())
    model_device = params[0].device if params else torch.device("cpu")
    model_dtype = next((p.dtype for p in params if p.is_floating_point()), None)
    store = resolve_device(device, model_device)
    reducer = _reducer(reduce, sequences=transformer_blocks(model) is not None)
    keywords = _keywords(model)
    hidden = isinstance(layers, str) and layers == HIDDEN_STATES
    if hidden and keywords is not None and "output_hidden_states" not in keywords:
        raise ValueError(
            f"layers='{HIDDEN_STATES}' asks the model for output_hidden_states=True, but "
            f"{type(model).__name__}.forward takes no such argument; name the layers instead"
        )
    names = [] if hidden else resolve_layers(model, layers)
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
        described = {
            "model": type(model).__name__,
            "parameters": sum(p.numel() for p in params),
            "data": type(data).__name__,
            "reduce": reduce if isinstance(reduce, str) else "callable",
            "layers_asked": names if not hidden else HIDDEN_STATES,
        }
        writer = spill.Writer(out, description=described, resume=resume, overwrite=overwrite)
    elif resume or overwrite:
        raise ValueError("resume and overwrite apply to a capture written to disk: pass out=DIR too")
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    order: list[str] = ["input"] if include_input else []
    calls: dict[str, int] = {}
    produced: dict[str, torch.Tensor] = {}  # this batch's raw outputs, to find the model's own
    current: dict = {"mask": None}  # this batch's attention mask, for the token reductions

    def keep(name, out):
        flat = reducer(name, out.detach(), current["mask"])
        if flat.dim() != 2 or flat.shape[0] != out.shape[0]:
            raise ValueError(
                f"reduce must map layer {name!r}'s output {tuple(out.shape)} to (B, D), got {tuple(flat.shape)}"
            )
        if writer is not None:
            writer.write(name, flat.to(dtype=dtype or flat.dtype))
            outputs[name] = [torch.empty(0)]  # it ran; its rows are on disk, not in memory
        else:
            rows = flat.to(device=store, dtype=dtype or flat.dtype)
            if rows.untyped_storage().data_ptr() == out.untyped_storage().data_ptr():
                # still a view of the layer's output, which a later in-place op of the same
                # forward (a ReLU(inplace=True) after a conv, as in torchvision's VGG) would change
                rows = rows.clone()
            outputs.setdefault(name, []).append(rows)

    def record(name, out):
        out = _pick(name, out, select)
        calls[name] = calls.get(name, 0) + 1
        if name not in order:
            order.append(name)
        produced[name] = out
        keep(name, out)

    def hook_for(name):
        if name.endswith(_INPUT_SUFFIX):
            return lambda _module, args, kwargs: record(name, _received(args, kwargs))
        return lambda _module, _inputs, out: record(name, out)

    handles = [
        modules[name[: -len(_INPUT_SUFFIX)]].register_forward_pre_hook(hook_for(name), with_kwargs=True)
        if name.endswith(_INPUT_SUFFIX)
        else modules[name].register_forward_hook(hook_for(name))
        for name in names
    ]
    labels: list = []
    final: list[str] = []
    seen = 0
    try:
        model.eval()
        bar = _progress.bar(progress, total, "sample", "capture")
        with torch.no_grad():
            skip = writer.skip if writer is not None else 0  # samples a resumed capture holds
            checked = False
            for raw in _batches(data, batch_size):
                batch = _split(raw, keywords)
                if max_samples is not None:
                    batch = batch.rows(0, max_samples - seen)
                n = len(batch)
                if batch.labels is not None:
                    labels.append(_label_batch(batch.labels, n))
                drop = min(n, max(0, skip - seen))
                if drop < n:
                    batch_in = batch.rows(drop, n)
                    batch_in, cast_from = batch_in.prepared(model_device, model_dtype)
                    if cast_from is not None and not checked:  # once a capture: on its first batch
                        warnings.warn(
                            f"capture: inputs are {cast_from} but the model's parameters are "
                            f"{model_dtype}; casting the inputs to {model_dtype}",
                            stacklevel=2,
                        )
                    current["mask"] = batch_in.mask
                    if include_input:
                        keep("input", batch_in.tensor("include_input"))
                    calls.clear()
                    produced.clear()
                    try:
                        result = batch_in.run(model, output_hidden_states=True) if hidden else batch_in.run(model)
                    except RuntimeError as exc:
                        if exported and "Expected input" in str(exc):
                            raise ValueError(
                                f"the exported program refuses a batch of {len(batch_in)}: it was exported "
                                f"for fixed input shapes ({exc}); export it with a dynamic batch dimension, "
                                "torch.export.export(model, args, dynamic_shapes=...), or pass batches of "
                                "the exported size"
                            ) from exc
                        raise
                    if hidden:
                        for i, h in enumerate(_hidden_states(result)):
                            record(f"{HIDDEN_STATES}.{i}", h)
                    twice = [n for n, c in calls.items() if c > 1]
                    if twice:
                        raise ValueError(
                            f"layer {twice[0]!r} ran {calls[twice[0]]} times in one forward pass "
                            "(a shared module); capture a layer that runs once instead"
                        )
                    if not checked:
                        _check_room(outputs, writer, total, store)
                        answer = _first_tensor(result)  # the model's answer: a tensor, logits, ...
                        final = [n for n, o in produced.items() if answer is not None and o is answer]
                        checked = True
                seen += n
                if writer is not None:
                    writer.commit(seen)
                bar.update(n)
                if max_samples is not None and seen >= max_samples:
                    break
        bar.close()
        if seen == 0:
            raise ValueError("data yielded no samples")
        if writer is not None and seen <= writer.skip:
            raise ValueError(
                f"the data yielded {seen} samples, no more than the {writer.skip} the "
                "interrupted capture already holds: is it the same data?"
            )
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
        return Activations.load(writer.dir)
    result = {name: torch.cat(outputs[name]) for name in order}
    return Activations(result, _join_labels(labels) if labels else None, final=final)


class _Step(nn.Module):
    """One child of a TorchScript Sequential, callable and hookable from Python."""

    scripted: torch.jit.ScriptModule

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

    scripted: torch.jit.ScriptModule

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


def _reducer(reduce, sequences: bool):
    """fn(layer name, output, attention mask or None) -> (B, D). ``sequences``: the model is a
    transformer, whose (B, T, D) outputs "avgpool" must not average over D."""
    if callable(reduce):
        return lambda name, out, mask: reduce(out)
    if reduce not in _REDUCE:
        raise ValueError(f"reduce must be one of {_REDUCE} or a callable, got {reduce!r}")
    single: set[str] = set()  # layers already warned of as one-channel

    def apply(name, out, mask):
        if out.dim() <= 2 or reduce == "flatten":
            return out.reshape(out.shape[0], -1)
        if reduce == "avgpool":
            if sequences and out.dim() == 3:
                raise ValueError(
                    f"reduce='avgpool' averages the spatial positions of (B, C, *S) maps, but layer "
                    f"{name!r} of this transformer gives tokens (B, T, D) = {tuple(out.shape)}: use "
                    "reduce='mean' (mean over the kept tokens), 'cls', 'last' or 'flatten'"
                )
            if out.shape[1] == 1 and name not in single:
                single.add(name)
                warnings.warn(
                    f"layer {name!r} has one channel {tuple(out.shape)}: reduce='avgpool' leaves one number "
                    "a sample, and the cosine of one-number rows is only +1 or -1 (its kNN graph says "
                    "nothing about the samples); use reduce='flatten' for it, e.g. include_input with "
                    "one-channel images",
                    stacklevel=5,
                )
            return out.flatten(2).mean(dim=2)
        if out.dim() != 3:
            raise ValueError(
                f"reduce={reduce!r} reduces the tokens of (B, T, D) sequence outputs, but layer {name!r} "
                f"gives {tuple(out.shape)}; for (B, C, H, W) maps use reduce='avgpool' or 'flatten'"
            )
        if mask is not None and tuple(mask.shape) != tuple(out.shape[:2]):
            raise ValueError(
                f"layer {name!r} gives {out.shape[1]} tokens a sample but the batch's attention_mask "
                f"{tuple(mask.shape)} has {mask.shape[-1]}; reduce={reduce!r} needs one mask entry a token "
                "(pass a callable reduce= for this layer's layout)"
            )
        if reduce == "cls":
            return out[:, 0]
        if mask is None:
            return out.mean(dim=1) if reduce == "mean" else out[:, -1]
        keep = mask.to(device=out.device, dtype=out.dtype)  # (B, T)
        if reduce == "mean":
            return (out * keep[:, :, None]).sum(dim=1) / keep.sum(dim=1, keepdim=True).clamp(min=1)
        position = torch.arange(out.shape[1], device=out.device)
        last = torch.where(keep > 0, position, -1).argmax(dim=1)  # the last kept token
        return out[torch.arange(out.shape[0], device=out.device), last]

    return apply


def _first_tensor(out):
    """The first tensor of a tensor, tuple, list, dict or ModelOutput (its first field), or None."""
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, Mapping) else out if isinstance(out, (tuple, list)) else ()
    return next((v for v in values if isinstance(v, torch.Tensor)), None)


def _pick(name: str, out, select):
    """The tensor of layer ``name``'s output ``out``: ``select(out)``, or the first tensor."""
    picked = select(out) if select is not None else _first_tensor(out)
    if not isinstance(picked, torch.Tensor):
        if select is not None:
            raise ValueError(f"select returned {type(picked).__name__} for layer {name!r}, not a tensor")
        raise ValueError(
            f"layer {name!r} returned {type(out).__name__} holding no tensor; pass select=, a function "
            "from the layer's output to the tensor to capture"
        )
    return picked


def _received(args: tuple, kwargs: dict):
    """What a module was called with: its first tensor argument (a block's hidden state)."""
    for found in (_first_tensor(list(args)), kwargs.get("hidden_states"), _first_tensor(kwargs)):
        if isinstance(found, torch.Tensor):
            return found
    return None


def _hidden_states(result) -> tuple:
    states = result.get("hidden_states") if isinstance(result, Mapping) else getattr(result, "hidden_states", None)
    if not states:
        raise ValueError(
            f"the model was asked for output_hidden_states=True but returned "
            f"{type(result).__name__} without hidden_states; name the layers instead"
        )
    return tuple(states)


def _length(data) -> int | None:
    if isinstance(data, torch.utils.data.DataLoader):
        data = data.dataset
    if isinstance(data, torch.utils.data.Dataset) or _is_dataset(data):
        try:
            return len(data)
        except TypeError:  # an iterable Dataset
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
    if _is_dataset(data):  # samples, not batches: batched in order, as a DataLoader does
        return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    if isinstance(data, Iterable):
        return data
    raise TypeError(
        "data must be a DataLoader, a Dataset, a tensor, an (inputs, labels) pair or an iterable "
        f"of batches, got {type(data).__name__}"
    )


def _is_dataset(data) -> bool:
    """A torch Dataset (map-style or iterable), or a map-style data set by its methods (a
    Hugging Face ``datasets.Dataset``): indexed by sample, with a length."""
    if isinstance(data, torch.utils.data.Dataset):
        return True
    if isinstance(data, (torch.Tensor, np.ndarray, Mapping, list, tuple, str, bytes)):
        return False
    return hasattr(data, "__getitem__") and hasattr(data, "__len__") and hasattr(data, "column_names")


class _Batch:
    """One batch: the model's input (a tensor, passed alone) or its keyword arguments (a
    dict, passed as ``model(**inputs)``), and its labels or None."""

    def __init__(self, inputs, labels=None):
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        if isinstance(self.inputs, torch.Tensor):
            return len(self.inputs)
        return len(next(v for v in self.inputs.values() if isinstance(v, torch.Tensor) and v.dim() > 0))

    def rows(self, a: int, b: int) -> _Batch:
        n = len(self)
        inputs: torch.Tensor | dict
        if isinstance(self.inputs, torch.Tensor):
            inputs = self.inputs[a:b]
        else:  # per-sample tensors sliced; anything else (a flag, a scalar) as it is
            inputs = {
                k: v[a:b] if isinstance(v, torch.Tensor) and v.dim() > 0 and len(v) == n else v
                for k, v in self.inputs.items()
            }
        return _Batch(inputs, self.labels[a:b] if self.labels is not None else None)

    def prepared(self, device: torch.device, model_dtype: torch.dtype | None) -> tuple[_Batch, torch.dtype | None]:
        """On the model's device, floating tensors in the model's dtype (integer inputs, token
        ids, as they are); and the dtype of the floating inputs that were cast, or None."""
        cast_from = []

        def move(v):
            if not isinstance(v, torch.Tensor):
                return v
            if model_dtype is not None and v.is_floating_point() and v.dtype != model_dtype:
                cast_from.append(v.dtype)
                return v.to(device=device, dtype=model_dtype)
            return v.to(device)

        inputs = (
            move(self.inputs) if isinstance(self.inputs, torch.Tensor) else {k: move(v) for k, v in self.inputs.items()}
        )
        return _Batch(inputs, self.labels), (cast_from[0] if cast_from else None)

    @property
    def mask(self):
        return None if isinstance(self.inputs, torch.Tensor) else self.inputs.get("attention_mask")

    def tensor(self, why: str) -> torch.Tensor:
        """The one input tensor (``why`` names what needs it)."""
        if isinstance(self.inputs, torch.Tensor):
            return self.inputs
        key = next((k for k in _INPUT_KEYS if k in self.inputs), None)
        if key is None:
            raise ValueError(f"{why} needs one input tensor, but the batches pass the model {list(self.inputs)}")
        return self.inputs[key]

    def run(self, model: nn.Module, **extra):
        if isinstance(self.inputs, torch.Tensor):
            return model(self.inputs, **extra)
        return model(**self.inputs, **extra)


def _keywords(model: nn.Module) -> set[str] | None:
    """The argument names ``model.forward`` takes by keyword; None when it takes any."""
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _split(batch, keywords: set[str] | None) -> _Batch:
    """A batch as the data gives it (a tensor, a tuple or list, a dict or an object with
    fields) as inputs and labels."""
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        batch = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    if isinstance(batch, Mapping):
        label_key = next((k for k in _LABEL_KEYS if k in batch), None)
        rest = {k: v for k, v in batch.items() if k != label_key}
        rest = {k: as_tensor(v, k) if isinstance(v, np.ndarray) else v for k, v in rest.items()}
        labels = batch[label_key] if label_key is not None else None
        if keywords is None or set(rest) <= keywords:
            if not any(isinstance(v, torch.Tensor) and v.dim() > 0 for v in rest.values()):
                raise ValueError(f"a dict batch needs at least one input tensor, got keys {list(batch)}")
            return _Batch(rest, labels)
        key = next((k for k in _INPUT_KEYS if k in rest), None)
        if key is None:
            unknown = sorted(set(rest) - keywords)
            raise ValueError(
                f"a dict batch is passed to the model as keyword arguments, but its forward takes no "
                f"{unknown} (it takes {sorted(keywords)}); drop those entries from the batches, or put "
                f"the one input under one of {_INPUT_KEYS}"
            )
        return _Batch(as_tensor(rest[key], "inputs"), labels)
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("got an empty batch")
        return _Batch(as_tensor(batch[0], "inputs"), batch[1] if len(batch) > 1 else None)
    return _Batch(as_tensor(batch, "inputs"))


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
