"""The activations of a capture: one (N, D) tensor per layer, with the samples' labels."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch

from gpugraph._util.types import Labels, PathLike
from gpugraph.models import spill


class Activations(Mapping):
    """Ordered mapping layer name -> (N, D) tensor of that layer's outputs, with ``labels``
    (a tensor for numeric labels, a NumPy array for strings and other objects, or None).

    Iteration follows the order in which the layers ran in the forward pass.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    >>> x, y = torch.randn(60, 8), torch.arange(60) % 3
    >>> acts = gg.capture(net, (x, y))
    >>> list(acts), acts["2"].shape, acts.final
    (['0', '2', '4'], torch.Size([60, 16]), ['4'])
    >>> acts.labels[:4]
    tensor([0, 1, 2, 0])
    >>> own = gg.Activations({"a": torch.randn(5, 3), "b": torch.randn(5, 2)}, labels=[0, 0, 1, 1, 1])
    >>> list(own)
    ['a', 'b']
    """

    def __init__(self, layers: dict[str, torch.Tensor], labels: Labels | None = None, final: Sequence[str] = ()):
        self._layers = dict(layers)
        self.labels = labels
        self.final = [name for name in final if name in self._layers]

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._layers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    @classmethod
    def load(cls, directory: PathLike) -> Activations:
        """Reopen a capture written with ``capture(..., out=directory)``, its tensors
        memory-mapped (copy-on-write: the files are never modified)."""
        layers, labels, final = spill.read(directory)
        return cls(layers, labels, final=final)

    @property
    def n(self) -> int:
        """Number of samples."""
        return len(next(iter(self._layers.values()))) if self._layers else 0

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in self._layers.items())
        return f"Activations({shapes}; labels={'yes' if self.labels is not None else 'no'})"
