"""Model stitching: the bottom of one network feeds the top of another through a trained stitch.

Bansal et al. (2021) and the GBS paper (Chen et al., 2024) ask whether the representation
of one network at a layer can be used by another: freeze a bottom network up to a layer and
a top network from a layer, and train only a 1x1 convolution (a linear map for flat
features) between them. The top keeps its batch-norm layers in eval mode, so nothing but
the stitch learns. The stitched accuracy is then compared with graph measures of the
bottom's representation (see benchmarks/stitching.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gpugraph._util.errors import check_count
from gpugraph.models.training import _device_of, eval_modes


class Stitched(nn.Module):
    """``bottom`` up to its module ``layer``, then ``stitch``, then ``top`` from the output of its
    module ``top_layer`` on.

    The top is run on the same input with a forward hook that replaces the output of
    ``top_layer`` by the stitched bottom activation, so any top network works whatever its
    forward does (the top's modules before ``top_layer`` run and are discarded); the bottom
    stops at ``layer``. Both networks run in eval mode inside :meth:`forward` and get their
    modes back after it. They are not submodules: ``parameters()`` and ``state_dict()`` are
    the stitch's alone.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    >>> x, y = torch.randn(60, 8), torch.arange(60) % 3
    >>> s = gg.stitch(net, net, "0", x, y, epochs=1)        # a network stitched to itself
    >>> s(x).shape, sum(p.numel() for p in s.parameters())   # the stitch: 16 x 16 + 16
    (torch.Size([60, 3]), 272)
    """

    def __init__(self, bottom: nn.Module, top: nn.Module, layer: str, top_layer: str, stitch: nn.Module):
        super().__init__()
        self._nets = (bottom, top)  # a tuple: not registered, so never trained or saved here
        self.layer, self.top_layer = layer, top_layer
        self.stitch = stitch
        self.losses: list[float] = []

    @property
    def bottom(self) -> nn.Module:
        return self._nets[0]

    @property
    def top(self) -> nn.Module:
        return self._nets[1]

    def bottom_features(self, x: torch.Tensor) -> torch.Tensor:
        """The bottom's output at ``layer`` for input ``x`` (the bottom stops there)."""
        with eval_modes(self.bottom):
            return _run_until(self.bottom, self.layer, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stitch(self.bottom_features(x))
        module = _module(self.top, self.top_layer, "top")
        handle = module.register_forward_hook(lambda mod, args, out: h)
        try:
            with eval_modes(self.top):
                return self.top(x)
        finally:
            handle.remove()


def stitch(
    bottom: nn.Module,
    top: nn.Module,
    layer: str,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    top_layer: str | None = None,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 128,
    init: str = "lstsq",
    seed: int = 0,
    log: Callable[[str], Any] | None = None,
) -> Stitched:
    """Train a stitch from ``bottom``'s module ``layer`` into ``top``'s module ``top_layer``
    (default: the same name) on samples ``x`` with integer labels ``y``.

    The stitch is a 1x1 convolution for ``(B, C, *S)`` activations (the spatial sizes of the two
    layers must agree) and a linear map for (B, D) ones. ``init="lstsq"`` starts it at the
    least-squares map from the bottom's activations on ``x`` to the top's own (the "direct
    matching" of Csiszarik et al., 2021; at most 100 000 rows of positions x channels are
    used), "random" at PyTorch's default initialisation; then it trains with Adam (the
    authors' lr 1e-3) on cross-entropy over shuffled mini-batches (seeded) for ``epochs``
    (0: the initial map alone). The two networks stay frozen and in eval mode (batch-norm
    statistics untouched) and get back their modes and ``requires_grad`` flags, also when
    training fails; the global RNG is left as it was. Returns the :class:`Stitched` network
    (its ``losses``: mean loss per epoch); measure it with e.g.
    ``gpugraph.models.training.accuracy(stitched, x_test, y_test)``.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    >>> x, y = torch.randn(60, 8), torch.arange(60) % 3
    >>> other = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    >>> s = gg.stitch(net, other, "2", x, y, epochs=2)    # net's layer "2" into other's, then other's top
    >>> accuracy = float((s(x).argmax(1) == y).float().mean())
    >>> 0 <= accuracy <= 1
    True
    """
    epochs = check_count(epochs, "epochs", minimum=0, what="a non-negative integer")
    if init not in ("lstsq", "random"):
        raise ValueError(f"init must be 'lstsq' or 'random', got {init!r}")
    batch_size = check_count(batch_size, "batch_size")
    top_layer = layer if top_layer is None else top_layer
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    if y.dtype.is_floating_point or y.dim() != 1:
        raise ValueError(
            f"y must hold one integer class label per sample, got dtype {y.dtype} and shape {tuple(y.shape)}"
        )
    _module(bottom, layer, "bottom")
    _module(top, top_layer, "top")
    device = _device_of(bottom)
    probe = x[: min(len(x), 2)].to(device)
    with torch.no_grad(), eval_modes(bottom), eval_modes(top):
        got = _run_until(bottom, layer, probe)
        want = _run_until(top, top_layer, probe.to(_device_of(top)))
    if got.dim() != want.dim() or got.shape[2:] != want.shape[2:]:
        raise ValueError(
            f"cannot stitch bottom {layer!r} (output {tuple(got.shape[1:])}) into top {top_layer!r} "
            f"(output {tuple(want.shape[1:])}): a 1x1 stitch keeps the spatial size, so pick layers "
            "whose outputs have the same spatial shape"
        )
    conv = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}
    if got.dim() != 2 and got.dim() not in conv:
        raise ValueError(
            f"bottom {layer!r} gives {got.dim()}-D outputs; a stitch takes (B, D) or (B, C, *S) with 1-3 spatial axes"
        )
    with torch.random.fork_rng(devices=[]):  # the CPU generator seeded, then restored; no other touched
        torch.default_generator.manual_seed(seed)
        layer_map: nn.Module = (
            nn.Linear(got.shape[1], want.shape[1])
            if got.dim() == 2
            else conv[got.dim()](got.shape[1], want.shape[1], kernel_size=1)
        )
    model = Stitched(bottom, top, layer, top_layer, layer_map.to(want.device))
    if init == "lstsq":
        _match(model, x, batch_size)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.stitch.parameters(), lr=lr)
    with _frozen(bottom), _frozen(top):
        model.stitch.train()
        for epoch in range(epochs):
            perm = torch.randperm(len(x), generator=g)
            total = 0.0
            for i in range(0, len(x), batch_size):
                idx = perm[i : i + batch_size]
                out = model(x[idx].to(device))
                loss = nn.functional.cross_entropy(out, y[idx].to(out.device))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            model.losses.append(total / len(x))
            if log is not None:
                log(f"  stitch {layer} -> {top_layer}, epoch {epoch + 1}/{epochs}: loss {model.losses[-1]:.3f}")
    return model.eval()


