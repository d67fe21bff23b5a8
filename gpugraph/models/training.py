"""A small, plain training loop for the demo, the pruning workflow and its benchmark.

Your own training loop stays the normal path; these exist so that ``gpugraph demo`` and
``gpugraph prune`` can train, fine-tune and evaluate a classifier without one.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int = 12,
    *,
    lr: float = 3e-3,
    batch_size: int = 128,
    weight_decay: float = 1e-4,
    seed: int = 0,
    log=print,
    callback=None,
) -> nn.Module:
    """Train ``model`` in place on (x, y) with cross-entropy: AdamW and a one-cycle learning
    rate over ``epochs`` passes of shuffled mini-batches (seeded). Batches move to the model's
    device. Returns the model, left in train mode. ``log`` gets a line every 4 epochs and at
    the end (None: silent). ``callback(model, epoch)`` runs after each epoch (e.g. a
    :class:`gpugraph.CurveMonitor`; epoch 0 is the state after the first epoch)."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    device = _device_of(model)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            loss = nn.functional.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if log is not None and (epoch % 4 == 3 or epoch == epochs - 1):
            log(f"  epoch {epoch + 1:2d}/{epochs}: loss {total / len(x):.3f}")
        if callback is not None:
            callback(model, epoch)
            model.train()
    return model


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Share of samples whose largest logit is their label, in eval mode (the model's mode is
    restored)."""
    device = _device_of(model)
    right = 0
    with evaluating(model):
        for i in range(0, len(x), batch_size):
            right += int((model(x[i : i + batch_size].to(device)).argmax(1).cpu() == y[i : i + batch_size]).sum())
    return right / len(x)


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """``model`` in eval mode without gradients for the block; its mode restored after."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was)


@contextlib.contextmanager
def eval_modes(model: nn.Module):
    """Every submodule of ``model`` in eval mode for the block (gradients still flow), each
    one's own mode restored after, also where they differed."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


def recalibrate_bn(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """Re-estimate every batch-norm layer's running mean and variance on ``x``: train-mode
    forward passes without gradients, each batch weighted equally (a cumulative average), no
    weight changed. A pruned network's later BN layers see inputs of another distribution
    than they were trained on; this separates that mismatch from the information a removed
    layer carried. In place; returns the model, in the mode it had."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    device = _device_of(model)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    was = model.training
    model.train()
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                model(x[i : i + batch_size].to(device))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was)
    return model


def reinitialise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fresh weights for every submodule that has ``reset_parameters`` (convolutions, linear
    and normalisation layers), drawn from a seeded generator: the same architecture trained
    from scratch, as Lu et al. retrain their pruned networks. In place; returns the model."""
    device = _device_of(model)
    # only the generators the reset draws from are seeded (the CPU's, and the model's GPU's),
    # and fork_rng restores exactly those; torch.manual_seed would reseed every GPU's too
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        for module in model.modules():
            for reset in ("reset_parameters", "reset_running_stats"):
                if callable(getattr(module, reset, None)):
                    getattr(module, reset)()
    return model


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
