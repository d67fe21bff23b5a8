"""Layer pruning guided by the modularity curve (Lu et al., 2022) or by layer similarity (GBS,
Chen et al., 2024): what a model costs, which layers the measure says can go, and a copy of
the model without them.

A layer can be removed when its output has its input's shape: a residual block then becomes
the identity (its shortcut alone), and a layer of a sequential stack is skipped, the next
layer reading what the removed one read. Removed layers are replaced by ``nn.Identity`` in
place, so every other layer keeps its name and its ``state_dict`` key.
"""

from __future__ import annotations

import copy
import difflib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from gpugraph._util.types import RowSource
from gpugraph.models.activations import Activations
from gpugraph.models.training import evaluating
from gpugraph.similarity.layers import layer_similarity
from gpugraph.studies.curves import LayerCurve


def model_cost(model: nn.Module, example: torch.Tensor | tuple) -> dict:
    """{"params": int, "flops": int} of ``model``: its distinct parameters, and the FLOPs of one
    forward pass of ``example`` (a tensor, or a tuple of the forward's arguments) as
    ``torch.utils.flop_counter.FlopCounterMode`` counts them (a multiply-add is 2 FLOPs;
    convolutions and matrix products are counted, elementwise work is not). The pass runs in
    eval mode without gradients on the model's device; the model's mode is restored. For a
    cost per sample pass a batch of one.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    >>> x, y = torch.randn(60, 8), torch.arange(60) % 3
    >>> gg.model_cost(net, x[:1])        # 8*16+16 + 16*16+16 + 16*3+3 parameters; 2 FLOPs a weight
    {'params': 467, 'flops': 864}
    """
    from torch.utils.flop_counter import FlopCounterMode

    _check_module(model)
    params = sum(p.numel() for p in model.parameters())
    with evaluating(model), FlopCounterMode(display=False) as counter:
        model(*_on_device(example, model))
    return {"params": int(params), "flops": int(counter.get_total_flops())}


def prune(model: nn.Module, layers: str | Sequence[str], example: torch.Tensor | tuple | None = None) -> nn.Module:
    """A copy of ``model`` with each named layer removed (replaced by ``nn.Identity``); the
    original is untouched.

    Parameters
    ----------
    model : nn.Module
    layers : str or list of str
        Module names as ``model.named_modules()`` (and :func:`gpugraph.capture`) give them,
        e.g. ``"layer3.4"`` or ``"features.10"``.
    example : tensor or tuple, optional
        An input batch. With it, every layer's input and output shapes are those of a real
        forward pass, the layer producing the model's output is refused, and the pruned copy
        is run once to check that its output keeps its shape. Without it, each layer is run
        alone on a small input shaped for its first convolution, linear or normalisation
        layer (a layer without one then needs ``example``).

    Raises
    ------
    ValueError
        If a name is unknown (close names are suggested), repeated or inside another named
        layer, or a layer cannot be removed: its output shape differs from its input's (a
        downsampling or width-changing block, a classifier), it produces the model's output,
        it does not take and return one tensor, or it is not called by the forward pass.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    >>> x, y = torch.randn(60, 8), torch.arange(60) % 3
    >>> small = gg.prune(net, ["2"], example=x[:2])   # a copy; the original is untouched
    >>> small[2], net[2]
    (Identity(), Linear(in_features=16, out_features=16, bias=True))
    >>> small(x).shape
    torch.Size([60, 3])
    >>> gg.prune(net, ["0"], example=x[:2])
    Traceback (most recent call last):
    ...
    ValueError: ...
    """
    _check_module(model)
    names = _layer_names(model, layers)
    shapes, output = _shapes(model, names, example)
    for name in names:
        reason = _unremovable(name, model.get_submodule(name), shapes[name])
        if reason:
            raise ValueError(f"cannot remove layer {name!r}: {reason}")
    pruned = copy.deepcopy(model)
    for name in names:
        parent, _, attr = name.rpartition(".")
        setattr(pruned.get_submodule(parent), attr, nn.Identity())
    if example is not None:
        _check_runs(pruned, names, example, output)
    return pruned


