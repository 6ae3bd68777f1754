"""MLP building blocks for neural fields: configurable width/depth, input skips, output activations.

``trunc_exp`` is instant-ngp's density activation: ``exp`` forward, with the backward pass's
exponent clamped so a large pre-activation cannot blow up the gradient.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _TruncExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    """``exp(x)`` whose gradient uses ``exp(min(x, 15))`` (instant-ngp's density activation)."""
    return _TruncExp.apply(x)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "none": lambda x: x,
    "relu": F.relu,
    "softplus": F.softplus,
    "sigmoid": torch.sigmoid,
    "trunc_exp": trunc_exp,
    "exp": torch.exp,
}


def activation(name: str) -> Callable[[Tensor], Tensor]:
    """Activation by name: none, relu, softplus, sigmoid, trunc_exp, exp."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}' (known: {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """Fully connected network ``in_dim -> [width] * depth -> out_dim``.

    skips: hidden-layer indices (0-based) whose *input* is the previous activation concatenated with
    the network input (NeRF feeds the input again to its fifth layer: ``skips=(4,)``).
    hidden_activation applies after every hidden layer; output_activation (by name) after the last.
    ``depth = 0`` is a single linear map. ``bias=False`` gives instant-ngp's bias-free layers.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        width: int = 64,
        depth: int = 2,
        skips: Sequence[int] = (),
        hidden_activation: str = "relu",
        output_activation: str = "none",
        bias: bool = True,
    ):
        super().__init__()
        self.in_dim, self.out_dim, self.skips = in_dim, out_dim, tuple(skips)
        layers = []
        prev = in_dim
        for i in range(depth):
            layers.append(nn.Linear(prev + (in_dim if i in self.skips and i > 0 else 0), width, bias=bias))
            prev = width
        self.hidden = nn.ModuleList(layers)
        self.out = nn.Linear(prev, out_dim, bias=bias) if out_dim > 0 else None
        self.hidden_act = activation(hidden_activation)
        self.output_act = activation(output_activation)

    def forward(self, x: Tensor, return_hidden: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x: (N, in_dim) -> (N, out_dim); with ``return_hidden`` also the last hidden activation (N, width)."""
        h = x
        for i, layer in enumerate(self.hidden):
            if i in self.skips and i > 0:
                h = torch.cat([h, x], -1)
            h = self.hidden_act(layer(h))
        y = self.output_act(self.out(h)) if self.out is not None else h
        return (y, h) if return_hidden else y
