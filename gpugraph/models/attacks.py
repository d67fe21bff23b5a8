"""Adversarial examples for curve studies: FGSM and PGD under an L-infinity budget.

Lu et al. (2022) show that the modularity curve of adversarial inputs collapses in the deep
layers. As there, an attack keeps only the samples the model classified correctly and whose
attack succeeded (``mask``): the clean and the attacked curve are then taken on the same
samples. Plain torch; the model's train/eval mode is restored, its gradients untouched.

Which labels the attacked curve is read against decides the question it answers. Against the
true labels (``y``), the curve on fooled samples must fall where the model decides: every kept
sample is now classified wrongly, so the collapse says the attack worked, not how. Against
the model's own labels on the attacked inputs (``predicted``), it asks whether the attacked
samples still form class clusters, only around the wrong classes: on the demo network they do
(the curve stays high in the deep layers, benchmarks/dynamics_attack.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gpugraph._util.errors import check_count
from gpugraph._util.types import ArrayLike
from gpugraph.models.training import _device_of


@dataclass
class Attack:
    """An attack's outcome on (x, y).

    Attributes
    ----------
    x : tensor like the input, every sample attacked (within eps of its clean input)
    mask : (N,) bool, correct on the clean input and wrong on the attacked one: the samples
        a clean-versus-attacked comparison uses
    correct, fooled : (N,) bool, right on the clean input; wrong on the attacked one
    predicted : (N,) int64, the model's class for each attacked input (the labels to read the
        attacked curve against for "predicted", ``labels(y, "predicted")``)

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> from torch import nn
    >>> from gpugraph.models.training import fit
    >>> _ = torch.manual_seed(0)
    >>> x = (torch.cat([torch.randn(100, 4) + 1, torch.randn(100, 4) - 1]) / 6 + 0.5).clamp(0, 1)
    >>> y = torch.tensor([0] * 100 + [1] * 100)
    >>> net = fit(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), x, y, epochs=20, lr=0.05, log=None)
    >>> hit = gg.attacks.pgd(net, x, y, eps=0.2, steps=10, bounds=(0, 1))
    >>> keep = hit.mask                                  # right on the clean input, fooled on the attacked
    >>> bool((hit.labels(y, "true") == y[keep]).all() and (hit.labels(y, "predicted") != y[keep]).all())
    True
    """

    x: torch.Tensor
    correct: torch.Tensor
    fooled: torch.Tensor
    predicted: torch.Tensor

    def labels(self, y: ArrayLike, which: str = "true") -> torch.Tensor:
        """The labels of the kept samples (``mask``) to read the attacked curve against:
        ``"true"``, the given y; ``"predicted"``, the model's classes on the attacked inputs."""
        if which == "true":
            y = torch.as_tensor(y)
            if y.shape != self.correct.shape:
                raise ValueError(
                    f"y must hold the {len(self.correct)} labels the attack was run with, got shape {tuple(y.shape)}"
                )
            return y[self.mask.to(y.device)]
        if which == "predicted":
            return self.predicted[self.mask]
        raise ValueError(f'which must be "true" or "predicted", got {which!r}')

    @property
    def mask(self) -> torch.Tensor:
        return self.correct & self.fooled

    @property
    def clean_accuracy(self) -> float:
        return float(self.correct.float().mean()) if len(self.correct) else 0.0

    @property
    def attacked_accuracy(self) -> float:
        return float((~self.fooled).float().mean()) if len(self.fooled) else 0.0

    @property
    def success_rate(self) -> float:
        """Share of the correctly classified samples whose attack succeeded."""
        return float(self.mask.sum()) / max(1, int(self.correct.sum()))