@dataclass
class PrunePlan:
    """Which layers a modularity curve (or the layer similarity) says can go together, and
    why the others stay.

    ``layers``: the layers to remove, in order. ``redundant``: each layer whose change over
    the one before is below ``tol`` (by modularity: ``curve.redundant(tol)``). ``kept``: for
    each layer that stays, why (it changes the measure by ``tol`` or more over the last kept
    layer, or more than the ``count`` removed; it changes shapes; it is the output; it is not
    a module). ``removable``: every layer :func:`prune` could remove, whatever the measure says
    (those not in ``layers`` are the control of Lu et al.: layers off the plateaus). ``by``:
    "modularity" or "lsim"; ``count``: the number of layers asked for, or None (by ``tol``).

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    >>> x, y = torch.randn(60, 8), torch.arange(60) % 3
    >>> acts = gg.capture(net, (x, y), include_input=True)
    >>> plan = gg.prune_plan(gg.modularity_curve(acts, n=None), net, tol=1.0, example=x[:2])
    >>> plan.layers, plan.removable                  # tol=1: every layer that can go, goes
    (['2'], ['2'])
    >>> plan.kept["0"][:49]
    'its output has shape (N, 16) but its input (N, 8)'
    """

    layers: list[str]
    redundant: list[str]
    kept: dict[str, str] = field(default_factory=dict)
    removable: list[str] = field(default_factory=list)
    tol: float = 0.01
    by: str = "modularity"
    count: int | None = None

    def __str__(self) -> str:
        rule = (
            f"the {self.count} least changing"
            if self.count is not None
            else f"cumulative dQ < {self.tol}"
            if self.by == "modularity"
            else f"1 - LSim < {self.tol}"
        )
        lines = [f"remove {len(self.layers)} layer(s) ({rule}): {', '.join(self.layers) or 'none'}"]
        lines += [f"  keep {name}: {why}" for name, why in self.kept.items()]
        return "\n".join(lines)


TOL = {"modularity": 0.01, "lsim": 0.002}
"""Default ``tol`` of :func:`prune_plan` per measure. LSim of dense cosine graphs (GBS's
definition) saturates near 1 between neighbouring layers: on the residual blocks of
benchmarks/pruning.py consecutive blocks are 0.0007-0.03 apart (1 - LSim), stage boundaries
0.02-0.03, and a block that changes little 0.001-0.002."""