def _match(model: Stitched, x: torch.Tensor, batch_size: int, rows: int = 100_000) -> None:
    """Set the stitch to the least-squares map (with bias) from the bottom's activations to
    the top's at their layers, over the positions of the first samples of x."""
    device = _device_of(model.bottom)
    a, b, seen = [], [], 0
    with torch.no_grad(), eval_modes(model.bottom), eval_modes(model.top):
        for i in range(0, len(x), batch_size):
            batch = x[i : i + batch_size].to(device)
            got = _run_until(model.bottom, model.layer, batch)
            want = _run_until(model.top, model.top_layer, batch.to(_device_of(model.top)))
            a.append(got.movedim(1, -1).reshape(-1, got.shape[1]).double().cpu())  # (positions, C_in)
            b.append(want.movedim(1, -1).reshape(-1, want.shape[1]).double().cpu())
            seen += len(a[-1])
            if seen >= rows:
                break
    design = torch.cat([torch.cat(a)[:rows], torch.ones(min(seen, rows), 1, dtype=torch.float64)], dim=1)
    w = torch.linalg.lstsq(design, torch.cat(b)[:rows], driver="gelsd").solution  # (C_in + 1, C_out)
    weight, bias = model.stitch.weight, model.stitch.bias
    assert isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor)  # a Linear or a 1x1 conv
    with torch.no_grad():
        weight.copy_(w[:-1].T.reshape(weight.shape).to(weight.dtype))
        bias.copy_(w[-1].to(weight.dtype))


class _Stop(Exception):
    def __init__(self, output):
        super().__init__()
        self.output = output


def _run_until(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The output of ``model``'s module ``layer`` for input ``x``; the forward stops there."""

    def stop(module, args, out):
        raise _Stop(out)

    handle = _module(model, layer, "model").register_forward_hook(stop)
    try:
        model(x)
    except _Stop as s:
        if not isinstance(s.output, torch.Tensor):
            raise TypeError(
                f"module {layer!r} returns a {type(s.output).__name__}, not a tensor; stitch at another layer"
            ) from None
        return s.output
    finally:
        handle.remove()
    raise ValueError(f"module {layer!r} did not run in the model's forward; stitch at a layer the forward uses")


def _module(model: nn.Module, name: str, which: str) -> nn.Module:
    modules = dict(model.named_modules())
    if not name or name not in modules:
        sample = ", ".join(n for n in list(modules)[1:13] if n)
        raise ValueError(f"the {which} network has no module {name!r}; its modules include: {sample}")
    return modules[name]


@contextlib.contextmanager
def _frozen(model: nn.Module):
    """No gradient for the model's parameters in the block; the flags restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