def fgsm(
    model: nn.Module,
    x: ArrayLike,
    y: ArrayLike,
    eps: float,
    *,
    bounds: tuple[float, float] | None = None,
    batch_size: int = 256,
) -> Attack:
    """Fast gradient sign method (Goodfellow et al., 2015): x + eps * sign(grad_x loss).

    Parameters
    ----------
    model : classifier returning logits; run in eval mode.
    x, y : inputs and integer labels.
    eps : L-infinity budget (> 0).
    bounds : (low, high), optional: the valid input range, e.g. (0, 1) for images; the
        attacked input is clamped into it. None: no clamping.
    batch_size : samples per forward/backward pass.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> from torch import nn
    >>> from gpugraph.models.training import fit
    >>> _ = torch.manual_seed(0)
    >>> x = (torch.cat([torch.randn(100, 4) + 1, torch.randn(100, 4) - 1]) / 6 + 0.5).clamp(0, 1)
    >>> y = torch.tensor([0] * 100 + [1] * 100)
    >>> net = fit(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), x, y, epochs=20, lr=0.05, log=None)
    >>> hit = gg.attacks.fgsm(net, x, y, eps=0.2, bounds=(0, 1))
    >>> bool((hit.x - x).abs().max() <= 0.2 + 1e-6) and hit.attacked_accuracy < hit.clean_accuracy
    True
    """
    return pgd(model, x, y, eps, alpha=eps, steps=1, random_start=False, bounds=bounds, batch_size=batch_size)


def pgd(
    model: nn.Module,
    x: ArrayLike,
    y: ArrayLike,
    eps: float,
    alpha: float | None = None,
    steps: int = 10,
    *,
    random_start: bool = True,
    bounds: tuple[float, float] | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> Attack:
    """Projected gradient descent (Madry et al., 2018), L-infinity: ``steps`` signed-gradient
    steps of size ``alpha`` (default 2.5 eps / steps), each projected back into the eps-ball
    around x (and into ``bounds``), from a uniform random start in the ball (seeded).

    Parameters are those of :func:`fgsm`, and alpha, steps, random_start, seed.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> from torch import nn
    >>> from gpugraph.models.training import fit
    >>> _ = torch.manual_seed(0)
    >>> x = (torch.cat([torch.randn(100, 4) + 1, torch.randn(100, 4) - 1]) / 6 + 0.5).clamp(0, 1)
    >>> y = torch.tensor([0] * 100 + [1] * 100)
    >>> net = fit(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), x, y, epochs=20, lr=0.05, log=None)
    >>> hit = gg.attacks.pgd(net, x, y, eps=0.2, steps=10, bounds=(0, 1))
    >>> hit.attacked_accuracy <= gg.attacks.fgsm(net, x, y, eps=0.2, bounds=(0, 1)).attacked_accuracy
    True
    """
    x, y = _check(model, x, y, eps, steps, bounds)
    alpha = 2.5 * eps / steps if alpha is None else float(alpha)
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    device = _device_of(model)
    gen = torch.Generator(device=device).manual_seed(seed)
    was = model.training
    model.eval()
    out, right, predicted = [], [], []
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            adv = xb.clone()
            if random_start:
                adv = adv + (torch.rand(adv.shape, generator=gen, device=device, dtype=adv.dtype) * 2 - 1) * eps
                adv = _project(adv, xb, eps, bounds)
            for _ in range(steps):
                adv.requires_grad_(True)
                loss = nn.functional.cross_entropy(model(adv), yb)
                (grad,) = torch.autograd.grad(loss, adv)  # the parameters' .grad untouched
                adv = _project(adv.detach() + alpha * grad.sign(), xb, eps, bounds)
            with torch.no_grad():
                right.append((model(xb).argmax(1) == yb).cpu())
                predicted.append(model(adv).argmax(1).cpu())
            out.append(adv.detach().to(x.device))
    finally:
        model.train(was)
    if not out:
        raise ValueError("x holds no samples")
    classes = torch.cat(predicted)
    return Attack(torch.cat(out), torch.cat(right), classes != y.cpu(), classes)


def _project(adv, x, eps, bounds):
    adv = torch.maximum(torch.minimum(adv, x + eps), x - eps)
    if bounds is not None:
        adv = adv.clamp(bounds[0], bounds[1])
    return adv


def _check(model, x, y, eps, steps, bounds) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if not x.is_floating_point():
        raise TypeError(f"x must be floating point (the inputs the model takes), got {x.dtype}")
    if y.dtype.is_floating_point or y.dim() != 1 or len(y) != len(x):
        raise ValueError(f"y must be {len(x)} integer labels, one per input; got {tuple(y.shape)} {y.dtype}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive number (the L-infinity budget), got {eps!r}")
    check_count(steps, "steps")
    if bounds is not None:
        low, high = bounds
        if not low < high:
            raise ValueError(f"bounds must be (low, high) with low < high, got {bounds!r}")
        if bool((x < low).any() | (x > high).any()):
            raise ValueError(f"x has values outside bounds {tuple(bounds)}: pass the inputs' valid range, or None")
    return x, y