def prune_plan(
    curve: LayerCurve | Mapping[str, RowSource],
    model: nn.Module,
    tol: float | None = None,
    example: torch.Tensor | tuple | None = None,
    *,
    by: str = "modularity",
    count: int | None = None,
) -> PrunePlan:
    """The layers of ``model`` that the modularity ``curve`` (Lu et al., 2022) or the layer
    similarity of its activations (GBS, Chen et al., 2024) says can be removed together.

    Each layer is scored by how much it changes over the last layer that stays (its
    reference): by ``"modularity"``, the rise of the curve's mean modularity; by ``"lsim"``,
    1 - LSim(reference, layer), LSim on dense cosine graphs, so a layer whose sample graph is
    its reference's graph scores 0 (the ``curve`` argument is then the captured
    activations, ``gg.capture(model, held_out_data)``, layers in order; the dense graphs are
    never formed, see :func:`gpugraph.layer_similarity`).

    Walking the layers in order, a layer goes when it changes the measure by less than ``tol``
    (default: 0.01 by modularity, 0.002 by lsim) over its reference, and :func:`prune` can remove it; otherwise it
    stays and becomes the reference. So a run of plateau or dip layers goes as a whole as
    long as, together, it adds less than ``tol`` (Lu et al. remove such runs of plateau
    blocks), where :meth:`LayerCurve.redundant` compares each layer with its neighbour only
    and a slow, steady rise would let every layer of it go. With ``count``, ``tol`` is not
    used: ``count`` times, the removable layer that changes least over its reference (the
    nearest earlier layer still kept) goes, which lets two measures be compared at the same
    number of layers removed. The first layer, the model's output (``final``) and names that
    are not modules of ``model`` (such as "input") always stay. ``example``: as in
    :func:`prune`.

    GBS name model pruning as an application of LSim without giving a rule; this is the
    reading of "a layer whose output is as similar to its input as its neighbours' is can
    go". benchmarks/pruning.py compares both measures with random, last-blocks and oracle
    choices in a paired test.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    >>> x, y = torch.randn(60, 8), torch.arange(60) % 3
    >>> acts = gg.capture(net, (x, y), include_input=True)
    >>> curve = gg.modularity_curve(acts, k=3, n=None)
    >>> gg.prune_plan(curve, net, tol=1.0, example=x[:2]).layers
    ['2']
    >>> gg.prune_plan(acts, net, by="lsim", count=1, example=x[:2]).layers
    ['2']
    """
    if by not in TOL:
        raise ValueError(f'by must be "modularity" or "lsim", got {by!r}')
    tol = TOL[by] if tol is None else tol
    if tol < 0:
        raise ValueError(f"tol must be non-negative, got {tol}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ValueError(f"count must be a non-negative integer (the number of layers to remove), got {count!r}")
    layers, final, change, unit = _scores(curve, by)
    _check_module(model)
    modules = dict(model.named_modules())
    candidates = [name for name in layers[1:] if name in modules and name and name not in final]
    shapes = _shapes(model, _outermost(candidates), example)[0] if candidates else {}
    why_not = {name: _unremovable(name, modules[name], shape) for name, shape in shapes.items()}
    structural: dict[str, str] = {}
    for name in layers[1:]:
        if name in final:
            structural[name] = "the model's output"
        elif name not in modules or not name:
            structural[name] = "not a module of the model"
        elif name not in shapes:
            structural[name] = "inside another candidate layer"
        elif (why := why_not[name]) is not None:
            structural[name] = why
    removable = [name for name in layers if name in why_not and why_not[name] is None]
    redundant = (
        curve.redundant(tol)
        if isinstance(curve, LayerCurve)
        else [b for a, b in itertools.pairwise(layers) if b not in final and change(a, b) < tol]
    )
    plan = PrunePlan(
        [], redundant, {layers[0]: "the first layer of the curve (its reference)"}, removable, tol, by, count
    )
    if count is None:
        ref = layers[0]
        for name in layers[1:]:
            gain = change(ref, name)
            reason = structural.get(name) or (f"{unit} by {gain:.3f} over the last kept layer" if gain >= tol else None)
            if reason:
                plan.kept[name] = reason
                ref = name
            else:
                plan.layers.append(name)
        return plan
    if count > len(removable):
        raise ValueError(f"count={count} but only {len(removable)} layer(s) can be removed: {', '.join(removable)}")

    def reference(name: str, chosen: list[str]) -> str:
        i = layers.index(name) - 1
        while layers[i] in chosen:
            i -= 1
        return layers[i]

    chosen: list[str] = []
    for _ in range(count):
        left = [name for name in removable if name not in chosen]
        chosen.append(min(left, key=lambda name: change(reference(name, chosen), name)))
    plan.layers = [name for name in layers if name in chosen]
    for name in layers[1:]:
        if name not in chosen:
            ref = reference(name, chosen)
            plan.kept[name] = structural.get(name) or (
                f"{unit} by {change(ref, name):.3f} over {ref}, more than the {count} removed"
            )
    return plan


def _scores(curve, by: str):
    """The layers in order, the output layers, and change(ref, layer): how much ``layer``
    changes the measure over ``ref`` (with a phrase for the reasons)."""
    if by == "modularity":
        if not isinstance(curve, LayerCurve):
            raise TypeError(
                "curve must be a LayerCurve (from gpugraph.modularity_curve) for by='modularity', "
                f"got {type(curve).__name__}"
            )
        mean = dict(zip(curve.layers, curve.mean, strict=True))
        return curve.layers, set(curve.final), lambda a, b: mean[b] - mean[a], "raises the modularity"
    if isinstance(curve, LayerCurve):
        raise TypeError(
            "by='lsim' compares the layers' activations, not a modularity curve: pass gg.capture(model, held_out_data)"
        )
    if not isinstance(curve, Mapping) or len(curve) < 2:
        raise TypeError(
            "by='lsim' needs the captured activations (gg.capture(model, data)), a mapping of at least "
            f"two layer names to (N, D) tensors in layer order; got {type(curve).__name__}"
        )
    cache: dict[tuple[str, str], float] = {}

    def change(a: str, b: str) -> float:
        if (a, b) not in cache:
            cache[a, b] = 1.0 - layer_similarity(curve[a], curve[b])
        return cache[a, b]

    final = set(curve.final) if isinstance(curve, Activations) else set()
    return list(curve), final, change, "changes the layer similarity (1 - LSim)"


def _check_module(model) -> None:
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            "pruning needs a Python nn.Module, not a TorchScript archive; load the module "
            "saved with torch.save(model, path)"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _layer_names(model: nn.Module, layers) -> list[str]:
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ValueError("no layers to remove: pass one or more module names (see model.named_modules())")
    modules = dict(model.named_modules())
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"layer names must be strings, got {type(name).__name__}: {name!r}")
        if name == "":
            raise ValueError("the empty name is the whole model; name the layers to remove")
        if name not in modules:
            close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else "; see model.named_modules()"
            raise ValueError(f"model has no layer {name!r}{hint}")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"layer(s) named more than once: {', '.join(twice)}")
    for name in names:
        outer = next((o for o in names if name.startswith(o + ".")), None)
        if outer:
            raise ValueError(f"layer {name!r} is inside {outer!r}, which is also removed: name one of them")
    return names


def _outermost(names: list[str]) -> list[str]:
    return [n for n in names if not any(n.startswith(o + ".") for o in names)]


@dataclass
class _Shape:
    called: bool = False
    inputs: tuple | None = None  # the shape of the single tensor argument, None if not one tensor
    output: tuple | None = None
    final: bool = False
    unknown: str | None = None  # why the shapes could not be found


def _shapes(model: nn.Module, names: list[str], example) -> tuple[dict[str, _Shape], object]:
    """Each layer's input and output shape, from a forward pass of ``example`` (and that
    pass's output), or from a run of the layer alone on a probe input (output None)."""
    if example is None:
        return {name: _probe_alone(name, model.get_submodule(name)) for name in names}, None
    shapes = {name: _Shape() for name in names}
    outputs = {}

    def hook(name):
        def record(module, args, kwargs, out):
            s = shapes[name]
            s.called = True
            one = len(args) == 1 and not kwargs and torch.is_tensor(args[0])
            s.inputs = tuple(args[0].shape[1:]) if one else None
            s.output = tuple(out.shape[1:]) if torch.is_tensor(out) else None
            outputs[name] = out

        return record

    handles = [model.get_submodule(n).register_forward_hook(hook(n), with_kwargs=True) for n in names]
    try:
        with evaluating(model):
            result = model(*_on_device(example, model))
    finally:
        for h in handles:
            h.remove()
    for name, out in outputs.items():
        shapes[name].final = out is result
    return shapes, result


_PROBES = {
    nn.Conv1d: (32,),
    nn.Conv2d: (16, 16),
    nn.Conv3d: (8, 8, 8),
    nn.BatchNorm1d: (32,),
    nn.BatchNorm2d: (16, 16),
    nn.BatchNorm3d: (8, 8, 8),
}


def _probe_alone(name: str, module: nn.Module) -> _Shape:
    first = next((m for m in module.modules() if isinstance(m, (*_PROBES, nn.Linear))), None)
    if first is None:
        return _Shape(
            unknown=f"its input shape is unknown ({type(module).__name__}: no convolution, linear "
            "or batch-norm layer inside); pass example=<an input batch>"
        )
    shape: tuple[int, ...]
    if isinstance(first, nn.Linear):
        shape = (first.in_features,)
    elif isinstance(first, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        shape = (first.in_channels, *_PROBES[type(first)])
    else:
        assert isinstance(first, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))  # the rest of _PROBES
        shape = (first.num_features, *_PROBES[type(first)])
    p = next(module.parameters())
    with evaluating(module):
        out = module(torch.randn(2, *shape, dtype=p.dtype, device=p.device))
    return _Shape(True, shape, tuple(out.shape[1:]) if torch.is_tensor(out) else None)


def _unremovable(name: str, module: nn.Module, shape: _Shape) -> str | None:
    kind = type(module).__name__
    if shape.unknown:
        return shape.unknown
    if not shape.called:
        return f"it ({kind}) is not called by a forward pass of the example"
    if shape.final:
        return f"it ({kind}) produces the model's output"
    if shape.inputs is None or shape.output is None:
        return f"it ({kind}) does not take and return a single tensor"
    if shape.inputs != shape.output:
        return (
            f"its output has shape (N, {', '.join(map(str, shape.output))}) but its input (N, "
            f"{', '.join(map(str, shape.inputs))}) ({kind}: a downsampling, width-changing or "
            "classifier layer); only layers that keep their input's shape can be removed"
        )
    return None


def _check_runs(pruned: nn.Module, names: list[str], example, before) -> None:
    """The pruned copy runs on ``example`` and its output keeps the shape of the original's
    output ``before``."""
    try:
        with evaluating(pruned):
            after = pruned(*_on_device(example, pruned))
    except (RuntimeError, AttributeError, TypeError) as exc:
        raise ValueError(
            f"the model no longer runs without {', '.join(names)} ({exc}); "
            "its forward uses these layers' outputs in another way"
        ) from exc
    if torch.is_tensor(before) and (not torch.is_tensor(after) or after.shape != before.shape):
        raise ValueError(
            f"without {', '.join(names)} the model's output changes shape "
            f"({tuple(before.shape)} -> {tuple(getattr(after, 'shape', ()))})"
        )


def _on_device(example, model: nn.Module) -> tuple:
    args = tuple(example) if isinstance(example, (tuple, list)) else (example,)
    p = next(model.parameters(), None)
    if p is None:
        return args
    return tuple(a.to(p.device) if torch.is_tensor(a) else a for a in args)


__all__ = ["PrunePlan", "model_cost", "prune", "prune_plan"]
